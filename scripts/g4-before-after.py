#!/usr/bin/env python3
"""Interleaves two builds of the g4 bench (`benches/g4.rs`, one rep per run) and prints, per
size and op, the median over reps of each build's per-rep G4/plain ratio.

Usage: scripts/g4-before-after.py BEFORE_BIN AFTER_BIN [REPS]
(build each with `cargo bench -p kvtier-storage --bench g4 --no-run` and pass the executables).
"""
import re
import statistics
import subprocess
import sys

LINE = re.compile(r"^(.+?)\s+(\d+) KiB\s+plain\s+([\d.]+) µs\s+g4\s+([\d.]+) µs")


def run(binary):
    out = subprocess.run([binary, "--reps", "1"], check=True, capture_output=True, text=True)
    rows = {}
    for line in out.stdout.splitlines():
        m = LINE.match(line)
        if m:
            rows[(int(m[2]), m[1].strip())] = (float(m[3]), float(m[4]))
    return rows


def main():
    before, after = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    got = {"before": [], "after": []}
    for _ in range(reps):
        got["before"].append(run(before))
        got["after"].append(run(after))
    print("| size | op | plain µs (after) | G4 µs (after) | G4/plain before | G4/plain after (min–max) |")
    print("|---|---|---|---|---|---|")
    for key in got["after"][0]:
        rb = [r[key][1] / r[key][0] for r in got["before"]]
        ra = [r[key][1] / r[key][0] for r in got["after"]]
        plain = statistics.median(r[key][0] for r in got["after"])
        g4 = statistics.median(r[key][1] for r in got["after"])
        print(f"| {key[0]} KiB | {key[1]} | {plain:.1f} | {g4:.1f} | {statistics.median(rb):.3f} "
              f"| {statistics.median(ra):.3f} ({min(ra):.2f}–{max(ra):.2f}) |")


if __name__ == "__main__":
    main()
