#!/usr/bin/env bash
# Keep alive on a cluster node under cross-node load: idle clients on node 2
# ping every K seconds while 100 publisher/subscriber pairs flood QoS 1
# messages from node 1 to node 2 (every message crosses the link and is
# delivered by node 2), against the same on one node, in the same run.
# Reports PINGRESP latency and wrongful disconnects.
#
#   benches/cluster_keepalive.sh            # 200 pingers, K=2, 10 s
#   PINGERS=500 DURATION=5 benches/cluster_keepalive.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
PINGERS=${PINGERS:-200}
K=${K:-2}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -n "${VIGIL_BIN:-}" ]; then
  BIN=$VIGIL_BIN
else
  BIN="$TARGET/release/vigil"
  cargo build --release -q -p vigil
fi
ulimit -n 65536 2>/dev/null || true

DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

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

# run NAME PUB_HOST PUB_PORT SUB_HOST SUB_PORT: flood + pingers on the sub node.
run() {
  local name=$1 ph=$2 pp=$3 sh=$4 sp=$5
  "$BIN" bench --quiet --json --duration $((DURATION + 4)) -h "$ph" -p "$pp" --sub-addr "$sh:$sp" --settle 2 \
    pairs -n 100 -q 1 -s 64 >"$DIR/$name-flood.json" &
  local flood=$!
  sleep 3
  "$BIN" bench --quiet --json --duration "$DURATION" -h "$sh" -p "$sp" ping -n "$PINGERS" -k "$K" >"$DIR/$name-ping.json"
  wait "$flood" || true
  python3 - "$name" "$DIR/$name-ping.json" "$DIR/$name-flood.json" <<'PY'
import json, sys
name, ping, flood = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
l = ping["pingresp_latency"]
print(f"| {name} | {flood['delivered_per_s']:.0f} | {l['count']} | {l['p50_ms']} | {l['p99_ms']} | {l['max_ms']} | {ping['wrongful_disconnects']} | {ping['late_pingresp']} |")
PY
}

echo "| setup | flood msg/s delivered | PINGRESPs | p50 ms | p99 ms | max ms | wrongful disconnects | late |"
echo "|---|---|---|---|---|---|---|---|"
read -r spid sport < <(start single --bind 127.0.0.1)
run "single node" 127.0.0.1 "$sport" 127.0.0.1 "$sport"
kill "$spid"; wait "$spid" 2>/dev/null || true

read -r p1 port1 < <(start n1 --bind 127.0.0.1 --data-dir "$DIR/d1" --cluster-node-id 1 --cluster-bind 127.0.0.1:0)
seed=$(grep -m1 "cluster listening" "$DIR/n1.log" | grep -o 'addr=[0-9.:]*' | cut -d= -f2)
read -r p2 port2 < <(start n2 --bind 127.0.0.2 --data-dir "$DIR/d2" --cluster-node-id 2 --cluster-bind 127.0.0.2:0 --cluster-seed "$seed")
for _ in $(seq 300); do
  grep -q "cluster link up" "$DIR/n2.log" && grep -q "cluster link up" "$DIR/n1.log" &&
    grep -q "node is a voter of the ownership group node=2" "$DIR/n1.log" && break
  sleep 0.1
done
run "cluster: pub node 1, sub + pingers node 2" 127.0.0.1 "$port1" 127.0.0.2 "$port2"
