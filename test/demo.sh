#!/usr/bin/env bash
# test/demo.sh — `make demo`: a dict served from process memory while plain
# SQL changes it.
#
# On a fresh Debian 12 machine: installs what is missing (test/deps.sh),
# builds and installs the extension and libddict, starts a throwaway cluster
# that publishes dict versions to a throwaway redis-server, creates a
# `settings` dict, and runs two readers (src/client/examples/demo_reader.c,
# compiled with `pkg-config --cflags --libs ddict`) while a writer changes
# settings through psql:
#   reader  4 threads, autosync: every read checks the version (PostgreSQL)
#   push    2 threads, push mode: reads never touch the network; the handle's
#           thread follows the versions published in Redis (SUBSCRIBE)
# Both print every change as it arrives, with how long after its commit it
# became visible; the autosync reader also prints reads/s, the version,
# reloads and rows fetched every second.  Everything started here is stopped
# on exit (by PID).  About 20 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

bash test/deps.sh
source test/lib.sh

echo "== building and installing the extension and libddict"
make -s >/dev/null
make -s install >/dev/null

SCRATCH=$(make_scratch)
READER= PUSHER= REDIS_PID=
cleanup() {
  local p
  for p in $READER $PUSHER; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  stop_pg "$SCRATCH/pg"
  stop_started
  [[ -n $REDIS_PID ]] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

echo "== starting a throwaway redis-server (no persistence)"
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$SCRATCH/redis.log" </dev/null >/dev/null 2>&1 &
REDIS_PID=$!
for _ in $(seq 100); do
  [[ $(redis-cli -h 127.0.0.1 -p "$RPORT" PING 2>/dev/null) == PONG ]] && break
  sleep 0.05
done
REDIS_URL=redis://127.0.0.1:$RPORT

echo "== starting a throwaway PostgreSQL 15 cluster (ddict.redis_url = '$REDIS_URL')"
PORT=$(free_port)
start_pg "$SCRATCH/pg" "$PORT" "ddict.redis_url = '$REDIS_URL'"
export PGHOST=$SCRATCH/pg/sock PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
export PGOPTIONS="-c client_min_messages=warning"
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

psql -c "CREATE EXTENSION ddict" \
     -c "SELECT ddict_create('settings')" \
     -c "INSERT INTO settings VALUES ('banner', 'Welcome!'), ('rate_limit', '100'),
                                     ('feature.dark_mode', 'off')" >/dev/null
echo "== settings:"
psql -At -F ' = ' -c "SELECT key, value FROM settings ORDER BY key" | sed 's/^/   /'

echo "== compiling the reader: cc demo_reader.c \$(pkg-config --cflags --libs ddict)"
# shellcheck disable=SC2046 # pkg-config output is meant to be split
cc -O2 -pthread -o "$SCRATCH/demo_reader" src/client/examples/demo_reader.c \
  $(pkg-config --cflags --libs ddict)

SECONDS_TO_RUN=14
echo "== reader: 4 threads reading 3 keys for ${SECONDS_TO_RUN}s (autosync: every read checks the version)"
echo "== push:   2 threads reading the same keys (push mode: versions pushed from Redis)"
"$SCRATCH/demo_reader" -t 4 -s "$SECONDS_TO_RUN" settings banner rate_limit feature.dark_mode &
READER=$!
"$SCRATCH/demo_reader" -l push -q -m push -r "$REDIS_URL" -t 2 -s "$SECONDS_TO_RUN" \
  settings banner rate_limit feature.dark_mode &
PUSHER=$!

sleep 2.5
writer() { echo "   writer: $1"; psql -c "$1" >/dev/null; }
writer "UPDATE settings SET value = '150' WHERE key = 'rate_limit'"
sleep 1.5
writer "UPDATE settings SET value = 'on' WHERE key = 'feature.dark_mode'"
sleep 1.5
writer "INSERT INTO settings VALUES ('maintenance', 'Saturday 02:00')"
sleep 1.5
writer "BEGIN; UPDATE settings SET value = 'never seen' WHERE key = 'banner'; ROLLBACK"
sleep 1.5
writer "BEGIN; UPDATE settings SET value = 'Hello again'   WHERE key = 'banner';
              UPDATE settings SET value = '200' WHERE key = 'rate_limit'; COMMIT"
sleep 1.5
writer "DELETE FROM settings WHERE key = 'maintenance'"
sleep 1
echo "   writer: (and now 1000 unrelated keys in one statement)"
psql -c "INSERT INTO settings SELECT 'bulk.' || g, g::text FROM generate_series(1, 1000) g" >/dev/null

wait "$READER" "$PUSHER"
READER= PUSHER=
echo "== done: both readers saw every committed change (the rolled-back one never);"
echo "   the push reader's only server round trips were the deltas themselves"
