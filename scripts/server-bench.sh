#!/usr/bin/env bash
# Side-by-side server throughput, one run: raw loopback TCP (the ceiling), `kvtier serve` on
# io_uring and on epoll (default configuration: host memory + write-through disk tier), and
# redis-server (no persistence), for GET and PUT of 256 KiB / 1 MiB / 4 MiB blocks at 1 / 4 /
# 16 / 64 connections, all measured by `kvtier bench`; then MATCH of 32-hash prefixes.
# Prints one JSON line per run (target, op, block, connections + the bench's report).
#
#   cargo build --release -p kvtier-cli && scripts/server-bench.sh [SECONDS] > runs.jsonl
#
# Everything binds to 127.0.0.1 on free ports and is stopped on exit.
set -euo pipefail
secs="${1:-2}"
bin="${KVTIER_BIN:-target/release/kvtier}"
sizes="${SIZES:-256KiB 1MiB 4MiB}"
conns="${CONNS:-1 4 16 64}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench() { # target-label op block conns args...
    local label=$1 op=$2 block=$3 c=$4; shift 4
    local mix; case $op in get) mix=0:1:0;; put) mix=1:0:0;; match) mix=0:0:1;; esac
    local out
    if out=$("$bin" bench "$@" --block-bytes "$block" --connections "$c" --pipeline 4 \
        --keyspace 128 --mix "$mix" --duration "$secs" --warmup 0.5 --format json 2>/dev/null); then
        echo "{\"target\":\"$label\",\"op\":\"$op\",\"block\":\"$block\",\"connections\":$c,\"report\":$out}"
    else
        echo "{\"target\":\"$label\",\"op\":\"$op\",\"block\":\"$block\",\"connections\":$c,\"report\":null}"
    fi
}

serve() { # backend block -> sets $kv_addr, $kv_pid
    local p; p=$(port)
    rm -rf "$work/data"
    KVTIER_LOG=warn "$bin" serve --listen "127.0.0.1:$p" --redis-listen off --metrics-listen off \
        --data-dir "$work/data" --block-bytes "$2" --io-backend "$1" 2>/dev/null &
    kv_pid=$!; pids+=("$kv_pid"); kv_addr="127.0.0.1:$p"
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null && return; sleep 0.1; done
    echo "kvtier serve did not start" >&2; exit 1
}

rport=$(port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --daemonize no --loglevel warning >/dev/null &
pids+=("$!")
sleep 0.5

for block in $sizes; do
    for backend in uring epoll; do
        serve "$backend" "$block"
        for c in $conns; do
            for op in put get; do
                bench "kvtier-$backend" "$op" "$block" "$c" --addr "$kv_addr"
            done
        done
        kill "$kv_pid"; wait "$kv_pid" 2>/dev/null || true
    done
    for c in $conns; do
        for op in put get; do
            bench raw-tcp "$op" "$block" "$c" --raw-tcp
            bench redis "$op" "$block" "$c" --target "redis://127.0.0.1:$rport"
        done
    done
done

# MATCH of 32-hash prefixes, deep pipelines.
for backend in uring epoll; do
    serve "$backend" 256KiB
    for c in 1 4 16; do
        bench "kvtier-$backend" put 256KiB "$c" --addr "$kv_addr" >/dev/null
        "$bin" bench --addr "$kv_addr" --block-bytes 256KiB --connections "$c" --pipeline 32 \
            --keyspace 128 --mix 0:0:1 --duration "$secs" --warmup 0.5 --format json 2>/dev/null \
            | sed "s/^/{\"target\":\"kvtier-$backend\",\"op\":\"match32\",\"block\":\"256KiB\",\"connections\":$c,\"report\":/; s/\$/}/"
    done
    kill "$kv_pid"; wait "$kv_pid" 2>/dev/null || true
done
