"""Experiment A of the article ("testing the GIL") in CPython, printing what parrun's
scripts/experiment_a.* print, so `parrun bench --python` can run them side by side."""
import sys
import threading
import time
from queue import Queue

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
num_list = list(range(N))


def worker(l, q):
    q.put(sum(l))


# The lists are made before the clock starts, as scripts/experiment_a.lua makes them (Lua
# builds a table by growing it, which took longer than summing it).
big = num_list * 4
start = time.time()
total = sum(big)
serial = time.time() - start
print(f"serial total: {total}")
print(f"serial time: {serial:.3f} s")

copies = [num_list[:] for _ in range(4)]
start = time.time()
q = Queue()
threads = [threading.Thread(target=worker, args=(c, q)) for c in copies]
for t in threads:
    t.start()
for t in threads:
    t.join()
total = sum(q.get() for _ in range(4))
threaded = time.time() - start
print(f"threads total: {total}")
print(f"threads time: {threaded:.3f} s")
print(f"threads/serial time ratio: {threaded / serial:.2f}")
