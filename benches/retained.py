#!/usr/bin/env python3
"""Retained messages at scale: stores N retained QoS 1 messages (ret/<i>/x,
64-byte payloads, 100 in flight), then one ret/# subscriber at QoS 1 (acking
each) receives them while another process pings every 2 ms. Prints the time
to deliver all N, the broker's RSS (sampled from /proc every 20 ms) and the
pinger's PINGRESP p99 and max.

    vigil serve --bind 127.0.0.1 -p 19371 --store memory & \
      python3 benches/retained.py 19371 $! 200000
"""
import socket, struct, sys, threading, time

PORT, PID, N = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def rl(n):
    out = bytearray()
    while True:
        b = n % 128; n //= 128
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)

def s(x): return struct.pack(">H", len(x)) + x

def connect(cid):
    c = socket.create_connection(("127.0.0.1", PORT))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = s(b"MQTT") + bytes([4, 2]) + struct.pack(">H", 60) + s(cid.encode())
    c.sendall(bytes([0x10]) + rl(len(body)) + body)
    return c, Reader(c)

class Reader:
    def __init__(self, c): self.c, self.buf = c, bytearray()
    def packets(self):
        while True:
            data = self.c.recv(1 << 20)
            if not data: return
            self.buf += data
            out, i = [], 0
            while True:
                if len(self.buf) - i < 2: break
                mult, n, j = 1, 0, i + 1
                ok = False
                while j < len(self.buf):
                    b = self.buf[j]; n += (b & 127) * mult; mult *= 128; j += 1
                    if not b & 128: ok = True; break
                if not ok or len(self.buf) - j < n: break
                out.append((self.buf[i], bytes(self.buf[j:j+n])))
                i = j + n
            del self.buf[:i]
            if out: yield out

def rss():
    for l in open(f"/proc/{PID}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1]) // 1024

# Store N retained QoS 1 messages, 100 in flight.
pub, pr = connect("filler")
next(pr.packets())  # CONNACK
sem = threading.Semaphore(100)
done_acks = [0]
def ack_reader():
    for batch in pr.packets():
        for t, _ in batch:
            if t >> 4 == 4:
                done_acks[0] += 1; sem.release()
        if done_acks[0] >= N: return
threading.Thread(target=ack_reader, daemon=True).start()
t0 = time.time()
payload = b"x" * 64
chunk = bytearray()
for i in range(N):
    sem.acquire()
    topic = f"ret/{i}/x".encode()
    body = s(topic) + struct.pack(">H", i % 65000 + 1) + payload
    pub.sendall(bytes([0x33]) + rl(len(body)) + body)
while done_acks[0] < N: time.sleep(0.01)
print(f"stored {N} retained QoS 1 in {time.time()-t0:.1f} s; broker RSS {rss()} MiB")

import multiprocessing as mp
stop = threading.Event()
pstop = mp.Event()
results = mp.Queue()
def pinger(pstop, results):
    # A process of its own: a thread would share the GIL with the subscriber's parsing.
    c, r = connect("pinger"); it = r.packets(); next(it)
    worst, n, lat = 0.0, 0, []
    while not pstop.is_set():
        t = time.perf_counter(); c.sendall(b"\xc0\x00"); next(it)
        d = time.perf_counter() - t; worst = max(worst, d); n += 1; lat.append(d)
        time.sleep(0.002)
    lat.sort()
    results.put((worst, n, lat[int(len(lat) * 0.99)] if lat else 0))
peak = [0]
def sampler():
    while not stop.is_set():
        peak[0] = max(peak[0], rss()); time.sleep(0.02)
pp = mp.Process(target=pinger, args=(pstop, results)); pp.start()
threading.Thread(target=sampler, daemon=True).start()
time.sleep(0.2)
sub, sr = connect("sub"); it = sr.packets(); next(it)
body = struct.pack(">H", 1) + s(b"ret/#") + bytes([1])
t0 = time.time()
sub.sendall(bytes([0x82]) + rl(len(body)) + body)
got = set()
sub.settimeout(5)
def batches():
    try:
        yield from it
    except socket.timeout:
        return
for batch in batches():
    acks = bytearray()
    for t, b in batch:
        if t >> 4 == 3:
            tl = struct.unpack(">H", b[:2])[0]
            got.add(b[2:2+tl])
            if (t >> 1) & 3:
                acks += b"\x40\x02" + b[2+tl:4+tl]
    if acks: sub.sendall(acks)
    if len(got) >= N: break
took = time.time() - t0 - (5 if len(got) < N else 0)
stop.set(); pstop.set(); worst, n, p99 = results.get(); pp.join()
print(f"delivered {len(got)} of {N} retained in {took:.2f} s; broker RSS peak {peak[0]} MiB during the stream; "
      f"{n} pings meanwhile, PINGRESP p99 {p99*1000:.1f} ms max {worst*1000:.1f} ms")
