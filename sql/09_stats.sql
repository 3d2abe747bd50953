-- ddict_stats: per dict, the version, commits that moved it, when it last moved.
SELECT ddict_create('counted');
SELECT commits AS c0 FROM ddict_stats WHERE dict = 'counted'::regclass \gset
SELECT ddict_set('counted', 'a', '1');
SELECT ddict_set('counted', 'b', '2');
BEGIN;
SELECT ddict_set('counted', 'c', '3');
ROLLBACK;
SELECT commits - :c0 AS new_commits,
       version = ddict_last_updated('counted') AS version_matches,
       last_changed BETWEEN now() - interval '1 minute' AND clock_timestamp() AS recent
  FROM ddict_stats WHERE dict = 'counted'::regclass;
SELECT count(*) = (SELECT count(*) FROM ddict_registry) AS one_row_per_dict FROM ddict_stats;
