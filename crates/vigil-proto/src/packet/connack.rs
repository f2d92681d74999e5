//! CONNACK: the server's answer to CONNECT.

use crate::{Properties, Props, ReasonCode};

/// A decoded CONNACK packet. On 3.1/3.1.1 the one-byte return code is mapped
/// to and from the MQTT 5 reason code (1 ↔ 0x84, 2 ↔ 0x85, 3 ↔ 0x88, 4 ↔ 0x86, 5 ↔ 0x87).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Connect reason code (0x00 on success).
    pub reason: ReasonCode,
    /// CONNACK properties (MQTT 5).
    pub properties: Props,
}

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::properties_codec::{
    check_properties, decode_properties, properties_block_len, put_properties, PropertyContext,
};
use crate::{DecodeError, EncodeError, ProtocolVersion};

/// CONNACK reason codes allowed by MQTT 5.0 table 3-1.
const V5_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

/// The 3.1/3.1.1 return code for a reason code. Codes 3.1.1 cannot express
/// become 3 (server unavailable), the closest generic refusal it has.
fn v3_return_code(reason: ReasonCode) -> u8 {
    match reason.0 {
        0x00 => 0,
        0x84 => 1,
        0x85 => 2,
        0x86 => 4,
        0x87 | 0x8A => 5,
        _ => 3,
    }
}

impl ConnAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::Malformed("CONNACK reserved flags are set"));
        }
        let code = r.u8()?;
        let reason = if version.is_v5() {
            if !V5_CODES.contains(&code) {
                return Err(DecodeError::Malformed("invalid CONNACK reason code"));
            }
            ReasonCode(code)
        } else {
            match code {
                0 => ReasonCode::SUCCESS,
                1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                3 => ReasonCode::SERVER_UNAVAILABLE,
                4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                5 => ReasonCode::NOT_AUTHORIZED,
                _ => return Err(DecodeError::Malformed("invalid CONNACK return code")),
            }
        };
        let session_present = flags & 0x01 != 0;
        if session_present && reason.is_error() {
            return Err(DecodeError::Protocol(
                "session present set on a refused connection",
            ));
        }
        let properties = if version.is_v5() {
            decode_properties(r, PropertyContext::ConnAck)?
        } else {
            Properties::default()
        };
        r.finish()?;
        Ok(ConnAck {
            session_present,
            reason,
            properties: properties.into(),
        })
    }

    pub(crate) fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        if version.is_v5() {
            check_properties(&self.properties)?;
        }
        Ok(())
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            properties_block_len(&self.properties)
        } else {
            0
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u8(u8::from(self.session_present && !self.reason.is_error()));
        if version.is_v5() {
            out.put_u8(self.reason.0);
            put_properties(out, &self.properties);
        } else {
            out.put_u8(v3_return_code(self.reason));
        }
    }
}
