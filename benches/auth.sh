#!/usr/bin/env bash
# The cost of authentication (issue 22), in one run on this machine:
#  1. `vigil bench conn`, 10,000 connections: without authentication, then
#     with a password file of 10,000 `$7$` users (each connection its own
#     user, so the login cache cannot help): connect rates and their ratio.
#  2. A reconnect storm of 10,000 logins of one argon2id user beside 5,000
#     clients pinging every 5 s: `vigil bench ping`'s PINGRESP p50/p99 with
#     no storm, with the storm and the login cache (default), and with the
#     storm and no cache (`[auth] login_cache = false`).
# Everything on 127.0.0.1; the broker runs with --store memory.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vigil
BIN=${VIGIL_BIN:-target/release/vigil}
PORT=${VIGIL_BENCH_PORT:-19883}
tmp=$(mktemp -d -t vigil-auth-bench.XXXXXX)
broker=
cleanup() { [ -n "$broker" ] && kill "$broker" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# 10,000 `$7$` users as mosquitto_passwd 2.0 writes them (101 iterations,
# 12-byte salt), password "bench pw"; hashlib is fast enough for 10,000.
python3 - "$tmp/users.passwd" <<'PY'
import base64, hashlib, os, sys
with open(sys.argv[1], "w") as f:
    for i in range(10000):
        salt = os.urandom(12)
        h = hashlib.pbkdf2_hmac("sha512", b"bench pw", salt, 101, 64)
        f.write(f"user-{i}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(h).decode()}\n")
PY
"$BIN" passwd -H argon2id -c -b "$tmp/storm.passwd" storm 'storm pw'
printf '[auth]\nlogin_cache = false\n' >"$tmp/nocache.toml"

start_broker() {
  "$BIN" serve --bind 127.0.0.1 -p "$PORT" --store memory --max-connections 200000 "$@" \
    2>"$tmp/broker.log" &
  broker=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return
    sleep 0.1
  done
  echo "broker did not start"; cat "$tmp/broker.log"; exit 1
}
stop_broker() { kill "$broker"; wait "$broker" 2>/dev/null || true; broker=; sleep 1; }
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d' + sys.argv[2]))" "$@"; }

echo "== 1. connect rate, 10,000 connections"
start_broker
"$BIN" bench -p "$PORT" --src-ips 127.0.0.2-127.0.0.9 --json --quiet --duration 1 conn -n 10000 --rate 100000 >"$tmp/open.json"
stop_broker
start_broker --password-file "$tmp/users.passwd"
"$BIN" bench -p "$PORT" --src-ips 127.0.0.2-127.0.0.9 --json --quiet --duration 1 --username 'user-{i}' --password 'bench pw' \
  conn -n 10000 --rate 100000 >"$tmp/auth.json"
stop_broker
open=$(field "$tmp/open.json" "['connect_per_s']")
auth=$(field "$tmp/auth.json" "['connect_per_s']")
echo "no auth:        $(field "$tmp/open.json" "['connected']") connected, $open conn/s"
echo "10,000 \$7\$ users: $(field "$tmp/auth.json" "['connected']") connected, $auth conn/s, failed $(field "$tmp/auth.json" "['failures']")"
python3 -c "print(f'ratio: {$auth / $open:.2f}')"

echo "== 2. argon2id reconnect storm beside 5,000 pinging clients"
storm() { # $1: label; rest: serve flags
  local label=$1; shift
  start_broker --allow-anonymous --password-file "$tmp/storm.passwd" "$@"
  "$BIN" bench -p "$PORT" --src-ips 127.0.0.2-127.0.0.9 --json --quiet --duration 25 ping -n 5000 -k 5 >"$tmp/ping.json" &
  local ping=$!
  if [ "$label" != "no storm" ]; then
    sleep 8
    "$BIN" bench -p "$PORT" --src-ips 127.0.0.2-127.0.0.9 --json --quiet --duration 1 --username storm --password 'storm pw' \
      conn -n 10000 --rate 1000 >"$tmp/storm.json" || true
    echo "  storm: $(field "$tmp/storm.json" "['connected']") logged in, failures $(field "$tmp/storm.json" "['failures']"), CONNACK p99 $(field "$tmp/storm.json" "['connack_latency']['p99_ms']") ms"
  fi
  wait "$ping"
  echo "$label: PINGRESP p50 $(field "$tmp/ping.json" "['pingresp_latency']['p50_ms']") ms, p99 $(field "$tmp/ping.json" "['pingresp_latency']['p99_ms']") ms, max $(field "$tmp/ping.json" "['pingresp_latency'].get('max_ms')") ms, wrongful disconnects $(field "$tmp/ping.json" "['wrongful_disconnects']")"
  stop_broker
}
storm "no storm"
storm "storm, login cache"
storm "storm, no cache" -c "$tmp/nocache.toml"
