"""What a pool costs in CPython, printing what parrun's scripts/pool_costs.* print: a map of N
integers with the default chunks on a pool started and stopped inside the timing, chunksize 1
and N apply_async then a get of each on a warm pool (tasks per second), and a pool's start
(Pool(4), one task, close and join), the median of several in the run."""
import statistics
import sys
import time
from multiprocessing import Pool

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
STARTS = max(3, min(11, N // 10000 + 1))


def inc(x):
    return x + 1


def report(name, results, elapsed, expected):
    status = "ok" if sum(results) == expected else "WRONG"
    print(f"{name}: {len(results)} tasks, results {status}, {elapsed:.3f} s, "
          f"{N / elapsed:.0f} tasks/s")


if __name__ == "__main__":
    starts = []
    for _ in range(STARTS):
        start = time.time()
        p = Pool(4)
        assert p.apply(inc, (1,)) == 2
        p.close()
        p.join()
        starts.append(time.time() - start)
    print(f"pool start time: {statistics.median_low(starts):.6f} s")

    xs = list(range(1, N + 1))
    expected = N * (N + 1) // 2 + N

    start = time.time()
    pool = Pool()
    results = pool.map(inc, xs)
    pool.close()
    pool.join()
    report("map default chunks incl. start", results, time.time() - start, expected)

    with Pool() as pool:
        pool.map(inc, [1, 2, 3])
        start = time.time()
        results = pool.map(inc, xs, 1)
        report("map chunksize 1", results, time.time() - start, expected)

        start = time.time()
        pending = [pool.apply_async(inc, (i,)) for i in xs]
        results = [r.get() for r in pending]
        report("apply_async", results, time.time() - start, expected)
        pool.close()
        pool.join()
