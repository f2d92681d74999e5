//! DISCONNECT.

use crate::{Props, ReasonCode};

/// A decoded DISCONNECT packet. On 3.1/3.1.1 it has no body: reason is 0x00.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Disconnect reason code (0x00 normal disconnection).
    pub reason: ReasonCode,
    /// Properties (MQTT 5): Session Expiry Interval, Reason String, Server Reference, ...
    pub properties: Props,
}

impl Disconnect {
    /// A DISCONNECT with the given reason and no properties.
    pub fn new(reason: crate::ReasonCode) -> Disconnect {
        Disconnect {
            reason,
            properties: Props::new(),
        }
    }
}

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::properties_codec::{
    check_properties, decode_properties, properties_block_len, put_properties, PropertyContext,
};
use crate::{DecodeError, EncodeError, ProtocolVersion};

/// DISCONNECT reason codes allowed by MQTT 5.0 §3.14.2.1.
pub(crate) const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

impl Disconnect {
    pub(crate) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Disconnect, DecodeError> {
        let mut d = Disconnect::default();
        if version.is_v5() && r.remaining() > 0 {
            let code = r.u8()?;
            if !DISCONNECT_CODES.contains(&code) {
                return Err(DecodeError::Malformed("invalid DISCONNECT reason code"));
            }
            d.reason = ReasonCode(code);
            if r.remaining() > 0 {
                d.properties = decode_properties(r, PropertyContext::Disconnect)?.into();
            }
        }
        r.finish()?;
        Ok(d)
    }

    pub(crate) fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        if version.is_v5() {
            check_properties(&self.properties)?;
        }
        Ok(())
    }

    /// MQTT 5 sends nothing for a normal disconnect without properties; otherwise
    /// the reason code and the property block (length 0 if empty: the shorter
    /// legal form is not understood by every client).
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() || (self.reason == ReasonCode::SUCCESS && self.properties.is_empty()) {
            0
        } else {
            1 + properties_block_len(&self.properties)
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        if self.body_len(version) > 0 {
            out.put_u8(self.reason.0);
            put_properties(out, &self.properties);
        }
    }
}
