# 005_dump_restore.pl — dicts survive pg_dump -Fc / pg_restore into a fresh
# database.
#
# The registry (ddict_registry) is an extension configuration table, so
# pg_dump dumps its rows; the dict tables and their triggers are ordinary
# objects.  After createdb + pg_restore on the same node:
#
#   * ddict_dicts lists both dicts with their key/value columns and value type
#     (a text dict from ddict_create, a jsonb dict adopted with ddict_attach
#     with custom column names, whose key has a UNIQUE constraint, not a PK);
#   * ddict_get / ddict_items return the restored data;
#   * the triggers exist once each and are ENABLE ALWAYS (tgenabled = 'A');
#   * writes in the restored database move ddict_last_updated there (plain
#     DML, ddict_set, TRUNCATE, under session_replication_role = replica), and
#     do not move the source database's dicts;
#   * ddict_detach works on the restored dict (its registration is complete).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ddict'\nmax_prepared_transactions = 5");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');

sub src { return $node->safe_psql('src', $_[0]); }
sub dst { return $node->safe_psql('dst', $_[0]); }

src(q{CREATE EXTENSION ddict;
      SELECT ddict_create('settings');
      SELECT ddict_set('settings', 'greeting', 'hello');
      SELECT ddict_set('settings', 'quote''s', 'it''s ok');
      CREATE SCHEMA app;
      CREATE TABLE app.features (
        id serial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        config jsonb NOT NULL,
        note text);
      SELECT ddict_attach('app.features', 'name', 'config');
      INSERT INTO app.features (name, config, note) VALUES
        ('search', '{"enabled": true, "limit": 10}', 'n1'),
        ('beta', '[1, 2, 3]', NULL);});

my $src_settings_v = src(q{SELECT ddict_last_updated('settings')});

my $dump = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src') ],
	'pg_dump -Fc of a database with dicts');
$node->command_ok([ 'createdb', '-h', $node->host, '-p', $node->port, 'dst' ], 'createdb dst');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), $dump ],
	'pg_restore into the fresh database');

my $dicts = q{SELECT string_agg(format('%s(%s,%s):%s', dict, key_column, value_column, value_type), ' '
                                ORDER BY dict::text)
              FROM ddict_dicts};
is(dst($dicts), src($dicts), 'ddict_dicts in the restored database matches the source');
is(dst($dicts), 'app.features(name,config):jsonb settings(key,value):text',
	'ddict_dicts lists both dicts with their columns and value types');

is(dst(q{SELECT ddict_get('settings', 'greeting')}), 'hello', 'ddict_get on the restored text dict');
is(dst(q{SELECT ddict_get('settings', 'quote''s')}), "it's ok", 'quoted key and value restored');
is(dst(q{SELECT ddict_get('app.features', 'search')}), '{"limit": 10, "enabled": true}',
	'ddict_get on the restored jsonb dict');
is(dst(q{SELECT string_agg(key || '=' || value, ' ' ORDER BY key) FROM ddict_items('app.features')}),
	'beta=[1, 2, 3] search={"limit": 10, "enabled": true}', 'ddict_items on the restored jsonb dict');
is(dst(q{SELECT ddict_len('settings')}), '2', 'ddict_len on the restored text dict');

# Triggers: exactly the two ddict triggers per dict, ENABLE ALWAYS.
my $trig = q{SELECT string_agg(format('%s.%s=%s', c.relname, t.tgname, t.tgenabled), ' '
                               ORDER BY c.relname, t.tgname)
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE NOT t.tgisinternal AND t.tgfoid = 'ddict_trigger'::regproc};
is(dst($trig),
	'features.ddict_change=A features.ddict_truncate=A settings.ddict_change=A settings.ddict_truncate=A',
	'restored triggers exist once each and are ENABLE ALWAYS');
is(dst(q{SELECT count(*) FROM pg_trigger t WHERE NOT tgisinternal}), '4', 'no duplicate triggers');

# The version is readable, and writes move it — every path.
my $v = dst(q{SELECT ddict_last_updated('settings')});
like($v, qr/^\d{16}$/, 'ddict_last_updated works in the restored database');

sub moves
{
	my ($name, $dict, $sql) = @_;
	my $before = dst("SELECT ddict_last_updated('$dict')");
	dst($sql);
	cmp_ok(dst("SELECT ddict_last_updated('$dict')"), '>', $before, "restored: $name moves the version");
}
moves('ddict_set', 'settings', q{SELECT ddict_set('settings', 'greeting', 'hi')});
is(dst(q{SELECT ddict_get('settings', 'greeting')}), 'hi', 'restored: write visible');
moves('plain INSERT', 'settings', q{INSERT INTO settings VALUES ('new', 'n')});
moves('UPDATE of the jsonb value column', 'app.features',
	q{UPDATE app.features SET config = '{"enabled": false}' WHERE name = 'search'});
moves('ddict_set on the jsonb dict', 'app.features', q{SELECT ddict_set('app.features', 'gamma', '{}')});
moves('INSERT under session_replication_role = replica', 'app.features',
	q{SET session_replication_role = replica;
	  INSERT INTO app.features (name, config) VALUES ('replica', 'true')});
moves('TRUNCATE', 'settings', q{TRUNCATE settings});

# Nothing of that moved the source database's dict.
is(src(q{SELECT ddict_last_updated('settings')}), $src_settings_v,
	'writes in the restored database do not move the source database');

# A rolled-back write does not move the restored dict.
$v = dst(q{SELECT ddict_last_updated('app.features')});
dst(q{BEGIN; SELECT ddict_set('app.features', 'rb', '1'); ROLLBACK;});
is(dst(q{SELECT ddict_last_updated('app.features')}), $v, 'restored: rollback does not move the version');

# The restored registration is complete: detach works and removes the triggers.
dst(q{SELECT ddict_detach('app.features')});
is(dst(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app.features'::regclass AND NOT tgisinternal}),
	'0', 'detach of a restored dict removes its triggers');
is(dst(q{SELECT string_agg(dict::text, ' ') FROM ddict_dicts}), 'settings', 'and unregisters it');

$node->stop;
done_testing();
