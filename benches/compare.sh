#!/usr/bin/env bash
# Runs the same `vigil bench` scenarios against vigil, Mosquitto and (when
# installed) rumqttd, each broker alone on its own loopback port and restarted
# for every scenario, REPS times, with the broker's CPU and RSS sampled.
# Writes benches/results/<stamp>.jsonl (raw) and <stamp>.md (median, range,
# and vigil's ratio to each peer), and links the latest table as latest.md.
#
#   benches/compare.sh                 # everything, 3 repetitions
#   REPS=1 DURATION=3 benches/compare.sh fan-in pairs   # a subset, quicker
#   BROKERS="vigil mosquitto" benches/compare.sh           # some brokers only
#   SCALE=1 benches/compare.sh         # everything, and at 19,000 / 10,000 clients
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-5}
TARGET=${CARGO_TARGET_DIR:-target}
BIN="$TARGET/release/vigil"
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="benches/results/$STAMP"
mkdir -p benches/results
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p vigil
command -v mosquitto >/dev/null || { echo "mosquitto not installed: apt-get install mosquitto" >&2; exit 1; }

# QoS 0 has no acknowledgement to pace a closed loop: as-fast-as-possible
# publishers on this 2-core machine starve the bench's own subscribers, so QoS 0
# runs are open loop at a fixed offered rate (per publisher), and QoS 1 runs
# closed loop with 64 messages in flight per publisher.
declare -A SCENARIOS=(
  [fan-in-q0]="fan-in -n 4 -q 0 -s 64 --rate 25000"
  [fan-in-q1]="fan-in -n 4 -q 1 -s 64"
  # Latency compares at a rate every broker carries (Mosquitto's closed-loop
  # QoS 1 fan-in is ~10-15k msg/s here, its fan-out ~50-70k deliveries/s).
  [fan-in-q1-paced]="fan-in -n 4 -q 1 -s 64 --rate 2500"
  [fan-out-q0]="fan-out -n 100 -q 0 -s 64 --rate 2000"
  [fan-out-q1]="fan-out -n 100 -q 1 -s 64"
  # The same delivered rate for every broker that keeps it: broker CPU per
  # message compares them there.
  [fan-out-q1-paced]="fan-out -n 100 -q 1 -s 64 --rate 2000"
  # 200k deliveries/s is beyond Mosquitto (~50-70k/s closed loop here):
  # latency compares at 50k/s, which all three carry.
  [fan-out-q1-50k]="fan-out -n 100 -q 1 -s 64 --rate 500"
  [pairs-q0]="pairs -n 100 -q 0 -s 64 --rate 1000"
  [pairs-q1]="pairs -n 100 -q 1 -s 64"
  [pairs-paced]="pairs -n 100 -q 1 -s 64 --rate 100"
  # conn clients announce keep alive 300 s (they hold for seconds and never
  # ping): rumqttd refuses keep alive 0.
  [conn]="conn -n 10000 --rate 5000 -k 300"
  [ping]="ping -n 5000 -k 5 --publish-rate 2000"
  [expiry]="expiry -n 2000 -k 5"
  [slow-sub]="slow-sub --healthy 200 -k 2"
  # At scale (opt-in by name; each process here may hold 20,000 descriptors,
  # which caps one broker at ~19,000 connections on these machines):
  [conn-19k]="conn -n 19000 --rate 5000 -k 300"
  [ping-19k]="ping -n 19000 -k 5 --publish-rate 2000"
  [expiry-10k]="expiry -n 10000 -k 5"
)
ORDER=(fan-in-q0 fan-in-q1 fan-in-q1-paced fan-out-q0 fan-out-q1 fan-out-q1-paced fan-out-q1-50k pairs-q0 pairs-q1 pairs-paced conn ping expiry slow-sub)
# SCALE=1: the full run also holds the scenarios at scale (~6 minutes more).
[ "${SCALE:-0}" = 1 ] && ORDER+=(conn-19k ping-19k expiry-10k)
FULL_RUN=1
if [ $# -gt 0 ]; then
  FULL_RUN=0
  ORDER=()
  for want in "$@"; do
    for name in "${!SCENARIOS[@]}"; do [[ $name == "$want"* ]] && ORDER+=("$name"); done
  done
fi

if [ -n "${BROKERS:-}" ]; then
  read -r -a BROKERS <<<"$BROKERS"
else
  BROKERS=(vigil mosquitto)
  command -v rumqttd >/dev/null && BROKERS+=(rumqttd)
fi

tmp=$(mktemp -d)
trap 'kill $BROKER_PID 2>/dev/null || true; rm -rf "$tmp"' EXIT
BROKER_PID=

start_broker() {
  local name=$1 port=$2
  case $name in
    vigil)
      "$BIN" serve --bind 127.0.0.1 -p "$port" --store memory --max-connections 200000 >"$tmp/$name.log" 2>&1 &
      ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n' "$port" >"$tmp/mosquitto.conf"
      mosquitto -c "$tmp/mosquitto.conf" >"$tmp/$name.log" 2>&1 &
      ;;
    rumqttd)
      sed "s/__PORT__/$port/" benches/rumqttd.toml >"$tmp/rumqttd.toml"
      rumqttd -c "$tmp/rumqttd.toml" >"$tmp/$name.log" 2>&1 &
      ;;
  esac
  BROKER_PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start" >&2
  return 1
}

port=19100
for scenario in "${ORDER[@]}"; do
  # Repetitions outermost: a noisy minute on this shared host then hits every
  # broker once rather than one broker three times.
  for rep in $(seq 1 "$REPS"); do
    for broker in "${BROKERS[@]}"; do
      port=$((port + 1))
      start_broker "$broker" "$port"
      echo "== $scenario / $broker / run $rep" >&2
      # shellcheck disable=SC2086
      if line=$(timeout 300 "$BIN" bench -p "$port" -V 311 --duration "$DURATION" --json --quiet \
                  --src-ips 127.0.0.2-127.0.0.9 --broker-pid "$BROKER_PID" ${SCENARIOS[$scenario]} 2>"$tmp/err"); then
        printf '{"name":"%s","broker":"%s","rep":%s,"result":%s}\n' "$scenario" "$broker" "$rep" "$line" >>"$OUT.jsonl"
      else
        printf '{"name":"%s","broker":"%s","rep":%s,"error":%s}\n' "$scenario" "$broker" "$rep" \
          "$(python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()[-300:]))' <"$tmp/err")" >>"$OUT.jsonl"
      fi
      kill "$BROKER_PID" 2>/dev/null || true
      wait "$BROKER_PID" 2>/dev/null || true
    done
  done
done

python3 benches/summarize.py "$OUT.jsonl" >"$OUT.md"
# Only a full run replaces the table the README links.
[ "$FULL_RUN" = 1 ] && cp "$OUT.md" benches/results/latest.md
cat "$OUT.md"
