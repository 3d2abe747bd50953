# 009_wal_minimal.pl — ddict's WAL records (src/wal.c) exist for hot
# standbys and archives, so they are written from wal_level replica up and
# not at all at wal_level minimal; every committed write bumps either way.
#
# For each level: a dict written through every write path (ddict_set, plain
# INSERT / UPDATE / DELETE, an upsert, COPY, TRUNCATE, a subtransaction that
# commits), each commit moving the version, then detached (its FORGET
# record).  pg_waldump over exactly that stretch of WAL counts ddict's
# records (resource manager 152, shown as "custom152"): none at minimal,
# INTENT + BUMP per writing transaction and a FORGET at replica.  At minimal,
# a crash restart (immediate stop) then starts a new epoch and writes bump as
# before.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# writes: [label, SQL]; each is one transaction that changes the dict
my @writes = (
	[ 'ddict_set', q{SELECT ddict_set('w', 'a', '1')} ],
	[ 'INSERT', q{INSERT INTO w VALUES ('b', '2')} ],
	[ 'UPDATE', q{UPDATE w SET value = '3' WHERE key = 'b'} ],
	[ 'upsert', q{INSERT INTO w VALUES ('b', '4') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value} ],
	[ 'DELETE', q{DELETE FROM w WHERE key = 'a'} ],
	[ 'COPY', q{COPY w FROM PROGRAM 'printf "c\\t5\\n"'} ],
	[ 'subtransaction', q{BEGIN; SAVEPOINT s; INSERT INTO w VALUES ('d', '6'); RELEASE s; COMMIT} ],
	[ 'TRUNCATE', q{TRUNCATE w} ]);

sub ddict_records
{
	my ($node, $from, $to) = @_;
	my ($stdout, $stderr);
	IPC::Run::run([ 'pg_waldump', '-p', $node->data_dir . '/pg_wal', '-s', $from, '-e', $to ],
		'>', \$stdout, '2>', \$stderr);
	my %n = (all => 0);
	for (split /\n/, $stdout)
	{
		next unless /rmgr: custom152\b/;
		$n{all}++;
		$n{$1}++ if /desc: UNKNOWN \((\w+)\)/;	# info in hex: 0 BUMP, 10 FORGET, 20 INTENT
	}
	return \%n;
}

for my $level ('minimal', 'replica')
{
	my $node = PostgreSQL::Test::Cluster->new("wal_$level");
	$node->init;
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ddict'\nwal_level = $level\n"
		  . ($level eq 'minimal' ? "max_wal_senders = 0\n" : ''));
	$node->start;
	is($node->safe_psql('postgres', 'SHOW wal_level'), $level, "$level: server runs at wal_level $level");
	$node->safe_psql('postgres', q{CREATE EXTENSION ddict; SELECT ddict_create('w');
		CREATE TABLE sink (x int)});

	my $from = $node->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
	my $v = $node->safe_psql('postgres', q{SELECT ddict_last_updated('w')});
	for my $w (@writes)
	{
		$node->safe_psql('postgres', $w->[1]);
		my $nv = $node->safe_psql('postgres', q{SELECT ddict_last_updated('w')});
		cmp_ok($nv, '>', $v, "$level: a committed $w->[0] moves the version");
		$v = $nv;
	}
	$node->safe_psql('postgres', q{SELECT ddict_detach('w')});
	# a record after ours, so that -e covers them all
	$node->safe_psql('postgres', q{INSERT INTO sink VALUES (1)});
	my $to = $node->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
	$node->safe_psql('postgres', 'CHECKPOINT');

	my $n = ddict_records($node, $from, $to);
	if ($level eq 'minimal')
	{
		is($n->{all}, 0, 'minimal: no ddict WAL records (no standby or archive reads them)');
	}
	else
	{
		my $nw = scalar @writes;
		is($n->{20} // 0, $nw, "replica: one INTENT record per writing transaction ($nw)");
		is($n->{0} // 0, $nw, "replica: one BUMP record per writing transaction ($nw)");
		is($n->{10} // 0, 1, 'replica: a FORGET record for the detach');
	}

	if ($level eq 'minimal')
	{
		$node->safe_psql('postgres', q{SELECT ddict_create('after')});
		my $epoch = $node->safe_psql('postgres', 'SELECT ddict_epoch()');
		my $before = $node->safe_psql('postgres', q{SELECT ddict_last_updated('after')});
		$node->stop('immediate');
		$node->start;
		cmp_ok($node->safe_psql('postgres', 'SELECT ddict_epoch()'), '!=', $epoch,
			'minimal: a crash restart starts a new epoch');
		my $after = $node->safe_psql('postgres', q{SELECT ddict_last_updated('after')});
		$node->safe_psql('postgres', q{SELECT ddict_set('after', 'k', 'v')});
		cmp_ok($node->safe_psql('postgres', q{SELECT ddict_last_updated('after')}), '>', $after,
			'minimal: after the crash restart a write still moves the version');
		cmp_ok($after, '>=', $before, 'minimal: versions do not go back across the crash restart');
	}
	$node->stop;
}

done_testing();
