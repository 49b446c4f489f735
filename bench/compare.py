#!/usr/bin/env python3
"""Runs parrun's benchmark scripts (Lua and Rhai) beside the same programs in CPython, in
interleaved rounds so that machine noise hits all of them alike, and prints medians and
ratios.

    python3 bench/compare.py [--runs 5] [--mode fork] [BENCH ...]

BENCH is experiment_a, experiment_b or pool_overhead (default: all). Build first with
`cargo build --release`.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARRUN = os.path.join(ROOT, "target", "release", "parrun")
BENCHES = ["experiment_a", "experiment_b", "pool_overhead"]
TIME = re.compile(r"^(.*) time: ([0-9.]+) s$")
RATE = re.compile(r"^(.*): \d+ tasks, results (\w+), [0-9.]+ s, ([0-9.]+) tasks/s$")


def commands(bench, extra):
    script = os.path.join(ROOT, "scripts", bench)
    return {
        "lua": [PARRUN, *extra, script + ".lua"],
        "rhai": [PARRUN, *extra, script + ".rhai"],
        "cpython": [sys.executable, os.path.join(ROOT, "bench", "python", bench + ".py")],
    }


def measure(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900).stdout
    found = {}
    for line in out.splitlines():
        if m := TIME.match(line):
            found[m.group(1) + " (s)"] = float(m.group(2))
        elif m := RATE.match(line):
            if m.group(2) != "ok":
                raise SystemExit(f"{cmd}: wrong results: {line}")
            found[m.group(1) + " (tasks/s)"] = float(m.group(3))
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mode", help="parrun --mode (when supported)")
    ap.add_argument("benches", nargs="*", default=BENCHES)
    args = ap.parse_args()
    extra = ["--mode", args.mode] if args.mode else []
    for bench in args.benches:
        cmds = commands(bench, extra)
        samples = {name: [] for name in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                samples[name].append(measure(cmd))
        print(f"\n## {bench} (medians of {args.runs} runs)")
        metrics = list(samples["cpython"][0])
        print(f"{'metric':32} " + " ".join(f"{n:>10}" for n in cmds) + "   lua/cpy  rhai/cpy")
        for metric in metrics:
            med = {n: statistics.median(s[metric] for s in samples[n]) for n in cmds}
            row = " ".join(f"{med[n]:>10.3f}" if med[n] < 1000 else f"{med[n]:>10.0f}" for n in cmds)
            print(f"{metric:32} {row}   {med['lua'] / med['cpython']:7.2f}  {med['rhai'] / med['cpython']:8.2f}")


if __name__ == "__main__":
    main()
