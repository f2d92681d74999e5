//! The bench payload: who sent it, its sequence number and when, so the
//! receiver can measure latency and count loss and duplicates. Padded to the
//! requested size.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes the header takes: publisher (4), sequence (8), send time in ns (8).
pub const HEADER_LEN: usize = 20;

/// What a bench payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher index.
    pub publisher: u32,
    /// Sequence number per publisher, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since the run's clock base.
    pub sent_ns: u64,
}

impl Stamp {
    /// Encodes the stamp padded to `size` bytes (at least the header).
    pub fn encode(&self, size: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(size.max(HEADER_LEN));
        b.put_u32(self.publisher);
        b.put_u64(self.seq);
        b.put_u64(self.sent_ns);
        b.resize(size.max(HEADER_LEN), 0xA5);
        b.freeze()
    }

    /// Decodes a payload written by `encode`; `None` if it is too short.
    pub fn decode(payload: &[u8]) -> Option<Stamp> {
        let h = payload.get(..HEADER_LEN)?;
        Some(Stamp {
            publisher: u32::from_be_bytes(h[0..4].try_into().ok()?),
            seq: u64::from_be_bytes(h[4..12].try_into().ok()?),
            sent_ns: u64::from_be_bytes(h[12..20].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let s = Stamp {
            publisher: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let b = s.encode(64);
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..4], &[0, 0, 0, 7]);
        assert_eq!(Stamp::decode(&b), Some(s));
        assert_eq!(
            s.encode(4).len(),
            HEADER_LEN,
            "never shorter than the header"
        );
        assert_eq!(Stamp::decode(&b[..19]), None);
    }
}
