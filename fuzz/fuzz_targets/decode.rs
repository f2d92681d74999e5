//! Fuzz the decoder: arbitrary bytes, every protocol version, a small size
//! limit. Whatever decodes must re-encode, and decode again to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vigil_proto::{Packet, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = Packet::decode(&mut buf, version, 64 * 1024) {
            let v = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => version,
            };
            let mut out = BytesMut::new();
            packet.encode(v, &mut out).expect("a decoded packet re-encodes");
            let again = Packet::decode(&mut out, v, u32::MAX)
                .expect("re-encoded bytes decode")
                .expect("complete");
            assert_eq!(again, packet);
        }
    }
});
