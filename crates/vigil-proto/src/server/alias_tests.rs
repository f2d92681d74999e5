//! Server topic aliases, byte for byte: the first PUBLISH of a topic carries
//! topic and alias, later ones the alias and an empty topic.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::tests::outgoing;
use super::*;
use crate::message::{Message, Outgoing};
use crate::{Connect, Packet, Properties, ProtocolVersion, QoS};

const TOPIC: &str = "sensors/room-1/temperature";

fn connected_allowing(
    config: ServerConfig,
    version: ProtocolVersion,
    alias_max: Option<u16>,
    max_packet: Option<u32>,
    t0: Instant,
) -> ServerConnection {
    let mut c = ServerConnection::new(config, t0);
    c.handle_packet(
        t0,
        Packet::Connect(Box::new(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            client_id: "a".into(),
            properties: Properties {
                topic_alias_maximum: alias_max,
                maximum_packet_size: max_packet,
                ..Properties::default()
            },
            ..Connect::default()
        })),
    );
    assert!(matches!(c.poll_event(), Some(ServerEvent::Connect(_))));
    c.accept(t0, Accepted::default());
    assert!(matches!(c.poll_transmit(), Some(Packet::ConnAck(_))));
    c
}

fn encoded(c: &mut ServerConnection) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut buf = BytesMut::new();
        match c.encode_transmit(&mut buf) {
            Some(r) => r.unwrap(),
            None => return out,
        }
        out.push(buf.to_vec());
    }
}

/// PUBLISH QoS 0 of `topic`, payload "data", property block `props`.
fn publish_bytes(topic: &str, props: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, topic.len() as u8];
    body.extend_from_slice(topic.as_bytes());
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    body.extend_from_slice(b"data");
    let mut out = vec![0x30, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

#[test]
fn first_publish_sets_the_alias_later_ones_use_it() {
    let t0 = Instant::now();
    let mut c = connected_allowing(
        ServerConfig::default(),
        ProtocolVersion::V5,
        Some(2),
        None,
        t0,
    );
    for _ in 0..3 {
        c.deliver(t0, outgoing(TOPIC, QoS::AtMostOnce));
    }
    let sent = encoded(&mut c);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0], publish_bytes(TOPIC, &[0x23, 0x00, 0x01]));
    assert_eq!(sent[1], publish_bytes("", &[0x23, 0x00, 0x01]));
    assert_eq!(sent[2], publish_bytes("", &[0x23, 0x00, 0x01]));
    // Exact: 0x30, remaining 9: empty topic, properties (3: alias 1), payload.
    assert_eq!(
        sent[1],
        [0x30, 0x0A, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, b'd', b'a', b't', b'a']
    );
}

#[test]
fn no_alias_unless_the_client_allows_them_and_the_server_is_configured() {
    let t0 = Instant::now();
    let plain = publish_bytes(TOPIC, &[]);
    let off = ServerConfig {
        server_topic_aliases: false,
        ..ServerConfig::default()
    };
    let cases = [
        (ServerConfig::default(), ProtocolVersion::V5, None),
        (ServerConfig::default(), ProtocolVersion::V5, Some(0)),
        (off, ProtocolVersion::V5, Some(10)),
    ];
    for (config, version, max) in cases {
        let mut c = connected_allowing(config, version, max, None, t0);
        c.deliver(t0, outgoing(TOPIC, QoS::AtMostOnce));
        c.deliver(t0, outgoing(TOPIC, QoS::AtMostOnce));
        assert_eq!(
            encoded(&mut c),
            vec![plain.clone(), plain.clone()],
            "{max:?}"
        );
        assert!(c.aliases.is_none(), "nothing allocated");
    }
    // 3.1.1 has no properties at all.
    let mut c = connected_allowing(
        ServerConfig::default(),
        ProtocolVersion::V3_1_1,
        None,
        None,
        t0,
    );
    c.deliver(t0, outgoing(TOPIC, QoS::AtMostOnce));
    let mut v3 = vec![0x30, 0x00, 0x00, TOPIC.len() as u8];
    v3.extend_from_slice(TOPIC.as_bytes());
    v3.extend_from_slice(b"data");
    v3[1] = (v3.len() - 2) as u8;
    assert_eq!(encoded(&mut c), vec![v3]);
}

#[test]
fn aliases_never_exceed_the_clients_maximum_and_lru_is_replaced() {
    let t0 = Instant::now();
    let mut c = connected_allowing(
        ServerConfig::default(),
        ProtocolVersion::V5,
        Some(1),
        None,
        t0,
    );
    for topic in ["topic/a", "topic/a", "topic/b", "topic/a"] {
        c.deliver(t0, outgoing(topic, QoS::AtMostOnce));
    }
    let sent = encoded(&mut c);
    let alias1 = [0x23, 0x00, 0x01];
    assert_eq!(sent[0], publish_bytes("topic/a", &alias1));
    assert_eq!(sent[1], publish_bytes("", &alias1));
    // One alias only: b rebinds it, then a rebinds it back.
    assert_eq!(sent[2], publish_bytes("topic/b", &alias1));
    assert_eq!(sent[3], publish_bytes("topic/a", &alias1));
}

#[test]
fn qos1_and_messages_with_properties_carry_the_alias_too() {
    let t0 = Instant::now();
    let mut c = connected_allowing(
        ServerConfig::default(),
        ProtocolVersion::V5,
        Some(4),
        None,
        t0,
    );
    let with_props = Outgoing {
        message: Arc::new(Message {
            topic: TOPIC.into(),
            payload: Bytes::from_static(b"data"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Message::boxed(Properties {
                content_type: Some("t".into()),
                ..Properties::default()
            }),
            expires_at: None,
        }),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![7],
        persisted: None,
        shared: false,
    };
    c.deliver(t0, with_props.clone());
    c.deliver(t0, with_props);
    let packets: Vec<Packet> = std::iter::from_fn(|| c.poll_transmit()).collect();
    let Packet::Publish(first) = &packets[0] else {
        panic!("{packets:?}")
    };
    let Packet::Publish(second) = &packets[1] else {
        panic!("{packets:?}")
    };
    assert_eq!(
        (&*first.topic, first.properties.topic_alias),
        (TOPIC, Some(1))
    );
    assert_eq!(
        (&*second.topic, second.properties.topic_alias),
        ("", Some(1))
    );
    assert_eq!(second.properties.content_type.as_deref(), Some("t"));
    assert_eq!(second.properties.subscription_identifiers, vec![7]);
    // And on the wire, through the codec, the client resolves it.
    let mut buf = BytesMut::new();
    packets[1].encode(ProtocolVersion::V5, &mut buf).unwrap();
    let again = Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX).unwrap();
    assert_eq!(again.as_ref(), Some(&packets[1]));
}

#[test]
fn the_alias_table_survives_parking() {
    let t0 = Instant::now();
    let mut c = connected_allowing(
        ServerConfig::default(),
        ProtocolVersion::V5,
        Some(2),
        None,
        t0,
    );
    c.deliver(t0, outgoing(TOPIC, QoS::AtMostOnce));
    assert_eq!(
        encoded(&mut c),
        vec![publish_bytes(TOPIC, &[0x23, 0x00, 0x01])]
    );
    let parked = c.park().expect("idle: parks");
    let mut c = ServerConnection::unpark(ServerConfig::default(), parked);
    c.deliver(t0, outgoing(TOPIC, QoS::AtMostOnce));
    assert_eq!(
        encoded(&mut c),
        vec![publish_bytes("", &[0x23, 0x00, 0x01])]
    );
}

#[test]
fn a_new_alias_is_not_given_when_it_would_break_the_clients_maximum_packet_size() {
    let t0 = Instant::now();
    let plain = publish_bytes(TOPIC, &[]);
    // Exactly the plain packet fits; with a new alias it would not.
    let max = plain.len() as u32;
    let mut c = connected_allowing(
        ServerConfig::default(),
        ProtocolVersion::V5,
        Some(2),
        Some(max),
        t0,
    );
    c.deliver(t0, outgoing(TOPIC, QoS::AtMostOnce));
    c.deliver(t0, outgoing(TOPIC, QoS::AtMostOnce));
    assert_eq!(encoded(&mut c), vec![plain.clone(), plain]);
}
