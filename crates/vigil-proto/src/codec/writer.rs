//! Encoding helpers. Lengths are checked by the packet encoders before any
//! byte is written, so a failed encode leaves the output buffer unchanged.

use bytes::{BufMut, BytesMut};

/// Bytes needed for `n` as a variable byte integer.
pub(crate) fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `n` as a variable byte integer (callers ensure n <= MAX_VARINT).
pub(crate) fn put_varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if n == 0 {
            return;
        }
    }
}

/// Wire size of a UTF-8 string field.
pub(crate) fn string_len(s: &str) -> usize {
    2 + s.len()
}

/// Wire size of a binary data field.
pub(crate) fn binary_len(b: &[u8]) -> usize {
    2 + b.len()
}

/// Appends a length-prefixed string (callers ensure len <= 65535).
pub(crate) fn put_string(out: &mut BytesMut, s: &str) {
    put_binary(out, s.as_bytes());
}

/// Appends length-prefixed binary data (callers ensure len <= 65535).
pub(crate) fn put_binary(out: &mut BytesMut, b: &[u8]) {
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

/// Fails if a string or binary field would not fit its two-byte length.
pub(crate) fn check_field(name: &'static str, len: usize) -> Result<(), crate::EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(crate::EncodeError::FieldTooLong(name))
    } else {
        Ok(())
    }
}
