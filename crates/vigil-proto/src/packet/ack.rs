//! PUBACK, PUBREC, PUBREL and PUBCOMP: the four acknowledgements of QoS 1 and 2.

use crate::{Properties, ReasonCode};

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
    pub properties: Properties,
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
