"""Experiment B of the article in CPython (multiprocessing, fork), printing what parrun's
scripts/experiment_b.* print."""
import sys
import time
from multiprocessing import Process, Queue
from threading import Thread

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000000


def calculate(q):
    res = 0
    for i in range(N):
        res += i ** 2
    q.put(res)


def timed(name, run):
    q = Queue()
    start = time.time()
    run(q)
    total = q.get() + q.get()
    elapsed = time.time() - start
    print(f"{name} total: {total}")
    print(f"{name} time: {elapsed:.3f} s")
    return elapsed


def serially(q):
    calculate(q)
    calculate(q)


def parallel(kind):
    def run(q):
        workers = [kind(target=calculate, args=(q,)) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return run


if __name__ == "__main__":
    serial = timed("serial", serially)
    processes = timed("processes", parallel(Process))
    threads = timed("threads", parallel(Thread))
    print(f"processes speedup: {serial / processes:.2f}x")
    print(f"threads speedup: {serial / threads:.2f}x")
