//! An application message as the broker routes it, and one delivery of it to
//! one subscriber. The message is shared (`Arc`) by every delivery: the payload
//! is never copied per subscriber.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::{EncodeError, Packet, Properties, ProtocolVersion, Publish, PublishView, QoS};

/// A published message after the broker accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name (topic aliases already resolved).
    pub topic: String,
    /// Payload, shared.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties forwarded to subscribers (no topic alias, no subscription ids).
    /// None when there are none: most messages carry no properties, and an
    /// empty `Properties` would cost every queued message ~350 bytes.
    pub properties: Option<Box<Properties>>,
    /// When it stops being deliverable (Message Expiry Interval).
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Builds the routed message from an inbound PUBLISH received at `now`.
    pub fn from_publish(publish: Publish, now: Instant) -> Message {
        let mut properties = publish.properties.into_inner();
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        Message {
            topic: publish.topic.into(),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: Message::boxed(properties),
            expires_at,
        }
    }

    /// Properties as stored in a message: None when all are absent.
    pub fn boxed(properties: Properties) -> Option<Box<Properties>> {
        (properties != Properties::default()).then(|| Box::new(properties))
    }

    /// The message's properties (empty when it has none).
    pub fn properties(&self) -> Properties {
        self.properties.as_deref().cloned().unwrap_or_default()
    }

    /// True once the Message Expiry Interval has run out.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Bytes this message accounts for in queue bounds.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}

/// A server topic alias on one delivery (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAliasUse {
    /// Sent with the topic name: the client learns (or rebinds) the alias.
    Set(u16),
    /// Sent with an empty topic name: the client knows the alias.
    Use(u16),
}

impl TopicAliasUse {
    /// The alias number.
    pub fn alias(self) -> u16 {
        match self {
            TopicAliasUse::Set(a) | TopicAliasUse::Use(a) => a,
        }
    }

    /// Puts the alias on `publish` (and empties its topic for `Use`).
    pub fn apply(self, publish: &mut Publish) {
        publish.properties.topic_alias = Some(self.alias());
        if let TopicAliasUse::Use(_) = self {
            publish.topic = Box::default();
        }
    }
}

/// One message on its way to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The shared message.
    pub message: Arc<Message>,
    /// Delivery QoS: min(published QoS, granted QoS).
    pub qos: QoS,
    /// RETAIN flag on this delivery.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5).
    pub subscription_ids: Vec<u32>,
    /// Its key in the session's durable queue, when the broker stored it: the
    /// connection reports its progress (sent, released, done) under this key.
    pub persisted: Option<NonZeroU64>,
    /// Routed through a shared subscription: if the subscriber's session
    /// ends first, the broker hands it to another member of the group.
    pub shared: bool,
}

impl Outgoing {
    /// The PUBLISH for this delivery, with the remaining expiry interval
    /// written into the forwarded Message Expiry Interval.
    pub fn to_publish(&self, packet_id: u16, dup: bool, now: Instant) -> Publish {
        let mut properties = self.message.properties();
        if let Some(at) = self.message.expires_at {
            let left = at.saturating_duration_since(now);
            // Round up so a message with 0.4 s left is not sent as already expired.
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            properties.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
        }
        properties.subscription_identifiers = self.subscription_ids.clone();
        Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.message.topic.as_str().into(),
            packet_id,
            properties: properties.into(),
            payload: self.message.payload.clone(),
        }
    }

    /// Appends this delivery's PUBLISH to `out`, with the server's topic
    /// `alias` if any. Written straight from the shared message unless the
    /// delivery changes its properties (remaining expiry, subscription
    /// identifiers); the bytes are the same either way.
    pub fn encode(
        &self,
        packet_id: u16,
        dup: bool,
        now: Instant,
        version: ProtocolVersion,
        alias: Option<TopicAliasUse>,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        match self.view(packet_id, dup) {
            Some(mut view) => {
                if let Some(alias) = alias {
                    view.topic_alias = Some(alias.alias());
                    if let TopicAliasUse::Use(_) = alias {
                        view.topic = "";
                    }
                }
                view.encode(version, out)
            }
            None => {
                let mut publish = self.to_publish(packet_id, dup, now);
                if let Some(alias) = alias {
                    alias.apply(&mut publish);
                }
                Packet::Publish(publish).encode(version, out)
            }
        }
    }

    /// Bytes this delivery's PUBLISH takes on the wire.
    pub fn encoded_len(
        &self,
        packet_id: u16,
        dup: bool,
        now: Instant,
        version: ProtocolVersion,
    ) -> usize {
        match self.view(packet_id, dup) {
            Some(view) => view.encoded_len(version),
            None => Packet::Publish(self.to_publish(packet_id, dup, now)).encoded_len(version),
        }
    }

    /// The PUBLISH as borrowed parts, when no property differs per delivery.
    fn view(&self, packet_id: u16, dup: bool) -> Option<PublishView<'_>> {
        if self.message.expires_at.is_some() || !self.subscription_ids.is_empty() {
            return None;
        }
        Some(PublishView {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.message.topic,
            packet_id,
            properties: self.message.properties.as_deref(),
            topic_alias: None,
            payload: &self.message.payload,
        })
    }
}
