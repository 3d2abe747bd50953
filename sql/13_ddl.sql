-- 13_ddl: DDL guards (issue 8, items 3, 4, 6, 7 and the smaller items)
SET client_min_messages = warning;
CREATE FUNCTION v(r regclass) RETURNS bigint LANGUAGE sql AS 'SELECT ddict_last_updated(r)';
CREATE TABLE moved (dict text PRIMARY KEY, before bigint);
CREATE PROCEDURE mark(r regclass) LANGUAGE sql AS
  $$INSERT INTO moved VALUES (r::text, ddict_last_updated(r)) ON CONFLICT (dict) DO UPDATE SET before = excluded.before$$;
CREATE FUNCTION has_moved(r regclass) RETURNS boolean LANGUAGE sql AS
  $$SELECT ddict_last_updated(r) > before FROM moved WHERE dict = r::text$$;

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

-- PREPARE TRANSACTION names the dict it refuses, also a dropped one
BEGIN;
DROP TABLE u;
PREPARE TRANSACTION 'ddl_x';
BEGIN;
SELECT ddict_set('short', 'k2', 'v');
PREPARE TRANSACTION 'ddl_y';

-- ALTER TABLE of a table that is not a dict does not read the registry
BEGIN;
ALTER TABLE other ADD COLUMN c int;
SELECT count(*) AS registry_locks FROM pg_locks
 WHERE locktype = 'relation' AND relation = 'ddict_registry'::regclass AND pid = pg_backend_pid();
COMMIT;
-- ... while ALTER TABLE of a dict still finds it (a rename is refused)
ALTER TABLE nv RENAME COLUMN value TO v;
