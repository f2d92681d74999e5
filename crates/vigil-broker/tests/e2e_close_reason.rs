//! A close that keeps its reason: when vigil ends a connection with a
//! DISCONNECT while the client's bytes are still arriving, the client reads
//! the DISCONNECT instead of a reset (the broker half-closes and drains for a
//! short bounded time before closing). Against real sockets, with a client
//! that keeps writing as a real one would (acks, pings) while it reads.
//! And garbage is closed at its first byte, not at the connect timeout.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_proto::{Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Bytes of QoS 0 PUBLISHes, `n` of `size` payload bytes each.
fn filler(n: usize, size: usize) -> BytesMut {
    let mut out = BytesMut::new();
    for _ in 0..n {
        Packet::Publish(Publish {
            topic: "filler".into(),
            payload: Bytes::from(vec![b'f'; size]),
            ..Publish::default()
        })
        .encode(V5, &mut out)
        .unwrap();
    }
    out
}

async fn connect_v5(addr: std::net::SocketAddr, id: &str, keep_alive: u16) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive,
        client_id: id.into(),
        ..Connect::default()
    }))
    .encode(V5, &mut out)
    .unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    match read_packet(&mut s, &mut buf).await {
        Ok(Some(Packet::ConnAck(a))) => assert_eq!(a.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert!(buf.is_empty());
    s
}

async fn read_packet(s: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Option<Packet>> {
    loop {
        if let Some(p) = Packet::decode(buf, V5, u32::MAX).map_err(std::io::Error::other)? {
            return Ok(Some(p));
        }
        if s.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Waits, without reading, until the broker has written packets of the
/// types `kinds` (in order) to `s`: they stay in the socket, unread, as a
/// slow client's would. Peeks the socket until they are all there.
async fn until_written(s: &TcpStream, kinds: &[u8]) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.peek(&mut buf).await.expect("peek");
            seen = packet_types(&buf[..n]);
            if seen.starts_with(kinds) {
                return;
            }
            if n == 0 {
                panic!("EOF before the broker wrote {kinds:?} (it wrote {seen:?})");
            }
            // Only part of what we wait for is there: look again shortly.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "the broker did not write {kinds:?} within 5 s (it wrote {seen:?})"
    );
}

/// The types of the whole packets at the start of `bytes`.
fn packet_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    loop {
        let Some(&first) = bytes.first() else {
            return types;
        };
        let (mut len, mut shift, mut at) = (0usize, 0, 1);
        loop {
            let Some(&b) = bytes.get(at) else {
                return types;
            };
            len |= usize::from(b & 0x7F) << shift;
            at += 1;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let Some(rest) = bytes.get(at + len..) else {
            return types;
        };
        types.push(first >> 4);
        bytes = rest;
    }
}

const CONNACK: u8 = 2;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const DISCONNECT: u8 = 14;

/// Reads until the DISCONNECT, answering every other packet with a PINGREQ
/// (as a client acks what it reads: Paho's test client writes PUBREL there
/// and got EPIPE). Any socket error, or EOF before the DISCONNECT, fails.
async fn expect_disconnect(s: &mut TcpStream, code: ReasonCode) {
    let mut buf = BytesMut::new();
    let deadline = Duration::from_secs(5);
    loop {
        let got = tokio::time::timeout(deadline, read_packet(s, &mut buf))
            .await
            .expect("no DISCONNECT within 5 s");
        match got {
            Ok(Some(Packet::Disconnect(d))) => {
                assert_eq!(d.reason, code, "DISCONNECT with the wrong reason");
                // And the broker then closes: EOF, not a reset.
                let end = tokio::time::timeout(deadline, read_packet(s, &mut buf)).await;
                assert!(
                    matches!(end, Ok(Ok(None))),
                    "expected EOF after the DISCONNECT, got {end:?}"
                );
                return;
            }
            Ok(Some(_)) => {
                if let Err(e) = s.write_all(&[0xC0, 0x00]).await {
                    panic!("the broker reset the connection before its reason was read: {e}");
                }
            }
            Ok(None) => panic!("EOF before any DISCONNECT"),
            Err(e) => panic!("the broker reset the connection before its reason was read: {e}"),
        }
    }
}

/// QoS `qos` PUBLISHes with packet ids `ids`.
fn publishes(ids: std::ops::RangeInclusive<u16>, qos: QoS) -> BytesMut {
    let mut out = BytesMut::new();
    for id in ids {
        Packet::Publish(Publish {
            qos,
            topic: "t".into(),
            packet_id: id,
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        })
        .encode(V5, &mut out)
        .unwrap();
    }
    out
}

#[tokio::test]
async fn receive_maximum_exceeded_in_one_burst_is_read_as_0x93() {
    // Paho's test_flow_control2: QoS 2 messages up to the limit, unread
    // PUBRECs waiting for the client, then one more; the client then reads
    // a PUBREC and answers it (it got EPIPE there).
    let b = TestBroker::with(|c| c.limits.receive_maximum = 2).await;
    let mut s = connect_v5(b.addr, "flood", 60).await;
    s.write_all(&publishes(1..=2, QoS::ExactlyOnce))
        .await
        .unwrap();
    until_written(&s, &[PUBREC, PUBREC]).await;
    let mut burst = publishes(3..=3, QoS::ExactlyOnce);
    // More of the client's bytes behind the one past the limit, more than
    // the broker reads at once: they are in its socket when it decides.
    burst.extend_from_slice(&filler(40, 1000));
    s.write_all(&burst).await.unwrap();
    // The client reads only once the broker has decided (as Paho's does).
    until_written(&s, &[PUBREC, PUBREC, DISCONNECT]).await;
    expect_disconnect(&mut s, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED).await;
}

#[tokio::test]
async fn a_packet_too_large_is_read_as_0x95_while_its_body_is_in_flight() {
    let b = TestBroker::with(|c| c.limits.max_packet_size = 1024).await;
    let mut s = connect_v5(b.addr, "big", 60).await;
    s.write_all(&publishes(1..=1, QoS::AtLeastOnce))
        .await
        .unwrap();
    until_written(&s, &[PUBACK]).await;
    s.write_all(&filler(1, 40_000)).await.unwrap();
    // Read only once the broker has decided.
    until_written(&s, &[PUBACK, DISCONNECT]).await;
    expect_disconnect(&mut s, ReasonCode::PACKET_TOO_LARGE).await;
}

/// Waits until the broker has written (its DISCONNECT), then writes `junk`
/// as a client still sending would, then reads.
async fn write_once_readable_then_expect(s: &mut TcpStream, code: ReasonCode) {
    tokio::time::timeout(Duration::from_secs(5), s.readable())
        .await
        .expect("the broker wrote nothing within 5 s")
        .unwrap();
    // Two writes apart: a socket closed with the first one unread answers
    // it with a reset, and the second write fails.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(e) = s.write_all(&filler(20, 1000)).await {
            panic!("the broker reset the connection before its reason was read: {e}");
        }
    }
    expect_disconnect(s, code).await;
}

#[tokio::test]
async fn keep_alive_expiry_is_read_as_0x8d_by_a_client_still_writing() {
    // 0: never parked; 100 ms: parked, then woken by the lot for the deadline.
    for park in [0, 100] {
        let b = TestBroker::with(|c| c.listener.park_idle_after_ms = park).await;
        let mut s = connect_v5(b.addr, "silent", 1).await;
        let start = Instant::now();
        write_once_readable_then_expect(&mut s, ReasonCode::KEEP_ALIVE_TIMEOUT).await;
        assert!(start.elapsed() >= Duration::from_millis(1400));
        if park > 0 {
            assert!(vigil_broker::Counters::get(&b.broker.counters().disconnect_keep_alive) == 1);
        }
    }
}

#[tokio::test]
async fn takeover_is_read_as_0x8e_by_a_client_still_writing() {
    for park in [0, 100] {
        let b = TestBroker::with(|c| c.listener.park_idle_after_ms = park).await;
        let mut old = connect_v5(b.addr, "same", 60).await;
        if park > 0 {
            // The old connection is parked before the takeover reaches it.
            let parked = &b.broker.counters().connections_parked;
            tokio::time::timeout(Duration::from_secs(5), async {
                while vigil_broker::Counters::get(parked) == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the idle connection was not parked");
        }
        let _new = connect_v5(b.addr, "same", 60).await;
        write_once_readable_then_expect(&mut old, ReasonCode::SESSION_TAKEN_OVER).await;
    }
}

#[tokio::test]
async fn the_drain_after_a_close_is_bounded_in_time() {
    // A client that never stops writing is closed about 1 s after its
    // DISCONNECT, however long it would go on.
    let b = TestBroker::with(|c| c.limits.receive_maximum = 1).await;
    let mut s = connect_v5(b.addr, "endless", 60).await;
    let mut burst = BytesMut::new();
    for id in 1..=2u16 {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            packet_id: id,
            properties: Properties::default().into(),
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        })
        .encode(V5, &mut burst)
        .unwrap();
    }
    s.write_all(&burst).await.unwrap();
    let start = Instant::now();
    let chunk = filler(1, 200);
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        // A trickle, well under the 64 KiB drain budget: only the time bound ends it.
        while wr.write_all(&chunk).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        start.elapsed()
    });
    let mut buf = vec![0u8; 4096];
    // Read to the end: the DISCONNECT, then EOF (the write side was shut).
    while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
    let write_failed_after = writer.await.unwrap();
    assert!(
        // About 1 s; 6 s leaves a loaded machine slack and still fails a
        // drain that lasts as long as the client writes (10 s here).
        write_failed_after < Duration::from_secs(6),
        "the broker kept a closing connection for {write_failed_after:?}"
    );
}

#[tokio::test]
async fn a_refusing_connack_is_read_by_a_client_still_writing() {
    // A 3.1.1 client cannot be told another keep alive: refused (code 2).
    let v311 = ProtocolVersion::V3_1_1;
    let b = TestBroker::with(|c| {
        c.keepalive.allow_zero_keepalive = false;
        c.keepalive.v3_out_of_range = vigil_broker::config::OutOfRangePolicy::Refuse;
    })
    .await;
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        protocol: v311,
        clean_start: true,
        keep_alive: 0,
        client_id: "zero".into(),
        ..Connect::default()
    }))
    .encode(v311, &mut out)
    .unwrap();
    // Pipelined behind the CONNECT, more than the broker reads at once.
    out.extend_from_slice(&filler(40, 1000));
    s.write_all(&out).await.unwrap();
    // Still writing once the broker has refused (its CONNACK is in our socket).
    until_written(&s, &[CONNACK]).await;
    for _ in 0..2 {
        if let Err(e) = s.write_all(&filler(5, 1000)).await {
            panic!("the broker reset the connection before its CONNACK was read: {e}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf).await.expect("CONNACK, not a reset");
    // CONNACK, remaining length 2, no session, return code 2.
    assert_eq!(&buf[..n], &[0x20, 0x02, 0x00, 0x02]);
    let end = s.read(&mut buf).await;
    assert!(matches!(end, Ok(0)), "expected EOF, got {end:?}");
}

/// Sends `bytes` on a fresh connection and returns how long until EOF.
async fn closed_after(addr: std::net::SocketAddr, bytes: &[u8]) -> Duration {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("still open after 5 s");
    // Nothing was sent: EOF, or a reset (nothing to explain).
    assert!(matches!(read, Ok(0) | Err(_)), "got {read:?}");
    start.elapsed()
}

#[tokio::test]
async fn garbage_is_closed_at_its_first_byte_not_at_the_connect_timeout() {
    // connect_timeout stays at its 10 s default.
    let b = TestBroker::start().await;
    // Closed at once: 3 s of slack for a loaded machine is still far from
    // the 10 s a wait for the timeout would take.
    const AT_ONCE: Duration = Duration::from_secs(3);
    let http = closed_after(b.addr, b"GET / HTTP/1.1\r\n").await;
    assert!(http < AT_ONCE, "HTTP request held {http:?}");
    // A reserved type with a plausible remaining length, its body never sent.
    let reserved = closed_after(b.addr, &[0x00, 0x64]).await;
    assert!(reserved < AT_ONCE, "type 0 held {reserved:?}");
    // A well-formed packet that is not CONNECT, announcing more to come.
    let publish = closed_after(b.addr, &[0x30, 0x7F, 0x00]).await;
    assert!(publish < AT_ONCE, "PUBLISH first held {publish:?}");
    // A connected client's packet with invalid flags (PUBACK 0001) and a
    // plausible length, its body never sent: closed at once, with 0x81.
    let mut s = connect_v5(b.addr, "flags", 60).await;
    s.write_all(&[0x41, 0x10]).await.unwrap();
    expect_disconnect(&mut s, ReasonCode::MALFORMED_PACKET).await;
}
