#!/usr/bin/env bash
# List the nodes the scripts started: id, address, pid, alive or not.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${DHT_RUN_DIR:-$root/run}
shopt -s nullglob
addrs=("$run"/*.addr)
if [ ${#addrs[@]} -eq 0 ]; then
    echo "no nodes started from $run"
    exit 0
fi
printf '%-16s %-22s %-8s %s\n' ID ADDRESS PID STATE
for addr in "${addrs[@]}"; do
    id=$(basename "$addr" .addr)
    pid=-
    state=stopped
    if [ -f "$run/$id.pid" ]; then
        pid=$(cat "$run/$id.pid")
        if kill -0 "$pid" 2>/dev/null; then state=alive; else state=dead; fi
    fi
    printf '%-16s %-22s %-8s %s\n' "$id" "$(cat "$addr")" "$pid" "$state"
done
