#!/usr/bin/env bash
# The cost of client-id ownership: every CONNECT on a cluster node commits a
# Raft claim (batched). `vigil bench conn` opens N connections (each its own
# client id) against one node alone, then against node 1 of a three-node
# cluster on 127.0.0.1-3, in the same run: connections per second, CONNACK
# p50/p99 and their ratio.
#
#   benches/cluster_connect.sh            # 10,000 connections, 3 rounds
#   N=2000 ROUNDS=1 benches/cluster_connect.sh
#   RATE=2000 benches/cluster_connect.sh  # paced: CONNACK latency the claim adds
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RATE=${RATE:-100000}
ROUNDS=${ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
BIN="$TARGET/release/vigil"
cargo build --release -q -p vigil
ulimit -n 65536 2>/dev/null || true

DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

# start NAME ARGS...: runs a node, waits for its listening line, prints "PID PORT".
start() {
  local name=$1; shift
  "$BIN" serve --store memory -p 0 --sys-interval 0 --max-connections 200000 "$@" 2>"$DIR/$name.log" &
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
conn() { # PORT: one bench run, prints its JSON
  "$BIN" bench --quiet --json --duration 1 -h 127.0.0.1 -p "$1" --src-ips 127.0.0.10-127.0.0.17 \
    conn -n "$N" --rate "$RATE"
}
row() { # LABEL JSON
  python3 - "$1" "$2" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
l = r["connack_latency"]
print(f"| {label} | {r['connected']} | {sum(r['failures'].values())} | {r['connect_per_s']:.0f} | {l['p50_ms']} | {l['p99_ms']} |")
PY
}

echo "| broker | connected | failed | conn/s | CONNACK p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  read -r spid sport < <(start single --bind 127.0.0.1)
  single=$(conn "$sport")
  kill "$spid"; wait "$spid" 2>/dev/null || true
  row "single node (round $round)" "$single"

  rm -rf "$DIR"/d*
  read -r p1 port1 < <(start n1 --bind 127.0.0.1 --data-dir "$DIR/d1" --cluster-node-id 1 --cluster-bind 127.0.0.1:0)
  seed=$(grep -m1 "cluster listening" "$DIR/n1.log" | grep -o 'addr=[0-9.:]*' | cut -d= -f2)
  read -r p2 _ < <(start n2 --bind 127.0.0.2 --data-dir "$DIR/d2" --cluster-node-id 2 --cluster-bind 127.0.0.2:0 --cluster-seed "$seed")
  read -r p3 _ < <(start n3 --bind 127.0.0.3 --data-dir "$DIR/d3" --cluster-node-id 3 --cluster-bind 127.0.0.3:0 --cluster-seed "$seed")
  for _ in $(seq 600); do
    grep -q "node is a voter of the ownership group node=2" "$DIR/n1.log" &&
      grep -q "node is a voter of the ownership group node=3" "$DIR/n1.log" && break
    sleep 0.1
  done
  cluster=$(conn "$port1")
  kill "$p1" "$p2" "$p3"; wait "$p1" "$p2" "$p3" 2>/dev/null || true
  row "node 1 of 3, Raft claim per CONNECT (round $round)" "$cluster"
  python3 -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(f'|   ratio cluster/single | | | {b[\"connect_per_s\"]/a[\"connect_per_s\"]:.2f} | | |')" "$single" "$cluster"
done
