#!/usr/bin/env python3
"""paho-mqtt against `vigil serve`'s TLS, WebSocket and WSS listeners.

Usage: interop_secure.py HOST TLS_PORT WS_PORT WSS_PORT CAFILE. Each check
prints ok/FAIL; exit status 1 if any failed. Needs paho-mqtt 2.x from PyPI.
The WebSocket listeners serve the path /mqtt.
"""
import sys
import threading
import time
import uuid

import paho.mqtt
import paho.mqtt.client as mqtt

if not paho.mqtt.__version__.startswith("2."):
    sys.exit(f"interop_secure.py needs paho-mqtt 2.x, found {paho.mqtt.__version__}: "
             "python3 -m pip install 'paho-mqtt>=2,<3'")

HOST = sys.argv[1]
TLS_PORT, WS_PORT, WSS_PORT = (int(p) for p in sys.argv[2:5])
CAFILE = sys.argv[5]
V5, V311, V31 = mqtt.MQTTv5, mqtt.MQTTv311, mqtt.MQTTv31
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


class Client:
    """A paho client on one of the listeners, recording what it receives."""

    def __init__(self, kind, protocol=V5, will=None):
        self.messages, self.connack = [], None
        self.connack_at = None
        self.cond = threading.Condition()
        transport = "websockets" if kind in ("ws", "wss") else "tcp"
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uid(f"paho-{kind}"),
                             protocol=protocol, transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if kind in ("tls", "wss"):
            self.c.tls_set(ca_certs=CAFILE)
        if will:
            self.c.will_set(will[0], will[1], qos=1)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.port = {"tls": TLS_PORT, "ws": WS_PORT, "wss": WSS_PORT}[kind]

    def _on_connect(self, c, u, flags, rc, props):
        with self.cond:
            self.connack, self.connack_at = rc, time.monotonic()
            self.cond.notify_all()

    def _on_message(self, c, u, msg):
        with self.cond:
            self.messages.append((msg, time.monotonic()))
            self.cond.notify_all()

    def connect(self, keepalive=30, silent=False):
        self.c.connect(HOST, self.port, keepalive=keepalive)
        if silent:
            # Run paho's loop by hand only until CONNACK: after that it sends
            # nothing more, not even PINGREQ.
            deadline = time.monotonic() + 0.5
            while self.connack is None and time.monotonic() < deadline:
                self.c.loop(timeout=0.05)
        else:
            self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        assert not self.connack.is_failure, f"CONNACK {self.connack}"
        return self

    def wait(self, pred, what, timeout=5.0):
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise AssertionError(f"timed out waiting for {what}")

    def subscribe(self, topic):
        r, _ = self.c.subscribe(topic, 1)
        assert r == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.3)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def roundtrip(sub_kind, pub_kind, protocol):
    topic = uid("interop/secure")
    sub = Client(sub_kind, protocol).connect()
    sub.subscribe(topic)
    pub = Client(pub_kind, protocol).connect()
    pub.c.publish(topic, b"hello", qos=1).wait_for_publish(5)
    sub.wait(lambda: len(sub.messages) == 1, "message")
    assert sub.messages[0][0].payload == b"hello"
    pub.stop()
    sub.stop()


def tls_qos1_mqtt5():
    roundtrip("tls", "tls", V5)


def tls_qos1_mqtt311():
    roundtrip("tls", "tls", V311)


def websocket_qos1_mqtt5():
    roundtrip("ws", "ws", V5)


def websocket_qos1_mqtt311():
    roundtrip("ws", "ws", V311)


def websocket_mqtt31_subprotocol_mqttv31():
    # paho offers the "mqttv3.1" subprotocol for MQTT 3.1.
    roundtrip("ws", "ws", V31)


def wss_qos1_mqtt5():
    roundtrip("wss", "wss", V5)


def across_transports_tls_to_wss():
    roundtrip("wss", "tls", V5)


def silent_client_closed_at_one_and_a_half_keep_alive(kind):
    will_topic = uid("interop/will")
    watcher = Client("ws").connect()
    watcher.subscribe(will_topic)
    silent = Client(kind, V311, will=(will_topic, b"offline"))
    silent.connect(keepalive=1, silent=True)
    watcher.wait(lambda: len(watcher.messages) == 1, "will", timeout=5)
    elapsed = watcher.messages[0][1] - silent.connack_at
    assert watcher.messages[0][0].payload == b"offline"
    # K = 1 s: the broker must close at 1.5 s, not at 1 s and not at 2 s.
    assert 1.35 <= elapsed <= 1.9, f"will after {elapsed:.3f} s, expected 1.5 s"
    watcher.stop()


def keep_alive_probe_over_tls():
    silent_client_closed_at_one_and_a_half_keep_alive("tls")


def keep_alive_probe_over_websocket():
    silent_client_closed_at_one_and_a_half_keep_alive("ws")


def keep_alive_probe_over_wss():
    silent_client_closed_at_one_and_a_half_keep_alive("wss")


for fn in (tls_qos1_mqtt5, tls_qos1_mqtt311, websocket_qos1_mqtt5, websocket_qos1_mqtt311,
           websocket_mqtt31_subprotocol_mqttv31, wss_qos1_mqtt5, across_transports_tls_to_wss,
           keep_alive_probe_over_tls, keep_alive_probe_over_websocket, keep_alive_probe_over_wss):
    check(fn)
sys.exit(0 if all(results) else 1)
