# Redis key names are unambiguous (src/common/redis_key.h): each of the
# database, schema and table names is escaped ('\' ':' '.' get a backslash),
# so dict "pub:changes" no longer has dict pub's stream as its version key,
# and a."b.c" and "a.b".c no longer share a key.  Names without those
# characters keep their keys.  And a stream key another type holds
# (WRONGTYPE) stalls only its own dict's stream, not the database's others.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RedisServer;

my $redis = RedisServer->new;
my $rport = $redis->port;
my $node = PostgreSQL::Test::Cluster->new('keys');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ddict'
ddict.redis_url = 'redis://127.0.0.1:$rport'
ddict.redis_timeout = '500ms'
ddict.redis_max_backoff = '200ms'
});
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub wait_for
{
	my ($cond, $secs) = @_;
	my $until = time + ($secs // 20);
	while (time < $until) { return 1 if $cond->(); usleep(50_000); }
	return 0;
}

sql(q{CREATE EXTENSION ddict;
	CREATE SCHEMA a; CREATE SCHEMA "a.b";
	SELECT ddict_create('pub'); SELECT ddict_create('"pub:changes"');
	SELECT ddict_create('a."b.c"'); SELECT ddict_create('"a.b".c');
	SELECT ddict_create('other'); SELECT ddict_create('"back\\slash"');
	SELECT ddict_publish_changes('pub'); SELECT ddict_publish_changes('other')});

is(sql(q{SELECT ddict_redis_escape('a:b.c\\d')}), 'a\\:b\\.c\\\\d', 'ddict_redis_escape()');
my %keys = (
	'pub'            => 'ddict:postgres:public.pub',
	'"pub:changes"'  => 'ddict:postgres:public.pub\\:changes',
	'a."b.c"'        => 'ddict:postgres:a.b\\.c',
	'"a.b".c'        => 'ddict:postgres:a\\.b.c',
	'"back\\slash"'  => 'ddict:postgres:public.back\\\\slash',
);
for my $d (sort keys %keys)
{
	sql(qq{SELECT ddict_set('$d', 'k', 'v')});
	my $v = sql(qq{SELECT ddict_last_updated('$d')});
	ok(wait_for(sub { $redis->cli('GET', $keys{$d}) eq $v }), "$d: version $v under $keys{$d}");
}
is(sql(q{SELECT string_agg(stream_key, ' ' ORDER BY stream_key) FROM ddict_published}),
	'ddict:postgres:public.other:changes ddict:postgres:public.pub:changes',
	'ddict_published: stream keys');
is($redis->cli('TYPE', 'ddict:postgres:public.pub:changes'), 'stream',
	'dict pub\'s stream is a stream (dict "pub:changes" has its own key)');

# --- a WRONGTYPE on one stream leaves the others going
my $okey = 'ddict:postgres:public.other:changes';
my $pkey = 'ddict:postgres:public.pub:changes';
sql(q{SELECT ddict_set('other', 'k', 'v2')});
ok(wait_for(sub { $redis->cli('XLEN', $okey) >= 2 }), 'other: its stream follows');
$redis->cli('DEL', $okey);
$redis->cli('SET', $okey, 'not a stream');
sql(q{SELECT ddict_set('other', 'k', 'v3')});
my $len0 = $redis->cli('XLEN', $pkey);
for my $i (1 .. 3)
{
	sql(qq{SELECT ddict_set('pub', 'k', 'w$i')});
	sql(qq{SELECT ddict_set('other', 'k', 'w$i')});
}
ok(wait_for(sub { $redis->cli('XLEN', $pkey) >= $len0 + 3 }, 10),
	'pub: its stream goes on while other\'s key is WRONGTYPE');
like(sql(q{SELECT last_error FROM ddict_change_streams()}), qr/WRONGTYPE/,
	'the WRONGTYPE is reported in ddict_change_streams()');
$redis->cli('DEL', $okey);
sql(q{SELECT ddict_set('other', 'k', 'w4')});
ok(wait_for(sub { $redis->cli('XLEN', $okey) >= 1 }), 'other: its stream resumes once the key is free');

$node->stop;
$redis->stop;
done_testing();
