-- ddict_changes(): the client's one-round-trip check and delta.
SELECT ddict_create('syncd');
SELECT ddict_set('syncd', 'a', '1');
SELECT ddict_set('syncd', 'b', '2');

-- first call: full load, header first
SELECT kind, key, convert_from(value, 'UTF8') AS value,
       version IS NOT NULL AS has_version, "cursor" > 0 AS has_cursor
  FROM ddict_changes('syncd') ORDER BY kind = 's', key;
SELECT version AS v, epoch AS e, "cursor" AS c FROM ddict_changes('syncd') WHERE kind = 'f' \gset

-- unchanged: one header row, no data
SELECT kind, key, value, version = :v AS same_version, "cursor" = :c AS same_cursor
  FROM ddict_changes('syncd', :v, :e, :c);

-- one change: a delta of exactly that key
SELECT ddict_set('syncd', 'a', '10');
SELECT kind, key, convert_from(value, 'UTF8') AS value, version > :v AS newer
  FROM ddict_changes('syncd', :v, :e, :c) ORDER BY kind = 's', key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('syncd', :v, :e, :c) WHERE kind IN ('d', 'f') \gset

-- deletes come as 'x'; several writes of one key come once
SELECT ddict_delete('syncd', 'b');
SELECT ddict_set('syncd', 'c', '3');
SELECT ddict_set('syncd', 'c', '4');
SELECT kind, key, convert_from(value, 'UTF8') AS value
  FROM ddict_changes('syncd', :v, :e, :c) ORDER BY kind <> 'd', key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('syncd', :v, :e, :c) WHERE kind IN ('d', 'f') \gset

-- writes to other dicts do not show up
SELECT ddict_set('settings', 'unrelated', 'x');
SELECT kind, count(*) FROM ddict_changes('syncd', :v, :e, :c) GROUP BY kind ORDER BY kind;
-- ... nor do they move its cursor: it counts the dict's own changes only
-- (14_cursors)
SELECT kind, "cursor" = :c AS cursor_unmoved FROM ddict_changes('syncd', :v, :e, :c);

-- TRUNCATE forces a full reload
TRUNCATE syncd;
INSERT INTO syncd VALUES ('after', 'truncate');
SELECT kind, key, convert_from(value, 'UTF8') AS value
  FROM ddict_changes('syncd', :v, :e, :c) ORDER BY kind = 's', key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('syncd', :v, :e, :c) WHERE kind IN ('d', 'f') \gset

-- more keys in one transaction than ddict.max_delta_keys: full reload
SET ddict.max_delta_keys = 3;
INSERT INTO syncd SELECT 'k' || i, 'v' FROM generate_series(1, 5) i;
RESET ddict.max_delta_keys;
SELECT kind, count(*) FROM ddict_changes('syncd', :v, :e, :c) GROUP BY kind ORDER BY kind;

-- a wrong epoch or a bogus cursor is answered in full, never wrongly
SELECT kind FROM ddict_changes('syncd', :v, :e + 1, :c) WHERE kind IN ('u', 'd', 'f');
SELECT kind FROM ddict_changes('syncd', 1, :e, 12345) WHERE kind IN ('u', 'd', 'f');
SELECT kind FROM ddict_changes('syncd', 1, :e, 0) WHERE kind IN ('u', 'd', 'f');

-- bytea values arrive as raw bytes, others as their text form
SELECT key, value FROM ddict_changes('blobs') WHERE kind = 's';
SELECT key, convert_from(value, 'UTF8') FROM ddict_changes('docs') WHERE kind = 's' ORDER BY key;

-- REPEATABLE READ would let the rows predate the version: refused
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM ddict_changes('syncd');
ROLLBACK;
-- ... but "unchanged" reads no rows and is answered at any isolation level
SELECT version AS rr_v, epoch AS rr_e FROM ddict_changes('syncd') WHERE kind = 'f' \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT kind FROM ddict_changes('syncd', :rr_v, :rr_e) WHERE kind IN ('u', 'd', 'f');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT kind FROM ddict_changes('syncd', :rr_v, :rr_e) WHERE kind IN ('u', 'd', 'f');
SELECT kind FROM ddict_changes('syncd', :rr_v - 1, :rr_e) WHERE kind IN ('u', 'd', 'f');
ROLLBACK;

-- The row type is cached per backend and per declared shape (sync.c): the
-- 1.0 shape (six columns) and the current one alternate in one session, in
-- FROM and in a select list, each answered with its own columns.
CREATE FUNCTION changes_v10(dict regclass, since_version bigint DEFAULT NULL,
                            since_epoch bigint DEFAULT NULL, since_cursor bigint DEFAULT NULL)
  RETURNS TABLE(kind "char", key text, value bytea, version bigint, epoch bigint, "cursor" bigint)
  AS '$libdir/ddict', 'ddict_changes' LANGUAGE C VOLATILE;
SELECT version AS sv, epoch AS se, "cursor" AS sc, dict AS so FROM ddict_changes('syncd') WHERE kind = 'f' \gset
SELECT kind, key, convert_from(value, 'UTF8') AS value FROM ddict_changes('syncd') ORDER BY kind = 's', key;
SELECT kind, key, convert_from(value, 'UTF8') AS value FROM changes_v10('syncd') ORDER BY kind = 's', key;
SELECT kind, version = :sv AS same_version, dict = :so AS same_dict, "until" IS NULL AS no_until
  FROM ddict_changes('syncd', :sv, :se, :sc, :so);
SELECT kind, version = :sv AS same_version FROM changes_v10('syncd', :sv, :se, :sc);
SELECT (c).kind, (c).version = :sv AS same_version FROM (SELECT changes_v10('syncd', :sv, :se, :sc) AS c) s;
SELECT (c).kind, (c).dict = :so AS same_dict FROM (SELECT ddict_changes('syncd', :sv, :se, :sc, :so) AS c) s;
SELECT count(*) AS columns FROM (SELECT * FROM ddict_changes('syncd', :sv, :se, :sc, :so)) s,
  LATERAL jsonb_each(to_jsonb(s));
SELECT count(*) AS columns FROM (SELECT * FROM changes_v10('syncd', :sv, :se, :sc)) s,
  LATERAL jsonb_each(to_jsonb(s));
DROP FUNCTION changes_v10(regclass, bigint, bigint, bigint);

-- ddict_unchanged(): ddict_changes()'s "unchanged" as a scalar, with the same
-- parameters: the cursor to store when ddict_changes() answers 'u', NULL when
-- it would answer anything else.
SELECT version AS uv, epoch AS ue, "cursor" AS uc, dict AS uo FROM ddict_changes('syncd') WHERE kind = 'f' \gset
SELECT ddict_unchanged('syncd', :uv, :ue, :uc, :uo) = "cursor" AS same_cursor_as_changes, kind
  FROM ddict_changes('syncd', :uv, :ue, :uc, :uo);
SELECT ddict_unchanged('syncd', :uv, :ue, NULL, :uo) IS NOT NULL AS unchanged_without_cursor;
-- another version, another epoch, no state, another relation: NULL
SELECT ddict_unchanged('syncd', :uv - 1, :ue, :uc, :uo) IS NULL AS old_version,
       ddict_unchanged('syncd', :uv, :ue + 1, :uc, :uo) IS NULL AS other_epoch,
       ddict_unchanged('syncd', NULL, NULL, NULL, :uo) IS NULL AS no_state,
       ddict_unchanged('syncd', :uv, :ue, :uc, NULL) IS NULL AS no_relation,
       ddict_unchanged('syncd', :uv, :ue, :uc, 'blobs'::regclass) IS NULL AS other_relation;
-- a commit moves it to NULL, as ddict_changes() moves to 'd'
SELECT ddict_set('syncd', 'moved', 'yes');
SELECT ddict_unchanged('syncd', :uv, :ue, :uc, :uo) IS NULL AS changed,
       (SELECT kind FROM ddict_changes('syncd', :uv, :ue, :uc, :uo) WHERE kind <> 's' AND kind <> 'x') AS changes_kind;
-- a table that is not a dict has no version: NULL; the dict must be given
CREATE TABLE unchanged_plain (key text PRIMARY KEY, value text);
SELECT ddict_unchanged('unchanged_plain', :uv, :ue, :uc, 'unchanged_plain'::regclass) IS NULL AS unchanged_plain;
DROP TABLE unchanged_plain;
SELECT ddict_unchanged(NULL, :uv, :ue, :uc, :uo);
