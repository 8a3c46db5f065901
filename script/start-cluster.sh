#!/usr/bin/env bash
# Start N dhtwisted nodes in the background: script/start-cluster.sh N
#
# Nodes 0..N-1 listen on $DHT_HOST (127.0.0.1) at ports $DHT_BASE_PORT (9000)
# onwards, with ring ids spread evenly; nodes 1.. join through node 0.
# With DHT_JOIN=host:port the N nodes join that existing cluster instead:
# their ids are "<host>-<i>" and their ring ids come from a hash of the id,
# so they do not collide with the first group.
# Pid and log files go to $DHT_RUN_DIR (run/ in the project); settings come
# from $DHT_CONFIG (etc/node.ini). script/status.sh and script/stop-cluster.sh
# use the same folder.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:?usage: start-cluster.sh N}
case "$n" in ''|*[!0-9]*) echo "start-cluster.sh: N must be a number" >&2; exit 2;; esac
host=${DHT_HOST:-127.0.0.1}
base=${DHT_BASE_PORT:-9000}
join=${DHT_JOIN:-}
run=${DHT_RUN_DIR:-$root/run}
config=${DHT_CONFIG:-$root/etc/node.ini}
ring_size=65536

make -C "$root" -s install >/dev/null
mkdir -p "$run"
twistd="$root/.venv/bin/twistd"

started=()
for ((i = 0; i < n; i++)); do
    port=$((base + i))
    if [ -n "$join" ]; then
        id="${host//[^A-Za-z0-9]/-}-$i"
        ring_id=$(printf '%s' "$id" | md5sum | cut -c1-8)
        ring_id=$((16#$ring_id % ring_size))
        seed=$join
    else
        id=$i
        ring_id=$((i * ring_size / n))
        seed="$host:$base"
    fi
    pidfile="$run/$id.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "node $id already running (pid $(cat "$pidfile"))" >&2
        continue
    fi
    args=(--id "$id" --listen "$host:$port" --ring-id "$ring_id")
    if [ -n "$join" ] || [ "$i" -gt 0 ]; then
        args+=(--join "$seed")
    fi
    echo "$host:$port" > "$run/$id.addr"
    rm -f "$run/$id.log"
    "$twistd" --pidfile "$pidfile" --logfile "$run/$id.log" \
        dht --config "$config" "${args[@]}"
    started+=("$id")
done

# wait (bounded) until every node started says it listens
for id in "${started[@]}"; do
    for _ in $(seq 1 200); do
        grep -q "listening on" "$run/$id.log" 2>/dev/null && break
        if [ -f "$run/$id.pid" ] && ! kill -0 "$(cat "$run/$id.pid")" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    if grep -q "listening on" "$run/$id.log" 2>/dev/null; then
        echo "node $id: $(cat "$run/$id.addr") pid $(cat "$run/$id.pid")"
    else
        echo "node $id did not start; see $run/$id.log" >&2
        tail -n 5 "$run/$id.log" >&2 || true
        exit 1
    fi
done
