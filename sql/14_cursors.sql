-- Cursors (changelog.c, cursor.c): a dict's own change number, sealed by the
-- server.  They reveal nothing about other dicts, cannot be made up, and a
-- key that lived only inside one transaction is never named.
SELECT ddict_create('cur_a');
SELECT ddict_create('cur_b');
SELECT ddict_set('cur_a', 'keep', '1');
SELECT ddict_set('cur_a', 'gone', '1');
SELECT version AS v, epoch AS e, "cursor" AS c FROM ddict_changes('cur_a') WHERE kind = 'f' \gset

-- Writes elsewhere, long keys and short, do not move cur_a's cursor: its
-- steps would measure keys the reader may not be allowed to see.
SELECT ddict_set('cur_b', repeat('x', 500), '1');
SELECT ddict_set('cur_b', 'y', '1');
SELECT "cursor" = :c AS unmoved FROM ddict_changes('cur_a', :v, :e, :c);

-- The ring turns over several times (8 MB by default) while cur_a is quiet:
-- its cursor still gives an exact delta.
INSERT INTO cur_b SELECT 'bulk' || i || repeat('z', 900), 'v' FROM generate_series(1, 9000) i;
INSERT INTO cur_b SELECT 'more' || i || repeat('z', 900), 'v' FROM generate_series(1, 9000) i;
SELECT ddict_set('cur_a', 'after_turn', '1');
SELECT kind, key FROM ddict_changes('cur_a', :v, :e, :c) ORDER BY kind <> 'd', kind, key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('cur_a', :v, :e, :c) WHERE kind = 'd' \gset

-- A made-up older cursor: the number before ours with our seal bits (a
-- valid change number of this dict).  It would name 'gone', deleted before
-- it; the server did not seal it, so the answer is full: no tombstones.
SELECT ddict_delete('cur_a', 'gone');
SELECT version AS v2, "cursor" AS c2 FROM ddict_changes('cur_a', :v, :e, :c) WHERE kind = 'd' \gset
SELECT ddict_set('cur_a', 'later', '1');
SELECT kind, key FROM ddict_changes('cur_a', :v2, :e, (((:c2 >> 23) - 1) << 23) | (:c2 & 8388607))
  WHERE kind <> 's' ORDER BY kind, key;
-- ... and from then on no cursor handed out before is accepted (so that a
-- guess of the 23 bits of a seal can only reach numbers from after it):
-- our own cursor, one commit behind, reloads in full too
SELECT kind, key FROM ddict_changes('cur_a', :v2, :e, :c2) WHERE kind <> 's' ORDER BY kind, key;
SELECT version AS v2, "cursor" AS c2 FROM ddict_changes('cur_a', :v2, :e, :c2) WHERE kind = 'f' \gset
-- ... while a cursor handed out after it gives deltas again
SELECT ddict_set('cur_a', 'later2', '1');
SELECT kind, key FROM ddict_changes('cur_a', :v2, :e, :c2) ORDER BY kind <> 'd', kind, key;
-- a cursor of another dict is not one of this dict's
SELECT "cursor" AS cb FROM ddict_changes('cur_b') WHERE kind = 'f' \gset
SELECT kind FROM ddict_changes('cur_a', :v2, :e, :cb) WHERE kind IN ('u', 'd', 'f');
SELECT version AS v, "cursor" AS c FROM ddict_changes('cur_a', :v2, :e, :c2) WHERE kind = 'd' \gset

-- A key inserted and deleted in one transaction existed for nobody: the
-- delta does not name it (the version still moves).
BEGIN;
SELECT ddict_set('cur_a', 'ghost', '1');
SELECT ddict_delete('cur_a', 'ghost');
COMMIT;
INSERT INTO cur_a VALUES ('ghost2', '1');
BEGIN;
UPDATE cur_a SET key = 'ghost3' WHERE key = 'keep';
UPDATE cur_a SET key = 'keep' WHERE key = 'ghost3';
COMMIT;
BEGIN;
INSERT INTO cur_a VALUES ('ghost4', '1');
UPDATE cur_a SET value = '2' WHERE key = 'ghost4';
DELETE FROM cur_a WHERE key IN ('ghost4');
COMMIT;
SELECT kind, key, version > :v AS newer FROM ddict_changes('cur_a', :v, :e, :c)
  ORDER BY kind <> 'd', kind, key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('cur_a', :v, :e, :c) WHERE kind = 'd' \gset

-- ... but a key that existed before is named, however the transaction
-- ended with it: deleted, re-inserted and deleted again
BEGIN;
DELETE FROM cur_a WHERE key = 'ghost2';
INSERT INTO cur_a VALUES ('ghost2', 'back');
DELETE FROM cur_a WHERE key = 'ghost2';
COMMIT;
-- ... and a savepoint rolled back does not make a kept key look transient
BEGIN;
SELECT ddict_set('cur_a', 'saved', '1');
SAVEPOINT s;
SELECT ddict_delete('cur_a', 'saved');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT kind, key FROM ddict_changes('cur_a', :v, :e, :c) ORDER BY kind <> 'd', kind, key;

DROP TABLE cur_a, cur_b;

-- The rule counts rows and does not follow the order of events: AFTER ROW
-- events of a trigger's own writes (or a foreign key's actions) arrive
-- before those of the statement that caused them.
SELECT ddict_create('cur_t');
CREATE FUNCTION cur_t_reinsert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.value IN ('temp', 'old') THEN INSERT INTO cur_t VALUES (OLD.key, 'kept'); END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER a_reinsert AFTER DELETE ON cur_t FOR EACH ROW EXECUTE FUNCTION cur_t_reinsert();
INSERT INTO cur_t VALUES ('B', 'old');
SELECT version AS v, epoch AS e, "cursor" AS c FROM ddict_changes('cur_t') WHERE kind = 'f' \gset
BEGIN;
INSERT INTO cur_t VALUES ('A', 'temp');
DELETE FROM cur_t WHERE key = 'A';        -- the trigger inserts A = kept
DELETE FROM cur_t WHERE key = 'B';        -- the trigger inserts B = kept
COMMIT;
SELECT kind, key, convert_from(value, 'UTF8') AS value FROM ddict_changes('cur_t', :v, :e, :c)
  ORDER BY kind <> 'd', kind, key;
SELECT version AS v, "cursor" AS c FROM ddict_changes('cur_t', :v, :e, :c) WHERE kind = 'd' \gset
-- a row from before updated without a change is no longer "from before" by
-- its xmin: it must not make its key look transient
DROP TRIGGER a_reinsert ON cur_t;
BEGIN;
UPDATE cur_t SET value = value WHERE key = 'B';
DELETE FROM cur_t WHERE key = 'B';
INSERT INTO cur_t VALUES ('B', 'new');
COMMIT;
SELECT kind, key, convert_from(value, 'UTF8') AS value FROM ddict_changes('cur_t', :v, :e, :c)
  ORDER BY kind <> 'd', kind, key;
DROP TABLE cur_t;
DROP FUNCTION cur_t_reinsert();

-- a foreign key's action moves a row onto a key deleted in the same
-- transaction: the key exists after it
CREATE TABLE cur_f (key text PRIMARY KEY DEFAULT 'K', value text NOT NULL, ref text UNIQUE,
                    FOREIGN KEY (key) REFERENCES cur_f (ref) ON DELETE SET DEFAULT
                    DEFERRABLE INITIALLY DEFERRED);
SELECT ddict_attach('cur_f');
SELECT version AS v, epoch AS e, "cursor" AS c FROM ddict_changes('cur_f') WHERE kind = 'f' \gset
BEGIN;
INSERT INTO cur_f VALUES ('K', 'temp', 'a'), ('a', 'b', 'K');
DELETE FROM cur_f WHERE key = 'K';
COMMIT;
SELECT kind, key, convert_from(value, 'UTF8') AS value FROM ddict_changes('cur_f', :v, :e, :c)
  ORDER BY kind <> 'd', kind, key;
DROP TABLE cur_f;

-- Rows read by a transaction that changed the dict would include its
-- uncommitted changes: refused ("unchanged" needs no rows and is answered)
SELECT ddict_create('cur_u');
SELECT version AS v, epoch AS e, "cursor" AS c, dict AS d FROM ddict_changes('cur_u') WHERE kind = 'f' \gset
BEGIN;
INSERT INTO cur_u VALUES ('phantom', 'never committed');
SELECT kind FROM ddict_changes('cur_u', :v, :e, :c, :d);
SELECT * FROM ddict_changes('cur_u');
ROLLBACK;
BEGIN;
SAVEPOINT s;
INSERT INTO cur_u VALUES ('phantom', 'rolled back');
ROLLBACK TO SAVEPOINT s;
SELECT kind, key FROM ddict_changes('cur_u') ORDER BY kind <> 'f', key;
COMMIT;
DROP TABLE cur_u;
