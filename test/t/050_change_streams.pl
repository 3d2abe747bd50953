# Published changes (issue 10, server half): each change of an opted-in dict
# is computed once by its database's change streamer and appended to a Redis
# Stream.  Shown here with a real redis-server:
#   - opt-in and opt-out; owner only; row-level security refused both ways;
#   - entries equal ddict_changes() deltas (single writes, tombstones);
#   - out-of-order concurrent writers, rollbacks (nothing appended),
#     TRUNCATE and a transaction larger than ddict.max_delta_keys ('f');
#   - a replay check: a cache fed only from the stream (StreamConsumer)
#     equals a fresh SELECT after quiescing, also across a server restart
#     (new epoch), a Redis restart (stream lost: marker), a killed Redis
#     connection (exact resume) and a trimmed stream (MAXLEN);
#   - PostgreSQL statements per commit batch: at most 2, the same with and
#     without readers of the stream (pg_stat_statements and the streamer's
#     own counter);
#   - a misbehaving Redis (FakeRedis) never crashes the streamer;
#   - the streamer exits when its database publishes nothing any more.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RedisServer;
use FakeRedis;
use StreamConsumer;

my $redis = RedisServer->new;
my $port = $redis->port;

my $node = PostgreSQL::Test::Cluster->new('streams');
$node->init(allows_streaming => 1);	# synchronous replication holds committers below
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ddict, pg_stat_statements'
ddict.redis_url = 'redis://127.0.0.1:$port'
ddict.redis_timeout = '200ms'
ddict.redis_max_backoff = '300ms'
ddict.max_delta_keys = 50
ddict.changelog_size = 64kB
max_worker_processes = 16
pg_stat_statements.track = top
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ddict;
	CREATE EXTENSION pg_stat_statements;
	SELECT ddict_create('settings');
	SELECT ddict_create('quiet');
	CREATE ROLE stranger LOGIN;
	GRANT ALL ON settings TO stranger;
});

my $key = 'ddict:postgres:public.settings:changes';
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub version { return sql("SELECT ddict_last_updated('$_[0]')"); }

sub wait_for
{
	my ($cond, $secs) = @_;
	for (1 .. ($secs // 15) * 20)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	return 0;
}

# Every entry of the stream: [ id, header, changes ].
sub entries
{
	my $r = StreamConsumer::redis_connect($port) or return [];
	my $list = StreamConsumer::command($r, 'XRANGE', $key, '-', '+');
	close $r;
	return [ map { [ $_->[0], StreamConsumer::parse_entry($_->[1]) ] } @$list ];
}

sub last_entry { my $e = entries(); return @$e ? $e->[-1] : undef; }

# Wait until the stream's last entry carries version $v; returns it.
sub entry_for
{
	my ($v) = @_;
	my $e;
	wait_for(sub { $e = last_entry(); $e && $e->[1]{version} eq $v });
	return $e;
}

sub select_dump
{
	my ($table) = @_;
	return sql("SELECT encode(convert_to(key, 'UTF8'), 'hex') || '=' || encode(convert_to(value::text, 'UTF8'), 'hex') "
		  . "FROM $table ORDER BY convert_to(key, 'UTF8')");
}

# Feed $c from the stream until it holds the dict's current version, then
# compare with a fresh SELECT.
sub replay_equals
{
	my ($c, $what) = @_;
	my $v = version('settings');
	wait_for(sub { $c->poll; $c->{version} eq $v });
	is($c->{version}, $v, "$what: the cache fed from the stream reached the current version");
	is($c->dump, select_dump('settings'), "$what: the cache fed from the stream equals a fresh SELECT");
}

# --- opting in and out
is(sql(q{SELECT count(*) FROM ddict_published}), '0', 'nothing is published by default');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT ddict_publish_changes('settings')},
	extra_params => [ '-U', 'stranger' ]);
like($err, qr/must be owner of table settings/, 'only the owner may publish a dict');
($rc, $out, $err) = $node->psql('postgres', q{SELECT ddict_publish_changes('pg_class')});
like($err, qr/is not a dict/, 'a table that is not a dict cannot be published');
($rc, $out, $err) = $node->psql('postgres', q{SELECT ddict_publish_changes(NULL)});
like($err, qr/dict must not be NULL/, 'NULL is refused');

sql(q{CREATE TABLE guarded (key text PRIMARY KEY, value text NOT NULL);
	SELECT ddict_attach('guarded');
	ALTER TABLE guarded ENABLE ROW LEVEL SECURITY;});
($rc, $out, $err) = $node->psql('postgres', q{SELECT ddict_publish_changes('guarded')});
like($err, qr/cannot publish the changes of dict "guarded": it has row-level security enabled/,
	'a dict with row-level security cannot be published');
sql(q{ALTER TABLE guarded DISABLE ROW LEVEL SECURITY; ALTER TABLE guarded FORCE ROW LEVEL SECURITY});
($rc, $out, $err) = $node->psql('postgres', q{SELECT ddict_publish_changes('guarded')});
like($err, qr/row-level security enabled/, '... nor one with FORCE ROW LEVEL SECURITY');
sql(q{ALTER TABLE guarded NO FORCE ROW LEVEL SECURITY; SELECT ddict_publish_changes('guarded')});
($rc, $out, $err) = $node->psql('postgres', q{ALTER TABLE guarded ENABLE ROW LEVEL SECURITY});
like($err, qr/cannot enable row-level security on dict "guarded": its changes are published to Redis/,
	'row-level security cannot be enabled on a published dict');
($rc, $out, $err) = $node->psql('postgres', q{ALTER TABLE guarded FORCE ROW LEVEL SECURITY});
like($err, qr/its changes are published to Redis/, '... nor forced');
sql(q{SELECT ddict_publish_changes('guarded', false); ALTER TABLE guarded ENABLE ROW LEVEL SECURITY});
is(sql(q{SELECT relrowsecurity FROM pg_class WHERE relname = 'guarded'}), 't',
	'after opting out, row-level security can be enabled');
sql(q{DROP TABLE guarded});

sql(q{SELECT ddict_publish_changes('settings')});
is(sql(q{SELECT dict, stream_key FROM ddict_published}), "settings|$key",
	'ddict_published lists the dict and its stream key');
ok(wait_for(sub { sql(q{SELECT state || connected FROM ddict_change_streams() WHERE database = (SELECT oid FROM pg_database WHERE datname = 'postgres')}) eq 'runningtrue' }),
	'a change streamer runs for the database, connected');

# --- deliveries: each appended entry is also PUBLISHed on the channel named
# as its stream key: "<id>\n" and its fields as one RESP array (what XRANGE
# holds for that id), or "<id>" alone when its fields pass 256 kB
{
	my $sub = StreamConsumer::redis_connect($port);
	my $ack = StreamConsumer::command($sub, 'SUBSCRIBE', $key);
	is($ack->[0], 'subscribe', 'a subscriber of the stream key channel');
	my @want = (
		[ q{INSERT INTO settings VALUES ('d1', 'one')}, 'one key' ],
		[ q{INSERT INTO settings SELECT 'd2-' || g, 'v' || g FROM generate_series(1, 5) g}, 'five keys' ],
		[ q{UPDATE settings SET value = 'two' WHERE key = 'd1'}, 'an update' ],
		[ q{INSERT INTO settings VALUES ('d3', repeat('x', 300000))}, 'a value above 256 kB' ],
		[ q{DELETE FROM settings WHERE key IN ('d1', 'd3') OR key LIKE 'd2-%'}, 'deletions' ]);
	for my $w (@want)
	{
		sql($w->[0]);
		my $e = entry_for(version('settings'));
		my $msg = StreamConsumer::_reply($sub);
		is($msg->[0] . '|' . $msg->[1], "message|$key", "$w->[1]: a message on the stream key channel");
		my ($id, $rest) = split /\n/, $msg->[2], 2;
		is($id, $e->[0], "$w->[1]: the delivery names the appended entry");
		my $r = StreamConsumer::redis_connect($port);
		my $fields = StreamConsumer::command($r, 'XRANGE', $key, $e->[0], $e->[0])->[0][1];
		close $r;
		my $resp = '*' . scalar(@$fields) . "\r\n";
		$resp .= '$' . length($_) . "\r\n$_\r\n" for @$fields;
		if (length($resp) > 256 * 1024)
		{
			ok(!defined $rest, "$w->[1]: the id alone (the stream has the entry)");
		}
		else
		{
			ok(defined $rest && $rest eq $resp, "$w->[1]: the delivery carries the entry's fields");
		}
	}
	close $sub;
}

# --- single writes: an entry per commit, equal to ddict_changes()'s delta
my $c = StreamConsumer->new(node => $node, db => 'postgres', table => 'settings', port => $port, key => $key);
sql(q{SELECT ddict_set('settings', 'warmup', '0')});
replay_equals($c, 'first write');

my ($v0, $e0, $c0) = split /\|/, sql(q{SELECT version, epoch, "cursor" FROM ddict_changes('settings') WHERE kind = 'f'});
sql(q{SELECT ddict_set('settings', 'a', 'one'); SELECT ddict_set('settings', 'b', 'two')});
# their entries first: a streamer turn takes every commit since its last
# entry, and one that began after the next commit would carry a and b too
entry_for(version('settings'));
sql(q{INSERT INTO settings VALUES ('c', 'three'), ('d', 'four')});
my $e = entry_for(version('settings'));
is($e->[1]{kind}, 'd', 'a multi-key commit is appended as a delta');
is(join(',', map { "$_->[0]=$_->[1]" } sort { $a->[0] cmp $b->[0] } @{ $e->[2] }), 'sc=three,sd=four',
	'the entry carries the transaction\'s keys and values');
is($e->[1]{n}, 2, 'n counts the changes');
is($e->[1]{dict}, sql(q{SELECT 'settings'::regclass::oid}), 'the entry names the relation');
is($e->[1]{epoch}, sql(q{SELECT ddict_epoch()}), 'the entry carries the epoch');
my $delta = sql(qq{SELECT kind::text || key || '=' || convert_from(value, 'UTF8') FROM ddict_changes('settings', $v0, $e0, $c0) WHERE kind = 's' AND key IN ('c', 'd') ORDER BY key});
is($delta, "sc=three\nsd=four", '... the same rows ddict_changes() answers');

sql(q{DELETE FROM settings WHERE key = 'a'});
$e = entry_for(version('settings'));
is(join(',', map { "$_->[0]=$_->[1]" } @{ $e->[2] }), 'xa=', 'a delete is a tombstone');
replay_equals($c, 'single writes');
is($c->{pg}, 1, 'single writes: the cache never went back to PostgreSQL after its first load');

# --- rollbacks append nothing
my $n_before = scalar @{ entries() };
sql(q{BEGIN; SELECT ddict_set('settings', 'ghost', 'boo'); ROLLBACK;});
sql(q{BEGIN; SAVEPOINT s; SELECT ddict_set('settings', 'ghost2', 'boo'); ROLLBACK TO s; COMMIT;});
usleep(500_000);
is(scalar @{ entries() }, $n_before, 'rolled-back writes append nothing');
ok(!grep({ grep { $_->[0] =~ /ghost/ } @{ $_->[2] } } @{ entries() }), 'no entry names a rolled-back key');

# --- out-of-order concurrent writers
my $s1 = $node->background_psql('postgres');
my $s2 = $node->background_psql('postgres');
$s1->query_safe(q{BEGIN; SELECT ddict_set('settings', 'ooo1', 'first-begun')});
$s2->query_safe(q{BEGIN; SELECT ddict_set('settings', 'ooo2', 'second-begun')});
$s2->query_safe(q{COMMIT});
sql(q{SELECT ddict_set('settings', 'ooo3', 'between')});
$s1->query_safe(q{COMMIT});
$s1->quit;
$s2->quit;
replay_equals($c, 'out-of-order writers');

# a burst from several writers at once
my @bg;
for my $w (1 .. 4)
{
	push @bg, IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'),
		  map { ('-c', "SELECT ddict_set('settings', 'w$w-" . ($_ % 7) . "', '$_')") } 1 .. 40 ],
		'>', \my $o, '2>', \my $er);
}
$_->finish for @bg;
replay_equals($c, 'a burst of concurrent writers');

# --- TRUNCATE and a transaction larger than ddict.max_delta_keys: 'f'
sql(q{BEGIN; TRUNCATE settings; INSERT INTO settings VALUES ('after', 'truncate'); COMMIT;});
$e = entry_for(version('settings'));
is($e->[1]{kind}, 'f', 'TRUNCATE appends a "full" marker');
is(scalar @{ $e->[2] }, 0, 'a marker carries no rows');
replay_equals($c, 'TRUNCATE');

sql(q{INSERT INTO settings SELECT 'big' || i, i::text FROM generate_series(1, 60) i});
$e = entry_for(version('settings'));
is($e->[1]{kind}, 'f', 'a transaction larger than ddict.max_delta_keys appends a marker');
replay_equals($c, 'a large transaction');

# --- PostgreSQL statements per commit: bounded, whatever the readers
sub streamer_stat
{
	return sql(q{SELECT statements || '|' || batches FROM ddict_change_streams()
	  WHERE database = (SELECT oid FROM pg_database WHERE datname = 'postgres')});
}

sub pgss_streamer_calls
{
	# the streamer's statements are top-level SPI: its delta SELECT and its
	# registry read (also every 30 s); clients' ddict_changes() calls are
	# other statements
	return split /\|/, sql(q{SELECT coalesce(sum(calls) FILTER (WHERE query LIKE '%FROM ONLY%'), 0) || '|' || coalesce(sum(calls), 0)
	  FROM pg_stat_statements WHERE query LIKE '%FROM ONLY%' OR query LIKE '%WHERE publish_changes%'});
}

sub measure
{
	my ($label, $commits) = @_;
	sql(q{SELECT pg_stat_statements_reset()});
	my ($st0, $b0) = split /\|/, streamer_stat();
	for my $i (1 .. $commits)
	{
		sql("SELECT ddict_set('settings', 'm$i', '$label')");
		my $v = version('settings');
		wait_for(sub { my $l = last_entry(); $l && $l->[1]{version} eq $v });
	}
	my ($st1, $b1) = split /\|/, streamer_stat();
	return (pgss_streamer_calls(), $st1 - $st0, $b1 - $b0);
}

my ($deltas0, $pgss0, $own0, $batches0) = measure('alone', 10);
ok($pgss0 > 0 && $pgss0 <= 2 * 10, "pg_stat_statements: $pgss0 streamer statements for 10 commits (at most 2 each)");
ok($own0 <= 2 * $batches0 && $batches0 >= 1, "the streamer's own count: $own0 statements in $batches0 batches");

my @readers;
for (1 .. 20)
{
	push @readers, IPC::Run::start([ 'redis-cli', '-p', $port, 'XREAD', 'BLOCK', '0', 'STREAMS', $key, '$' ],
		'>', \my $o2, '2>', \my $er2);
}
my @consumers = map { StreamConsumer->new(node => $node, db => 'postgres', table => 'settings', port => $port, key => $key) } 1 .. 5;
my ($deltas1, $pgss1, $own1, $batches1) = measure('readers', 10);
$_->kill_kill for @readers;
is($deltas1, $deltas0, "with 25 readers of the stream the streamer executes the same $deltas1 delta SELECTs for 10 commits");
ok($pgss1 <= 2 * 10, "... and $pgss1 statements in all (at most 2 per commit)");
$_->poll for @consumers;
is((grep { $_->{pg} == 1 } @consumers), 5, 'consumers fed from the stream never went back to PostgreSQL');
is($consumers[0]->dump, select_dump('settings'), 'and hold what a SELECT returns');

# --- a published dict that is not written while the ring turns over keeps
# its cursor (it counts the dict's own commits), so its next write is a
# delta, not a marker
replay_equals($c, 'before the ring turns over');
my $pg_c = $c->{pg};
sql(join("\n", map { "INSERT INTO quiet SELECT 'q$_-' || g, repeat('x', 40) FROM generate_series(1, 40) g;" } 1 .. 80));
sql(q{SELECT ddict_set('settings', 'after-quiet', 'still a delta')});
$e = entry_for(version('settings'));
is($e->[1]{kind}, 'd', 'after the ring turned over under other dicts\' writes, a quiet dict\'s next write is a delta');
replay_equals($c, 'a ring turned over');
is($c->{pg}, $pg_c, '... and its caches did not go back to PostgreSQL');

# --- the change ring's end: when fewer bytes than an entry header are left,
# the filler has no header (it used to overrun the ring, and a delta across
# it was answered in full).  Fill the ring to 8 bytes before its end (its
# head: ddict_changelog_status()), then write.
sub ring_left { return sql(q{SELECT size - head % size FROM ddict_changelog_status()}); }
my $hdr = 48;	# an entry: a 48-byte header (changelog.c's LogEntry), then the key
my $left = ring_left();
for my $i (1 .. 400)
{
	last if $left < $hdr;
	my $s = $left - 8 >= 2024 + $hdr + 8 ? 2024 : $left - 8;
	$s = $left if $s < $hdr + 8;	# 8 cannot be left this lap: fill to the end
	$s = $hdr + 8 if $s < $hdr + 8;
	sql("SELECT ddict_set('quiet', repeat('p', " . ($s - $hdr) . "), '$i')");
	$left = ring_left();
}
ok($left < $hdr, "the ring's head is $left bytes before its end, fewer than a header");
my ($rv, $re, $rc2) = split /\|/, sql(q{SELECT version, epoch, "cursor" FROM ddict_changes('settings') WHERE kind = 'f'});
sql(q{SELECT ddict_set('settings', 'across-the-end', 'x')});
is(sql(qq{SELECT string_agg(kind::text || coalesce(':' || key, ''), ' ' ORDER BY kind) FROM ddict_changes('settings', $rv, $re, $rc2)}),
	'd s:across-the-end', 'a delta across the short filler at the ring\'s end is exact');
$e = entry_for(version('settings'));
is($e->[1]{kind}, 'd', '... and so is the published entry');
replay_equals($c, 'the ring\'s end');

# --- a killed Redis connection: the stream is intact, the streamer resumes exactly
$redis->cli('CLIENT', 'KILL', 'TYPE', 'normal');
sql(q{SELECT ddict_set('settings', 'after-kill', 'x')});
$e = entry_for(version('settings'));
is($e->[1]{kind}, 'd', 'after a lost connection to an intact stream, the next entry is an exact delta');
replay_equals($c, 'a lost connection');

# --- Redis restart: the stream is lost, a marker starts the new one
$redis->stop;
my $t0 = time;
sql(q{SELECT ddict_set('settings', 'during-outage', 'y')});
ok(time - $t0 < 2, 'a commit does not wait for an unreachable Redis');
$redis->start;
sql(q{SELECT ddict_set('settings', 'after-restart', 'z')});
ok(wait_for(sub { my $l = last_entry(); $l && $l->[1]{version} eq version('settings') }),
	'the stream is appended to again after Redis restarts');
is(entries()->[0][1]{kind}, 'f', 'the new stream begins with a "full" marker');
$c->{last_id} = '0-0';		# a new stream: read it from its start
replay_equals($c, 'a Redis restart');

# --- MAXLEN trims the stream; a reader behind it finds the gap
$node->append_conf('postgresql.conf', 'ddict.stream_maxlen = 5');
$node->reload;
usleep(300_000);
my $late = StreamConsumer->new(node => $node, db => 'postgres', table => 'settings', port => $port, key => $key);
$late->poll;
my $pg_before = $late->{pg};
for my $i (1 .. 300)
{
	sql("SELECT ddict_set('settings', 'trim" . ($i % 3) . "', '$i')");
	usleep(5_000) if $i % 10 == 0;
}
ok(wait_for(sub { my $l = last_entry(); $l && $l->[1]{version} eq version('settings') }), 'the burst reached the stream');
my $len = StreamConsumer::command(StreamConsumer::redis_connect($port), 'XLEN', $key);
ok($len < 300, "the stream was trimmed ($len entries kept)");
my $v = version('settings');
wait_for(sub { $late->poll; $late->{version} eq $v });
ok($late->{pg} > $pg_before, 'a reader behind the trimmed stream went back to PostgreSQL');
is($late->dump, select_dump('settings'), 'and then equals a fresh SELECT');

# --- a misbehaving Redis never crashes the streamer
my $fake = FakeRedis->new;
my $pid = sql(q{SELECT pid FROM ddict_change_streams() WHERE state = 'running'});
my $pm_start = sql(q{SELECT pg_postmaster_start_time()});
$node->append_conf('postgresql.conf', "ddict.redis_url = 'redis://127.0.0.1:" . $fake->port . "'");
$node->reload;
for my $mode ('ok', 'wrong', 'nil', 'error', 'random', 'truncate', 'close', 'extra', 'hang')
{
	$fake->mode($mode);
	sql("SELECT ddict_set('settings', 'fake', '$mode')");
	usleep(400_000);
}
is(sql(q{SELECT pid FROM ddict_change_streams() WHERE state = 'running'}), $pid,
	'the streamer survived every malformed reply');
is(sql(q{SELECT pg_postmaster_start_time()}), $pm_start, 'no backend was restarted');
like(sql(q{SELECT last_error FROM ddict_change_streams() WHERE state = 'running'}), qr/XREVRANGE|XADD|connect/,
	'the reason is in ddict_change_streams().last_error');
$node->append_conf('postgresql.conf', "ddict.redis_url = 'redis://127.0.0.1:$port'");
$node->reload;
sql(q{SELECT ddict_set('settings', 'back', 'real')});
replay_equals($c, 'back from a misbehaving Redis');
$fake->stop;

# --- server restart: a new epoch.  A second published dict that nobody
# touches after the restart has no version slot yet; the streamer must still
# stream the first.
sql(q{SELECT ddict_create('idle'); SELECT ddict_publish_changes('idle')});
my $epoch = sql(q{SELECT ddict_epoch()});
$node->restart;
sql(q{SELECT ddict_set('settings', 'after-server-restart', 'w')});
ok(wait_for(sub { my $l = last_entry(); $l && $l->[1]{version} eq version('settings') }),
	'after a server restart the first commit starts the streamer again');
$e = entries()->[0];
is($e->[1]{kind}, 'f', 'the stream of the new server run begins with a marker');
isnt($e->[1]{epoch}, $epoch, '... carrying the new epoch');
$c->{last_id} = '0-0';
replay_equals($c, 'a server restart');
sql(q{SELECT ddict_publish_changes('idle', false)});

# --- opting out: the streamer leaves when nothing is published
sql(q{SELECT ddict_publish_changes('settings', false)});
ok(wait_for(sub { sql(q{SELECT count(*) FROM ddict_change_streams() WHERE state = 'running'}) eq '0' }),
	'the streamer exits when its database publishes nothing');
my $n = scalar @{ entries() };
sql(q{SELECT ddict_set('settings', 'unpublished', '1')});
usleep(500_000);
is(scalar @{ entries() }, $n, 'an unpublished dict appends nothing');
sql(q{SELECT ddict_publish_changes('settings')});
sql(q{SELECT ddict_set('settings', 'republished', '1')});
ok(wait_for(sub { my $l = last_entry(); $l && $l->[1]{version} eq version('settings') }),
	'publishing again starts a streamer');

# --- a cache that loaded from PostgreSQL later than an entry's snapshot
# never steps back: W and T wait for a synchronous standby that does not
# exist (committed, in the ring, not visible); U commits locally and its entry
# (snapshot without T, cursor held at W's position) reaches the stream after
# the cache recorded the stream's tip; then T becomes visible and the cache
# loads from PostgreSQL.  The entry's from <= the cache's cursor (W holds
# both), but its cursor is below the cache's "until": applying it would take
# back T's value.  The rule skips it.
$node->append_conf('postgresql.conf', "synchronous_standby_names = 'nobody'");
$node->reload;
usleep(500_000);		# the checkpointer notes that a standby is wanted
sql(q{SET synchronous_commit = local; SELECT ddict_set('settings', 'k', 'old')});
my $cw = StreamConsumer->new(node => $node, db => 'postgres', table => 'settings', port => $port, key => $key);
my @hold;
for my $who ('W', 'T')
{
	my $val = $who eq 'W' ? 'w' : 'k';
	push @hold, IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres') . " application_name=$who",
		  '-c', "SELECT ddict_set('settings', '$val', 'new')" ], '>', \my $ho, '2>', \my $he);
	ok(wait_for(sub { sql(qq{SELECT count(*) FROM pg_stat_activity WHERE application_name = '$who' AND wait_event = 'SyncRep'}) eq '1' }),
		"$who waits for the synchronous standby, committed but not visible");
}
sql(q{SET synchronous_commit = local; SELECT ddict_set('settings', 'u', 'new')});
my $vu = version('settings');
ok(entry_for($vu), 'U\'s entry reached the stream');
sql(q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'T'});
ok(wait_for(sub { sql(q{SELECT value FROM settings WHERE key = 'k'}) eq 'new' }), 'T became visible');
$cw->{version} = undef;		# a full load now, with the tip recorded before U
$cw->resync;
is($cw->{data}{k}, 'new', 'the cache loaded T\'s value from PostgreSQL');
$cw->poll;
is($cw->{data}{k}, 'new', 'the older entries of the stream did not take it back');
is($cw->{went_back}, 0, 'the cache never stepped back to an older version');
sql(q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'W'});
$_->finish for @hold;
$node->append_conf('postgresql.conf', "synchronous_standby_names = ''");
$node->reload;
replay_equals($cw, 'committers held between commit and visibility');
is($cw->{went_back}, 0, 'and it never stepped back');

# Every entry of stream $k: [ id, header, changes ].
sub entries_of
{
	my ($k) = @_;
	my $r = StreamConsumer::redis_connect($port) or return [];
	my $list = StreamConsumer::command($r, 'XRANGE', $k, '-', '+');
	close $r;
	return [ map { [ $_->[0], StreamConsumer::parse_entry($_->[1]) ] } @$list ];
}

# --- the streamer computes a dict's entry as the table's owner, in a
# security-restricted operation: the owner's index predicate (evaluated
# while the delta's SELECT is planned) runs with the owner's rights, not the
# streamer's (the bootstrap superuser)
sql(q{CREATE ROLE mallory LOGIN; CREATE SCHEMA mallory AUTHORIZATION mallory});
sql(q{SET ROLE mallory;
	SELECT ddict_create('mallory.innocent');
	CREATE TABLE mallory.seen (who name, super boolean);
	CREATE FUNCTION mallory.g() RETURNS void LANGUAGE plpgsql VOLATILE AS $$
	BEGIN
	  INSERT INTO mallory.seen SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
	  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
	    EXECUTE 'ALTER ROLE mallory SUPERUSER';
	  END IF;
	END $$;
	CREATE FUNCTION mallory.f() RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
	BEGIN PERFORM mallory.g(); RETURN true; END $$;
	CREATE INDEX ON mallory.innocent (key) WHERE mallory.f();
	SELECT ddict_publish_changes('mallory.innocent');});
my $mkey = 'ddict:postgres:mallory.innocent:changes';
for my $i (1 .. 4)
{
	sql(qq{SET ROLE mallory; SELECT ddict_set('mallory.innocent', 'a', 'b$i')});
	my $v = version('mallory.innocent');
	wait_for(sub { my $e = entries_of($mkey); @$e && $e->[-1][1]{version} eq $v });
}
ok((grep { $_->[1]{kind} eq 'd' } @{ entries_of($mkey) }) > 0, 'the owner\'s dict got delta entries (its SELECT was planned)');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
	'the owner\'s index predicate did not run as the superuser');
is(sql(q{SELECT string_agg(DISTINCT who || '/' || super, ',') FROM mallory.seen}), 'mallory/false',
	'... it ran as the table\'s owner');

# --- one locked dict does not stop the others' entries: the streamer's
# lock_timeout, one subtransaction per dict
sql(q{GRANT USAGE ON SCHEMA mallory TO PUBLIC});
my $lock = IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-U', 'mallory', '-c', q{
	CREATE PROCEDURE pg_temp.p() LANGUAGE plpgsql AS $$ DECLARE i int := 0; BEGIN
	  LOOP  -- write, commit and lock at once, until the streamer waits for the lock
	    i := i + 1;
	    PERFORM ddict_set('mallory.innocent', 'k', i::text); COMMIT;
	    LOCK TABLE mallory.innocent IN ACCESS EXCLUSIVE MODE; PERFORM pg_sleep(0.2);
	    EXIT WHEN i > 100 OR EXISTS (SELECT FROM pg_locks WHERE relation = 'mallory.innocent'::regclass AND NOT granted);
	    COMMIT;
	  END LOOP;
	  PERFORM pg_sleep(8); END $$;}, '-c', 'CALL pg_temp.p()' ], '>', \my $lo, '2>', \my $le);
my $held = q{SELECT count(*) FROM pg_locks WHERE relation = 'mallory.innocent'::regclass AND granted AND mode = 'AccessExclusiveLock'};
my $waits = q{SELECT count(*) FROM pg_locks WHERE relation = 'mallory.innocent'::regclass AND NOT granted};
ok(wait_for(sub { sql($waits) ne '0' }, 25), 'the streamer waits for a session\'s exclusive lock on one published dict');
sql(q{SELECT ddict_set('settings', 'while-locked', '1')});
ok(entry_for(version('settings')), 'another dict still gets its entry');
is(sql($held), '1', '... while the lock is still held');
ok(wait_for(sub { (sql(q{SELECT last_error FROM ddict_change_streams() WHERE state = 'running'}) // '') =~ /lock timeout/ }),
	'the locked dict\'s error is reported');
$lock->finish;
diag("locker: $lo $le") if $le;
my $mv = version('mallory.innocent');
ok(wait_for(sub { my $e = entries_of($mkey); @$e && $e->[-1][1]{version} eq $mv }),
	'the locked dict gets its entry once the lock is gone');

# --- a change larger than ddict.stream_max_entry_size is a marker
sql(q{ALTER SYSTEM SET ddict.stream_max_entry_size = '1kB'; SELECT pg_reload_conf()});
usleep(300_000);
sql(q{INSERT INTO settings VALUES ('big', repeat('x', 2000))});
my $big = entry_for(version('settings'));
is($big->[1]{kind} . '/' . $big->[1]{n}, 'f/0', 'a change above the size limit is appended as a marker');
sql(q{UPDATE settings SET value = 'small' WHERE key = 'big'});
is(entry_for(version('settings'))->[1]{kind}, 'd', 'the next small change is a delta again');
sql(q{ALTER SYSTEM RESET ddict.stream_max_entry_size; SELECT pg_reload_conf()});
replay_equals($cw, 'after a marker for a large change');
# --- a Redis ACL that refuses the deliveries' channels (NOPERM) is no outage:
# the entries still go to the streams, the error is reported
$redis->cli('ACL', 'SETUSER', 'default', 'resetchannels', '&ddict:postgres:public.settings',
	'&ddict:postgres:public.quiet', '&ddict:postgres:public.idle', '&ddict:postgres:mallory.innocent');
my $logpos = -s $node->logfile;
for my $i (1 .. 3)
{
	sql(qq{SELECT ddict_set('settings', 'acl', '$i')});
	ok(entry_for(version('settings')), "deliveries refused: entry $i still appended");
}
like(sql(q{SELECT last_error FROM ddict_change_streams() WHERE state = 'running'}), qr/NOPERM|permission/i,
	'the refused PUBLISH is reported');
is(sql(q{SELECT connected FROM ddict_change_streams() WHERE state = 'running'}), 't', 'the streamer stays connected');
ok(!$node->log_contains(qr/change streamer cannot append to Redis/, $logpos), 'and logs no outage');
$redis->cli('ACL', 'SETUSER', 'default', 'allchannels');
sql(q{DROP SCHEMA mallory CASCADE; DROP ROLE mallory});

# --- a renamed dict: a new stream key, which begins with a marker
sql(q{ALTER TABLE settings RENAME TO settings2; SELECT ddict_set('settings2', 'renamed', '1')});
$key = 'ddict:postgres:public.settings2:changes';
is(sql(q{SELECT stream_key FROM ddict_published}), $key, 'ddict_published follows the rename');
ok(wait_for(sub { my $l = last_entry(); $l && $l->[1]{version} eq version('settings2') }),
	'a renamed dict is appended to under its new name');
is(entries()->[0][1]{kind}, 'f', '... whose stream begins with a marker');

# --- detaching the last published dict ends the streamer
sql(q{SELECT ddict_detach('settings2')});
ok(wait_for(sub { sql(q{SELECT count(*) FROM ddict_change_streams() WHERE state = 'running'}) eq '0' }),
	'detaching the last published dict ends the streamer');

$node->stop;
$redis->stop;
done_testing();
