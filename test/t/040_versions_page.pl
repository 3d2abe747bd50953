# 040_versions_page.pl — the versions page (README "The versions page"):
# every dict's version and the server's epoch in a file beside the server's
# first Unix socket that same-host clients map read-only.
#
# Clients are vpage_probe processes (test/t/vpage_probe.c on the reader
# module src/client/vpage.c, built here with ASan/UBSan) that keep the page
# mapped across server restarts and answer one command per line.  What must
# hold:
#
#   * the page moves at commit, not on rollback (top level, savepoint, error);
#   * strict: once a client heard COMMIT, a read of the page from any other
#     process returns that commit's version (three probes, many commits); a
#     reader spinning during concurrent commits never sees a version go back
#     or a torn slot;
#   * restart: a fast or immediate stop marks the page dead, a killed
#     postmaster leaves it saying "unchanged" (true: nothing commits while no
#     server runs), and the next start — or the postmaster's reinitialisation
#     after a child crashed — reuses the file in place (same inode, so
#     existing mappings see it) with a new epoch: a reader with the old epoch
#     gets "epoch changed", never its old version, after writes;
#   * slot reuse after DROP TABLE of a dict and creation of another is seen;
#   * permissions: mode and group follow ddict.versions_page_mode/_group,
#     never writable by group or others; a group-writable page is refused by
#     the reader; an unsafe mode is refused by the server;
#   * ddict.versions_page = 'off': no file (an old one is retired and
#     removed), the reader reports it unavailable;
#   * a streaming standby moves its own page on replay.
use strict;
use warnings;

use File::Basename;
use File::Copy;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my $root = dirname(__FILE__) . '/../..';
my $probe_bin = "$PostgreSQL::Test::Utils::tmp_check/vpage_probe";
system('cc', '-std=c11', '-D_GNU_SOURCE', '-O1', '-g', '-Wall', '-Wextra',
	'-Werror', '-fsanitize=address,undefined', '-fno-sanitize-recover=all',
	'-fno-omit-frame-pointer', "-I$root/src/client",
	"$root/src/client/vpage.c", "$root/test/t/vpage_probe.c",
	'-o', $probe_bin) == 0
  or BAIL_OUT('cannot compile the versions page probe');

# A probe process: cmd("read a 123") returns its one-line answer.
my @probes;

sub probe
{
	my $p = { in => '', out => '', err => '' };
	$p->{h} = IPC::Run::start([$probe_bin], '<', \$p->{in}, '>', \$p->{out},
		'2>', \$p->{err}, IPC::Run::timeout(120));
	push @probes, $p;
	return $p;
}

sub cmd
{
	my ($p, $line) = @_;
	$p->{out} = '';
	$p->{in} .= "$line\n";
	$p->{h}->pump until $p->{out} =~ /\n/;
	chomp(my $r = $p->{out});
	return $r;
}

my $conf = "shared_preload_libraries = 'ddict'";
my $node = PostgreSQL::Test::Cluster->new('vpage');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', "$conf\nrestart_after_crash = on");
$node->start;

my $sockdir = $node->host;
my $port = $node->port;
my $page = "$sockdir/.s.PGSQL.$port.ddict";

sub q1 { return $node->safe_psql('postgres', $_[0]); }
sub version { return q1("SELECT ddict_last_updated('$_[0]')"); }
sub epoch { return q1('SELECT ddict_epoch()'); }
sub relid { return q1("SELECT '$_[0]'::regclass::oid"); }

ok(-f $page, "page beside the socket: $page");
my @st = stat($page);
is(sprintf('%04o', $st[2] & 07777), '0640', 'default mode 0640');
is($st[4], $>, 'owned by the server user');
is($st[5], (split ' ', $))[0], "default group: the server's");
my $inode = $st[1];

q1(q{CREATE EXTENSION ddict;
     SELECT ddict_create('s');
     SELECT ddict_set('s', 'k', '0');});
my $dboid = q1("SELECT oid FROM pg_database WHERE datname = 'postgres'");
my $rel_s = relid('s');
my $e1 = epoch();

my @readers = map { probe() } 1 .. 3;
for my $p (@readers)
{
	is(cmd($p, "opensock $sockdir $port"), 'ok ', 'a client finds the page from its socket');
}
my ($hst, $hepoch, $halive, $hpid) = split ' ', cmd($readers[0], 'header');
is("$hst $hepoch $halive", "ok $e1 1", 'header: alive, epoch = ddict_epoch()');
is($hpid, $node->{_pid}, 'header: the postmaster pid');
is(cmd($readers[0], 'verify'), 'ok', 'verify: the live page of a running server');
like(cmd($_, "find a $e1 $dboid $rel_s"), qr/^ok /, 'find the dict') for @readers;
is(cmd($readers[0], "find z $e1 $dboid 4294967"), 'not_found 0 0',
	'a relation that is no dict has no slot');
is(cmd($readers[0], "find a 12345 $dboid $rel_s") =~ s/ .*//r, 'epoch_changed',
	'find with another epoch: epoch changed');

#
# Commit moves the page, strictly: read from three processes after COMMIT.
#
my $prev = version('s');
my $strict_ok = 1;
for my $i (1 .. 25)
{
	q1("SELECT ddict_set('s', 'k', '$i')");    # returns once COMMIT was heard
	my @seen = map { cmd($_, "read a $e1") } @readers;
	my $v = version('s');
	for my $r (@seen)
	{
		next if $r eq "ok $v" && $v > $prev;
		$strict_ok = 0;
		diag("commit $i: page read '$r', server version $v, previous $prev");
	}
	$prev = $v;
}
ok($strict_ok, 'after each COMMIT, three other processes read its version from the page');

q1("BEGIN; SELECT ddict_set('s', 'k', 'rolled back'); ROLLBACK;");
q1("BEGIN; SAVEPOINT x; SELECT ddict_set('s', 'k', 'sp'); ROLLBACK TO x; COMMIT;");
$node->psql('postgres', "BEGIN; SELECT ddict_set('s', 'k', 'err'); SELECT 1/0; COMMIT;");
is(cmd($readers[1], "read a $e1"), "ok $prev", 'rollbacks (top, savepoint, error) leave the page');
is(version('s'), $prev, '... and the server version');

# A reader spinning while another client commits: never backwards, never torn.
# Four concurrent committers (pgbench) bump the same dict: the page moves by
# compare-and-swap to the maximum, so it ends at the server's version.
my $script = "$PostgreSQL::Test::Utils::tmp_check/bump.sql";
PostgreSQL::Test::Utils::append_to_file($script,
	"SELECT ddict_set('s', 'k' || (random() * 10)::int, 'v');\n");
my $bg = IPC::Run::start(['pgbench', '-n', '-c', '4', '-j', '2', '-t', '150',
	'-f', $script, '-h', $sockdir, '-p', $port, 'postgres'],
	'>', \my $bg_out, '2>', \my $bg_err);
# spin in 300 ms rounds for as long as the committers run
my ($sst, $reads, $oks, $back, $last) = ('ok', 0, 0, 0, 0);
for my $round (1 .. 200)
{
	my @r = split ' ', cmd($readers[2], "spin a $e1 300");
	$sst = $r[0] if $r[0] ne 'ok';
	$reads += $r[1];
	$oks += $r[2];
	$back += $r[3] + ($r[2] > 0 && $r[4] < $last ? 1 : 0);
	$last = $r[4] if $r[4] > $last;
	$bg->pump_nb;
	last unless $bg->pumpable;
}
ok($bg->finish, 'pgbench committers ran') or diag("$bg_out $bg_err");
is("$sst $back", 'ok 0', "spinning reader ($reads reads): no version went back");
is($oks, $reads, '... every read valid (no torn or busy slot)');
cmp_ok($last, '>', $prev, '... and it saw the concurrent commits');
is(cmd($_, "read a $e1"), 'ok ' . version('s'), 'page = server version after them')
  for @readers;

#
# Slot reuse: drop a dict, create another; the cached slot reports reuse.
#
q1(q{SELECT ddict_create('gone'); SELECT ddict_set('gone', 'k', 'v');});
my $rel_gone = relid('gone');
my ($fst, $idx_gone, $gen_gone) = split ' ', cmd($readers[0], "find b $e1 $dboid $rel_gone");
is($fst, 'ok', 'dict to drop has a slot');
is(cmd($readers[0], "read b $e1"), 'ok ' . version('gone'), 'its version');
q1('DROP TABLE gone');
is(cmd($readers[0], "read b $e1"), 'slot_reused 0', 'DROP TABLE frees the slot: reader sees it');
q1(q{SELECT ddict_create('newone'); SELECT ddict_set('newone', 'k', 'v');});
my ($nst, $idx_new, $gen_new) =
  split ' ', cmd($readers[0], "find c $e1 $dboid " . relid('newone'));
is("$nst $idx_new", "ok $idx_gone", 'the new dict took the same slot');
cmp_ok($gen_new, '>', $gen_gone, '... with a new generation');
is(cmd($readers[0], "read b $e1"), 'slot_reused 0', 'the old cached slot still reports reuse');
is(cmd($readers[0], "read c $e1"), 'ok ' . version('newone'), 'the new one reads its version');

#
# Restarts.  (a) fast stop: dead; start: same file, new epoch.
#
my $v_before = version('s');
$node->stop('fast');
is(cmd($readers[0], "read a $e1"), 'dead 0', 'fast stop: the page says dead');
like(cmd($readers[0], 'header'), qr/^ok $e1 0 /, '... header not alive');
$node->start;
my $e2 = epoch();
isnt($e2, $e1, 'new epoch after restart');
is((stat($page))[1], $inode, 'restart reuses the file in place (same inode)');
like(cmd($readers[0], 'header'), qr/^ok $e2 1 /, 'a mapping from before the restart sees the new epoch, alive');
q1("SELECT ddict_set('s', 'k', 'after fast restart')");
is(cmd($_, "read a $e1"), 'epoch_changed 0', 'old epoch: epoch changed, not the old version')
  for @readers;
like(cmd($readers[0], "find a $e2 $dboid $rel_s"), qr/^ok /, 'found again for the new epoch');
is(cmd($readers[0], "read a $e2"), 'ok ' . version('s'), '... with the current version');

# (b) immediate stop, writes, start
# A killed postmaster must be reaped, and its children must leave, before a
# new one can start (its pid file and shared memory).
sub start_after_kill
{
	my ($pm) = @_;
	for (1 .. 60)
	{
		if (kill(0, $pm))
		{
			Time::HiRes::usleep(500_000);
			next;
		}
		return 1 if $node->start(fail_ok => 1);
		$node->{_pid} = undef;
		Time::HiRes::usleep(500_000);
	}
	return 0;
}

# After a backend crash the postmaster reinitialises shared memory by itself.
sub wait_reinit
{
	my ($e_old) = @_;
	for (1 .. 120)
	{
		my ($rc, $e) = $node->psql('postgres', 'SELECT ddict_epoch()');
		return 1 if $rc == 0 && $e ne $e_old;
		Time::HiRes::usleep(250_000);
	}
	return 0;
}

# immediate stop, killed postmaster, crashed child (crash restart in place)
for my $mode ('immediate', 'kill9', 'crash')
{
	my $e_old = epoch();
	q1("SELECT ddict_set('s', 'k', 'before $mode')");
	my $v_old = version('s');
	for my $p (@readers)    # fresh mappings of the page as it is now
	{
		cmd($p, "opensock $sockdir $port");
		cmd($p, "find a $e_old $dboid $rel_s");
	}
	is(cmd($readers[1], "read a $e_old"), "ok $v_old", "$mode: slot found, version read");
	my $pm = $node->{_pid};
	my $started;
	if ($mode eq 'crash')
	{
		my $ckpt = q1("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
		kill(9, $ckpt);
		$started = wait_reinit($e_old);
	}
	else
	{
		if ($mode eq 'kill9')
		{
			$node->kill9;
		}
		else
		{
			$node->stop('immediate');
		}
		my $down = cmd($readers[1], "read a $e_old");
		ok($down eq 'dead 0' || $down eq "ok $v_old",
			"$mode: while down the page says dead or its last version ($down)");
		for (1 .. 60)
		{
			last unless kill(0, $pm);
			Time::HiRes::usleep(500_000);
		}
		is(cmd($readers[1], 'verify'), 'dead', "$mode: verify sees the postmaster gone");
		$started = start_after_kill($pm);
	}
	ok($started, "$mode: server running again");
	q1("SELECT ddict_set('s', 'k', 'after $mode')") for 1 .. 3;
	my $e_new = epoch();
	isnt($e_new, $e_old, "$mode: new epoch");
	is((stat($page))[1], $inode, "$mode: same file");
	is(cmd($_, "read a $e_old"), 'epoch_changed 0',
		"$mode: after writes a reader with the old epoch is told epoch changed")
	  for @readers;
	like(cmd($readers[1], 'header'), qr/^ok $e_new 1 /, "$mode: header has the new epoch");
}

#
# Permissions.
#
my $bad = $node->psql('postgres', 'ALTER SYSTEM SET ddict.versions_page_mode = 0660');
isnt($bad, 0, 'a group-writable mode is refused');
$bad = $node->psql('postgres', "ALTER SYSTEM SET ddict.versions_page = 'relative/path'");
isnt($bad, 0, 'a relative path is refused');

my $copy = "$PostgreSQL::Test::Utils::tmp_check/page_copy";
copy($page, $copy) or die "copy: $!";
chmod 0660, $copy;
like(cmd($readers[0], "open $copy"), qr/^invalid .*writable by group/, 'the reader refuses a group-writable page');
chmod 0600, $copy;
is(cmd($readers[0], "open $copy"), 'ok ', '... and maps a private copy read-only');
is((stat($page))[2] & 022, 0, 'no write permission for group or others');

# a group the server user belongs to, preferably not its primary one
my ($egid, @groups) = split ' ', $);
my ($gid) = grep { $_ != $egid } @groups;
my $group = getgrgid($gid // $egid);
my $other = PostgreSQL::Test::Cluster->new('vpage_conf');
my $explicit = "$PostgreSQL::Test::Utils::tmp_check/explicit.ddict";
$other->init;
$other->append_conf('postgresql.conf',
	"$conf\nddict.versions_page = '$explicit'\nddict.versions_page_mode = 0600\n"
	  . "ddict.versions_page_group = '$group'");
$other->start;
@st = stat($explicit);
is(sprintf('%04o', $st[2] & 07777), '0600', 'ddict.versions_page_mode applied');
is(scalar(getgrgid($st[5])), $group, "ddict.versions_page_group applied ($group)");
ok(!-e $other->host . '/.s.PGSQL.' . $other->port . '.ddict', 'explicit path: nothing beside the socket');
is($other->safe_psql('postgres', 'SHOW ddict.versions_page_mode'), '0600', 'mode shown in octal');

# Disabled: an existing page is retired (readers see dead) and removed.
$other->stop;
$other->append_conf('postgresql.conf', "ddict.versions_page = ''");
$other->start;
my $odefault = $other->host . '/.s.PGSQL.' . $other->port . '.ddict';
ok(-e $odefault, 'default path again');
my $op = probe();
is(cmd($op, 'opensock ' . $other->host . ' ' . $other->port), 'ok ', 'mapped');
$other->stop;
$other->append_conf('postgresql.conf', "ddict.versions_page = 'off'");
$other->start;
ok(!-e $odefault, "ddict.versions_page = 'off': no file");
like(cmd($op, 'header'), qr/^ok \d+ 0 /, '... a mapping of the old file says dead');
is(cmd($op, 'verify'), 'dead', '... and verify sees the file gone');
like(cmd($op, 'opensock ' . $other->host . ' ' . $other->port), qr/^unavailable /,
	'... and a client reports the page unavailable');
$other->stop;

# A path that names someone's file: never overwritten, no page, a warning.
my $precious = "$PostgreSQL::Test::Utils::tmp_check/precious.txt";
PostgreSQL::Test::Utils::append_to_file($precious, "not a page\n" x 100);
$other->append_conf('postgresql.conf', "ddict.versions_page = '$precious'");
my $log_pos = -s $other->logfile;
$other->start;
is(PostgreSQL::Test::Utils::slurp_file($precious), "not a page\n" x 100,
	'a file that is not a page is left alone');
like(substr(PostgreSQL::Test::Utils::slurp_file($other->logfile), $log_pos),
	qr/is not a ddict versions page; not using it/, '... with a warning');
$other->stop;

# A second cluster configured with the first one's live page leaves it alone.
my $hp = probe();
is(cmd($hp, "open $page"), 'ok ', 'the first server\'s page mapped');
my $before = cmd($hp, 'header');
$other->append_conf('postgresql.conf', "ddict.versions_page = '$page'");
$log_pos = -s $other->logfile;
$other->start;
like(substr(PostgreSQL::Test::Utils::slurp_file($other->logfile), $log_pos),
	qr/in use by another running server/, 'a live page of another server is refused with a warning');
$other->stop;
is(cmd($hp, 'header'), $before, '... and neither its start nor its stop touched that page');

#
# Standby: replay moves the standby's own page.
#
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('vpage_standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', $conf);
$standby->start;
$node->wait_for_catchup($standby, 'replay');
my $se = $standby->safe_psql('postgres', 'SELECT ddict_epoch()');
$standby->safe_psql('postgres', "SELECT ddict_last_updated('s')");    # its slot
my $sp = probe();
is(cmd($sp, 'opensock ' . $standby->host . ' ' . $standby->port), 'ok ', 'standby has its own page');
like(cmd($sp, "find a $se $dboid $rel_s"), qr/^ok /, 'standby page: dict found');
# The commit's version is above the primary's version before it, and its
# bump record carries it: replay moves the standby at least that far.  (After
# the crashes above the primary may also move a version when a reader
# resolves a replayed intent; that is not logged, so compare with before.)
# Poll the page only: no query on the standby meanwhile.
my $pv = version('s');
q1("SELECT ddict_set('s', 'k', 'to the standby')");
my $moved = '';
for (1 .. 200)
{
	$moved = cmd($sp, "read a $se");
	last if $moved =~ /^ok (\d+)$/ && $1 > $pv;
	Time::HiRes::usleep(50_000);
}
like($moved, qr/^ok \d+$/, 'standby page readable during replay');
cmp_ok((split ' ', $moved)[1], '>', $pv,
	"replay moved the standby page past the primary's version before the commit");
# (a standby read may itself move the version: it resolves replayed intents
# whose bump record never came; so read the page after it)
my $sv = $standby->safe_psql('postgres', "SELECT ddict_last_updated('s')");
is(cmd($sp, "read a $se"), "ok $sv", 'standby page = standby version');
$standby->stop;

# The reader under valgrind too (plain build): open errors, reads, a spin.
SKIP:
{
	skip 'valgrind not installed', 2
	  unless system('sh', '-c', 'command -v valgrind >/dev/null') == 0;
	my $plain = "$PostgreSQL::Test::Utils::tmp_check/vpage_probe_plain";
	system('cc', '-std=c11', '-D_GNU_SOURCE', '-O1', '-g', '-Wall', '-Wextra',
		'-Werror', "-I$root/src/client", "$root/src/client/vpage.c",
		"$root/test/t/vpage_probe.c", '-o', $plain) == 0
	  or die 'cannot compile the plain probe';
	my $e = epoch();
	my $script = join("\n",
		'open /nonexistent', "open $copy", 'header', "read a $e",
		"opensock $sockdir $port", 'header', "find a $e $dboid $rel_s",
		"read a $e", "spin a $e 200", 'verify', "find b $e 0 0", 'quit') . "\n";
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'valgrind', '-q', '--error-exitcode=9', '--leak-check=full',
		$plain ], '<', \$script, '>', \$out, '2>', \$err);
	is($? >> 8, 0, "reader under valgrind: no errors $err");
	like($out, qr/^unavailable .*\nok \nok \d+ 1 \d+\nslot_reused 0\nok \nok $e 1 \d+\nok \d+ \d+\nok \d+\nok \d+ \d+ 0 \d+\nok\nbad_argument 0 0\n$/,
		'reader under valgrind: expected answers');
}

for my $p (@probes)
{
	$p->{in} .= "quit\n";
	$p->{h}->finish;
	is($p->{err}, '', 'probe exited without sanitizer findings');
}
$node->stop;
done_testing();
