//! PUBLISH: an application message, in either direction.

use bytes::Bytes;

use crate::{Properties, Props, QoS};

/// A decoded PUBLISH packet. The payload is `Bytes` so that fan-out to many
/// subscribers shares one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// DUP flag: this is a re-delivery.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name; may be empty in MQTT 5 when a Topic Alias property stands in for it.
    /// A `Box<str>` rather than a `String` (8 bytes less) keeps `Packet` within 64 bytes.
    pub topic: Box<str>,
    /// Packet identifier; present (non-zero) exactly when `qos` > 0, and 0 at QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (MQTT 5).
    pub properties: Props,
    /// Application payload.
    pub payload: Bytes,
}

use bytes::{BufMut, BytesMut};

use super::wire::put_frame;
use crate::codec::{check_field, put_string, put_varint, string_len, varint_len, Reader};
use crate::properties_codec::{
    check_properties, decode_properties, properties_len, put_property_fields, PropertyContext,
};
use crate::{DecodeError, EncodeError, PacketType, ProtocolVersion};

impl Publish {
    /// Decodes a PUBLISH. The payload is a zero-copy slice of the frame.
    pub(crate) fn decode(
        r: &mut Reader,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        let qos =
            QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
        let dup = flags & 0x08 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
        }
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            let id = r.u16()?;
            if id == 0 {
                return Err(DecodeError::Malformed("packet identifier 0"));
            }
            id
        };
        let properties = if version.is_v5() {
            decode_properties(r, PropertyContext::Publish)?
        } else {
            Properties::default()
        };
        if !(topic.is_empty() && properties.topic_alias.is_some()) {
            crate::topic::validate_topic_name(&topic).map_err(|e| DecodeError::InvalidTopic {
                topic: topic.clone(),
                why: e.rule(),
            })?;
        }
        let payload = r.rest();
        Ok(Publish {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic: topic.into_boxed_str(),
            packet_id,
            properties: properties.into(),
            payload,
        })
    }

    /// The same packet as borrowed parts, which is what the codec encodes.
    pub fn view(&self) -> PublishView<'_> {
        PublishView {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            properties: Some(&self.properties),
            topic_alias: None,
            payload: &self.payload,
        }
    }

    pub(crate) fn flags(&self) -> u8 {
        self.view().flags()
    }

    pub(crate) fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        self.view().check(version)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        self.view().body_len(version)
    }

    /// Total bytes the packet takes on the wire for `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        self.view().encoded_len(version)
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        self.view().encode_body(version, out)
    }
}

/// A PUBLISH to encode from borrowed parts. The broker writes each delivery
/// of a shared message through this, so no `Publish` (topic copy, payload
/// reference count, 344-byte property block) is built per subscriber.
#[derive(Debug, Clone, Copy)]
pub struct PublishView<'a> {
    /// DUP flag.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name.
    pub topic: &'a str,
    /// Packet identifier (0 at QoS 0).
    pub packet_id: u16,
    /// Properties (MQTT 5); `None` encodes an empty property block.
    pub properties: Option<&'a Properties>,
    /// A Topic Alias written ahead of `properties` (which then carry none):
    /// the server's alias for this delivery, without copying the message's
    /// properties to add it.
    pub topic_alias: Option<u16>,
    /// Application payload.
    pub payload: &'a [u8],
}

impl PublishView<'_> {
    /// Appends the packet's bytes to `out`. On error nothing is written.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.check(version)?;
        let first_byte = ((PacketType::Publish as u8) << 4) | self.flags();
        put_frame(out, first_byte, self.body_len(version), |out| {
            self.encode_body(version, out)
        })
    }

    /// Total bytes the packet takes on the wire for `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_len(version);
        1 + varint_len(body) + body
    }

    /// The fixed-header flags: DUP, QoS, RETAIN.
    fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | (self.qos.as_u8() << 1) | u8::from(self.retain)
    }

    fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        check_field("topic", self.topic.len())?;
        if let Some(alias) = self.topic_alias {
            if !version.is_v5() {
                return Err(EncodeError::NotInVersion("topic alias"));
            }
            if alias == 0 || self.properties.is_some_and(|p| p.topic_alias.is_some()) {
                return Err(EncodeError::Invalid("topic alias 0, or a second one"));
            }
        }
        if self.qos != QoS::AtMostOnce && self.packet_id == 0 {
            return Err(EncodeError::Invalid("packet identifier 0 at QoS 1 or 2"));
        }
        match self.properties {
            Some(p) if version.is_v5() => check_properties(p),
            _ => Ok(()),
        }
    }

    fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut n = string_len(self.topic) + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if version.is_v5() {
            let inner = self.properties_len();
            n += varint_len(inner) + inner;
        }
        n
    }

    /// The property block's content length (MQTT 5).
    fn properties_len(&self) -> usize {
        self.properties.map_or(0, properties_len) + self.topic_alias.map_or(0, |_| 3)
    }

    fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        put_string(out, self.topic);
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.packet_id);
        }
        if version.is_v5() {
            put_varint(out, self.properties_len());
            if let Some(alias) = self.topic_alias {
                out.put_u8(0x23);
                out.put_u16(alias);
            }
            if let Some(p) = self.properties {
                put_property_fields(out, p);
            }
        }
        out.put_slice(self.payload);
    }
}
