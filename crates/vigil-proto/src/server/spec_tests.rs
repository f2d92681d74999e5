//! "The Server MUST" rules of MQTT 5 sections 3 and 4 that the review of
//! issue 19 found missing, each with its rule number.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::tests::outgoing;
use super::*;
use crate::{Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn connect_v5(properties: Properties) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 1,
        client_id: "x".into(),
        properties,
        ..Connect::default()
    }))
}

fn drain(c: &mut ServerConnection) -> Vec<Packet> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn encoded(c: &mut ServerConnection) -> Vec<u8> {
    let mut out = BytesMut::new();
    while let Some(r) = c.encode_transmit(&mut out) {
        r.unwrap();
    }
    out.to_vec()
}

/// MQTT-3.14.0-1: no DISCONNECT before a CONNACK; a refusing CONNACK
/// carries the code when CONNACK may, else the connection just closes.
#[test]
fn no_disconnect_is_sent_before_connack() {
    let t0 = Instant::now();
    // Keep alive runs out while the broker has not answered CONNECT yet.
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(t0, connect_v5(Properties::default()));
    assert!(matches!(c.poll_event(), Some(ServerEvent::Connect(_))));
    c.handle_timeout(t0 + Duration::from_millis(1500));
    assert!(c.is_closed());
    assert_eq!(drain(&mut c), vec![], "0x8D is not a CONNACK code");
    // Too many packets pipelined before CONNACK: 0x82 is a CONNACK code.
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(t0, connect_v5(Properties::default()));
    for _ in 0..=MAX_HELD {
        c.handle_packet(t0, Packet::PingReq);
    }
    assert!(c.is_closed() && c.told_why());
    // Exactly: CONNACK, remaining 3, no session, 0x82, no properties.
    assert_eq!(encoded(&mut c), [0x20, 0x03, 0x00, 0x82, 0x00]);
    // And the broker's late accept sends nothing more.
    c.accept(t0, Accepted::default());
    assert_eq!(drain(&mut c), vec![]);
}

/// MQTT-4.12.0-1: an Authentication Method vigil does not support is
/// refused (0x8C) and the connection closed, not accepted as if authenticated.
#[test]
fn an_unsupported_authentication_method_is_refused_with_0x8c() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(
        t0,
        connect_v5(Properties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            ..Properties::default()
        }),
    );
    assert!(c.is_closed() && c.told_why());
    assert_eq!(encoded(&mut c), [0x20, 0x03, 0x00, 0x8C, 0x00]);
    match c.poll_event() {
        Some(ServerEvent::Closed(closed)) => {
            assert_eq!(
                closed.reason,
                CloseReason::ConnectRefused(ReasonCode::BAD_AUTHENTICATION_METHOD)
            );
            assert!(!closed.publish_will);
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// MQTT-3.3.4-6: a client's PUBLISH carries no Subscription Identifier.
#[test]
fn a_subscription_identifier_from_the_client_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(t0, connect_v5(Properties::default()));
    c.poll_event();
    c.accept(t0, Accepted::default());
    drain(&mut c);
    // PUBLISH QoS 0 "t", properties: subscription identifier 5.
    let mut buf = BytesMut::from(&[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x0B, 0x05][..]);
    let p = c.decode(&mut buf).unwrap().unwrap();
    c.handle_packet(t0, p);
    assert!(c.is_closed());
    assert_eq!(encoded(&mut c), [0xE0, 0x02, 0x82, 0x00]);
}

/// MQTT-3.3.2-14: a Response Topic is a topic name, without wildcards.
#[test]
fn a_response_topic_with_a_wildcard_is_refused() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(t0, connect_v5(Properties::default()));
    c.poll_event();
    c.accept(t0, Accepted::default());
    drain(&mut c);
    // PUBLISH QoS 0 "t", properties: response topic "r/#".
    let bytes = [
        0x30, 0x0A, 0x00, 0x01, b't', 0x06, 0x08, 0x00, 0x03, b'r', b'/', b'#',
    ];
    let mut buf = BytesMut::from(&bytes[..]);
    let err = c.decode(&mut buf).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
    c.handle_decode_error(t0, &err);
    assert_eq!(encoded(&mut c), [0xE0, 0x02, 0x90, 0x00]);
    // Without the wildcard it is a message like any other.
    let mut c2 = ServerConnection::new(ServerConfig::default(), t0);
    c2.handle_packet(t0, connect_v5(Properties::default()));
    c2.poll_event();
    c2.accept(t0, Accepted::default());
    let mut ok = BytesMut::from(&bytes[..]);
    ok[11] = b'x';
    assert!(matches!(c2.decode(&mut ok), Ok(Some(Packet::Publish(_)))));
}

/// MQTT-3.1.2-24/25: a message resent on resume that no longer fits the
/// client's (new, smaller) Maximum Packet Size is discarded as if sent.
#[test]
fn an_inflight_message_too_large_for_the_resuming_client_is_discarded() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(t0, connect_v5(Properties::default()));
    c.poll_event();
    c.accept(t0, Accepted::default());
    drain(&mut c);
    c.deliver(t0, outgoing("a-rather-long-topic-name", QoS::AtLeastOnce));
    c.deliver(t0, outgoing("t", QoS::AtLeastOnce));
    assert_eq!(drain(&mut c).len(), 2);
    let state = c.take_state();
    assert_eq!(state.inflight.len(), 2);
    // The client comes back announcing 20 bytes at most.
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(
        t0,
        connect_v5(Properties {
            maximum_packet_size: Some(20),
            ..Properties::default()
        }),
    );
    c.poll_event();
    c.accept(
        t0,
        Accepted {
            session_present: true,
            state,
            ..Accepted::default()
        },
    );
    let sent = drain(&mut c);
    assert!(matches!(&sent[0], Packet::ConnAck(_)));
    let resent: Vec<_> = sent[1..]
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.to_string(), p.dup),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(resent, vec![("t".to_string(), true)]);
    assert_eq!(c.drops().too_large, 1);
    assert_eq!(
        c.take_state().inflight.len(),
        1,
        "its packet id is free again"
    );
}

#[test]
fn connack_codes() {
    for code in [
        0x00, 0x80, 0x82, 0x87, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9D, 0x9F,
    ] {
        assert!(ReasonCode(code).is_valid_in_connack(), "{code:#04X}");
    }
    for code in [
        0x04, 0x10, 0x8B, 0x8D, 0x8E, 0x8F, 0x93, 0x94, 0x96, 0x98, 0x9E, 0xA0,
    ] {
        assert!(!ReasonCode(code).is_valid_in_connack(), "{code:#04X}");
    }
}

/// MQTT-3.1.2-24: the CONNACK itself fits a small Maximum Packet Size by
/// leaving out the properties whose absence means the same.
#[test]
fn the_connack_fits_a_small_client_maximum() {
    let t0 = Instant::now();
    let accept = |max: Option<u32>| {
        let mut c = ServerConnection::new(ServerConfig::default(), t0);
        c.handle_packet(
            t0,
            connect_v5(Properties {
                maximum_packet_size: max,
                ..Properties::default()
            }),
        );
        c.poll_event();
        c.accept(t0, Accepted::default());
        encoded(&mut c)
    };
    let full = accept(None);
    assert_eq!(full.len(), 24);
    let small = accept(Some(20));
    // CONNACK, remaining 14: flags, code, properties (12): receive maximum
    // 100, topic alias maximum 64, maximum packet size 1 MiB.
    assert_eq!(
        small,
        [
            0x20, 0x0E, 0x00, 0x00, 0x0B, 0x21, 0x00, 0x64, 0x22, 0x00, 0x40, 0x27, 0x00, 0x10,
            0x00, 0x00
        ]
    );
    assert_eq!(accept(Some(24)), full, "stripped only when needed");
}

/// MQTT-3.1.2-24 where nothing can be left out: a CONNACK that is still too
/// large is not sent, and the connection closes saying why in the log.
#[test]
fn a_connack_that_cannot_fit_is_not_sent_and_the_close_names_the_cause() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(
        t0,
        connect_v5(Properties {
            maximum_packet_size: Some(10),
            ..Properties::default()
        }),
    );
    c.poll_event();
    c.accept(t0, Accepted::default());
    assert_eq!(drain(&mut c), vec![]);
    assert!(c.is_closed());
    match c.poll_event() {
        Some(ServerEvent::Closed(closed)) => {
            let text = format!("{:?}", closed.reason);
            assert!(text.contains("CONNACK of 16 bytes"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

/// MQTT-3.1.2-24 for SUBACK and UNSUBACK: never sent over the client's
/// Maximum Packet Size; the client is told why instead of left waiting.
#[test]
fn a_suback_over_the_clients_maximum_is_not_sent() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(
        t0,
        connect_v5(Properties {
            maximum_packet_size: Some(30),
            ..Properties::default()
        }),
    );
    c.poll_event();
    c.accept(t0, Accepted::default());
    drain(&mut c);
    // 2 + 2 + 1 + 25 codes = 30 bytes: fits exactly.
    c.send_suback(1, vec![ReasonCode::GRANTED_QOS_1; 25]);
    assert!(matches!(drain(&mut c).as_slice(), [Packet::SubAck(_)]));
    // 31 bytes: does not.
    c.send_unsuback(2, vec![ReasonCode::SUCCESS; 26]);
    assert_eq!(
        drain(&mut c),
        vec![Packet::Disconnect(crate::Disconnect::new(
            ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR
        ))]
    );
    assert!(c.is_closed());
}

/// MQTT 3.1 (protocol level 3) has no assigned identifiers: an empty client
/// id is refused with CONNACK return code 2, even with a clean session.
#[test]
fn an_empty_client_id_is_refused_on_mqtt_3_1() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(
        t0,
        Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V3_1,
            clean_start: true,
            keep_alive: 10,
            client_id: String::new(),
            ..Connect::default()
        })),
    );
    assert!(c.is_closed());
    assert_eq!(encoded(&mut c), [0x20, 0x02, 0x00, 0x02]);
}

/// A TLS ClientHello or an HTTP request on a plain port is refused at its
/// first byte with an error that says what the client sent.
#[test]
fn the_first_byte_refusal_names_tls_and_http() {
    let c = ServerConnection::new(ServerConfig::default(), Instant::now());
    let refuse = |bytes: &[u8]| {
        let mut buf = BytesMut::from(bytes);
        c.decode(&mut buf).unwrap_err().to_string()
    };
    assert!(refuse(&[0x16, 0x03, 0x01]).contains("TLS ClientHello"));
    assert!(refuse(b"GET /mqtt HTTP/1.1\r\n").contains("HTTP request"));
    assert!(refuse(&[0x30, 0x00]).contains("not CONNECT"));
}
