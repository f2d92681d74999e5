#!/usr/bin/env bash
# Interoperability checks: `vigil serve` against clients we did not write —
# Mosquitto's mosquitto_pub/mosquitto_sub (Debian) and Python's paho-mqtt.
# Starts the broker on a loopback port, runs each check with a time limit,
# prints one line per check and a closing "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."

PORT=${VIGIL_INTEROP_PORT:-18830}
BIN=${VIGIL_BIN:-${CARGO_TARGET_DIR:-target}/debug/vigil}
LOG=$(mktemp -t vigil-interop.XXXXXX.log)
passed=0
failed=0

cargo build -q -p vigil
"$BIN" serve --bind 127.0.0.1 -p "$PORT" --store memory >"$LOG" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null' EXIT

for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.1
done

check() {
  local name=$1; shift
  local out
  # Shell functions run under `timeout` through a child bash (they are exported below).
  if out=$(timeout 30 bash -c '"$@"' _ "$@" 2>&1); then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    printf '%s\n' "$out" | sed 's/^/     /'
    failed=$((failed + 1))
  fi
}

# One message through mosquitto_sub/mosquitto_pub at a given protocol and QoS.
pubsub() {
  local version=$1 qos=$2 topic="interop/$1/q$2/$RANDOM"
  local out; out=$(mktemp)
  mosquitto_sub -h 127.0.0.1 -p "$PORT" -V "$version" -q "$qos" -t "$topic" -C 1 -W 10 -v >"$out" &
  local sub=$!
  sleep 0.5
  mosquitto_pub -h 127.0.0.1 -p "$PORT" -V "$version" -q "$qos" -t "$topic" -m "hello-$qos"
  wait $sub || { echo "mosquitto_sub failed"; cat "$out"; return 1; }
  grep -qx "$topic hello-$qos" "$out" || { echo "got: $(cat "$out")"; return 1; }
}

retained() {
  local version=$1 topic="interop/retained/$1/$RANDOM"
  mosquitto_pub -h 127.0.0.1 -p "$PORT" -V "$version" -q 1 -r -t "$topic" -m kept
  local got; got=$(mosquitto_sub -h 127.0.0.1 -p "$PORT" -V "$version" -t "$topic" -C 1 -W 5)
  [ "$got" = kept ] || { echo "retained: got '$got'"; return 1; }
  # An empty retained payload deletes it: a new subscriber then gets nothing within 1 s.
  mosquitto_pub -h 127.0.0.1 -p "$PORT" -V "$version" -q 1 -r -t "$topic" -n
  got=$(mosquitto_sub -h 127.0.0.1 -p "$PORT" -V "$version" -t "$topic" -C 1 -W 1 2>/dev/null || true)
  [ -z "$got" ] || { echo "deleted retained still delivered: '$got'"; return 1; }
}

export PORT
export -f pubsub retained

for v in mqttv31 mqttv311 mqttv5; do
  for q in 0 1 2; do
    check "mosquitto_pub/sub $v QoS $q" pubsub "$v" "$q"
  done
done
check "retained set and delete (mqttv311)" retained mqttv311
check "retained set and delete (mqttv5)" retained mqttv5
check "paho-mqtt interop suite" python3 scripts/interop_paho.py 127.0.0.1 "$PORT"

if ! kill -0 $BROKER 2>/dev/null; then
  echo "FAIL broker exited during the checks"
  failed=$((failed + 1))
fi
if [ "$failed" -gt 0 ]; then
  echo "--- broker log (last 40 lines) ---"
  tail -n 40 "$LOG"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
