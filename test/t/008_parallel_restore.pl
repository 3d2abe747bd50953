# 008_parallel_restore.pl — pg_restore -j restores every dict with both of
# its triggers ENABLE ALWAYS and its registration, whatever the order in
# which parallel workers create indexes, triggers and partitions: dicts on a
# unique index rather than a primary key, an inheritance child, partitions
# whose key index comes from the partitioned parent, an enum and a row-type
# value, a varchar(5) value, a quoted name and a disabled trigger.  The
# guards of 1.1 check a dict's unique key only when the command removed it,
# so a trigger restored before its partition's index is not refused.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('prestore');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ddict'\nmax_connections = 40");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
CREATE EXTENSION ddict;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE uq (key text NOT NULL, value text NOT NULL);
CREATE UNIQUE INDEX uq_key ON uq (key);
INSERT INTO uq VALUES ('a', '1');
SELECT ddict_attach('uq');
CREATE TABLE base (key text NOT NULL, value text NOT NULL);
CREATE TABLE ch (PRIMARY KEY (key)) INHERITS (base);
INSERT INTO ch VALUES ('b', '2');
SELECT ddict_attach('ch');
CREATE TABLE pt (key text NOT NULL, value text NOT NULL, PRIMARY KEY (key)) PARTITION BY LIST (key);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES IN ('c');
INSERT INTO pt VALUES ('c', '3');
SELECT ddict_attach('pt1');
CREATE TABLE pu (key text NOT NULL, value text NOT NULL) PARTITION BY LIST (key);
CREATE UNIQUE INDEX pu_k ON pu (key);
CREATE TABLE pu1 PARTITION OF pu FOR VALUES IN ('c');
SELECT ddict_attach('pu1');
SELECT ddict_create('en', 'mood');
SELECT ddict_set('en', 'k', 'happy');
SELECT ddict_create('vc', 'varchar(5)');
CREATE TABLE rt (a int, m mood);
CREATE TABLE rowd (key text PRIMARY KEY, value rt NOT NULL);
SELECT ddict_attach('rowd');
CREATE SCHEMA s2;
CREATE TABLE s2."Odd T" ("K" text PRIMARY KEY, "V" jsonb NOT NULL);
SELECT ddict_attach('s2."Odd T"', 'K', 'V');
CREATE TABLE dis (key text PRIMARY KEY, value text NOT NULL);
SELECT ddict_attach('dis');
ALTER TABLE dis DISABLE TRIGGER ddict_change;
});

my $state = q{
  SELECT r.dict::text || ':' ||
         (SELECT string_agg(t.tgenabled::text, '' ORDER BY t.tgname) FROM pg_trigger t
           JOIN pg_proc p ON p.oid = t.tgfoid AND p.proname = 'ddict_trigger'
          WHERE t.tgrelid = r.dict)
    FROM ddict_registry r ORDER BY 1};
my $want = $node->safe_psql('src', $state);
like($want, qr/pu1:AA/, 'the source has its dicts with both triggers');

my $dump = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src') ], 'pg_dump -Fc');
for my $run (1 .. 3)
{
	my $db = "dst$run";
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	my ($stdout, $stderr);
	my $ok = IPC::Run::run([ 'pg_restore', '-j', '4', '-d', $node->connstr($db), $dump ],
		'>', \$stdout, '2>', \$stderr);
	ok($ok, "pg_restore -j 4, run $run, reports no error") or diag $stderr;
	is($node->safe_psql($db, $state), $want,
		"run $run: every dict is registered with both triggers in their states");
	my $v = $node->safe_psql($db, q{SELECT ddict_last_updated('pu1')});
	$node->safe_psql($db, q{INSERT INTO pu VALUES ('c', '4')});
	cmp_ok($node->safe_psql($db, q{SELECT ddict_last_updated('pu1')}), '>', $v,
		"run $run: a write to a restored partition dict moves its version");
}

$node->stop;
done_testing();
