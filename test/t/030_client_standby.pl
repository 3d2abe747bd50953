# A libddict client pointed at a streaming standby reloads after replay.
#
# The `ddict` tool (built on libddict, installed by `make install`) keeps a
# cache of the standby's dict with `ddict watch` and prints every change it
# applies; commits on the primary must arrive there once replayed, with the
# values the standby then serves, deletes and TRUNCATE included.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my ($dir) = grep { -x "$_/ddict" } split /:/, $ENV{PATH};
BAIL_OUT('the ddict tool is not installed (make install)') unless $dir;
my $tool = "$dir/ddict";

my $primary = PostgreSQL::Test::Cluster->new('cprimary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'ddict'");
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION ddict;
	SELECT ddict_create('settings');
	INSERT INTO settings VALUES ('color', 'blue'), ('size', 'large');
});
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('cstandby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

# one-shot reads from the standby
is(`$tool -d '@{[ $standby->connstr('postgres') ]}' get settings color`, "blue\n",
	'ddict get reads the standby');

my ($in, $out, $err) = ('', '', '');
my $watch = IPC::Run::start([ $tool, '-d', $standby->connstr('postgres'), 'watch', '-i', '50', 'settings' ],
	\$in, \$out, \$err, IPC::Run::timeout(60));
$watch->pump until $out =~ /\tset\tsize\tlarge\n/;
pass('watch on the standby loaded the dict');

# Each primary commit arrives in the standby client's cache after replay.
sub arrives
{
	my ($re, $name) = @_;
	my $t = IPC::Run::timer(30);
	$t->start;
	$watch->pump until $out =~ $re || $t->is_expired;
	like($out, $re, $name);
}

$primary->safe_psql('postgres', q{UPDATE settings SET value = 'green' WHERE key = 'color'});
arrives(qr/^\d+\tset\tcolor\tgreen$/m, 'an update on the primary reaches the standby client');
is($standby->safe_psql('postgres', q{SELECT ddict_get('settings', 'color')}), 'green',
	'and the standby serves the same value');

$primary->safe_psql('postgres', q{DELETE FROM settings WHERE key = 'size'});
arrives(qr/^\d+\tdel\tsize$/m, 'a delete reaches the standby client');

$primary->safe_psql('postgres', q{TRUNCATE settings; INSERT INTO settings VALUES ('fresh', 'start')});
arrives(qr/^\d+\tset\tfresh\tstart$/m, 'TRUNCATE and a new key reach the standby client');
arrives(qr/^\d+\tdel\tcolor$/m, 'the truncated key is gone from it');

# The version the client reports is the standby's.
my ($version) = $out =~ /^(\d+)\tset\tfresh\tstart$/m;
is($version, $standby->safe_psql('postgres', q{SELECT ddict_last_updated('settings')}),
	'the client holds the standby\'s current version');

$watch->kill_kill;
$standby->stop;
$primary->stop;
done_testing();
