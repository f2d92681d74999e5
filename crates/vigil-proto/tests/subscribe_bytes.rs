//! SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, byte for byte.

mod common;

use common::*;
use vigil_proto::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

fn sub(filter: &str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter.into(),
        options: SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
    }
}

#[test]
fn subscribe_v311_and_v31() {
    let s = Subscribe {
        packet_id: 1,
        filters: vec![sub("a/+", QoS::AtLeastOnce), sub("#", QoS::ExactlyOnce)],
        ..Subscribe::default()
    };
    let bytes = cat(&[
        &[0x82, 0x0C, 0x00, 0x01, 0x00, 0x03],
        b"a/+",
        &[0x01, 0x00, 0x01, b'#', 0x02],
    ]);
    both_ways(V311, &bytes, Packet::Subscribe(s.clone()));
    both_ways(V31, &bytes, Packet::Subscribe(s));
}

#[test]
fn subscribe_v5_options_and_identifier() {
    let mut s = Subscribe {
        packet_id: 1,
        filters: vec![Subscription {
            filter: "a/+".into(),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        }],
        ..Subscribe::default()
    };
    s.properties.subscription_identifiers = vec![5];
    let bytes = cat(&[
        &[0x82, 0x0B, 0x00, 0x01, 0x02, 0x0B, 0x05, 0x00, 0x03],
        b"a/+",
        &[0x2E],
    ]);
    both_ways(V5, &bytes, Packet::Subscribe(s));
}

#[test]
fn v311_options_reserved_bits_are_malformed() {
    let bytes = cat(&[&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01], b"a", &[0x05]]);
    assert_eq!(
        decode_err(V311, &bytes).reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}

#[test]
fn retain_handling_3_is_malformed() {
    let bytes = cat(&[&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01], b"a", &[0x30]]);
    assert_eq!(
        decode_err(V5, &bytes).reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}

#[test]
fn subscribe_without_filters_is_a_protocol_error() {
    assert_eq!(
        decode_err(V311, &[0x82, 0x02, 0x00, 0x01]).reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
}

#[test]
fn two_subscription_identifiers_on_subscribe_is_a_protocol_error() {
    let bytes = cat(&[
        &[
            0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01,
        ],
        b"a",
        &[0x00],
    ]);
    assert_eq!(
        decode_err(V5, &bytes).reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
}

#[test]
fn suback_all_versions() {
    let ack = SubAck {
        packet_id: 1,
        reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
        ..SubAck::default()
    };
    both_ways(
        V311,
        &[0x90, 0x04, 0x00, 0x01, 0x01, 0x80],
        Packet::SubAck(ack.clone()),
    );
    both_ways(
        V31,
        &[0x90, 0x04, 0x00, 0x01, 0x01, 0x80],
        Packet::SubAck(ack),
    );
    let v5 = SubAck {
        packet_id: 1,
        reasons: vec![ReasonCode::GRANTED_QOS_0, ReasonCode::TOPIC_FILTER_INVALID],
        ..SubAck::default()
    };
    both_ways(
        V5,
        &[0x90, 0x05, 0x00, 0x01, 0x00, 0x00, 0x8F],
        Packet::SubAck(v5),
    );
}

#[test]
fn suback_v311_sends_v5_failures_as_0x80() {
    let ack = SubAck {
        packet_id: 1,
        reasons: vec![ReasonCode::TOPIC_FILTER_INVALID],
        ..SubAck::default()
    };
    let mut out = bytes::BytesMut::new();
    Packet::SubAck(ack).encode(V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x90, 0x03, 0x00, 0x01, 0x80]);
}

#[test]
fn suback_v311_invalid_return_code() {
    assert_eq!(
        decode_err(V311, &[0x90, 0x03, 0x00, 0x01, 0x8F]).reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}

#[test]
fn unsubscribe_all_versions() {
    let u = Unsubscribe {
        packet_id: 1,
        filters: vec!["a".into()],
        ..Unsubscribe::default()
    };
    both_ways(
        V311,
        &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        Packet::Unsubscribe(u.clone()),
    );
    both_ways(
        V31,
        &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        Packet::Unsubscribe(u.clone()),
    );
    both_ways(
        V5,
        &[0xA2, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'],
        Packet::Unsubscribe(u),
    );
}

#[test]
fn unsuback_all_versions() {
    both_ways(
        V311,
        &[0xB0, 0x02, 0x00, 0x01],
        Packet::UnsubAck(UnsubAck {
            packet_id: 1,
            ..UnsubAck::default()
        }),
    );
    both_ways(
        V31,
        &[0xB0, 0x02, 0x00, 0x01],
        Packet::UnsubAck(UnsubAck {
            packet_id: 1,
            ..UnsubAck::default()
        }),
    );
    let v5 = UnsubAck {
        packet_id: 1,
        reasons: vec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
        ..UnsubAck::default()
    };
    both_ways(
        V5,
        &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x11],
        Packet::UnsubAck(v5),
    );
}

#[test]
fn unsubscribe_without_filters_is_a_protocol_error() {
    assert_eq!(
        decode_err(V5, &[0xA2, 0x03, 0x00, 0x01, 0x00]).reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
}
