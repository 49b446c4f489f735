#!/usr/bin/env python3
"""Runs parrun's benchmark scripts (Lua and Rhai, in each execution model asked for) beside
the same programs in CPython, in interleaved rounds so that machine noise hits all of them
alike, and prints medians (of times, rates, and of the speedups each run prints, which pair
the runs being compared), and each parrun median's ratio to CPython's.

    python3 bench/compare.py [--runs 5] [--modes fork,isolated,gil] [--langs lua,rhai] [BENCH ...]

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
SPEEDUP = re.compile(r"^(.*) speedup: ([0-9.]+)x$")
RATE = re.compile(r"^(.*): \d+ tasks, results (\w+), [0-9.]+ s, ([0-9.]+) tasks/s$")


def commands(bench, modes, langs):
    script = os.path.join(ROOT, "scripts", bench)
    cmds = {}
    for lang in langs:
        for mode in modes:
            cmds[f"{lang}-{mode}"] = [PARRUN, "--mode", mode, f"{script}.{lang}"]
    cmds["cpython"] = [sys.executable, os.path.join(ROOT, "bench", "python", bench + ".py")]
    return cmds


def measure(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900).stdout
    found = {}
    for line in out.splitlines():
        if m := TIME.match(line):
            found[m.group(1) + " (s)"] = float(m.group(2))
        elif m := SPEEDUP.match(line):
            # Paired within one run: steadier on a noisy machine than a ratio of medians.
            found[m.group(1) + " speedup (x)"] = float(m.group(2))
        elif m := RATE.match(line):
            if m.group(2) != "ok":
                raise SystemExit(f"{cmd}: wrong results: {line}")
            found[m.group(1) + " (tasks/s)"] = float(m.group(3))
    return found


def fmt(x):
    if x is None:
        return f"{'-':>14}"
    return f"{x:>14.3f}" if x < 1000 else f"{x:>14.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--modes", default="fork", help="comma-separated parrun --mode values")
    ap.add_argument("--langs", default="lua,rhai", help="comma-separated languages")
    ap.add_argument("benches", nargs="*", default=BENCHES)
    args = ap.parse_args()
    modes = args.modes.split(",")
    for bench in args.benches:
        cmds = commands(bench, modes, args.langs.split(","))
        samples = {name: [] for name in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                samples[name].append(measure(cmd))
        metrics = []
        for runs in samples.values():
            metrics += [m for m in runs[0] if m not in metrics]
        med = {
            (n, m): statistics.median(s[m] for s in samples[n]) if m in samples[n][0] else None
            for n in cmds
            for m in metrics
        }
        print(f"\n## {bench}: medians of {args.runs} runs")
        print(f"{'metric':28}" + "".join(f"{n:>14}" for n in cmds))
        for m in metrics:
            print(f"{m:28}" + "".join(fmt(med[(n, m)]) for n in cmds))
        print(f"\n## {bench}: ratio to CPython (time: CPython / parrun; rate: parrun / CPython)")
        for m in metrics:
            cpy = med[("cpython", m)]
            if cpy is None or m.endswith("(x)"):
                continue
            row = []
            for n in cmds:
                v = med[(n, m)]
                row.append(None if v is None else (cpy / v if m.endswith("(s)") else v / cpy))
            print(f"{m:28}" + "".join(fmt(r) for r in row))


if __name__ == "__main__":
    main()
