-- 1.2: full loads by COPY (ddict_full_begin / ddict_full_end), the full
-- answer without rows (ddict_changes(..., full_rows => false)), and the check
-- of many dicts (ddict_unchanged_many) with its per-backend name cache.
-- 1.3: the same check packed in one bytea (ddict_unchanged_packed): it
-- answers what ddict_unchanged_many answers (ld_check shows both), refuses
-- a malformed probe with 22P03 (every cut, random bytes: ld_fuzz), and its
-- memo of the last names follows renames and search_path like the cache.
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

-- ddict_unchanged_many: one character per dict; ddict_unchanged_packed the same
-- (the probe: format, n, (relation, version, epoch) of each, then the names)
CREATE FUNCTION ld_probe(names text[], rels oid[], vers int8[], epochs int8[], format int DEFAULT 1)
  RETURNS bytea LANGUAGE sql AS $f$
  SELECT set_byte('\x00'::bytea, 0, format) || int4send(coalesce(cardinality(names), 0))
    || coalesce((SELECT string_agg(substr(int8send(r::int8), 5) || int8send(v) || int8send(e), '' ORDER BY i)
                   FROM unnest(rels, vers, epochs) WITH ORDINALITY AS u(r, v, e, i)), '')
    || coalesce((SELECT string_agg(int2send(length(b)::int2) || b, '' ORDER BY i)
                   FROM unnest(names) WITH ORDINALITY AS u(n, i),
                        convert_to(n, current_setting('server_encoding')) AS b), '')
$f$;
CREATE FUNCTION ld_check(names text[], rels oid[], vers int8[], epochs int8[])
  RETURNS TABLE (many text, packed text) LANGUAGE sql AS $f$
  SELECT ddict_unchanged_many(names, rels, vers, epochs),
         ddict_unchanged_packed(ld_probe(names, rels, vers, epochs))
$f$;
SELECT ddict_last_updated('ld_a.t') AS va, ddict_last_updated('ld_b.t') AS vb,
       'ld_a.t'::regclass::oid AS oa, 'ld_b.t'::regclass::oid AS ob \gset
SELECT * FROM ld_check(ARRAY['ld_a.t', 'ld_b.t', 'ld_b.t', 'nope', 'ld_plain'],
                       ARRAY[:oa, :ob, :ob, 0, 'ld_plain'::regclass::oid]::oid[],
                       ARRAY[:va, :vb, :vb - 1, 1, 1], ARRAY[ddict_epoch(), ddict_epoch(),
                       ddict_epoch(), ddict_epoch(), ddict_epoch()]);
SELECT * FROM ld_check(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch() + 1]);
SELECT ddict_unchanged_many(ARRAY[NULL, 'ld_a.t'], ARRAY[:oa, :oa]::oid[], ARRAY[:va, :va],
                            ARRAY[ddict_epoch(), ddict_epoch()]);
SELECT ddict_unchanged_many('{}', '{}', '{}', '{}');
SELECT ddict_unchanged_many(ARRAY['ld_a.t'], ARRAY[:oa, :ob]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SELECT ddict_unchanged_many(NULL, ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SELECT ddict_unchanged_packed(NULL);
SELECT * FROM ld_check('{}', '{}', '{}', '{}');
-- names that mean nothing: empty, with a NUL, not in the database's
-- encoding, or no dict; a name beyond the cache's 255 bytes still resolves
SELECT ddict_unchanged_packed(ld_probe(ARRAY['', 'ld_plain'], ARRAY[0, 'ld_plain'::regclass::oid]::oid[],
                                       ARRAY[1, 1], ARRAY[ddict_epoch(), ddict_epoch()]));
SELECT ddict_unchanged_packed(substr(p, 1, 25) || '\x0008'::bytea || '\x6c645f612e740078'::bytea)
  FROM ld_probe(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]) p;
SELECT ddict_unchanged_packed(substr(p, 1, 25) || '\x0007'::bytea || '\x6c645fff612e74'::bytea)
  FROM ld_probe(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]) p;
SELECT * FROM ld_check(ARRAY['  ld_a  .  t' || repeat(' ', 300)], ARRAY[:oa]::oid[], ARRAY[:va],
                       ARRAY[ddict_epoch()]);
-- malformed probes: 22P03, nothing answered
SELECT ddict_unchanged_packed('\x');
SELECT ddict_unchanged_packed(ld_probe(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()], 2));
SELECT ddict_unchanged_packed('\x01ffffffff' || repeat('x', 100)::bytea);
SELECT ddict_unchanged_packed(p || '\x00'::bytea)
  FROM ld_probe(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]) p;
SELECT ddict_unchanged_packed(substr(p, 1, length(p) - 1))
  FROM ld_probe(ARRAY['ld_a.t', 'ld_b.t'], ARRAY[:oa, :ob]::oid[], ARRAY[:va, :vb],
                ARRAY[ddict_epoch(), ddict_epoch()]) p;
SELECT ddict_unchanged_packed(overlay(p placing '\xffff'::bytea from 26))
  FROM ld_probe(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]) p;
-- fuzz: every cut of a valid probe is refused; random bytes written over
-- it, or random bytes after its header, are answered or refused (22P03),
-- never another error (and never a crash)
CREATE FUNCTION ld_fuzz(p bytea, tries int) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
  q bytea;
  a text;
  cuts int := 0;
  answered int := 0;
  refused int := 0;
  other text := '';
BEGIN
  PERFORM setseed(0.25);
  FOR k IN 0 .. length(p) - 1 LOOP
    BEGIN
      a := ddict_unchanged_packed(substr(p, 1, k));
    EXCEPTION WHEN invalid_binary_representation THEN
      cuts := cuts + 1;
    END;
  END LOOP;
  FOR t IN 1 .. tries LOOP
    IF t % 4 = 0 THEN
      q := substr(p, 1, 5);
      FOR j IN 1 .. (random() * 120)::int LOOP
        q := q || set_byte('\x00'::bytea, 0, (random() * 255)::int);
      END LOOP;
    ELSE
      q := p;
      FOR j IN 1 .. 1 + (random() * 3)::int LOOP
        q := set_byte(q, (random() * (length(q) - 1))::int, (random() * 255)::int);
      END LOOP;
    END IF;
    BEGIN
      a := ddict_unchanged_packed(q);
      IF a !~ '^[u?]*$' THEN
        other := other || ' answer ' || a;
      END IF;
      answered := answered + 1;
    EXCEPTION
      WHEN invalid_binary_representation THEN
        refused := refused + 1;
      WHEN OTHERS THEN
        other := other || ' ' || SQLSTATE || ' ' || SQLERRM;
    END;
  END LOOP;
  RETURN format('cuts refused: %s of %s; random: some answered %s, some refused %s, other outcomes:%s',
                cuts, length(p), answered > 0, refused > 0, CASE other WHEN '' THEN ' none' ELSE other END);
END
$f$;
SELECT ld_fuzz(ld_probe(ARRAY['ld_a.t', 'ld_b.t', 'nope'], ARRAY[:oa, :ob, 0]::oid[], ARRAY[:va, :vb, 1],
                        ARRAY[ddict_epoch(), ddict_epoch(), ddict_epoch()]), 400);
-- the cached names (and the packed probe's memo of its last names) follow
-- renames and search_path (same backend, cache warm)
SELECT * FROM ld_check(ARRAY['t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SET search_path = ld_a, public;
SELECT * FROM ld_check(ARRAY['t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SET search_path = ld_b, public;
SELECT * FROM ld_check(ARRAY['t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
RESET search_path;
SELECT * FROM ld_check(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
SELECT ddict_unchanged_packed(ld_probe(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]));
ALTER SCHEMA ld_a RENAME TO ld_x;
ALTER SCHEMA ld_b RENAME TO ld_a;
SELECT ddict_unchanged_packed(ld_probe(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]));
SELECT * FROM ld_check(ARRAY['ld_a.t'], ARRAY[:oa]::oid[], ARRAY[:va], ARRAY[ddict_epoch()]);
-- a schema rename moves its dicts' versions (the name means another relation)
SELECT * FROM ld_check(ARRAY['ld_a.t'], ARRAY[:ob]::oid[], ARRAY[:vb], ARRAY[ddict_epoch()]);
SELECT ddict_last_updated('ld_a.t') AS vb \gset
SELECT * FROM ld_check(ARRAY['ld_a.t'], ARRAY[:ob]::oid[], ARRAY[:vb], ARRAY[ddict_epoch()]);
ALTER TABLE ld_a.t RENAME TO t_old;
SELECT ddict_unchanged_packed(ld_probe(ARRAY['ld_a.t'], ARRAY[:ob]::oid[], ARRAY[:vb], ARRAY[ddict_epoch()]));
SELECT * FROM ld_check(ARRAY['ld_a.t'], ARRAY[:ob]::oid[], ARRAY[:vb], ARRAY[ddict_epoch()]);
-- a write not yet committed leaves the version as it is; once committed: '?'
SELECT ddict_last_updated('ld_bytes') AS vy, 'ld_bytes'::regclass::oid AS oy \gset
SELECT * FROM ld_check(ARRAY['ld_bytes'], ARRAY[:oy]::oid[], ARRAY[:vy], ARRAY[ddict_epoch()]);
BEGIN;
SELECT ddict_set('ld_bytes', 'k2', '\x01');
SELECT * FROM ld_check(ARRAY['ld_bytes'], ARRAY[:oy]::oid[], ARRAY[:vy], ARRAY[ddict_epoch()]);
COMMIT;
SELECT * FROM ld_check(ARRAY['ld_bytes'], ARRAY[:oy]::oid[], ARRAY[:vy], ARRAY[ddict_epoch()]);

DROP SCHEMA ld_a, ld_x CASCADE;
DROP TABLE ld_bytes, ld_json, ld_plain;
DROP FUNCTION ld_check(text[], oid[], int8[], int8[]), ld_probe(text[], oid[], int8[], int8[], int),
  ld_fuzz(bytea, int);
DROP OWNED BY ld_nobody;
DROP ROLE ld_nobody;
