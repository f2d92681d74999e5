//! Bad input: each case names the exact error kind and the reason code a
//! server answers with. None of them may panic.

mod common;

use bytes::BytesMut;
use common::*;
use vigil_proto::{DecodeError, Packet, ReasonCode};

fn malformed(version: vigil_proto::ProtocolVersion, bytes: &[u8]) {
    let err = decode_err(version, bytes);
    assert!(
        matches!(err, DecodeError::Malformed(_)),
        "{bytes:02X?}: {err:?}"
    );
    assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
}

fn protocol_error(version: vigil_proto::ProtocolVersion, bytes: &[u8]) {
    let err = decode_err(version, bytes);
    assert!(
        matches!(err, DecodeError::Protocol(_)),
        "{bytes:02X?}: {err:?}"
    );
    assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn five_byte_remaining_length() {
    malformed(V311, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
}

#[test]
fn five_byte_property_length() {
    malformed(
        V5,
        &[0x40, 0x08, 0x00, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
    );
}

#[test]
fn reserved_flags_must_match() {
    malformed(V311, &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00]); // SUBSCRIBE flags 0000
    malformed(V311, &[0x60, 0x02, 0x00, 0x01]); // PUBREL flags 0000
    malformed(V311, &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']); // UNSUBSCRIBE flags 0000
    malformed(V311, &[0x41, 0x02, 0x00, 0x01]); // PUBACK flags 0001
    malformed(V311, &[0xC1, 0x00]); // PINGREQ flags 0001
}

#[test]
fn packet_type_0_is_malformed() {
    malformed(V311, &[0x00, 0x00]);
}

#[test]
fn publish_qos_3() {
    malformed(V311, &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]);
}

#[test]
fn publish_dup_at_qos_0() {
    malformed(V311, &[0x38, 0x03, 0x00, 0x01, b'a']);
}

#[test]
fn packet_identifier_0() {
    malformed(V311, &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00]);
    malformed(V311, &[0x40, 0x02, 0x00, 0x00]);
    malformed(V311, &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]);
    malformed(V311, &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a']);
}

#[test]
fn duplicate_property_is_a_protocol_error() {
    // PUBLISH with Message Expiry Interval twice.
    protocol_error(
        V5,
        &[
            0x30, 0x0E, 0x00, 0x01, b'a', 0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2,
        ],
    );
}

#[test]
fn repeatable_properties_may_repeat() {
    let bytes = [
        0x30, 0x0E, 0x00, 0x01, b'a', 0x0A, 0x26, 0, 1, b'k', 0, 0, 0x0B, 0x01, 0x0B, 0x02,
    ];
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(Packet::decode(&mut buf, V5, MAX).unwrap().is_some());
}

#[test]
fn property_on_the_wrong_packet_is_a_protocol_error() {
    // PUBACK carrying Session Expiry Interval.
    protocol_error(V5, &[0x40, 0x09, 0x00, 0x01, 0x00, 0x05, 0x11, 0, 0, 0, 1]);
    // PUBLISH carrying Will Delay Interval.
    protocol_error(V5, &[0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x18, 0, 0, 0, 1]);
}

#[test]
fn unknown_property_is_malformed() {
    malformed(V5, &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x7F, 0x00]);
}

#[test]
fn zero_values_that_the_spec_forbids() {
    protocol_error(V5, &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00]); // topic alias 0
    protocol_error(V5, &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x0B, 0x00]); // subscription id 0
    protocol_error(V5, &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x01, 0x02]); // payload format 2
}

#[test]
fn invalid_utf8_and_nul_in_strings() {
    malformed(V311, &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28]);
    malformed(V311, &[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80]); // encoded surrogate U+D800
    malformed(V311, &[0x30, 0x04, 0x00, 0x02, b'a', 0x00]);
}

#[test]
fn wildcard_in_publish_topic() {
    let err = decode_err(V311, &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#']);
    assert!(matches!(err, DecodeError::InvalidTopic { .. }), "{err:?}");
    assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
    let err = decode_err(V5, &[0x30, 0x06, 0x00, 0x03, b'+', b'/', b'a', 0x00]);
    assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
}

#[test]
fn remaining_length_must_match_the_fields() {
    malformed(V311, &[0xC0, 0x01, 0x00]); // PINGREQ with a body
    malformed(V311, &[0x40, 0x03, 0x00, 0x0A, 0x00]); // 3.1.1 PUBACK with an extra byte
    malformed(V311, &[0x40, 0x01, 0x00]); // too short for its packet id
    malformed(V311, &[0x30, 0x02, 0x00, 0x05]); // topic longer than the packet
}

#[test]
fn connect_reserved_flag_and_will_flags() {
    let base = |flags: u8| {
        cat(&[
            &[0x10, 0x0D, 0x00, 0x04],
            b"MQTT",
            &[0x04, flags, 0x00, 0x3C, 0x00, 0x01],
            b"c",
        ])
    };
    malformed(V311, &base(0x03)); // reserved bit 0
    malformed(V311, &base(0x0A)); // will QoS 1 without will flag
    malformed(V311, &base(0x22)); // will retain without will flag
    malformed(V311, &base(0x42)); // 3.1.1 password without user name
}

#[test]
fn unsupported_protocol_level() {
    let bytes = cat(&[
        &[0x10, 0x0D, 0x00, 0x04],
        b"MQTT",
        &[0x06, 0x02, 0x00, 0x3C, 0x00, 0x01],
        b"c",
    ]);
    let err = decode_err(V311, &bytes);
    assert!(
        matches!(err, DecodeError::UnsupportedProtocol { level: 6, .. }),
        "{err:?}"
    );
    assert_eq!(err.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
}

#[test]
fn connect_will_topic_with_wildcard() {
    let bytes = cat(&[
        &[0x10, 0x12, 0x00, 0x04],
        b"MQTT",
        &[
            0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, b'c', 0x00, 0x01, b'#', 0x00, 0x00,
        ],
    ]);
    assert_eq!(
        decode_err(V311, &bytes).reason_code(),
        ReasonCode::TOPIC_NAME_INVALID
    );
}

#[test]
fn invalid_reason_codes() {
    malformed(V5, &[0x40, 0x03, 0x00, 0x01, 0x8E]); // PUBACK: session taken over
    malformed(V5, &[0xE0, 0x01, 0x10]); // DISCONNECT: no matching subscribers
    malformed(V5, &[0x20, 0x03, 0x00, 0x8E, 0x00]); // CONNACK: session taken over
    malformed(V5, &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x01]); // UNSUBACK: granted QoS 1
    malformed(V311, &[0x20, 0x02, 0x00, 0x06]); // 3.1.1 CONNACK return code 6
}

#[test]
fn oversized_packet_is_refused_from_its_header_alone() {
    // Only the 5 header bytes have arrived; the declared body is 256 MB.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let err = Packet::decode(&mut buf, V311, 1024 * 1024).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1024 * 1024
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    assert_eq!(buf.capacity(), 5, "nothing was reserved for the body");
}

#[test]
fn size_limit_counts_the_whole_packet() {
    // 9 bytes on the wire: allowed at max 9, refused at max 8.
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(Packet::decode(&mut buf, V311, 9).unwrap().is_some());
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        Packet::decode(&mut buf, V311, 8),
        Err(DecodeError::PacketTooLarge { size: 9, max: 8 })
    ));
}

/// Every possible first byte, alone: the ones no packet may start with are
/// refused before any length byte; the others wait for more.
#[test]
fn an_impossible_first_byte_is_refused_alone() {
    for version in [V311, V5] {
        for first in 0..=255u8 {
            let (kind, flags) = (first >> 4, first & 0x0F);
            let valid = match kind {
                0 => false,
                3 => (flags >> 1) & 3 != 3 && !(flags & 0x08 != 0 && flags & 0x06 == 0),
                6 | 8 | 10 => flags == 0x02,
                15 => version == V5 && flags == 0,
                _ => flags == 0,
            };
            let mut buf = BytesMut::from(&[first][..]);
            let got = Packet::decode(&mut buf, version, MAX);
            if valid {
                assert_eq!(got, Ok(None), "{first:#04X} ({version:?}) waits for more");
            } else {
                assert!(
                    matches!(got, Err(DecodeError::Malformed(_))),
                    "{first:#04X} ({version:?}): {got:?}"
                );
            }
            assert_eq!(buf.len(), 1, "nothing consumed");
        }
    }
}

#[test]
fn a_reserved_type_with_a_plausible_length_is_refused_at_once() {
    // Type 0 announcing 100 bytes; type 15 (AUTH) in 3.1.1 announcing 50.
    malformed(V311, &[0x00, 0x64]);
    malformed(V311, &[0xF0, 0x32, 0x00]);
    // An HTTP request: 'G' is 0x47, PUBACK with flags 0111.
    malformed(V311, b"GET / HTTP/1.1\r\n");
}
