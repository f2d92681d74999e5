//! AUTH (MQTT 5 only).

use crate::{Properties, ReasonCode};

/// A decoded AUTH packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub reason: ReasonCode,
    /// Properties: Authentication Method and Data, Reason String, user properties.
    pub properties: Properties,
}
