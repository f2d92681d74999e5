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
