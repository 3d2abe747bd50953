-- 1.2: full loads by COPY (ddict_full_begin / ddict_full_end), the full
-- answer without rows (ddict_changes(..., full_rows => false)), and the check
-- of many dicts (ddict_unchanged_many) with its per-backend name cache.
CREATE SCHEMA ld_a;
CREATE SCHEMA ld_b;
SELECT ddict_create('ld_a.t');
SELECT ddict_create('ld_b.t');
SELECT ddict_create('ld_bytes', 'bytea');
SELECT ddict_create('ld_json', 'jsonb');
SELECT ddict_set('ld_a.t', 'k', 'a');
SELECT ddict_set('ld_b.t', 'k', 'b');
SELECT ddict_set('ld_bytes', 'k', '\x00ff');
SELECT ddict_set('ld_json', 'k', '{"b": 1, "a": [2]}');

-- the header, and a query that reads the dict's rows as ddict_changes() sends them
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT version = ddict_last_updated('ld_a.t') AS v, epoch = ddict_epoch() AS e,
       relation = 'ld_a.t'::regclass AS rel, query
  FROM ddict_full_begin('ld_a.t');
SELECT query FROM ddict_full_begin('ld_bytes');
SELECT query FROM ddict_full_begin('ld_json');
COMMIT;
-- the COPY's rows equal ddict_changes()'s
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT key, value FROM (SELECT "key"::pg_catalog.text, public._ddict_bytes(public._ddict_text("value")) FROM ONLY public.ld_json) s(key, value)
EXCEPT SELECT key, value FROM ddict_changes('ld_json') WHERE kind = 's';
SELECT count(*) FROM ddict_changes('ld_json') WHERE kind = 's';
COMMIT;

-- errors: outside a transaction block, not READ COMMITTED, NULL, not a dict,
-- no privilege, the end without the begin
SELECT * FROM ddict_full_begin('ld_a.t');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM ddict_full_begin('ld_a.t');
ROLLBACK;
BEGIN;
SELECT * FROM ddict_full_begin(NULL);
ROLLBACK;
CREATE TABLE ld_plain (key text PRIMARY KEY, value text NOT NULL);
BEGIN;
SELECT * FROM ddict_full_begin('ld_plain');
ROLLBACK;
CREATE ROLE ld_nobody;
GRANT USAGE ON SCHEMA ld_a TO ld_nobody;
BEGIN;
SET LOCAL ROLE ld_nobody;
SELECT * FROM ddict_full_begin('ld_a.t');
ROLLBACK;
SELECT ddict_full_end('ld_a.t'::regclass, 1);
BEGIN;
SELECT ddict_full_end('ld_a.t'::regclass, NULL);
ROLLBACK;

-- full_rows => false: a full answer is its header alone; deltas keep their rows
SELECT kind, key FROM ddict_changes('ld_a.t', NULL, NULL, NULL, NULL, false);
SELECT version AS v, epoch AS e, "cursor" AS c, dict AS d
  FROM ddict_changes('ld_a.t', NULL, NULL, NULL, NULL, false) \gset
SELECT ddict_set('ld_a.t', 'k2', 'a2');
SELECT kind, key FROM ddict_changes('ld_a.t', :v, :e, :c, :d, false) ORDER BY kind = 's', key;

-- ddict_unchanged_many: one character per dict
SELECT ddict_last_updated('ld_a.t') AS va, ddict_last_updated('ld_b.t') AS vb,
       'ld_a.t'::regclass::oid AS oa, 'ld_b.t'::regclass::oid AS ob \gset
SELECT ddict_unchanged_many(ARRAY['ld_a.t', 'ld_b.t', 'ld_b.t', 'nope', 'ld_plain'],
                            ARRAY[:oa, :ob, :ob, 0, 'ld_plain'::regclass::oid]::oid[],
                            ARRAY[:va, :vb, :vb - 1, 1, 1], ARRAY[ddict_epoch(), ddict_epoch(),
                            ddict_epoch(), ddict_epoch(), ddict_epoch()]);
SELECT ddict_unchanged_many(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch() + 1]);
SELECT ddict_unchanged_many(ARRAY[NULL, 'ld_a.t'], ARRAY[:oa, :oa]::oid[], ARRAY[:va, :va],
                            ARRAY[ddict_epoch(), ddict_epoch()]);
SELECT ddict_unchanged_many('{}', '{}', '{}', '{}');
SELECT ddict_unchanged_many(ARRAY['ld_a.t'], ARRAY[:oa, :ob]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SELECT ddict_unchanged_many(NULL, ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
-- the cached names follow renames and search_path (same backend, cache warm)
SELECT ddict_unchanged_many(ARRAY['t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SET search_path = ld_a, public;
SELECT ddict_unchanged_many(ARRAY['t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SET search_path = ld_b, public;
SELECT ddict_unchanged_many(ARRAY['t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
RESET search_path;
SELECT ddict_unchanged_many(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
ALTER SCHEMA ld_a RENAME TO ld_x;
ALTER SCHEMA ld_b RENAME TO ld_a;
SELECT ddict_unchanged_many(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SELECT ddict_unchanged_many(ARRAY['ld_a.t'], ARRAY[:ob]::oid[], ARRAY[:vb], ARRAY[ddict_epoch()]);
ALTER TABLE ld_a.t RENAME TO t_old;
SELECT ddict_unchanged_many(ARRAY['ld_a.t'], ARRAY[:ob]::oid[], ARRAY[:vb], ARRAY[ddict_epoch()]);

DROP SCHEMA ld_a, ld_x CASCADE;
DROP TABLE ld_bytes, ld_json, ld_plain;
DROP OWNED BY ld_nobody;
DROP ROLE ld_nobody;
