#!/usr/bin/env bash
# test/client/pgbouncer-ctl.sh start DIR PORT MODE PGSOCK PGPORT [RESET_ALWAYS] | stop DIR
#
# The client tests' throwaway pgbouncer (Debian's package): runs as the
# postgres user, listens on 127.0.0.1:PORT only (no unix socket), trusts
# the local user postgres, pool_mode MODE (transaction or session).
# Databases (all on the cluster at PGSOCK:PGPORT):
#   ddict_client   default_pool_size 2 — fewer server connections than the
#                  tests have clients
#   ddict_p10      the same database, pool_size 10 (200 processes x 5 dicts)
#   ddict_pool     its own database, pool_size 1: ddict and an unrelated
#                  application share one server connection
#   any other      the database of that name (make bench: bench), pool size
#                  PGB_POOL_SIZE (default 2)
# server_reset_query_always = RESET_ALWAYS (default 1 in transaction mode:
# nothing of a session may be relied on; 0 lets a session's leftovers reach
# the next client, which is what the isolation check looks for).  The PID is in DIR/pgbouncer.pid; stop kills exactly it.
set -uo pipefail
cmd=$1 dir=$2
pidfile=$dir/pgbouncer.pid
alive() { [[ -r /proc/$1/stat ]] && [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) != Z ]]; }
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $cmd in
  start)
    port=$3 mode=$4 sock=$5 pgport=$6 always=${7:-$([[ $4 == transaction ]] && echo 1 || echo 0)}
    mkdir -p "$dir"
    [[ $(id -u) == 0 ]] && chown postgres "$dir"
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
ddict_client = host=$sock port=$pgport dbname=ddict_client
ddict_p10 = host=$sock port=$pgport dbname=ddict_client pool_size=10
ddict_pool = host=$sock port=$pgport dbname=ddict_pool pool_size=1
* = host=$sock port=$pgport

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
admin_users = postgres
pool_mode = $mode
default_pool_size = ${PGB_POOL_SIZE:-2}
max_client_conn = 3000
max_db_connections = 0
server_reset_query_always = $always
ignore_startup_parameters = options,extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $pidfile
INI
    echo '"postgres" ""' >"$dir/users.txt"
    [[ $(id -u) == 0 ]] && chown postgres "$dir"/*
    ulimit -n 8192 2>/dev/null
    as_pg pgbouncer -d -q "$dir/pgbouncer.ini" || { echo "pgbouncer did not start" >&2; exit 1; }
    for _ in $(seq 100); do
      [[ -s $pidfile ]] && psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d pgbouncer -c 'SHOW VERSION' \
        >/dev/null 2>&1 && exit 0
      sleep 0.05
    done
    echo "pgbouncer on port $port did not answer" >&2
    exit 1
    ;;
  stop)
    [[ -f $pidfile ]] || exit 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    rm -f "$pidfile"
    ;;
esac
