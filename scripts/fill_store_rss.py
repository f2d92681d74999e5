#!/usr/bin/env python3
"""Recovery time and RSS of `vigil serve` on a data directory written by the
`fill_store` example.

    cargo run --release -p vigil-store --example fill_store -- DIR 100000 10
    scripts/fill_store_rss.py target/release/vigil DIR [RUNS]

Each run copies nothing: it starts the broker on DIR (port 0), reads
`took_ms` from its "store opened" line, VmRSS when it is listening, and VmRSS
again once it has settled (jemalloc's background thread returns freed pages
after ~1 s: the reading is taken when two readings 1 s apart differ by less
than 1 MB, at most 15 s after start), then stops it with SIGTERM. Recovery
rewrites nothing in a store fill_store wrote (its sessions are already
offline), so runs are repeatable. Prints one JSON line per run.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def run(binary, data_dir):
    p = subprocess.Popen(
        [binary, "serve", "--bind", "127.0.0.1", "-p", "0", "--data-dir", data_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
        text=True,
    )
    lines = []
    ready = threading.Event()

    def drain():
        for line in p.stderr:
            lines.append(line)
            if "vigil listening" in line:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not ready.wait(300):
            raise RuntimeError("broker did not start: " + "".join(lines))
        ready_kb = rss_kb(p.pid)
        started = time.monotonic()
        last = ready_kb
        while True:
            time.sleep(1)
            now = rss_kb(p.pid)
            if abs(now - last) < 1024 or time.monotonic() - started > 15:
                break
            last = now
        opened = [l for l in lines if "store opened" in l][0]
        took = int(re.search(r"took_ms=(\d+)", opened).group(1))
        return {
            "took_ms": took,
            "rss_ready_mb": round(ready_kb / 1024, 1),
            "rss_settled_mb": round(now / 1024, 1),
        }
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    binary, data_dir = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    for _ in range(runs):
        print(json.dumps(run(binary, data_dir)), flush=True)


if __name__ == "__main__":
    main()
