//! SUBSCRIBE and SUBACK.

use crate::{Properties, Props, QoS, ReasonCode};

/// A decoded SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// Packet identifier (never 0).
    pub packet_id: u16,
    /// Properties (MQTT 5): Subscription Identifier, user properties.
    pub properties: Props,
    /// The requested filters with their options; never empty on the wire.
    pub filters: Vec<Subscription>,
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Topic filter, possibly `$share/{group}/{filter}`.
    pub filter: String,
    /// Subscription options byte.
    pub options: SubscriptionOptions,
}

/// The subscription options byte (only `qos` exists on 3.1/3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: do not deliver this client's own publications back to it.
    pub no_local: bool,
    /// Retain As Published: keep the RETAIN flag as the publisher set it.
    pub retain_as_published: bool,
    /// When retained messages are sent on subscribe.
    pub retain_handling: RetainHandling,
}

/// Retain Handling option of a subscription (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at every subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: never send retained messages at subscribe.
    DoNotSend = 2,
}

/// A decoded SUBACK packet. On 3.1/3.1.1 the return codes 0, 1, 2 and 0x80
/// map to the same reason code values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE being answered.
    pub packet_id: u16,
    /// Properties (MQTT 5).
    pub properties: Props,
    /// One code per requested filter, in order.
    pub reasons: Vec<ReasonCode>,
}

use bytes::{BufMut, BytesMut};

use crate::codec::{check_field, put_string, string_len, Reader};
use crate::properties_codec::{
    check_properties, decode_properties, properties_block_len, put_properties, PropertyContext,
};
use crate::{DecodeError, EncodeError, ProtocolVersion};

/// SUBACK reason codes allowed by MQTT 5.0 §3.9.3.
const SUBACK_V5_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];

impl SubscriptionOptions {
    /// Reads the options byte as `version` defines it.
    pub fn decode(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(DecodeError::Malformed(
                "subscription options reserved bits set",
            ));
        }
        let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::Malformed("retain handling 3")),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    /// The options byte as `version` defines it.
    pub fn encode(&self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos.as_u8();
        if version.is_v5() {
            b |= u8::from(self.no_local) << 2;
            b |= u8::from(self.retain_as_published) << 3;
            b |= (self.retain_handling as u8) << 4;
        }
        b
    }
}

impl Subscribe {
    /// Decodes a SUBSCRIBE. Filter syntax is not judged here: the server
    /// answers an invalid filter with SUBACK 0x8F for that filter alone.
    pub(crate) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Subscribe, DecodeError> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(DecodeError::Malformed("packet identifier 0"));
        }
        let properties = if version.is_v5() {
            decode_properties(r, PropertyContext::Subscribe)?
        } else {
            Properties::default()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string()?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            filters.push(Subscription { filter, options });
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("SUBSCRIBE with no topic filter"));
        }
        Ok(Subscribe {
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
            return Err(EncodeError::Invalid("SUBSCRIBE with no topic filter"));
        }
        for s in &self.filters {
            check_field("topic filter", s.filter.len())?;
        }
        if version.is_v5() {
            check_properties(&self.properties)?;
        }
        Ok(())
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut n = 2 + self
            .filters
            .iter()
            .map(|s| string_len(&s.filter) + 1)
            .sum::<usize>();
        if version.is_v5() {
            n += properties_block_len(&self.properties);
        }
        n
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id);
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
        for s in &self.filters {
            put_string(out, &s.filter);
            out.put_u8(s.options.encode(version));
        }
    }
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(DecodeError::Malformed("packet identifier 0"));
        }
        let properties = if version.is_v5() {
            decode_properties(r, PropertyContext::SubAck)?
        } else {
            Properties::default()
        };
        let mut reasons = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            let code = r.u8()?;
            let valid = if version.is_v5() {
                SUBACK_V5_CODES.contains(&code)
            } else {
                matches!(code, 0x00 | 0x01 | 0x02 | 0x80)
            };
            if !valid {
                return Err(DecodeError::Malformed("invalid SUBACK return code"));
            }
            reasons.push(ReasonCode(code));
        }
        if reasons.is_empty() {
            return Err(DecodeError::Malformed("SUBACK with no return code"));
        }
        Ok(SubAck {
            packet_id,
            properties: properties.into(),
            reasons,
        })
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
        2 + self.reasons.len()
            + if version.is_v5() {
                properties_block_len(&self.properties)
            } else {
                0
            }
    }

    /// Before MQTT 5 every failure is sent as 0x80, the only failure code 3.1.1 has.
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id);
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
        for r in &self.reasons {
            out.put_u8(if !version.is_v5() && r.is_error() {
                0x80
            } else {
                r.0
            });
        }
    }
}
