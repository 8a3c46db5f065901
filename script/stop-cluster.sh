#!/usr/bin/env bash
# Stop the nodes the scripts started, by their pid files only, one after
# another: SIGTERM (the node hands its keys over and exits), then SIGKILL
# after $DHT_STOP_WAIT seconds (40).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${DHT_RUN_DIR:-$root/run}
wait_for=${DHT_STOP_WAIT:-40}
shopt -s nullglob

ours() {  # is pid $1 still a dht twistd (not a recycled pid)?
    kill -0 "$1" 2>/dev/null && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q 'twistd.* dht '
}

# one node at a time: each hands its keys to the nodes still running, and
# the last one has nobody left to wait for
stop_one() {  # pidfile
    local pidfile=$1 pid
    pid=$(cat "$pidfile")
    if ! ours "$pid"; then
        rm -f "$pidfile"
        return
    fi
    kill -TERM "$pid" || return
    echo "stopping node $(basename "$pidfile" .pid) (pid $pid)"
    for ((t = 0; t < wait_for * 10; t++)); do
        ours "$pid" || break
        sleep 0.1
    done
    if ours "$pid"; then
        echo "pid $pid did not stop in ${wait_for}s: SIGKILL" >&2
        kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

for pidfile in "$run"/*.pid; do
    stop_one "$pidfile"
done
