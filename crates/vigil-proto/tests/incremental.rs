//! Incremental decoding: partial packets wait without being consumed.

mod common;

use bytes::BytesMut;
use common::*;
use vigil_proto::{Ack, Packet};

#[test]
fn one_byte_at_a_time() {
    let bytes = cat(&[
        &[0x10, 0x18, 0x00, 0x04],
        b"MQTT",
        &[0x05, 0x02, 0x00, 0x3C],
        &[0x08, 0x11, 0x00, 0x00, 0x0E, 0x10, 0x21, 0x00, 0x14],
        &[0x00, 0x03],
        b"abc",
    ]);
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = Packet::decode(&mut buf, V5, MAX).unwrap();
        if i + 1 < bytes.len() {
            assert!(
                got.is_none(),
                "packet reported complete after {} bytes",
                i + 1
            );
            assert_eq!(buf.len(), i + 1, "partial bytes must stay in the buffer");
        } else {
            assert!(matches!(got, Some(Packet::Connect(_))));
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn two_packets_in_one_buffer_come_out_in_turn() {
    let mut buf = BytesMut::from(&[0x40u8, 0x02, 0x00, 0x01, 0xD0, 0x00, 0x40][..]);
    assert_eq!(
        Packet::decode(&mut buf, V311, MAX).unwrap(),
        Some(Packet::PubAck(Ack::new(1)))
    );
    assert_eq!(
        Packet::decode(&mut buf, V311, MAX).unwrap(),
        Some(Packet::PingResp)
    );
    assert_eq!(Packet::decode(&mut buf, V311, MAX).unwrap(), None);
    assert_eq!(&buf[..], &[0x40]);
}

#[test]
fn empty_buffer_needs_more() {
    let mut buf = BytesMut::new();
    assert_eq!(Packet::decode(&mut buf, V5, MAX).unwrap(), None);
}
