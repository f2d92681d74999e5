//! PUBLISH: an application message, in either direction.

use bytes::Bytes;

use crate::{Properties, QoS};

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
    pub topic: String,
    /// Packet identifier; present (non-zero) exactly when `qos` > 0, and 0 at QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (MQTT 5).
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

use bytes::{BufMut, BytesMut};

use crate::codec::{check_field, put_string, string_len, Reader};
use crate::properties_codec::{
    check_properties, decode_properties, properties_block_len, put_properties, PropertyContext,
};
use crate::{DecodeError, EncodeError, ProtocolVersion};

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
            topic,
            packet_id,
            properties,
            payload,
        })
    }

    /// The fixed-header flags: DUP, QoS, RETAIN.
    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | (self.qos.as_u8() << 1) | u8::from(self.retain)
    }

    pub(crate) fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        check_field("topic", self.topic.len())?;
        if self.qos != QoS::AtMostOnce && self.packet_id == 0 {
            return Err(EncodeError::Invalid("packet identifier 0 at QoS 1 or 2"));
        }
        if version.is_v5() {
            check_properties(&self.properties)?;
        }
        Ok(())
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut n = string_len(&self.topic) + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if version.is_v5() {
            n += properties_block_len(&self.properties);
        }
        n
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        put_string(out, &self.topic);
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.packet_id);
        }
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
        out.put_slice(&self.payload);
    }
}
