//! AUTH (MQTT 5 only).

use crate::{Props, ReasonCode};

/// A decoded AUTH packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub reason: ReasonCode,
    /// Properties: Authentication Method and Data, Reason String, user properties.
    pub properties: Props,
}

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::properties_codec::{
    check_properties, decode_properties, properties_block_len, put_properties, PropertyContext,
};
use crate::{DecodeError, EncodeError};

impl Auth {
    pub(crate) fn decode(r: &mut Reader) -> Result<Auth, DecodeError> {
        let mut a = Auth::default();
        if r.remaining() > 0 {
            let code = r.u8()?;
            if !matches!(code, 0x00 | 0x18 | 0x19) {
                return Err(DecodeError::Malformed("invalid AUTH reason code"));
            }
            a.reason = ReasonCode(code);
            if r.remaining() > 0 {
                a.properties = decode_properties(r, PropertyContext::Auth)?.into();
            }
        }
        r.finish()?;
        Ok(a)
    }

    pub(crate) fn check(&self) -> Result<(), EncodeError> {
        check_properties(&self.properties)
    }

    pub(crate) fn body_len(&self) -> usize {
        if self.reason == ReasonCode::SUCCESS && self.properties.is_empty() {
            0
        } else {
            1 + properties_block_len(&self.properties)
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        if self.body_len() > 0 {
            out.put_u8(self.reason.0);
            put_properties(out, &self.properties);
        }
    }
}
