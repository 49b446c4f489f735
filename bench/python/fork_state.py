"""CPython beside parrun's scripts/fork_state.*: an idle forked worker's private memory, a big
list of N strings (built, then read by a forked worker while it makes garbage: its private
memory, as bench/python/fork_memory.py), and a pool's first map of a function reading that list
as a global. Closures cannot be pickled and interpreter pools start empty, so the upvalue and
isolated lines have no CPython counterpart."""
import multiprocessing as mp
import os
import re
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000000
JUNK = max(1, N // 20)
big = []


def rollup(field, pid="self"):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1)) * 1024


def probe(_):
    total = 0
    for _ in range(20):
        for s in big:
            total += len(s)
        for i in range(JUNK):
            junk = [i]
    return rollup("Private_Dirty"), total


def length(i):
    return len(big[i])


def memory(name, nbytes):
    print(f"{name} memory: {nbytes / 1e6:.3f} MB")


if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(1) as pool:
        pid = pool.apply(os.getpid)
        memory("idle worker", rollup("Private_Dirty", pid))

    start = time.time()
    big.extend("s" + str(i) for i in range(1, N + 1))
    print(f"big table build time: {time.time() - start:.6f} s")

    heap = rollup("Rss")
    with mp.Pool(1) as pool:
        private, _ = pool.apply(probe, (1,))
    memory("inherited table private", private)
    print(f"(the parent's RSS: {heap / 1e6:.1f} MB; the worker's private memory is "
          f"{100 * private / heap:.0f}% of it)")

    idx = [(i * (N // 4)) for i in range(4)]
    with mp.Pool(2) as pool:
        pool.map(abs, [1, 2])
        start = time.time()
        lengths = pool.map(length, idx)
        print(f"first map with a global table time: {time.time() - start:.6f} s")
        assert lengths == [len(big[i]) for i in idx], "a wrong length"
