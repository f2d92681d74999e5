#!/usr/bin/env bash
# Durable QoS 1 against the same broker without a store, in one run: vigil
# with the disk store (durability always, then periodic) and with
# --store memory, each restarted fresh per scenario, REPS times. Subscribers
# hold persistent sessions (`--persistent`), so every delivery is written
# through and every PUBACK waits for its group commit in `always` mode.
#
#   benches/durability.sh                # 3 repetitions
#   REPS=1 DURATION=3 benches/durability.sh
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-5}
TARGET=${CARGO_TARGET_DIR:-target}
BIN="$TARGET/release/vigil"
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="benches/results/durability-$STAMP"
mkdir -p benches/results
cargo build --release -q -p vigil

declare -A SCENARIOS=(
  [fan-in-q1]="fan-in -n 4 -q 1 -s 64 --persistent"
  [pairs-q1]="pairs -n 100 -q 1 -s 64 --persistent"
  [pairs-paced]="pairs -n 100 -q 1 -s 64 --rate 100 --persistent"
)
ORDER=(fan-in-q1 pairs-q1 pairs-paced)
declare -A MODES=(
  [always]="--store disk --durability always"
  [periodic]="--store disk --durability periodic"
  [memory]="--store memory"
)
MODE_ORDER=(always periodic memory)

tmp=$(mktemp -d)
trap 'kill $BROKER_PID 2>/dev/null || true; rm -rf "$tmp"' EXIT
BROKER_PID=
port=18900
for rep in $(seq 1 "$REPS"); do
  for scenario in "${ORDER[@]}"; do
    for mode in "${MODE_ORDER[@]}"; do
      port=$((port + 1))
      rm -rf "$tmp/data"
      # shellcheck disable=SC2086
      "$BIN" serve --bind 127.0.0.1 -p "$port" --data-dir "$tmp/data" ${MODES[$mode]} >"$tmp/$mode.log" 2>&1 &
      BROKER_PID=$!
      for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
      # shellcheck disable=SC2086
      line=$("$BIN" bench -p "$port" --duration "$DURATION" --json --quiet --broker-pid "$BROKER_PID" ${SCENARIOS[$scenario]} || echo '{"failed":true}')
      echo "{\"rep\":$rep,\"scenario\":\"$scenario\",\"mode\":\"$mode\",\"result\":$line}" >>"$OUT.jsonl"
      kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
      echo "rep $rep $scenario $mode done" >&2
    done
  done
done
python3 - "$OUT.jsonl" >"$OUT.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["scenario"], r["mode"]), []).append(r["result"])
print("| scenario | mode | delivered/s (median, range) | p50 ms | p99 ms | lost | vs memory |")
print("|---|---|---|---|---|---|---|")
for scen in dict.fromkeys(r["scenario"] for r in rows):
    mem = [x.get("delivered_per_s", 0) for x in by.get((scen, "memory"), [])]
    mem_med = statistics.median(mem) if mem else 0
    for mode in ("always", "periodic", "memory"):
        res = by.get((scen, mode), [])
        rates = [x.get("delivered_per_s", 0) for x in res]
        if not rates:
            continue
        med = statistics.median(rates)
        p50 = statistics.median(x.get("latency", {}).get("p50_ms", 0) for x in res)
        p99 = statistics.median(x.get("latency", {}).get("p99_ms", 0) for x in res)
        lost = sum(x.get("lost", 0) for x in res)
        ratio = f"{med / mem_med:.2f}x" if mem_med else "-"
        print(f"| {scen} | {mode} | {med:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {p50} | {p99} | {lost} | {ratio} |")
PY
cat "$OUT.md"
echo "raw: $OUT.jsonl" >&2
