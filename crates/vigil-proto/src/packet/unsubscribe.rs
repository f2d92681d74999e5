//! UNSUBSCRIBE and UNSUBACK.

use crate::{Properties, ReasonCode};

/// A decoded UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    /// Packet identifier (never 0).
    pub packet_id: u16,
    /// Properties (MQTT 5): user properties.
    pub properties: Properties,
    /// The filters to remove; never empty on the wire.
    pub filters: Vec<String>,
}

/// A decoded UNSUBACK packet. On 3.1/3.1.1 `reasons` is empty (no payload).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE being answered.
    pub packet_id: u16,
    /// Properties (MQTT 5).
    pub properties: Properties,
    /// One code per filter (MQTT 5 only).
    pub reasons: Vec<ReasonCode>,
}
