-- ddict_changes() follows the name and says which relation it means now: the
-- header's "dict" column.  A client passes the relation its copy came from as
-- since_dict; when the name has come to mean another relation (a blue/green
-- schema swap), its version, epoch and cursor describe something else and
-- the answer is 'f' for the relation the name means now.
CREATE SCHEMA live;
CREATE SCHEMA staging;
SELECT ddict_create('live.conf');
SELECT ddict_create('staging.conf');
SELECT ddict_set('live.conf', 'color', 'blue');
SELECT ddict_set('live.conf', 'old_only', 'x');
SELECT ddict_set('staging.conf', 'color', 'green');
SELECT 'live.conf'::regclass::oid AS old_oid \gset

-- the header names the relation; key rows do not
SELECT kind, key, dict = :old_oid AS this_relation
  FROM ddict_changes('live.conf') ORDER BY kind = 's', key;
SELECT version AS v, epoch AS e, "cursor" AS c FROM ddict_changes('live.conf') WHERE kind = 'f' \gset

-- same relation: unchanged, then an exact delta
SELECT kind, dict = :old_oid AS this_relation FROM ddict_changes('live.conf', :v, :e, :c, :old_oid);
SELECT ddict_set('staging.conf', 'size', 'large');
SELECT kind, key FROM ddict_changes('live.conf', :v, :e, :c, :old_oid) ORDER BY kind = 's', key;

-- the swap
ALTER SCHEMA live RENAME TO old_live;
ALTER SCHEMA staging RENAME TO live;

-- since_dict is the old relation: the new one in full, whatever the rest says
SELECT kind, key, convert_from(value, 'UTF8') AS value,
       dict = 'live.conf'::regclass::oid AS new_relation
  FROM ddict_changes('live.conf', :v, :e, :c, :old_oid) ORDER BY kind = 's', key;
-- even with the new relation's own version, epoch and cursor
SELECT version AS v2, "cursor" AS c2 FROM ddict_changes('live.conf') WHERE kind = 'f' \gset
SELECT kind FROM ddict_changes('live.conf', :v2, :e, :c2, :old_oid) WHERE kind IN ('u', 'd', 'f');
-- with the new relation's OID, the usual answers again
SELECT 'live.conf'::regclass::oid AS new_oid \gset
SELECT kind FROM ddict_changes('live.conf', :v2, :e, :c2, :new_oid) WHERE kind IN ('u', 'd', 'f');
-- four arguments: as in 1.0 (no relation check)
SELECT kind FROM ddict_changes('live.conf', :v2, :e, :c2) WHERE kind IN ('u', 'd', 'f');
-- a NULL since_dict is "unknown": no check either
SELECT kind FROM ddict_changes('live.conf', :v2, :e, :c2, NULL) WHERE kind IN ('u', 'd', 'f');

DROP SCHEMA live CASCADE;
DROP SCHEMA old_live CASCADE;
