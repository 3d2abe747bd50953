# RedisServer — a throwaway redis-server for ddict's TAP tests.
#
# Started on a free loopback port with persistence off, stopped by the PID
# it was started with (also when the test dies).
package RedisServer;
use strict;
use warnings;
use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);

my @running;

sub free_port
{
	my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0)
	  or die "no free port: $!";
	my $port = $s->sockport;
	close $s;
	return $port;
}

sub new
{
	my ($class, %args) = @_;
	my $self = bless { port => $args{port} // free_port(), password => $args{password} }, $class;
	$self->start;
	return $self;
}

sub port { return $_[0]->{port} }

sub start
{
	my ($self) = @_;
	my @cmd = ('redis-server', '--port', $self->{port}, '--bind', '127.0.0.1',
		'--save', '', '--appendonly', 'no', '--daemonize', 'no',
		'--logfile', "$PostgreSQL::Test::Utils::tmp_check/redis_$self->{port}.log");
	push @cmd, '--requirepass', $self->{password} if $self->{password};
	my $pid = fork;
	die "fork: $!" unless defined $pid;
	if ($pid == 0) { exec @cmd or exit 127; }
	$self->{pid} = $pid;
	push @running, $pid;
	for (1 .. 100)
	{
		return if ($self->cli('PING') // '') =~ /PONG|NOAUTH/;
		usleep(50_000);
	}
	die "redis-server on port $self->{port} did not start";
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

# Run redis-cli with @args; returns its output without the trailing newline.
sub cli
{
	my ($self, @args) = @_;
	my @cmd = ('redis-cli', '-p', $self->{port});
	push @cmd, '-a', $self->{password}, '--no-auth-warning' if $self->{password};
	open(my $fh, '-|', @cmd, @args) or die "redis-cli: $!";
	local $/;
	my $out = <$fh>;
	close $fh;
	$out //= '';
	$out =~ s/\s+\z//;
	return $out;
}

END { kill 'TERM', $_ for @running; }

1;
