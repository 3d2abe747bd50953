#!/usr/bin/env bash
# test/bench/pg_writes.sh — server-side figures, with pgbench against the
# running cluster ($PGHOST/$PGPORT): upsert TPS through the ddict triggers
# against the same table without them, and ddict_last_updated() against
# SELECT 1.  Appends CSV rows to $RESULTS (see run.sh for the columns).
set -euo pipefail
: "${RESULTS:?}" "${REPS:=3}" "${SECS:=10}"
PGBENCH=${PG_BIN:-/usr/lib/postgresql/15/bin}/pgbench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

psql -Xq -v ON_ERROR_STOP=1 -d bench <<'SQL'
DROP TABLE IF EXISTS w_plain, w_dict;
CREATE TABLE w_plain (key text PRIMARY KEY, value text NOT NULL);
SELECT ddict_create('w_dict');
INSERT INTO w_plain SELECT 'k' || i, 'v' FROM generate_series(1, 100000) i;
INSERT INTO w_dict SELECT 'k' || i, 'v' FROM generate_series(1, 100000) i;
VACUUM ANALYZE w_plain, w_dict;
SQL

for t in w_plain w_dict; do
  cat > "$work/$t.sql" <<SQL
\set k random(1, 100000)
INSERT INTO $t VALUES ('k' || :k, md5(random()::text)) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
SQL
done
echo "SELECT ddict_last_updated('w_dict');" > "$work/lu.sql"
echo "SELECT 1;" > "$work/one.sql"

# tps SCRIPT CLIENTS: one pgbench run, prints its TPS
tps() {
  "$PGBENCH" -n -M prepared -T "$SECS" -c "$2" -j "$2" -f "$work/$1" bench 2>/dev/null |
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

# median/min/max of the numbers on stdin, as "median,min,max"
stats() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f,%.1f,%.1f", m, a[1], a[NR]}'; }

for c in 1 2; do
  # Interleave the variants so that drift of the machine hits both alike.
  : > "$work/plain" ; : > "$work/dict"
  for r in $(seq "$REPS"); do
    tps w_plain.sql "$c" >> "$work/plain"
    tps w_dict.sql "$c" >> "$work/dict"
  done
  echo "writes,upsert_tps_${c}client,plain table,$(stats < "$work/plain"),tps,$REPS" >> "$RESULTS"
  echo "writes,upsert_tps_${c}client,ddict table,$(stats < "$work/dict"),tps,$REPS" >> "$RESULTS"
done

: > "$work/lu" ; : > "$work/one"
for r in $(seq "$REPS"); do
  tps one.sql 1 >> "$work/one"
  tps lu.sql 1 >> "$work/lu"
done
echo "version,read_tps,SELECT 1,$(stats < "$work/one"),tps,$REPS" >> "$RESULTS"
echo "version,read_tps,ddict_last_updated(),$(stats < "$work/lu"),tps,$REPS" >> "$RESULTS"
