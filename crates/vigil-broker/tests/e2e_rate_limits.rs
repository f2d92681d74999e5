//! Rate limits over real sockets: `max_connection_rate` makes connections
//! wait in the accept queue (none refused); `max_publish_rate` and
//! `max_publish_bytes_rate` hold a client back by not reading it (nothing
//! dropped), and keep alive stays exact: a client is never closed for the
//! silence vigil imposed by not reading it, and a client that really goes
//! silent is closed at 1.5 x K (docs/keepalive.md, broker rule 11).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{connected, RawClient, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_broker::Counters;
use vigil_proto::{
    Ack, Connect, Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn encode(packet: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(V5, &mut out).unwrap();
    out.to_vec()
}

fn publish(topic: &str, packet_id: u16, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        topic: topic.into(),
        qos: QoS::AtLeastOnce,
        packet_id,
        payload,
        ..Publish::default()
    })
}

#[tokio::test]
async fn connections_over_the_rate_wait_in_the_accept_queue_and_all_succeed() {
    let b = TestBroker::with(|c| c.listener.max_connection_rate = 20).await;
    let start = Instant::now();
    let clients: Vec<_> = (0..60)
        .map(|i| {
            let addr = b.addr;
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr, V5).await;
                c.send(common::connect(&format!("c{i}"), V5, 0, None)).await;
                match c.recv_within(Duration::from_secs(20)).await {
                    Some(Packet::ConnAck(a)) => (a.reason, c),
                    other => panic!("client {i}: expected CONNACK, got {other:?}"),
                }
            })
        })
        .collect();
    let mut open = Vec::new();
    for c in clients {
        let (code, c) = c.await.unwrap();
        assert_eq!(code, ReasonCode::SUCCESS);
        open.push(c);
    }
    let took = start.elapsed();
    // 20 at once (a second's worth), then 40 more at 20 a second: 2 s.
    assert!(
        took >= Duration::from_millis(1900),
        "60 connections at 20/s took only {took:?}"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let delayed = Counters::get(&b.broker.counters().accepts_delayed);
    eprintln!("60 connections at max_connection_rate = 20: {took:?}, {delayed} accepts delayed");
    assert!((38..=41).contains(&delayed), "{delayed} accepts delayed");
    assert_eq!(Counters::get(&b.broker.counters().connections_total), 60);
}

/// What a flooding publisher saw.
#[derive(Default)]
struct Seen {
    acked: AtomicU64,
    pingresps: AtomicU64,
    /// The broker sent DISCONNECT or closed the socket.
    closed: AtomicBool,
}

/// A QoS 1 publisher on a raw socket: publishes as fast as the broker's
/// Receive Maximum (100 in flight) and TCP let it, and sends PINGREQ every
/// `keep_alive` seconds into the same stream, where it waits behind
/// whatever the broker has not read yet.
struct Flood {
    writer: tokio::net::tcp::OwnedWriteHalf,
    window: Arc<tokio::sync::Semaphore>,
    seen: Arc<Seen>,
    sent: u64,
    next_id: u16,
}

impl Flood {
    async fn connect(addr: std::net::SocketAddr, id: &str, keep_alive: u16) -> Flood {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        writer
            .write_all(&encode(Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                keep_alive,
                client_id: id.into(),
                ..Connect::default()
            }))))
            .await
            .unwrap();
        let window = Arc::new(tokio::sync::Semaphore::new(0));
        let seen = Arc::new(Seen::default());
        let (w, s) = (window.clone(), seen.clone());
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                while let Some(p) = Packet::decode(&mut buf, V5, u32::MAX).unwrap() {
                    match p {
                        Packet::ConnAck(a) => {
                            assert_eq!(a.reason, ReasonCode::SUCCESS);
                            w.add_permits(100);
                        }
                        Packet::PubAck(a) => {
                            assert_eq!(a.reason, ReasonCode::SUCCESS);
                            s.acked.fetch_add(1, Relaxed);
                            w.add_permits(1);
                        }
                        Packet::PingResp => {
                            s.pingresps.fetch_add(1, Relaxed);
                        }
                        Packet::Disconnect(d) => {
                            eprintln!("broker sent {d:?}");
                            s.closed.store(true, Relaxed);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                if reader.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    s.closed.store(true, Relaxed);
                    return;
                }
            }
        });
        Flood {
            writer,
            window,
            seen,
            sent: 0,
            next_id: 0,
        }
    }

    /// Publishes to `topic` as fast as allowed while `publishing`, pinging
    /// every `ping_every`, until `until`.
    async fn run(&mut self, topic: &str, until: Instant, ping_every: Duration, publishing: bool) {
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        let deadline = tokio::time::Instant::from_std(until);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = ping.tick() => {
                    self.writer.write_all(&encode(Packet::PingReq)).await.unwrap();
                }
                permit = self.window.acquire(), if publishing => {
                    permit.unwrap().forget();
                    self.next_id = self.next_id % 60_000 + 1;
                    let p = publish(topic, self.next_id, Bytes::from_static(b"payload"));
                    self.writer.write_all(&encode(p)).await.unwrap();
                    self.sent += 1;
                }
            }
        }
    }
}

/// A QoS 1 subscriber that acknowledges everything and counts it.
fn counting_subscriber(mut sub: RawClient) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Some(p) = sub.recv().await {
            if let Packet::Publish(p) = p {
                c.fetch_add(1, Relaxed);
                sub.send(Packet::PubAck(Ack::new(p.packet_id))).await;
            }
        }
    });
    count
}

async fn subscribed(b: &TestBroker, filter: &str) -> RawClient {
    let mut sub = connected(b, "sub", V5, 0, None).await;
    sub.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        }],
        ..Subscribe::default()
    }))
    .await;
    assert!(matches!(
        sub.recv_within(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));
    sub
}

#[tokio::test]
async fn a_publisher_over_its_rate_is_slowed_without_loss_and_without_a_keep_alive_close() {
    let b = TestBroker::with(|c| c.limits.max_publish_rate = 50).await;
    let delivered = counting_subscriber(subscribed(&b, "rate/#").await);
    let mut flood = Flood::connect(b.addr, "flood", 1).await;
    let start = Instant::now();
    flood
        .run(
            "rate/x",
            start + Duration::from_secs(4),
            Duration::from_secs(1),
            true,
        )
        .await;
    let acked_in_run = flood.seen.acked.load(Relaxed);
    let rate = acked_in_run as f64 / start.elapsed().as_secs_f64();
    eprintln!(
        "sent {} acked {acked_in_run} in 4 s: {rate:.1}/s",
        flood.sent
    );
    assert!(
        (30.0..=80.0).contains(&rate),
        "observed {rate:.1} messages/s against max_publish_rate = 50"
    );
    assert!(
        flood.sent > acked_in_run,
        "the publisher was held back: messages waited unread"
    );
    // Stop publishing, keep pinging: everything sent is acknowledged and
    // delivered, nothing dropped.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle && flood.seen.acked.load(Relaxed) < flood.sent {
        flood
            .run(
                "rate/x",
                Instant::now() + Duration::from_millis(500),
                Duration::from_millis(500),
                false,
            )
            .await;
    }
    assert_eq!(
        flood.seen.acked.load(Relaxed),
        flood.sent,
        "every message acknowledged"
    );
    let wait = Instant::now() + Duration::from_secs(3);
    while Instant::now() < wait && delivered.load(Relaxed) < flood.sent {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        delivered.load(Relaxed),
        flood.sent,
        "every message delivered"
    );
    assert!(!flood.seen.closed.load(Relaxed), "the publisher was closed");
    assert!(
        flood.seen.pingresps.load(Relaxed) >= 3,
        "its pings were answered, late but answered"
    );
    let c = b.broker.counters();
    assert_eq!(Counters::get(&c.disconnect_keep_alive), 0);
    assert!(Counters::get(&c.publish_throttled) > 0);
}

/// Pauses longer than 1.5 x K: one message is two seconds' worth of bytes.
#[tokio::test]
async fn a_pause_longer_than_one_and_a_half_keep_alive_does_not_close_the_client() {
    let b = TestBroker::with(|c| c.limits.max_publish_bytes_rate = 1000).await;
    let delivered = counting_subscriber(subscribed(&b, "big/#").await);
    let mut flood = Flood::connect(b.addr, "big", 1).await;
    // Wait for CONNACK (the window opens).
    drop(flood.window.acquire().await.unwrap());
    // Two messages of ~3 s' worth each: vigil reads the first, then does
    // not read for 2 s, reads the second, then not for 3 s; meanwhile the
    // client's pings wait behind them in the socket.
    let payload = Bytes::from(vec![b'x'; 2990]);
    for id in 1..=2 {
        let p = encode(publish("big/x", id, payload.clone()));
        flood.writer.write_all(&p).await.unwrap();
        flood.sent += 1;
    }
    let start = Instant::now();
    flood
        .run(
            "big/x",
            start + Duration::from_secs(6),
            Duration::from_secs(1),
            false,
        )
        .await;
    assert!(
        !flood.seen.closed.load(Relaxed),
        "closed for vigil's own silence"
    );
    assert_eq!(flood.seen.acked.load(Relaxed), 2);
    assert_eq!(delivered.load(Relaxed), 2);
    assert!(flood.seen.pingresps.load(Relaxed) >= 1);
    assert_eq!(Counters::get(&b.broker.counters().disconnect_keep_alive), 0);
}

#[tokio::test]
async fn a_client_that_really_goes_silent_is_still_closed_at_one_and_a_half_keep_alive() {
    let b = TestBroker::with(|c| {
        c.limits.max_publish_rate = 50;
        c.limits.max_publish_bytes_rate = 1000;
    })
    .await;
    // Under the limits: silent after CONNECT, closed at 1.5 s.
    let mut c = connected(&b, "quiet", V5, 1, None).await;
    let start = Instant::now();
    assert_eq!(
        c.recv_within(Duration::from_secs(5)).await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        )))
    );
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(1450) && after <= Duration::from_millis(1700),
        "closed after {after:?}"
    );

    // Over the byte rate, then silent: vigil stops reading for ~1.5 s (one
    // message of ~2.5 s' worth), and the 1.5 s of keep alive count from
    // when it reads again: closed ~3 s after the message, not at 1.5 s.
    let mut c = connected(&b, "burst-then-quiet", V5, 1, None).await;
    let p = publish("q/x", 1, Bytes::from(vec![b'x'; 2490]));
    let start = Instant::now();
    c.send(p).await;
    assert!(matches!(
        c.recv_within(Duration::from_secs(2)).await,
        Some(Packet::PubAck(_))
    ));
    assert_eq!(
        c.recv_within(Duration::from_secs(6)).await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        )))
    );
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(2950) && after <= Duration::from_millis(3300),
        "closed after {after:?}: expected 1.5 s of pause + 1.5 s of keep alive"
    );
    assert_eq!(Counters::get(&b.broker.counters().disconnect_keep_alive), 2);
}
