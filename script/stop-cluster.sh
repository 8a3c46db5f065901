#!/usr/bin/env bash
# Stop the nodes the scripts started, by their pid files only: SIGTERM (the
# node hands its keys over and exits), then SIGKILL after $DHT_STOP_WAIT
# seconds (40).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${DHT_RUN_DIR:-$root/run}
wait_for=${DHT_STOP_WAIT:-40}
shopt -s nullglob

ours() {  # is pid $1 still a dht twistd (not a recycled pid)?
    kill -0 "$1" 2>/dev/null && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q 'twistd.* dht '
}

pids=()
for pidfile in "$run"/*.pid; do
    pid=$(cat "$pidfile")
    if ours "$pid"; then
        kill -TERM "$pid" && pids+=("$pid")
        echo "stopping node $(basename "$pidfile" .pid) (pid $pid)"
    else
        rm -f "$pidfile"
    fi
done
for ((t = 0; t < wait_for * 10; t++)); do
    alive=()
    for pid in "${pids[@]}"; do ours "$pid" && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && break
    sleep 0.1
done
for pid in "${pids[@]}"; do
    if ours "$pid"; then
        echo "pid $pid did not stop in ${wait_for}s: SIGKILL" >&2
        kill -KILL "$pid"
    fi
done
rm -f "$run"/*.pid
