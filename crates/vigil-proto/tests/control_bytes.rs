//! PINGREQ, PINGRESP, DISCONNECT and AUTH, byte for byte.

mod common;

use bytes::Bytes;
use common::*;
use vigil_proto::{Auth, Disconnect, Packet, ReasonCode};

#[test]
fn pings_all_versions() {
    for v in [V31, V311, V5] {
        both_ways(v, &[0xC0, 0x00], Packet::PingReq);
        both_ways(v, &[0xD0, 0x00], Packet::PingResp);
    }
}

#[test]
fn disconnect_v3_has_no_body() {
    both_ways(
        V31,
        &[0xE0, 0x00],
        Packet::Disconnect(Disconnect::default()),
    );
    both_ways(
        V311,
        &[0xE0, 0x00],
        Packet::Disconnect(Disconnect::default()),
    );
    // A 3.1.1 DISCONNECT cannot carry a reason: it is dropped on encode.
    let mut out = bytes::BytesMut::new();
    Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER))
        .encode(V311, &mut out)
        .unwrap();
    assert_eq!(&out[..], &[0xE0, 0x00]);
}

#[test]
fn disconnect_v5_forms() {
    both_ways(V5, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
    both_ways(
        V5,
        &[0xE0, 0x02, 0x8E, 0x00],
        Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
    );
    // The short form without a property length is legal and decodes the same.
    let mut buf = bytes::BytesMut::from(&[0xE0u8, 0x01, 0x8E][..]);
    assert_eq!(
        Packet::decode(&mut buf, V5, MAX).unwrap(),
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::SESSION_TAKEN_OVER
        )))
    );
    both_ways(
        V5,
        &[0xE0, 0x02, 0x8D, 0x00],
        Packet::Disconnect(Disconnect::new(ReasonCode::KEEP_ALIVE_TIMEOUT)),
    );
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(0);
    both_ways(
        V5,
        &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
        Packet::Disconnect(d),
    );
}

#[test]
fn disconnect_v3_with_body_is_malformed() {
    assert_eq!(
        decode_err(V311, &[0xE0, 0x01, 0x00]).reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}

#[test]
fn auth_v5() {
    both_ways(V5, &[0xF0, 0x00], Packet::Auth(Auth::default()));
    let mut a = Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        ..Auth::default()
    };
    a.properties.authentication_method = Some("m".into());
    a.properties.authentication_data = Some(Bytes::from_static(b"d"));
    both_ways(
        V5,
        &[
            0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x01, b'm', 0x16, 0x00, 0x01, b'd',
        ],
        Packet::Auth(a),
    );
}

#[test]
fn auth_before_v5_is_malformed_and_not_encodable() {
    assert_eq!(
        decode_err(V311, &[0xF0, 0x00]).reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
    let mut out = bytes::BytesMut::new();
    assert!(Packet::Auth(Auth::default())
        .encode(V311, &mut out)
        .is_err());
    assert!(out.is_empty());
}
