-- 13_ddl: DDL guards (issue 8, items 3, 4, 6, 7 and the smaller items)
SET client_min_messages = warning;
CREATE FUNCTION v(r regclass) RETURNS bigint LANGUAGE sql AS 'SELECT ddict_last_updated(r)';
CREATE TABLE moved (dict text PRIMARY KEY, before bigint);
CREATE PROCEDURE mark(r regclass) LANGUAGE sql AS
  $$INSERT INTO moved VALUES (r::oid::text, ddict_last_updated(r)) ON CONFLICT (dict) DO UPDATE SET before = excluded.before$$;
CREATE FUNCTION has_moved(r regclass) RETURNS boolean LANGUAGE sql AS
  $$SELECT ddict_last_updated(r) > before FROM moved WHERE dict = r::oid::text$$;

-- 3. ALTER TABLE through an inheritance parent rewrites a dict child
CREATE TABLE base (key text NOT NULL, value text NOT NULL);
CREATE TABLE kid (PRIMARY KEY (key)) INHERITS (base);
SELECT ddict_attach('kid');
INSERT INTO kid VALUES ('a', 'x');
CALL mark('kid');
ALTER TABLE base ALTER COLUMN value TYPE text USING upper(value);
SELECT has_moved('kid') AS moved_by_parent_rewrite, ddict_get('kid', 'a');
ALTER TABLE base RENAME COLUMN value TO v2;
ALTER TABLE base RENAME COLUMN key TO k2;
-- ... and through a partitioned table
CREATE TABLE pbase (key text NOT NULL, value text NOT NULL) PARTITION BY LIST (key);
CREATE TABLE pkid PARTITION OF pbase (PRIMARY KEY (key)) FOR VALUES IN ('a', 'b');
SELECT ddict_attach('pkid');
INSERT INTO pbase VALUES ('a', 'x');
CALL mark('pkid');
ALTER TABLE pbase ALTER COLUMN value TYPE text USING value || '!';
SELECT has_moved('pkid') AS moved_by_partitioned_rewrite, ddict_get('pkid', 'a');
ALTER TABLE pbase RENAME COLUMN value TO v2;
ALTER TABLE pbase ALTER COLUMN value DROP NOT NULL;

-- 4. ddict's triggers are known by their function, not their name
CREATE TABLE mdict (key text PRIMARY KEY, value text NOT NULL);
SELECT ddict_attach('mdict');
ALTER TRIGGER ddict_change ON mdict RENAME TO x;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'mdict'::regclass ORDER BY 1;
DROP TRIGGER ddict_change ON mdict;
-- DDL on other tables is never refused because of a dict
CREATE TABLE fkp (id int PRIMARY KEY);
CREATE TABLE fkc (id int REFERENCES fkp);
DROP TABLE fkc;
CREATE TABLE other (a int);
CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
CREATE TRIGGER t AFTER INSERT ON other FOR EACH ROW EXECUTE FUNCTION noop();
DROP TRIGGER t ON other;
-- detach removes the triggers whatever they are called
SELECT ddict_detach('mdict');
SELECT count(*) AS ddict_triggers_left FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
 WHERE t.tgrelid = 'mdict'::regclass AND p.proname = 'ddict_trigger';

-- 6. a dict's value is NOT NULL
CREATE TABLE nv (key text PRIMARY KEY, value text);
SELECT ddict_attach('nv');
ALTER TABLE nv ALTER COLUMN value SET NOT NULL;
SELECT ddict_attach('nv');
ALTER TABLE nv ALTER COLUMN value DROP NOT NULL;
CREATE TABLE nk (key text NOT NULL UNIQUE, value text NOT NULL);
SELECT ddict_attach('nk');
ALTER TABLE nk ALTER COLUMN key DROP NOT NULL;

-- 7. DDL that changes the text of stored values moves the version
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN dmood AS mood;
SELECT ddict_create('moods', 'mood');
SELECT ddict_create('moodlists', 'dmood[]');
SELECT ddict_set('moods', 'k', 'happy'), ddict_set('moodlists', 'k', '{happy,sad}');
CALL mark('moods'); CALL mark('moodlists');
ALTER TYPE mood RENAME VALUE 'happy' TO 'joyful';
SELECT has_moved('moods') AS enum, has_moved('moodlists') AS domain_array,
       ddict_get('moods', 'k'), ddict_get('moodlists', 'k');
ALTER TYPE mood ADD VALUE 'meh';
CREATE TYPE comp AS (x int, y text);
SELECT ddict_create('comps', 'comp');
SELECT ddict_set('comps', 'k', '(1,a)');
CALL mark('comps');
ALTER TYPE comp ADD ATTRIBUTE z int;
SELECT has_moved('comps') AS composite, ddict_get('comps', 'k');
CREATE TABLE rowt (a int, b int);
CREATE TABLE rows_dict (key text PRIMARY KEY, value rowt NOT NULL);
SELECT ddict_attach('rows_dict');
INSERT INTO rows_dict VALUES ('k', '(1,2)');
CALL mark('rows_dict');
ALTER TABLE rowt ADD COLUMN c int;
SELECT has_moved('rows_dict') AS row_type, ddict_get('rows_dict', 'k');
-- values whose text names catalog objects are refused
SELECT ddict_create('classes', 'regclass');
CREATE TABLE regs (key text PRIMARY KEY, value regtype[] NOT NULL);
SELECT ddict_attach('regs');
ALTER TABLE comps ALTER COLUMN value TYPE regclass USING 'pg_class';
-- a plain ALTER TABLE of a non-dict moves nothing
CALL mark('comps');
ALTER TABLE other ADD COLUMN b int;
SELECT has_moved('comps') AS unrelated_moved;

-- a dict keeps a unique key
CREATE TABLE u (key text NOT NULL, value text NOT NULL, CONSTRAINT u_pkey PRIMARY KEY (key));
SELECT ddict_attach('u');
ALTER TABLE u DROP CONSTRAINT u_pkey;
CREATE UNIQUE INDEX u_key ON u (key);
ALTER TABLE u DROP CONSTRAINT u_pkey;
DROP INDEX u_key;
CREATE UNIQUE INDEX u_key2 ON u (key);
DROP INDEX u_key;
DROP INDEX u_key2;
-- an index of another table, or a non-unique one, drops as usual
CREATE INDEX u_val ON u (value);
DROP INDEX u_val;

-- value types keep their modifier
SELECT ddict_create('short', 'varchar(5)');
SELECT ddict_set('short', 'k', '123456789');
SELECT ddict_create('money2', 'numeric(4,2)');
SELECT ddict_set('money2', 'k', '3.14159');
SELECT ddict_get('money2', 'k');
SELECT ddict_create('regtyped', 'int4'::regtype);
SELECT value_type FROM ddict_dicts WHERE dict = 'short'::regclass;
SELECT ddict_create('bad', 'text; DROP TABLE u');
DROP INDEX u_key2, u_val;
CREATE UNIQUE INDEX u_key3 ON u (key);
DROP INDEX u_key2, u_key3;
SELECT count(*) AS unique_indexes_left FROM pg_index WHERE indrelid = 'u'::regclass AND indisunique;

-- PREPARE TRANSACTION names the dict it refuses, also a dropped one (a
-- prepared change of a dict is allowed: test/t/002_twophase.pl)
BEGIN;
DROP TABLE u;
PREPARE TRANSACTION 'ddl_x';

-- ALTER TABLE of a table that is not a dict does not read the registry
BEGIN;
ALTER TABLE other ADD COLUMN c int;
SELECT count(*) AS registry_locks FROM pg_locks
 WHERE locktype = 'relation' AND relation = 'ddict_registry'::regclass AND pid = pg_backend_pid();
COMMIT;
-- ... while ALTER TABLE of a dict still finds it (a rename is refused)
ALTER TABLE nv RENAME COLUMN value TO v;

-- A cascade may not take a dict's column, key index or triggers
CREATE TYPE m2 AS ENUM ('a');
CREATE TABLE f1 (key text PRIMARY KEY, value m2 NOT NULL);
SELECT ddict_attach('f1');
DROP TYPE m2 CASCADE;
SELECT count(*) AS value_column_kept FROM pg_attribute WHERE attrelid = 'f1'::regclass AND attname = 'value';
CREATE COLLATION c2 (locale = 'C');
CREATE TABLE f2b (key text NOT NULL, value text NOT NULL);
CREATE UNIQUE INDEX f2b_k ON f2b (key COLLATE c2);
SELECT ddict_attach('f2b');
DROP COLLATION c2 CASCADE;
-- ... nor a partitioned parent's index drop its partitions' index
CREATE TABLE f2 (key text NOT NULL, value text NOT NULL) PARTITION BY LIST (key);
CREATE UNIQUE INDEX f2_k ON f2 (key);
CREATE TABLE f2a PARTITION OF f2 FOR VALUES IN ('a');
SELECT ddict_attach('f2a');
DROP INDEX f2_k;

-- other ALTER commands that reach a table by another name are guarded too
SELECT ddict_create('f3');
ALTER VIEW f3 RENAME COLUMN value TO v2;
ALTER MATERIALIZED VIEW f3 RENAME COLUMN key TO k2;
CALL mark('f3');
ALTER INDEX f3 RENAME TO f3b;
SELECT has_moved('f3b') AS renamed_by_alter_index_moved;

-- a view's row type used as a value type follows CREATE OR REPLACE VIEW
CREATE VIEW vv AS SELECT 1::int AS a;
CREATE TABLE f4v (key text PRIMARY KEY, value vv NOT NULL);
INSERT INTO f4v VALUES ('k', ROW(1));
SELECT ddict_attach('f4v');
CALL mark('f4v');
CREATE OR REPLACE VIEW vv AS SELECT 1::int AS a, 2::int AS b;
SELECT has_moved('f4v') AS view_row_type, ddict_get('f4v', 'k');
CREATE OR REPLACE VIEW vv AS SELECT 1::int AS a, 2::int AS b, 'pg_class'::regclass AS r;
-- ... and catalog names cannot creep in later, nor through aclitem
ALTER TYPE comp ADD ATTRIBUTE r regclass;
CREATE TABLE acl (key text PRIMARY KEY, value aclitem[] NOT NULL);
SELECT ddict_attach('acl');
-- deep domains are followed to the end
DO $$
BEGIN
  EXECUTE 'CREATE DOMAIN dd0 AS mood';
  FOR i IN 1..40 LOOP
    EXECUTE format('CREATE DOMAIN dd%s AS dd%s', i, i - 1);
  END LOOP;
END $$;
SELECT ddict_create('deep', 'dd40');
SELECT ddict_set('deep', 'k', 'sad');
CALL mark('deep');
ALTER TYPE mood RENAME VALUE 'sad' TO 'blue';
SELECT has_moved('deep') AS deep_domain, ddict_get('deep', 'k');

-- keys compare as clients compare them: no non-deterministic collations
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE cik (key text COLLATE ci PRIMARY KEY, value text NOT NULL);
SELECT ddict_attach('cik');
SELECT ddict_create('cik2');
ALTER TABLE cik2 ALTER COLUMN key TYPE text COLLATE ci;

-- no rules on a dict: they could make writes vanish
SELECT ddict_create('ruled');
CREATE RULE r AS ON INSERT TO ruled DO INSTEAD NOTHING;

-- re-enabling a trigger warns once
ALTER TABLE ruled DISABLE TRIGGER ddict_change;
ALTER TABLE ruled ENABLE REPLICA TRIGGER ddict_change;
SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'ruled'::regclass ORDER BY tgname;

-- DROP TRIGGER and DROP TABLE of tables that are not dicts do not read the
-- registry, and work for roles that cannot read it
BEGIN;
CREATE TABLE plain2 (a int);
CREATE TRIGGER t AFTER INSERT ON plain2 FOR EACH ROW EXECUTE FUNCTION noop();
DROP TRIGGER t ON plain2;
DROP TABLE plain2;
SELECT count(*) AS registry_locks FROM pg_locks
 WHERE locktype = 'relation' AND relation = 'ddict_registry'::regclass AND pid = pg_backend_pid();
COMMIT;
REVOKE SELECT ON ddict_registry FROM PUBLIC;
CREATE ROLE regress_ddl_other;
GRANT CREATE ON SCHEMA public TO regress_ddl_other;
SET ROLE regress_ddl_other;
CREATE TABLE other3 (a int);
CREATE TRIGGER t AFTER INSERT ON other3 FOR EACH ROW EXECUTE FUNCTION noop();
DROP TRIGGER t ON other3;
DROP TABLE other3;
RESET ROLE;
GRANT SELECT ON ddict_registry TO PUBLIC;
REVOKE CREATE ON SCHEMA public FROM regress_ddl_other;
DROP ROLE regress_ddl_other;
-- dropping a dict unregisters it
SELECT ddict_create('bye');
DROP TABLE bye;
SELECT count(*) AS registered FROM ddict_registry WHERE dict::oid NOT IN (SELECT oid FROM pg_class);

-- clients read a value's text from its type's output function: a cast the
-- type's owner creates later changes nothing they read
CREATE TYPE fe AS ENUM ('on');
SELECT ddict_create('casted', 'fe');
SELECT ddict_set('casted', 'a', 'on');
CREATE FUNCTION fe2t(fe) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'HIJACKED' $$;
CREATE CAST (fe AS text) WITH FUNCTION fe2t(fe);
SELECT 'on'::fe::text AS the_cast, ddict_get('casted', 'a'), ddict_pop('casted', 'a');
SELECT ddict_setdefault('casted', 'b', 'on');
SELECT * FROM ddict_items('casted');
SELECT kind, key, convert_from(value, 'UTF8') FROM ddict_changes('casted') WHERE kind = 's';
