//! The application's message: what it publishes and what it receives. Not the
//! wire `Publish`: no packet identifier, no DUP flag, nothing the session owns.

use bytes::Bytes;
use vigil_proto::{Properties, Publish, QoS};

/// A message to publish, or one received. Build it with `Message::new` and the
/// chained setters (`qos`, `retain`, the MQTT 5 properties); non-exhaustive,
/// so fields added later are not breaking changes.
///
/// ```
/// use vigil_client::{Message, QoS};
/// let m = Message::new("sensors/t1", "21.5")
///     .qos(QoS::AtLeastOnce)
///     .retain(true)
///     .user_property("unit", "°C");
/// assert_eq!(m.topic, "sensors/t1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS (received: the QoS the broker delivered at).
    pub qos: QoS,
    /// Retain flag (received: set when the message came from the retained store).
    pub retain: bool,
    /// MQTT 5 properties (user properties, expiry, content type, response
    /// topic, correlation data, subscription identifiers); ignored at 3.1.1.
    pub properties: Properties,
}

impl Message {
    /// A QoS 0, non-retained message.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        }
    }

    /// Sets the QoS.
    pub fn qos(mut self, qos: QoS) -> Message {
        self.qos = qos;
        self
    }

    /// Sets the retain flag.
    pub fn retain(mut self, retain: bool) -> Message {
        self.retain = retain;
        self
    }

    /// Replaces all MQTT 5 properties.
    pub fn properties(mut self, properties: Properties) -> Message {
        self.properties = properties;
        self
    }

    /// Adds an MQTT 5 user property.
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Message {
        self.properties
            .user_properties
            .push((key.into(), value.into()));
        self
    }

    /// MQTT 5 Message Expiry Interval, seconds.
    pub fn message_expiry(mut self, seconds: u32) -> Message {
        self.properties.message_expiry_interval = Some(seconds);
        self
    }

    /// MQTT 5 Content Type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Message {
        self.properties.content_type = Some(content_type.into());
        self
    }

    /// MQTT 5 Response Topic.
    pub fn response_topic(mut self, topic: impl Into<String>) -> Message {
        self.properties.response_topic = Some(topic.into());
        self
    }

    /// MQTT 5 Correlation Data.
    pub fn correlation_data(mut self, data: impl Into<Bytes>) -> Message {
        self.properties.correlation_data = Some(data.into());
        self
    }

    pub(crate) fn into_publish(self) -> Publish {
        Publish {
            topic: self.topic.into(),
            payload: self.payload,
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.into(),
            ..Publish::default()
        }
    }

    pub(crate) fn from_publish(p: Publish) -> Message {
        Message {
            topic: p.topic.into(),
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_fields_stay_out_of_the_application_type() {
        let p = Publish {
            dup: true,
            packet_id: 7,
            topic: "a".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            ..Publish::default()
        };
        let m = Message::from_publish(p);
        assert_eq!(m, Message::new("a", "x").qos(QoS::AtLeastOnce));
        let back = m.into_publish();
        assert_eq!((back.dup, back.packet_id), (false, 0));
    }
}
