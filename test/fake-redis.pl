#!/usr/bin/env perl
# fake-redis.pl — a deliberately misbehaving Redis server for ddict's tests.
#
# A real redis-server cannot be made to answer a SCAN with an integer cursor,
# a GET with an array or a SUBSCRIBE with a three-word message of the wrong
# shape; proxies and "Redis-compatible" stores can.  This server speaks just
# enough RESP to be taken for Redis and misbehaves on demand, so that the
# tests show that ddict's publisher (test/t/021_redis_fake.pl) and libddict
# (test/client/test_redis_fake.c) survive such replies: a logged error and a
# reconnect with backoff, never a crash, never a wrong version believed.
#
#   fake-redis.pl PORT CONTROL_FILE [STATS_FILE]
#
# Listens on 127.0.0.1:PORT; one process per connection, each ending when
# the listener does.  Before answering each command it reads CONTROL_FILE:
#
#   MODE [COMMAND...]   misbehave with MODE on these commands (on every
#                       command without a list); the first matching line wins
#   value V             what GET answers when it behaves (default: nil)
#
# Commands no line names are answered as Redis would.  Modes:
#
#   ok        as Redis would
#   wrong     a reply of the wrong type or shape; connection n (counted
#             from 1) gets variant n of the command's list, so successive
#             reconnects go through all of them (integer SCAN cursor first)
#   nil       $-1
#   error     -ERR
#   random    random bytes (seeded by the connection number), then carries on
#   truncate  the first half of the right reply, then closes
#   hang      the first half of the right reply, then never another byte
#   close     closes without answering
#   extra     the right reply twice, so that a client that does not notice
#             takes the second for the answer to its next command
#   badmsg    (SUBSCRIBE) a good confirmation, then a malformed message
#   drip      the header of a 100 MB bulk reply, then one byte every 0.4 s:
#             each read gets data well within any per-read timeout
#
# SUBSCRIBE in mode wrong: variants with a bad confirmation, then variants
# with a good confirmation followed by a malformed message.  STATS_FILE, if
# given, holds the number of connections accepted so far.
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use POSIX ();

my ($port, $control, $stats) = @ARGV;
die "usage: fake-redis.pl PORT CONTROL_FILE [STATS_FILE]\n" unless $port && $control;

my $listener = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => $port,
	Listen    => 64,
	ReuseAddr => 1) or die "fake-redis: cannot listen on 127.0.0.1:$port: $!\n";
$SIG{CHLD} = 'IGNORE';
$SIG{PIPE} = 'IGNORE';
my $parent = $$;

sub bulk { my ($s) = @_; return defined $s ? '$' . length($s) . "\r\n$s\r\n" : "\$-1\r\n"; }
sub arr { return '*' . scalar(@_) . "\r\n" . join('', @_); }

# What the control file says for command $cmd: (mode, value).
sub control
{
	my ($cmd) = @_;
	my ($mode, $value) = ('ok', undef);
	my $found = 0;
	if (open(my $fh, '<', $control))
	{
		while (my $line = <$fh>)
		{
			chomp $line;
			my @w = split ' ', $line;
			next unless @w;
			if ($w[0] eq 'value') { $value = $w[1]; next; }
			next if $found;
			my ($m, @cmds) = @w;
			if (!@cmds || grep { uc($_) eq $cmd } @cmds) { $mode = $m; $found = 1; }
		}
		close $fh;
	}
	return ($mode, $value);
}

# The right reply to a command.
sub right
{
	my ($st, $cmd, @args) = @_;
	return $st->{subscribed} ? arr(bulk('pong'), bulk('')) : "+PONG\r\n" if $cmd eq 'PING';
	return "+OK\r\n" if $cmd =~ /^(AUTH|SELECT|SET)$/;
	return ":0\r\n" if $cmd eq 'PUBLISH';
	return ":1\r\n" if $cmd eq 'DEL';
	return bulk($st->{value}) if $cmd eq 'GET';
	return arr(bulk('0'), arr(bulk('ddict:stale-key-of-an-earlier-run'))) if $cmd eq 'SCAN';
	if ($cmd eq 'SUBSCRIBE')
	{
		$st->{subscribed} = 1;
		return arr(bulk('subscribe'), bulk($args[0] // ''), ":1\r\n");
	}
	return "+OK\r\n";
}

# Replies of the wrong type or shape, per command.
sub wrong_variants
{
	my ($st, $badmsg, $cmd, @args) = @_;
	my $ch = $args[0] // '';
	my $good_sub = arr(bulk('subscribe'), bulk($ch), ":1\r\n");
	my %w = (
		SCAN => [
			arr(":0\r\n", arr()),                       # integer cursor
			arr(bulk(undef), arr()),                    # nil cursor
			arr(bulk('0'), ":3\r\n"),                   # keys not an array
			arr(bulk('0'), arr(":7\r\n")),              # a key that is an integer
			arr(bulk('0'), arr(bulk(undef))),           # a nil key
			arr(bulk('0')),                             # wrong arity
			arr(bulk('0'), arr(), arr()),
			arr(arr(), arr()),                          # array cursor
			arr(bulk('abc'), arr()),                    # not a number
			arr(bulk('9' x 40), arr()),                 # longer than any cursor
			":0\r\n",
			"+OK\r\n",
		],
		GET => [
			arr(bulk('5')), ":5\r\n", "+5\r\n", bulk('5x'), bulk('-5'), bulk('9' x 30), arr(),
		],
		SET     => [ ":1\r\n", arr(), bulk('OK'), "+QUEUED\r\n" ],
		PUBLISH => [ "+OK\r\n", bulk('1'), arr(":1\r\n") ],
		DEL     => [ "+OK\r\n", arr(), bulk('1') ],
		AUTH    => [ ":1\r\n", arr(), "+NOPE\r\n" ],
		SELECT  => [ ":1\r\n", arr(), "+NOPE\r\n" ],
		PING    => $st->{subscribed}
		? [ ":1\r\n", arr(bulk('pong')), arr(":1\r\n", ":2\r\n"), bulk('PONG') ]
		: [ ":1\r\n", arr(), bulk('PONG'), "+NOPE\r\n" ],
		SUBSCRIBE => [
			arr(bulk('subscribe'), bulk($ch)),          # wrong arity
			":1\r\n",
			arr(":1\r\n", bulk($ch), ":1\r\n"),
			arr(bulk('subscribe'), bulk('another-channel'), ":1\r\n"),
			arr(bulk('subscribe'), arr(), ":1\r\n"),
			# a good confirmation, then a malformed message
			$good_sub . arr(bulk('message'), bulk($ch)),
			$good_sub . arr(bulk('message'), bulk($ch), ":5\r\n"),
			$good_sub . arr(bulk('message'), bulk($ch), bulk('5'), bulk('6')),
			$good_sub . arr(bulk('message'), arr(), bulk('5')),
			$good_sub . arr(bulk('message'), bulk($ch), bulk('5x')),
			$good_sub . arr(bulk('message'), bulk('another-channel'), bulk('5')),
			$good_sub . arr(":1\r\n", bulk($ch), bulk('5')),
			$good_sub . ":42\r\n",
			$good_sub . bulk(undef),
		],
	);
	my $list = $w{$cmd} // [ arr(":1\r\n", ":2\r\n") ];
	$st->{subscribed} = 1 if $cmd eq 'SUBSCRIBE';
	$list = [ grep { index($_, $good_sub) == 0 } @$list ] if $badmsg;
	return $list->[ ($st->{n} - 1) % @$list ];
}

sub random_bytes
{
	my ($st) = @_;
	my $len = 1 + int(rand(64));
	return join('', map { chr(int(rand(256))) } 1 .. $len);
}

sub send_all
{
	my ($sock, $data) = @_;
	while (length $data)
	{
		my $n = syswrite($sock, $data);
		exit 0 unless defined $n && $n > 0;
		substr($data, 0, $n) = '';
	}
}

# One command in, its (mis)behaviour out.
sub answer
{
	my ($sock, $st, $cmd, @args) = @_;
	my ($mode, $value) = control($cmd);
	$st->{value} = $value;
	if ($mode eq 'wrong') { send_all($sock, wrong_variants($st, 0, $cmd, @args)); }
	elsif ($mode eq 'badmsg' && $cmd eq 'SUBSCRIBE') { send_all($sock, wrong_variants($st, 1, $cmd, @args)); }
	elsif ($mode eq 'nil') { send_all($sock, "\$-1\r\n"); }
	elsif ($mode eq 'error') { send_all($sock, "-ERR fake-redis: told to fail $cmd\r\n"); }
	elsif ($mode eq 'random') { send_all($sock, random_bytes($st)); }
	elsif ($mode eq 'close') { exit 0; }
	elsif ($mode eq 'truncate' || $mode eq 'hang')
	{
		my $r = right($st, $cmd, @args);
		send_all($sock, substr($r, 0, int(length($r) / 2) || 1));
		exit 0 if $mode eq 'truncate';
		$st->{hung} = 1;
	}
	elsif ($mode eq 'drip')
	{
		# the header of a 100 MB reply, then a byte every 0.4 s (under any
		# per-read timeout) until the client or the listener goes
		send_all($sock, "\$100000000\r\n");
		while (kill 0, $parent)
		{
			defined(syswrite($sock, 'a')) or exit 0;
			select(undef, undef, undef, 0.4);
		}
		exit 0;
	}
	elsif ($mode eq 'extra')
	{
		send_all($sock, right($st, $cmd, @args) x 2);
	}
	else { send_all($sock, right($st, $cmd, @args)); }
}

# The next command in $$buf (removed from it), or undef if incomplete.
sub next_command
{
	my ($buf) = @_;
	if ($$buf =~ /\A\*(\d+)\r\n/)
	{
		my ($n, $pos, @args) = ($1, length($&));
		for (1 .. $n)
		{
			return undef unless substr($$buf, $pos) =~ /\A\$(\d+)\r\n/;
			my $len = $1;
			$pos += length($&);
			return undef if length($$buf) < $pos + $len + 2;
			push @args, substr($$buf, $pos, $len);
			$pos += $len + 2;
		}
		substr($$buf, 0, $pos) = '';
		return \@args;
	}
	return undef unless $$buf =~ /\A([^\r\n]*)\r?\n/;
	my $line = $1;
	substr($$buf, 0, length($&)) = '';
	return [ split ' ', $line ];
}

sub serve
{
	my ($sock, $n) = @_;
	my $st = { n => $n, subscribed => 0, hung => 0 };
	my $sel = IO::Select->new($sock);
	my $buf = '';
	srand($n);
	for (;;)
	{
		exit 0 if getppid() != $parent;
		next unless $sel->can_read(0.2);
		my $got = sysread($sock, my $data, 65536);
		exit 0 unless $got;
		next if $st->{hung};
		$buf .= $data;
		while (my $cmd = next_command(\$buf))
		{
			next unless @$cmd;
			answer($sock, $st, uc(shift @$cmd), @$cmd);
			last if $st->{hung};
		}
	}
}

my $accepted = 0;
for (;;)
{
	my $sock = $listener->accept or next;
	$accepted++;
	if ($stats && open(my $fh, '>', "$stats.tmp"))
	{
		print $fh "$accepted\n";
		close $fh;
		rename "$stats.tmp", $stats;
	}
	my $pid = fork;
	if (defined $pid && $pid == 0)
	{
		close $listener;
		serve($sock, $accepted);
		exit 0;
	}
	close $sock;
}
