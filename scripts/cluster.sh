#!/usr/bin/env bash
# Three ironmatch nodes on loopback, a Raft cluster: each with its own configuration
# (config/cluster/node{1,2,3}.toml), journal directory (data/cluster/nodeN) and ports
# (gateway 151N0, Raft 151N1, feed retransmission 151N2, admin 151N8), and one feed
# destination for all, 127.0.0.1:15103: only the leader sends, so a listener there
# (`ironmatch feed --config config/cluster/node1.toml`) hears the feed across failovers.
#
#   scripts/cluster.sh configs        write config/cluster/node{1,2,3}.toml from config/ironmatch.toml
#   scripts/cluster.sh start          build (release) and start the three nodes in the background
#   scripts/cluster.sh status         ironmatch cluster status
#   scripts/cluster.sh kill N         kill -9 node N (a failover when it leads)
#   scripts/cluster.sh restart N      start node N again (it catches up from the leader's log)
#   scripts/cluster.sh stop           SIGTERM every node and wait
#   scripts/cluster.sh wipe           stop, then remove data/cluster
#
# Logs: data/cluster/nodeN.log; pids: data/cluster/nodeN.pid.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${IRONMATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/ironmatch}
DATA=data/cluster

configs() {
    mkdir -p config/cluster
    for n in 1 2 3; do
        # The shipped configuration without its [venue] (not supported in a cluster yet),
        # with this node's ports and directory, and the [cluster] table.
        awk '/^\[venue\]/{skip=1; next} /^# Replication: a cluster/{skip=1; next}
             /^\[/ || /^# One \[\[instruments/{skip=0} !skip' config/ironmatch.toml |
            sed -e "s|127.0.0.1:15000|127.0.0.1:151${n}0|" \
                -e "s|127.0.0.1:15001|127.0.0.1:15103|" \
                -e "s|127.0.0.1:15002|127.0.0.1:151${n}2|" \
                -e "s|127.0.0.1:15080|127.0.0.1:151${n}8|" \
                -e "s|^dir = \"./data\"|dir = \"./data/cluster/node${n}\"|" \
                -e "1s|.*|# Node ${n} of the loopback cluster of scripts/cluster.sh (made by \\\`scripts/cluster.sh configs\\\` from config/ironmatch.toml).|" \
                >config/cluster/node${n}.toml
        cat >>config/cluster/node${n}.toml <<TOML

# This node in the three-node loopback cluster of scripts/cluster.sh.
[cluster]
node_id = ${n}
election_timeout_min_ms = 500
election_timeout_max_ms = 1000
heartbeat_interval_ms = 100
# Shared secret (at least 16 bytes, the same on every node; IRONMATCH_CLUSTER_SECRET wins): nodes authenticate each other and encrypt every frame; "": none, loopback only.
secret = ""
# While the cluster moves to a new secret: the one before it, still taken (at least 16 bytes;
# IRONMATCH_CLUSTER_PREVIOUS_SECRET wins). Set secret to the new one and this to the old, node by
# node; once every node takes the new one, empty this (and unset IRONMATCH_CLUSTER_PREVIOUS_SECRET),
# node by node (README, "Rotating the secret").
previous_secret = ""

[[cluster.peers]]
id = 1
raft = "127.0.0.1:15111"
gateway = "127.0.0.1:15110"

[[cluster.peers]]
id = 2
raft = "127.0.0.1:15121"
gateway = "127.0.0.1:15120"

[[cluster.peers]]
id = 3
raft = "127.0.0.1:15131"
gateway = "127.0.0.1:15130"
TOML
    done
}

start_node() {
    local n=$1
    mkdir -p "$DATA"
    nohup "$BIN" serve --config config/cluster/node${n}.toml >>"$DATA/node${n}.log" 2>&1 &
    echo $! >"$DATA/node${n}.pid"
    echo "node ${n}: pid $!, gateway 127.0.0.1:151${n}0, log $DATA/node${n}.log"
}

signal_node() {
    local n=$1 sig=$2
    [ -f "$DATA/node${n}.pid" ] || return 0
    kill "-$sig" "$(cat "$DATA/node${n}.pid")" 2>/dev/null || true
}

case "${1:-}" in
configs) configs ;;
start)
    [ -f config/cluster/node1.toml ] || configs
    # A build that is up to date does nothing; an explicit IRONMATCH_BIN is taken as is.
    [ -n "${IRONMATCH_BIN:-}" ] || cargo build --release
    for n in 1 2 3; do start_node $n; done
    ;;
status) "$BIN" cluster status --config config/cluster/node1.toml ;;
kill) signal_node "$2" KILL ;;
restart) start_node "$2" ;;
stop)
    for n in 1 2 3; do signal_node $n TERM; done
    for n in 1 2 3; do
        [ -f "$DATA/node${n}.pid" ] || continue
        while kill -0 "$(cat "$DATA/node${n}.pid")" 2>/dev/null; do sleep 0.1; done
        rm -f "$DATA/node${n}.pid"
    done
    ;;
wipe)
    "$0" stop
    rm -rf "$DATA"
    ;;
*)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
