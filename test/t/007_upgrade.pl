# 007_upgrade.pl — a database created at extension version 1.0 and updated
# with ALTER EXTENSION ddict UPDATE (to 1.1, to 1.2, then to 1.3) behaves as a
# fresh install:
#   * the same objects (functions, event triggers) as CREATE EXTENSION;
#   * dicts made under 1.0 keep their data and versions move on writes;
#   * a 1.0 dict whose trigger was renamed (1.0 allowed it) no longer makes
#     DDL on other tables fail, and ddict_detach removes its triggers;
#   * the 1.1 guards hold for dicts made under 1.0;
#   * 1.2's full load by COPY and check of many dicts work on them, and the
#     1.1 forms of ddict_changes() are still there;
#   * 1.3's packed check of many dicts works on them.
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
ok(q1(q{SELECT to_regprocedure('ddict_full_begin(regclass)') IS NULL}), '... without 1.2 functions');
q1(q{ALTER EXTENSION ddict UPDATE TO '1.2'});
is(q1(q{SELECT extversion FROM pg_extension WHERE extname = 'ddict'}), '1.2', 'then updated to 1.2');
ok(q1(q{SELECT to_regprocedure('ddict_unchanged_packed(bytea)') IS NULL}), '... without 1.3 functions');
q1(q{ALTER EXTENSION ddict UPDATE});
is(q1(q{SELECT extversion FROM pg_extension WHERE extname = 'ddict'}), '1.3', 'then updated to 1.3');
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

# 1.2 on a 1.0 dict: a full load by COPY in one READ COMMITTED transaction,
# the header-only full answer, the check of many dicts; 1.1's five-argument
# ddict_changes() is still there for 1.1 clients.
my $load = q1(q{BEGIN ISOLATION LEVEL READ COMMITTED;
  CREATE TEMP TABLE h AS SELECT * FROM ddict_full_begin('settings');
  SELECT (SELECT query FROM h) || '|' || (SELECT version = ddict_last_updated('settings') FROM h)::text
         || '|' || (SELECT ddict_full_end(relation, token) IS NOT NULL FROM h)::text;
  COMMIT;});
like($load, qr/^SELECT "?key"?::pg_catalog\.text, .*FROM ONLY public\.settings\|true\|true$/,
	'ddict_full_begin gives the header and the query, ddict_full_end agrees');
is(q1(q{SELECT string_agg(kind::text, ',') FROM ddict_changes('settings', NULL, NULL, NULL, NULL, false)}),
	'f', 'ddict_changes(full_rows => false) answers a full load with its header alone');
is(q1(q{SELECT count(*) FROM ddict_changes('settings', NULL, NULL, NULL, NULL)}), '2',
	'the five-argument ddict_changes of 1.1 still sends the rows');
is(q1(q{SELECT ddict_unchanged_many(ARRAY['settings'], ARRAY['settings'::regclass::oid],
                                    ARRAY[ddict_last_updated('settings')], ARRAY[ddict_epoch()])}),
	'u', 'ddict_unchanged_many answers for a 1.0 dict');
# the probe: format 1, one dict (relation, version, epoch, name's length, name)
is(q1(q{SELECT ddict_unchanged_packed('\x01'::bytea || int4send(1) || substr(int8send('settings'::regclass::oid::int8), 5)
                                      || int8send(ddict_last_updated('settings')) || int8send(ddict_epoch())
                                      || int2send(8::int2) || convert_to('settings', 'UTF8'))}),
	'u', 'ddict_unchanged_packed answers for a 1.0 dict');

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
