//! CONNECT and CONNACK, byte for byte, in MQTT 3.1, 3.1.1 and 5.0.

mod common;

use bytes::Bytes;
use common::*;
use vigil_proto::{ConnAck, Connect, Packet, Properties, QoS, ReasonCode, Will};

fn connect(protocol: vigil_proto::ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "abc".into(),
        ..Connect::default()
    }
}

#[test]
fn connect_v311_minimal() {
    let bytes = cat(&[
        &[0x10, 0x0F, 0x00, 0x04],
        b"MQTT",
        &[0x04, 0x02, 0x00, 0x3C, 0x00, 0x03],
        b"abc",
    ]);
    both_ways(V311, &bytes, Packet::Connect(Box::new(connect(V311))));
}

#[test]
fn connect_v31_uses_mqisdp_level_3() {
    let bytes = cat(&[
        &[0x10, 0x11, 0x00, 0x06],
        b"MQIsdp",
        &[0x03, 0x02, 0x00, 0x3C, 0x00, 0x03],
        b"abc",
    ]);
    both_ways(V31, &bytes, Packet::Connect(Box::new(connect(V31))));
}

#[test]
fn connect_is_decoded_by_its_own_level_whatever_the_caller_expects() {
    let bytes = cat(&[
        &[0x10, 0x0F, 0x00, 0x04],
        b"MQTT",
        &[0x04, 0x02, 0x00, 0x3C, 0x00, 0x03],
        b"abc",
    ]);
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let p = Packet::decode(&mut buf, V5, MAX).unwrap().unwrap();
    assert_eq!(p, Packet::Connect(Box::new(connect(V311))));
}

#[test]
fn connect_v5_with_properties() {
    let bytes = cat(&[
        &[0x10, 0x18, 0x00, 0x04],
        b"MQTT",
        &[0x05, 0x02, 0x00, 0x3C],
        &[0x08, 0x11, 0x00, 0x00, 0x0E, 0x10, 0x21, 0x00, 0x14],
        &[0x00, 0x03],
        b"abc",
    ]);
    let mut c = connect(V5);
    c.properties.session_expiry_interval = Some(3600);
    c.properties.receive_maximum = Some(20);
    both_ways(V5, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_v311_with_will_username_password() {
    let bytes = cat(&[
        &[0x10, 0x1B, 0x00, 0x04],
        b"MQTT",
        &[0x04, 0xEE, 0x00, 0x0A],
        &[0x00, 0x01, b'c'],
        &[0x00, 0x01, b'w'],
        &[0x00, 0x03],
        b"bye",
        &[0x00, 0x01, b'u'],
        &[0x00, 0x01, b'p'],
    ]);
    let c = Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 10,
        client_id: "c".into(),
        will: Some(Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: Properties::default(),
    };
    both_ways(V311, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_v31_with_will() {
    let bytes = cat(&[
        &[0x10, 0x17, 0x00, 0x06],
        b"MQIsdp",
        &[0x03, 0x0C, 0x00, 0x0A],
        &[0x00, 0x01, b'c'],
        &[0x00, 0x01, b'w'],
        &[0x00, 0x03],
        b"bye",
    ]);
    let c = Connect {
        protocol: V31,
        clean_start: false,
        keep_alive: 10,
        client_id: "c".into(),
        will: Some(Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        }),
        ..Connect::default()
    };
    both_ways(V31, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_v5_will_with_delay_property() {
    let bytes = cat(&[
        &[0x10, 0x1A, 0x00, 0x04],
        b"MQTT",
        &[0x05, 0x06, 0x00, 0x0A, 0x00],
        &[0x00, 0x01, b'c'],
        &[0x05, 0x18, 0x00, 0x00, 0x00, 0x05],
        &[0x00, 0x01, b'w'],
        &[0x00, 0x01, b'x'],
    ]);
    let mut will_props = Properties::default();
    will_props.will_delay_interval = Some(5);
    let c = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 10,
        client_id: "c".into(),
        will: Some(Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: will_props,
        }),
        ..Connect::default()
    };
    both_ways(V5, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_v5_password_without_username_is_allowed() {
    let bytes = cat(&[
        &[0x10, 0x10, 0x00, 0x04],
        b"MQTT",
        &[0x05, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x00, 0x01, b'p'],
    ]);
    let c = Connect {
        protocol: V5,
        clean_start: true,
        password: Some(Bytes::from_static(b"p")),
        ..Connect::default()
    };
    both_ways(V5, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connack_v311() {
    both_ways(
        V311,
        &[0x20, 0x02, 0x00, 0x00],
        Packet::ConnAck(ConnAck::default()),
    );
    both_ways(
        V311,
        &[0x20, 0x02, 0x01, 0x00],
        Packet::ConnAck(ConnAck {
            session_present: true,
            ..ConnAck::default()
        }),
    );
}

#[test]
fn connack_v311_return_codes_map_to_reason_codes() {
    for (code, reason) in [
        (1u8, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        (2, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        (3, ReasonCode::SERVER_UNAVAILABLE),
        (4, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (5, ReasonCode::NOT_AUTHORIZED),
    ] {
        both_ways(
            V311,
            &[0x20, 0x02, 0x00, code],
            Packet::ConnAck(ConnAck {
                reason,
                ..ConnAck::default()
            }),
        );
        both_ways(
            V31,
            &[0x20, 0x02, 0x00, code],
            Packet::ConnAck(ConnAck {
                reason,
                ..ConnAck::default()
            }),
        );
    }
}

#[test]
fn connack_v5_with_properties() {
    let mut ack = ConnAck::default();
    ack.properties.assigned_client_identifier = Some("id".into());
    ack.properties.server_keep_alive = Some(30);
    both_ways(
        V5,
        &[
            0x20, 0x0B, 0x00, 0x00, 0x08, 0x12, 0x00, 0x02, b'i', b'd', 0x13, 0x00, 0x1E,
        ],
        Packet::ConnAck(ack),
    );
}

#[test]
fn connack_v5_refused() {
    both_ways(
        V5,
        &[0x20, 0x03, 0x00, 0x86, 0x00],
        Packet::ConnAck(ConnAck {
            reason: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ..ConnAck::default()
        }),
    );
}
