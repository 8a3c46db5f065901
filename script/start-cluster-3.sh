#!/usr/bin/env bash
# Start a cluster of 3 nodes on 127.0.0.1:9000-9002 (see start-cluster.sh).
exec "$(dirname "$0")/start-cluster.sh" 3
