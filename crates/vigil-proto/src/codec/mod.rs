//! Wire primitives shared by every packet: the fixed header, variable byte
//! integers, UTF-8 strings and binary data. Decoding reads from a frozen
//! `Bytes` frame so that payloads and binary properties are zero-copy slices.

mod fixed_header;
mod reader;
mod writer;

pub(crate) use fixed_header::parse_fixed_header;
pub(crate) use reader::Reader;
pub(crate) use writer::{
    binary_len, check_field, put_binary, put_string, put_varint, string_len, varint_len,
};

/// The largest value a variable byte integer can carry (four bytes).
pub(crate) const MAX_VARINT: u32 = 268_435_455;
