# The Redis publisher: versions reach Redis after commit and never before,
# PUBLISH carries the version, commits never wait for Redis, a restarted
# Redis gets every version back, a wrong password is reported and survived,
# bursts end at the final version, and the URL's password stays hidden.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);
use RedisServer;

my $redis = RedisServer->new;
my $port = $redis->port;

my $node = PostgreSQL::Test::Cluster->new('pub');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ddict'
ddict.redis_url = 'redis://127.0.0.1:$port'
ddict.redis_timeout = '200ms'
ddict.redis_max_backoff = '300ms'
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ddict;
	SELECT ddict_create('settings');
	SELECT ddict_create('other');
});

my $key = 'ddict:postgres:public.settings';
sub version { return $node->safe_psql('postgres', "SELECT ddict_last_updated('$_[0]')"); }

# Wait until Redis holds $want under $k (bounded); returns what it holds.
sub redis_becomes
{
	my ($k, $want, $secs) = @_;
	my $got;
	for (1 .. ($secs // 10) * 20)
	{
		$got = $redis->cli('GET', $k);
		return $got if $got eq $want;
		usleep(50_000);
	}
	return $got;
}

# --- after commit, not before; not after rollback
$node->safe_psql('postgres', q{SELECT ddict_set('settings', 'a', '1')});
my $v = version('settings');
is(redis_becomes($key, $v), $v, 'the version is in Redis after commit');

$node->safe_psql('postgres', q{BEGIN; SELECT ddict_set('settings', 'a', '2'); ROLLBACK;});
# Publishing is in commit order per wake-up: once a later commit of another
# dict is in Redis, the rolled-back one would have been too.
$node->safe_psql('postgres', q{SELECT ddict_set('other', 'x', '1')});
my $vo = version('other');
is(redis_becomes('ddict:postgres:public.other', $vo), $vo, 'a later commit was published');
is($redis->cli('GET', $key), $v, 'a rollback left the version in Redis as it was');

# --- PUBLISH carries the version
my ($in, $out, $err) = ('', '', '');
my $sub = IPC::Run::start([ 'redis-cli', '-p', $port, 'SUBSCRIBE', $key ],
	\$in, \$out, \$err, IPC::Run::timeout(30));
$sub->pump until $out =~ /subscribe/;
$node->safe_psql('postgres', q{SELECT ddict_set('settings', 'a', '3')});
$v = version('settings');
$sub->pump until $out =~ /\Q$v\E/ || $out =~ /message\n\Q$key\E\n(\d+)\n.*message/s;
like($out, qr/message\n\Q$key\E\n\Q$v\E\n/, 'PUBLISH on the key\'s channel carries the version');
$sub->kill_kill;

my $status = $node->safe_psql('postgres',
	q{SELECT enabled, worker_running, connected, published > 0, last_error IS NULL FROM ddict_redis_status()});
is($status, 't|t|t|t|t', 'status: enabled, running, connected, publishing, no error');

# --- Redis down: commits go on at full speed, one log line per outage
my $log_offset = -s $node->logfile;
$redis->stop;
$node->safe_psql('postgres', q{SELECT ddict_set('settings', 'k0', '0')});
$node->poll_query_until('postgres', q{SELECT NOT connected FROM ddict_redis_status()})
  or die 'publisher never noticed Redis went away';
my $t0 = time;
$node->safe_psql('postgres',
	join('', map { "SELECT ddict_set('settings', 'k$_', '$_');\n" } 1 .. 100));
my $elapsed = time - $t0;
cmp_ok($elapsed, '<', 10, "100 commits with Redis down took ${elapsed}s (bound 10s; Redis timeout is 200ms)");
is($node->safe_psql('postgres', q{SELECT ddict_len('settings')}), '102', 'and all of them committed');
# let the worker retry several times (backoff is capped at 300ms)
$node->poll_query_until('postgres',
	q{SELECT last_error_at > now() - interval '1 second' AND NOT connected FROM ddict_redis_status()})
  or die 'no retry recorded';
usleep(1_500_000);
my $log = slurp_file($node->logfile, $log_offset);
my $outage_lines = () = $log =~ /cannot publish to Redis/g;
is($outage_lines, 1, 'one log line for the outage, not one per attempt');
like($node->safe_psql('postgres', q{SELECT last_error FROM ddict_redis_status()}),
	qr/connect/, 'status carries the last error');

# --- Redis restarted empty: every current version is republished
$redis->start;
$v = version('settings');
is(redis_becomes($key, $v), $v, 'restarted Redis got the current version back without a new commit');
is(redis_becomes('ddict:postgres:public.other', $vo), $vo, 'and every other dict\'s');
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/publishing to Redis at 127\.0\.0\.1:$port again/, 'the end of the outage is logged');

# --- 1000 rapid commits: Redis ends at the final version
$node->safe_psql('postgres',
	join('', map { "UPDATE settings SET value = '$_' WHERE key = 'a';\n" } 1 .. 1000));
$v = version('settings');
is(redis_becomes($key, $v, 20), $v, '1000 rapid commits: Redis ends at the final version');

# --- a renamed dict is published under its new name
$node->safe_psql('postgres', q{ALTER TABLE other RENAME TO renamed; SELECT ddict_set('renamed', 'y', '2')});
my $vr = version('renamed');
is(redis_becomes('ddict:postgres:public.renamed', $vr), $vr, 'a renamed dict is published under its new name');

# --- a rename that rolls back changes no name (attack round 5: the name was
# changed at the DDL, outside the transaction)
$node->safe_psql('postgres', q{BEGIN; ALTER TABLE renamed RENAME TO never; ROLLBACK; SELECT ddict_set('renamed', 'y', '3')});
$vr = version('renamed');
is(redis_becomes('ddict:postgres:public.renamed', $vr), $vr, 'after a rolled-back rename the dict is published under its name');
is($redis->cli('GET', 'ddict:postgres:public.never'), '', '... and never under the name that was rolled back');

# --- a blue/green swap of schemas: each name's key holds the version of the
# relation that bears it after the swap (it kept the old relation's, and
# clients using Redis as the version source served the old table)
$node->safe_psql('postgres', q{CREATE SCHEMA live; CREATE SCHEMA staging;
	SELECT ddict_create('live.settings'); SELECT ddict_create('staging.settings');
	SELECT ddict_set('live.settings', 'k', 'old'); SELECT ddict_set('staging.settings', 'k', 'new')});
my $vlive = version('live.settings');
is(redis_becomes('ddict:postgres:live.settings', $vlive), $vlive, 'live.settings is published');
$node->safe_psql('postgres', q{BEGIN; ALTER SCHEMA live RENAME TO retired; ALTER SCHEMA staging RENAME TO live; COMMIT});
my $vswap = version('live.settings');
isnt($vswap, $vlive, 'after the swap, live.settings is another relation with another version');
is(redis_becomes('ddict:postgres:live.settings', $vswap), $vswap,
	'the key of live.settings holds the version of the relation now named so');

# --- a server restart removes the earlier run's keys (versions are re-seeded
# at start; a dict nobody touched since would otherwise look unchanged)
$node->restart;
my $gone = 0;
for (1 .. 200)
{
	$gone = 1, last if $redis->cli('GET', 'ddict:postgres:public.renamed') eq ''
	  && $redis->cli('GET', $key) eq '';
	usleep(50_000);
}
ok($gone, 'after a server restart the keys of untouched dicts are removed');
$node->safe_psql('postgres', q{SELECT ddict_set('renamed', 'y', '3')});
my $vr2 = version('renamed');
cmp_ok($vr2, '>', $vr, 'the version after the restart is above the one before');
is(redis_becomes('ddict:postgres:public.renamed', $vr2), $vr2, 'and is published once the dict is written');

# --- a wrong password: clear status and log line, no crash, then recovery
my $secure = RedisServer->new(password => 's3cret-pw');
my $sport = $secure->port;
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', "ALTER SYSTEM SET ddict.redis_url = 'redis://:wrong-pw\@127.0.0.1:$sport'");
$node->reload;
$node->poll_query_until('postgres',
	q{SELECT last_error ~* 'AUTH' AND NOT connected FROM ddict_redis_status()})
  or die 'wrong password never reported';
pass('a wrong password is reported in the status');
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/cannot publish to Redis at 127\.0\.0\.1:$sport: AUTH/, 'and logged');
# (PostgreSQL itself logs changed parameters on reload, and this test logs
# statements; ddict's own lines never carry the URL.)
my @ddict_lines = grep { /ddict:/ } split /\n/, $log;
ok(@ddict_lines && !grep({ /wrong-pw/ } @ddict_lines), 'ddict\'s log lines never carry the password');
is($node->safe_psql('postgres', q{SELECT ddict_set('settings', 'still', 'works')}), '',
	'commits still work');
$node->safe_psql('postgres', "ALTER SYSTEM SET ddict.redis_url = 'redis://:s3cret-pw\@127.0.0.1:$sport'");
$node->reload;
$v = version('settings');
my $got;
for (1 .. 200)
{
	$got = $secure->cli('GET', $key);
	last if $got eq $v;
	usleep(50_000);
}
is($got, $v, 'with the right password the versions are published');

# --- the URL (with its password) is hidden from non-superusers
$node->safe_psql('postgres', q{CREATE ROLE app LOGIN});
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'SHOW ddict.redis_url', extra_params => [ '-U', 'app' ]);
isnt($ret, 0, 'SHOW ddict.redis_url fails for a non-superuser');
like($stderr, qr/must be superuser|permission denied|privileges/, 'with a permission error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name = 'ddict.redis_url'},
		extra_params => [ '-U', 'app' ]), '0', 'pg_settings does not show it to them');
is($node->safe_psql('postgres', q{SELECT worker_running FROM ddict_redis_status()}), 't',
	'the worker is still running');

# --- off: an empty URL stops publishing
$node->safe_psql('postgres', q{ALTER SYSTEM SET ddict.redis_url = ''});
$node->reload;
$node->poll_query_until('postgres', q{SELECT NOT enabled AND NOT connected FROM ddict_redis_status()})
  or die 'publisher did not turn off';
pass('an empty ddict.redis_url turns publishing off');

$secure->stop;
$redis->stop;
$node->stop;
done_testing();
