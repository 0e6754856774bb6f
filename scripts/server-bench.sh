#!/usr/bin/env bash
# Side-by-side server throughput, one run: raw loopback TCP (the ceiling), `kvtier serve` on
# io_uring and on epoll (default configuration: host memory + write-through disk tier), and
# redis-server (no persistence), for GET and PUT of 256 KiB / 1 MiB / 4 MiB blocks at 1 / 4 /
# 16 / 64 connections, all measured by `kvtier bench`; then MATCH of 32-hash prefixes; then
# small and large GET/SET through kvtier's RESP port and redis-server with `redis-benchmark`
# (rounds alternate between the two; RESP_ROUNDS, default 3).
# Prints one JSON line per run (target, op, block, connections + the bench's report).
#
#   cargo build --release -p kvtier-cli && scripts/server-bench.sh [SECONDS] > runs.jsonl
#
# ROUNDS (default 3) repetitions of every GET/PUT cell, targets interleaved; SIZES and CONNS
# narrow the grid; PIN=1 puts the servers and the clients on different cores (see below).
#
# CC=NAME (default `system`): the loopback congestion control of both kvtier servers, the raw
# TCP server and every bench connection (`--loopback-congestion`); redis-server keeps the host's.
#
# Everything binds to 127.0.0.1 on free ports and is stopped on exit.
set -euo pipefail
secs="${1:-2}"
bin="${KVTIER_BIN:-target/release/kvtier}"
sizes="${SIZES:-256KiB 1MiB 4MiB}"
conns="${CONNS:-1 4 16 64}"
rounds="${ROUNDS:-3}"
cc="${CC:-system}"
# PIN=1: every server (kvtier, redis-server, the raw TCP server) on CPU SERVER_CPU (default 0)
# and every client on CLIENT_CPU (default 1), so a server has one core of its own and does
# not compete with its load generator. `kvtier serve` then sizes its threads for one core.
srv=(); cli=(); raw_pin=()
if [ -n "${PIN:-}" ]; then
    srv=(taskset -c "${SERVER_CPU:-0}"); cli=(taskset -c "${CLIENT_CPU:-1}")
    raw_pin=(--raw-server-cpu "${SERVER_CPU:-0}")
fi
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench() { # target-label op block conns args...
    local label=$1 op=$2 block=$3 c=$4; shift 4
    local mix; case $op in get) mix=0:1:0;; put) mix=1:0:0;; match) mix=0:0:1;; esac
    local out
    if out=$("${cli[@]}" "$bin" bench "$@" --block-bytes "$block" --connections "$c" --pipeline 4 \
        --keyspace 128 --mix "$mix" --duration "$secs" --warmup 0.5 --loopback-congestion "$cc" --format json 2>/dev/null); then
        echo "{\"target\":\"$label\",\"op\":\"$op\",\"block\":\"$block\",\"connections\":$c,\"report\":$out}"
    else
        echo "{\"target\":\"$label\",\"op\":\"$op\",\"block\":\"$block\",\"connections\":$c,\"report\":null}"
    fi
}

serve() { # backend block -> sets $kv_addr, $kv_pid
    local p; p=$(port)
    rm -rf "$work/data-$1"
    KVTIER_LOG=warn "${srv[@]}" "$bin" serve --listen "127.0.0.1:$p" --redis-listen off --metrics-listen off \
        --data-dir "$work/data-$1" --block-bytes "$2" --io-backend "$1" --loopback-congestion "$cc" 2>/dev/null &
    kv_pid=$!; pids+=("$kv_pid"); kv_addr="127.0.0.1:$p"
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null && return; sleep 0.1; done
    echo "kvtier serve did not start" >&2; exit 1
}

rport=$(port)
"${srv[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --daemonize no --loglevel warning >/dev/null &
pids+=("$!")
sleep 0.5

# Every cell (block, connections, op) runs all four targets back to back, ROUNDS times, the
# first target rotating, so a slow spell of the shared machine hits every target alike; the
# table gives medians. Both kvtier servers of a block size stay up (an idle one parks).
for block in $sizes; do
    serve uring "$block"; uring_addr=$kv_addr; uring_pid=$kv_pid
    serve epoll "$block"; epoll_addr=$kv_addr; epoll_pid=$kv_pid
    targets=(raw-tcp kvtier-uring kvtier-epoll redis)
    for round in $(seq "$rounds"); do
        for c in $conns; do
            for op in put get; do
                for i in 0 1 2 3; do
                    t=${targets[$(( (i + round) % 4 ))]}
                    case $t in
                        raw-tcp) bench "$t" "$op" "$block" "$c" --raw-tcp "${raw_pin[@]}" ;;
                        kvtier-uring) bench "$t" "$op" "$block" "$c" --addr "$uring_addr" ;;
                        kvtier-epoll) bench "$t" "$op" "$block" "$c" --addr "$epoll_addr" ;;
                        redis) bench "$t" "$op" "$block" "$c" --target "redis://127.0.0.1:$rport" ;;
                    esac
                done
            done
        done
    done
    kill "$uring_pid" "$epoll_pid"; wait "$uring_pid" "$epoll_pid" 2>/dev/null || true
done

# MATCH of 32-hash prefixes, deep pipelines.
for backend in uring epoll; do
    serve "$backend" 256KiB
    for c in 1 4 16; do
        bench "kvtier-$backend" put 256KiB "$c" --addr "$kv_addr" >/dev/null
        "${cli[@]}" "$bin" bench --addr "$kv_addr" --block-bytes 256KiB --connections "$c" --pipeline 32 \
            --keyspace 128 --mix 0:0:1 --duration "$secs" --warmup 0.5 --format json 2>/dev/null \
            | sed "s/^/{\"target\":\"kvtier-$backend\",\"op\":\"match32\",\"block\":\"256KiB\",\"connections\":$c,\"report\":/; s/\$/}/"
    done
    kill "$kv_pid"; wait "$kv_pid" 2>/dev/null || true
done

# The RESP port against redis-server with redis-benchmark, rounds alternating. Each line:
# target kvtier-resp or redis, op resp-set / resp-get, the value size, clients, pipeline.
resp_rounds="${RESP_ROUNDS:-3}"
kport=$(port)
rm -rf "$work/data"
KVTIER_LOG=warn "${srv[@]}" "$bin" serve --listen "127.0.0.1:$(port)" --redis-listen "127.0.0.1:$kport" \
    --metrics-listen off --data-dir "$work/data" --disk-bytes 0 --host-bytes 64MiB 2>/dev/null &
kv_pid=$!; pids+=("$kv_pid")
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$kport") 2>/dev/null && break; sleep 0.1; done
resp_bench() { # label port size clients pipeline requests keys
    "${cli[@]}" redis-benchmark -h 127.0.0.1 -p "$2" -t set,get -d "$3" -c "$4" -P "$5" -n "$6" -r "$7" --csv 2>/dev/null \
        | python3 -c '
import csv, json, sys
label, size, c, p = sys.argv[1:5]
for row in csv.DictReader(sys.stdin):
    rep = {"ops_per_sec": float(row["rps"]), "p50_us": float(row["p50_latency_ms"]) * 1000,
           "p99_us": float(row["p99_latency_ms"]) * 1000}
    print(json.dumps({"target": label, "op": "resp-" + row["test"].lower(), "block": size + "B",
                      "connections": int(c), "pipeline": int(p), "report": rep}))
' "$1" "$3" "$4" "$5"
}
for round in $(seq "$resp_rounds"); do
    for spec in "64 50 16 400000 10000" "1024 50 16 200000 10000" "65536 4 1 20000 1000" "262144 4 1 8000 1000"; do
        set -- $spec
        resp_bench kvtier-resp "$kport" "$@"
        resp_bench redis "$rport" "$@"
    done
done
kill "$kv_pid"; wait "$kv_pid" 2>/dev/null || true
