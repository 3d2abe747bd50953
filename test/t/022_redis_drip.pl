# The publisher and the change streamer against a Redis that drips its reply
# (test/fake-redis.pl, mode drip): the header of a 100 MB bulk reply, then a
# byte every 0.4 s, each read well within any per-read timeout.  hiredis's
# blocking calls kept both workers in recv() for ever: a reload of
# ddict.redis_url did not free them and "pg_ctl stop -m fast" timed out.
# Now ddict.redis_timeout bounds the whole reply, and SIGHUP and SIGTERM end
# the wait at once (src/redisconn.c).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RedisServer;
use FakeRedis;

my $redis = RedisServer->new;
my $rport = $redis->port;
my $fake = FakeRedis->new(mode => 'drip');
my $fport = $fake->port;

my $node = PostgreSQL::Test::Cluster->new('drip');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ddict'
ddict.redis_url = 'redis://127.0.0.1:$rport'
ddict.redis_timeout = '20s'
ddict.redis_max_backoff = '200ms'
});
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql(q{CREATE EXTENSION ddict; SELECT ddict_create('settings'); SELECT ddict_publish_changes('settings')});

my $vkey = 'ddict:postgres:public.settings';
my $skey = "$vkey:changes";
my $n = 0;
sub commit { sql(qq{SELECT ddict_set('settings', 'a', '@{[++$n]}')}); return sql(q{SELECT ddict_last_updated('settings')}); }

sub wait_for
{
	my ($cond, $secs) = @_;
	my $until = time + ($secs // 30);
	while (time < $until)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	return 0;
}

# Both workers reach the real Redis: the version key and a stream entry.
sub follows_real_redis
{
	my ($what, $secs) = @_;
	my $len0 = $redis->cli('XLEN', $skey) || 0;
	my $v = commit();
	my $t0 = time;
	ok(wait_for(sub { $redis->cli('GET', $vkey) eq $v }, $secs),
		"$what: the publisher publishes version $v");
	ok(wait_for(sub { $redis->cli('XLEN', $skey) > $len0 }, $secs),
		"$what: the streamer appends to the stream");
	note(sprintf("%s: %.1f s", $what, time - $t0));
}

# Point both workers at the drip server; wait until both are in a reply.
sub to_drip
{
	my $c0 = $fake->connections;
	sql(qq{ALTER SYSTEM SET ddict.redis_url = 'redis://127.0.0.1:$fport'});
	sql('SELECT pg_reload_conf()');
	commit();
	ok(wait_for(sub { $fake->connections >= $c0 + 2 }), 'publisher and streamer connect to the drip server');
	usleep(1_500_000);	# several drips: both are inside a reply now
}

follows_real_redis('a real Redis', 30);

# --- a reload of the URL frees both workers at once (20 s timeout)
to_drip();
sql(qq{ALTER SYSTEM SET ddict.redis_url = 'redis://127.0.0.1:$rport'});
sql('SELECT pg_reload_conf()');
follows_real_redis('back to the real Redis while dripped (redis_timeout 20 s)', 8);

# --- ddict.redis_timeout bounds the whole reply, not each read
sql(q{ALTER SYSTEM SET ddict.redis_timeout = '1s'});
to_drip();
ok(wait_for(sub { sql(q{SELECT last_error FROM ddict_redis_status() WHERE NOT connected}) =~ /timeout/ }, 10),
	'publisher: a dripped reply is a timeout after redis_timeout (1 s)');
ok(wait_for(sub { sql(q{SELECT last_error FROM ddict_change_streams()}) =~ /timeout/ }, 10),
	'streamer: a dripped reply is a timeout after redis_timeout (1 s)');
my $c0 = $fake->connections;
ok(wait_for(sub { $fake->connections >= $c0 + 2 }, 10), 'both retry (with backoff)');

# --- a fast stop ends the waits at once (20 s timeout)
sql(q{ALTER SYSTEM SET ddict.redis_timeout = '20s'});
sql(qq{ALTER SYSTEM SET ddict.redis_url = 'redis://127.0.0.1:$rport'});
sql('SELECT pg_reload_conf()');
follows_real_redis('the real Redis again', 30);
to_drip();
my $t0 = time;
my $stopped = run_log([ 'pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-w', '-t', '15', 'stop' ]);
my $took = time - $t0;
ok($stopped && $took < 5, sprintf('pg_ctl stop -m fast while both workers are dripped: %.1f s', $took));
$node->_update_pid(0) if $stopped;

$fake->stop;
$redis->stop;
done_testing();
