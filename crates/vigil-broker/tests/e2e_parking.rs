//! Idle connections parked off their task behave as if they never were:
//! pings are answered, deliveries and takeovers reach them, keep alive still
//! expires them at 1.5 × K with their will, against real sockets.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use vigil_broker::Counters;
use vigil_proto::{Disconnect, Packet, ProtocolVersion, QoS, ReasonCode, Will};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

async fn parked_count_reaches(b: &TestBroker, n: u64) {
    let start = Instant::now();
    while Counters::get(&b.broker.counters().connections_parked) != n {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "parked: {} of {n}",
            Counters::get(&b.broker.counters().connections_parked)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn broker(workers: usize) -> TestBroker {
    TestBroker::with_workers(|c| c.listener.park_idle_after_ms = 100, workers).await
}

#[tokio::test]
async fn a_parked_subscriber_gets_pings_answered_and_deliveries() {
    for workers in [0, 2] {
        let b = broker(workers).await;
        let mut sub = connected(&b, "sub", V311, 60, None).await;
        subscribe(&mut sub, "feed").await;
        parked_count_reaches(&b, 1).await;
        sub.send(Packet::PingReq).await;
        assert_eq!(
            sub.recv_within(Duration::from_secs(1)).await,
            Some(Packet::PingResp)
        );
        parked_count_reaches(&b, 1).await;
        let mut publisher = connected(&b, "pub", V311, 60, None).await;
        publisher
            .send(Packet::Publish(vigil_proto::Publish {
                topic: "feed".into(),
                payload: Bytes::from_static(b"hello"),
                ..Default::default()
            }))
            .await;
        match sub.recv_within(Duration::from_secs(1)).await {
            Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"hello"),
            other => panic!("workers {workers}: expected the delivery, got {other:?}"),
        }
        // Both idle again: both park.
        parked_count_reaches(&b, 2).await;
        assert_eq!(Counters::get(&b.broker.counters().disconnect_keep_alive), 0);
        b.stop().await;
    }
}

#[tokio::test]
async fn a_parked_silent_client_expires_at_one_and_a_half_k_with_its_will() {
    let b = broker(0).await;
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
    parked_count_reaches(&b, 2).await;
    let got = silent.recv_within(Duration::from_secs(5)).await;
    let closed_after = start.elapsed();
    assert_eq!(
        got,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        )))
    );
    assert!(
        // Late by up to 400 ms on a loaded machine, still short of 2 × K.
        closed_after >= Duration::from_millis(1450) && closed_after < Duration::from_millis(1900),
        "closed after {closed_after:?}, keep alive 1 s"
    );
    match watcher.recv_within(Duration::from_secs(2)).await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"offline"),
        other => panic!("expected the will, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn a_parked_connection_is_told_of_its_takeover() {
    let b = broker(0).await;
    let mut old = connected(&b, "dev", V5, 60, None).await;
    parked_count_reaches(&b, 1).await;
    let _new = connected(&b, "dev", V5, 60, None).await;
    assert_eq!(
        old.recv_within(Duration::from_secs(2)).await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::SESSION_TAKEN_OVER
        )))
    );
    assert_eq!(
        old.recv_within(Duration::from_secs(2)).await,
        None,
        "closed"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_parked_client_that_closes_its_socket_is_gone() {
    let b = broker(0).await;
    let c = connected(&b, "leaver", V311, 60, None).await;
    parked_count_reaches(&b, 1).await;
    drop(c);
    parked_count_reaches(&b, 0).await;
    let start = Instant::now();
    while Counters::get(&b.broker.counters().connections_current) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still counted as connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        Counters::get(&b.broker.counters().disconnect_peer_closed),
        1
    );
}

/// A parked client that only pings is answered by the lot itself: it stays
/// parked through every ping, and past its first 1.5 × K (each answered ping
/// moves the deadline). Half a ping, or a ping with a packet behind it, is
/// read by the connection's task as any packet is.
#[tokio::test]
async fn pings_are_answered_in_place_and_move_the_deadline() {
    for workers in [0, 2] {
        let b = broker(workers).await;
        let mut c = connected(&b, "pinger", V311, 2, None).await;
        parked_count_reaches(&b, 1).await;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(4_500) {
            c.send(Packet::PingReq).await;
            assert_eq!(
                c.recv_within(Duration::from_secs(1)).await,
                Some(Packet::PingResp)
            );
            assert_eq!(
                Counters::get(&b.broker.counters().connections_parked),
                1,
                "workers {workers}: answered without resuming"
            );
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        c.send_raw(&[0xC0]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.send_raw(&[0x00]).await;
        assert_eq!(
            c.recv_within(Duration::from_secs(1)).await,
            Some(Packet::PingResp)
        );
        parked_count_reaches(&b, 1).await;
        c.send_raw(&[0xC0, 0x00, 0xE0, 0x00]).await;
        assert_eq!(
            c.recv_within(Duration::from_secs(1)).await,
            Some(Packet::PingResp)
        );
        assert_eq!(c.recv_within(Duration::from_secs(1)).await, None, "closed");
        assert_eq!(Counters::get(&b.broker.counters().disconnect_keep_alive), 0);
        b.stop().await;
    }
}
