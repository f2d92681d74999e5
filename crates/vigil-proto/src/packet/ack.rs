//! PUBACK, PUBREC, PUBREL and PUBCOMP: the four acknowledgements of QoS 1 and 2.

use crate::{Props, ReasonCode};

/// The body shared by PUBACK, PUBREC, PUBREL and PUBCOMP. On 3.1/3.1.1 only
/// `packet_id` goes on the wire; in MQTT 5 reason and properties are omitted
/// when they are Success and empty (the short forms the spec allows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// The acknowledged packet identifier (never 0).
    pub packet_id: u16,
    /// Reason code (MQTT 5); 0x00 on success.
    pub reason: ReasonCode,
    /// Properties (MQTT 5): reason string, user properties.
    pub properties: Props,
}

impl Ack {
    /// A successful acknowledgement of `packet_id` with no properties.
    pub fn new(packet_id: u16) -> Ack {
        Ack {
            packet_id,
            ..Ack::default()
        }
    }
}

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::properties_codec::{
    check_properties, decode_properties, properties_block_len, put_properties, PropertyContext,
};
use crate::{DecodeError, EncodeError, ProtocolVersion};

/// Reason codes of PUBACK and PUBREC (MQTT 5.0 §3.4.2.1, §3.5.2.1).
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// Reason codes of PUBREL and PUBCOMP (MQTT 5.0 §3.6.2.1, §3.7.2.1).
const PUBREL_CODES: &[u8] = &[0x00, 0x92];

impl Ack {
    /// Decodes any of the four acks; `is_rel_or_comp` selects the reason-code table.
    pub(crate) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
        is_rel_or_comp: bool,
    ) -> Result<Ack, DecodeError> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(DecodeError::Malformed("packet identifier 0"));
        }
        let mut ack = Ack::new(packet_id);
        if version.is_v5() && r.remaining() > 0 {
            let code = r.u8()?;
            let table = if is_rel_or_comp {
                PUBREL_CODES
            } else {
                PUBACK_CODES
            };
            if !table.contains(&code) {
                return Err(DecodeError::Malformed("invalid reason code for this ack"));
            }
            ack.reason = ReasonCode(code);
            if r.remaining() > 0 {
                ack.properties = decode_properties(r, PropertyContext::Ack)?.into();
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

    /// Which optional parts go on the wire: MQTT 5 lets a successful ack with no
    /// properties omit both. When the reason code is sent, the property length
    /// is sent too (0 if empty): the spec allows omitting it, but some clients
    /// (rumqttc 0.24) cannot parse that form.
    fn short_form(&self, version: ProtocolVersion) -> (bool, bool) {
        let long =
            version.is_v5() && (self.reason != ReasonCode::SUCCESS || !self.properties.is_empty());
        (long, long)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let (reason, props) = self.short_form(version);
        2 + usize::from(reason)
            + if props {
                properties_block_len(&self.properties)
            } else {
                0
            }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id);
        let (reason, props) = self.short_form(version);
        if reason {
            out.put_u8(self.reason.0);
        }
        if props {
            put_properties(out, &self.properties);
        }
    }
}
