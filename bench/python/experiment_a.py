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


start = time.time()
total = sum(num_list * 4)
serial = time.time() - start
print(f"serial total: {total}")
print(f"serial time: {serial:.3f} s")

start = time.time()
q = Queue()
threads = [threading.Thread(target=worker, args=(num_list[:], q)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
total = sum(q.get() for _ in range(4))
threaded = time.time() - start
print(f"threads total: {total}")
print(f"threads time: {threaded:.3f} s")
print(f"threads/serial time ratio: {threaded / serial:.2f}")
