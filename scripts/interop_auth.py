#!/usr/bin/env python3
"""Auth interop checks with paho-mqtt 2.x against a vigil started with a
password file and an ACL that denies test/nosubscribe (see interop.sh).

Usage: interop_auth.py HOST PORT USER PASSWORD. Each check prints ok/FAIL;
exit status 1 if any failed.

The subscribe checks are the Paho testing suite's test_subscribe_failure:
subscribing to test/nosubscribe must be refused. Its MQTT 3.1.1 version
expects 0x80; its MQTT 5 version also asserts 0x80 where vigil answers 0x87
"Not authorized", the precise code MQTT 5 has for it, so 0x87 is what is
checked here.
"""
import sys
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

HOST, PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
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


class Client:
    """A paho client that records CONNACK, SUBACK and PUBACK codes."""

    def __init__(self, protocol, user=USER, password=PASSWORD):
        self.cond = threading.Condition()
        self.connack = None
        self.subacks = {}
        self.pubacks = {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"auth-{uuid.uuid4().hex[:8]}",
                             protocol=protocol)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish

    def _on_connect(self, c, u, flags, rc, props):
        with self.cond:
            self.connack = rc
            self.cond.notify_all()

    def _on_subscribe(self, c, u, mid, codes, props):
        with self.cond:
            self.subacks[mid] = codes
            self.cond.notify_all()

    def _on_publish(self, c, u, mid, rc, props):
        with self.cond:
            self.pubacks[mid] = rc
            self.cond.notify_all()

    def wait(self, pred, what, timeout=5.0):
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise AssertionError(f"timed out waiting for {what}")

    def connect(self):
        self.c.connect(HOST, PORT, keepalive=30)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        return self.connack

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def subscribe_failure(protocol, want):
    c = Client(protocol)
    assert c.connect() == 0, f"CONNACK {c.connack}"
    _, mid = c.c.subscribe([("test/nosubscribe", 2), ("test/allowed", 1)])
    c.wait(lambda: mid in c.subacks, "SUBACK")
    codes = [int(r.value) for r in c.subacks[mid]]
    c.stop()
    assert codes == [want, 1], f"SUBACK codes {[hex(x) for x in codes]}"


def test_subscribe_failure_mqtt311():
    subscribe_failure(V311, 0x80)


def test_subscribe_failure_mqtt5():
    subscribe_failure(V5, 0x87)


def publish_denied_gets_puback_0x87_mqtt5():
    c = Client(V5)
    assert c.connect() == 0
    info = c.c.publish("test/nosubscribe", b"x", qos=1)
    c.wait(lambda: info.mid in c.pubacks, "PUBACK")
    rc = c.pubacks[info.mid]
    c.stop()
    assert int(rc.value) == 0x87, f"PUBACK {rc}"


def wrong_password_gets_0x86_mqtt5():
    c = Client(V5, password="wrong")
    c.connect()
    c.stop()
    assert int(c.connack.value) == 0x86, f"CONNACK {c.connack}"


def no_credentials_gets_0x87_mqtt5():
    c = Client(V5, user=None)
    c.connect()
    c.stop()
    assert int(c.connack.value) == 0x87, f"CONNACK {c.connack}"


for fn in (test_subscribe_failure_mqtt311, test_subscribe_failure_mqtt5, publish_denied_gets_puback_0x87_mqtt5,
           wrong_password_gets_0x86_mqtt5, no_credentials_gets_0x87_mqtt5):
    check(fn)
print(f"  paho auth: {sum(results)} of {len(results)} passed")
sys.exit(0 if all(results) else 1)
