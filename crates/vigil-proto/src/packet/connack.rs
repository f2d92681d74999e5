//! CONNACK: the server's answer to CONNECT.

use crate::{Properties, ReasonCode};

/// A decoded CONNACK packet. On 3.1/3.1.1 the one-byte return code is mapped
/// to and from the MQTT 5 reason code (1 ↔ 0x84, 2 ↔ 0x85, 3 ↔ 0x88, 4 ↔ 0x86, 5 ↔ 0x87).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Connect reason code (0x00 on success).
    pub reason: ReasonCode,
    /// CONNACK properties (MQTT 5).
    pub properties: Properties,
}
