# A dict's name that comes to mean another relation: the client follows it.
#
# Blue/green deployment: `ALTER SCHEMA live RENAME TO old_live; ALTER SCHEMA
# staging RENAME TO live`.  A `ddict watch live.settings` started before the
# swap must end up holding exactly the new table's rows (a full reload: the
# old-only keys deleted, the new ones set) and follow the new table's later
# changes, never the old table's.  Its output is replayed into a hash and
# compared with the table.  Also: libddict against a database whose extension
# is still at 1.0 (no relation column) works as before, and keeps working
# across ALTER EXTENSION ddict UPDATE.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my ($dir) = grep { -x "$_/ddict" } split /:/, $ENV{PATH};
BAIL_OUT('the ddict tool is not installed (make install)') unless $dir;
my $tool = "$dir/ddict";

my $node = PostgreSQL::Test::Cluster->new('swap');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ddict'");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ddict;
	CREATE SCHEMA live;
	CREATE SCHEMA staging;
	SELECT ddict_create('live.settings');
	SELECT ddict_create('staging.settings');
	INSERT INTO live.settings VALUES ('color', 'blue'), ('old_only', 'x'), ('same', 'old');
	INSERT INTO staging.settings VALUES ('color', 'green'), ('new_only', 'y'), ('same', 'old');
});

# Start a watcher, wait until its output matches $re; returns the handle and
# a reference to its output.
sub watch
{
	my ($connstr, $dict, $re) = @_;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start([ $tool, '-d', $connstr, 'watch', '-i', '50', $dict ],
		\$in, \$out, \$err, IPC::Run::timeout(600));
	wait_for($h, \$out, $re);
	return ($h, \$out);
}

# Poll (pump_nb): a blocking pump would wait for output that may never come.
sub wait_for
{
	my ($h, $out, $re) = @_;
	my $deadline = time + 20;
	while ($$out !~ $re && time < $deadline)
	{
		$h->pump_nb;
		select(undef, undef, undef, 0.05);
	}
}

sub arrives
{
	my ($h, $out, $re, $name) = @_;
	wait_for($h, $out, $re);
	like($$out, $re, $name);
}

# What the watcher holds: its output replayed ("VERSION\tset\tK\tV", "VERSION\tdel\tK").
sub held
{
	my ($out) = @_;
	my %h;
	for my $line (split /\n/, $out)
	{
		my (undef, $op, $k, $v) = split /\t/, $line, 4;
		next unless defined $k;
		if ($op eq 'set') { $h{$k} = $v } elsif ($op eq 'del') { delete $h{$k} }
	}
	return join(',', map { "$_=$h{$_}" } sort keys %h);
}

sub table_rows
{
	my ($node, $db, $table) = @_;
	return $node->safe_psql($db,
		"SELECT string_agg(key || '=' || value, ',' ORDER BY key COLLATE \"C\") FROM $table");
}

my ($w, $out) = watch($node->connstr('postgres'), 'live.settings', qr/\tset\tsame\told\n/);
like($$out, qr/\tset\told_only\tx\n/, 'the watcher loaded live.settings');

$node->safe_psql('postgres', q{
	ALTER SCHEMA live RENAME TO old_live;
	ALTER SCHEMA staging RENAME TO live;
});
arrives($w, $out, qr/\tdel\told_only\n/, 'after the swap the old table\'s keys are gone');
arrives($w, $out, qr/\tset\tnew_only\ty\n/, 'and the new table\'s keys are there');
is(held($$out), table_rows($node, 'postgres', 'live.settings'),
	'the watcher holds exactly the new table\'s rows');

# Later changes: the new table's, not the old one's.
$node->safe_psql('postgres', q{
	INSERT INTO old_live.settings VALUES ('late_old', 'z');
	UPDATE old_live.settings SET value = 'red' WHERE key = 'color';
});
$node->safe_psql('postgres', q{UPDATE live.settings SET value = 'teal' WHERE key = 'color'});
arrives($w, $out, qr/\tset\tcolor\tteal\n/, 'a change of the new table arrives');
$node->safe_psql('postgres', q{DELETE FROM live.settings WHERE key = 'same'});
arrives($w, $out, qr/\tdel\tsame\n/, 'a delete in the new table arrives');
unlike($$out, qr/late_old|\tcolor\tred/, 'the old table\'s changes never do');
is(held($$out), table_rows($node, 'postgres', 'live.settings'),
	'still exactly the new table\'s rows');
$w->kill_kill;

# A server whose extension is still at 1.0: the client falls back to the 1.0
# call (no relation check) and works; ALTER EXTENSION UPDATE under it is fine.
$node->safe_psql('postgres', 'CREATE DATABASE old10');
$node->safe_psql('old10', q{
	CREATE EXTENSION ddict VERSION '1.0';
	SELECT ddict_create('conf');
	INSERT INTO conf VALUES ('a', '1');
});
is(`$tool -d '@{[ $node->connstr('old10') ]}' get conf a`, "1\n", 'ddict get against extension 1.0');
($w, $out) = watch($node->connstr('old10'), 'conf', qr/\tset\ta\t1\n/);
like($$out, qr/\tset\ta\t1\n/, 'watch loads from extension 1.0');
$node->safe_psql('old10', q{UPDATE conf SET value = '2' WHERE key = 'a'});
arrives($w, $out, qr/\tset\ta\t2\n/, 'and follows its changes');
$node->safe_psql('old10', q{ALTER EXTENSION ddict UPDATE});
$node->safe_psql('old10', q{UPDATE conf SET value = '3' WHERE key = 'a'});
arrives($w, $out, qr/\tset\ta\t3\n/, 'and keeps following them across ALTER EXTENSION UPDATE');
is(held($$out), table_rows($node, 'old10', 'conf'), 'holding the table\'s rows');
$w->kill_kill;

$node->stop;
done_testing();
