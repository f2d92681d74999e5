//! Which closes tell the client why (the driver then drains before closing).

use std::time::{Duration, Instant};

use super::tests::connected;
use super::*;
use crate::{Connect, ProtocolVersion, ReasonCode};

#[test]
fn a_close_with_disconnect_or_a_refusing_connack_told_why() {
    let t0 = Instant::now();
    // MQTT 5 keep-alive expiry: DISCONNECT 0x8D.
    let mut c = connected(ServerConfig::default(), ProtocolVersion::V5, 1, t0);
    c.handle_timeout(t0 + Duration::from_millis(1500));
    assert!(c.is_closed() && c.told_why());
    // Takeover.
    let mut c = connected(ServerConfig::default(), ProtocolVersion::V5, 60, t0);
    c.close(ReasonCode::SESSION_TAKEN_OVER, CloseReason::TakenOver);
    assert!(c.told_why());
    // A refused CONNECT.
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(
        t0,
        Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            client_id: "a".into(),
            ..Connect::default()
        })),
    );
    c.refuse(ReasonCode::NOT_AUTHORIZED);
    assert!(c.is_closed() && c.told_why());
}

#[test]
fn a_close_without_a_reason_packet_did_not_tell_why() {
    let t0 = Instant::now();
    // 3.1.1 has no DISCONNECT from the server.
    let mut c = connected(ServerConfig::default(), ProtocolVersion::V3_1_1, 1, t0);
    c.handle_timeout(t0 + Duration::from_millis(1500));
    assert!(c.is_closed() && !c.told_why());
    // The client left.
    let mut c = connected(ServerConfig::default(), ProtocolVersion::V5, 60, t0);
    c.handle_packet(t0, Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    assert!(c.is_closed() && !c.told_why());
    let mut c = connected(ServerConfig::default(), ProtocolVersion::V5, 60, t0);
    c.handle_transport_closed(CloseReason::PeerClosed);
    assert!(c.is_closed() && !c.told_why());
    // No CONNECT in time.
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_timeout(t0 + Duration::from_secs(60));
    assert!(c.is_closed() && !c.told_why());
}

#[test]
fn before_connect_only_connects_first_byte_is_accepted() {
    let t0 = Instant::now();
    let c = ServerConnection::new(ServerConfig::default(), t0);
    // An HTTP request is refused at its first byte, 'G'.
    let mut buf = bytes::BytesMut::from(&b"G"[..]);
    assert!(matches!(
        c.decode(&mut buf),
        Err(DecodeError::Protocol(why)) if why.contains("HTTP request")
    ));
    // A PINGREQ, well-formed, is not a CONNECT either.
    let mut buf = bytes::BytesMut::from(&[0xC0u8, 0x00][..]);
    assert!(c.decode(&mut buf).is_err());
    // CONNECT with reserved flags 0001.
    let mut buf = bytes::BytesMut::from(&[0x11u8][..]);
    assert!(c.decode(&mut buf).is_err());
    // CONNECT's first byte waits for the rest.
    let mut buf = bytes::BytesMut::from(&[0x10u8][..]);
    assert_eq!(c.decode(&mut buf), Ok(None));
    let mut buf = bytes::BytesMut::from(&[0x10u8, 0x80][..]);
    assert_eq!(c.decode(&mut buf), Ok(None));
}

#[test]
fn a_connected_client_may_send_any_valid_first_byte() {
    let t0 = Instant::now();
    let c = connected(ServerConfig::default(), ProtocolVersion::V5, 60, t0);
    let mut buf = bytes::BytesMut::from(&[0xC0u8, 0x00][..]);
    assert_eq!(c.decode(&mut buf), Ok(Some(Packet::PingReq)));
    let mut buf = bytes::BytesMut::from(&[0xC0u8, 0x00, 0x47][..]);
    assert_eq!(c.decode(&mut buf), Ok(Some(Packet::PingReq)));
    assert!(matches!(c.decode(&mut buf), Err(DecodeError::Malformed(_))));
}
