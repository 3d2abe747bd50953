# 007_upgrade.pl — a database created at extension version 1.0 and updated
# with ALTER EXTENSION ddict UPDATE behaves as a fresh 1.1 install:
#   * the same objects (functions, event triggers) as CREATE EXTENSION;
#   * dicts made under 1.0 keep their data and versions move on writes;
#   * a 1.0 dict whose trigger was renamed (1.0 allowed it) no longer makes
#     DDL on other tables fail, and ddict_detach removes its triggers;
#   * the 1.1 guards hold for dicts made under 1.0.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ddict'");
$node->start;

sub q1 { return $node->safe_psql('old', $_[0]); }

$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
q1(q{CREATE EXTENSION ddict VERSION '1.0'});
is(q1(q{SELECT extversion FROM pg_extension WHERE extname = 'ddict'}), '1.0', 'installed at 1.0');
q1(q{SELECT ddict_create('settings')});
q1(q{SELECT ddict_set('settings', 'a', '1')});
q1(q{CREATE TABLE renamed (key text PRIMARY KEY, value text NOT NULL)});
q1(q{SELECT ddict_attach('renamed')});
q1(q{ALTER TRIGGER ddict_change ON renamed RENAME TO x});

q1(q{ALTER EXTENSION ddict UPDATE TO '1.1'});
is(q1(q{SELECT extversion FROM pg_extension WHERE extname = 'ddict'}), '1.1', 'updated to 1.1');
q1(q{ALTER EXTENSION ddict UPDATE});
is(q1(q{SELECT extversion FROM pg_extension WHERE extname = 'ddict'}), '1.2', 'then updated to 1.2');
$node->safe_psql('fresh', 'CREATE EXTENSION ddict');

my $objects = q{
  SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ddict')
   ORDER BY 1};
is(q1($objects), $node->safe_psql('fresh', $objects),
	'an updated database has the objects of a fresh install');
my $evt = q{SELECT evtname, evtevent, evtenabled, evttags FROM pg_event_trigger ORDER BY 1};
is(q1($evt), $node->safe_psql('fresh', $evt), '... and the same event triggers');

is(q1(q{SELECT ddict_get('settings', 'a')}), '1', '1.0 dicts keep their data');
my $v = q1(q{SELECT ddict_last_updated('settings')});
q1(q{SELECT ddict_set('settings', 'a', '2')});
cmp_ok(q1(q{SELECT ddict_last_updated('settings')}), '>', $v, 'and their version moves on writes');
like(q1(q{SELECT kind::text || ':' || (dict = 'settings'::regclass)::text FROM ddict_changes('settings') LIMIT 1}),
	qr/^f:true$/, 'ddict_changes answers with the relation in its header');

# The renamed trigger of 1.0 does not make DDL elsewhere fail.
q1(q{CREATE TABLE fkp (id int PRIMARY KEY)});
q1(q{CREATE TABLE fkc (id int REFERENCES fkp)});
my ($ret, $out, $err) = $node->psql('old', 'DROP TABLE fkc');
is($ret, 0, 'DROP TABLE of an unrelated table with a foreign key works') or diag $err;
($ret, $out, $err) = $node->psql('old', 'ALTER TRIGGER x ON renamed RENAME TO y');
isnt($ret, 0, 'renaming a ddict trigger is refused after the update');
q1(q{SELECT ddict_detach('renamed')});
is(q1(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'renamed'::regclass}), '0',
	'ddict_detach removes the renamed trigger too');
q1(q{INSERT INTO renamed VALUES ('k', 'v')});

# 1.1 guards on a 1.0 dict.
($ret, $out, $err) = $node->psql('old', 'ALTER TABLE settings ALTER COLUMN value DROP NOT NULL');
isnt($ret, 0, 'DROP NOT NULL on a 1.0 dict is refused');
like($err, qr/must stay NOT NULL/, '... with a clear message');

$node->stop;
done_testing();
