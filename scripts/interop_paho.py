#!/usr/bin/env python3
"""paho-mqtt (a client we did not write) against a running `vigil serve`.

Usage: interop_paho.py HOST PORT. Each check prints ok/FAIL; exit status 1 if any failed.
Needs paho-mqtt 2.x from PyPI (python3 -m pip install 'paho-mqtt>=2,<3').
Raw-socket checks cover what paho cannot be made to do on purpose: go silent
with a will set (keep-alive expiry), or send a malformed packet.
"""
import socket
import struct
import sys
import threading
import time
import uuid

import paho.mqtt
import paho.mqtt.client as mqtt

if not paho.mqtt.__version__.startswith("2."):
    # 1.x (Debian's python3-paho-mqtt is 1.6) has another callback API.
    sys.exit(f"interop_paho.py needs paho-mqtt 2.x, found {paho.mqtt.__version__}: "
             "python3 -m pip install 'paho-mqtt>=2,<3'")
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST, PORT = sys.argv[1], int(sys.argv[2])
V5, V311 = mqtt.MQTTv5, mqtt.MQTTv311
results = []


def check(fn):
    name = fn.__name__.replace("_", " ")
    try:
        fn()
        print(f"  ok   {name}")
        results.append(True)
    except Exception as e:  # report every failure, keep going
        print(f"  FAIL {name}: {e!r}")
        results.append(False)


def uid(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Collector:
    """A paho client that records what it receives."""

    def __init__(self, protocol, client_id=None, clean=True, expiry=None):
        self.messages = []
        self.disconnects = []
        self.connack = None
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or uid("paho"), protocol=protocol,
                             **({} if protocol == V5 else {"clean_session": clean}))
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.c.on_connect = self._on_connect
        self.protocol, self.clean, self.expiry = protocol, clean, expiry

    def _on_connect(self, c, u, flags, rc, props):
        with self.cond:
            self.connack = (flags, rc)
            self.cond.notify_all()

    def _on_message(self, c, u, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_disconnect(self, c, u, flags, rc, props):
        with self.cond:
            self.disconnects.append(rc)
            self.cond.notify_all()

    def connect(self, keepalive=30):
        kw = {}
        if self.protocol == V5:
            kw["clean_start"] = self.clean
            if self.expiry is not None:
                p = Properties(PacketTypes.CONNECT)
                p.SessionExpiryInterval = self.expiry
                kw["properties"] = p
        self.c.connect(HOST, PORT, keepalive=keepalive, **kw)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        return self

    def wait(self, pred, what, timeout=5.0):
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise AssertionError(f"timed out waiting for {what}")

    def subscribe(self, topic, qos):
        r, mid = self.c.subscribe(topic, qos)
        assert r == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.3)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def roundtrip(protocol, qos):
    topic = uid("interop/paho")
    sub = Collector(protocol).connect()
    sub.subscribe(topic, qos)
    pub = Collector(protocol).connect()
    info = pub.c.publish(topic, f"q{qos}".encode(), qos=qos)
    info.wait_for_publish(5)
    sub.wait(lambda: len(sub.messages) == 1, "message")
    m = sub.messages[0]
    assert m.payload == f"q{qos}".encode() and m.qos == qos, (m.payload, m.qos)
    pub.stop()
    sub.stop()


def qos_0_1_2_mqtt311():
    for q in (0, 1, 2):
        roundtrip(V311, q)


def qos_0_1_2_mqtt5():
    for q in (0, 1, 2):
        roundtrip(V5, q)


def encode_varint(n):
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def raw_connect(client_id, keepalive, level=4, will=None):
    """Open a socket and send CONNECT; returns (socket, CONNACK bytes)."""
    flags = 0x02
    payload = utf8(client_id)
    props = b"\x00" if level == 5 else b""
    if will:
        topic, msg = will
        flags |= 0x04
        payload += (b"\x00" if level == 5 else b"") + utf8(topic) + struct.pack(">H", len(msg)) + msg
    var = utf8("MQTT") + bytes([level, flags]) + struct.pack(">H", keepalive) + props
    body = var + payload
    s = socket.create_connection((HOST, PORT), timeout=10)
    s.sendall(b"\x10" + encode_varint(len(body)) + body)
    connack = s.recv(64)
    return s, connack


def will_published_at_one_and_a_half_keep_alive():
    will_topic = uid("interop/will")
    sub = Collector(V311).connect()
    sub.subscribe(will_topic, 1)
    s, connack = raw_connect(uid("silent"), keepalive=1, will=(will_topic, b"offline"))
    start = time.monotonic()
    assert connack[:1] == b"\x20" and connack[-1:] == b"\x00", connack
    sub.wait(lambda: len(sub.messages) == 1, "will", timeout=5)
    elapsed = time.monotonic() - start
    assert sub.messages[0].payload == b"offline"
    # K = 1 s: the broker must close at 1.5 s, not at 1 s and not at 2 s.
    assert 1.4 <= elapsed <= 1.9, f"will after {elapsed:.3f} s, expected 1.5 s"
    closed = s.recv(16)
    assert closed in (b"", b"\xe0\x00"), closed
    s.close()
    sub.stop()


def pingreq_gets_pingresp():
    s, connack = raw_connect(uid("pinger"), keepalive=10)
    s.sendall(b"\xc0\x00")
    assert s.recv(2) == b"\xd0\x00"
    s.sendall(b"\xe0\x00")
    s.close()


def takeover_tells_old_client_0x8e():
    cid = uid("twin")
    a = Collector(V5, client_id=cid).connect()
    b = Collector(V5, client_id=cid).connect()
    a.wait(lambda: len(a.disconnects) >= 1, "DISCONNECT on the old connection")
    rc = a.disconnects[0]
    assert rc.value == 0x8E, f"old client got reason {rc}"
    a.c.loop_stop()
    b.stop()


def shared_subscription_splits_messages():
    topic = uid("interop/shared")
    members = [Collector(V5).connect() for _ in range(2)]
    for m in members:
        m.subscribe(f"$share/g1/{topic}", 1)
    pub = Collector(V5).connect()
    for i in range(10):
        pub.c.publish(topic, str(i), qos=1).wait_for_publish(5)
    total = lambda: sum(len(m.messages) for m in members)
    members[0].wait(lambda: total() == 10, "10 shared deliveries")
    time.sleep(0.3)
    counts = [len(m.messages) for m in members]
    assert total() == 10 and min(counts) >= 3, counts
    for m in members + [pub]:
        m.stop()


def persistent_session_resumes_with_queued_message():
    cid, topic = uid("sleeper"), uid("interop/resume")
    s = Collector(V5, client_id=cid, clean=False, expiry=300).connect()
    s.subscribe(topic, 1)
    s.stop()
    time.sleep(0.3)
    pub = Collector(V5).connect()
    pub.c.publish(topic, b"while-away", qos=1).wait_for_publish(5)
    pub.stop()
    s2 = Collector(V5, client_id=cid, clean=False, expiry=300).connect()
    assert s2.connack[0].session_present, "expected Session Present"
    s2.wait(lambda: len(s2.messages) == 1, "queued message")
    assert s2.messages[0].payload == b"while-away"
    s2.stop()


def malformed_packet_closes_only_that_connection():
    s, _ = raw_connect(uid("bad"), keepalive=10, level=4)
    s.sendall(b"\x36\x00")  # PUBLISH with QoS 3: malformed
    assert s.recv(16) in (b"",), "expected the broker to close"
    s.close()
    roundtrip(V311, 1)


for fn in (qos_0_1_2_mqtt311, qos_0_1_2_mqtt5, pingreq_gets_pingresp, will_published_at_one_and_a_half_keep_alive,
           takeover_tells_old_client_0x8e, shared_subscription_splits_messages,
           persistent_session_resumes_with_queued_message, malformed_packet_closes_only_that_connection):
    check(fn)
print(f"paho: {sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
