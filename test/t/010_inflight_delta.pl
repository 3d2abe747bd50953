# The window between a commit record and visibility.
#
# A transaction waiting for synchronous replication has written its commit
# record and appended its keys to the change ring, but is not yet visible.
# While it waits: its dict's version must not move (DESIGN §3.1), and a
# client that syncs in that window gets a cursor that still covers its keys,
# so that once the transaction becomes visible the next delta includes them.
# synchronous_standby_names names a standby that does not exist, and
# cancelling the wait makes the transaction visible.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('inflight');
$node->init(allows_streaming => 1);   # synchronous replication needs WAL senders
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ddict'");
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION ddict;
	SELECT ddict_create('d');
	INSERT INTO d VALUES ('a', '1');
	CREATE TABLE st (v bigint, e bigint, c bigint);
});
# Record the first load's header only after the setup above has committed.
$node->safe_psql('postgres',
	q{INSERT INTO st SELECT version, epoch, "cursor" FROM ddict_changes('d') WHERE kind = 'f'});

# The reader: a cache table maintained only from ddict_changes() output,
# the way libddict maintains its hash table.  sync() applies one call and
# returns what it applied ("kind s:key=value x:key ...").
$node->safe_psql('postgres', q{
	CREATE TABLE cache (key text PRIMARY KEY, value text);
	INSERT INTO cache SELECT key, value FROM d;
});

sub sync
{
	return $node->safe_psql('postgres', q{
		CREATE TEMP TABLE ch AS
		  SELECT * FROM ddict_changes('d', (SELECT v FROM st), (SELECT e FROM st), (SELECT c FROM st));
		UPDATE st SET v = ch.version, e = ch.epoch, c = ch."cursor" FROM ch WHERE ch.kind IN ('u', 'd', 'f');
		DELETE FROM cache WHERE EXISTS (SELECT FROM ch WHERE kind = 'f');
		DELETE FROM cache USING ch WHERE ch.kind = 'x' AND cache.key = ch.key;
		INSERT INTO cache SELECT key, convert_from(value, 'UTF8') FROM ch WHERE kind = 's'
		  ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
		SELECT string_agg(CASE WHEN kind IN ('u', 'd', 'f') THEN kind::text
		                       WHEN kind = 's' THEN 's:' || key || '=' || convert_from(value, 'UTF8')
		                       ELSE 'x:' || key END,
		                  ' ' ORDER BY kind IN ('s', 'x'), key)
		  FROM ch;
	});
}

# The cache equals what a fresh snapshot of the table shows.
sub cache_matches
{
	my ($name) = @_;
	my $table = $node->safe_psql('postgres',
		q{SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM d});
	my $cache = $node->safe_psql('postgres',
		q{SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM cache});
	is($cache, $table, $name);
}

is(sync(), 'u', 'nothing changed since the first load');

# Only the background writers below wait for the missing standby.
$node->safe_psql('postgres', q{ALTER DATABASE postgres SET synchronous_commit = local});
$node->safe_psql('postgres', q{ALTER SYSTEM SET synchronous_standby_names = 'nobody'});
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('synchronous_standby_names') = 'nobody'})
  or die 'configuration not reloaded';

my $v0 = $node->safe_psql('postgres', q{SELECT ddict_last_updated('d')});

my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/sent/, "SET synchronous_commit = on;\n\\echo sent\nINSERT INTO d VALUES ('w', 'waiting');\n");
$node->poll_query_until('postgres',
	"SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $pid")
  or die 'writer never reached the synchronous replication wait';

is($node->safe_psql('postgres', q{SELECT ddict_last_updated('d')}),
	$v0, 'version does not move while the commit is not visible');
is($node->safe_psql('postgres', q{SELECT ddict_get('d', 'w') IS NULL}),
	't', 'the waiting row is not visible');

# Another writer commits without waiting: the reader syncs a delta in the
# window and gets a new cursor.
$node->safe_psql('postgres',
	q{INSERT INTO d VALUES ('b', '2')});
like(sync(), qr/^d .*s:b=2/, 'delta in the window has the visible write');
cache_matches('cache equals the table in the window');

# The waiting transaction becomes visible: its key must be in the next delta.
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$node->poll_query_until('postgres', q{SELECT ddict_get('d', 'w') IS NOT NULL})
  or die 'waiting transaction never became visible';
$node->poll_query_until('postgres',
	"SELECT ddict_last_updated('d') > (SELECT v FROM st)")
  or die 'version never moved after the commit became visible';
like(sync(), qr/^d .*s:w=waiting/, 'the delta after it became visible includes its key');
cache_matches('cache equals the table after the commit became visible');
is(sync(), 'u', 'and then nothing is pending');
$bg->quit;

# Deletes in the window are caught the same way.
$bg = $node->background_psql('postgres', on_error_stop => 0);
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/sent/, "SET synchronous_commit = on;\n\\echo sent\nDELETE FROM d WHERE key = 'a';\n");
$node->poll_query_until('postgres',
	"SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $pid")
  or die 'writer never reached the synchronous replication wait';
$node->safe_psql('postgres',
	q{UPDATE d SET value = '3' WHERE key = 'b'});
like(sync(), qr/^d .*s:b=3/, 'delta in the window: the update');
cache_matches('cache still has the key whose delete is not visible yet');
is($node->safe_psql('postgres', q{SELECT value FROM cache WHERE key = 'a'}), '1', 'a is still 1 in the cache');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$node->poll_query_until('postgres', q{SELECT ddict_get('d', 'a') IS NULL})
  or die 'delete never became visible';
$node->poll_query_until('postgres',
	"SELECT ddict_last_updated('d') > (SELECT v FROM st)")
  or die 'version never moved after the delete became visible';
like(sync(), qr/^d .*x:a\b/, 'the delete arrives as a tombstone');
cache_matches('cache equals the table after the delete became visible');
$bg->quit;

is($node->safe_psql('postgres', q{SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM cache}),
	'b=3,w=waiting', 'final cache contents');

$node->stop;
done_testing();
