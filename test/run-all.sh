#!/usr/bin/env bash
# test/run-all.sh — what `make test` runs: install what is missing, build,
# install, then every suite against throwaway servers.  Ends with the line
# "N passed, N failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash test/deps.sh || { echo "0 passed, 1 failed"; exit 1; }
source test/lib.sh

make -s >/dev/null && make -s install >/dev/null ||
  { echo "build or install failed"; echo "0 passed, 1 failed"; exit 1; }

PASSED=0 FAILED=0
SCRATCH=$(make_scratch)
OUT=$ROOT/test/out
rm -rf "$OUT"; mkdir -p "$OUT"
cleanup() { stop_started; rm -rf "$SCRATCH"; }
trap cleanup EXIT

count_regress() {   # count_regress LOGFILE: pg_regress / pg_isolation_regress lines
  local ok bad
  ok=$(grep -cE '\.\.\. ok' "$1")
  bad=$(grep -cE '\.\.\. FAILED|\.\.\. failed' "$1")
  PASSED=$((PASSED + ok)); FAILED=$((FAILED + bad))
  echo "  -> $ok passed, $bad failed"
}

suite() { echo; echo "=== $1"; }

PORT=$(free_port)
start_pg "$SCRATCH/main" "$PORT" "shared_preload_libraries = 'ddict, pg_stat_statements'" ||
  { echo "0 passed, 1 failed"; exit 1; }
export PGHOST=$SCRATCH/main/sock PGPORT=$PORT PGUSER=postgres

suite "pg_regress"
"$PGXS_DIR/test/regress/pg_regress" --bindir="$PG_BIN" --inputdir=. \
  --outputdir="$OUT/regress" --dbname=ddict_regress --user=postgres \
  $(sed -n 's/^REGRESS *= *//p' Makefile) 2>&1 | tee "$OUT/regress.log"
count_regress "$OUT/regress.log"
[[ -f $OUT/regress/regression.diffs ]] && head -200 "$OUT/regress/regression.diffs"

suite "isolation"
"$PGXS_DIR/test/isolation/pg_isolation_regress" --bindir="$PG_BIN" \
  --inputdir=test/isolation --outputdir="$OUT/isolation" --dbname=ddict_isolation --user=postgres \
  $(sed -n 's/^ISOLATION *= *//p' Makefile) 2>&1 | tee "$OUT/isolation.log"
count_regress "$OUT/isolation.log"
[[ -f $OUT/isolation/regression.diffs ]] && head -200 "$OUT/isolation/regression.diffs"

suite "TAP (PostgreSQL::Test::Cluster)"
TAPDIR=$SCRATCH/tap; as_pg mkdir -p "$TAPDIR"
# The tests run as the server's user; a checkout it cannot read (a root-only
# CI folder) is copied where it can.
TAPROOT=$ROOT
if ! as_pg test -r "$ROOT/test/t/001_restart.pl"; then
  TAPROOT=$SCRATCH/tree
  mkdir -p "$TAPROOT" && cp -a "$ROOT"/. "$TAPROOT"/ && chown -R postgres: "$TAPROOT"
fi
(cd "$TAPROOT" && as_pg env PATH="$PG_BIN:$PATH" PERL5LIB="$PGXS_DIR/test/perl:$TAPROOT/test/t" \
  TESTDIR="$TAPDIR" PG_REGRESS="$PGXS_DIR/test/regress/pg_regress" \
  prove -v test/t/*.pl) > "$OUT/tap.log" 2>&1
# The verbose log stays in test/out/tap.log; show each test and any failure.
grep -E '^(ok|not ok) [0-9]+|^#\s+(Failed|got|expected)|^test/t/.*\.pl|^Result' "$OUT/tap.log"
ok=$(grep -cE '^ok [0-9]+' "$OUT/tap.log")
bad=$(grep -cE '^not ok [0-9]+' "$OUT/tap.log")
# A script that died before its plan counts as a failure too.
died=$(grep -cE 'Dubious|No plan found|Bad plan|Bailout called' "$OUT/tap.log")
# No test at all is a failure too (the scripts could not even be read).
((ok + bad == 0)) && { died=$((died + 1)); head -5 "$OUT/tap.log"; }
PASSED=$((PASSED + ok)); FAILED=$((FAILED + bad + died))
echo "  -> $ok passed, $((bad + died)) failed"

if [[ -x test/client/run.sh ]]; then
  suite "client (libddict)"
  bash test/client/run.sh 2>&1 | tee "$OUT/client.log"
  ok=$(grep -cE '^ok [0-9]+' "$OUT/client.log")
  bad=$(grep -cE '^not ok [0-9]+' "$OUT/client.log")
  PASSED=$((PASSED + ok)); FAILED=$((FAILED + bad))
  echo "  -> $ok passed, $bad failed"
fi

echo
echo "$PASSED passed, $FAILED failed"
((FAILED == 0 && PASSED > 0))
