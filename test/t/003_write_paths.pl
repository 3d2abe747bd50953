# 003_write_paths.pl — every committed write path moves the version
# (DESIGN §3.2), a rolled-back one does not (§3.3), and ddict_stats.commits
# counts the committing transactions.
#
# For several paths, ddict_changes from the client state before the write
# must answer a delta naming exactly the changed keys ('f' after TRUNCATE).
#
# Each case runs one transaction (one safe_psql call unless noted) and checks
#   * ddict_last_updated() moved strictly (or stayed put for rollbacks),
#   * ddict_stats.commits grew by exactly one per committing transaction that
#     changed the dict (and not at all for rollbacks),
#   * the change is really there (so the test would notice a no-op write).
#
# Paths: INSERT, UPDATE (value and key), DELETE, INSERT ON CONFLICT (update
# and insert arms), MERGE, COPY FROM STDIN, COPY FROM a server file,
# TRUNCATE, TRUNCATE ... CASCADE, FK ON DELETE / ON UPDATE CASCADE into a dict
# attached with ddict_attach, session_replication_role = replica, a non-owner
# role with only INSERT privilege (and ddict_set with INSERT/SELECT/UPDATE), a
# data-modifying CTE, a user trigger on another table, a DO block, more keys
# than ddict.max_delta_keys, one transaction writing two dicts, logical
# replication apply into a subscriber's dict (initial sync, INSERT, UPDATE,
# DELETE, TRUNCATE), and a BEFORE
# UPDATE trigger of the user that rewrites the value column while the UPDATE's
# SET list names another column.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('write_paths');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ddict'\nmax_prepared_transactions = 5");
$node->start;

sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub state
{
	my ($dict) = @_;
	my $out = q1(
		"SELECT ddict_last_updated('$dict'), (SELECT commits FROM ddict_stats WHERE dict = '$dict'::regclass)"
	);
	return split /\|/, $out;
}

# bumps(name, dict, sql, check_sql, expected): sql commits a change of dict;
# the version moves strictly, commits grows by one, check_sql returns expected.
sub bumps
{
	my ($name, $dict, $sql, $check, $expected) = @_;
	my ($v0, $c0) = state($dict);
	q1($sql);
	my ($v1, $c1) = state($dict);
	cmp_ok($v1, '>', $v0, "$name: version moved");
	is($c1, $c0 + 1, "$name: ddict_stats.commits counted one commit");
	is(q1($check), $expected, "$name: change is there") if defined $check;
}

# no_bump(name, dict, sql, check_sql, expected): sql leaves dict unchanged
# (rolls back, or fails); version and commits stay put.
sub no_bump
{
	my ($name, $dict, $sql, $check, $expected) = @_;
	my ($v0, $c0) = state($dict);
	my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1);
	my ($v1, $c1) = state($dict);
	is($v1, $v0, "$name: version did not move");
	is($c1, $c0, "$name: commits unchanged");
	is(q1($check), $expected, "$name: dict unchanged") if defined $check;
	return ($ret, $err);
}

q1(q{CREATE EXTENSION ddict;
     SELECT ddict_create('settings');
     SELECT ddict_create('flags', 'jsonb');});

sub val { return "SELECT coalesce(ddict_get('settings', '$_[0]'), '<none>')"; }

#
# Plain DML
#
bumps('INSERT', 'settings', q{INSERT INTO settings VALUES ('a', '1')}, val('a'), '1');
bumps('UPDATE value', 'settings', q{UPDATE settings SET value = '2' WHERE key = 'a'},
	val('a'), '2');
bumps('UPDATE key', 'settings', q{UPDATE settings SET key = 'b' WHERE key = 'a'},
	q{SELECT string_agg(key, ',') FROM settings}, 'b');
bumps('DELETE', 'settings', q{DELETE FROM settings WHERE key = 'b'},
	q{SELECT count(*) FROM settings}, '0');
bumps('INSERT ... SELECT (3 rows)', 'settings',
	q{INSERT INTO settings SELECT 'k' || i, 'v' || i FROM generate_series(1, 3) i},
	q{SELECT ddict_len('settings')}, '3');
bumps('INSERT ON CONFLICT DO UPDATE (conflict)', 'settings',
	q{INSERT INTO settings VALUES ('k1', 'upserted')
	  ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value},
	val('k1'), 'upserted');
bumps('INSERT ON CONFLICT DO UPDATE (no conflict)', 'settings',
	q{INSERT INTO settings VALUES ('k4', 'new')
	  ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value},
	val('k4'), 'new');
bumps('INSERT ON CONFLICT DO NOTHING (no conflict)', 'settings',
	q{INSERT INTO settings VALUES ('k5', 'new5') ON CONFLICT DO NOTHING},
	val('k5'), 'new5');
bumps('MERGE (update, delete, insert arms)', 'settings', q{
	MERGE INTO settings s
	USING (VALUES ('k1', 'merged'), ('k2', NULL), ('m1', 'inserted')) AS src(key, value)
	ON s.key = src.key
	WHEN MATCHED AND src.value IS NULL THEN DELETE
	WHEN MATCHED THEN UPDATE SET value = src.value
	WHEN NOT MATCHED THEN INSERT VALUES (src.key, src.value)},
	q{SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM settings},
	'k1=merged,k3=v3,k4=new,k5=new5,m1=inserted');
bumps('MERGE (insert arm only)', 'settings', q{
	MERGE INTO settings s USING (VALUES ('m2', 'x')) AS src(key, value) ON s.key = src.key
	WHEN NOT MATCHED THEN INSERT VALUES (src.key, src.value)},
	val('m2'), 'x');

# COPY FROM STDIN: psql reads the data from the same script (safe_psql feeds it on stdin).
bumps('COPY FROM STDIN', 'settings', "COPY settings (key, value) FROM STDIN;\nc1\tcopied1\nc2\tcopied2\n\\.\n",
	val('c2'), 'copied2');

# COPY FROM a file the server reads.
my $file = $node->data_dir . '/ddict_copy.tsv';
append_to_file($file, "f1\tfile1\nf2\tfile2\n");
bumps('COPY FROM file', 'settings', "COPY settings FROM '$file'", val('f1'), 'file1');

bumps('TRUNCATE', 'settings', q{TRUNCATE settings}, q{SELECT ddict_len('settings')}, '0');
bumps('TRUNCATE of an empty dict', 'settings', q{TRUNCATE settings});

# A data-modifying CTE, a DO block, and a user trigger on another table.
bumps('data-modifying CTE', 'settings', q{
	WITH ins AS (INSERT INTO settings VALUES ('cte', 'x') RETURNING key)
	SELECT count(*) FROM ins},
	val('cte'), 'x');
bumps('DO block', 'settings',
	q{DO $$BEGIN INSERT INTO settings VALUES ('do', 'y'); END$$}, val('do'), 'y');
q1(q{CREATE TABLE events (id serial PRIMARY KEY, key text, value text);
     CREATE FUNCTION events_to_settings() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       INSERT INTO settings VALUES (NEW.key, NEW.value)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
       RETURN NEW;
     END$$;
     CREATE TRIGGER events_to_settings AFTER INSERT ON events
       FOR EACH ROW EXECUTE FUNCTION events_to_settings();});
bumps('user trigger on another table writing the dict', 'settings',
	q{INSERT INTO events (key, value) VALUES ('ev', 'from trigger')}, val('ev'), 'from trigger');

# More keys than ddict.max_delta_keys in one transaction (logged as "full").
bumps('more keys than ddict.max_delta_keys', 'settings', q{
	SET ddict.max_delta_keys = 5;
	INSERT INTO settings SELECT 'many' || i, 'x' FROM generate_series(1, 20) i},
	q{SELECT count(*) FROM settings WHERE key LIKE 'many%'}, '20');

# One transaction writing two dicts: each moves once.
{
	my ($sv0, $sc0) = state('settings');
	my ($fv0, $fc0) = state('flags');
	q1(q{BEGIN;
	     INSERT INTO settings VALUES ('two1', 'a');
	     SELECT ddict_set('flags', 'f', '{"on": true}');
	     UPDATE settings SET value = 'b' WHERE key = 'two1';
	     COMMIT;});
	my ($sv1, $sc1) = state('settings');
	my ($fv1, $fc1) = state('flags');
	cmp_ok($sv1, '>', $sv0, 'two dicts in one transaction: first moved');
	cmp_ok($fv1, '>', $fv0, 'two dicts in one transaction: second moved');
	is($sc1, $sc0 + 1, 'two dicts in one transaction: one commit counted for the first');
	is($fc1, $fc0 + 1, 'two dicts in one transaction: one commit counted for the second');
}

#
# FK cascades into a dict adopted with ddict_attach (custom column names).
#
q1(q{CREATE TABLE owners (name text PRIMARY KEY);
     CREATE TABLE prefs (
       owner text PRIMARY KEY REFERENCES owners ON DELETE CASCADE ON UPDATE CASCADE,
       pref text NOT NULL);
     SELECT ddict_attach('prefs', 'owner', 'pref');
     INSERT INTO owners VALUES ('alice'), ('bob'), ('carol');
     INSERT INTO prefs VALUES ('alice', 'dark'), ('bob', 'light'), ('carol', 'blue');});
bumps('FK ON DELETE CASCADE', 'prefs', q{DELETE FROM owners WHERE name = 'alice'},
	q{SELECT string_agg(key, ',' ORDER BY key) FROM ddict_items('prefs')}, 'bob,carol');
bumps('FK ON UPDATE CASCADE (key changes)', 'prefs',
	q{UPDATE owners SET name = 'robert' WHERE name = 'bob'},
	q{SELECT string_agg(key, ',' ORDER BY key) FROM ddict_items('prefs')}, 'carol,robert');
bumps('TRUNCATE ... CASCADE through the FK', 'prefs', q{TRUNCATE owners CASCADE},
	q{SELECT ddict_len('prefs')}, '0');

#
# session_replication_role = replica: ordinary triggers are off, ddict's are ALWAYS.
#
bumps('INSERT under session_replication_role = replica', 'settings',
	q{SET session_replication_role = replica; INSERT INTO settings VALUES ('repl', 'r')},
	val('repl'), 'r');
bumps('ddict_set under session_replication_role = replica', 'settings',
	q{SET session_replication_role = replica; SELECT ddict_set('settings', 'repl', 'r2')},
	val('repl'), 'r2');
bumps('DELETE under session_replication_role = replica', 'settings',
	q{SET session_replication_role = replica; DELETE FROM settings WHERE key = 'repl'},
	val('repl'), '<none>');

#
# Roles other than the owner.
#
q1(q{CREATE ROLE inserter LOGIN;
     CREATE ROLE upserter LOGIN;
     GRANT INSERT ON settings TO inserter;
     GRANT SELECT, INSERT, UPDATE, DELETE ON settings TO upserter;});
bumps('INSERT by a non-owner with only INSERT privilege', 'settings',
	q{SET ROLE inserter; INSERT INTO settings VALUES ('by_inserter', 'i')},
	val('by_inserter'), 'i');
bumps('ddict_set by a non-owner (SELECT/INSERT/UPDATE)', 'settings',
	q{SET ROLE upserter; SELECT ddict_set('settings', 'by_inserter', 'u')},
	val('by_inserter'), 'u');
bumps('ddict_delete by a non-owner', 'settings',
	q{SET ROLE upserter; SELECT ddict_delete('settings', 'by_inserter')},
	val('by_inserter'), '<none>');
{
	my ($ret, $err) = no_bump('ddict_set by a role without UPDATE privilege', 'settings',
		q{SET ROLE inserter; SELECT ddict_set('settings', 'denied', 'x')},
		val('denied'), '<none>');
	like($err, qr/permission denied/, 'ddict_set without privilege fails like the DML would');
}

#
# Rolled back or failed: no bump.
#
no_bump('ROLLBACK', 'settings',
	q{BEGIN; INSERT INTO settings VALUES ('rb', 'x'); SELECT ddict_set('settings', 'rb2', 'y'); ROLLBACK;},
	val('rb'), '<none>');
no_bump('ROLLBACK of a TRUNCATE', 'settings', q{BEGIN; TRUNCATE settings; ROLLBACK;},
	q{SELECT ddict_len('settings') > 0}, 't');
no_bump('failing statement (unique violation)', 'settings',
	q{INSERT INTO settings VALUES ('dup', '1'), ('dup', '2')}, val('dup'), '<none>');
no_bump('error after the write aborts the transaction', 'settings',
	q{BEGIN; INSERT INTO settings VALUES ('err', 'x'); SELECT 1/0; COMMIT;}, val('err'), '<none>');
no_bump('write rolled back to a savepoint, transaction commits', 'settings',
	q{BEGIN; SAVEPOINT s; INSERT INTO settings VALUES ('sp', 'x'); ROLLBACK TO s; COMMIT;},
	val('sp'), '<none>');
no_bump('invalid JSON for a jsonb dict', 'flags',
	q[SELECT ddict_set('flags', 'bad', '{not json')],
	q{SELECT coalesce(ddict_get('flags', 'bad'), '<none>')}, '<none>');
no_bump('DELETE matching no row', 'settings', q{DELETE FROM settings WHERE key = 'nope'});
no_bump('writes to another table only', 'settings', q{INSERT INTO owners VALUES ('dave')});

# A savepoint rolled back after a kept write: still exactly one bump.
bumps('write kept, later savepoint rolled back', 'settings',
	q{BEGIN; INSERT INTO settings VALUES ('kept', 'k');
	  SAVEPOINT s; INSERT INTO settings VALUES ('dropped', 'd'); ROLLBACK TO s; COMMIT;},
	q{SELECT ddict_get('settings', 'kept') || coalesce(ddict_get('settings', 'dropped'), '-')}, 'k-');

#
# The changed keys reach clients: after each of these writes, ddict_changes
# from the state before it answers a delta ('d') naming exactly the keys the
# write changed ('s' present, 'x' gone), or 'f' after a TRUNCATE.
#
sub client_state
{
	my ($dict) = @_;
	return q1("SELECT version || ',' || epoch || ',' || cursor FROM ddict_changes('$dict') WHERE key IS NULL");
}

sub delta_is
{
	my ($name, $dict, $sql, $expected) = @_;
	my $st = client_state($dict);
	q1($sql);
	my $got = q1("SELECT string_agg(kind::text || coalesce(':' || key, ''), ' ' ORDER BY key IS NOT NULL, key)
	              FROM ddict_changes('$dict', $st)");
	is($got, $expected, "$name: ddict_changes reports the changed keys");
}

q1(q{TRUNCATE settings; INSERT INTO settings VALUES ('a', '1'), ('b', '2'), ('c', '3');});
delta_is('INSERT', 'settings', q{INSERT INTO settings VALUES ('d', '4')}, 'd s:d');
delta_is('UPDATE of the key', 'settings', q{UPDATE settings SET key = 'a2' WHERE key = 'a'},
	'd x:a s:a2');
delta_is('DELETE', 'settings', q{DELETE FROM settings WHERE key = 'b'}, 'd x:b');
delta_is('MERGE', 'settings', q{
	MERGE INTO settings s USING (VALUES ('c', 'upd'), ('e', 'new')) AS src(key, value)
	ON s.key = src.key
	WHEN MATCHED THEN UPDATE SET value = src.value
	WHEN NOT MATCHED THEN INSERT VALUES (src.key, src.value)}, 'd s:c s:e');
delta_is('COPY FROM STDIN', 'settings', "COPY settings FROM STDIN;\nf\t6\n\\.\n", 'd s:f');
delta_is('ddict_set under session_replication_role = replica', 'settings',
	q{SET session_replication_role = replica; SELECT ddict_set('settings', 'c', 'r')}, 'd s:c');
delta_is('TRUNCATE', 'settings', q{TRUNCATE settings}, 'f');
q1(q{INSERT INTO owners VALUES ('erin'), ('frank');
     INSERT INTO prefs VALUES ('erin', 'x'), ('frank', 'y');});
delta_is('FK ON UPDATE CASCADE', 'prefs', q{UPDATE owners SET name = 'erin2' WHERE name = 'erin'},
	'd x:erin s:erin2');
delta_is('FK ON DELETE CASCADE', 'prefs', q{DELETE FROM owners WHERE name = 'frank'}, 'd x:frank');

#
# A user's BEFORE UPDATE trigger that derives the value column from another
# column: the UPDATE's SET list does not name the value column, but the stored
# value changes.  The dict's contents changed, so the version must move.
#
q1(q{CREATE TABLE derived (k text PRIMARY KEY, raw text, v text NOT NULL);
     CREATE FUNCTION derive_v() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN NEW.v := upper(NEW.raw); RETURN NEW; END$$;
     CREATE TRIGGER derive_v BEFORE INSERT OR UPDATE ON derived
       FOR EACH ROW EXECUTE FUNCTION derive_v();
     SELECT ddict_attach('derived', 'k', 'v');
     INSERT INTO derived (k, raw, v) VALUES ('a', 'first', '');});
is(q1(q{SELECT ddict_get('derived', 'a')}), 'FIRST', 'derived value set by BEFORE trigger');
bumps('UPDATE of another column whose BEFORE trigger rewrites the value', 'derived',
	q{UPDATE derived SET raw = 'second' WHERE k = 'a'},
	q{SELECT ddict_get('derived', 'a')}, 'SECOND');

# A STORED generated value column changes when its source column is updated.
q1(q{CREATE TABLE gen (k text PRIMARY KEY, raw text NOT NULL,
                       v text NOT NULL GENERATED ALWAYS AS (lower(raw)) STORED);
     SELECT ddict_attach('gen', 'k', 'v');
     INSERT INTO gen (k, raw) VALUES ('a', 'ONE');});
bumps('UPDATE of the source of a generated value column', 'gen',
	q{UPDATE gen SET raw = 'TWO' WHERE k = 'a'},
	q{SELECT ddict_get('gen', 'a')}, 'two');

#
# Logical replication apply: the subscriber's table is a dict; the apply
# worker runs with session_replication_role = replica and writes through the
# executor, so the ALWAYS triggers fire there and the version moves at the
# apply transaction's commit.
#
my $pub = PostgreSQL::Test::Cluster->new('publisher');
$pub->init(allows_streaming => 'logical');
$pub->start;
$pub->safe_psql('postgres', q{
	CREATE TABLE replicated (key text PRIMARY KEY, value text NOT NULL);
	INSERT INTO replicated VALUES ('initial', 'i');
	CREATE PUBLICATION ddict_pub FOR TABLE replicated;});
q1(q{CREATE TABLE replicated (key text PRIMARY KEY, value text NOT NULL);
     SELECT ddict_attach('replicated');});
my ($rv0, $rc0) = state('replicated');
my $pubconn = $pub->connstr . ' dbname=postgres';
q1("CREATE SUBSCRIPTION ddict_sub CONNECTION '$pubconn' PUBLICATION ddict_pub");
$node->wait_for_subscription_sync($pub, 'ddict_sub');
my ($rv1, $rc1) = state('replicated');
is(q1(q{SELECT ddict_get('replicated', 'initial')}), 'i', 'logical replication: initial copy arrived');
cmp_ok($rv1, '>', $rv0, 'logical replication: initial table sync moved the version');

for my $case (
	[ 'INSERT', q{INSERT INTO replicated VALUES ('a', '1')}, 'a', '1' ],
	[ 'UPDATE', q{UPDATE replicated SET value = '2' WHERE key = 'a'}, 'a', '2' ],
	[ 'DELETE', q{DELETE FROM replicated WHERE key = 'a'}, 'a', '<none>' ],
	[ 'TRUNCATE', q{TRUNCATE replicated}, 'initial', '<none>' ])
{
	my ($name, $sql, $key, $expected) = @$case;
	my ($v0, $c0) = state('replicated');
	$pub->safe_psql('postgres', $sql);
	$pub->wait_for_catchup('ddict_sub');
	my ($v1, $c1) = state('replicated');
	is(q1("SELECT coalesce(ddict_get('replicated', '$key'), '<none>')"), $expected,
		"logical replication $name: applied");
	cmp_ok($v1, '>', $v0, "logical replication $name: version moved on the subscriber");
	is($c1, $c0 + 1, "logical replication $name: one commit counted");
}
q1('DROP SUBSCRIPTION ddict_sub');
$pub->stop;

$node->stop;
done_testing();
