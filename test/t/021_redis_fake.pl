# The Redis publisher against a Redis that misbehaves (test/fake-redis.pl):
# wrong reply types (an integer SCAN cursor crashed the worker, and with it
# every backend, once per restart), nil, error replies, random bytes, half a
# reply then a close or a hang, extra replies — on SCAN, DEL, AUTH, SET,
# PUBLISH and PING.  Each is a logged outage seen in ddict_redis_status(),
# retried with backoff: the worker never dies, the server never restarts, a
# long-lived session survives, commits go on.  The worker's memory does not
# grow over failed attempts (the loop's memory context is reset every turn).
# Pointed at a real redis-server afterwards, publishing recovers.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RedisServer;
use FakeRedis;

my $fake = FakeRedis->new(mode => 'wrong SCAN');
my $fport = $fake->port;

my $node = PostgreSQL::Test::Cluster->new('fake');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ddict'
ddict.redis_url = 'redis://:secret\@127.0.0.1:$fport'
ddict.redis_timeout = '200ms'
ddict.redis_max_backoff = '100ms'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ddict;
	SELECT ddict_create('settings');
	SELECT ddict_set('settings', 'a', '0');
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

# The worker has no database connection, so no pg_stat_activity row: find
# the postmaster's child by its process title.
sub worker_pid
{
	my ($pm) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
	for my $dir (glob '/proc/[0-9]*')
	{
		my ($pid) = $dir =~ m{(\d+)$};
		open(my $st, '<', "$dir/stat") or next;
		my $stat = <$st> // '';
		close $st;
		next unless $stat =~ /^\d+ \(.*\) \S (\d+)/ && $1 == $pm;
		open(my $cl, '<', "$dir/cmdline") or next;
		my $cmd = <$cl> // '';
		close $cl;
		return $pid if $cmd =~ /ddict publisher/;
	}
	return '';
}

# A session that lives through the whole test: any crash of a process
# attached to shared memory makes the postmaster end it.
my $session = $node->background_psql('postgres', on_error_stop => 0);
my $session_pid = $session->query('SELECT pg_backend_pid()');
my $worker = worker_pid();
ok($worker =~ /^\d+$/, 'the publisher is running');
my $commits = 0;

# The server is the same one: no crash, no restart, the same worker.
sub survived
{
	my ($what) = @_;
	my $log = slurp_file($node->logfile);
	my $pid = $session->query('SELECT pg_backend_pid()');
	ok( $log !~ /terminated by signal|was terminated by exception|all server processes terminated/
		  && $pid eq $session_pid && worker_pid() eq $worker,
		"$what: no crash, no restart, the same worker and session")
	  or diag("session pid '$pid' (was $session_pid), worker '" . worker_pid() . "' (was $worker)");
}

# Misbehave with @mode until $n more connections were made and the status
# reports an error matching $re; commits go on meanwhile.
sub outage
{
	my ($re, $n, @mode) = @_;
	my $what = join('; ', @mode);
	my $t0 = sql(q{SELECT coalesce(last_error_at, '-infinity') FROM ddict_redis_status()});
	my $c0 = $fake->connections;
	$fake->mode(@mode);
	my $err = '';
	my $deadline = time + 30;
	while (time < $deadline)
	{
		sql(qq{SELECT ddict_set('settings', 'a', '@{[++$commits]}')});
		$err = sql(qq{SELECT last_error FROM ddict_redis_status()
			WHERE last_error_at > '$t0' AND NOT connected});
		last if $fake->connections >= $c0 + $n && $err =~ $re;
		usleep(50_000);
	}
	like($err, $re, "$what: reported in ddict_redis_status().last_error");
	cmp_ok($fake->connections, '>=', $c0 + $n, "$what: retried ($n connections)");
	survived($what);
}

# --- before the first SCAN has gone through (once per server start)
outage(qr/^SCAN: malformed reply/, 12, 'wrong SCAN');
outage(qr/^SCAN: malformed reply/, 2, 'nil SCAN');
outage(qr/^SCAN: ERR fake-redis/, 2, 'error SCAN');
outage(qr/^SCAN: /, 4, 'random SCAN');
outage(qr/^SCAN: /, 2, 'truncate SCAN');
outage(qr/^SCAN: /, 2, 'hang SCAN');
outage(qr/^(SCAN|DEL): malformed reply/, 2, 'extra SCAN');
outage(qr/^DEL: malformed reply/, 3, 'wrong DEL');
outage(qr/^AUTH: malformed reply/, 3, 'wrong AUTH');
outage(qr/^AUTH: ERR fake-redis/, 1, 'error AUTH');

# --- memory: failed attempts do not accumulate allocations.  A long password
# and prefix make each attempt's copies (the URL's, the SCAN pattern's) big.
sub rss_kb
{
	open(my $fh, '<', "/proc/$worker/status") or return -1;
	my ($kb) = map { /^VmRSS:\s+(\d+)/ ? $1 : () } <$fh>;
	close $fh;
	return $kb // -1;
}
# (A URL is at most 1 kB — src/common/redis_url.h — so the password is long
# but accepted; the prefix has no such limit.)
my $long = 'p' x 131072;
my $long_pw = 'p' x 900;
$fake->mode('error SCAN');
sql(qq{ALTER SYSTEM SET ddict.redis_url = 'redis://:$long_pw\@127.0.0.1:$fport'});
sql(qq{ALTER SYSTEM SET ddict.redis_prefix = '$long'});
sql('SELECT pg_reload_conf()');
sub wait_connections
{
	my ($n) = @_;
	my $deadline = time + 60;
	usleep(100_000) while $fake->connections < $n && time < $deadline;
	return $fake->connections >= $n;
}
my $c0 = $fake->connections;
ok(wait_connections($c0 + 5), 'attempts with a long password and prefix go on');
my $rss0 = rss_kb();
$c0 = $fake->connections;
ok(wait_connections($c0 + 50), '... 50 more of them');
my $rss1 = rss_kb();
cmp_ok($rss1 - $rss0, '<', 2048,
	"50 failed attempts with a long URL and a 128 kB prefix: worker RSS grew by < 2 MB ($rss0 -> $rss1 kB)");
sql(qq{ALTER SYSTEM SET ddict.redis_url = 'redis://:secret\@127.0.0.1:$fport'});
sql(q{ALTER SYSTEM RESET ddict.redis_prefix});
sql('SELECT pg_reload_conf()');
survived('failed attempts with a long URL');

# --- the first SCAN goes through; then publishing itself misbehaves
$fake->mode('ok');
my $deadline = time + 30;
usleep(50_000)
  while time < $deadline
  && sql(q{SELECT connected AND published > 0 FROM ddict_redis_status()}) ne 't';
is(sql(q{SELECT connected AND published > 0 FROM ddict_redis_status()}), 't',
	'a well-behaved fake: connected, versions acknowledged');

outage(qr/^publish: SET: malformed reply/, 4, 'wrong SET');
outage(qr/^publish: PUBLISH: malformed reply/, 3, 'wrong PUBLISH');
outage(qr/^publish: SET: ERR fake-redis/, 2, 'error SET');
outage(qr/^publish: PUBLISH: malformed reply/, 2, 'nil PUBLISH');
outage(qr/^publish: /, 4, 'random SET PUBLISH');
outage(qr/^publish: /, 2, 'truncate PUBLISH');
outage(qr/^publish: /, 2, 'hang SET');
outage(qr/^publish: /, 2, 'extra SET');

# PING is sent after 5 s without anything to publish
$fake->mode('ok');
usleep(50_000) until sql(q{SELECT connected FROM ddict_redis_status()}) eq 't';
my $t0 = sql(q{SELECT last_error_at FROM ddict_redis_status()});
$fake->mode('wrong PING');
my $err = '';
$deadline = time + 30;
while (time < $deadline)
{
	$err = sql(qq{SELECT last_error FROM ddict_redis_status() WHERE last_error_at > '$t0'});
	last if $err ne '';
	usleep(100_000);
}
like($err, qr/^PING: malformed reply/, 'wrong PING: reported');
survived('wrong PING');

my $log = slurp_file($node->logfile);
like($log, qr/ddict: cannot publish to Redis at 127\.0\.0\.1:$fport: SCAN: malformed reply/,
	'the outage is in the server log');
unlike(join("\n", grep { /ddict: / } split /\n/, $log), qr/secret|ppppp/,
	'ddict\'s log lines never show the password');

# --- a real Redis: publishing recovers
my $redis = RedisServer->new;
my $rport = $redis->port;
sql(qq{ALTER SYSTEM SET ddict.redis_url = 'redis://127.0.0.1:$rport'});
sql('SELECT pg_reload_conf()');
sql(q{SELECT ddict_set('settings', 'a', 'final')});
my $v = sql(q{SELECT ddict_last_updated('settings')});
my $got = '';
$deadline = time + 30;
while (time < $deadline)
{
	$got = $redis->cli('GET', 'ddict:postgres:public.settings');
	last if $got eq $v;
	usleep(50_000);
}
is($got, $v, 'a real Redis afterwards: the current version is published');
is(sql(q{SELECT connected, target FROM ddict_redis_status()}), "t|127.0.0.1:$rport",
	'status: connected to the real Redis');
survived('the whole test');

$session->quit;
$fake->stop;
$redis->stop;
$node->stop;
done_testing();
