#!/usr/bin/env bash
# test/bench/fleet.sh — the fleet benchmark (issue 10): N client processes on
# this machine, each caching the same dict(s) in push mode with Redis, a
# writer committing at a fixed rate; for published changes (the caches apply
# each change from the dict's Redis Stream) and, in the same run, for
# version-only push (each cache fetches each change from PostgreSQL) as the
# baseline.  Two variants: 1 dict per process, and 10 dicts per process on
# one shared client.
#
#   bash test/bench/fleet.sh             200 and 1,000 processes (make bench-fleet)
#   QUICK=1 bash test/bench/fleet.sh     100 processes, fewer commits (smoke)
#
# Reports, per variant and mode: PostgreSQL statements per commit (all
# statements but the writer's, from pg_stat_statements), commit-to-visible
# p50/p99/max over all processes (the dict's version is its commit time in
# us; each process records now - version when the change reaches its cache),
# commits seen / expected, PostgreSQL client connections held while idle,
# Redis memory per dict (MEMORY USAGE of the stream and version keys), and
# the fleet's memory (RSS per process).  Output: $OUT/fleet.csv,
# $OUT/fleet.md, $OUT/fleet.png (gnuplot, when installed).
#
# Throwaway servers on free loopback ports (test/lib.sh, PG_BIN honoured;
# redis-server), stopped by PID on exit; every client process is killed by
# PID too.  Bounded: each wait has a timeout; the clients exit by themselves
# after 10 minutes.  Environment: NS (process counts), RATE (commits/s, default 5), COMMITS
# (per mode, default 60), OUT, PG_BIN.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
source test/lib.sh

QUICK=${QUICK:-}
[[ $QUICK == 0 ]] && QUICK=
if [[ $QUICK ]]; then
  NS=${NS:-${N:-100}} COMMITS=${COMMITS:-20} OUT=${OUT:-$ROOT/test/bench/build/results-quick}
else
  NS=${NS:-${N:-200 1000}} COMMITS=${COMMITS:-60} OUT=${OUT:-$ROOT/test/bench/results}
fi
NMAX=0
for n in $NS; do ((n > NMAX)) && NMAX=$n; done
RATE=${RATE:-5}
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

step() { printf '== [%s] %s\n' "$(date -u +%T)" "$*"; }

# ---- build: libddict from the tree, fleet linked statically to it ----
make -s -C src/client >/dev/null || exit 1
mkdir -p test/bench/build
cc -std=c11 -D_GNU_SOURCE -pthread -O2 -Wall -Wextra -Werror -Isrc/client \
  -I"$("$PG_BIN/pg_config" --includedir)" -o test/bench/build/fleet test/bench/fleet.c \
  src/client/build/libddict.a -lpq -lhiredis || exit 1
FLEET=$ROOT/test/bench/build/fleet

# ---- servers ----
SCRATCH=$(make_scratch)
CLIENTS=()
kill_clients() {
  local p
  for p in "${CLIENTS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${CLIENTS[@]}"; do wait "$p" 2>/dev/null; done
  CLIENTS=()
}
cleanup() {
  kill_clients
  stop_pg "$SCRATCH/pg"; stop_started
  bash test/client/redis-ctl.sh stop "$SCRATCH" "${RPORT:-0}"
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
PORT=$(free_port)
RPORT=$(free_port)
step "PostgreSQL (max_connections $((NMAX + 60))) and Redis"
start_pg "$SCRATCH/pg" "$PORT" "shared_preload_libraries = 'ddict, pg_stat_statements'" \
  "max_connections = $((NMAX + 60))" "shared_buffers = 128MB" "pg_stat_statements.track = top" \
  "ddict.redis_url = 'redis://127.0.0.1:$RPORT'" || exit 1
bash test/client/redis-ctl.sh start "$SCRATCH" "$RPORT" || exit 1
CI="host=$SCRATCH/pg/sock port=$PORT user=postgres dbname=fleet"
PSQL=("$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SCRATCH/pg/sock" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE fleet" || exit 1
"${PSQL[@]}" -d fleet -c "CREATE EXTENSION ddict; CREATE EXTENSION pg_stat_statements" || exit 1
for i in $(seq 0 9); do
  "${PSQL[@]}" -d fleet -c "SELECT ddict_create('fleet$i', 'text')" \
    -c "INSERT INTO fleet$i SELECT 'key' || g, repeat('v', 20) FROM generate_series(1, 100) g" \
    -c "INSERT INTO fleet$i VALUES ('k', 'start')" >/dev/null || exit 1
done
RCLI=(redis-cli -h 127.0.0.1 -p "$RPORT")

pct() { # pct FILE P: the P-th percentile (0..100) of sorted numbers in FILE, in ms
  awk -v p="$2" '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
    i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.2f", v[i] / 1000 }' "$1"
}

CSV=$OUT/fleet.csv
echo "dicts_per_process,mode,processes,commits,statements,statements_per_commit,p50_ms,p99_ms,max_ms,seen,expected,idle_pg_connections,redis_bytes_per_dict,rss_kb_per_process" >"$CSV"

run_one() { # run_one NDICTS MODE(published|versions|pubsub)
  local nd=$1 mode=$2 dir i ready t0 idle rss stm done seen expect lat rmem pub
  dir=$SCRATCH/run-$N-$nd-$mode
  mkdir -p "$dir"
  pub=$([[ $mode == published ]] && echo true || echo false)
  for i in $(seq 0 9); do
    "${PSQL[@]}" -d fleet -c "SELECT ddict_publish_changes('fleet$i', $pub)" >/dev/null || return 1
  done
  sleep 1
  step "$mode, $nd dict(s) per process: starting $N processes"
  for i in $(seq "$N"); do
    if [[ $mode == pubsub ]]; then
      "$FLEET" sub 127.0.0.1 "$RPORT" fleet:floor "$dir" 2>>"$dir/errors" &
    else
      "$FLEET" client "$CI" "redis://127.0.0.1:$RPORT" "$nd" fleet "$dir" 2>>"$dir/errors" &
    fi
    CLIENTS+=($!)
    ((i % 20 == 0)) && sleep 0.05
  done
  t0=$(date +%s)
  while ready=$(find "$dir" -name 'ready.*' | wc -l); ((ready < N)); do
    if (($(date +%s) - t0 > 180)); then echo "only $ready of $N processes ready after 180 s" >&2; break; fi
    sleep 0.5
  done
  step "$ready processes ready after $(($(date +%s) - t0)) s; idle 3 s"
  sleep 3
  idle=$("${PSQL[@]}" -d postgres -c "SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'")
  rss=0
  for p in "${CLIENTS[@]}"; do
    rss=$((rss + $(awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  rss=$((rss / N))
  "${PSQL[@]}" -d fleet -c "SELECT pg_stat_statements_reset()" >/dev/null
  step "writer: $COMMITS commits at $RATE/s"
  if [[ $mode == pubsub ]]; then
    done=$("$FLEET" publish 127.0.0.1 "$RPORT" fleet:floor "$RATE" "$COMMITS")
  else
    done=$("$FLEET" writer "$CI" "$nd" fleet "$RATE" "$COMMITS")
  fi
  sleep 3
  stm=$("${PSQL[@]}" -d fleet -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
      WHERE query NOT LIKE '%fleet writer%' AND query NOT LIKE '%pg_stat_statements%'")
  kill_clients
  seen=0
  : >"$dir/all"
  for f in "$dir"/lat.*; do
    [[ -f $f ]] || continue
    seen=$((seen + $(head -1 "$f" | cut -d' ' -f1)))
    tail -n +2 "$f" >>"$dir/all"
  done
  sort -n "$dir/all" -o "$dir/all"
  expect=$((N * done))
  rmem=0
  for i in $(seq 0 $((nd - 1))); do
    rmem=$((rmem + $("${RCLI[@]}" MEMORY USAGE "ddict:fleet:public.fleet$i" | grep -E '^[0-9]+$' || echo 0)))
    rmem=$((rmem + $("${RCLI[@]}" MEMORY USAGE "ddict:fleet:public.fleet$i:changes" | grep -E '^[0-9]+$' || echo 0)))
  done
  rmem=$((rmem / nd)); [[ $mode == pubsub ]] && rmem=0
  lat="$(pct "$dir/all" 50),$(pct "$dir/all" 99),$(pct "$dir/all" 100)"
  echo "$nd,$mode,$N,$done,$stm,$(awk -v s="$stm" -v c="$done" 'BEGIN { printf "%.2f", c ? s / c : 0 }'),$lat,$seen,$expect,$idle,$rmem,$rss" | tee -a "$CSV"
  [[ -s $dir/errors ]] && { echo "client errors:"; sort "$dir/errors" | uniq -c | head -5; }
  # before the next run: the version-only runs leave no stream behind
  for i in $(seq 0 9); do "${RCLI[@]}" DEL "ddict:fleet:public.fleet$i:changes" >/dev/null; done
  return 0
}

for N in $NS; do
  for nd in ${VARIANTS:-1 10}; do
    for mode in ${MODES:-published versions pubsub}; do
      # the floor (bare subscribers of one channel) once per process count
      [[ $mode == pubsub && $nd != 1 ]] && continue
      run_one "$nd" "$mode"
    done
  done
done

# ---- summary and plot ----
{
  echo "Fleet benchmark ($(date -u +%F), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)):"
  echo "A writer committing $RATE/s ($COMMITS commits per row); every process caches every dict of its row."
  echo
  echo "| processes | dicts/process | push mode | statements/commit | commit→visible p50 / p99 / max (ms) | seen / expected | PG connections idle | Redis bytes/dict | RSS/process |"
  echo "|---|---|---|---|---|---|---|---|---|"
  tail -n +2 "$CSV" | while IFS=, read -r nd mode n c s spc p50 p99 mx seen exp idle rb rss; do
    case $mode in
      published) label='published changes' ;;
      versions) label='versions only (baseline)' ;;
      *) label='floor: bare hiredis subscribers of one channel, no libddict' ;;
    esac
    echo "| $n | $nd | $label | $spc | $p50 / $p99 / $mx | $seen / $exp | $idle | $rb | $((rss / 1024)) MB |"
  done
} >"$OUT/fleet.md"
cat "$OUT/fleet.md"
# a full run with the default output: the README's fleet table, between its markers
if [[ ! $QUICK && $OUT == "$ROOT/test/bench/results" ]] && grep -q '<!-- fleet:start -->' README.md; then
  perl -0pi -e '
    BEGIN { local $/; open my $f, "<", shift @ARGV or die; $s = <$f>; }
    s/(<!-- fleet:start -->\n).*?(<!-- fleet:end -->)/$1$s$2/s or die "README fleet markers not found\n";
  ' "$OUT/fleet.md" README.md
fi
if command -v gnuplot >/dev/null; then
  # one row per processes x dicts: statements/commit and p99 of each mode
  # (the floor: its process count's one-channel run, on the 1-dict row)
  awk -F, 'NR > 1 { k = $3 "x" $1; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
      spc[k, $2] = $6; p99[k, $2] = $8; if ($2 == "pubsub") fl[$3] = $8 }
    END { for (i = 1; i <= n; i++) { k = order[i]; split(k, a, "x")
      printf "%s,%s,%s,%s,%s,%s\n", k, spc[k, "published"], spc[k, "versions"], p99[k, "published"],
        p99[k, "versions"], (a[2] == 1 && (a[1] in fl)) ? fl[a[1]] : "" } }' "$CSV" >"$OUT/fleet-plot.csv"
  gnuplot -e "csv='$OUT/fleet-plot.csv'; out='$OUT/fleet.png'" test/bench/fleet.gp 2>/dev/null || echo "(no plot: gnuplot failed)"
fi
