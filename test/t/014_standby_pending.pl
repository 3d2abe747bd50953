# 014_standby_pending.pl — a standby's pending bumps of writers that failed
# at COMMIT (issue 8, suspected 2).
#
# A writer logs its INTENT record at PRE_COMMIT; a SERIALIZABLE transaction
# canceled as a pivot during COMMIT aborts after that, so a standby replays
# an intent whose bump never comes.  Its pending entry used to stay until a
# reader of that dict resolved it, which had two consequences, both shown
# here against a real primary and streaming standby:
#
#   1. Resolution asked the commit log about the xid.  Once the commit log
#      was truncated past it (the primary froze everything and the standby
#      replayed the truncation) the first read of that dict on the standby
#      failed with "could not access status of transaction", and so did every
#      later one.  Required: the read works, and the version is not behind.
#   2. Aborted writers' entries filled the pending table (capacity
#      MaxBackends * 8 + 2 * ddict.max_dicts); from then on replay dropped the
#      intents of committing writers ("too many pending bumps during replay"),
#      so a primary crash between a commit and its bump record left the
#      standby at its old version with the new rows — a missed bump.
#      Required: replay prunes entries of aborted writers, and the crash
#      window is still covered after many aborted writers.
#   3. A table full of writers that are still running (prepared
#      transactions, which cannot be pruned): the warning is said once, and
#      commits in the meantime still move the standby, to the primary's
#      version; so do the prepared ones when they commit.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

# A small MaxBackends keeps the pending table small: 10 + 1 + 1 + 4 + 2 = 18
# backends, 18 * 8 + 2 * 16 = 176 entries.
my $conf = "shared_preload_libraries = 'ddict'\nddict.max_dicts = 16\n"
  . "max_connections = 10\nautovacuum_max_workers = 1\nmax_worker_processes = 4\n"
  . "max_wal_senders = 2\nautovacuum = off\nwal_writer_delay = '10s'\n"
  . "max_prepared_transactions = 12\n";

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $conf);
$primary->start;

sub pq { return $primary->safe_psql('postgres', $_[0]); }

pq(q{CREATE EXTENSION ddict;
     CREATE TABLE ssi (i int);
     CREATE TABLE sync_marker (id serial PRIMARY KEY);
     SELECT ddict_create('old');
     SELECT ddict_set('old', 'k', 'v');});
for my $i (1 .. 14)
{
	pq("SELECT ddict_create('d$i'); SELECT ddict_set('d$i', 'k', 'v');");
}

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

sub sq { return $standby->safe_psql('postgres', $_[0]); }

sub catch_up
{
	pq('INSERT INTO sync_marker VALUES (DEFAULT)');
	$primary->wait_for_catchup($standby, 'replay', $primary->lsn('flush'));
}

# One writer of the given dicts that fails at COMMIT: two SERIALIZABLE
# transactions that read ssi and insert into it; the second to commit is
# canceled as a pivot, after ddict's PRE_COMMIT logged its intent.
my $w1 = $primary->background_psql('postgres', on_error_stop => 0);
my $w2 = $primary->background_psql('postgres', on_error_stop => 0);

# Failed writers are counted by what they left: the second insert into ssi
# (i = 2) commits only if that writer committed.
sub failing_writer
{
	my @dicts = @_;
	my $writes = join ' ', map { "SELECT ddict_set('$_', 'never', 'x');" } @dicts;
	$w1->query('BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT count(*) FROM ssi;');
	$w2->query('BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT count(*) FROM ssi;');
	$w1->query('INSERT INTO ssi VALUES (1);');
	$w2->query("INSERT INTO ssi VALUES (2); $writes");
	$w1->query('COMMIT;');
	$w2->query('COMMIT;');
}

sub failed_so_far
{
	return pq(q{SELECT count(*) FILTER (WHERE i = 1) - count(*) FILTER (WHERE i = 2) FROM ssi});
}

#
# 1. An aborted writer's pending entry, then the commit log truncated.
#
catch_up();
my $old_before = sq(q{SELECT ddict_last_updated('old')});
failing_writer('old');
is(failed_so_far(), 1, 'the writer of "old" failed at COMMIT');
is(pq(q{SELECT count(*) FROM old WHERE key = 'never'}), '0', 'and wrote nothing');
# Nobody reads "old" on the standby from here until the truncation.

# Move the primary's xids past the first commit-log segment (1,048,576
# transactions), freeze every database (template0 too) so that VACUUM
# truncates the commit log, and let the standby replay it.
pq(q{CREATE PROCEDURE burn(n int) LANGUAGE plpgsql AS $$
     BEGIN
       FOR i IN 1 .. n LOOP
         PERFORM pg_current_xact_id();
         COMMIT;
       END LOOP;
     END$$;});
$primary->safe_psql('postgres', 'SET synchronous_commit = off; CALL burn(1100000)',
	timeout => 600);
pq(q{ALTER DATABASE template0 WITH ALLOW_CONNECTIONS true});
for my $db (qw(template0 template1 postgres))
{
	$primary->safe_psql($db, 'VACUUM (FREEZE)', timeout => 300);
}
pq('CHECKPOINT');
my $pdir = $primary->data_dir;
ok(!-e "$pdir/pg_xact/0000", "the primary's commit log lost its first segment");
catch_up();
my $sdir = $standby->data_dir;
ok(!-e "$sdir/pg_xact/0000", "the standby replayed the commit log's truncation");

my ($ret, $out, $err) = $standby->psql('postgres', q{SELECT ddict_last_updated('old')});
is($ret, 0, 'reading the dict of an aborted writer from before the truncation works') or diag $err;
cmp_ok($out || 0, '>=', $old_before, 'and its version is not behind');
($ret, $out, $err) = $standby->psql('postgres', q{SELECT ddict_get('old', 'k')});
is($ret, 0, 'and so does the next read') or diag $err;

#
# 2. Many aborted writers, then a commit whose bump record is lost.
#
# 15 dicts per failed writer, 15 writers: 225 entries of aborted writers
# against a table of 176.
my @all = ('old', map { "d$_" } 1 .. 14);
failing_writer(@all) for 1 .. 15;
is(failed_so_far(), 16, '15 more writers of 15 dicts each failed at COMMIT');
is(pq(q{SELECT count(*) FROM d7 WHERE key = 'never'}), '0', 'and wrote nothing');
catch_up();
$w1->quit;
$w2->quit;
my $log = slurp_file($standby->logfile);
unlike($log, qr/too many pending bumps/, 'replay kept room for new intents');

# The crash window of 004_standby.pl: a commit replayed by the standby whose
# bump record the primary never flushed (wal_writer_delay is 10 s).
# (read from _ddict_stats(), the shared memory as it is: ddict_last_updated(),
# and the ddict_stats view which calls it, would resolve d7's entries
# and so make room)
my $cached = sq(q{SELECT version FROM _ddict_stats() WHERE dict = 'd7'::regclass});
pq(q{UPDATE d7 SET value = 'after' WHERE key = 'k'});
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('flush'));
is(sq(q{SELECT ddict_get('d7', 'k')}), 'after', 'the standby replayed the commit');
$primary->stop('immediate');
$primary->start;
catch_up();

sub moves_within
{
	my ($dict, $old, $secs) = @_;
	for (1 .. $secs * 10)
	{
		return 1 if sq("SELECT ddict_last_updated('$dict')") ne $old;
		Time::HiRes::usleep(100_000);
	}
	return 0;
}
ok(moves_within('d7', $cached, 10),
	'after many aborted writers, a commit whose bump record was lost still moves the standby');

#
# 3. Full of running writers: 12 prepared transactions of 15 dicts each.
#
for my $g (1 .. 12)
{
	my $writes = join ' ', map { "SELECT ddict_set('$_', 'prepared_$g', '$g');" } @all;
	pq("BEGIN; $writes PREPARE TRANSACTION 'g$g';");
}
catch_up();
$log = slurp_file($standby->logfile);
my $warnings = () = $log =~ /too many pending bumps/g;
is($warnings, 1, 'a full table is logged once, not once per intent');
for my $i (1 .. 3)
{
	pq("SELECT ddict_set('d3', 'while_full', '$i')");
	my $pv = pq(q{SELECT ddict_last_updated('d3')});
	catch_up();
	is(sq(q{SELECT ddict_last_updated('d3')}), $pv,
		"commit $i while the table is full: the standby has the primary's version");
	is(sq(q{SELECT ddict_get('d3', 'while_full')}), $i, "commit $i: and its row");
}
pq("COMMIT PREPARED 'g$_'") for 1 .. 12;
my $pv = pq(q{SELECT ddict_last_updated('d9')});
catch_up();
is(sq(q{SELECT ddict_last_updated('d9')}), $pv,
	"after COMMIT PREPARED of all: the standby has the primary's version");
is(sq(q{SELECT count(*) FROM d9 WHERE key LIKE 'prepared_%'}), '12', 'and the prepared rows');

$standby->stop;
$primary->stop;
done_testing();
