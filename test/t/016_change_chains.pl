# The table of change chains (changelog.c) when it is full: 2 x
# ddict.max_dicts chains, here 32.  Making room must never crash a backend
# (a transaction writing two dicts without chains once made the first one's
# chain, evicted it making the second's, and wrote through a NULL chain),
# must not let one role's throwaway dicts stop other roles' writes, and must
# never drop the chain of a writer still in flight (a reader's cursor from a
# chain made again would then skip its keys).  Cursors count commits, not
# keys: under row-level security a reader does not learn how many hidden
# rows a commit wrote.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('chains');
$node->init(allows_streaming => 1);   # synchronous replication needs WAL senders
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ddict'
ddict.max_dicts = 16
ddict.changelog_size = 64
max_prepared_transactions = 4
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ddict;
	CREATE ROLE mallory LOGIN;
	CREATE SCHEMA m AUTHORIZATION mallory;
	SELECT ddict_create('ca');
	SELECT ddict_create('cb');
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub alive
{
	my ($name) = @_;
	is($node->safe_psql('postgres', 'SELECT 1'), '1', "$name: the server answers");
	my $log = slurp_file($node->logfile);
	unlike($log, qr/terminated by signal/, "$name: no backend died");
}

# dicts created, written once and dropped by a role: their chains stay
# while their entries are in the ring
sub flood
{
	my ($user, $from, $to) = @_;
	for my $i ($from .. $to)
	{
		$node->psql('postgres',
			"SELECT ddict_create('m.t$i'); SELECT ddict_set('m.t$i', 'k', 'v'); DROP TABLE m.t$i;",
			extra_params => [ '-U', $user ]);
	}
}

# --- one transaction writing two dicts without chains, the table full
$node->restart;
flood('mallory', 1, 31);
my ($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT ddict_set('ca', 'k', '1'); SELECT ddict_set('cb', 'k', '1'); COMMIT;});
is($rc, 0, 'a transaction writing two dicts without chains into a full table commits')
  or diag $err;
alive('two new chains at once');
is(sql(q{SELECT ddict_get('ca', 'k') || ddict_get('cb', 'k')}), '11', 'both writes are there');

# --- the same after the ring turned over (every chain stale but one)
sql(q{SELECT ddict_create('m.big')});
sql(q{ALTER TABLE m.big OWNER TO mallory});
flood('mallory', 32, 70);
$node->psql('postgres', q{SELECT ddict_set('m.big', 'k' || g, 'v') FROM generate_series(1, 1500) g},
	extra_params => [ '-U', 'mallory' ]);
($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT ddict_set('m.big', 'k', 'v2'); SELECT ddict_create('m.fresh'); SELECT ddict_set('m.fresh', 'k', 'v'); COMMIT;},
	extra_params => [ '-U', 'mallory' ]);
is($rc, 0, 'a write and a new dict in one transaction after the ring turned over') or diag $err;
alive('stale chains');

# --- another role's flood does not stop our writes
flood('mallory', 71, 120);
($rc, $out, $err) = $node->psql('postgres',
	q{SELECT ddict_create('victim_new'); SELECT ddict_set('victim_new', 'a', '1'); SELECT ddict_set('ca', 'k', '2');});
is($rc, 0, 'after a flood of throwaway dicts, others create and write dicts') or diag $err;
unlike($err, qr/too many dicts/, '... without "too many dicts"');
alive('flood');

# --- a delta stays exact across evictions: a reader's cursor of a chain
# that was dropped gets a full answer, never a partial one
my ($v, $e, $c) = split /\|/, sql(q{SELECT version, epoch, "cursor" FROM ddict_changes('ca') WHERE kind = 'f'});
sql(q{SELECT ddict_set('ca', 'k', '3')});
flood('mallory', 121, 170);
sql(q{SELECT ddict_set('ca', 'k2', 'x')});
my $ans = sql(qq{SELECT string_agg(kind::text || coalesce(':' || key, ''), ' ' ORDER BY kind, key)
	FROM ddict_changes('ca', $v, $e, $c)});
ok($ans eq 'd s:k s:k2' || $ans eq 'f s:k s:k2', "a cursor across evictions: an exact delta or a full answer ($ans)");

# --- never the chain of a writer in flight: hold one in the synchronous
# replication wait (committed locally, not yet visible), flood, let a reader
# sync in the window, release it: its key must come in the next delta
sql(q{ALTER DATABASE postgres SET synchronous_commit = local});
sql(q{ALTER SYSTEM SET synchronous_standby_names = 'nobody'});
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('synchronous_standby_names') = 'nobody'})
  or die 'configuration not reloaded';
($v, $e, $c) = split /\|/, sql(q{SELECT version, epoch, "cursor" FROM ddict_changes('cb') WHERE kind = 'f'});
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/sent/, "SET synchronous_commit = on;\n\\echo sent\nINSERT INTO cb VALUES ('inflight', 'w');\n");
$node->poll_query_until('postgres', "SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $pid")
  or die 'writer never reached the synchronous replication wait';
flood('mallory', 171, 240);
my ($v2, $c2) = split /\|/, sql(qq{SELECT version, "cursor" FROM ddict_changes('cb', $v, $e, $c) WHERE kind IN ('u', 'd', 'f')});
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$node->poll_query_until('postgres', "SELECT ddict_last_updated('cb') > $v2")
  or die 'version never moved after the commit became visible';
$ans = sql(qq{SELECT string_agg(kind::text || coalesce(':' || key, ''), ' ' ORDER BY kind, key)
	FROM ddict_changes('cb', $v2, $e, $c2)});
like($ans, qr/^[df] .*s:inflight/, "the in-flight writer's key comes after the flood ($ans)");
$bg->quit;
alive('in flight');
sql(q{ALTER SYSTEM RESET synchronous_standby_names});
$node->reload;

# --- cursors count commits: 37 hidden rows in one commit move a reader's
# cursor as one visible row does
sql(q{
	SELECT ddict_create('r1');
	ALTER TABLE r1 ENABLE ROW LEVEL SECURITY;
	CREATE POLICY pub ON r1 FOR SELECT USING (key NOT LIKE 'secret%');
	CREATE ROLE rreader;
	GRANT SELECT ON r1 TO rreader;
	INSERT INTO r1 VALUES ('pub', '1');
});
sub reader_number
{
	return sql(q{SET ROLE rreader; SELECT ddict_unchanged('r1', ddict_last_updated('r1'), ddict_epoch(), 0, 'r1'::regclass) >> 23});
}
my $n0 = reader_number();
sql(q{INSERT INTO r1 SELECT 'secret' || g, 'x' FROM generate_series(1, 37) g});
my $n1 = reader_number();
sql(q{INSERT INTO r1 VALUES ('pub2', '1')});
my $n2 = reader_number();
is($n1 - $n0, $n2 - $n1, "a commit of 37 hidden rows moves the cursor as a commit of one row does ($n0, $n1, $n2)");

# --- a chain's first number tells nothing about other dicts' writes: two
# dicts read for the first time around 37 keys written elsewhere start at
# the same number (chains were once numbered from a count of all entries)
sub first_number
{
	my ($dict) = @_;
	sql("SELECT ddict_create('$dict')");
	return sql(qq{SELECT "cursor" >> 23 FROM ddict_changes('$dict') WHERE kind = 'f'});
}
$node->restart;
my $x = first_number('nx');
sql(q{INSERT INTO ca SELECT 'n' || g, 'v' FROM generate_series(1, 37) g});
my $y = first_number('ny');
is($y, $x, "the first numbers of two new chains do not count the keys between them ($x, $y)");

# --- a prepared writer committed after its dict's chain was dropped: the
# client's cursor from the old chain must not be taken by the new one
sql(q{SELECT ddict_create('pd'); INSERT INTO pd VALUES ('a', '1')});
($v, $e, $c) = split /\|/, sql(q{SELECT version, epoch, "cursor" FROM ddict_changes('pd') WHERE kind = 'f'});
sql(q{BEGIN; UPDATE pd SET value = 'PREPARED-CHANGE'; PREPARE TRANSACTION 'p1'});
flood('mallory', 241, 300);		# pd's chain is the oldest: dropped
sql(q{COMMIT PREPARED 'p1'});
$node->poll_query_until('postgres', "SELECT ddict_last_updated('pd') > $v")
  or die 'version never moved after COMMIT PREPARED';
$ans = sql(qq{SELECT string_agg(kind::text || coalesce(':' || key, ''), ' ' ORDER BY kind, key)
	FROM ddict_changes('pd', $v, $e, $c)});
like($ans, qr/^[df] .*s:a/, "a COMMIT PREPARED after its dict's chain was dropped reaches the client ($ans)");

# --- ddict_full_end() makes no chain for a relation that is not a dict
my $chains0 = sql(q{SELECT chains FROM ddict_changelog_status()});
sql(q{CREATE TEMP TABLE nd (key text PRIMARY KEY, value text); BEGIN; SELECT count(*) FROM nd;
	SELECT ddict_full_end('nd'::regclass, (SELECT xmin::text::bigint FROM pg_namespace WHERE oid = pg_my_temp_schema())); COMMIT});
is(sql(q{SELECT chains FROM ddict_changelog_status()}), $chains0, 'ddict_full_end() on a table that is not a dict makes no chain');

$node->stop;
done_testing();
