//! Helpers shared by the byte-vector tests.
#![allow(dead_code, unreachable_pub)]

use bytes::BytesMut;
use vigil_proto::{DecodeError, Packet, ProtocolVersion};

pub const V31: ProtocolVersion = ProtocolVersion::V3_1;
pub const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
pub const V5: ProtocolVersion = ProtocolVersion::V5;
pub const MAX: u32 = 1024 * 1024;

/// Asserts `bytes` decode to `packet` (consuming all of them) and `packet` encodes to `bytes`.
pub fn both_ways(version: ProtocolVersion, bytes: &[u8], packet: Packet) {
    let mut buf = BytesMut::from(bytes);
    let decoded = Packet::decode(&mut buf, version, MAX)
        .unwrap_or_else(|e| panic!("decode failed: {e}"))
        .expect("complete packet");
    assert_eq!(decoded, packet, "decoded packet differs");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    let mut out = BytesMut::new();
    packet.encode(version, &mut out).expect("encode");
    assert_eq!(&out[..], bytes, "encoded bytes differ");
    assert_eq!(packet.encoded_len(version), bytes.len(), "encoded_len");
}

/// Decodes `bytes` expecting an error.
pub fn decode_err(version: ProtocolVersion, bytes: &[u8]) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match Packet::decode(&mut buf, version, MAX) {
        Err(e) => e,
        Ok(p) => panic!("expected an error, got {p:?}"),
    }
}

/// ASCII helper: "abc" as bytes.
pub fn s(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// Concatenates byte pieces.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
