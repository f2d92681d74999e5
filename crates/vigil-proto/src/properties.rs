//! MQTT 5 properties: one struct holding every property, so that every packet
//! shares one property codec. Which properties a packet may carry is checked by
//! the codec against the spec's table; on 3.1/3.1.1 the struct stays empty.

use bytes::Bytes;

/// Every MQTT 5 property. Fields are `None`/empty when absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01 Payload Format Indicator (0 = bytes, 1 = UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<String>,
    /// 0x08 Response Topic.
    pub response_topic: Option<String>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier(s): several on a PUBLISH, at most one on SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_identifier: Option<String>,
    /// 0x13 Server Keep Alive, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<String>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information (0 or 1).
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information (0 or 1).
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information.
    pub response_information: Option<String>,
    /// 0x1C Server Reference.
    pub server_reference: Option<String>,
    /// 0x1F Reason String.
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum (never 0).
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias (never 0).
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS (0 or 1).
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available (0 or 1).
    pub retain_available: Option<u8>,
    /// 0x26 User Property pairs, in order; may repeat.
    pub user_properties: Vec<(String, String)>,
    /// 0x27 Maximum Packet Size (never 0).
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available (0 or 1).
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifier Available (0 or 1).
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A Shared Subscription Available (0 or 1).
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}
