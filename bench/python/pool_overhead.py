"""Pool overhead in CPython: a trivial function over N integers with map's default chunks and
with chunksize 1, printing what parrun's scripts/pool_overhead.* print."""
import sys
import time
from multiprocessing import Pool

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000


def inc(x):
    return x + 1


if __name__ == "__main__":
    xs = list(range(1, N + 1))
    expected = N * (N + 1) // 2 + N
    with Pool() as pool:
        pool.map(inc, [1, 2, 3])
        for name, chunksize in (("map default chunks", None), ("map chunksize 1", 1)):
            start = time.time()
            results = pool.map(inc, xs, chunksize)
            elapsed = time.time() - start
            status = "ok" if sum(results) == expected else "WRONG"
            print(f"{name}: {len(results)} tasks, results {status}, {elapsed:.3f} s, "
                  f"{N / elapsed:.0f} tasks/s")
