//! "The Server MUST" rules of MQTT 5 sections 3 and 4, checked over a real
//! socket with a raw client: subscription identifiers (live and retained),
//! Assigned Client Identifier, an unsupported Authentication Method, No
//! Local on a shared subscription, and the client's Maximum Packet Size.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use vigil_proto::{
    Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const WAIT: Duration = Duration::from_secs(5);

async fn connect_with(b: &TestBroker, id: &str, properties: Properties) -> (RawClient, Packet) {
    let mut c = RawClient::connect(b.addr, V5).await;
    c.send(Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: id.into(),
        properties,
        ..Connect::default()
    })))
    .await;
    let ack = c.recv_within(WAIT).await.expect("CONNACK");
    (c, ack)
}

async fn subscribe_with(
    c: &mut RawClient,
    filter: &str,
    id: Option<u32>,
    no_local: bool,
) -> Option<Packet> {
    c.send(Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters: vec![Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local,
                ..SubscriptionOptions::default()
            },
        }],
        properties: Properties {
            subscription_identifiers: id.into_iter().collect(),
            ..Properties::default()
        }
        .into(),
    }))
    .await;
    c.recv_within(WAIT).await
}

fn publish(topic: &str, payload: &[u8], retain: bool) -> Packet {
    Packet::Publish(Publish {
        topic: topic.into(),
        retain,
        payload: Bytes::copy_from_slice(payload),
        ..Publish::default()
    })
}

async fn next_publish(c: &mut RawClient) -> Publish {
    match c.recv_within(WAIT).await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// MQTT-3.3.4-3/-4 and 3.8.2.1.2: the identifiers of every matching
/// subscription, on live messages and on retained ones sent at subscribe.
#[tokio::test]
async fn subscription_identifiers_on_live_and_retained_messages() {
    let b = TestBroker::start().await;
    let mut publisher = connected(&b, "pub", V5, 60, None).await;
    publisher.send(publish("home/kitchen/t", b"21", true)).await;
    // A PINGREQ round trip: the retained message is stored by then.
    publisher.send(Packet::PingReq).await;
    assert_eq!(publisher.recv_within(WAIT).await, Some(Packet::PingResp));
    let (mut sub, _) = connect_with(&b, "sub", Properties::default()).await;
    assert!(matches!(
        subscribe_with(&mut sub, "home/+/t", Some(11), false).await,
        Some(Packet::SubAck(_))
    ));
    let retained = next_publish(&mut sub).await;
    assert!(retained.retain);
    assert_eq!(retained.properties.subscription_identifiers, vec![11]);
    assert!(matches!(
        subscribe_with(&mut sub, "home/#", Some(12), false).await,
        Some(Packet::SubAck(_))
    ));
    let again = next_publish(&mut sub).await;
    assert_eq!(again.properties.subscription_identifiers, vec![12]);
    publisher
        .send(publish("home/kitchen/t", b"22", false))
        .await;
    let mut live = next_publish(&mut sub)
        .await
        .properties
        .into_inner()
        .subscription_identifiers;
    live.sort_unstable();
    assert_eq!(live, vec![11, 12], "one copy, both identifiers");
}

/// MQTT-3.1.3-6/-7: an empty Client Identifier gets a unique one, returned
/// in CONNACK, under which the session works.
#[tokio::test]
async fn an_empty_client_id_is_assigned_one_and_told() {
    let b = TestBroker::start().await;
    let (mut a, ack_a) = connect_with(&b, "", Properties::default()).await;
    let (_b2, ack_b) = connect_with(&b, "", Properties::default()).await;
    let id = |p: &Packet| match p {
        Packet::ConnAck(a) => {
            assert_eq!(a.reason, ReasonCode::SUCCESS);
            a.properties
                .assigned_client_identifier
                .clone()
                .expect("assigned id")
        }
        other => panic!("{other:?}"),
    };
    let (ida, idb) = (id(&ack_a), id(&ack_b));
    assert!(!ida.is_empty() && ida != idb, "{ida} / {idb}");
    assert!(matches!(
        subscribe_with(&mut a, "x", None, false).await,
        Some(Packet::SubAck(_))
    ));
    a.send(publish("x", b"self", false)).await;
    assert_eq!(&next_publish(&mut a).await.payload[..], b"self");
}

/// MQTT-4.12.0-1: vigil supports no enhanced authentication: a CONNECT
/// with an Authentication Method is refused with 0x8C and closed.
#[tokio::test]
async fn an_authentication_method_is_refused_with_0x8c() {
    let b = TestBroker::start().await;
    let (mut c, ack) = connect_with(
        &b,
        "auth",
        Properties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            ..Properties::default()
        },
    )
    .await;
    match ack {
        Packet::ConnAck(a) => {
            assert_eq!(a.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
            assert!(!a.session_present);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.recv_within(WAIT).await, None, "closed");
}

/// MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_with(&b, "nl", Properties::default()).await;
    match subscribe_with(&mut c, "$share/g/t", None, true).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    assert_eq!(c.recv_within(WAIT).await, None);
}

/// MQTT-3.1.2-24/25: a message larger than one subscriber's Maximum Packet
/// Size is not sent to that subscriber (dropped and counted), which stays
/// connected and gets the next message; another subscriber gets both.
#[tokio::test]
async fn a_message_too_large_for_one_subscriber_is_dropped_for_it_only() {
    let b = TestBroker::start().await;
    let (mut small, _) = connect_with(
        &b,
        "small",
        Properties {
            maximum_packet_size: Some(64),
            ..Properties::default()
        },
    )
    .await;
    let (mut big, _) = connect_with(&b, "big", Properties::default()).await;
    for c in [&mut small, &mut big] {
        assert!(matches!(
            subscribe_with(c, "m", None, false).await,
            Some(Packet::SubAck(_))
        ));
    }
    let mut publisher = connected(&b, "pub", V5, 60, None).await;
    publisher.send(publish("m", &[b'x'; 100], false)).await;
    publisher.send(publish("m", b"small", false)).await;
    assert_eq!(next_publish(&mut big).await.payload.len(), 100);
    assert_eq!(&next_publish(&mut big).await.payload[..], b"small");
    assert_eq!(&next_publish(&mut small).await.payload[..], b"small");
    let dropped = &b.broker.counters().dropped_too_large;
    let start = std::time::Instant::now();
    while vigil_broker::Counters::get(dropped) != 1 {
        assert!(start.elapsed() < WAIT, "the drop is counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
