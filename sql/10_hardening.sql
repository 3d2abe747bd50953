-- What could otherwise change a dict behind its version's back.
SELECT ddict_create('hard');
INSERT INTO hard VALUES ('a', 'one'), ('b', 'two');

-- ALTER TABLE that rewrites values moves the version
SELECT ddict_last_updated('hard') AS v \gset
ALTER TABLE hard ALTER COLUMN value TYPE text USING upper(value);
SELECT ddict_last_updated('hard') > :v AS rewrite_bumps, ddict_get('hard', 'a');

-- the key column keeps its type and both columns their names
ALTER TABLE hard ALTER COLUMN key TYPE bigint USING ascii(key);
ALTER TABLE hard RENAME COLUMN key TO k;
ALTER TABLE hard RENAME COLUMN value TO v;
ALTER TABLE hard ALTER COLUMN key DROP NOT NULL;
SELECT ddict_get('hard', 'b');

-- ddict's triggers stay ENABLE ALWAYS; disabling them warns, and enabling
-- them again restores ALWAYS and moves the version
ALTER TABLE hard DISABLE TRIGGER ALL;
SELECT ddict_last_updated('hard') AS v \gset
ALTER TABLE hard ENABLE TRIGGER ALL;
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'hard'::regclass ORDER BY 1;
SELECT ddict_last_updated('hard') > :v AS reenable_bumps;
DROP TRIGGER ddict_change ON hard;
SELECT count(*) AS triggers_kept FROM pg_trigger WHERE tgrelid = 'hard'::regclass;

-- the trigger function belongs to ddict_attach alone
CREATE ROLE ddict_stranger;
GRANT CREATE ON SCHEMA public TO ddict_stranger;
SET ROLE ddict_stranger;
CREATE TABLE rogue (key text PRIMARY KEY, value text);
CREATE TRIGGER rogue AFTER INSERT ON rogue FOR EACH ROW EXECUTE FUNCTION ddict_trigger('key', 'value');
-- nor can a stranger attach, detach, or lock someone else's table
SELECT ddict_attach('hard');
SELECT ddict_detach('hard');
DROP TABLE rogue;
RESET ROLE;
REVOKE CREATE ON SCHEMA public FROM ddict_stranger;
DROP ROLE ddict_stranger;

-- inheritance children are not part of the dict
CREATE TABLE hard_child () INHERITS (hard);
INSERT INTO hard_child VALUES ('c', 'child');
SELECT ddict_get('hard', 'c') IS NULL AS child_not_in_dict, ddict_len('hard');
SELECT key FROM ddict_keys('hard') k(key) ORDER BY 1;
DROP TABLE hard_child;

-- keys must be NOT NULL, tables must not be temporary
CREATE TABLE nullable_key (key text UNIQUE, value text);
SELECT ddict_attach('nullable_key');
CREATE TEMP TABLE temp_dict (key text PRIMARY KEY, value text);
SELECT ddict_attach('temp_dict');
SELECT ddict_create('pg_temp.temp_dict2');

-- a cursor that is not one the server handed out gets a full reload (and
-- retires the dict's older cursors, the real one included: 14_cursors)
SELECT version AS v, epoch AS e, "cursor" AS c FROM ddict_changes('hard') WHERE kind = 'f' \gset
SELECT ddict_set('hard', 'z', 'zz');
SELECT kind FROM ddict_changes('hard', :v, :e, :c + 8) WHERE kind IN ('u', 'd', 'f');
SELECT kind FROM ddict_changes('hard', :v, :e, :c + 3) WHERE kind IN ('u', 'd', 'f');
SELECT kind FROM ddict_changes('hard', :v, :e, -5) WHERE kind IN ('u', 'd', 'f');
SELECT kind FROM ddict_changes('hard', :v, :e, :c) WHERE kind IN ('u', 'd', 'f');
