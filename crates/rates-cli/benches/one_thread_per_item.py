"""The chapter's one-thread-per-item listing over N items, for the peak
memory `rates bench --models thread-per-item` is compared with.

Start a server first, then run it against that server:

    rates -q serve --addr 127.0.0.1:18080 --latency 1500ms --max-connections 6000
    python3 crates/rates-cli/benches/one_thread_per_item.py http://127.0.0.1:18080 5000

It needs `requests`. It prints the rates as the listing does, then on
stderr the time taken and the peak resident memory (`ru_maxrss`).
"""

import resource
import sys
import time
from threading import Thread

import requests

SYMBOLS = ("USD", "EUR", "PLN", "NOK", "CZK")
BASES = ("USD", "EUR", "PLN", "NOK", "CZK")


def fetch_rates(api, base):
    response = requests.get(f"{api}/rates?base={base}&symbols={','.join(SYMBOLS)}")
    response.raise_for_status()
    rates = response.json()["rates"]
    rates[base] = 1.0
    rates_line = ", ".join([f"{rates[symbol]:7.03} {symbol}" for symbol in SYMBOLS])
    print(f"1 {base} = {rates_line}")


def main(api, n):
    threads = []
    for i in range(n):
        thread = Thread(target=fetch_rates, args=[api, BASES[i % len(BASES)]])
        thread.start()
        threads.append(thread)
    while threads:
        threads.pop().join()


if __name__ == "__main__":
    started = time.perf_counter()
    main(sys.argv[1], int(sys.argv[2]))
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"time elapsed: {elapsed:.2f}s, peak memory: {peak:.1f} MiB", file=sys.stderr)
