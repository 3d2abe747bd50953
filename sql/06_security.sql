-- Privileges are the table's own; row-level security holds.
DROP ROLE IF EXISTS ddict_reader;
DROP ROLE IF EXISTS ddict_writer;
CREATE ROLE ddict_reader LOGIN;
CREATE ROLE ddict_writer LOGIN;
GRANT SELECT ON settings TO ddict_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON settings TO ddict_writer;

SET ROLE ddict_reader;
SELECT ddict_get('settings', 'color');
SELECT ddict_set('settings', 'color', 'green');
SELECT ddict_delete('settings', 'color');
SELECT ddict_setdefault('settings', 'newkey', 'v');
-- only the owner attaches, detaches, or drops
SELECT ddict_detach('settings');
RESET ROLE;

SET ROLE ddict_writer;
SELECT ddict_set('settings', 'color', 'green');
SELECT ddict_get('settings', 'color');
SELECT ddict_attach('settings');
RESET ROLE;

-- a role that owns a table can make it a dict without rights on the registry
GRANT CREATE ON SCHEMA public TO ddict_writer;
SET ROLE ddict_writer;
SELECT ddict_create('writer_owned');
SELECT ddict_set('writer_owned', 'a', '1');
SELECT ddict_detach('writer_owned');
SELECT ddict_attach('writer_owned');
DROP TABLE writer_owned;
-- the registry itself is read-only to everyone but the extension
INSERT INTO ddict_registry VALUES ('settings', 'key', 'value');
DELETE FROM ddict_registry;
SELECT count(*) > 0 AS registry_readable FROM ddict_registry;
-- internal functions are not callable
SELECT has_function_privilege('_ddict_on_sql_drop()', 'EXECUTE') AS can_run_internal;
RESET ROLE;

-- row-level security: each tenant sees and writes only its own keys
SELECT ddict_create('tenant_conf');
ALTER TABLE tenant_conf ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_keys ON tenant_conf
    USING (key LIKE current_user || ':%') WITH CHECK (key LIKE current_user || ':%');
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_conf TO ddict_writer, ddict_reader;
SELECT ddict_set('tenant_conf', 'ddict_reader:theme', 'dark');
SELECT ddict_set('tenant_conf', 'ddict_writer:theme', 'light');
SET ROLE ddict_writer;
SELECT ddict_get('tenant_conf', 'ddict_writer:theme');
SELECT ddict_get('tenant_conf', 'ddict_reader:theme') IS NULL AS hidden;
SELECT * FROM ddict_items('tenant_conf');
SELECT ddict_len('tenant_conf');
SELECT ddict_set('tenant_conf', 'ddict_reader:theme', 'hacked');
SELECT ddict_delete('tenant_conf', 'ddict_reader:theme');
RESET ROLE;
SELECT ddict_get('tenant_conf', 'ddict_reader:theme');

DROP TABLE tenant_conf;
REVOKE CREATE ON SCHEMA public FROM ddict_writer;
DROP OWNED BY ddict_reader, ddict_writer;
DROP ROLE ddict_reader, ddict_writer;
