#!/usr/bin/env bash
# Start a cluster of 10 nodes on 127.0.0.1:9000-9009 (see start-cluster.sh).
exec "$(dirname "$0")/start-cluster.sh" 10
