# 013_twophase_apply.pl — prepared transactions that change dicts: bumped at
# COMMIT PREPARED, wherever and whenever it runs (issue 8, suspected 1).
#
# A logical replication subscription with two_phase = true prepares every
# two-phase transaction of the publisher on the subscriber.  ddict used to
# refuse the PREPARE of a transaction that changed a dict, so the apply
# worker failed, restarted and retried the same PREPARE forever: the
# subscription was wedged.  Now a prepared transaction may change dicts;
# its dicts are recorded (shared memory and a file) and bumped once COMMIT
# PREPARED made the changes visible.  What must hold:
#
#   * the subscriber prepares the publisher's PREPARE; its dict's version
#     does not move and the rows are not visible while prepared;
#   * COMMIT PREPARED on the publisher: the subscriber's rows appear, its
#     version moves, ddict_stats counts one commit, a client that synced
#     before gets the key (in full), and later changes keep flowing;
#   * ROLLBACK PREPARED: no move;
#   * a subscriber restart (and a crash) while prepared: the COMMIT PREPARED
#     that comes after it still moves the version;
#   * on one server: PREPARE, then COMMIT PREPARED from another session, and
#     after a crash restart; a streaming standby follows the primary's
#     version, and once promoted bumps a transaction prepared before the
#     failover when it commits;
#   * a prepared transaction that detached or dropped a dict is still
#     refused, naming the dict.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my $conf = "shared_preload_libraries = 'ddict'\nmax_prepared_transactions = 10";

my $pub = PostgreSQL::Test::Cluster->new('publisher');
$pub->init(allows_streaming => 'logical');
$pub->append_conf('postgresql.conf', 'max_prepared_transactions = 10');
$pub->start;

my $node = PostgreSQL::Test::Cluster->new('subscriber');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', $conf);
$node->start;

sub pp { return $pub->safe_psql('postgres', $_[0]); }
sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub state
{
	my ($dict) = @_;
	return split /\|/, q1("SELECT ddict_last_updated('$dict'), "
		  . "(SELECT commits FROM ddict_stats WHERE dict = '$dict'::regclass)");
}

# Poll $sql on the subscriber until it returns 't', for at most $secs.
sub wait_for
{
	my ($sql, $secs) = @_;
	for (1 .. $secs * 10)
	{
		return 1 if q1($sql) eq 't';
		Time::HiRes::usleep(100_000);
	}
	return 0;
}

pp(q{CREATE TABLE replicated (key text PRIMARY KEY, value text NOT NULL);
     INSERT INTO replicated VALUES ('initial', 'i');
     CREATE PUBLICATION p FOR TABLE replicated;});
q1(q{CREATE EXTENSION ddict;
     CREATE TABLE replicated (key text PRIMARY KEY, value text NOT NULL);
     SELECT ddict_attach('replicated');});
my $pubconn = $pub->connstr . ' dbname=postgres';
q1("CREATE SUBSCRIPTION s CONNECTION '$pubconn' PUBLICATION p WITH (two_phase = true)");
$node->wait_for_subscription_sync($pub, 's');
ok(wait_for(q{SELECT subtwophasestate = 'e' FROM pg_subscription WHERE subname = 's'}, 30),
	'two_phase is enabled on the subscription');

#
# PREPARE, then COMMIT PREPARED, on the publisher.
#
my ($v0, $c0) = state('replicated');
my $client = q1(q{SELECT version || ',' || epoch || ',' || cursor FROM ddict_changes('replicated') WHERE key IS NULL});
pp(q{BEGIN; INSERT INTO replicated VALUES ('p1', 'prepared'); PREPARE TRANSACTION 'g1';});
ok(wait_for(q{SELECT count(*) = 1 FROM pg_prepared_xacts}, 20),
	'the subscriber prepared the transaction (the apply worker is not stuck)')
  or diag slurp_file($node->logfile) =~ /(.*cannot PREPARE.*)/ ? $1 : 'no ddict error in the log';
is(q1(q{SELECT count(*) FROM replicated WHERE key = 'p1'}), '0', 'prepared row not visible');
my ($v1, $c1) = state('replicated');
is($v1, $v0, 'version does not move at PREPARE');

pp(q{COMMIT PREPARED 'g1'});
$pub->wait_for_catchup('s');
ok(wait_for(q{SELECT count(*) = 0 FROM pg_prepared_xacts}, 20), 'COMMIT PREPARED applied');
is(q1(q{SELECT ddict_get('replicated', 'p1')}), 'prepared', 'the row is visible on the subscriber');
($v1, $c1) = state('replicated');
cmp_ok($v1, '>', $v0, 'COMMIT PREPARED moved the version on the subscriber');
is($c1, $c0 + 1, 'one commit counted');
is(q1("SELECT string_agg(kind::text || coalesce(':' || key, ''), ' ' ORDER BY key IS NOT NULL, key)
       FROM ddict_changes('replicated', $client)"),
	'f s:initial s:p1', 'a client that synced before the PREPARE reloads and gets the key');

#
# ROLLBACK PREPARED: nothing moves.
#
($v0, $c0) = state('replicated');
pp(q{BEGIN; INSERT INTO replicated VALUES ('p2', 'rolled back'); PREPARE TRANSACTION 'g2';});
ok(wait_for(q{SELECT count(*) = 1 FROM pg_prepared_xacts}, 20), 'second transaction prepared');
pp(q{ROLLBACK PREPARED 'g2'});
$pub->wait_for_catchup('s');
ok(wait_for(q{SELECT count(*) = 0 FROM pg_prepared_xacts}, 20), 'ROLLBACK PREPARED applied');
($v1, $c1) = state('replicated');
is($v1, $v0, 'ROLLBACK PREPARED does not move the version');
is($c1, $c0, 'and counts no commit');
is(q1(q{SELECT count(*) FROM replicated WHERE key = 'p2'}), '0', 'and the row is absent');

#
# The subscriber restarts while the transaction is prepared, then crashes.
#
for my $mode ('fast', 'immediate')
{
	pp(qq{BEGIN; INSERT INTO replicated VALUES ('r_$mode', 'x'); PREPARE TRANSACTION 'g_$mode';});
	ok(wait_for(q{SELECT count(*) = 1 FROM pg_prepared_xacts}, 20), "$mode restart: prepared");
	$node->stop($mode);
	$node->start;
	($v0, $c0) = state('replicated');
	pp(qq{COMMIT PREPARED 'g_$mode'});
	$pub->wait_for_catchup('s');
	ok(wait_for(q{SELECT count(*) = 0 FROM pg_prepared_xacts}, 20), "$mode restart: committed");
	is(q1(qq{SELECT ddict_get('replicated', 'r_$mode')}), 'x', "$mode restart: row visible");
	($v1, $c1) = state('replicated');
	cmp_ok($v1, '>', $v0, "$mode restart: COMMIT PREPARED after the restart moved the version");
}

# Later changes keep flowing.
($v0, $c0) = state('replicated');
pp(q{INSERT INTO replicated VALUES ('after', 'a')});
$pub->wait_for_catchup('s');
is(q1(q{SELECT ddict_get('replicated', 'after')}), 'a', 'the subscription keeps applying');
($v1, $c1) = state('replicated');
cmp_ok($v1, '>', $v0, 'and moving the version');
q1('DROP SUBSCRIPTION s');
$pub->stop;

#
# Two-phase on one server, with a streaming standby.
#
q1(q{SELECT ddict_create('settings'); SELECT ddict_set('settings', 'a', '1');
     CREATE TABLE sync_marker (id serial PRIMARY KEY);});
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;

sub catch_up
{
	q1('INSERT INTO sync_marker VALUES (DEFAULT)');
	$node->wait_for_catchup($standby, 'replay', $node->lsn('flush'));
}

sub sv { return $standby->safe_psql('postgres', q{SELECT ddict_last_updated('settings')}); }

catch_up();
($v0, $c0) = state('settings');
my $s0 = sv();
q1(q{BEGIN; UPDATE settings SET value = '2' WHERE key = 'a';
     SELECT ddict_set('settings', 'b', 'new'); PREPARE TRANSACTION 'local';});
catch_up();
is((state('settings'))[0], $v0, 'local PREPARE: version unchanged');
is(sv(), $s0, 'local PREPARE: standby version unchanged');
# COMMIT PREPARED from another session (every safe_psql is one)
q1(q{COMMIT PREPARED 'local'});
($v1, $c1) = state('settings');
cmp_ok($v1, '>', $v0, 'COMMIT PREPARED in another session moved the version');
is($c1, $c0 + 1, 'one commit counted');
is(q1(q{SELECT ddict_get('settings', 'a') || ddict_get('settings', 'b')}), '2new',
	'the prepared changes are visible');
catch_up();
is(sv(), $v1, "the standby's version equals the primary's");
is($standby->safe_psql('postgres', q{SELECT ddict_get('settings', 'b')}), 'new',
	'and the standby reads the change');

# Prepared, crash, COMMIT PREPARED after the restart.
q1(q{BEGIN; SELECT ddict_set('settings', 'c', 'crash'); PREPARE TRANSACTION 'crash';});
$node->stop('immediate');
$node->start;
($v0, $c0) = state('settings');
q1(q{COMMIT PREPARED 'crash'});
($v1, $c1) = state('settings');
cmp_ok($v1, '>', $v0, 'COMMIT PREPARED after a crash restart moved the version');
is(q1(q{SELECT ddict_get('settings', 'c')}), 'crash', 'and the change is visible');
catch_up();
is(sv(), $v1, "the standby's version equals the primary's after it");
is(q1(q{SELECT count(*) FROM pg_ls_dir('ddict_twophase')}), '0',
	'no record of prepared writers is left behind');

# A failed PREPARE (the name is taken) leaves nothing behind either.
q1(q{BEGIN; SELECT ddict_set('settings', 'd', '1'); PREPARE TRANSACTION 'dup';});
my ($ret, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT ddict_set('settings', 'e', '1'); PREPARE TRANSACTION 'dup';});
like($err, qr/already in use/, 'PREPARE with a name in use fails');
is(q1(q{SELECT count(*) FROM pg_ls_dir('ddict_twophase')}), '1',
	'only the prepared transaction is recorded');
q1(q{ROLLBACK PREPARED 'dup'});
is(q1(q{SELECT count(*) FROM pg_ls_dir('ddict_twophase')}), '0', 'and none after its rollback');

# Detaching or dropping a dict in a prepared transaction is refused.
for my $sql (q{SELECT ddict_detach('settings')}, q{DROP TABLE settings})
{
	($ret, $out, $err) = $node->psql('postgres', "BEGIN; $sql; PREPARE TRANSACTION 'forget';");
	like($err, qr/cannot PREPARE a transaction that detached or dropped ddict dict public.settings/,
		"$sql: PREPARE refused, naming the dict");
	is(q1(q{SELECT count(*) FROM pg_prepared_xacts}), '0', "$sql: nothing prepared");
}

# Failover while prepared: the transaction is committed on the promoted
# standby, which has only the replayed intent (no ddict_twophase record):
# its first reader bumps the dict once the commit is visible.
q1(q{BEGIN; SELECT ddict_set('settings', 'f', 'failover'); PREPARE TRANSACTION 'failover';});
catch_up();
my $before_failover = sv();
$node->stop('immediate');
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'promotion did not finish';
$standby->safe_psql('postgres', q{COMMIT PREPARED 'failover'});
my $moved = 0;
for (1 .. 100)
{
	$moved = 1, last if sv() ne $before_failover;
	Time::HiRes::usleep(100_000);
}
ok($moved, 'COMMIT PREPARED after a failover moves the version on the new primary');
is($standby->safe_psql('postgres', q{SELECT ddict_get('settings', 'f')}), 'failover',
	'and the change is visible there');

$standby->stop;
done_testing();
