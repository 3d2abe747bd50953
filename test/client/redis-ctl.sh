#!/usr/bin/env bash
# test/client/redis-ctl.sh start|stop DIR PORT — the client tests' throwaway
# redis-server: loopback only (and DIR/redis.sock), persistence off, its PID
# in DIR/redis.pid.
# run.sh starts and finally stops it; the C tests stop and start it again
# (DDICT_TEST_REDIS_STOP_CMD / DDICT_TEST_REDIS_START_CMD) to simulate an
# outage.  Stopping kills exactly the PID that was started.
set -uo pipefail
cmd=$1 dir=$2 port=$3
pidfile=$dir/redis.pid

up() { [[ $(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null) == PONG ]]; }
# running, and not a zombie nobody reaped (its parent, this script, is gone)
alive() { [[ -r /proc/$1/stat ]] && [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) != Z ]]; }

case $cmd in
  start)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
      --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
      --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do up && exit 0; sleep 0.05; done
    echo "redis-server on port $port did not start" >&2
    exit 1
    ;;
  stop)
    [[ -f $pidfile ]] || exit 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    rm -f "$pidfile"
    exit 0
    ;;
  *)
    echo "usage: $0 start|stop DIR PORT" >&2
    exit 2
    ;;
esac
