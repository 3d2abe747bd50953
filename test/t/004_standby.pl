# 004_standby.pl — a streaming hot standby answers ddict_last_updated() and
# moves dict versions as it replays (DESIGN §5, §3.1 on the standby).
#
# The primary writes a custom WAL record (resource manager "ddict") after each
# commit that changed a dict; it is flushed asynchronously by the WAL writer.
# What must hold on the standby:
#
#   * ddict_last_updated / ddict_get / ddict_items / ddict_stats work there
#     (read-only), and dict writes fail like any write on a standby;
#   * after a commit on the primary the standby's version moves by itself
#     (no further WAL traffic is generated to push it: we only poll), and once
#     it moved the standby reads the new value;
#   * once replay has passed a later synchronous commit (whose flush covers
#     the bump record) the standby's version equals the primary's — same
#     machine, same clock — with no polling of the version;
#   * several commits each move the standby's version strictly;
#   * ddict_changes there answers 'f' (full) with every row, 'u' when nothing
#     changed, and its rows are never older than its header's version;
#   * a standby restart re-seeds above every version it showed;
#   * after promotion, writes on the new primary get versions above every
#     version the old primary handed out (§3.4 across failover);
#   * a primary crash between a commit and the flush of its bump record does
#     not leave the standby (or the promoted standby) at its old version with
#     the new rows (second pair of nodes, at the end).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my $conf = "shared_preload_libraries = 'ddict'\nmax_prepared_transactions = 5";

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $conf);
$primary->start;

sub pq { return $primary->safe_psql('postgres', $_[0]); }

pq(q{CREATE EXTENSION ddict;
    SELECT ddict_create('settings');
    SELECT ddict_set('settings', 'greeting', 'hello');
    SELECT ddict_set('settings', 'counter', '0');
    SELECT ddict_create('other');
    CREATE TABLE sync_marker (id serial PRIMARY KEY);});

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', $conf);
$standby->start;

sub sq { return $standby->safe_psql('postgres', $_[0]); }
sub pv { return pq("SELECT ddict_last_updated('$_[0]')"); }
sub sv { return sq("SELECT ddict_last_updated('$_[0]')"); }

# Wait until the standby replayed every bump record the primary wrote so far.
# Bump records are flushed asynchronously.  A later transaction that writes a
# row commits synchronously, flushing the WAL up to its commit record, past
# every earlier bump record; then wait until the standby replayed that far.
# (txid_current() alone would not do: a transaction that wrote no WAL before
# its commit record commits asynchronously.  Waiting for the insert LSN can
# stall when it sits just after a page boundary that no record crossed yet.)
sub catch_up
{
	my ($prim, $stby) = @_;
	$prim //= $primary;
	$stby //= $standby;
	$prim->safe_psql('postgres', 'INSERT INTO sync_marker VALUES (DEFAULT)');
	$prim->wait_for_catchup($stby, 'replay', $prim->lsn('flush'));
}

catch_up();
is(sq('SELECT pg_is_in_recovery()'), 't', 'standby is in recovery');

#
# Reads on the standby.
#
my $s0 = sv('settings');
like($s0, qr/^\d{16}$/, 'ddict_last_updated works on the standby');
is(sq(q{SELECT ddict_get('settings', 'greeting')}), 'hello', 'ddict_get works on the standby');
is(sq(q{SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM ddict_items('settings')}),
	'counter=0,greeting=hello', 'ddict_items works on the standby');
is(sq(q{SELECT string_agg(dict::text || ':' || value_type, ',' ORDER BY dict::text) FROM ddict_dicts}),
	'other:text,settings:text', 'ddict_dicts works on the standby');
is(sv('settings'), $s0, 'standby version stable while the primary is idle');

my ($ret, $out, $err) = $standby->psql('postgres', q{SELECT ddict_set('settings', 'x', 'y')});
isnt($ret, 0, 'ddict_set fails on the standby');
like($err, qr/read-only transaction/, 'with the read-only error');

#
# One commit: the standby's version moves by itself (async flush), then the
# new value is there.
#
pq(q{SELECT ddict_set('settings', 'greeting', 'bonjour')});
my $p1 = pv('settings');
ok($standby->poll_query_until('postgres', "SELECT ddict_last_updated('settings') <> $s0"),
	'standby version moved after a commit on the primary (polled, no further WAL)');
my $s1 = sv('settings');
cmp_ok($s1, '>', $s0, 'standby version moved forward');
is(sq(q{SELECT ddict_get('settings', 'greeting')}), 'bonjour',
	'standby reads the new value once its version moved');
is($s1, $p1, "standby version equals the primary's");

#
# Several commits: each moves the standby version strictly, to the primary's.
#
my $prev = $s1;
my $other_before = sv('other');
for my $i (1 .. 5)
{
	pq("UPDATE settings SET value = '$i' WHERE key = 'counter'");
	my $pvi = pv('settings');
	catch_up();
	my $svi = sv('settings');
	cmp_ok($svi, '>', $prev, "commit $i: standby version moved strictly");
	is($svi, $pvi, "commit $i: standby version equals the primary's");
	is(sq(q{SELECT ddict_get('settings', 'counter')}), $i, "commit $i: standby reads the new value");
	$prev = $svi;
}
is(sv('other'), $other_before, "commits to one dict leave another dict's standby version alone");

# One transaction changing two dicts, and a TRUNCATE.
pq(q{BEGIN; SELECT ddict_set('settings', 'both', '1'); SELECT ddict_set('other', 'both', '2'); COMMIT;});
my ($pa, $pb) = (pv('settings'), pv('other'));
catch_up();
is(sv('settings'), $pa, 'two-dict transaction: first dict replayed to the primary version');
is(sv('other'), $pb, 'two-dict transaction: second dict replayed to the primary version');
pq(q{TRUNCATE other});
my $pt = pv('other');
catch_up();
is(sv('other'), $pt, 'TRUNCATE replayed to the primary version');
is(sq(q{SELECT ddict_len('other')}), '0', 'TRUNCATE visible on the standby');

# Rolled back on the primary: no move on the standby.
my $before_rb = sv('settings');
pq(q{BEGIN; SELECT ddict_set('settings', 'rb', 'x'); ROLLBACK;});
pq(q{CREATE TABLE unrelated (i int); INSERT INTO unrelated VALUES (1)});
catch_up();
is(sv('settings'), $before_rb, 'rolled-back write on the primary does not move the standby');

is(sq(q{SELECT commits > 0 FROM ddict_stats WHERE dict = 'settings'::regclass}),
	't', 'ddict_stats on the standby counts replayed bumps');

#
# ddict_changes on the standby: full answers, 'u' when unchanged.
#
my $epoch_s = sq('SELECT ddict_epoch()');
my $ver_s = sv('settings');
my $full = sq(qq{SELECT string_agg(kind::text || ':' || coalesce(key, '') || ':' || coalesce(convert_from(value, 'UTF8'), ''), ','
                                  ORDER BY key IS NOT NULL, key)
                FROM ddict_changes('settings', 1, $epoch_s, 42)});
is($full, 'f::,s:both:1,s:counter:5,s:greeting:bonjour',
	"ddict_changes on the standby with a stale version answers 'f' with every row");
is(sq(qq{SELECT version FROM ddict_changes('settings', 1, $epoch_s, 42) WHERE kind = 'f'}),
	$ver_s, 'the header carries the current version');
is(sq(qq{SELECT string_agg(kind::text, '') FROM ddict_changes('settings', $ver_s, $epoch_s, 0)}),
	'u', "ddict_changes on the standby answers 'u' when the version is unchanged");
is(sq(q{SELECT string_agg(kind::text, '' ORDER BY key IS NOT NULL, key) FROM ddict_changes('settings')}),
	'fsss', "ddict_changes without a client state answers 'f'");

# Delta attempts on the standby (same epoch, positive cursor) still answer in
# full: the standby has no change ring.
pq(q{SELECT ddict_set('settings', 'greeting', 'hallo')});
catch_up();
is(sq(qq{SELECT kind FROM ddict_changes('settings', $ver_s, $epoch_s, 42) WHERE key IS NULL}),
	'f', "after a change, ddict_changes on the standby answers 'f' even with a cursor");

#
# Rows of ddict_changes are never older than its header's version: commit on
# the primary and read on the standby without waiting, many times.  The
# standby's version equals the primary's version of the commit it replayed
# last, so the header names a commit whose value must be in the rows.
#
my %value_of_version = (sv('settings') => 0);
pq(q{UPDATE settings SET value = '0' WHERE key = 'counter'});
catch_up();
%value_of_version = (sv('settings') => 0);
my $bad = 0;
for my $i (1 .. 30)
{
	pq("UPDATE settings SET value = '$i' WHERE key = 'counter'");
	$value_of_version{ pv('settings') } = $i;
	my $r = sq(q{SELECT max(version)::text || '|' || max(convert_from(value, 'UTF8')) FILTER (WHERE key = 'counter')
	             FROM ddict_changes('settings')});
	my ($hv, $val) = split /\|/, $r;
	if (!exists $value_of_version{$hv})
	{
		diag "ddict_changes header version $hv is no primary version";
		$bad++;
	}
	elsif ($val < $value_of_version{$hv})
	{
		diag "header version $hv belongs to counter=$value_of_version{$hv} but rows show $val";
		$bad++;
	}
}
is($bad, 0, "ddict_changes on the standby: rows at least as new as the header's version");

#
# Standby restart: re-seeded above what it showed, then back in step.
#
catch_up();
my $before_restart = sv('settings');
$standby->restart;
cmp_ok(sv('settings'), '>', $before_restart, 'standby restart: version re-seeded above the old one');
pq(q{SELECT ddict_set('settings', 'after_standby_restart', '1')});
my $pr = pv('settings');
catch_up();
is(sv('settings'), $pr, "standby restart: next primary commit brings it back to the primary's version");
is(sq(q{SELECT ddict_get('settings', 'after_standby_restart')}), '1', 'standby restart: new value');

#
# Failover: promote the standby; its versions stay above the old primary's.
#
my $last_primary = pv('settings');
catch_up();
$primary->stop;
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'promotion did not finish';
cmp_ok(sv('settings'), '>=', $last_primary, 'after promotion: version not below the old primary');
sq(q{SELECT ddict_set('settings', 'after_failover', '1')});
cmp_ok(sv('settings'), '>', $last_primary,
	'after promotion: a write gets a version above every version of the old primary');
is(sq(q{SELECT ddict_get('settings', 'after_failover')}), '1', 'after promotion: write visible');

$standby->stop;

#
# A primary crash right after a commit (§3.2 on standbys, §3.4 across
# failover).  The bump record follows the commit record and is flushed later
# by the WAL writer; the commit record itself is flushed (and streamed) at
# commit.  If the primary crashes in between, the standby has replayed the
# commit — its rows changed — but never receives the bump: a client caching
# from the standby keeps its old version and old rows.  That must not last:
# after the primary is back (or after the standby is promoted) the standby's
# version must differ from the one it showed with the old rows.
#
# wal_writer_delay is raised so that the window between the commit and the
# bump record's flush is wide; if the WAL writer flushes anyway, the test
# just passes.
#
my $primary2 = PostgreSQL::Test::Cluster->new('primary2');
$primary2->init(allows_streaming => 1);
$primary2->append_conf('postgresql.conf',
	"$conf\nwal_writer_delay = '10s'\nautovacuum = off");
$primary2->start;
$primary2->safe_psql('postgres', q{CREATE EXTENSION ddict;
	SELECT ddict_create('settings');
	SELECT ddict_set('settings', 'k', 'before');
	CREATE TABLE sync_marker (id serial PRIMARY KEY);});
$primary2->backup('b2');
my $standby2 = PostgreSQL::Test::Cluster->new('standby2');
$standby2->init_from_backup($primary2, 'b2', has_streaming => 1);
$standby2->start;
catch_up($primary2, $standby2);

sub s2 { return $standby2->safe_psql('postgres', $_[0]); }

# Does ddict_last_updated('settings') on $node leave $old within $secs?
sub moves_within
{
	my ($node, $old, $secs) = @_;
	for (1 .. $secs * 10)
	{
		return 1 if $node->safe_psql('postgres', q{SELECT ddict_last_updated('settings')}) ne $old;
		Time::HiRes::usleep(100_000);
	}
	return 0;
}

# (a) the primary crashes and restarts; the standby stays a standby.
my $cached_version = s2(q{SELECT ddict_last_updated('settings')});
is(s2(q{SELECT ddict_get('settings', 'k')}), 'before', 'crash window: standby serves the old value');
$primary2->safe_psql('postgres', q{UPDATE settings SET value = 'after' WHERE key = 'k'});
# the commit record is flushed at commit: wait for the standby to replay it
$primary2->wait_for_catchup($standby2, 'replay', $primary2->lsn('flush'));
is(s2(q{SELECT ddict_get('settings', 'k')}), 'after', 'crash window: standby replayed the commit');
note 'standby version right after replaying the commit: '
  . s2(q{SELECT ddict_last_updated('settings')}) . " (cached $cached_version)";
$primary2->stop('immediate');
$primary2->start;
catch_up($primary2, $standby2);
# The lost bump is resolved by the standby's reader once the commit is
# visible and the bump record had a second (ddict's grace) to arrive.
ok(moves_within($standby2, $cached_version, 10),
	'primary crash after a commit: the standby version moved past the one cached with the old rows');

# (b) the same, then failover to the standby.
$cached_version = s2(q{SELECT ddict_last_updated('settings')});
my $cached_value = s2(q{SELECT ddict_get('settings', 'k')});
$primary2->safe_psql('postgres', q{UPDATE settings SET value = 'failover' WHERE key = 'k'});
$primary2->wait_for_catchup($standby2, 'replay', $primary2->lsn('flush'));
is(s2(q{SELECT ddict_get('settings', 'k')}), 'failover', 'failover window: standby replayed the commit');
$primary2->stop('immediate');
$standby2->promote;
$standby2->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'promotion did not finish';
ok(moves_within($standby2, $cached_version, 10),
	"failover after a commit whose bump was lost: version moved past the one cached with '$cached_value'");

$standby2->stop;
done_testing();
