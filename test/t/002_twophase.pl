# 002_twophase.pl — PREPARE TRANSACTION and dicts (DESIGN §3.6).
#
# A prepared transaction may change dicts: ddict records its dicts at
# PREPARE (shared memory and a file, src/prepared.c) and bumps them once
# COMMIT PREPARED made the changes visible, in whatever session runs it.
# (test/t/013_twophase_apply.pl covers logical replication with two_phase,
# restarts and crashes while prepared, and standbys.)  What must hold:
#
#   * PREPARE of a transaction that wrote a dict — through ddict_set, a plain
#     INSERT, UPDATE, DELETE, TRUNCATE, or a write in a released savepoint —
#     succeeds; while prepared the version does not move and the change is
#     not visible; COMMIT PREPARED (in the same or another session) makes it
#     visible and moves the version, counting one commit; ROLLBACK PREPARED
#     moves nothing;
#   * a prepared transaction that never touched a dict still works, and so
#     does one whose only dict write was rolled back to a savepoint (that
#     write is gone, so there is nothing to bump);
#   * PREPARE of a transaction that detached or dropped a dict is refused,
#     naming the dict, and nothing is prepared;
#   * the backend stays usable: the next ordinary transaction bumps normally.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('twophase');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ddict'\nmax_prepared_transactions = 5");
$node->start;

sub q1 { return $node->safe_psql('postgres', $_[0]); }
sub version { return q1("SELECT ddict_last_updated('settings')"); }
sub commits { return q1("SELECT commits FROM ddict_stats WHERE dict = 'settings'::regclass"); }

q1(q{CREATE EXTENSION ddict;
     SELECT ddict_create('settings');
     SELECT ddict_set('settings', 'a', '1');
     CREATE TABLE plain (id int PRIMARY KEY, note text);});

# Each case: [name, statement, check of the change, its value once committed]
my @cases = (
	[ 'ddict_set', q{SELECT ddict_set('settings', 'p1', 'x')},
		q{SELECT coalesce(ddict_get('settings', 'p1'), '-')}, 'x' ],
	[ 'plain INSERT', q{INSERT INTO settings VALUES ('p2', 'x')},
		q{SELECT coalesce(ddict_get('settings', 'p2'), '-')}, 'x' ],
	[ 'UPDATE', q{UPDATE settings SET value = 'changed' WHERE key = 'a'},
		q{SELECT ddict_get('settings', 'a')}, 'changed' ],
	[ 'DELETE', q{DELETE FROM settings WHERE key = 'a'},
		q{SELECT coalesce(ddict_get('settings', 'a'), '-')}, '-' ],
	[
		'write in a released savepoint',
		q{SAVEPOINT s; INSERT INTO settings VALUES ('p3', 'x'); RELEASE SAVEPOINT s},
		q{SELECT coalesce(ddict_get('settings', 'p3'), '-')}, 'x'
	],
	[
		'write in a savepoint, another savepoint rolled back after it',
		q{SAVEPOINT s1; INSERT INTO settings VALUES ('p4', 'x'); RELEASE s1;
		  SAVEPOINT s2; INSERT INTO plain VALUES (99, 'y'); ROLLBACK TO s2},
		q{SELECT coalesce(ddict_get('settings', 'p4'), '-')}, 'x'
	],
	[ 'TRUNCATE', q{TRUNCATE settings}, q{SELECT ddict_len('settings')}, '0' ],
);

my $gid = 0;
my ($ret, $out, $err);
for my $case (@cases)
{
	my ($name, $sql, $check, $after) = @$case;
	for my $end ('ROLLBACK PREPARED', 'COMMIT PREPARED')
	{
		q1(q{INSERT INTO settings VALUES ('a', '1') ON CONFLICT (key) DO UPDATE SET value = '1'});
		my ($v0, $c0, $before) = (version(), commits(), q1($check));
		$gid++;
		($ret, $out, $err) = $node->psql('postgres',
			"BEGIN; INSERT INTO plain VALUES ($gid, 'side'); $sql; PREPARE TRANSACTION 'g$gid';");
		is($ret, 0, "$name: PREPARE TRANSACTION succeeds") or diag $err;
		is(q1("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'g$gid'"), '1', "$name: prepared");
		is(version(), $v0, "$name: version does not move at PREPARE");
		is(q1("SELECT count(*) FROM plain WHERE id = $gid"), '0', "$name: not visible while prepared");
		q1("$end 'g$gid'");     # another session than the one that prepared
		if ($end eq 'COMMIT PREPARED')
		{
			cmp_ok(version(), '>', $v0, "$name: COMMIT PREPARED moved the version");
			is(commits(), $c0 + 1, "$name: and counted one commit");
			is(q1($check), $after, "$name: the change is visible");
		}
		else
		{
			is(version(), $v0, "$name: ROLLBACK PREPARED did not move the version");
			is(commits(), $c0, "$name: and counted no commit");
			is(q1($check), $before, "$name: the change is gone");
		}
	}
}

# Detach and drop are refused at PREPARE, naming the dict.
my $refused = qr/cannot PREPARE a transaction that detached or dropped ddict dict public.settings/;
for my $sql (q{SELECT ddict_detach('settings')}, q{DROP TABLE settings})
{
	my $v0 = version();
	$gid++;
	($ret, $out, $err) = $node->psql('postgres',
		"BEGIN; INSERT INTO plain VALUES ($gid, 'side'); $sql; PREPARE TRANSACTION 'g$gid';");
	isnt($ret, 0, "$sql: PREPARE TRANSACTION fails");
	like($err, $refused, "$sql: with the ddict error naming the dict");
	is(q1("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'g$gid'"), '0', "$sql: nothing prepared");
	is(q1("SELECT count(*) FROM plain WHERE id = $gid"), '0', "$sql: the transaction is rolled back");
	is(q1(q{SELECT count(*) FROM ddict_dicts WHERE dict = 'settings'::regclass}), '1',
		"$sql: the dict is still attached");
	is(version(), $v0, "$sql: version did not move");
}

# A prepared transaction that did not touch a dict still works, committed or
# rolled back; the dict's version stays put.
my $v0 = version();
q1(q{BEGIN; INSERT INTO plain VALUES (100, 'two-phase');
     SELECT ddict_get('settings', 'a');   -- reading a dict is fine
     SELECT ddict_last_updated('settings');
     PREPARE TRANSACTION 'nodict';});
is(q1("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'nodict'"), '1',
	'transaction without dict writes prepares');
q1(q{COMMIT PREPARED 'nodict'});
is(q1('SELECT note FROM plain WHERE id = 100'), 'two-phase', 'and commits');
q1(q{BEGIN; INSERT INTO plain VALUES (101, 'two-phase'); PREPARE TRANSACTION 'nodict2';});
q1(q{ROLLBACK PREPARED 'nodict2'});
is(q1('SELECT count(*) FROM plain WHERE id = 101'), '0', 'and rolls back');
is(version(), $v0, 'two-phase transactions without dict writes do not move the version');

# A dict write rolled back to a savepoint does not block PREPARE.
q1(q{BEGIN;
     INSERT INTO plain VALUES (200, 'kept');
     SAVEPOINT s;
     SELECT ddict_set('settings', 'gone', 'x');
     INSERT INTO settings VALUES ('gone2', 'y');
     ROLLBACK TO SAVEPOINT s;
     PREPARE TRANSACTION 'rolledback_sp';});
is(q1("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'rolledback_sp'"), '1',
	'savepoint-rolled-back dict write does not block PREPARE');
q1(q{COMMIT PREPARED 'rolledback_sp'});
is(q1('SELECT note FROM plain WHERE id = 200'), 'kept', 'the prepared transaction committed');
is(q1("SELECT ddict_get('settings', 'gone') IS NULL AND ddict_get('settings', 'gone2') IS NULL"),
	't', 'rolled-back dict rows absent');
is(version(), $v0, 'version unchanged by the prepared transaction');

# Nested: the write is in an inner savepoint that is released into an outer
# one, and the outer one is rolled back.
q1(q{BEGIN;
     SAVEPOINT outer_sp;
     SAVEPOINT inner_sp;
     SELECT ddict_set('settings', 'nested', 'x');
     RELEASE SAVEPOINT inner_sp;
     ROLLBACK TO SAVEPOINT outer_sp;
     INSERT INTO plain VALUES (201, 'kept');
     PREPARE TRANSACTION 'nested_sp';
     COMMIT PREPARED 'nested_sp';});
is(q1('SELECT note FROM plain WHERE id = 201'), 'kept',
	'write released into a rolled-back outer savepoint does not block PREPARE');
is(version(), $v0, 'and the version is unchanged');

# A PL/pgSQL exception block is a subtransaction too.
q1(q{BEGIN;
     DO $$BEGIN
       PERFORM ddict_set('settings', 'exc', 'x');
       RAISE EXCEPTION 'undo';
     EXCEPTION WHEN raise_exception THEN NULL;
     END$$;
     INSERT INTO plain VALUES (202, 'kept');
     PREPARE TRANSACTION 'exc_block';
     COMMIT PREPARED 'exc_block';});
is(q1('SELECT note FROM plain WHERE id = 202'), 'kept',
	'write undone by an exception block does not block PREPARE');
is(version(), $v0, 'and the version is unchanged');

# ddict_detach or DROP TABLE of a dict undone by a savepoint rollback: the
# dict is still attached and unchanged, so nothing blocks PREPARE either.
my $pgid = 203;
for my $undone (q{SELECT ddict_detach('settings')}, q{DROP TABLE settings})
{
	$pgid++;
	($ret, $out, $err) = $node->psql('postgres', qq{
		BEGIN;
		SAVEPOINT s;
		$undone;
		ROLLBACK TO SAVEPOINT s;
		INSERT INTO plain VALUES ($pgid, 'kept');
		PREPARE TRANSACTION 'undone_$pgid';
		COMMIT PREPARED 'undone_$pgid';});
	is($ret, 0, "$undone rolled back to a savepoint does not block PREPARE")
	  or diag $err;
	is(q1("SELECT count(*) FROM plain WHERE id = $pgid"), '1', "$undone undone: prepared transaction committed");
	is(q1(q{SELECT count(*) FROM ddict_dicts WHERE dict = 'settings'::regclass}), '1',
		"$undone undone: the dict is still attached");
	is(version(), $v0, "$undone undone: version unchanged");
}

# A transaction that wrote one dict and dropped another names the dropped one.
q1(q{SELECT ddict_create('other')});
($ret, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT ddict_set('settings', 'w', 'x'); DROP TABLE other; PREPARE TRANSACTION 'mixed';});
like($err, qr/detached or dropped ddict dict public.other/, 'the refusal names the dropped dict');
is(q1(q{SELECT count(*) FROM pg_class WHERE relname = 'other'}), '1', 'and nothing was dropped');

# The same session goes on after a refused PREPARE: no stale state behind,
# the next ordinary write bumps, and a later dict-free PREPARE works.
($ret, $out, $err) = $node->psql('postgres', q{
	BEGIN; SELECT ddict_detach('settings'); PREPARE TRANSACTION 'refused';
	SELECT ddict_set('settings', 'after', '1');
	BEGIN; INSERT INTO plain VALUES (300, 'p'); PREPARE TRANSACTION 'after_refusal';
	COMMIT PREPARED 'after_refusal';
}, on_error_stop => 0);
like($err, $refused, 'same session: PREPARE refused');
is(q1("SELECT ddict_get('settings', 'after')"), '1', 'same session: next write committed');
cmp_ok(version(), '>', $v0, 'same session: next write moved the version');
is(q1('SELECT note FROM plain WHERE id = 300'), 'p',
	'same session: a later dict-free transaction prepares and commits');

# A prepared transaction survives a restart; committing it after the restart
# leaves dicts alone.
$v0 = version();
q1(q{BEGIN; INSERT INTO plain VALUES (400, 'across restart'); PREPARE TRANSACTION 'restart';});
$node->restart;
my $v_restart = version();
cmp_ok($v_restart, '>', $v0, 'restart re-seeds the version above the old one');
q1(q{COMMIT PREPARED 'restart'});
is(q1('SELECT note FROM plain WHERE id = 400'), 'across restart',
	'prepared transaction committed after restart');
is(version(), $v_restart, 'COMMIT PREPARED of a dict-free transaction does not move the version');

$node->stop;
done_testing();
