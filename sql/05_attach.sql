-- Adopting existing tables (durabledict's ModelDict(key_col, value_col)).
CREATE TABLE features (
    name    varchar(64) UNIQUE NOT NULL,
    enabled jsonb NOT NULL,
    owner   text
);
INSERT INTO features VALUES ('dark_mode', 'true', 'ui'), ('beta', 'false', 'core');
SELECT ddict_attach('features', 'name', 'enabled');
SELECT ddict_get('features', 'dark_mode');
SELECT * FROM ddict_items('features');
SELECT ddict_set('features', 'new_flag', '{"rollout": 0.5}');
SELECT name, enabled, owner FROM features ORDER BY name;

-- triggers are installed ENABLE ALWAYS (they fire under replication roles too)
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'features'::regclass ORDER BY 1;

-- attaching twice, or a table that cannot be a dict, is a clear error
SELECT ddict_attach('features', 'name', 'enabled');
CREATE TABLE no_unique (key text NOT NULL, value text);
SELECT ddict_attach('no_unique');
CREATE TABLE partial_unique (key text NOT NULL, value text);
CREATE UNIQUE INDEX ON partial_unique (key) WHERE value IS NOT NULL;
SELECT ddict_attach('partial_unique');
CREATE TABLE two_col_unique (key text NOT NULL, value text, other int, UNIQUE (key, other));
SELECT ddict_attach('two_col_unique');
CREATE TABLE int_key (key int PRIMARY KEY, value text);
SELECT ddict_attach('int_key');
SELECT ddict_attach('features', 'nope', 'enabled');
SELECT ddict_attach('features', 'name', 'name');
SELECT ddict_attach('features', 'ctid', 'enabled');
CREATE VIEW a_view AS SELECT 'k'::text AS key, 'v'::text AS value;
SELECT ddict_attach('a_view');
SELECT count(*) AS registered FROM ddict_registry
 WHERE dict IN ('no_unique'::regclass, 'partial_unique'::regclass,
                'two_col_unique'::regclass, 'int_key'::regclass);

-- detach keeps the data and removes triggers and registration
SELECT ddict_detach('features');
SELECT count(*) FROM features;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'features'::regclass;
SELECT ddict_get('features', 'beta');
SELECT ddict_last_updated('features');
SELECT ddict_detach('features');
-- and it can be attached again
SELECT ddict_attach('features', 'name', 'enabled');
SELECT ddict_get('features', 'beta');

-- DROP TABLE unregisters the dict (event trigger), also through DROP SCHEMA
SELECT ddict_create('doomed');
DROP TABLE doomed;
SELECT count(*) FROM ddict_registry WHERE dict::oid NOT IN (SELECT oid FROM pg_class);
CREATE SCHEMA tmp_schema;
SELECT ddict_create('tmp_schema.inner_dict');
DROP SCHEMA tmp_schema CASCADE;
SELECT count(*) FROM ddict_registry WHERE dict::oid NOT IN (SELECT oid FROM pg_class);
-- a rolled-back DROP keeps the dict
SELECT ddict_create('survivor');
BEGIN;
DROP TABLE survivor;
ROLLBACK;
SELECT ddict_set('survivor', 'still', 'here');
SELECT ddict_get('survivor', 'still');

-- renaming the table keeps the dict (it is tracked by OID)
ALTER TABLE survivor RENAME TO renamed_survivor;
SELECT ddict_get('renamed_survivor', 'still');
SELECT dict FROM ddict_dicts WHERE dict = 'renamed_survivor'::regclass;
