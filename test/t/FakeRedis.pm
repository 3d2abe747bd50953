# FakeRedis — test/fake-redis.pl, a deliberately misbehaving Redis, for
# ddict's TAP tests.
#
# Started on a free loopback port, stopped by the PID it was started with
# (also when the test dies).  $fake->mode("wrong SCAN") rewrites the control
# file the server reads before every command (see fake-redis.pl for the
# modes); $fake->connections is how many connections it has accepted.
package FakeRedis;
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use RedisServer;
use Time::HiRes qw(usleep);

my @running;
my $script = File::Spec->rel2abs(dirname(__FILE__) . '/../fake-redis.pl');

sub new
{
	my ($class, %args) = @_;
	my $port = RedisServer::free_port();
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/fake_redis_$port";
	mkdir $dir or die "mkdir $dir: $!";
	my $self = bless {
		port    => $port,
		control => "$dir/control",
		stats   => "$dir/connections",
	}, $class;
	$self->mode($args{mode} // 'ok');
	my $pid = fork;
	die "fork: $!" unless defined $pid;
	if ($pid == 0) { exec $^X, $script, $port, $self->{control}, $self->{stats} or exit 127; }
	$self->{pid} = $pid;
	push @running, $pid;
	for (1 .. 100)
	{
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port);
		if ($s) { close $s; return $self; }
		usleep(50_000);
	}
	die "fake-redis on port $port did not start";
}

sub port { return $_[0]->{port} }

# Replace the control file (atomically: the server reads it per command).
sub mode
{
	my ($self, @lines) = @_;
	my $tmp = "$self->{control}.tmp";
	open(my $fh, '>', $tmp) or die "$tmp: $!";
	print $fh "$_\n" for @lines;
	close $fh;
	rename $tmp, $self->{control} or die "rename: $!";
}

sub connections
{
	my ($self) = @_;
	open(my $fh, '<', $self->{stats}) or return 0;
	my $n = <$fh> // 0;
	close $fh;
	chomp $n;
	return $n + 0;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	@running = grep { $_ != $self->{pid} } @running;
	delete $self->{pid};
}

END { kill 'TERM', $_ for @running; }

1;
