//! UNSUBSCRIBE and UNSUBACK.

use crate::{Properties, Props, ReasonCode};

/// A decoded UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    /// Packet identifier (never 0).
    pub packet_id: u16,
    /// Properties (MQTT 5): user properties.
    pub properties: Props,
    /// The filters to remove; never empty on the wire.
    pub filters: Vec<String>,
}

/// A decoded UNSUBACK packet. On 3.1/3.1.1 `reasons` is empty (no payload).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE being answered.
    pub packet_id: u16,
    /// Properties (MQTT 5).
    pub properties: Props,
    /// One code per filter (MQTT 5 only).
    pub reasons: Vec<ReasonCode>,
}

use bytes::{BufMut, BytesMut};

use crate::codec::{check_field, put_string, string_len, Reader};
use crate::properties_codec::{
    check_properties, decode_properties, properties_block_len, put_properties, PropertyContext,
};
use crate::{DecodeError, EncodeError, ProtocolVersion};

/// UNSUBACK reason codes allowed by MQTT 5.0 §3.11.3.
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

impl Unsubscribe {
    pub(crate) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Unsubscribe, DecodeError> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(DecodeError::Malformed("packet identifier 0"));
        }
        let properties = if version.is_v5() {
            decode_properties(r, PropertyContext::Unsubscribe)?
        } else {
            Properties::default()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            filters.push(r.string()?);
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("UNSUBSCRIBE with no topic filter"));
        }
        Ok(Unsubscribe {
            packet_id,
            properties: properties.into(),
            filters,
        })
    }

    pub(crate) fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        if self.packet_id == 0 {
            return Err(EncodeError::Invalid("packet identifier 0"));
        }
        if self.filters.is_empty() {
            return Err(EncodeError::Invalid("UNSUBSCRIBE with no topic filter"));
        }
        for f in &self.filters {
            check_field("topic filter", f.len())?;
        }
        if version.is_v5() {
            check_properties(&self.properties)?;
        }
        Ok(())
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + self.filters.iter().map(|f| string_len(f)).sum::<usize>()
            + if version.is_v5() {
                properties_block_len(&self.properties)
            } else {
                0
            }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id);
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
        for f in &self.filters {
            put_string(out, f);
        }
    }
}

impl UnsubAck {
    pub(crate) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<UnsubAck, DecodeError> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(DecodeError::Malformed("packet identifier 0"));
        }
        let mut ack = UnsubAck {
            packet_id,
            ..UnsubAck::default()
        };
        if version.is_v5() {
            ack.properties = decode_properties(r, PropertyContext::UnsubAck)?.into();
            while r.remaining() > 0 {
                let code = r.u8()?;
                if !UNSUBACK_CODES.contains(&code) {
                    return Err(DecodeError::Malformed("invalid UNSUBACK reason code"));
                }
                ack.reasons.push(ReasonCode(code));
            }
            if ack.reasons.is_empty() {
                return Err(DecodeError::Malformed("UNSUBACK with no reason code"));
            }
        }
        r.finish()?;
        Ok(ack)
    }

    pub(crate) fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        if self.packet_id == 0 {
            return Err(EncodeError::Invalid("packet identifier 0"));
        }
        if version.is_v5() {
            check_properties(&self.properties)?;
        }
        Ok(())
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            properties_block_len(&self.properties) + self.reasons.len()
        } else {
            0
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id);
        if version.is_v5() {
            put_properties(out, &self.properties);
            for r in &self.reasons {
                out.put_u8(r.0);
            }
        }
    }
}
