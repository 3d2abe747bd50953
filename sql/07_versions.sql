-- The version of a dict moves when, and only when, a transaction that
-- changed it commits.  Versions are microseconds since 1970 (a hybrid
-- logical clock), so they also read as a time.
SELECT ddict_create('vers');
SELECT ddict_last_updated('vers') AS v \gset
SELECT to_timestamp(:v / 1e6) BETWEEN now() - interval '1 hour' AND clock_timestamp() AS readable_as_time;

-- inside a transaction the version does not move; at commit it does
BEGIN;
SELECT ddict_set('vers', 'a', '1');
SELECT ddict_last_updated('vers') = :v AS unchanged_before_commit;
COMMIT;
SELECT ddict_last_updated('vers') > :v AS moved_after_commit;
SELECT ddict_last_updated('vers') AS v \gset

-- rollback: no bump
BEGIN;
SELECT ddict_set('vers', 'b', '2');
ROLLBACK;
SELECT ddict_last_updated('vers') = :v AS rollback_no_bump;

-- savepoint rolled back: no bump
BEGIN;
SAVEPOINT s1;
SELECT ddict_set('vers', 'b', '2');
ROLLBACK TO SAVEPOINT s1;
COMMIT;
SELECT ddict_last_updated('vers') = :v AS savepoint_rollback_no_bump;

-- savepoint released: bump
BEGIN;
SAVEPOINT s1;
SELECT ddict_set('vers', 'b', '2');
RELEASE SAVEPOINT s1;
COMMIT;
SELECT ddict_last_updated('vers') > :v AS released_savepoint_bumps;
SELECT ddict_last_updated('vers') AS v \gset

-- a write in a rolled-back savepoint does not hide a write kept before it
BEGIN;
SELECT ddict_set('vers', 'c', '3');
SAVEPOINT s1;
SELECT ddict_set('vers', 'd', '4');
ROLLBACK TO SAVEPOINT s1;
COMMIT;
SELECT ddict_last_updated('vers') > :v AS outer_write_bumps;
SELECT ddict_last_updated('vers') AS v \gset

-- reading or failing writes do not bump
SELECT ddict_get('vers', 'a'), ddict_len('vers');
SELECT ddict_set('vers', NULL, 'x');
SELECT ddict_last_updated('vers') = :v AS reads_do_not_bump;

-- every write path bumps, whoever writes
\set ECHO none
\o /dev/null
SELECT ddict_last_updated('vers') AS v \gset
\o
\set ECHO all
INSERT INTO vers VALUES ('ins', 'x');
SELECT ddict_last_updated('vers') > :v AS insert_bumps;
SELECT ddict_last_updated('vers') AS v \gset
UPDATE vers SET value = 'y' WHERE key = 'ins';
SELECT ddict_last_updated('vers') > :v AS update_bumps;
SELECT ddict_last_updated('vers') AS v \gset
INSERT INTO vers VALUES ('ins', 'z') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
SELECT ddict_last_updated('vers') > :v AS on_conflict_bumps;
SELECT ddict_last_updated('vers') AS v \gset
MERGE INTO vers t USING (VALUES ('ins', 'm'), ('merged', 'n')) s(k, v) ON t.key = s.k
  WHEN MATCHED THEN UPDATE SET value = s.v
  WHEN NOT MATCHED THEN INSERT VALUES (s.k, s.v);
SELECT ddict_last_updated('vers') > :v AS merge_bumps;
SELECT ddict_last_updated('vers') AS v \gset
DELETE FROM vers WHERE key = 'merged';
SELECT ddict_last_updated('vers') > :v AS delete_bumps;
SELECT ddict_last_updated('vers') AS v \gset
COPY vers FROM STDIN;
copied	1
\.
SELECT ddict_last_updated('vers') > :v AS copy_bumps;
SELECT ddict_last_updated('vers') AS v \gset
SET session_replication_role = replica;
INSERT INTO vers VALUES ('replica', 'r');
RESET session_replication_role;
SELECT ddict_last_updated('vers') > :v AS replica_role_bumps;
SELECT ddict_last_updated('vers') AS v \gset
TRUNCATE vers;
SELECT ddict_last_updated('vers') > :v AS truncate_bumps;
SELECT ddict_last_updated('vers') AS v \gset
-- an UPDATE that matches no row changes nothing and does not bump
UPDATE vers SET value = 'q' WHERE key = 'nobody';
SELECT ddict_last_updated('vers') = :v AS empty_update_no_bump;
-- an UPDATE of another column does not change the dict
ALTER TABLE vers ADD COLUMN note text;
INSERT INTO vers VALUES ('n', '1');
SELECT ddict_last_updated('vers') AS v \gset
UPDATE vers SET note = 'irrelevant';
SELECT ddict_last_updated('vers') = :v AS other_column_no_bump;

-- an UPDATE that stores the same key and value is no change
SELECT ddict_last_updated('vers') AS v \gset
UPDATE vers SET value = value;
SELECT ddict_last_updated('vers') = :v AS same_value_no_bump;
-- a value changed only by a user's BEFORE trigger is a change
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.value := upper(NEW.note); RETURN NEW; END $$;
CREATE TRIGGER shout BEFORE UPDATE ON vers FOR EACH ROW EXECUTE FUNCTION shout();
UPDATE vers SET note = 'loud' WHERE key = 'n';
SELECT ddict_last_updated('vers') > :v AS before_trigger_change_bumps, ddict_get('vers', 'n');
DROP TRIGGER shout ON vers;

-- FK cascades into a dict bump it
CREATE TABLE owners (id text PRIMARY KEY);
CREATE TABLE owned (key text PRIMARY KEY REFERENCES owners ON DELETE CASCADE, value text NOT NULL);
INSERT INTO owners VALUES ('o1');
SELECT ddict_attach('owned');
INSERT INTO owned VALUES ('o1', 'v');
SELECT ddict_last_updated('owned') AS v \gset
DELETE FROM owners;
SELECT ddict_last_updated('owned') > :v AS cascade_bumps, ddict_len('owned');

-- one transaction writing two dicts bumps both
SELECT ddict_last_updated('vers') AS v1, ddict_last_updated('owned') AS v2 \gset
BEGIN;
INSERT INTO vers VALUES ('two', '2');
INSERT INTO owners VALUES ('o2');
INSERT INTO owned VALUES ('o2', 'v');
COMMIT;
SELECT ddict_last_updated('vers') > :v1 AS first_bumped, ddict_last_updated('owned') > :v2 AS second_bumped;

-- the epoch identifies this server run
SELECT ddict_epoch() > 0 AS has_epoch, ddict_epoch() <= ddict_last_updated('vers') AS epoch_precedes;

-- no two dicts share a version, even bumped by one commit within one
-- microsecond: a client that follows a name through a relation swap and
-- compares versions only (the Redis check of autosync) must see the swap
DO $$ BEGIN
  FOR i IN 1..60 LOOP PERFORM ddict_create('uniq' || i); END LOOP;
END $$;
BEGIN;
DO $$ BEGIN
  FOR i IN 1..60 LOOP PERFORM ddict_set('uniq' || i, 'k', 'v'); END LOOP;
END $$;
COMMIT;
SELECT count(DISTINCT ddict_last_updated(('uniq' || i)::regclass)) AS distinct_versions
  FROM generate_series(1, 60) i;
DO $$ BEGIN
  FOR i IN 1..60 LOOP EXECUTE format('DROP TABLE %I', 'uniq' || i); END LOOP;
END $$;
