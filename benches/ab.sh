#!/usr/bin/env bash
# A/B of two vigil builds in one run, interleaved so a noisy minute hits both:
#   benches/ab.sh OLD_BIN NEW_BIN [REPS]
# (build each with `cargo build --release -p vigil` in its own worktree).
# Runs fan-in, fan-out and pairs QoS 1 with NEW_BIN's bench client against each
# broker (--store memory, loopback) and prints per-run rates, broker CPU
# per delivered message, and the medians' ratios NEW / OLD.
set -euo pipefail
OLD=${1:?old vigil binary} NEW=${2:?new vigil binary} REPS=${3:-3}
PORT=${VIGIL_AB_PORT:-29000}
OUT=$(mktemp -t vigil-ab.XXXXXX)
for rep in $(seq 1 "$REPS"); do
  for sc in "fan-in -n 4 -q 1 -s 64" "fan-out -n 100 -q 1 -s 64" "pairs -n 100 -q 1 -s 64"; do
    for name in old new; do
      bin=$OLD; [ "$name" = new ] && bin=$NEW
      PORT=$((PORT + 1))
      "$bin" serve --bind 127.0.0.1 -p "$PORT" --store memory --max-connections 200000 >/dev/null 2>&1 &
      pid=$!
      for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
      # shellcheck disable=SC2086
      line=$(timeout 120 "$NEW" bench -p "$PORT" -V 311 --duration 5 --json --quiet --broker-pid "$pid" $sc | tail -n1)
      kill "$pid"; wait "$pid" 2>/dev/null || true
      echo "$name|$sc|$line" >>"$OUT"
    done
  done
done
python3 - "$OUT" <<'PY'
import json, statistics as st, sys
res = {}
for l in open(sys.argv[1]):
    name, sc, js = l.rstrip("\n").split("|", 2)
    d = json.loads(js); u = d["broker_usage"]
    res.setdefault((sc.split()[0], name), []).append(
        (d["delivered_per_s"], u["cpu_secs"] * 1e6 / d["delivered"], d["lost"]))
for sc in ("fan-in", "fan-out", "pairs"):
    o, n = res[(sc, "old")], res[(sc, "new")]
    med = lambda rows, i: st.median(r[i] for r in rows)
    print(f"{sc}: old {[round(r[0]) for r in o]} new {[round(r[0]) for r in n]} deliveries/s, lost {sum(r[2] for r in o + n)}")
    print(f"  new/old: rate {med(n, 0) / med(o, 0):.2f}, broker CPU per message {med(n, 1) / med(o, 1):.2f}")
PY
rm -f "$OUT"
