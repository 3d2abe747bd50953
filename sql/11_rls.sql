-- Row-level security: no ddict function, ddict_changes() included (full and
-- delta, 's' and 'x' rows), reveals anything about rows the caller cannot
-- SELECT.  Under active row security a delta that cannot re-read a changed
-- key answers in full ('f') instead of naming it in an 'x' row.
DROP ROLE IF EXISTS ddict_alice;
DROP ROLE IF EXISTS ddict_bob;
CREATE ROLE ddict_alice;
CREATE ROLE ddict_bob;
SELECT ddict_create('tenant');
ALTER TABLE tenant ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_keys ON tenant
    USING (key LIKE current_user || ':%') WITH CHECK (key LIKE current_user || ':%');
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant TO ddict_alice, ddict_bob;
SELECT ddict_set('tenant', 'ddict_alice:plan', 'gold');
SELECT ddict_set('tenant', 'ddict_bob:plan', 'silver');
SELECT ddict_set('tenant', 'ddict_bob:theme', 'dark');

-- bob's full load: his rows only
SET ROLE ddict_bob;
SELECT kind, key, convert_from(value, 'UTF8') AS value
  FROM ddict_changes('tenant') ORDER BY kind = 's', key;
SELECT version AS v, epoch AS e, "cursor" AS c FROM ddict_changes('tenant') WHERE kind = 'f' \gset
RESET ROLE;

-- alice writes a key bob may not see: his next answer must not name it
SET ROLE ddict_alice;
SELECT ddict_set('tenant', 'ddict_alice:acquisition-of-acme-corp', 'secret');
RESET ROLE;
SET ROLE ddict_bob;
SELECT kind, key, convert_from(value, 'UTF8') AS value
  FROM ddict_changes('tenant', :v, :e, :c) ORDER BY kind = 's', key;
SELECT count(*) AS leaked FROM ddict_changes('tenant', :v, :e, :c)
 WHERE key NOT LIKE 'ddict_bob:%';
SELECT version AS v, "cursor" AS c FROM ddict_changes('tenant', :v, :e, :c) WHERE kind = 'f' \gset

-- a change bob can see is still an exact delta
SELECT ddict_set('tenant', 'ddict_bob:theme', 'light');
SELECT kind, key, convert_from(value, 'UTF8') AS value
  FROM ddict_changes('tenant', :v, :e, :c) ORDER BY kind = 's', key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('tenant', :v, :e, :c) WHERE kind = 'd' \gset

-- his own key deleted: it leaves his copy (a full answer without it)
SELECT ddict_delete('tenant', 'ddict_bob:theme');
SELECT kind, key, convert_from(value, 'UTF8') AS value
  FROM ddict_changes('tenant', :v, :e, :c) ORDER BY kind = 's', key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('tenant', :v, :e, :c) WHERE kind = 'f' \gset
RESET ROLE;

-- alice deletes a hidden key and bob changes his own in one transaction:
-- still nothing about alice's key
BEGIN;
SET LOCAL ROLE ddict_alice;
SELECT ddict_delete('tenant', 'ddict_alice:acquisition-of-acme-corp');
SET LOCAL ROLE ddict_bob;
SELECT ddict_set('tenant', 'ddict_bob:plan', 'bronze');
COMMIT;
SET ROLE ddict_bob;
SELECT kind, key, convert_from(value, 'UTF8') AS value
  FROM ddict_changes('tenant', :v, :e, :c) ORDER BY kind = 's', key;
RESET ROLE;

-- the owner (row security does not apply) keeps exact deltas, 'x' included
SELECT version AS v, epoch AS e, "cursor" AS c FROM ddict_changes('tenant') WHERE kind = 'f' \gset
SELECT ddict_delete('tenant', 'ddict_alice:plan');
SELECT kind, key FROM ddict_changes('tenant', :v, :e, :c) ORDER BY kind = 's', key;
SELECT ddict_set('tenant', 'ddict_alice:plan', 'gold');

-- every other function: a hidden key answers exactly as an absent one
SET ROLE ddict_bob;
SELECT ddict_get('tenant', 'ddict_alice:plan') AS hidden,
       ddict_get('tenant', 'ddict_alice:nothing') AS absent;
SELECT ddict_get('tenant', 'ddict_alice:plan', 'dflt') AS hidden,
       ddict_get('tenant', 'ddict_alice:nothing', 'dflt') AS absent;
SELECT * FROM ddict_items('tenant');
SELECT * FROM ddict_keys('tenant');
SELECT ddict_len('tenant');
SELECT ddict_delete('tenant', 'ddict_alice:plan') AS hidden,
       ddict_delete('tenant', 'ddict_alice:nothing') AS absent;
SELECT ddict_pop('tenant', 'ddict_alice:plan', 'dflt') AS hidden,
       ddict_pop('tenant', 'ddict_alice:nothing', 'dflt') AS absent;
SELECT ddict_pop('tenant', 'ddict_alice:plan');
SELECT ddict_pop('tenant', 'ddict_alice:nothing');
SELECT ddict_setdefault('tenant', 'ddict_alice:plan', 'x');
SELECT ddict_setdefault('tenant', 'ddict_alice:nothing', 'x');
SELECT ddict_set('tenant', 'ddict_alice:plan', 'x');
SELECT ddict_set('tenant', 'ddict_alice:nothing', 'x');
RESET ROLE;
SELECT key, value FROM tenant ORDER BY key;

-- a "drop box": anyone may insert, each reads only their own keys.  Writes
-- of a hidden existing key fail exactly as writes of an absent one (ddict's
-- statements use RETURNING / ON CONFLICT DO UPDATE, under which PostgreSQL
-- requires the row to be visible to the caller).
CREATE POLICY drop_box_insert ON tenant FOR INSERT WITH CHECK (true);
CREATE POLICY drop_box_delete ON tenant FOR DELETE USING (true);
SET ROLE ddict_bob;
SELECT ddict_setdefault('tenant', 'ddict_alice:plan', 'x');
SELECT ddict_setdefault('tenant', 'ddict_alice:nothing', 'x');
SELECT ddict_set('tenant', 'ddict_alice:plan', 'x');
SELECT ddict_set('tenant', 'ddict_alice:nothing', 'x');
SELECT ddict_delete('tenant', 'ddict_alice:plan') AS hidden,
       ddict_delete('tenant', 'ddict_alice:nothing') AS absent;
SELECT ddict_pop('tenant', 'ddict_alice:plan', 'dflt') AS hidden,
       ddict_pop('tenant', 'ddict_alice:nothing', 'dflt') AS absent;
RESET ROLE;
SELECT key, value FROM tenant ORDER BY key;

-- Policies change what a reader sees without a write: CREATE, ALTER and
-- DROP POLICY on a dict make its clients reload in full, with what the
-- reader sees now.
DROP POLICY drop_box_insert ON tenant;
DROP POLICY drop_box_delete ON tenant;
SET ROLE ddict_bob;
SELECT version AS v, epoch AS e, "cursor" AS c, dict AS d FROM ddict_changes('tenant') WHERE kind = 'f' \gset
RESET ROLE;
ALTER POLICY own_keys ON tenant USING (key LIKE 'ddict_alice:%');
SET ROLE ddict_bob;
SELECT kind, key FROM ddict_changes('tenant', :v, :e, :c, :d) ORDER BY kind <> 'f', key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('tenant', :v, :e, :c, :d) WHERE kind = 'f' \gset
RESET ROLE;
CREATE POLICY bob_too ON tenant USING (key LIKE 'ddict_bob:%');
SET ROLE ddict_bob;
SELECT kind, key FROM ddict_changes('tenant', :v, :e, :c, :d) ORDER BY kind <> 'f', key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('tenant', :v, :e, :c, :d) WHERE kind = 'f' \gset
RESET ROLE;
DROP POLICY own_keys ON tenant;
SET ROLE ddict_bob;
SELECT kind, key FROM ddict_changes('tenant', :v, :e, :c, :d) ORDER BY kind <> 'f', key;
RESET ROLE;
-- a policy dropped by a cascade from a function its expression used
CREATE FUNCTION bob_may(k text) RETURNS boolean LANGUAGE sql AS $$ SELECT k LIKE 'ddict_bob:%' $$;
CREATE POLICY via_fn ON tenant USING (bob_may(key));
DROP POLICY bob_too ON tenant;
SET ROLE ddict_bob;
SELECT version AS v, "cursor" AS c FROM ddict_changes('tenant', :v, :e, :c, :d) WHERE kind = 'f' \gset
RESET ROLE;
DROP FUNCTION bob_may(text) CASCADE;
SET ROLE ddict_bob;
SELECT kind, key FROM ddict_changes('tenant', :v, :e, :c, :d) ORDER BY kind <> 'f', key;
RESET ROLE;
-- a failed DROP POLICY changes nothing (and the name of a table that is not
-- a dict is no concern of ddict's)
SELECT ddict_last_updated('tenant') AS v \gset
DROP POLICY no_such_policy ON tenant;
DROP POLICY IF EXISTS no_such_policy ON no_such_table;
SELECT ddict_last_updated('tenant') = :v AS unchanged;

DROP TABLE tenant;
DROP OWNED BY ddict_alice, ddict_bob;
DROP ROLE ddict_alice, ddict_bob;

-- A role that may not read a dict learns nothing from ddict_changes() about
-- it, not even an "unchanged" header (its cursor moves with other writes).
CREATE TABLE private_conf (key text PRIMARY KEY, value text NOT NULL);
SELECT ddict_attach('private_conf');
SELECT version AS pv, epoch AS pe FROM ddict_changes('private_conf') WHERE kind = 'f' \gset
CREATE ROLE ddict_carol;
SET ROLE ddict_carol;
SELECT kind FROM ddict_changes('private_conf', :pv, :pe, 0, 'private_conf'::regclass);
SELECT ddict_unchanged('private_conf', :pv, :pe, 0, 'private_conf'::regclass);
RESET ROLE;
GRANT SELECT (key) ON private_conf TO ddict_carol;
SET ROLE ddict_carol;
SELECT kind FROM ddict_changes('private_conf', :pv, :pe, 0, 'private_conf'::regclass);
RESET ROLE;
DROP TABLE private_conf;
DROP ROLE ddict_carol;
