-- Dict semantics from SQL: a dict is a table, named like any table.
SELECT ddict_create('settings');
\d settings

SELECT ddict_set('settings', 'color', 'blue');
SELECT ddict_set('settings', 'size', 'large');
SELECT ddict_get('settings', 'color');
SELECT ddict_get('settings', 'missing') IS NULL AS absent_is_null;
SELECT ddict_get('settings', 'missing', 'fallback');
SELECT ddict_get('settings', 'color', 'fallback');

-- set is an upsert
SELECT ddict_set('settings', 'color', 'red');
SELECT ddict_get('settings', 'color');
SELECT ddict_len('settings');
SELECT * FROM ddict_items('settings');
SELECT * FROM ddict_keys('settings');

-- delete says whether the key existed
SELECT ddict_delete('settings', 'size');
SELECT ddict_delete('settings', 'size');

-- pop: delete and return; with a default, no error when absent
SELECT ddict_set('settings', 'tmp', 'x');
SELECT ddict_pop('settings', 'tmp');
SELECT ddict_pop('settings', 'tmp', 'gone');
SELECT ddict_pop('settings', 'tmp', NULL) IS NULL AS null_default;
SELECT ddict_pop('settings', 'tmp');

-- setdefault inserts only when absent and returns what is stored
SELECT ddict_setdefault('settings', 'mode', 'fast');
SELECT ddict_setdefault('settings', 'mode', 'slow');
SELECT ddict_get('settings', 'mode');

-- the dict is an ordinary table: plain SQL sees the same data
SELECT key, value FROM settings ORDER BY key;
INSERT INTO settings VALUES ('plain', 'sql');
SELECT ddict_get('settings', 'plain');

-- schema-qualified and quoted names resolve like regclass
CREATE SCHEMA app;
SELECT ddict_create('app.flags');
SELECT ddict_set('app.flags', 'beta', 'on');
SET search_path = app, public;
SELECT ddict_get('flags', 'beta');
RESET search_path;
SELECT ddict_create('"Mixed Case"');
SELECT ddict_set('"Mixed Case"', 'k', 'v');
SELECT ddict_get('"Mixed Case"', 'k');

SELECT dict, key_column, value_column, value_type, version > 0 AS has_version
  FROM ddict_dicts ORDER BY dict::text;
