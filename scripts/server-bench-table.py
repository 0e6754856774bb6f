#!/usr/bin/env python3
"""Turns scripts/server-bench.sh's JSON lines (stdin) into markdown tables: GB/s per target,
and kvtier's ratio to raw TCP and to redis-server at the same block size, op and concurrency."""
import json
import sys

import statistics

runs = [json.loads(l) for l in sys.stdin if l.strip().startswith("{")]
# Several rounds of a cell: the median GB/s and the median p99 over the rounds that ran.
reps = {}
for r in runs:
    if r["report"] and r["op"] in ("get", "put"):
        reps.setdefault((r["op"], r["block"], r["connections"], r["target"]), []).append(r["report"])
cell = {
    k: {"gb_per_sec": statistics.median(x["gb_per_sec"] for x in v),
        "p99_us": statistics.median(x["p99_us"] for x in v), "rounds": len(v)}
    for k, v in reps.items()
}
rounds = max((c["rounds"] for c in cell.values()), default=0)

def gbs(rep):
    return rep["gb_per_sec"] if rep else None

targets = ["raw-tcp", "kvtier-uring", "kvtier-epoll", "redis"]
for op in ["get", "put"]:
    print(f"\n### {op.upper()} (GB/s, median of {rounds} rounds; p99 µs in brackets)\n")
    print("| block | conns | " + " | ".join(targets) + " | uring ÷ raw | uring ÷ redis | uring ÷ epoll |")
    print("|---|---|" + "---|" * (len(targets) + 3))
    keys = sorted({(b, c) for (o, b, c, _) in cell if o == op},
                  key=lambda k: ({"256KiB": 0, "1MiB": 1, "4MiB": 2}.get(k[0], 9), k[1]))
    for b, c in keys:
        vals = [cell.get((op, b, c, t)) for t in targets]
        row = []
        for v in vals:
            row.append("—" if not v else f"{v['gb_per_sec']:.2f} ({v['p99_us']:.0f})")
        def ratio(a, d):
            return f"{gbs(a) / gbs(d):.2f}×" if a and d and gbs(d) else "—"
        print(f"| {b} | {c} | " + " | ".join(row)
              + f" | {ratio(vals[1], vals[0])} | {ratio(vals[1], vals[3])} | {ratio(vals[1], vals[2])} |")

m = [r for r in runs if r["op"] == "match32" and r["report"]]
if m:
    print("\n### MATCH of 32-hash prefixes (pipeline 32)\n")
    print("| target | conns | ops/s | p50 µs | p99 µs | errors |")
    print("|---|---|---|---|---|---|")
    for r in m:
        rep = r["report"]
        print(f"| {r['target']} | {r['connections']} | {rep['ops_per_sec']:,.0f} | {rep['p50_us']:.0f} | {rep['p99_us']:.0f} | {rep['errors']} |")

r = [x for x in runs if x["op"].startswith("resp-") and x["report"]]
if r:
    print("\n### Small and large GET/SET through the RESP port, redis-benchmark (ops/s, median of rounds; p99 µs)\n")
    print("| op | value | clients | pipeline | kvtier RESP | redis-server | kvtier ÷ redis |")
    print("|---|---|---|---|---|---|---|")
    groups = {}
    for x in r:
        groups.setdefault((x["op"], x["block"], x["connections"], x["pipeline"]), {}).setdefault(x["target"], []).append(x["report"])
    for (op, block, c, p), by in groups.items():
        def med(reps):
            return statistics.median(rep["ops_per_sec"] for rep in reps) if reps else None
        def p99(reps):
            return statistics.median(rep["p99_us"] for rep in reps) if reps else None
        k, d = by.get("kvtier-resp", []), by.get("redis", [])
        cell = lambda reps: f"{med(reps):,.0f} ({p99(reps):.0f})" if reps else "—"
        ratio = f"{med(k) / med(d):.2f}×" if k and d and med(d) else "—"
        print(f"| {op[5:].upper()} | {block} | {c} | {p} | {cell(k)} | {cell(d)} | {ratio} |")
