# 001_restart.pl — dict versions are never reused across a restart or a crash
# (DESIGN §3.4).
#
# The version table lives in shared memory and is empty after every
# postmaster start; a slot is re-seeded from the hybrid logical clock.  A
# client that cached version V before the restart must never be handed V (or
# anything below it) again for what may be other contents, so:
#
#   * the first read after a restart, before any write, is > every version
#     handed out before it;
#   * the first write after the restart moves the version above that read;
#   * the data survive and the dict API works on them;
#   * ddict_epoch() changes at every restart (clients use it to drop deltas).
#
# Both a fast restart (shutdown checkpoint) and a crash (immediate stop, WAL
# recovery) are covered, the crash after several writes whose versions are
# all recorded.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('restart');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ddict'\nmax_prepared_transactions = 5");
$node->start;

sub q1 { return $node->safe_psql('postgres', $_[0]); }
sub version { return q1("SELECT ddict_last_updated('$_[0]')"); }

q1(q{CREATE EXTENSION ddict;
     SELECT ddict_create('settings');
     SELECT ddict_create('other', 'jsonb');});

# Several writes, each in its own transaction: every one moves the version.
my @seen;
for my $i (1 .. 5)
{
	q1("SELECT ddict_set('settings', 'k$i', 'v$i')");
	push @seen, version('settings');
}
q1(q{SELECT ddict_set('other', 'a', '{"x": 1}')});
my $other_before = version('other');
for my $i (1 .. $#seen)
{
	cmp_ok($seen[$i], '>', $seen[ $i - 1 ],
		"before restart: write $i moved the version strictly");
}

# Versions are microseconds since 1970: readable as the current time.
my $now_us = q1("SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint");
cmp_ok(abs($now_us - $seen[-1]), '<', 600 * 1_000_000,
	'version is a time in microseconds since 1970 (within 10 min of now)');

my $epoch1 = q1('SELECT ddict_epoch()');

# A client's state (version, epoch, change-ring cursor) from before the restart.
my $client = q1(q{SELECT version || ',' || epoch || ',' || cursor FROM ddict_changes('settings') WHERE key IS NULL});
like($client, qr/^$seen[-1],$epoch1,\d+$/, 'client state before restart: current version and epoch');

#
# (a) fast restart
#
my $v_max = $seen[-1];
$node->restart;

my $epoch2 = q1('SELECT ddict_epoch()');
cmp_ok($epoch2, '>', $epoch1, 'fast restart: ddict_epoch() moved');

my $v_read = version('settings');
cmp_ok($v_read, '>', $v_max,
	'fast restart: first read (no write yet) is above every version handed out before');
is(version('settings'), $v_read,
	'fast restart: repeated read without a write returns the same version');
cmp_ok(version('other'), '>', $other_before,
	'fast restart: a second dict is re-seeded above its old version too');

is(q1("SELECT string_agg(kind::text || coalesce(':' || key, ''), ' ' ORDER BY key IS NOT NULL, key)
         FROM ddict_changes('settings', $client)"),
	'f s:k1 s:k2 s:k3 s:k4 s:k5',
	"fast restart: a client's pre-restart state gets a full reload, never a delta or 'unchanged'");
is(q1("SELECT ddict_get('settings', 'k3')"), 'v3', 'fast restart: ddict_get returns the data');
is(q1("SELECT ddict_len('settings')"), '5', 'fast restart: ddict_len sees every key');
is(q1("SELECT ddict_get('other', 'a')"), '{"x": 1}', 'fast restart: jsonb dict data survive');
is(q1("SELECT commits FROM ddict_stats WHERE dict = 'settings'::regclass"),
	'0', 'fast restart: ddict_stats.commits counts from the server start');

q1(q{SELECT ddict_set('settings', 'k1', 'changed')});
my $v_write = version('settings');
cmp_ok($v_write, '>', $v_read, 'fast restart: first write moves the version above the read');
is(q1("SELECT ddict_get('settings', 'k1')"), 'changed', 'fast restart: write visible');
is(q1("SELECT commits FROM ddict_stats WHERE dict = 'settings'::regclass"),
	'1', 'fast restart: ddict_stats.commits counted the write');

#
# (b) crash: several writes, then an immediate stop (no shutdown checkpoint)
#
my @before_crash = ($v_write);
for my $i (1 .. 5)
{
	q1("INSERT INTO settings VALUES ('crash$i', 'c$i')");
	push @before_crash, version('settings');
	cmp_ok($before_crash[-1], '>', $before_crash[-2],
		"before crash: INSERT $i moved the version strictly");
}
q1(q{UPDATE settings SET value = 'x' WHERE key = 'k2'});
push @before_crash, version('settings');
q1(q{SELECT ddict_set('other', 'b', '[2]')});
my $other_crash = version('other');
my ($max_before_crash) = sort { $b <=> $a } @before_crash;
$epoch2 = q1('SELECT ddict_epoch()');

$node->stop('immediate');
$node->start;

my $epoch3 = q1('SELECT ddict_epoch()');
cmp_ok($epoch3, '>', $epoch2, 'crash: ddict_epoch() moved');

# Read "other" first this time, then "settings": order of first reads must not matter.
cmp_ok(version('other'), '>', $other_crash, 'crash: second dict re-seeded above its old version');
my $v_crash_read = version('settings');
cmp_ok($v_crash_read, '>', $max_before_crash,
	'crash: first read is above every version seen before the crash');

is(q1("SELECT ddict_get('settings', 'crash5')"), 'c5', 'crash: committed INSERT survived');
is(q1("SELECT ddict_get('settings', 'k2')"), 'x', 'crash: committed UPDATE survived');
is(q1("SELECT ddict_len('settings')"), '10', 'crash: every key survived');
is(q1("SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM ddict_items('other')"),
	'a={"x": 1},b=[2]', 'crash: ddict_items of the jsonb dict');

q1(q{DELETE FROM settings WHERE key = 'crash1'});
my $v_crash_write = version('settings');
cmp_ok($v_crash_write, '>', $v_crash_read, 'crash: first write moves the version above the read');
cmp_ok($v_crash_write, '>', $max_before_crash, 'crash: and above every version before the crash');

# A dict written before any read after the crash: the write seeds the slot.
$node->stop('immediate');
$node->start;
q1(q{SELECT ddict_set('other', 'c', '3')});
cmp_ok(version('other'), '>', $other_crash,
	'second crash: a write as the first access after start gives a new version');
cmp_ok(version('settings'), '>', $v_crash_write,
	'second crash: untouched dict re-seeded above its last version');

$node->stop;
done_testing();
