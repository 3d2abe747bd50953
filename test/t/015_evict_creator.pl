# 015_evict_creator.pl — a new dict's version slot is not evicted while the
# transaction that created it is still committing (issue 8, suspected 3).
#
# When ddict.max_dicts is full, a writer that needs a slot frees the slots
# of dicts that no longer exist (evict_dead() in shmem.c), judged by whether
# their table is in the catalogs.  A dict created by a transaction that has
# passed PRE_COMMIT (where its slot was made) but is not yet visible looks
# dropped to every other backend.  Before the fix another backend evicted
# that slot and took it: the creating transaction committed without a slot
# (its bump found no room), so the README's promise "creating one more fails
# in the creating transaction" broke, and the committed dict failed every
# later read and write with "cannot track more than N dicts".
#
# The creating transaction is held between PRE_COMMIT and visibility by a
# synchronous-replication wait for a standby that does not exist (as in
# 010_inflight_delta.pl); cancelling the wait makes it visible.  What must
# hold:
#
#   * while the creator waits, another backend's new dict is refused with
#     "cannot track more than 16 dicts" (the slot is the creator's);
#   * once visible, the created dict has a version, moves on its next
#     write, and is listed in ddict_stats;
#   * a slot whose creating transaction rolled back after PRE_COMMIT is
#     free again (aborted creators do not pin slots).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('evict_creator');
$node->init(allows_streaming => 1);    # synchronous replication needs WAL senders
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ddict'\nddict.max_dicts = 16");
$node->start;

sub q1 { return $node->safe_psql('postgres', $_[0]); }

q1('CREATE EXTENSION ddict');
for my $i (1 .. 15)
{
	q1("SELECT ddict_create('d$i'); SELECT ddict_set('d$i', 'k', '$i');");
}
is(q1('SELECT count(*) FROM ddict_stats'), '15', '15 of 16 slots in use');

q1(q{ALTER DATABASE postgres SET synchronous_commit = local});
q1(q{ALTER SYSTEM SET synchronous_standby_names = 'nobody'});
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('synchronous_standby_names') = 'nobody'})
  or die 'configuration not reloaded';

# The creator: passes PRE_COMMIT (slot 16 made), then waits for the standby.
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/sent/,
	"SET synchronous_commit = on;\n\\echo sent\nSELECT ddict_create('late'); \n");
$node->poll_query_until('postgres',
	"SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $pid")
  or die 'creator never reached the synchronous replication wait';
is(q1(q{SELECT count(*) FROM pg_class WHERE relname = 'late'}), '0',
	'the new dict is not visible to others while its creator waits');

# Another backend creates a dict: the table is full, and the only slot that
# looks dead is the waiting creator's.
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT ddict_create('filler')});
isnt($ret, 0, 'a 17th dict is refused while the 16th is still committing');
like($err, qr/cannot track more than 16 dicts/, 'with the capacity error');

# The creator becomes visible.
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_class WHERE relname = 'late'})
  or die 'creator never became visible';
$bg->quit;

($ret, $out, $err) = $node->psql('postgres', q{SELECT ddict_last_updated('late')});
is($ret, 0, 'the created dict has a version') or diag $err;
my $v = $out;
($ret, $out, $err) = $node->psql('postgres', q{SELECT ddict_set('late', 'k', 'x')});
is($ret, 0, 'the created dict can be written') or diag $err;
cmp_ok(q1(q{SELECT ddict_last_updated('late')}) || 0, '>', $v || 0, 'and its version moves');
is(q1(q{SELECT count(*) FROM ddict_stats WHERE dict::text = 'late'}), '1',
	'the created dict is tracked');

# A creator that rolls back after PRE_COMMIT leaves no pinned slot: a
# serialization failure at COMMIT (after ddict's PRE_COMMIT made the slot).
q1(q{DROP TABLE late});
q1(q{CREATE TABLE ssi (i int)});
my $w1 = $node->background_psql('postgres', on_error_stop => 0);
my $w2 = $node->background_psql('postgres', on_error_stop => 0);
$w1->query_safe('BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT count(*) FROM ssi;');
$w2->query_safe('BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT count(*) FROM ssi;');
$w1->query_safe('INSERT INTO ssi VALUES (1);');
$w2->query_safe(q{INSERT INTO ssi VALUES (2); SELECT ddict_create('aborted');});
$w1->query_safe('COMMIT;');
$w2->query('COMMIT;');
like($w2->{stderr}, qr/could not serialize/, 'the creating transaction failed at COMMIT');
$w1->quit;
$w2->quit;
is(q1(q{SELECT count(*) FROM pg_class WHERE relname = 'aborted'}), '0', 'and created nothing');
($ret, $out, $err) = $node->psql('postgres', q{SELECT ddict_create('after_abort')});
is($ret, 0, "the aborted creator's slot is free again") or diag $err;

$node->stop;
done_testing();
