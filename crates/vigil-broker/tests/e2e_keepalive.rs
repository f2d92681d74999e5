//! Keep alive, wills, takeover and bad input over real sockets, timed with a
//! raw client so the broker's deadlines can be measured exactly.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{connect, connected, subscribe, RawClient, TestBroker};
use vigil_broker::Counters;
use vigil_proto::{Disconnect, Packet, ProtocolVersion, QoS, ReasonCode, Will};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

#[tokio::test]
async fn silent_client_is_closed_at_one_and_a_half_keep_alive_and_its_will_published() {
    let b = TestBroker::start().await;
    let mut watcher = connected(&b, "watcher", V5, 60, None).await;
    subscribe(&mut watcher, "last_will").await;
    let will = Will {
        topic: "last_will".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        ..Will::default()
    };
    let mut silent = connected(&b, "silent", V5, 1, Some(will)).await;
    let start = Instant::now();
    // The broker says why (MQTT 5), then closes.
    let got = silent.recv_within(Duration::from_secs(5)).await;
    let closed_after = start.elapsed();
    assert_eq!(
        got,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        )))
    );
    assert_eq!(
        silent.recv_within(Duration::from_secs(2)).await,
        None,
        "socket closed after DISCONNECT"
    );
    assert!(
        closed_after >= Duration::from_millis(1450),
        "closed early, after {closed_after:?}"
    );
    // Late by up to 400 ms on a loaded machine, still short of 2 × K (the
    // slack some brokers allow): a broker that waited that long fails.
    assert!(
        closed_after < Duration::from_millis(1900),
        "closed late, after {closed_after:?}"
    );
    match watcher.recv_within(Duration::from_secs(2)).await {
        Some(Packet::Publish(p)) => {
            assert_eq!((&*p.topic, &p.payload[..]), ("last_will", &b"offline"[..]))
        }
        other => panic!("expected the will, got {other:?}"),
    }
    assert_eq!(Counters::get(&b.broker.counters().disconnect_keep_alive), 1);
    assert_eq!(Counters::get(&b.broker.counters().wills_published), 1);
}

#[tokio::test]
async fn pinging_client_stays_connected_past_keep_alive() {
    let b = TestBroker::start().await;
    let mut c = connected(&b, "pinger", V311, 1, None).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.send(Packet::PingReq).await;
        assert_eq!(
            c.recv_within(Duration::from_secs(1)).await,
            Some(Packet::PingResp)
        );
    }
    assert_eq!(Counters::get(&b.broker.counters().disconnect_keep_alive), 0);
    // Then silence: closed 1.5 s after the last ping, not at a deadline the
    // pings moved on (the timer is kept and fires early into a no-op).
    let last = std::time::Instant::now();
    assert_eq!(c.recv_within(Duration::from_secs(3)).await, None);
    let silent = last.elapsed();
    assert!(
        silent >= Duration::from_millis(1450) && silent < Duration::from_millis(2000),
        "closed {silent:?} after the last ping, keep alive 1 s"
    );
}

#[tokio::test]
async fn deliveries_to_a_dead_subscriber_do_not_keep_it_alive() {
    let b = TestBroker::start().await;
    let mut dead = connected(&b, "dead", V311, 1, None).await;
    subscribe(&mut dead, "feed").await;
    let mut publisher = connected(&b, "pub", V311, 60, None).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        publisher
            .send(Packet::Publish(vigil_proto::Publish {
                topic: "feed".into(),
                payload: Bytes::from_static(b"x"),
                ..Default::default()
            }))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        Counters::get(&b.broker.counters().disconnect_keep_alive),
        1,
        "the silent subscriber expired"
    );
}

#[tokio::test]
async fn takeover_sends_0x8e_to_the_old_connection_before_closing_it() {
    let b = TestBroker::start().await;
    let mut old = connected(&b, "twin", V5, 60, None).await;
    let _new = connected(&b, "twin", V5, 60, None).await;
    assert_eq!(
        old.recv_within(Duration::from_secs(5)).await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::SESSION_TAKEN_OVER
        )))
    );
    assert_eq!(old.recv_within(Duration::from_secs(2)).await, None);
    assert_eq!(Counters::get(&b.broker.counters().disconnect_taken_over), 1);
}

#[tokio::test]
async fn malformed_packet_closes_only_that_connection() {
    let b = TestBroker::start().await;
    let mut good = connected(&b, "good", V5, 60, None).await;
    let mut bad = connected(&b, "bad", V5, 60, None).await;
    bad.send_raw(&[0x36, 0x00]).await; // PUBLISH QoS 3
    assert_eq!(
        bad.recv_within(Duration::from_secs(5)).await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::MALFORMED_PACKET
        )))
    );
    good.send(Packet::PingReq).await;
    assert_eq!(
        good.recv_within(Duration::from_secs(2)).await,
        Some(Packet::PingResp)
    );
    assert_eq!(
        Counters::get(&b.broker.counters().disconnect_protocol_error),
        1
    );
}

#[tokio::test]
async fn oversized_packet_is_refused_with_0x95() {
    let b = TestBroker::with(|c| c.limits.max_packet_size = 1024).await;
    let mut c = connected(&b, "big", V5, 60, None).await;
    c.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    assert_eq!(
        c.recv_within(Duration::from_secs(5)).await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::PACKET_TOO_LARGE
        )))
    );
}

#[tokio::test]
async fn socket_without_connect_is_closed_at_the_connect_timeout() {
    let b = TestBroker::with(|c| c.listener.connect_timeout = 1).await;
    let mut c = RawClient::connect(b.addr, V311).await;
    let start = Instant::now();
    assert_eq!(c.recv_within(Duration::from_secs(5)).await, None);
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn server_keep_alive_is_returned_when_the_limit_applies() {
    let b = TestBroker::with(|c| c.keepalive.max_keepalive = 30).await;
    let mut c = RawClient::connect(b.addr, V5).await;
    c.send(connect("long", V5, 600, None)).await;
    let Some(Packet::ConnAck(ack)) = c.recv_within(Duration::from_secs(5)).await else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.properties.server_keep_alive, Some(30));
}

#[tokio::test]
async fn graceful_shutdown_tells_v5_clients_0x8b() {
    let b = TestBroker::start().await;
    let mut c = connected(&b, "bye", V5, 60, None).await;
    let stop = tokio::spawn(b.stop());
    assert_eq!(
        c.recv_within(Duration::from_secs(5)).await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::SERVER_SHUTTING_DOWN
        )))
    );
    stop.await.unwrap();
}
