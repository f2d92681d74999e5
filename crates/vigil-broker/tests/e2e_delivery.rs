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
/// sits out the whole 10 s backpressure bound and then drops the rest.
#[tokio::test]
async fn a_burst_larger_than_the_subscriber_queue_arrives_whole_and_promptly() {
    let b = TestBroker::with(|c| c.sessions.max_queued_messages = 5).await;
    let mut sub = connected(&b, "sub", V311, 30, None).await;
    subscribe(&mut sub, "burst").await;
    let mut publisher = connected(&b, "pub", V311, 30, None).await;
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
}
