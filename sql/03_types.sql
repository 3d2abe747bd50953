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
