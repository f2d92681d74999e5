#!/usr/bin/env bash
# The cost of the cluster hop: the same `vigil bench` scenarios against one
# node (publishers and subscribers on it) and against a two-node cluster
# (publishers on node 1, subscribers on node 2, so every message crosses the
# node-to-node link), in the same run. Broker CPU is summed over the nodes.
#
#   benches/cluster.sh                  # fan-in, pairs, fan-out at QoS 1
#   DURATION=3 benches/cluster.sh fan-in-q1
#   VIGIL_BIN=/path/to/other/vigil benches/cluster.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
TARGET=${CARGO_TARGET_DIR:-target}
# VIGIL_BIN: an already built binary (an A/B against another build).
if [ -n "${VIGIL_BIN:-}" ]; then
  BIN=$VIGIL_BIN
else
  BIN="$TARGET/release/vigil"
  cargo build --release -q -p vigil
fi
ulimit -n 65536 2>/dev/null || true

declare -A SCENARIOS=(
  [fan-in-q1]="fan-in -n 4 -q 1 -s 64"
  [pairs-q1]="pairs -n 100 -q 1 -s 64"
  [fan-out-q1]="fan-out -n 100 -q 1 -s 64"
  [pairs-q1-paced]="pairs -n 100 -q 1 -s 64 --rate 100"
)
ORDER=(fan-in-q1 pairs-q1 fan-out-q1 pairs-q1-paced)
[ $# -gt 0 ] && ORDER=("$@")

DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

# start NAME ARGS...: runs a node, waits for its listening line, prints "PID PORT".
start() {
  local name=$1; shift
  "$BIN" serve --store memory -p 0 --workers 1 --sys-interval 0 "$@" 2>"$DIR/$name.log" &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do
    if grep -q "vigil listening" "$DIR/$name.log"; then
      echo "$pid $(grep -m1 "vigil listening" "$DIR/$name.log" | grep -o '[0-9]*$')"
      return
    fi
    sleep 0.1
  done
  echo "node $name did not start" >&2; exit 1
}

for sc in "${ORDER[@]}"; do
  read -r -a args <<<"${SCENARIOS[$sc]}"
  read -r spid sport < <(start single --bind 127.0.0.1)
  single=$("$BIN" bench --quiet --json --duration "$DURATION" -h 127.0.0.1 -p "$sport" --broker-pid "$spid" "${args[@]}")
  kill "$spid"; wait "$spid" 2>/dev/null || true

  rm -rf "$DIR/d1" "$DIR/d2"
  read -r p1 port1 < <(start n1 --bind 127.0.0.1 --data-dir "$DIR/d1" --cluster-node-id 1 --cluster-bind 127.0.0.1:0)
  seed=$(grep -m1 "cluster listening" "$DIR/n1.log" | grep -o 'addr=[0-9.:]*' | cut -d= -f2)
  read -r p2 port2 < <(start n2 --bind 127.0.0.2 --data-dir "$DIR/d2" --cluster-node-id 2 --cluster-bind 127.0.0.2:0 --cluster-seed "$seed")
  # Clients connect once both links are up and node 2 votes in the
  # ownership group (before that a CONNECT cannot be claimed).
  for _ in $(seq 300); do
    grep -q "cluster link up" "$DIR/n2.log" && grep -q "cluster link up" "$DIR/n1.log" &&
      grep -q "node is a voter of the ownership group node=2" "$DIR/n1.log" && break
    sleep 0.1
  done
  cluster=$("$BIN" bench --quiet --json --duration "$DURATION" -h 127.0.0.1 -p "$port1" --sub-addr "127.0.0.2:$port2" --settle 2 --broker-pid "$p1" --also-pid "$p2" "${args[@]}")
  kill "$p1" "$p2"; wait "$p1" "$p2" 2>/dev/null || true
  python3 - "$sc" "$single" "$cluster" <<'PY'
import json, sys
sc, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
def row(name, r):
    cpu = r["broker_usage"]["cpu_secs"] if r.get("broker_usage") else float("nan")
    per = cpu * 1e6 / r["delivered"] if r["delivered"] else float("nan")
    l = r["latency"]
    print(f"| {sc} | {name} | {r['delivered_per_s']:.0f} | {r['lost']} | {r['duplicates']} | {l['p50_ms']} | {l['p99_ms']} | {per:.2f} |")
row("single node", a)
row("pub node 1 → sub node 2", b)
PY
done
