//! SUBSCRIBE and SUBACK.

use crate::{Properties, QoS, ReasonCode};

/// A decoded SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// Packet identifier (never 0).
    pub packet_id: u16,
    /// Properties (MQTT 5): Subscription Identifier, user properties.
    pub properties: Properties,
    /// The requested filters with their options; never empty on the wire.
    pub filters: Vec<Subscription>,
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Topic filter, possibly `$share/{group}/{filter}`.
    pub filter: String,
    /// Subscription options byte.
    pub options: SubscriptionOptions,
}

/// The subscription options byte (only `qos` exists on 3.1/3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: do not deliver this client's own publications back to it.
    pub no_local: bool,
    /// Retain As Published: keep the RETAIN flag as the publisher set it.
    pub retain_as_published: bool,
    /// When retained messages are sent on subscribe.
    pub retain_handling: RetainHandling,
}

/// Retain Handling option of a subscription (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at every subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: never send retained messages at subscribe.
    DoNotSend = 2,
}

/// A decoded SUBACK packet. On 3.1/3.1.1 the return codes 0, 1, 2 and 0x80
/// map to the same reason code values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE being answered.
    pub packet_id: u16,
    /// Properties (MQTT 5).
    pub properties: Properties,
    /// One code per requested filter, in order.
    pub reasons: Vec<ReasonCode>,
}
