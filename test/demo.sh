#!/usr/bin/env bash
# test/demo.sh — `make demo`: a dict served from process memory while plain
# SQL changes it.
#
# On a fresh Debian 12 machine: installs what is missing (test/deps.sh),
# builds and installs the extension and libddict, starts a throwaway cluster,
# creates a `settings` dict, and runs a reader (src/client/examples/
# demo_reader.c, compiled with `pkg-config --cflags --libs ddict`) whose
# threads serve reads in a loop from one cached handle, while a writer
# changes settings through psql.  The reader prints reads/s, the version,
# reloads, rows fetched, and every change as it arrives.  Everything started
# here is stopped on exit.  About 20 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

bash test/deps.sh
source test/lib.sh

echo "== building and installing the extension and libddict"
make -s >/dev/null
make -s install >/dev/null

SCRATCH=$(make_scratch)
READER=
cleanup() {
  [[ -n $READER ]] && kill "$READER" 2>/dev/null && wait "$READER" 2>/dev/null
  stop_pg "$SCRATCH/pg"
  stop_started
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL 15 cluster"
PORT=$(free_port)
start_pg "$SCRATCH/pg" "$PORT"
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
"$SCRATCH/demo_reader" -t 4 -s "$SECONDS_TO_RUN" settings banner rate_limit feature.dark_mode &
READER=$!

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

wait "$READER"
READER=
echo "== done: the reader saw every committed change (the rolled-back one never)"
