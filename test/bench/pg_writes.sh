#!/usr/bin/env bash
# test/bench/pg_writes.sh — server-side figures, with pgbench against the
# running cluster ($PGHOST/$PGPORT): upsert TPS through the ddict triggers
# against the same table without them, ddict_last_updated() against
# SELECT 1, and the autosync check exactly as libddict sends it (prepared
# ddict_changes() answering "unchanged"), its scalar form ddict_unchanged()
# and the statement's bare shape against SELECT 1: the server's share of an
# autosync read.  Appends CSV rows to $RESULTS (see run.sh for
# the columns).
#
# With PIN_CPU and PG_POSTMASTER_PID set, the one-client runs put pgbench and
# the backends the server forks for it on that one CPU: on a small VM a
# wakeup across CPUs costs tens of µs and lands at random, which made
# one-client TPS vary several-fold between runs.  Two-client runs are not
# pinned.
#
# The trigger overhead is measured with the server's Redis publishing off.
# With PUBLISH_URL set (a ddict.redis_url), a third variant runs the ddict
# table with publishing on; the setting is reset (to postgresql.conf's) at
# the end.
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
# libddict's check on a direct client (ddict_client_options.direct, src/client/
# session.c and sync.c): the name arrives as a text parameter and is cast to
# regclass; the variables are bound as parameters (-M prepared).  ddict_open()
# and pooled clients send it unnamed, inside BEGIN ISOLATION LEVEL READ
# COMMITTED ... COMMIT (the pool figures of `ddict_bench pool` measure both).
cat > "$work/check.sql" <<'SQL'
SELECT kind, key, value, version, epoch, cursor, dict FROM ddict_changes(:dict::pg_catalog.regclass, :v::pg_catalog.int8, :e::pg_catalog.int8, :c::pg_catalog.int8, :o::pg_catalog.oid);
SQL
# The scalar check (ddict_unchanged(), same parameters): what a client can
# send instead, falling back to ddict_changes() when it returns NULL.
cat > "$work/scalar.sql" <<'SQL'
SELECT ddict_unchanged(:dict::pg_catalog.regclass, :v::pg_catalog.int8, :e::pg_catalog.int8, :c::pg_catalog.int8, :o::pg_catalog.oid);
SQL
# The same shape without the function: four bound parameters, seven columns
# out; what SELECT 1 does not pay and no server function can avoid.
cat > "$work/shape.sql" <<'SQL'
SELECT 'u'::pg_catalog."char", NULL::pg_catalog.text, NULL::pg_catalog.bytea, :v::pg_catalog.int8, :e::pg_catalog.int8, :c::pg_catalog.int8, :o::pg_catalog.oid;
SQL

# tps SCRIPT CLIENTS [pgbench options]: one pgbench run, prints its TPS
tps() {
  local pin=()
  if [[ $2 == 1 && -n ${PIN_CPU:-} && -n ${PG_POSTMASTER_PID:-} ]]; then
    taskset -p -c "$PIN_CPU" "$PG_POSTMASTER_PID" >/dev/null
    pin=(taskset -c "$PIN_CPU")
  fi
  local out
  out=$("${pin[@]}" "$PGBENCH" -n -M prepared -T "$SECS" -c "$2" -j "$2" "${@:3}" -f "$work/$1" bench 2>&1 |
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
  if ((${#pin[@]})); then
    taskset -p -c "0-$(($(nproc) - 1))" "$PG_POSTMASTER_PID" >/dev/null
  fi
  [[ $out ]] || { echo "pg_writes.sh: pgbench $1 -c $2 failed" >&2; return 1; }
  echo "$out"
}

# paired A B: per repetition, how much lower B's TPS is than A's, in percent
paired() { paste "$work/$1" "$work/$2" | awk '{ print (1 - $2 / $1) * 100 }'; }

# median/min/max of the numbers on stdin, as "median,min,max"
stats() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f,%.1f,%.1f", m, a[1], a[NR]}'; }

# publish on|off: the server's Redis publishing, and wait until it took effect
publish() {
  local url='' want=f
  [[ $1 == on ]] && url=$PUBLISH_URL want=t
  psql -Xq -d bench -c "ALTER SYSTEM SET ddict.redis_url = '$url'" -c "SELECT pg_reload_conf()" >/dev/null
  for _ in $(seq 100); do
    [[ $(psql -XAt -d bench -c "SELECT enabled AND connected FROM ddict_redis_status()") == "$want" ]] && return 0
    sleep 0.05
  done
  echo "pg_writes.sh: Redis publishing did not turn $1" >&2
  return 1
}
if [[ ${PUBLISH_URL:-} ]]; then publish off; fi

for c in 1 2; do
  # Interleave the variants so that drift of the machine hits them alike.
  : > "$work/plain" ; : > "$work/dict" ; : > "$work/dictpub"
  for r in $(seq "$REPS"); do
    tps w_plain.sql "$c" >> "$work/plain"
    tps w_dict.sql "$c" >> "$work/dict"
    if [[ ${PUBLISH_URL:-} ]]; then
      publish on
      tps w_dict.sql "$c" >> "$work/dictpub"
      publish off
    fi
  done
  echo "writes,upsert_tps_${c}client,plain table,$(stats < "$work/plain"),tps,$REPS" >> "$RESULTS"
  echo "writes,upsert_tps_${c}client,ddict table,$(stats < "$work/dict"),tps,$REPS" >> "$RESULTS"
  # Runs of a repetition are back to back: their ratio is steadier than the ratio of medians.
  echo "writes,trigger_overhead_pct_${c}client,ddict vs plain (paired runs),$(paired plain dict | stats),%,$REPS" >> "$RESULTS"
  if [[ ${PUBLISH_URL:-} ]]; then
    echo "writes,upsert_tps_${c}client,ddict table + Redis publishing,$(stats < "$work/dictpub"),tps,$REPS" >> "$RESULTS"
    echo "writes,trigger_overhead_pct_${c}client,ddict + Redis publishing vs plain (paired runs),$(paired plain dictpub | stats),%,$REPS" >> "$RESULTS"
  fi
done

# A client's state after a full load of w_dict, which no one writes now: every
# check answers "unchanged" (checked once below).
read -r v e c o < <(psql -XAt -F' ' -d bench -c \
  "SELECT version, epoch, cursor, dict FROM ddict_changes('w_dict') WHERE kind = 'f'")
check_vars=(-D dict=w_dict -D "v=$v" -D "e=$e" -D "c=$c" -D "o=$o")
kind=$(psql -XAt -d bench -c "SELECT kind FROM ddict_changes('w_dict', $v, $e, $c, $o)")
[[ $kind == u ]] || { echo "pg_writes.sh: the check answered '$kind', not 'u'" >&2; exit 1; }

scalar=$(psql -XAt -d bench -c "SELECT to_regprocedure('ddict_unchanged(regclass,bigint,bigint,bigint,oid)') IS NOT NULL")
if [[ $scalar == t ]]; then
  [[ $(psql -XAt -d bench -c "SELECT ddict_unchanged('w_dict', $v, $e, $c, $o) IS NOT NULL") == t ]] ||
    { echo "pg_writes.sh: ddict_unchanged() did not answer unchanged" >&2; exit 1; }
fi

: > "$work/lu" ; : > "$work/one" ; : > "$work/check" ; : > "$work/shape" ; : > "$work/scalar"
for r in $(seq "$REPS"); do
  tps one.sql 1 >> "$work/one"
  tps lu.sql 1 >> "$work/lu"
  tps check.sql 1 "${check_vars[@]}" >> "$work/check"
  tps shape.sql 1 "${check_vars[@]}" >> "$work/shape"
  if [[ $scalar == t ]]; then tps scalar.sql 1 "${check_vars[@]}" >> "$work/scalar"; fi
done
echo "version,read_tps,SELECT 1,$(stats < "$work/one"),tps,$REPS" >> "$RESULTS"
echo "version,read_tps,ddict_last_updated(),$(stats < "$work/lu"),tps,$REPS" >> "$RESULTS"
echo "version,read_tps,ddict_changes() unchanged check,$(stats < "$work/check"),tps,$REPS" >> "$RESULTS"
# per repetition: how much longer than SELECT 1 (runs of a repetition are back to back)
ratio() { paste "$work/one" "$work/$1" | awk '{ printf "%.4f\n", $1 / $2 }' | sort -g |
  awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f,%.3f,%.3f", m, a[1], a[NR]}'; }
echo "version,check_vs_select1,ddict_changes() check / SELECT 1 (paired runs),$(ratio check),x,$REPS" >> "$RESULTS"
echo "version,check_vs_select1,same shape without a function / SELECT 1 (paired runs),$(ratio shape),x,$REPS" >> "$RESULTS"
if [[ $scalar == t ]]; then
  echo "version,read_tps,ddict_unchanged() check,$(stats < "$work/scalar"),tps,$REPS" >> "$RESULTS"
  echo "version,check_vs_select1,ddict_unchanged() check / SELECT 1 (paired runs),$(ratio scalar),x,$REPS" >> "$RESULTS"
fi
echo "version,wal_level,server,$(psql -XAt -d bench -c "SELECT CASE current_setting('wal_level') WHEN 'minimal' THEN 0 WHEN 'replica' THEN 1 ELSE 2 END"),,,level,1" >> "$RESULTS"
if [[ ${PUBLISH_URL:-} ]]; then
  psql -Xq -d bench -c "ALTER SYSTEM RESET ddict.redis_url" -c "SELECT pg_reload_conf()" >/dev/null
fi
