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
