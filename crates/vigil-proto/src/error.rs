//! Codec errors. Every decode error maps to the reason code the receiving side
//! should answer with before closing (see `DecodeError::reason_code`).

use thiserror::Error;

use crate::ReasonCode;

/// Why bytes from a peer could not be decoded into a packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The Remaining Length announces a packet larger than we accept.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total packet size announced by the fixed header.
        size: u64,
        /// The configured limit.
        max: u32,
    },
    /// Anything that breaks the packet grammar; the string names the field.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well-formed bytes that break a protocol rule; the string names the rule.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// CONNECT with a protocol name/level we do not speak.
    #[error("unsupported protocol: name {name:?}, level {level}")]
    UnsupportedProtocol {
        /// Protocol name from CONNECT.
        name: String,
        /// Protocol level from CONNECT.
        level: u8,
    },
    /// A topic name or filter that breaks the topic rules.
    #[error("invalid topic {topic:?}: {why}")]
    InvalidTopic {
        /// The offending topic.
        topic: String,
        /// Which rule it breaks.
        why: &'static str,
    },
}

impl DecodeError {
    /// The MQTT 5 reason code to send (in CONNACK or DISCONNECT) before closing.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::InvalidTopic { .. } => ReasonCode::TOPIC_NAME_INVALID,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes.
    #[error("field {0} is longer than 65535 bytes")]
    FieldTooLong(&'static str),
    /// The whole packet is longer than the 268,435,455-byte MQTT limit.
    #[error("packet exceeds the MQTT size limit")]
    PacketTooLarge,
    /// The packet or field does not exist in the target protocol version (e.g. AUTH on 3.1.1).
    #[error("{0} is not part of this protocol version")]
    NotInVersion(&'static str),
    /// A value the spec forbids (packet id 0 at QoS > 0, empty filter list, ...).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}
