//! Delivery over real sockets: what routing defers (waking subscribers once
//! per read) must never hold a message back.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{connected, subscribe, TestBroker};
use vigil_proto::{Ack, Packet, ProtocolVersion, Publish, QoS};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// One read of 50 QoS 1 PUBLISHes to a subscriber whose queue holds 5: the
/// publisher's connection waits for room (backpressure) in the middle of its
/// read. The subscriber must be woken before that wait, or the publisher
/// sits out the whole wait (`slow_consumer_wait_ms`) and the subscriber,
/// taken for a slow consumer, is disconnected.
#[tokio::test]
async fn a_burst_larger_than_the_subscriber_queue_arrives_whole_and_promptly() {
    let b = TestBroker::with(|c| c.sessions.max_queued_messages = 5).await;
    burst_arrives_whole(&b).await;
}

/// As `vigil serve` runs: connections dealt to two single-threaded runtimes,
/// so the subscriber and the publisher live on different threads. Delivery,
/// backpressure, a takeover across workers and keep alive all still hold.
#[tokio::test]
async fn connections_on_different_workers_deliver_take_over_and_expire() {
    let b = TestBroker::with_workers(|c| c.sessions.max_queued_messages = 5, 2).await;
    // sub on worker 0, pub on worker 1.
    let (mut sub, mut old_pub) = burst_arrives_whole(&b).await;
    // Third connection, worker 0: takes over "pub" from worker 1.
    let mut publisher = connected(&b, "pub", V311, 30, None).await;
    // Its 50 PUBACKs, then the close.
    loop {
        match old_pub.recv_within(Duration::from_secs(3)).await {
            Some(Packet::PubAck(_)) => {}
            None => break,
            other => panic!("the taken-over connection is closed, got {other:?}"),
        }
    }
    publisher
        .send(Packet::Publish(Publish {
            topic: "burst".into(),
            payload: Bytes::from_static(b"after takeover"),
            ..Publish::default()
        }))
        .await;
    match sub.recv_within(Duration::from_secs(3)).await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"after takeover"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // Fourth connection, worker 1: keep alive 1 s, then silence.
    let mut silent = connected(&b, "silent", V311, 1, None).await;
    let started = std::time::Instant::now();
    assert_eq!(silent.recv_within(Duration::from_secs(4)).await, None);
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1400) && closed_after < Duration::from_millis(2500),
        "closed after {closed_after:?}, keep alive 1 s"
    );
}

/// Subscribes "sub", connects "pub", and sends 50 QoS 1 messages in one
/// write to a queue that holds 5; returns both clients.
async fn burst_arrives_whole(b: &TestBroker) -> (common::RawClient, common::RawClient) {
    let mut sub = connected(b, "sub", V311, 30, None).await;
    subscribe(&mut sub, "burst").await;
    let mut publisher = connected(b, "pub", V311, 30, None).await;
    let mut burst = bytes::BytesMut::new();
    for id in 1..=50u16 {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "burst".into(),
            packet_id: id,
            payload: Bytes::from(id.to_be_bytes().to_vec()),
            ..Publish::default()
        })
        .encode(V311, &mut burst)
        .unwrap();
    }
    publisher.send_raw(&burst).await;
    let mut got = Vec::new();
    while got.len() < 50 {
        match sub.recv_within(Duration::from_secs(3)).await {
            Some(Packet::Publish(p)) => {
                got.push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
                sub.send(Packet::PubAck(Ack::new(p.packet_id))).await;
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(got, (1..=50).collect::<Vec<_>>(), "every message, in order");
    (sub, publisher)
}

/// More deliveries queued at once than a connection takes per wake-up (it
/// lets the other connections of its thread run between rounds): the rest
/// must follow without waiting for a new message to wake the subscriber.
#[tokio::test]
async fn a_queue_longer_than_one_wake_up_takes_drains_without_new_messages() {
    const N: u16 = 3000;
    let b = TestBroker::with(|c| c.sessions.max_queued_messages = 5000).await;
    let mut sub = connected(&b, "sub", V311, 30, None).await;
    subscribe(&mut sub, "many").await;
    let mut publisher = connected(&b, "pub", V311, 30, None).await;
    let mut all = bytes::BytesMut::new();
    for n in 0..N {
        Packet::Publish(Publish {
            topic: "many".into(),
            payload: Bytes::from(n.to_be_bytes().to_vec()),
            ..Publish::default()
        })
        .encode(V311, &mut all)
        .unwrap();
    }
    publisher.send_raw(&all).await;
    for n in 0..N {
        match sub.recv_within(Duration::from_secs(3)).await {
            Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], n.to_be_bytes()),
            other => panic!("expected PUBLISH {n}, got {other:?}"),
        }
    }
}
