//! The fixed header: packet type, flags and Remaining Length.

use crate::DecodeError;

/// A parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    /// Packet type (high nibble of the first byte).
    pub(crate) packet_type: u8,
    /// Flags (low nibble of the first byte).
    pub(crate) flags: u8,
    /// Remaining Length: bytes after the fixed header.
    pub(crate) remaining: usize,
    /// Length of the fixed header itself (2 to 5 bytes).
    pub(crate) header_len: usize,
}

impl FixedHeader {
    /// Total bytes of the packet on the wire.
    pub(crate) fn total_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Parses the fixed header at the start of `buf` without consuming anything.
/// `Ok(None)` means more bytes are needed; a fifth length byte is malformed
/// and is detected as soon as the fourth byte says "continue".
pub(crate) fn parse_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                packet_type: first >> 4,
                flags: first & 0x0F,
                remaining,
                header_len: 2 + i,
            }));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length: variable byte integer longer than 4 bytes",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_more_until_length_completes() {
        assert_eq!(parse_fixed_header(&[]), Ok(None));
        assert_eq!(parse_fixed_header(&[0x30]), Ok(None));
        assert_eq!(parse_fixed_header(&[0x30, 0x80]), Ok(None));
        let h = parse_fixed_header(&[0x30, 0x80, 0x01]).unwrap().unwrap();
        assert_eq!((h.remaining, h.header_len), (128, 3));
    }

    #[test]
    fn largest_length_is_four_bytes() {
        let h = parse_fixed_header(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F])
            .unwrap()
            .unwrap();
        assert_eq!(h.remaining, 268_435_455);
        assert_eq!(h.header_len, 5);
    }

    #[test]
    fn fifth_length_byte_is_malformed_before_it_arrives() {
        let err = parse_fixed_header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)));
    }
}
