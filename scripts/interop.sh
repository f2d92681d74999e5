#!/usr/bin/env bash
# Interoperability checks: `vigil serve` against clients we did not write —
# Mosquitto's mosquitto_pub/mosquitto_sub (Debian) and Python's paho-mqtt —
# over plain TCP, TLS, WebSocket and WSS. Makes a test CA and a server
# certificate with openssl, starts the broker with four listeners on loopback
# ports (PORT: mqtt, PORT+1: mqtt+tls, PORT+2: ws, PORT+3: ws+tls), runs each
# check with a time limit, prints one line per check and a closing
# "N passed, N failed" line.
# A second broker on PORT+4 has a password file (written by `vigil passwd`)
# and an ACL that denies test/nosubscribe, for the authentication checks.
#
# Needs:
#   - mosquitto_pub and mosquitto_sub:  apt-get install mosquitto-clients
#   - openssl (the command), for the test certificates
#   - Python 3 with paho-mqtt 2.x from PyPI:  python3 -m pip install 'paho-mqtt>=2,<3'
#     (Debian's and Ubuntu's python3-paho-mqtt package is 1.6, whose client
#     API differs; the checks are written for 2.x and refuse to run on 1.x.)
# Exits 2, naming what is missing, before building anything if either is absent.
set -uo pipefail
cd "$(dirname "$0")/.."

missing=0
for tool in mosquitto_pub mosquitto_sub; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "interop.sh needs $tool: apt-get install mosquitto-clients" >&2
    missing=1
  fi
done
if ! command -v openssl >/dev/null 2>&1; then
  echo "interop.sh needs openssl: apt-get install openssl" >&2
  missing=1
fi
paho=$(python3 -c 'import paho.mqtt; print(paho.mqtt.__version__)' 2>/dev/null)
case "$paho" in
  2.*) ;;
  "") echo "interop.sh needs paho-mqtt 2.x: python3 -m pip install 'paho-mqtt>=2,<3'" >&2
      missing=1 ;;
  *) echo "interop.sh needs paho-mqtt 2.x, found $paho (Debian's python3-paho-mqtt is 1.6):" \
          "python3 -m pip install 'paho-mqtt>=2,<3'" >&2
     missing=1 ;;
esac
[ "$missing" -eq 0 ] || exit 2

PORT=${VIGIL_INTEROP_PORT:-18830}
BIN=${VIGIL_BIN:-${CARGO_TARGET_DIR:-target}/debug/vigil}
LOG=$(mktemp -t vigil-interop.XXXXXX.log)
passed=0
failed=0

TLS_PORT=$((PORT + 1)) WS_PORT=$((PORT + 2)) WSS_PORT=$((PORT + 3))
CERTS=$(mktemp -d -t vigil-interop-certs.XXXXXX)
# A test CA and a server certificate for localhost / 127.0.0.1 (as the README shows).
(
  cd "$CERTS" &&
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=vigil interop CA" \
    -keyout ca.key -out ca.pem &&
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr &&
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext &&
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.ext -out server.crt
) >/dev/null 2>&1 || { echo "interop.sh: openssl could not make the test certificates" >&2; exit 2; }
cat >"$CERTS/vigil.toml" <<EOF
[[listeners]]
bind = "127.0.0.1"
port = $PORT

[[listeners]]
bind = "127.0.0.1"
port = $TLS_PORT
tls = { cert = "$CERTS/server.crt", key = "$CERTS/server.key" }

[[listeners]]
bind = "127.0.0.1"
port = $WS_PORT
protocol = "ws"

[[listeners]]
bind = "127.0.0.1"
port = $WSS_PORT
protocol = "ws"
tls = { cert = "$CERTS/server.crt", key = "$CERTS/server.key" }
EOF

cargo build -q -p vigil
"$BIN" serve --config "$CERTS/vigil.toml" --store memory >"$LOG" 2>&1 &
BROKER=$!

AUTH_PORT=$((PORT + 4))
AUTH_DIR=$(mktemp -d -t vigil-interop-auth.XXXXXX)
AUTH_LOG="$AUTH_DIR/broker.log"
"$BIN" passwd -c -b "$AUTH_DIR/passwd" alice 'alice pw'
"$BIN" passwd -H sha512-pbkdf2 -b "$AUTH_DIR/passwd" bob 'bob pw'
printf 'user alice\ntopic readwrite #\ntopic deny test/nosubscribe\n\nuser bob\ntopic read interop/#\n' >"$AUTH_DIR/acl"
"$BIN" serve --bind 127.0.0.1 -p "$AUTH_PORT" --store memory \
  --password-file "$AUTH_DIR/passwd" --acl-file "$AUTH_DIR/acl" >"$AUTH_LOG" 2>&1 &
AUTH_BROKER=$!
trap 'kill $BROKER $AUTH_BROKER 2>/dev/null; wait $BROKER $AUTH_BROKER 2>/dev/null; rm -rf "$CERTS" "$AUTH_DIR"' EXIT

for port in "$PORT" "$TLS_PORT" "$WS_PORT" "$WSS_PORT" "$AUTH_PORT"; do
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
  done
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

# One QoS 1 message through mosquitto_sub/mosquitto_pub over TLS (--cafile).
tls_pubsub() {
  local version=$1 topic="interop/tls/$1/$RANDOM"
  local out; out=$(mktemp)
  mosquitto_sub -h localhost -p "$TLS_PORT" --cafile "$CERTS/ca.pem" -V "$version" -q 1 \
    -t "$topic" -C 1 -W 10 -v >"$out" &
  local sub=$!
  sleep 0.5
  mosquitto_pub -h localhost -p "$TLS_PORT" --cafile "$CERTS/ca.pem" -V "$version" -q 1 \
    -t "$topic" -m hello-tls
  wait $sub || { echo "mosquitto_sub failed"; cat "$out"; return 1; }
  grep -qx "$topic hello-tls" "$out" || { echo "got: $(cat "$out")"; return 1; }
}

# Plain MQTT to the TLS port is refused, and the log says why.
plain_to_tls_refused() {
  if mosquitto_pub -h 127.0.0.1 -p "$TLS_PORT" -q 1 -t interop/plain -m x 2>/dev/null; then
    echo "a plain client published through the TLS port"; return 1
  fi
  sleep 0.2
  grep -q "plain MQTT sent to a TLS port" "$LOG" || { echo "no log line"; return 1; }
}


# Authentication: alice publishes, bob (a $7$ line) receives.
auth_pubsub() {
  local version=$1 topic="interop/auth/$1/$RANDOM"
  local out; out=$(mktemp)
  mosquitto_sub -h 127.0.0.1 -p "$AUTH_PORT" -V "$version" -u bob -P 'bob pw' -q 1 -t "$topic" -C 1 -W 10 >"$out" &
  local sub=$!
  sleep 0.5
  mosquitto_pub -h 127.0.0.1 -p "$AUTH_PORT" -V "$version" -u alice -P 'alice pw' -q 1 -t "$topic" -m secret
  wait $sub || { echo "mosquitto_sub failed"; cat "$out"; return 1; }
  [ "$(cat "$out")" = secret ] || { echo "got: $(cat "$out")"; return 1; }
}

# A refused CONNECT: mosquitto_pub must fail, saying why.
auth_refused() {
  local version=$1 want=$2; shift 2
  local out
  if out=$(mosquitto_pub -h 127.0.0.1 -p "$AUTH_PORT" -V "$version" "$@" -t interop/x -m x 2>&1); then
    echo "connected, expected a refusal"; return 1
  fi
  grep -qi "$want" <<<"$out" || { echo "refusal said: $out"; return 1; }
}

# SUBSCRIBE to a filter the ACL gives nothing readable in: refused at once.
auth_subscribe_denied() {
  local out
  out=$(mosquitto_sub -h 127.0.0.1 -p "$AUTH_PORT" -V "$1" -u alice -P 'alice pw' -t test/nosubscribe -C 1 -W 5 2>&1)
  grep -q "All subscription requests were denied" <<<"$out" || { echo "got: $out"; return 1; }
}

export PORT TLS_PORT CERTS LOG AUTH_PORT
export -f pubsub retained tls_pubsub plain_to_tls_refused auth_pubsub auth_refused auth_subscribe_denied

for v in mqttv31 mqttv311 mqttv5; do
  for q in 0 1 2; do
    check "mosquitto_pub/sub $v QoS $q" pubsub "$v" "$q"
  done
done
check "retained set and delete (mqttv311)" retained mqttv311
check "retained set and delete (mqttv5)" retained mqttv5
check "paho-mqtt interop suite" python3 scripts/interop_paho.py 127.0.0.1 "$PORT"
for v in mqttv311 mqttv5; do
  check "mosquitto_pub/sub --cafile over TLS $v QoS 1" tls_pubsub "$v"
done
check "plain MQTT to the TLS port is refused with a log line" plain_to_tls_refused
check "paho-mqtt over TLS, WebSocket and WSS (with keep-alive probes)" \
  python3 scripts/interop_secure.py localhost "$TLS_PORT" "$WS_PORT" "$WSS_PORT" "$CERTS/ca.pem"
for v in mqttv311 mqttv5; do
  check "auth: password login, pub/sub ($v)" auth_pubsub "$v"
  check "auth: subscribe denied by the ACL ($v)" auth_subscribe_denied "$v"
done
check "auth: wrong password refused (mqttv311)" auth_refused mqttv311 "bad user name or password" -u alice -P wrong
check "auth: wrong password refused (mqttv5)" auth_refused mqttv5 "bad user name or password" -u alice -P wrong
check "auth: unknown user refused (mqttv5)" auth_refused mqttv5 "bad user name or password" -u mallory -P 'alice pw'
check "auth: no credentials refused (mqttv311)" auth_refused mqttv311 "not authori"
check "auth: no credentials refused (mqttv5)" auth_refused mqttv5 "not authori"
check "auth: paho test_subscribe_failure and refusal codes" python3 scripts/interop_auth.py 127.0.0.1 "$AUTH_PORT" alice 'alice pw'

if ! kill -0 $BROKER 2>/dev/null || ! kill -0 $AUTH_BROKER 2>/dev/null; then
  echo "FAIL broker exited during the checks"
  failed=$((failed + 1))
fi
if [ "$failed" -gt 0 ]; then
  echo "--- broker log (last 40 lines) ---"
  tail -n 40 "$LOG"
  echo "--- auth broker log (last 40 lines) ---"
  tail -n 40 "$AUTH_LOG"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
