#!/usr/bin/env python3
"""Runs parrun's benchmark scripts (Lua and Rhai, in each execution model asked for) beside
the same programs in CPython, in interleaved rounds so that machine noise hits all of them
alike, and prints medians (of times, rates, and of the speedups each run prints, which pair
the runs being compared), the spread of those speedups, and ratios paired per round: each
parrun run against the CPython run of its round, and each mode against the first mode.

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
        print(
            f"\n## {bench}: against CPython, paired per round "
            "(time: CPython / parrun; rate: parrun / CPython; median)"
        )
        for m in metrics:
            if med[("cpython", m)] is None or m.endswith("(x)"):
                continue
            print(f"{m:28}" + "".join(fmt(per_round(samples, n, "cpython", m)) for n in cmds))
        spread = [m for m in metrics if m.endswith("(x)")]
        if spread:
            print(f"\n## {bench}: speedups, lowest and highest of the {args.runs} runs")
            for m in spread:
                cells = []
                for n in cmds:
                    got = [s[m] for s in samples[n] if m in s]
                    cells.append(f"{min(got):.2f}-{max(got):.2f}" if got else "-")
                print(f"{m:28}" + "".join(f"{c:>14}" for c in cells))
        paired(bench, cmds, samples, metrics, modes, args)


def paired(bench, cmds, samples, metrics, modes, args):
    """Each mode against the first one, run by run (the runs of one round are neighbours in
    time), then the median: a model-to-model ratio that machine drift does not skew."""
    if len(modes) < 2:
        return
    base = modes[0]
    print(f"\n## {bench}: each mode against {base}, paired per round (median of {args.runs})")
    names = [n for n in cmds if n != "cpython" and not n.endswith("-" + base)]
    print(f"{'metric':28}" + "".join(f"{n:>14}" for n in names))
    for m in metrics:
        if m.endswith("(x)"):
            continue
        row = [per_round(samples, n, n.rsplit("-", 1)[0] + "-" + base, m) for n in names]
        print(f"{m:28}" + "".join(fmt(r) for r in row))


def per_round(samples, name, ref, metric):
    """The median over rounds of how much faster `name` was than `ref` in the same round: a
    rate over the reference rate, or the reference time over this time."""
    ratios = [
        a[metric] / b[metric] if metric.endswith("(tasks/s)") else b[metric] / a[metric]
        for a, b in zip(samples[name], samples[ref])
        if a.get(metric) and b.get(metric)
    ]
    return statistics.median(ratios) if ratios else None


if __name__ == "__main__":
    main()
