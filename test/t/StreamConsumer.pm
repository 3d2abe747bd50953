# StreamConsumer — a cache that follows a dict's published changes (the
# Redis Stream the change streamer appends to), for ddict's TAP tests.
#
# It implements the client rule of README "Published changes (Redis
# Streams)" in a few lines, so that the tests can show that a cache fed from
# the stream equals a fresh SELECT: an entry applies when it names the
# cache's relation and epoch, its "from" is at or below the cache's cursor
# and its "cursor" at or above the cache's floor; anything else (a gap, a
# trimmed stream, a new epoch, an 'f' marker) sends it to PostgreSQL
# (ddict_changes() from its state), after which it goes on from the entry
# it was reading.  It counts both, so tests can also show how rarely it
# needs PostgreSQL.  Redis is spoken in RESP over a plain socket (binary-safe
# keys and values), PostgreSQL through the node's psql.
package StreamConsumer;
use strict;
use warnings;
use IO::Socket::INET;

# ---- a minimal RESP client ----

sub redis_connect
{
	my ($port) = @_;
	return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5);
}

sub _line
{
	my ($s) = @_;
	my $l = <$s>;
	die "redis: connection closed\n" unless defined $l;
	$l =~ s/\r\n\z//;
	return $l;
}

sub _reply
{
	my ($s) = @_;
	my $l = _line($s);
	my ($t, $rest) = (substr($l, 0, 1), substr($l, 1));
	return $rest if $t eq '+' || $t eq ':';
	die "redis: $rest\n" if $t eq '-';
	if ($t eq '$')
	{
		return undef if $rest < 0;
		my $buf = '';
		while (length($buf) < $rest + 2)
		{
			my $n = read($s, $buf, $rest + 2 - length($buf), length($buf));
			die "redis: short read\n" unless $n;
		}
		return substr($buf, 0, $rest);
	}
	if ($t eq '*')
	{
		return undef if $rest < 0;
		return [ map { _reply($s) } 1 .. $rest ];
	}
	die "redis: bad reply '$l'\n";
}

# Send one command (a list of byte strings), return its reply.
sub command
{
	my ($s, @args) = @_;
	my $cmd = '*' . scalar(@args) . "\r\n";
	$cmd .= '$' . length($_) . "\r\n$_\r\n" for @args;
	print $s $cmd;
	return _reply($s);
}

# An entry's fields as [ header hash, [ [field, value], ... ] ].
sub parse_entry
{
	my ($fields) = @_;
	my (%h, @changes);
	my @f = @$fields;
	for my $i (0 .. 7)
	{
		my ($k, $v) = ($f[2 * $i], $f[2 * $i + 1]);
		$h{$k} = $v;
	}
	for (my $i = 16; $i < @f; $i += 2) { push @changes, [ $f[$i], $f[$i + 1] ]; }
	return (\%h, \@changes);
}

# ---- the consumer ----

sub new
{
	my ($class, %a) = @_;
	my $self = bless { %a, data => {}, last_id => '0-0', pg => 0, applied => 0, went_back => 0 }, $class;
	$self->record_tip;
	$self->resync;
	return $self;
}

# The stream's last id, recorded before a load: entries after it are newer.
sub record_tip
{
	my ($self) = @_;
	my $r = redis_connect($self->{port});
	my $tip = $r ? command($r, 'XREVRANGE', $self->{key}, '+', '-', 'COUNT', '1') : [];
	$self->{last_id} = $tip->[0][0] if $tip && @$tip;
}

# ddict_changes() from the cache's state (in full the first time).
sub resync
{
	my ($self) = @_;
	my $since = defined $self->{version}
	  ? "$self->{version}, $self->{epoch}, $self->{cursor}, $self->{dict}"
	  : 'NULL, NULL, NULL, NULL';
	my $out = $self->{node}->safe_psql($self->{db},
		"SELECT kind, encode(convert_to(key, 'UTF8'), 'hex'), encode(value, 'hex'), version, epoch, \"cursor\", dict::oid, \"until\" "
		  . "FROM ddict_changes('$self->{table}', $since)");
	$self->{pg}++;
	for my $row (split /\n/, $out)
	{
		my ($kind, $k, $v, $ver, $ep, $cur, $dict, $until) = split /\|/, $row, -1;
		if ($kind =~ /^[udf]$/)
		{
			$self->{data} = {} if $kind eq 'f';
			$self->{version} = $ver;
			$self->{epoch} = $ep;
			$self->{cursor} = $cur;
			$self->{dict} = $dict;
			$self->{floor} = $until if $kind ne 'u';
			$self->{floor} //= $cur;
		}
		elsif ($kind eq 's') { $self->{data}{ pack('H*', $k) } = pack('H*', $v); }
		elsif ($kind eq 'x') { delete $self->{data}{ pack('H*', $k) }; }
	}
}

# Does entry header $h continue the cache's state?
sub contiguous
{
	my ($self, $h) = @_;
	return $h->{kind} eq 'd' && $h->{dict} == $self->{dict} && $h->{epoch} == $self->{epoch}
	  && $h->{from} <= $self->{cursor} && $h->{cursor} >= $self->{floor};
}

# Read and apply every entry after the last one read; returns how many.
# A stream whose first entry is after the last one read (trimmed) is a gap
# like any other: "from" says so.
sub poll
{
	my ($self) = @_;
	my $r = redis_connect($self->{port}) or return 0;
	my $entries = command($r, 'XRANGE', $self->{key}, '(' . $self->{last_id}, '+');
	close $r;
	for my $e (@$entries)
	{
		my ($id, $fields) = @$e;
		my ($h, $changes) = parse_entry($fields);
		if ($self->contiguous($h))
		{
			for my $c (@$changes)
			{
				my ($kind, $key) = (substr($c->[0], 0, 1), substr($c->[0], 1));
				if ($kind eq 's') { $self->{data}{$key} = $c->[1]; }
				else { delete $self->{data}{$key}; }
			}
			# a cache must never step back to an older version
			$self->{went_back}++ if $h->{version} < $self->{version};
			$self->{version} = $h->{version};
			$self->{cursor} = $self->{floor} = $h->{cursor};
			$self->{applied}++;
		}
		elsif ($h->{dict} != $self->{dict} || $h->{epoch} != $self->{epoch}
			|| $h->{kind} eq 'f' || $h->{from} > $self->{cursor} || $h->{cursor} < $self->{floor})
		{
			# a marker, a gap, or an entry older than what PostgreSQL gave us
			$self->resync if $h->{kind} eq 'f' || $h->{from} > $self->{cursor}
			  || $h->{dict} != $self->{dict} || $h->{epoch} != $self->{epoch};
		}
		$self->{last_id} = $id;
	}
	return scalar @$entries;
}

# The cache's contents as "key=value" lines, sorted (hex, so any byte goes).
sub dump
{
	my ($self) = @_;
	return join("\n", map { unpack('H*', $_) . '=' . unpack('H*', $self->{data}{$_}) }
		  sort keys %{ $self->{data} });
}

1;
