#!/usr/bin/env python3
"""RSS of `vigil serve` before a kill -9 and after recovery, with many
offline persistent sessions holding queued copies of the same messages.

    scripts/recovery_rss.py target/release/vigil [SESSIONS] [MESSAGES]

Starts the broker on a fresh data directory, connects SESSIONS persistent
MQTT 3.1.1 sessions (clean session 0) that subscribe to one topic at QoS 1 and
disconnect, publishes MESSAGES QoS 1 messages of 64 bytes to that topic
(each acknowledged), reads VmRSS, kills the broker with SIGKILL, restarts it
on the same directory, reads VmRSS again and checks that two of the sessions
still receive every message. Prints one JSON line.
"""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

TOPIC = b"fan/out"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def serve(binary, data_dir, port):
    p = subprocess.Popen(
        [binary, "serve", "--bind", "127.0.0.1", "-p", str(port), "--data-dir", data_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
        text=True,
    )
    lines = []
    ready = threading.Event()

    def drain():
        for line in p.stderr:
            lines.append(line)
            if "vigil listening" in line:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(300):
        raise RuntimeError("broker did not start: " + "".join(lines))
    port = int(re.search(r":(\d+)\s*$", [l for l in lines if "vigil listening" in l][0]).group(1))
    return p, port, lines


def remaining_length(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + remaining_length(len(body)) + body


def s(b):
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id, clean):
    flags = 0x02 if clean else 0x00
    return packet(0x10, s(b"MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + s(client_id))


def read_packet(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    first = exact(1)[0]
    mult, length = 1, 0
    while True:
        b = exact(1)[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return first, exact(length)


def open_session(port, client_id, subscribe):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(connect_packet(client_id, clean=False))
    first, body = read_packet(sock)
    assert first == 0x20 and body[1] == 0, (first, body)
    if subscribe:
        sock.sendall(packet(0x82, struct.pack(">H", 1) + s(TOPIC) + b"\x01"))
        first, body = read_packet(sock)
        assert first == 0x90 and body[2] == 1, (first, body)
    return sock


def subscribers(port, n):
    batch = 200
    for start in range(0, n, batch):
        socks = [open_session(port, f"off-{i:06}".encode(), True) for i in range(start, min(n, start + batch))]
        for sock in socks:
            sock.sendall(b"\xe0\x00")
            sock.close()


def publish(port, count):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(connect_packet(b"publisher", clean=True))
    read_packet(sock)
    for i in range(1, count + 1):
        payload = (f"{i:04}" + "x" * 60).encode()
        sock.sendall(packet(0x32, s(TOPIC) + struct.pack(">H", i) + payload))
        first, body = read_packet(sock)
        assert first == 0x40 and struct.unpack(">H", body[:2])[0] == i, (first, body)
    sock.sendall(b"\xe0\x00")
    sock.close()


def received(port, client_id, count):
    sock = open_session(port, client_id, False)
    got = []
    sock.settimeout(10)
    while len(got) < count:
        first, body = read_packet(sock)
        if first & 0xF0 != 0x30:
            continue
        tlen = struct.unpack(">H", body[:2])[0]
        pid = body[2 + tlen:4 + tlen]
        got.append(int(body[4 + tlen:8 + tlen]))
        sock.sendall(packet(0x40, pid))
    sock.close()
    return got


def main():
    binary = sys.argv[1]
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    messages = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    with tempfile.TemporaryDirectory() as data_dir:
        broker, port, _ = serve(binary, data_dir, 0)
        subscribers(port, sessions)
        publish(port, messages)
        time.sleep(2)
        before = rss_kb(broker.pid)
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        broker, port, lines = serve(binary, data_dir, port)
        time.sleep(2)
        after = rss_kb(broker.pid)
        opened = [l.strip() for l in lines if "store opened" in l or "recovered from" in l]
        delivered = [received(port, f"off-{i:06}".encode(), messages) for i in (0, sessions - 1)]
        broker.send_signal(signal.SIGKILL)
        broker.wait()
    expected = list(range(1, messages + 1))
    print(json.dumps({
        "sessions": sessions,
        "messages": messages,
        "rss_before_kill_mb": round(before / 1024, 1),
        "rss_after_recovery_mb": round(after / 1024, 1),
        "ratio": round(after / before, 3),
        "all_delivered_after_restart": all(d == expected for d in delivered),
        "log": opened,
    }))


if __name__ == "__main__":
    main()
