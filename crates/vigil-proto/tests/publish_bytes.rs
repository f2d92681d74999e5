//! PUBLISH and its four acknowledgements, byte for byte, in every version.

mod common;

use bytes::Bytes;
use common::*;
use vigil_proto::{Ack, Packet, Publish, QoS, ReasonCode};

fn publish(qos: QoS, packet_id: u16) -> Publish {
    Publish {
        qos,
        packet_id,
        topic: "a/b".into(),
        payload: Bytes::from_static(b"hi"),
        ..Publish::default()
    }
}

#[test]
fn publish_qos0_all_versions() {
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    both_ways(V31, &bytes, Packet::Publish(publish(QoS::AtMostOnce, 0)));
    both_ways(V311, &bytes, Packet::Publish(publish(QoS::AtMostOnce, 0)));
    let v5 = [0x30, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i'];
    both_ways(V5, &v5, Packet::Publish(publish(QoS::AtMostOnce, 0)));
}

#[test]
fn publish_qos1_dup_retain() {
    let mut p = publish(QoS::AtLeastOnce, 10);
    p.dup = true;
    p.retain = true;
    let bytes = [
        0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
    ];
    both_ways(V311, &bytes, Packet::Publish(p.clone()));
    both_ways(V31, &bytes, Packet::Publish(p));
}

#[test]
fn publish_qos2() {
    let bytes = [
        0x34, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, b'h', b'i',
    ];
    both_ways(
        V311,
        &bytes,
        Packet::Publish(publish(QoS::ExactlyOnce, 256)),
    );
    let v5 = [
        0x34, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x00, b'h', b'i',
    ];
    both_ways(V5, &v5, Packet::Publish(publish(QoS::ExactlyOnce, 256)));
}

#[test]
fn publish_v5_with_properties() {
    let mut p = publish(QoS::AtLeastOnce, 1);
    p.properties.message_expiry_interval = Some(60);
    p.properties.topic_alias = Some(1);
    p.properties.user_properties.push(("k".into(), "v".into()));
    let bytes = cat(&[
        &[0x32, 0x19, 0x00, 0x03],
        b"a/b",
        &[0x00, 0x01, 0x0F],
        &[0x02, 0x00, 0x00, 0x00, 0x3C],
        &[0x23, 0x00, 0x01],
        &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'],
        b"hi",
    ]);
    both_ways(V5, &bytes, Packet::Publish(p));
}

#[test]
fn publish_v5_request_response_properties() {
    let mut p = publish(QoS::AtMostOnce, 0);
    p.properties.payload_format_indicator = Some(1);
    p.properties.content_type = Some("t".into());
    p.properties.response_topic = Some("r".into());
    p.properties.correlation_data = Some(Bytes::from_static(b"c"));
    p.properties.subscription_identifiers = vec![1, 200];
    let bytes = cat(&[
        &[0x30, 0x1B, 0x00, 0x03],
        b"a/b",
        &[0x13],
        &[0x01, 0x01],
        &[0x03, 0x00, 0x01, b't'],
        &[0x08, 0x00, 0x01, b'r'],
        &[0x09, 0x00, 0x01, b'c'],
        &[0x0B, 0x01, 0x0B, 0xC8, 0x01],
        b"hi",
    ]);
    both_ways(V5, &bytes, Packet::Publish(p));
}

#[test]
fn publish_v5_empty_topic_with_alias() {
    let p = Publish {
        topic: String::new().into(),
        payload: Bytes::from_static(b"x"),
        properties: vigil_proto::Properties {
            topic_alias: Some(5),
            ..Default::default()
        }
        .into(),
        ..Publish::default()
    };
    both_ways(
        V5,
        &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, b'x'],
        Packet::Publish(p),
    );
}

#[test]
fn empty_topic_without_alias_is_invalid() {
    let err = decode_err(V5, &[0x30, 0x04, 0x00, 0x00, 0x00, b'x']);
    assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
    let err = decode_err(V311, &[0x30, 0x03, 0x00, 0x00, b'x']);
    assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
}

#[test]
fn acks_v3_and_v311() {
    for v in [V31, V311] {
        both_ways(v, &[0x40, 0x02, 0x00, 0x0A], Packet::PubAck(Ack::new(10)));
        both_ways(v, &[0x50, 0x02, 0x00, 0x0A], Packet::PubRec(Ack::new(10)));
        both_ways(v, &[0x62, 0x02, 0x00, 0x0A], Packet::PubRel(Ack::new(10)));
        both_ways(v, &[0x70, 0x02, 0x00, 0x0A], Packet::PubComp(Ack::new(10)));
    }
}

#[test]
fn acks_v5_short_form_for_success() {
    both_ways(V5, &[0x40, 0x02, 0x00, 0x0A], Packet::PubAck(Ack::new(10)));
    both_ways(V5, &[0x50, 0x02, 0x00, 0x0A], Packet::PubRec(Ack::new(10)));
    both_ways(V5, &[0x62, 0x02, 0x00, 0x0A], Packet::PubRel(Ack::new(10)));
    both_ways(V5, &[0x70, 0x02, 0x00, 0x0A], Packet::PubComp(Ack::new(10)));
}

#[test]
fn acks_v5_with_reason_and_properties() {
    let ack = Ack {
        packet_id: 10,
        reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Ack::default()
    };
    both_ways(
        V5,
        &[0x40, 0x04, 0x00, 0x0A, 0x10, 0x00],
        Packet::PubAck(ack.clone()),
    );
    let mut with_reason = ack;
    with_reason.properties.reason_string = Some("x".into());
    both_ways(
        V5,
        &[0x40, 0x08, 0x00, 0x0A, 0x10, 0x04, 0x1F, 0x00, 0x01, b'x'],
        Packet::PubAck(with_reason),
    );
    let rel = Ack {
        packet_id: 10,
        reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        ..Ack::default()
    };
    both_ways(
        V5,
        &[0x62, 0x04, 0x00, 0x0A, 0x92, 0x00],
        Packet::PubRel(rel.clone()),
    );
    both_ways(
        V5,
        &[0x70, 0x04, 0x00, 0x0A, 0x92, 0x00],
        Packet::PubComp(rel),
    );
}

#[test]
fn v5_ack_short_form_with_reason_but_no_property_length_decodes() {
    let mut buf = bytes::BytesMut::from(&[0x40u8, 0x03, 0x00, 0x0A, 0x10][..]);
    let p = Packet::decode(&mut buf, V5, MAX).unwrap().unwrap();
    assert_eq!(
        p,
        Packet::PubAck(Ack {
            packet_id: 10,
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            ..Ack::default()
        })
    );
}

#[test]
fn v5_ack_with_reason_and_empty_properties_decodes() {
    let mut buf = bytes::BytesMut::from(&[0x40u8, 0x04, 0x00, 0x0A, 0x00, 0x00][..]);
    let p = Packet::decode(&mut buf, V5, MAX).unwrap().unwrap();
    assert_eq!(p, Packet::PubAck(Ack::new(10)));
}

#[test]
fn pubrec_reason_not_allowed_on_pubrel() {
    let err = decode_err(V5, &[0x62, 0x03, 0x00, 0x0A, 0x10]);
    assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
}

#[test]
fn payload_is_a_slice_of_the_frame_not_a_copy() {
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let frame_start = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = Packet::decode(&mut buf, V311, MAX).unwrap() else {
        panic!("not a publish")
    };
    assert_eq!(p.payload.as_ptr() as usize, frame_start + 7);
}
