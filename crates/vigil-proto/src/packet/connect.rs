//! CONNECT: the first packet a client sends.

use bytes::Bytes;

use crate::{Properties, ProtocolVersion, QoS};

/// A decoded CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connect {
    /// Protocol name and level (`MQIsdp`/3, `MQTT`/4, `MQTT`/5).
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1/3.1.1) or Clean Start (5).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// CONNECT properties (MQTT 5).
    pub properties: Properties,
    /// Client Identifier; may be empty (the server then assigns one).
    pub client_id: String,
    /// The will message, if the Will Flag is set.
    pub will: Option<Will>,
    /// User Name, if its flag is set.
    pub username: Option<String>,
    /// Password, if its flag is set.
    pub password: Option<Bytes>,
}

/// The will message carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Will {
    /// Will Topic (a topic name: no wildcards).
    pub topic: String,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (MQTT 5): delay, expiry, content type, ...
    pub properties: Properties,
}

use bytes::{BufMut, BytesMut};

use crate::codec::{binary_len, check_field, put_binary, put_string, string_len, Reader};
use crate::properties_codec::{
    check_properties, decode_properties, properties_block_len, put_properties, PropertyContext,
};
use crate::{DecodeError, EncodeError};

impl Connect {
    /// Decodes a CONNECT body; the protocol version comes from the packet itself.
    pub(crate) fn decode(r: &mut Reader) -> Result<Connect, DecodeError> {
        let name = r.string()?;
        let level = r.u8()?;
        let protocol = match (name.as_str(), level) {
            ("MQIsdp", 3) => ProtocolVersion::V3_1,
            ("MQTT", 4) => ProtocolVersion::V3_1_1,
            ("MQTT", 5) => ProtocolVersion::V5,
            _ => return Err(DecodeError::UnsupportedProtocol { name, level }),
        };
        let flags = r.u8()?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::Malformed("CONNECT reserved flag is set"));
        }
        let has_will = flags & 0x04 != 0;
        let will_qos =
            QoS::from_u8((flags >> 3) & 0x03).ok_or(DecodeError::Malformed("will QoS 3"))?;
        let will_retain = flags & 0x20 != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::Malformed(
                "will QoS or retain set without the will flag",
            ));
        }
        let has_password = flags & 0x40 != 0;
        let has_username = flags & 0x80 != 0;
        if has_password && !has_username && !protocol.is_v5() {
            return Err(DecodeError::Malformed(
                "password flag set without user name",
            ));
        }
        let keep_alive = r.u16()?;
        let properties = if protocol.is_v5() {
            decode_properties(r, PropertyContext::Connect)?
        } else {
            Properties::default()
        };
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if protocol.is_v5() {
                decode_properties(r, PropertyContext::Will)?
            } else {
                Properties::default()
            };
            let topic = r.string()?;
            crate::topic::validate_topic_name(&topic).map_err(|e| DecodeError::InvalidTopic {
                topic: topic.clone(),
                why: e.rule(),
            })?;
            let payload = r.binary()?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            protocol,
            clean_start: flags & 0x02 != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn protocol_name(&self) -> &'static str {
        match self.protocol {
            ProtocolVersion::V3_1 => "MQIsdp",
            _ => "MQTT",
        }
    }

    pub(crate) fn check(&self) -> Result<(), EncodeError> {
        check_field("client identifier", self.client_id.len())?;
        if self.protocol.is_v5() {
            check_properties(&self.properties)?;
        }
        if let Some(w) = &self.will {
            check_field("will topic", w.topic.len())?;
            check_field("will payload", w.payload.len())?;
            if self.protocol.is_v5() {
                check_properties(&w.properties)?;
            }
        }
        if let Some(u) = &self.username {
            check_field("user name", u.len())?;
        }
        if let Some(p) = &self.password {
            check_field("password", p.len())?;
        }
        if self.password.is_some() && self.username.is_none() && !self.protocol.is_v5() {
            return Err(EncodeError::Invalid(
                "password without user name before MQTT 5",
            ));
        }
        Ok(())
    }

    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.protocol.is_v5();
        let mut n = string_len(self.protocol_name()) + 1 + 1 + 2;
        if v5 {
            n += properties_block_len(&self.properties);
        }
        n += string_len(&self.client_id);
        if let Some(w) = &self.will {
            if v5 {
                n += properties_block_len(&w.properties);
            }
            n += string_len(&w.topic) + binary_len(&w.payload);
        }
        n += self.username.as_deref().map_or(0, string_len);
        n += self.password.as_deref().map_or(0, binary_len);
        n
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        put_string(out, self.protocol_name());
        out.put_u8(self.protocol.level());
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos.as_u8() << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        out.put_u8(flags);
        out.put_u16(self.keep_alive);
        let v5 = self.protocol.is_v5();
        if v5 {
            put_properties(out, &self.properties);
        }
        put_string(out, &self.client_id);
        if let Some(w) = &self.will {
            if v5 {
                put_properties(out, &w.properties);
            }
            put_string(out, &w.topic);
            put_binary(out, &w.payload);
        }
        if let Some(u) = &self.username {
            put_string(out, u);
        }
        if let Some(p) = &self.password {
            put_binary(out, p);
        }
    }
}
