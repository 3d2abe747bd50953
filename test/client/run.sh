#!/usr/bin/env bash
# test/client/run.sh — libddict's tests, as one TAP stream.
#
# Builds the library, the tool and the tests, starts a throwaway cluster
# (test/lib.sh), and runs:
#   plain build     unit tests, server tests, the multi-process stress with a
#                   server restart, the ddict tool, linking through pkg-config
#   ASan + UBSan    the same C tests again (-fsanitize=address,undefined)
#   valgrind        the same C tests under memcheck (--error-exitcode)
#   TSan            unit and server tests (-fsanitize=thread)
#   streams         push dicts following published changes (test_streams,
#                   also under ASan, valgrind and TSan)
#   vpage           autosync answered by the server's versions page (strict
#                   from threads and processes, restarts, slot reuse, fallback)
#   shared clients  the client and Redis suites again with every dict on a
#                   shared ddict_client, test_shared (many dicts, one
#                   connection), layers.sh (no call cycle among the files)
#   pgbouncer       the core of the suites and the ddict tool through
#                   Debian's pgbouncer in transaction and session pooling,
#                   200 processes x 5 dicts through a pool of 10, and an
#                   unrelated pool client's session checked after ddict
# A redis-server (test/client/redis-ctl.sh, stopped by PID) receives the
# cluster's published versions (ddict.redis_url) for test_redis and the
# tool's watch --redis; without redis-server those are skipped.
# test_redis_fake starts its own misbehaving Redis (test/fake-redis.pl).
# Every test is a TAP line "ok N - ..." / "not ok N - ..."; each sanitizer or
# valgrind run also gets its own "no findings" line.  Exits non-zero on any
# failure.  Knobs: DDICT_STRESS_SECONDS (default 15), DDICT_CLIENT_SKIP
# (space-separated: asan valgrind tsan).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
source test/lib.sh

OUT=$ROOT/test/out/client
BUILD=$ROOT/test/out/client-build
mkdir -p "$OUT"
N=0
FAILED=0
SKIP=" ${DDICT_CLIENT_SKIP:-} "

ok() { N=$((N + 1)); echo "ok $N - $*"; }
not_ok() { N=$((N + 1)); FAILED=$((FAILED + 1)); echo "not ok $N - $*"; }
check() { # check DESCRIPTION CMD...: one TAP line for a command's success
  local desc=$1; shift
  if "$@" >"$OUT/check.log" 2>&1; then ok "$desc"; else not_ok "$desc"; sed 's/^/# /' "$OUT/check.log" | tail -20; fi
}
diag() { echo "# $*"; }

# run_tap LABEL LOG CMD...: run a cmocka binary with TAP output, renumber its
# results into our stream; a crash, a non-zero exit or a missing result is a
# failure of its own.
run_tap() {
  local label=$1 log=$2; shift 2
  local rc plan=0 seen=0 line
  CMOCKA_MESSAGE_OUTPUT=TAP "$@" >"$log" 2>&1
  rc=$?
  while IFS= read -r line; do
    if [[ $line =~ ^1\.\.([0-9]+) ]]; then
      plan=${BASH_REMATCH[1]}
    elif [[ $line =~ ^ok\ [0-9]+\ -\ (.*)$ ]]; then
      seen=$((seen + 1)); ok "$label: ${BASH_REMATCH[1]}"
    elif [[ $line =~ ^ok\ [0-9]+\ #\ SKIP\ (.*)$ ]]; then
      seen=$((seen + 1)); ok "$label: ${BASH_REMATCH[1]} # SKIP"
    elif [[ $line =~ ^not\ ok\ [0-9]+\ #\ SKIP\ (.*)$ ]]; then
      seen=$((seen + 1)); ok "$label: ${BASH_REMATCH[1]} # SKIP"
    elif [[ $line =~ ^not\ ok\ [0-9]+\ -\ (.*)$ ]]; then
      seen=$((seen + 1)); not_ok "$label: ${BASH_REMATCH[1]}"
    elif [[ $line =~ ^#\ (not\ )?ok\ -\  ]]; then
      :   # cmocka's group summary
    elif [[ $line == \#* ]]; then
      echo "$line"
    else
      echo "# $line"
    fi
  done <"$log"
  if ((plan == 0 || seen != plan)); then
    not_ok "$label: ran $seen of $plan tests (exit status $rc)"
  elif ((rc != 0)) && ! grep -q '^not ok' "$log"; then
    not_ok "$label: exit status $rc"
  fi
  return $rc
}

# ---- build ----
check "build: libddict (shared, static), ddict tool, examples" make -s -C src/client
check "build: tests (plain)" make -s -C test/client VARIANT=plain OUT="$BUILD/plain"
[[ $SKIP == *" asan "* ]] || check "build: tests (ASan+UBSan)" make -s -C test/client VARIANT=asan OUT="$BUILD/asan"
[[ $SKIP == *" tsan "* ]] || check "build: tests (TSan)" make -s -C test/client VARIANT=tsan OUT="$BUILD/tsan"

if [[ ! -f $("$PG_BIN/pg_config" --pkglibdir)/ddict.so ]]; then
  diag "the ddict extension is not installed: running make install"
  make -s >/dev/null && make -s install >/dev/null
fi

# ---- server ----
SCRATCH=$(make_scratch)
REDIS_CTL=$ROOT/test/client/redis-ctl.sh
cleanup() { stop_pg "$SCRATCH/standby"; stop_pg "$SCRATCH/pg"; stop_started; bash "$REDIS_CTL" stop "$SCRATCH" 0; rm -rf "$SCRATCH"; }
trap cleanup EXIT
PORT=$(free_port)
if ! start_pg "$SCRATCH/pg" "$PORT" "shared_preload_libraries = 'ddict, pg_stat_statements'"; then
  not_ok "start a throwaway cluster"
  echo "1..$N"; exit 1
fi
SOCK=$SCRATCH/pg/sock
export PGOPTIONS="-c client_min_messages=warning"
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE ddict_client" &&
  "${PSQL[@]}" -d ddict_client -c "CREATE EXTENSION ddict; CREATE EXTENSION pg_stat_statements" ||
  { not_ok "create the test database"; echo "1..$N"; exit 1; }

# ---- Redis: the cluster publishes versions there (reload, no restart) ----
if command -v redis-server >/dev/null 2>&1; then
  REDIS_PORT=$(free_port)
  if bash "$REDIS_CTL" start "$SCRATCH" "$REDIS_PORT" &&
     "${PSQL[@]}" -d postgres -c "ALTER SYSTEM SET ddict.redis_url = 'redis://127.0.0.1:$REDIS_PORT'" \
       -c "ALTER SYSTEM SET ddict.redis_max_backoff = '200ms'" -c "SELECT pg_reload_conf()" >/dev/null; then
    export DDICT_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT DDICT_TEST_REDIS_PORT=$REDIS_PORT
    export DDICT_TEST_REDIS_SOCKET=$SCRATCH/redis.sock
    export DDICT_TEST_REDIS_STOP_CMD="bash $REDIS_CTL stop $SCRATCH $REDIS_PORT"
    export DDICT_TEST_REDIS_START_CMD="bash $REDIS_CTL start $SCRATCH $REDIS_PORT"
  else
    not_ok "start redis-server and set ddict.redis_url"
  fi
else
  diag "redis-server is not installed: the Redis tests are skipped"
fi

# A streaming hot standby (test_streams: a push client of a standby), which
# publishes nothing itself.
SB=$SCRATCH/standby SB_PORT=$(free_port)
if as_pg mkdir -p "$SB/sock" && as_pg "$PG_BIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -D "$SB/data" -R -C -S ddict_standby \
     -X stream >"$OUT/standby.log" 2>&1 &&
   printf "port = %s\nunix_socket_directories = '%s'\nddict.redis_url = ''\n" "$SB_PORT" "$SB/sock" |
     as_pg tee -a "$SB/data/postgresql.auto.conf" >/dev/null &&
   as_pg "$PG_BIN/pg_ctl" -D "$SB/data" -l "$SB/server.log" -w -t 60 start >>"$OUT/standby.log" 2>&1; then
  STARTED_PIDS+=("$(head -1 "$SB/data/postmaster.pid")")
  export DDICT_TEST_STANDBY_CONNINFO="host=$SB/sock port=$SB_PORT user=postgres dbname=ddict_client"
else
  not_ok "start a streaming standby"; sed 's/^/# /' "$OUT/standby.log" | tail -5
fi

export DDICT_TEST_CONNINFO="host=$SOCK port=$PORT user=postgres dbname=ddict_client"
export DDICT_TEST_PORT=$PORT DDICT_TEST_DBNAME=ddict_client   # TCP, for the proxy tests
export DDICT_TEST_FAKE_REDIS=$ROOT/test/fake-redis.pl
# The stress test restarts the server through this (as the server's user).
PGCTL="$PG_BIN/pg_ctl -D $SCRATCH/pg/data -w -t 60 -l $SCRATCH/pg/server.log -m fast"
if [[ $(id -u) == 0 ]]; then PGCTL="runuser -u postgres -- $PGCTL"; fi
export DDICT_TEST_RESTART_CMD="$PGCTL restart >/dev/null"
export DDICT_TEST_STOP_CMD="$PGCTL stop >/dev/null"
export DDICT_TEST_START_CMD="$PGCTL start >/dev/null"
export DDICT_TEST_IMMEDIATE_STOP_CMD="$PGCTL -m immediate stop >/dev/null"   # (the last -m wins)
unset PGHOST PGPORT PGUSER PGDATABASE

# ---- plain ----
P=$BUILD/plain
run_tap "unit" "$OUT/unit.log" "$P/test_unit"
run_tap "client" "$OUT/client.log" "$P/test_client"
run_tap "stress" "$OUT/stress.log" "$P/test_stress"
run_tap "redis" "$OUT/redis.log" "$P/test_redis"
run_tap "redis_fake" "$OUT/redis_fake.log" "$P/test_redis_fake"
run_tap "shared" "$OUT/shared.log" "$P/test_shared"
run_tap "vpage" "$OUT/vpage.log" "$P/test_vpage"
run_tap "streams" "$OUT/streams.log" "$P/test_streams"
# The same suites with every dict opened on a shared ddict_client (one per
# set of connection options), the check prepared (direct) for the first.
DDICT_TEST_SHARED=1 DDICT_TEST_DIRECT=1 run_tap "shared client (direct)" "$OUT/client-shared.log" "$P/test_client"
DDICT_TEST_SHARED=1 run_tap "shared redis" "$OUT/redis-shared.log" "$P/test_redis"
DDICT_TEST_SHARED=1 run_tap "shared stress" "$OUT/stress-shared.log" "$P/test_stress"
"${PSQL[@]}" -d ddict_client -c "DROP TABLE IF EXISTS t_large" >/dev/null 2>&1
check "layers: no client source file in a call cycle (test/client/layers.sh)" bash test/client/layers.sh

# ---- the ddict tool ----
T=$ROOT/src/client/build/ddict
D=(-d "$DDICT_TEST_CONNINFO")
sql() { "${PSQL[@]}" -d ddict_client -At -c "$1"; }
sql "DROP TABLE IF EXISTS tool; SELECT ddict_create('tool')" >/dev/null
sql "DROP TABLE IF EXISTS tool_bytes; SELECT ddict_create('tool_bytes', 'bytea')" >/dev/null

"$T" "${D[@]}" set tool greeting hello && [[ $("$T" "${D[@]}" get tool greeting) == hello ]] &&
  ok "tool: set then get" || not_ok "tool: set then get"
"$T" "${D[@]}" get tool missing >/dev/null 2>"$OUT/tool.err"; rc=$?
((rc == 1)) && [[ ! -s $OUT/tool.err ]] && ok "tool: get of an absent key exits 1" ||
  not_ok "tool: get of an absent key exits 1 (got $rc)"
"$T" "${D[@]}" set tool 'b key' $'two\tcols' && "$T" "${D[@]}" set tool 'a\k' $'line1\nline2\\' &&
  "$T" "${D[@]}" set tool 'c' '' || not_ok "tool: set odd values"
printf '%s\t%s\n' 'a\\k' 'line1\nline2\\' 'b key' 'two\tcols' 'c' '' 'greeting' 'hello' >"$OUT/items.expected"
"$T" "${D[@]}" items tool >"$OUT/items.out" && cmp -s "$OUT/items.out" "$OUT/items.expected" &&
  ok "tool: items sorted by key, \\\\ \\t \\n escaped" ||
  { not_ok "tool: items sorted by key, escaped"; diff "$OUT/items.expected" "$OUT/items.out" | sed 's/^/# /'; }
[[ $("$T" "${D[@]}" version tool) == "$(sql "SELECT ddict_last_updated('tool')")" ]] &&
  ok "tool: version is ddict_last_updated()" || not_ok "tool: version is ddict_last_updated()"
"$T" "${D[@]}" del tool c && { "$T" "${D[@]}" del tool c; [[ $? == 1 ]]; } &&
  [[ $(sql "SELECT count(*) FROM tool WHERE key = 'c'") == 0 ]] &&
  ok "tool: del (exit 1 when absent)" || not_ok "tool: del (exit 1 when absent)"
"$T" "${D[@]}" set tool_bytes k 'raw bytes' && [[ $(sql "SELECT value FROM tool_bytes") == '\x726177206279746573' ]] &&
  [[ $("$T" "${D[@]}" get tool_bytes k) == 'raw bytes' ]] &&
  ok "tool: bytea dict takes and prints raw bytes" || not_ok "tool: bytea dict takes and prints raw bytes"
"$T" "${D[@]}" get no_such_dict k >/dev/null 2>"$OUT/tool.err"; rc=$?
((rc > 1 && rc < 128)) && grep -q 'does not exist' "$OUT/tool.err" &&
  ok "tool: errors go to stderr, exit $rc" || not_ok "tool: error exit status $rc"
"$T" frobnicate >/dev/null 2>&1; rc=$?
((rc == 2)) && ok "tool: usage error exits 2" || not_ok "tool: usage error exits 2 (got $rc)"
"$T" -d "host=$SCRATCH/nowhere port=1" get tool k >/dev/null 2>"$OUT/tool.err"; rc=$?
((rc > 1 && rc < 128)) && grep -q 'could not connect' "$OUT/tool.err" &&
  ok "tool: unreachable server: clear error, exit $rc" || not_ok "tool: unreachable server (exit $rc)"

# watch: every change it applies, one line each, flushed per reload
sql "DROP TABLE IF EXISTS watched; SELECT ddict_create('watched'); INSERT INTO watched VALUES ('init', 'x')" >/dev/null
"$T" "${D[@]}" watch -i 20 watched >"$OUT/watch.out" 2>"$OUT/watch.err" &
WATCH=$!
wait_lines() { for _ in $(seq 100); do (($(wc -l <"$OUT/watch.out") >= $1)) && return 0; sleep 0.05; done; return 1; }
wait_lines 1
sql "SELECT ddict_set('watched', 'a', 'one')" >/dev/null; wait_lines 2
sql "BEGIN; UPDATE watched SET value = E'tab\there' WHERE key = 'a'; INSERT INTO watched VALUES (E'new\nline', 'v'); COMMIT" >/dev/null
wait_lines 4
sql "BEGIN; UPDATE watched SET value = 'rolled back' WHERE key = 'a'; ROLLBACK" >/dev/null
sql "DELETE FROM watched WHERE key = 'init'" >/dev/null; wait_lines 5
sql "TRUNCATE watched; INSERT INTO watched VALUES ('after', 'truncate')" >/dev/null; wait_lines 8
kill -TERM $WATCH; wait $WATCH; rc=$?
cut -f2- "$OUT/watch.out" >"$OUT/watch.cut"
# Lines of one reload come in hash order: compare each reload's block sorted.
block() { sed -n "$1p" "$OUT/watch.cut" | LC_ALL=C sort | tr '\n' '|'; }
if ((rc == 0)) && (($(wc -l <"$OUT/watch.cut") == 8)) &&
   [[ $(block 1,2) == $'set\ta\tone|set\tinit\tx|' ]] &&
   [[ $(block 3,4) == $'set\ta\ttab\\there|set\tnew\\nline\tv|' ]] &&
   [[ $(block 5,5) == $'del\tinit|' ]] &&
   [[ $(block 6,8) == $'del\ta|del\tnew\\nline|set\tafter\ttruncate|' ]] &&
   awk -F'\t' '$1 !~ /^[0-9]+$/ || (NR > 1 && $1 < prev) { exit 1 } { prev = $1 }' "$OUT/watch.out"; then
  ok "tool: watch prints every applied change (set/del, escaped, versions ascending)"
else
  not_ok "tool: watch prints every applied change (exit $rc)"
  sed 's/^/# /' "$OUT/watch.out" "$OUT/watch.err"
fi

# watch --redis: push mode; with -i 60000 only a push explains a change seen in time
if [[ -n ${DDICT_TEST_REDIS_URL:-} ]]; then
  sql "DROP TABLE IF EXISTS pushed; SELECT ddict_create('pushed'); INSERT INTO pushed VALUES ('init', 'x')" >/dev/null
  "$T" "${D[@]}" watch --redis "$DDICT_TEST_REDIS_URL" -i 60000 pushed >"$OUT/watchr.out" 2>"$OUT/watchr.err" &
  WATCH=$!
  wait_file() { for _ in $(seq 100); do (($(wc -l <"$1") >= $2)) && return 0; sleep 0.05; done; return 1; }
  wait_file "$OUT/watchr.out" 1 && sleep 0.3   # subscribed, caught up
  sql "SELECT ddict_set('pushed', 'a', 'one')" >/dev/null; wait_file "$OUT/watchr.out" 2
  sql "DELETE FROM pushed WHERE key = 'init'" >/dev/null; wait_file "$OUT/watchr.out" 3
  kill -TERM $WATCH; wait $WATCH; rc=$?
  if ((rc == 0)) && [[ $(cut -f2- "$OUT/watchr.out" | tr '\n' '|') == $'set\tinit\tx|set\ta\tone|del\tinit|' ]] &&
     grep -q 'following the versions published in Redis' "$OUT/watchr.err"; then
    ok "tool: watch --redis follows pushed versions"
  else
    not_ok "tool: watch --redis follows pushed versions (exit $rc)"
    sed 's/^/# /' "$OUT/watchr.out" "$OUT/watchr.err"
  fi
  "$T" "${D[@]}" watch -r 'ftp://nowhere' pushed >/dev/null 2>"$OUT/tool.err"; rc=$?
  ((rc == 3)) && grep -q 'redis' "$OUT/tool.err" && ok "tool: watch -r with a bad URL: clear error, exit 3" ||
    { not_ok "tool: watch -r with a bad URL (exit $rc)"; sed 's/^/# /' "$OUT/tool.err"; }
fi

# ---- through pgbouncer: transaction and session pooling ----
# Debian's pgbouncer (test/deps.sh), started as postgres on a free loopback
# port and stopped by PID (pgbouncer-ctl.sh).  Pools are smaller than the
# number of clients; every dict is opened on a shared client.
PGB_CTL=$ROOT/test/client/pgbouncer-ctl.sh
CORE_CLIENT="test_semantics test_jsonb test_autosync_next_read test_manual_until_sync test_unchanged_zero_rows
  test_delta_one_row test_deletes_truncate test_bytea test_pin test_callback test_interval test_snapshot_file
  test_version_backwards test_server_down test_threads"
CORE_REDIS="test_autosync_unchanged_no_pg test_autosync_sees_commit test_interval_redis test_push_latency
  test_push_server_restart test_push_without_redis test_threads"
if command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]]; then
  PATH=$PATH:/usr/sbin
  # An unrelated application's database: serializable by default, sharing
  # one server connection (pool_size 1) with ddict.
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS ddict_pool" -c "CREATE DATABASE ddict_pool" >/dev/null &&
    "${PSQL[@]}" -d ddict_pool -c "CREATE EXTENSION ddict" -c "SELECT ddict_create('pooled')" \
      -c "INSERT INTO pooled VALUES ('k', 'v')" \
      -c "ALTER DATABASE ddict_pool SET default_transaction_isolation = 'serializable'" >/dev/null ||
    not_ok "pgbouncer: create the database ddict_pool"
  cleanup_pgb() { bash "$PGB_CTL" stop "$SCRATCH/pgb"; }
  trap 'cleanup_pgb; cleanup' EXIT
  # transaction:0 — server_reset_query_always = 0, so that whatever a
  # session leaves behind reaches the next client: the isolation check's run.
  for RUN in transaction session transaction:0; do
    MODE=${RUN%%:*} ALWAYS=${RUN#*:}; [[ $RUN == *:* ]] || ALWAYS=
    PGB_PORT=$(free_port)
    if ! bash "$PGB_CTL" start "$SCRATCH/pgb" "$PGB_PORT" "$MODE" "$SOCK" "$PORT" $ALWAYS; then
      not_ok "pgbouncer ($RUN pooling) starts"; continue
    fi
    [[ -n $ALWAYS ]] && MODE="$MODE (no reset query)"
    PGB=(host=127.0.0.1 port=$PGB_PORT user=postgres)
    PGB_CI="${PGB[*]} dbname=ddict_client"
    if [[ -z $ALWAYS ]]; then
    E=(env DDICT_TEST_SHARED=1 "DDICT_TEST_CONNINFO=$PGB_CI" "DDICT_TEST_ADMIN_CONNINFO=$DDICT_TEST_CONNINFO")
    # a transaction pooler hides a server restart: no reconnect to count
    [[ $MODE == transaction ]] && E+=(DDICT_TEST_POOLED=1)
    run_tap "pgbouncer $MODE: client" "$OUT/pgb-$MODE-client.log" "${E[@]}" "DDICT_TEST_ONLY=$CORE_CLIENT" "$P/test_client"
    [[ -n ${DDICT_TEST_REDIS_URL:-} ]] &&
      run_tap "pgbouncer $MODE: redis" "$OUT/pgb-$MODE-redis.log" "${E[@]}" "DDICT_TEST_ONLY=$CORE_REDIS" "$P/test_redis"
    # 200 processes x 5 dicts through a pool of 10: transaction pooling only
    # (session pooling needs a server connection per client by design)
    [[ $MODE == transaction ]] && E+=("DDICT_TEST_POOL_CONNINFO=${PGB[*]} dbname=ddict_p10"
                                      "DDICT_TEST_PGB_ADMIN=${PGB[*]} dbname=pgbouncer")
    run_tap "pgbouncer $MODE: shared" "$OUT/pgb-$MODE-shared.log" "${E[@]}" \
      "DDICT_TEST_ONLY=test_busy_connection test_long_full_load test_threads_on_dicts test_close_orders test_pool_200_processes" \
      "$P/test_shared"
    fi
    # the ddict tool: twenty gets in a row, a set, watch
    TD=(-d "$PGB_CI")
    good=0
    for i in $(seq 20); do [[ $("$T" "${TD[@]}" get tool greeting 2>>"$OUT/pgb-tool.err") == hello ]] && good=$((good + 1)); done
    ((good == 20)) && "$T" "${TD[@]}" set tool pooled "$MODE" && [[ $("$T" "${TD[@]}" get tool pooled) == "$MODE" ]] &&
      ok "pgbouncer $MODE: tool get x20, set, get" ||
      { not_ok "pgbouncer $MODE: tool get x20 ($good ok), set, get"; sed 's/^/# /' "$OUT/pgb-tool.err" | tail -5; }
    "$T" "${TD[@]}" watch -i 20 tool >"$OUT/pgb-watch.out" 2>"$OUT/pgb-watch.err" &
    WATCH=$!
    for _ in $(seq 100); do (($(wc -l <"$OUT/pgb-watch.out") >= 1)) && break; sleep 0.05; done
    sql "SELECT ddict_set('tool', 'watched', '$MODE')" >/dev/null
    for _ in $(seq 100); do grep -qF "set	watched	$MODE" "$OUT/pgb-watch.out" && break; sleep 0.05; done
    kill -TERM $WATCH; wait $WATCH; rc=$?
    ((rc == 0)) && grep -qF "set	watched	$MODE" "$OUT/pgb-watch.out" && ok "pgbouncer $MODE: tool watch" ||
      { not_ok "pgbouncer $MODE: tool watch (exit $rc)"; sed 's/^/# /' "$OUT/pgb-watch.err" | tail -5; }
    # An unrelated client of the same pool (one server connection) after
    # ddict used it: its database's isolation level, no prepared statement.
    POOL_CI="${PGB[*]} dbname=ddict_pool"
    PSQL_POOL=("$PG_BIN/psql" -X -At -v ON_ERROR_STOP=1 -d "$POOL_CI")
    before=$("${PSQL_POOL[@]}" -c "SHOW transaction_isolation" 2>&1)
    "$T" -d "$POOL_CI" get pooled k >/dev/null 2>"$OUT/pgb-pool.err" &&
      "$T" -d "$POOL_CI" set pooled k2 v2 >/dev/null 2>>"$OUT/pgb-pool.err"
    rc=$?
    after=$("${PSQL_POOL[@]}" -c "SHOW transaction_isolation" -c "SELECT count(*) FROM pg_prepared_statements" \
      -c "SELECT current_setting('default_transaction_isolation')" 2>&1 | tr '\n' ' ')
    if ((rc == 0)) && [[ $before == serializable && $after == "serializable 0 serializable " ]]; then
      ok "pgbouncer $MODE: an unrelated pool client's session is unchanged after ddict (serializable, no prepared statement)"
    else
      not_ok "pgbouncer $MODE: unrelated pool client's settings (before '$before', after '$after', ddict exit $rc)"
      sed 's/^/# /' "$OUT/pgb-pool.err" | tail -5
    fi
    bash "$PGB_CTL" stop "$SCRATCH/pgb"
  done
else
  diag "pgbouncer is not installed (test/deps.sh installs it): the pooler tests are skipped"
fi

# ---- linking through pkg-config (a staged install; the system one if present) ----
STAGE=$SCRATCH/stage
stage_pc() { PKG_CONFIG_PATH=$STAGE/usr/local/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$STAGE pkg-config "$@"; }
if make -s -C src/client install DESTDIR="$STAGE" >"$OUT/stage.log" 2>&1 &&
   read -ra PCFLAGS < <(stage_pc --cflags --libs ddict) &&
   cc -Wall -Wextra -Werror -o "$SCRATCH/quickstart" src/client/examples/quickstart.c "${PCFLAGS[@]}" \
     >>"$OUT/stage.log" 2>&1 &&
   sql "DROP TABLE IF EXISTS settings; SELECT ddict_create('settings')" >/dev/null &&
   LD_LIBRARY_PATH=$STAGE/usr/local/lib "$SCRATCH/quickstart" "$DDICT_TEST_CONNINFO" | grep -q '^greeting = hello'; then
  ok "link: quick start builds with pkg-config --cflags --libs ddict and runs"
else
  not_ok "link: quick start with pkg-config"; sed 's/^/# /' "$OUT/stage.log" | tail
fi
if pkg-config --exists ddict 2>/dev/null; then
  check "link: installed ddict.pc (pkg-config --cflags --libs ddict, default paths)" \
    bash -c "cc -o '$SCRATCH/qs2' src/client/examples/quickstart.c \$(pkg-config --cflags --libs ddict) && '$SCRATCH/qs2' '$DDICT_TEST_CONNINFO'"
fi

# ---- ASan + UBSan ----
# Sanitizer findings make the program exit with 86; the log is searched too.
san_clean() { # san_clean LABEL LOG RC
  if (($3 == 86)) || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$2"; then
    not_ok "$1: sanitizer findings"; grep -E -A30 'ERROR: |runtime error:|WARNING: ThreadSanitizer' "$2" | head -60 | sed 's/^/# /'
  else
    ok "$1: no sanitizer findings"
  fi
}
if [[ $SKIP != *" asan "* ]]; then
  export ASAN_OPTIONS=detect_leaks=1:exitcode=86:abort_on_error=0:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=86
  A=$BUILD/asan
  for t in unit client stress redis redis_fake shared vpage streams; do
    DDICT_TEST_NO_RSS=1 DDICT_TEST_LARGE_KEYS=200000 DDICT_STRESS_SECONDS=8 \
      run_tap "asan $t" "$OUT/asan-$t.log" "$A/test_$t"
    san_clean "asan+ubsan $t" "$OUT/asan-$t.log" $?
  done
  unset ASAN_OPTIONS UBSAN_OPTIONS
fi

# ---- valgrind memcheck ----
if [[ $SKIP != *" valgrind "* ]]; then
  # shellcheck disable=SC2054 # commas are part of valgrind's option values
  VG=(valgrind -q --error-exitcode=97 --leak-check=full --show-leak-kinds=definite,indirect
      --errors-for-leak-kinds=definite,indirect --fair-sched=yes)
  for t in unit client stress redis redis_fake shared vpage streams; do
    DDICT_TEST_NO_RSS=1 DDICT_TEST_LARGE_KEYS=20000 DDICT_STRESS_SECONDS=10 DDICT_STRESS_MIN=2 \
      run_tap "valgrind $t" "$OUT/valgrind-$t.log" "${VG[@]}" "$P/test_$t"
    rc=$?
    if ((rc == 97)) || grep -qE '^==[0-9]+== [A-Z]' "$OUT/valgrind-$t.log"; then
      not_ok "valgrind $t: memcheck findings"; grep -E '^==[0-9]+==' "$OUT/valgrind-$t.log" | head -40 | sed 's/^/# /'
    else
      ok "valgrind $t: memcheck clean"
    fi
  done
fi

# ---- ThreadSanitizer ----
if [[ $SKIP != *" tsan "* ]]; then
  export TSAN_OPTIONS=exitcode=86:halt_on_error=0:second_deadlock_stack=1
  for t in unit client redis redis_fake shared vpage streams; do
    DDICT_TEST_NO_RSS=1 DDICT_TEST_LARGE_KEYS=100000 \
      run_tap "tsan $t" "$OUT/tsan-$t.log" "$BUILD/tsan/test_$t"
    san_clean "tsan $t" "$OUT/tsan-$t.log" $?
  done
  unset TSAN_OPTIONS
fi

echo "1..$N"
((FAILED == 0))
