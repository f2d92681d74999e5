//! DISCONNECT.

use crate::{Properties, ReasonCode};

/// A decoded DISCONNECT packet. On 3.1/3.1.1 it has no body: reason is 0x00.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Disconnect reason code (0x00 normal disconnection).
    pub reason: ReasonCode,
    /// Properties (MQTT 5): Session Expiry Interval, Reason String, Server Reference, ...
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with the given reason and no properties.
    pub fn new(reason: crate::ReasonCode) -> Disconnect {
        Disconnect {
            reason,
            properties: Properties::default(),
        }
    }
}
