"""CPython's figure for the `round_trip` group of `process_pool.rs`.

1,000 trivial tasks through `multiprocessing.Pool(2).map` with chunksize 1
and 100, timed over many batches on a warm pool; prints the mean time per
task (what criterion's estimate is: its time per batch / 1,000) and the
median, which a busy machine moves less.

    python3 crates/concur/benches/process_pool_round_trip.py
"""

import multiprocessing
import statistics
import time

BATCH = 1000


def trivial(x):
    return x + 1


def per_task_us(pool, chunksize, batches):
    """Mean and median µs per task over `batches` batches."""
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        pool.map(trivial, range(BATCH), chunksize=chunksize)
        times.append(time.perf_counter() - start)
    return statistics.mean(times) / BATCH * 1e6, statistics.median(times) / BATCH * 1e6


def main():
    with multiprocessing.Pool(2) as pool:
        for chunksize, batches in [(1, 50), (100, 500)]:
            per_task_us(pool, chunksize, batches // 10)  # warm up
            mean, median = per_task_us(pool, chunksize, batches)
            print(
                f"multiprocessing.Pool(2) chunksize {chunksize:>3}: {mean:.2f} µs per task "
                f"(mean of {batches} batches; median {median:.2f})"
            )


if __name__ == "__main__":
    main()
