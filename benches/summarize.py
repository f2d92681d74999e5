#!/usr/bin/env python3
"""Turns compare.sh's raw JSON lines into a Markdown table: for each scenario
and broker the median and range over repetitions of the scenario's headline
figures, and vigil's ratio to each peer (ratios > 1 favour vigil)."""
import json
import statistics
import sys
from collections import defaultdict

# scenario prefix -> [(label, path in result, higher_is_better)]
METRICS = {
    "fan": [("msg/s", "delivered_per_s", True), ("p99 ms", "latency.p99_ms", False), ("lost", "lost", False), ("broker CPU %", "broker_usage.cpu_percent", False), ("broker CPU µs/msg", "cpu_us_per_msg", False)],
    "pairs": [("msg/s", "delivered_per_s", True), ("p99 ms", "latency.p99_ms", False), ("lost", "lost", False), ("broker CPU %", "broker_usage.cpu_percent", False), ("broker CPU µs/msg", "cpu_us_per_msg", False)],
    "conn": [("conn/s", "connect_per_s", True), ("CONNACK p99 ms", "connack_latency.p99_ms", False), ("RSS B/conn", "broker_rss_per_connection_bytes", False), ("failed", "failed", False)],
    "ping": [("PINGRESP p99 ms", "pingresp_latency.p99_ms", False), ("max ms", "pingresp_latency.max_ms", False), ("wrongful disconnects", "wrongful_disconnects", False)],
    "expiry": [("close late p99 ms", "close_lateness.p99_ms", False), ("close late max ms", "close_lateness.max_ms", False), ("early", "early_closes", False), ("wills", "wills_delivered", True)],
    "slow": [("healthy dropped", "healthy_disconnected", False), ("healthy PINGRESP p99 ms", "healthy_pingresp_latency.p99_ms", False), ("published msg", "published", True), ("RSS max MiB", "broker_rss_max_bytes", False)],
}


def cpu_us_per_msg(d):
    """Broker CPU time per delivered message: what a message costs the broker,
    comparable even when a paced run delivers the same rate for every broker."""
    cpu, rate = get(d, "broker_usage.cpu_percent"), get(d, "delivered_per_s")
    return cpu * 1e4 / rate if cpu is not None and rate else None


# Figures computed from others rather than read from the result.
DERIVED = {"cpu_us_per_msg": cpu_us_per_msg}


def get(d, path):
    if path in DERIVED:
        return DERIVED[path](d)
    for k in path.split("."):
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def main(path):
    runs = defaultdict(list)
    errors = defaultdict(list)
    order = []
    for line in open(path):
        r = json.loads(line)
        key = (r["name"], r["broker"])
        if r["name"] not in order:
            order.append(r["name"])
        if "result" in r:
            runs[key].append(r["result"])
        else:
            errors[key].append(r["error"])
    brokers = sorted({b for _, b in list(runs) + list(errors)}, key=lambda b: (b != "vigil", b))
    print(f"# vigil vs peers ({path})\n")
    print("Median over repetitions, [min–max] in brackets. Ratio columns: vigil ÷ peer for "
          "'higher is better' figures, peer ÷ vigil otherwise, so > 1 favours vigil.\n")
    for name in order:
        metrics = next((m for p, m in METRICS.items() if name.startswith(p)), [])
        print(f"## {name}\n")
        peers = [b for b in brokers if b != "vigil"]
        print("| figure | " + " | ".join(brokers) + " | " + " | ".join(f"vigil vs {p}" for p in peers) + " |")
        print("|---" * (1 + len(brokers) + len(peers)) + "|")
        for label, mpath, higher in metrics:
            cells, medians = [], {}
            for b in brokers:
                vals = [v for v in (get(x, mpath) for x in runs[(name, b)]) if isinstance(v, (int, float))]
                if mpath == "broker_rss_max_bytes":
                    vals = [v / 1048576 for v in vals]
                if vals:
                    med = statistics.median(vals)
                    medians[b] = med
                    cells.append(f"{med:,.1f} [{min(vals):,.1f}–{max(vals):,.1f}]")
                else:
                    cells.append("error" if errors[(name, b)] else "–")
            ratios = []
            for p in peers:
                v, o = medians.get("vigil"), medians.get(p)
                if v is None or o is None or (v == 0 and o == 0):
                    ratios.append("–")
                elif higher:
                    ratios.append(f"{v / o:.2f}×" if o else "∞")
                else:
                    ratios.append(f"{o / v:.2f}×" if v else "∞")
            print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
        for b in brokers:
            for e in errors[(name, b)][:1]:
                print(f"\n{b} failed: `{e}`")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
