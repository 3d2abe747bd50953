-- Bad input gets a clear error and changes nothing.
SELECT ddict_last_updated('settings') AS v0 \gset
SELECT count(*) AS n0 FROM settings \gset

-- NULLs
SELECT ddict_get(NULL, 'k');
SELECT ddict_get('settings', NULL);
SELECT ddict_set('settings', NULL, 'v');
SELECT ddict_set('settings', 'k', NULL);
SELECT ddict_delete('settings', NULL);
SELECT ddict_pop('settings', NULL);
SELECT ddict_setdefault('settings', 'k', NULL);
SELECT ddict_last_updated(NULL);
SELECT * FROM ddict_items(NULL);
SELECT ddict_create(NULL);
SELECT ddict_attach(NULL);

-- missing tables and tables that are not dicts
SELECT ddict_get('no_such_table', 'k');
SELECT ddict_get(0::regclass, 'k');
CREATE TABLE not_a_dict (key text PRIMARY KEY, value text);
SELECT ddict_get('not_a_dict', 'k');
SELECT ddict_set('not_a_dict', 'k', 'v');
SELECT ddict_last_updated('not_a_dict');
SELECT * FROM ddict_changes('not_a_dict');
SELECT count(*) FROM not_a_dict;

-- pop without a default raises no_data_found (a KeyError)
SELECT ddict_pop('settings', 'no such key');
DO $$
BEGIN
    PERFORM ddict_pop('settings', 'no such key');
EXCEPTION WHEN no_data_found THEN
    RAISE NOTICE 'caught no_data_found: %', SQLERRM;
END
$$;

-- invalid JSON for a jsonb dict: PostgreSQL's own error, nothing written
SELECT ddict_set('docs', 'broken', '{"unterminated": ');
SELECT ddict_get('docs', 'broken') IS NULL AS nothing_written;
SELECT ddict_setdefault('docs', 'broken', 'not json');
SELECT ddict_get('docs', 'broken') IS NULL AS nothing_written;

-- oversized values (ddict.max_value_size) fail on every write path
SELECT ddict_create('limited');
SET ddict.max_value_size = 100;
SELECT ddict_set('limited', 'big', repeat('x', 101));
INSERT INTO limited VALUES ('big', repeat('x', 101));
COPY limited FROM STDIN;
big	xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
\.
SELECT ddict_len('limited') AS nothing_written;
SELECT ddict_set('limited', 'big', repeat('x', 100));
SELECT length(ddict_get('limited', 'big'));
RESET ddict.max_value_size;

-- hostile identifiers are names, never SQL
CREATE TABLE x (id int);
SELECT ddict_create('"we""ird; DROP TABLE x; --"');
SELECT ddict_set('"we""ird; DROP TABLE x; --"', 'k''; DROP TABLE x; --', 'v''); DROP TABLE x; --');
SELECT * FROM ddict_items('"we""ird; DROP TABLE x; --"');
SELECT to_regclass('x') IS NOT NULL AS x_survives;
SELECT ddict_create('we"ird');
CREATE TABLE "odd ""cols""" ("k""ey" text PRIMARY KEY, "va;lue" text NOT NULL);
SELECT ddict_attach('"odd ""cols"""', 'k"ey', 'va;lue');
SELECT ddict_set('"odd ""cols"""', 'a', 'b');
SELECT * FROM "odd ""cols""";

-- nothing above changed the settings dict
SELECT ddict_last_updated('settings') = :v0 AS version_unchanged,
       (SELECT count(*) FROM settings) = :n0 AS rows_unchanged;
