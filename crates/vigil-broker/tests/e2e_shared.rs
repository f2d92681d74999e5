//! Shared subscriptions lose nothing: what a member received and never
//! acknowledged goes to another member of the group when its session ends.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::{connected, RawClient, TestBroker};
use vigil_broker::Counters;
use vigil_proto::{
    Ack, Packet, ProtocolVersion, Publish, QoS, Subscribe, Subscription, SubscriptionOptions,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

async fn join(c: &mut RawClient, filter: &str) {
    c.send(Packet::Subscribe(Subscribe {
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
        c.recv_within(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));
}

/// Members A and B of `$share/g/probe/ss` at QoS 1 (Clean Start, no session
/// expiry); 100 QoS 1 messages published and acknowledged; A takes its share,
/// never acknowledges, and its connection closes: B ends with all 100, the
/// handed-on ones as first transmissions (DUP 0, B's own packet ids).
#[tokio::test]
async fn a_departed_members_unacknowledged_share_goes_to_the_other_member() {
    let b = TestBroker::start().await;
    let mut a = connected(&b, "A", V5, 60, None).await;
    let mut member_b = connected(&b, "B", V5, 60, None).await;
    join(&mut a, "$share/g/probe/ss").await;
    join(&mut member_b, "$share/g/probe/ss").await;
    let mut publisher = connected(&b, "pub", V5, 60, None).await;
    for i in 1..=100u16 {
        publisher
            .send(Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: "probe/ss".into(),
                packet_id: i,
                payload: Bytes::from(format!("m{i}")),
                ..Publish::default()
            }))
            .await;
    }
    for _ in 0..100 {
        match publisher.recv_within(Duration::from_secs(5)).await {
            Some(Packet::PubAck(_)) => {}
            other => panic!("publisher: expected PUBACK, got {other:?}"),
        }
    }
    // A reads its share and acknowledges none of it.
    let mut a_got = 0;
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), a.recv()).await {
        assert!(matches!(p, Packet::Publish(_)), "A got {p:?}");
        a_got += 1;
    }
    assert!(a_got > 0 && a_got < 100, "A got a share ({a_got})");
    drop(a);
    let mut seen = HashSet::new();
    let mut ids = HashSet::new();
    while seen.len() < 100 {
        match member_b.recv_within(Duration::from_secs(5)).await {
            Some(Packet::Publish(p)) => {
                assert!(!p.dup, "a first transmission to B carries DUP 0");
                assert!(ids.insert(p.packet_id), "B's packet ids are its own");
                member_b.send(Packet::PubAck(Ack::new(p.packet_id))).await;
                seen.insert(p.payload);
            }
            other => panic!("B: expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(seen.len(), 100, "B ends with all 100");
    let c = b.broker.counters();
    assert_eq!(Counters::get(&c.shared_redelivered), a_got as u64);
    assert_eq!(Counters::get(&c.shared_undeliverable), 0);
}
