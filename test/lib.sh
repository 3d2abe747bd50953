# test/lib.sh — helpers shared by ddict's test and demo scripts (sourced).
#
# Servers run as an unprivileged user (initdb and postgres refuse root), on a
# free loopback port and a socket directory of their own, and are stopped by
# the PID they were started with.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGXS_DIR=$(dirname "$("$PG_BIN/pg_config" --pgxs)")/..
STARTED_PIDS=()

# as_pg CMD...: run CMD as the server user (postgres when we are root).
as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0) or die $!;
    print $s->sockport, "\n";'
}

# make_scratch: a directory the server user can write to.
make_scratch() {
  local d
  d=$(mktemp -d -p "${TMPDIR:-/tmp}")
  chmod 755 "$d"
  [[ $(id -u) == 0 ]] && chown postgres: "$d"
  echo "$d"
}

# start_pg DIR PORT [conf lines...]: initdb DIR/data and start it.
start_pg() {
  local dir=$1 port=$2; shift 2
  as_pg mkdir -p "$dir/sock"
  as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; return 1; }
  {
    echo "shared_preload_libraries = 'ddict'"
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir/sock'"
    echo "fsync = off"
    echo "max_prepared_transactions = 10"
    for line in "$@"; do echo "$line"; done
  } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
    { cat "$dir/server.log" >&2; return 1; }
  STARTED_PIDS+=("$(head -1 "$dir/data/postmaster.pid")")
}

# stop_pg DIR: fast shutdown, then the PID we started if it is still there.
stop_pg() {
  local dir=$1 pid
  [[ -f $dir/data/postmaster.pid ]] || return 0
  pid=$(head -1 "$dir/data/postmaster.pid")
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || kill -9 "$pid" 2>/dev/null
}

stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -INT "$pid" 2>/dev/null
  done
  sleep 0.5
  for pid in "${STARTED_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  done
  return 0
}
