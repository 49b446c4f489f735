# CPython beside fork_memory.lua: a forked worker reads every string of an inherited 2M-string list
# (20 rounds) while making garbage; its Private_Dirty against the parent's RSS.
# usage: python3 bench/python/fork_memory.py [STRINGS] [GARBAGE_LISTS_PER_ROUND] [freeze]
import gc, multiprocessing as mp, re, sys
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000000
JUNK = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
FREEZE = len(sys.argv) > 3 and sys.argv[3] == "freeze"
big = ["s" + str(i) for i in range(1, N + 1)]
def private_dirty():
    return int(re.search(r"Private_Dirty:\s+(\d+)", open("/proc/self/smaps_rollup").read()).group(1)) * 1024
def rss():
    return int(re.search(r"Rss:\s+(\d+)", open("/proc/self/smaps_rollup").read()).group(1)) * 1024
def probe(_):
    before = private_dirty()
    total = 0
    for r in range(20):
        for s in big: total += len(s)
        for i in range(JUNK): junk = [i]
    return before, private_dirty(), total
if __name__ == "__main__":
    mp.set_start_method("fork")
    if FREEZE:
        gc.collect(); gc.freeze()
    heap = rss()
    with mp.Pool(1) as pool:
        b, a, t = pool.map(probe, [1])[0]
    print(f"CPython{' gc.freeze' if FREEZE else ''} junk {JUNK}: parent RSS {heap/1e6:.1f} MB, worker private dirty {a/1e6:.1f} MB = {100*a/heap:.0f}%")
