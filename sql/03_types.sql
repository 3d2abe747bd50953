-- Value types: text (default), jsonb, bytea, and others through their input
-- and output functions.  Values are returned as text.
SELECT ddict_create('docs', 'jsonb');
SELECT ddict_set('docs', 'a', '{"x": [1, 2, {"y": null}]}');
SELECT ddict_get('docs', 'a');
SELECT value -> 'x' -> 2 FROM docs WHERE key = 'a';

SELECT ddict_create('blobs', 'bytea');
SELECT ddict_set('blobs', 'b', '\x00ff10');
SELECT ddict_get('blobs', 'b');
SELECT length(value) FROM blobs WHERE key = 'b';

SELECT ddict_create('counters', 'integer');
SELECT ddict_set('counters', 'n', '42');
SELECT ddict_get('counters', 'n');
SELECT ddict_set('counters', 'n', 'forty-two');
SELECT ddict_get('counters', 'n');

-- keys and values are arbitrary text: unicode, empty, whitespace, quotes
SELECT ddict_set('settings', '', 'empty key');
SELECT ddict_set('settings', 'ключ 🔑', 'значение');
SELECT ddict_set('settings', E'tab\there', E'line\nbreak');
SELECT ddict_set('settings', 'quote''s', '"double"');
SELECT ddict_get('settings', ''), ddict_get('settings', 'ключ 🔑'),
       ddict_get('settings', E'tab\there') = E'line\nbreak' AS newline_kept,
       ddict_get('settings', 'quote''s');

-- pseudo-types cannot be value types
SELECT ddict_create('bad_type', 'anyelement');
SELECT to_regclass('bad_type') IS NULL AS not_created;

-- Values are what SELECT shows: their type's output function, never a cast
-- (boolean's cast says "true", char(n)'s trims), called by its qualified
-- name, so that no overload anyone creates can take its place (an
-- exact-type _ddict_text(mood) once ran as every reader).
SELECT ddict_create('tv_bool', 'boolean');
SELECT ddict_create('tv_char', 'char(6)');
CREATE TYPE tv_mood AS ENUM ('sad', 'ok');
SELECT ddict_create('tv_m', 'tv_mood');
INSERT INTO tv_bool VALUES ('k', true);
INSERT INTO tv_char VALUES ('k', 'ab');
INSERT INTO tv_m VALUES ('k', 'ok');
CREATE FUNCTION public._ddict_text(tv_mood) RETURNS text LANGUAGE sql AS $$ SELECT 'forged' $$;
SELECT ddict_get('tv_bool', 'k') AS bool, '[' || ddict_get('tv_char', 'k') || ']' AS char6,
       ddict_get('tv_m', 'k') AS mood;
SELECT convert_from(value, 'UTF8') AS mood FROM ddict_changes('tv_m') WHERE kind = 's';
SELECT b.value AS select_bool, c.value AS select_char6 FROM tv_bool b, tv_char c;
DROP FUNCTION public._ddict_text(tv_mood);
DROP TABLE tv_bool, tv_char, tv_m;
DROP TYPE tv_mood;
