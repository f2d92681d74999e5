//! Server topic aliases over a real socket: an MQTT 5 subscriber that allows
//! aliases gets the topic once, then only its alias; and the bytes it reads
//! for a fan-out of a long topic, with the feature on and off.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use tokio::io::AsyncReadExt;
use vigil_proto::{
    Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const MESSAGES: usize = 1000;

fn long_topic() -> String {
    // 120 bytes: a deep device path, as fleets name them.
    let t = "fleet/region-eu-west-1/site-0042/building-7/floor-3/room-17/rack-B/device-00042/sensors/temperature/celsius/avg";
    format!("{t}{}", "x".repeat(120 - t.len()))
}

/// A subscriber allowing `alias_max` aliases; returns the packets of
/// `MESSAGES` publishes of the long topic and the bytes they took.
async fn fan_out(server_aliases: bool, alias_max: u16) -> (Vec<Publish>, usize) {
    let b = TestBroker::with(|c| c.limits.server_topic_aliases = server_aliases).await;
    let topic = long_topic();
    let mut sub = RawClient::connect(b.addr, V5).await;
    sub.send(Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "sub".into(),
        properties: Properties {
            topic_alias_maximum: Some(alias_max),
            ..Properties::default()
        },
        ..Connect::default()
    })))
    .await;
    match sub.recv_within(Duration::from_secs(5)).await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    sub.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription {
            filter: topic.clone(),
            options: SubscriptionOptions {
                qos: QoS::AtMostOnce,
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
    let mut publisher = connected(&b, "pub", V5, 60, None).await;
    let mut burst = BytesMut::new();
    for i in 0..MESSAGES {
        Packet::Publish(Publish {
            topic: topic.clone().into(),
            payload: Bytes::from(format!("{i:08}")),
            ..Publish::default()
        })
        .encode(V5, &mut burst)
        .unwrap();
    }
    publisher.send_raw(&burst).await;
    // Count every byte the subscriber reads, decoding as it goes.
    let mut got = Vec::new();
    let mut buf = BytesMut::new();
    let mut bytes = 0;
    let read_all = async {
        while got.len() < MESSAGES {
            while let Some(p) = Packet::decode(&mut buf, V5, u32::MAX).unwrap() {
                match p {
                    Packet::Publish(p) => got.push(p),
                    other => panic!("unexpected {other:?}"),
                }
            }
            if got.len() == MESSAGES {
                break;
            }
            let n = sub.stream.read_buf(&mut buf).await.unwrap();
            assert!(n > 0, "EOF after {} messages", got.len());
            bytes += n;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("all messages within 20 s");
    (got, bytes)
}

#[tokio::test]
async fn a_subscriber_allowing_aliases_gets_the_topic_once_then_its_alias() {
    let topic = long_topic();
    let (got, with) = fan_out(true, 10).await;
    assert_eq!(&*got[0].topic, topic.as_str());
    let alias = got[0]
        .properties
        .topic_alias
        .expect("first PUBLISH sets an alias");
    assert!((1..=10).contains(&alias));
    for (i, p) in got.iter().enumerate().skip(1) {
        assert_eq!(&*p.topic, "", "message {i} repeats the topic");
        assert_eq!(p.properties.topic_alias, Some(alias), "message {i}");
        assert_eq!(&p.payload[..], format!("{i:08}").as_bytes(), "in order");
    }
    // The same fan-out with the feature off, and with a client allowing none.
    let (plain, without) = fan_out(false, 10).await;
    assert!(plain
        .iter()
        .all(|p| *p.topic == *topic && p.properties.topic_alias.is_none()));
    let (none, not_allowed) = fan_out(true, 0).await;
    assert!(none
        .iter()
        .all(|p| *p.topic == *topic && p.properties.topic_alias.is_none()));
    assert_eq!(not_allowed, without);
    eprintln!(
        "fan-out of {MESSAGES} QoS 0 messages, {}-byte topic, 8-byte payload: \
         {without} bytes read without aliases, {with} with ({:.1} %)",
        topic.len(),
        100.0 * with as f64 / without as f64
    );
    // The first message is the plain one plus the 3-byte property; each
    // later one is header 2, empty topic 2, properties 4 (alias), payload 8.
    let plain_one = without / MESSAGES;
    assert_eq!(with, plain_one + 3 + (MESSAGES - 1) * 16);
}

/// The alias table lives as long as the network connection, parked or not:
/// a subscriber parked between two messages gets the second by its alias.
#[tokio::test]
async fn aliases_survive_parking() {
    let b = TestBroker::with(|c| c.listener.park_idle_after_ms = 100).await;
    let topic = long_topic();
    let mut sub = RawClient::connect(b.addr, V5).await;
    sub.send(Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "sub".into(),
        properties: Properties {
            topic_alias_maximum: Some(4),
            ..Properties::default()
        },
        ..Connect::default()
    })))
    .await;
    assert!(matches!(
        sub.recv_within(Duration::from_secs(5)).await,
        Some(Packet::ConnAck(_))
    ));
    subscribe(&mut sub, &topic).await;
    let mut publisher = connected(&b, "pub", V5, 60, None).await;
    let parked = || vigil_broker::Counters::get(&b.broker.counters().connections_parked);
    let mut seen = Vec::new();
    for i in 0..2u8 {
        let start = std::time::Instant::now();
        while parked() < 2 {
            assert!(start.elapsed() < Duration::from_secs(5), "both park");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        publisher
            .send(Packet::Publish(Publish {
                topic: topic.clone().into(),
                payload: Bytes::from(vec![i]),
                ..Publish::default()
            }))
            .await;
        match sub.recv_within(Duration::from_secs(5)).await {
            Some(Packet::Publish(p)) => {
                seen.push((String::from(p.topic), p.properties.topic_alias))
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(seen, vec![(topic, Some(1)), (String::new(), Some(1))]);
}
