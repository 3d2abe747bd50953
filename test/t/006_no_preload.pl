# 006_no_preload.pl — the shared_preload_libraries requirement (DESIGN §3.5)
# and the ddict.max_dicts limit.
#
# Without shared_preload_libraries = 'ddict':
#   * CREATE EXTENSION ddict succeeds (it only defines objects);
#   * every entry point fails with "ddict must be loaded via
#     shared_preload_libraries": ddict_create, ddict_attach, ddict_get,
#     ddict_set, ddict_last_updated, ddict_epoch, ddict_changes, ddict_stats;
#   * dicts created while the library was preloaded cannot be written after a
#     restart without it — not even by plain INSERT/UPDATE/DELETE/TRUNCATE,
#     since such a write would commit without moving the version — and
#     nothing is written.
#
# With ddict.max_dicts = 16 (its minimum): 16 dicts fit; creating a 17th
# fails in its own transaction with "cannot track more than 16 dicts" and
# leaves nothing behind (no table, no registry row); the 16 keep working;
# dropping one frees its slot for a new dict.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $preload_msg = qr/ddict must be loaded via shared_preload_libraries/;

#
# Part 1: a node without the preload.
#
my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->append_conf('postgresql.conf', "max_prepared_transactions = 5");
$node->start;

sub q1 { return $node->safe_psql('postgres', $_[0]); }

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION ddict');
is($ret, 0, 'CREATE EXTENSION ddict succeeds without shared_preload_libraries')
  or diag $err;

# An ordinary table to try ddict_attach on.
q1(q{CREATE TABLE plain (key text PRIMARY KEY, value text NOT NULL)});

for my $call (
	q{SELECT ddict_create('settings')},
	q{SELECT ddict_attach('plain')},
	q{SELECT ddict_get('plain', 'k')},
	q{SELECT ddict_get('plain', 'k', 'default')},
	q{SELECT ddict_set('plain', 'k', 'v')},
	q{SELECT ddict_last_updated('plain')},
	q{SELECT ddict_epoch()},
	q{SELECT * FROM ddict_changes('plain')},
	q{SELECT * FROM ddict_keys('plain')},
	q{SELECT ddict_len('plain')})
{
	($ret, $out, $err) = $node->psql('postgres', $call);
	isnt($ret, 0, "without preload: $call fails");
	like($err, $preload_msg, "without preload: $call says it needs shared_preload_libraries");
}
is(q1(q{SELECT count(*) FROM pg_class WHERE relname = 'settings'}), '0',
	'without preload: failed ddict_create left no table');
is(q1(q{SELECT count(*) FROM ddict_registry}), '0', 'without preload: registry empty');
is(q1(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'plain'::regclass}), '0',
	'without preload: failed ddict_attach left no trigger');

# A dict made while preloaded, then the server restarted without the preload:
# writes must fail (they would commit without a bump), reads fail clearly.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ddict'");
$node->restart;
q1(q{SELECT ddict_create('settings'); SELECT ddict_set('settings', 'k', 'v1');});
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->restart;
is(q1('SHOW shared_preload_libraries'), '', 'restarted without the preload');

for my $write (
	q{INSERT INTO settings VALUES ('k2', 'x')},
	q{UPDATE settings SET value = 'v2' WHERE key = 'k'},
	q{DELETE FROM settings WHERE key = 'k'},
	q{TRUNCATE settings},
	q{COPY settings FROM STDIN;
k3	x
\.
})
{
	($ret, $out, $err) = $node->psql('postgres', $write);
	(my $name = $write) =~ s/\s.*//s;
	isnt($ret, 0, "dict made with preload, server without: $name fails");
	like($err, $preload_msg, "dict made with preload, server without: $name error names the preload");
}
is(q1(q{SELECT string_agg(key || '=' || value, ',') FROM settings}), 'k=v1',
	'dict made with preload, server without: nothing was written');
for my $read (
	q{SELECT ddict_get('settings', 'k')},
	q{SELECT ddict_last_updated('settings')},
	q{SELECT * FROM ddict_dicts},
	q{SELECT * FROM ddict_stats})
{
	($ret, $out, $err) = $node->psql('postgres', $read);
	like($err, $preload_msg, "dict made with preload, server without: $read fails clearly");
}
$node->stop;

#
# Part 2: ddict.max_dicts = 16.
#
my $small = PostgreSQL::Test::Cluster->new('max_dicts');
$small->init;
$small->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ddict'\nmax_prepared_transactions = 5\nddict.max_dicts = 16");
$small->start;

sub s1 { return $small->safe_psql('postgres', $_[0]); }

is(s1('SHOW ddict.max_dicts'), '16', 'ddict.max_dicts = 16');
s1('CREATE EXTENSION ddict');
for my $i (1 .. 16)
{
	s1("SELECT ddict_create('d$i'); SELECT ddict_set('d$i', 'k', '$i');");
}
is(s1('SELECT count(*) FROM ddict_dicts'), '16', '16 dicts created');

($ret, $out, $err) = $small->psql('postgres',
	q{BEGIN; CREATE TABLE side_effect (i int); SELECT ddict_create('d17'); COMMIT;});
isnt($ret, 0, 'the 17th dict is refused');
like($err, qr/cannot track more than 16 dicts/, 'with "cannot track more than 16 dicts"');
is(s1(q{SELECT count(*) FROM pg_class WHERE relname IN ('d17', 'side_effect')}), '0',
	"the 17th dict's transaction committed nothing");
is(s1('SELECT count(*) FROM ddict_registry'), '16', 'registry still has 16 dicts');
is(s1('SELECT count(*) FROM ddict_stats WHERE commits > 0'), '16', 'ddict_stats tracks 16 dicts');
# If the limit was not enforced, undo the 17th so the rest of the test stays meaningful.
s1(q{DROP TABLE IF EXISTS d17; DROP TABLE IF EXISTS side_effect;});

# Attaching an existing table is refused the same way.
s1(q{CREATE TABLE extra (key text PRIMARY KEY, value text NOT NULL)});
($ret, $out, $err) = $small->psql('postgres', q{SELECT ddict_attach('extra')});
like($err, qr/cannot track more than 16 dicts/, 'ddict_attach of a 17th table refused too');
is(s1(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'extra'::regclass}), '0',
	'refused attach left no trigger');
s1(q{DROP TABLE extra});

# The 16 keep working.
my $v = s1(q{SELECT ddict_last_updated('d16')});
s1(q{SELECT ddict_set('d16', 'k', 'changed')});
cmp_ok(s1(q{SELECT ddict_last_updated('d16')}), '>', $v, 'existing dicts still bump');
is(s1(q{SELECT ddict_get('d1', 'k')}), '1', 'existing dicts still readable');

# Dropping a dict frees its slot.
s1(q{DROP TABLE d1});
s1(q{SELECT ddict_create('d17'); SELECT ddict_set('d17', 'k', '17');});
is(s1(q{SELECT ddict_get('d17', 'k')}), '17', 'after dropping a dict, a new one fits');
$v = s1(q{SELECT ddict_last_updated('d17')});
s1(q{SELECT ddict_set('d17', 'k', '18')});
cmp_ok(s1(q{SELECT ddict_last_updated('d17')}), '>', $v, 'and it bumps');

# Databases share the 16 slots: a dict in another database is refused too.
s1('CREATE DATABASE other');
($ret, $out, $err) = $small->psql('other',
	q{CREATE EXTENSION ddict; SELECT ddict_create('elsewhere');});
like($err, qr/cannot track more than 16 dicts/, 'the limit spans databases');

$small->stop;
done_testing();
