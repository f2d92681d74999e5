//! Topic aliases of one connection, both ways: the client's (resolved in
//! `inbound`), and those the server assigns to what it sends the client (MQTT 5,
//! when the client's CONNECT allows Topic Alias Maximum > 0): the first
//! PUBLISH of a topic carries the topic and an alias, later ones the alias
//! and an empty topic.
//!
//! Replacement is least recently used: fan-out traffic cycles through a
//! working set of topics that drifts over time, and recency follows the
//! drift, while most-frequent would keep yesterday's hot topics aliased
//! forever (and needs counters that never forget). The table holds at most
//! `min(client's maximum, MAX_SERVER_ALIASES)` topics. Both tables live in
//! one box allocated at the first alias either way, so a connection that
//! never uses one pays 8 bytes.

use std::time::Instant;

use crate::message::{Outgoing, TopicAliasUse};
use crate::ProtocolVersion;

/// What decides whether a delivery may carry an alias, copied out of the
/// connection so the table can be borrowed beside its in-flight map.
#[derive(Debug, Clone, Copy)]
pub(super) struct AliasLimits {
    /// The client's Topic Alias Maximum (0 when aliases are off).
    pub(super) client_maximum: u16,
    /// The client's Maximum Packet Size.
    pub(super) max_packet_size: u32,
    /// The connection's protocol version.
    pub(super) version: ProtocolVersion,
}

/// The alias for the delivery of `outgoing` about to be written. A new alias
/// makes the packet at most 5 bytes longer (property 3, property length 1,
/// remaining length 1); it is given only if the client's Maximum Packet
/// Size still holds (a known alias never makes it longer: the topics
/// aliased are longer than the property).
pub(super) fn delivery_alias(
    table: &mut Option<Box<TopicAliases>>,
    limits: AliasLimits,
    outgoing: &Outgoing,
    packet_id: u16,
    dup: bool,
    at: Instant,
) -> Option<TopicAliasUse> {
    let fits = || {
        limits.max_packet_size == u32::MAX
            || outgoing.encoded_len(packet_id, dup, at, limits.version) + 5
                <= limits.max_packet_size as usize
    };
    TopicAliases::alias_for(table, limits.client_maximum, &outgoing.message.topic, fits)
}

/// Aliases one connection uses at most, whatever the client allows: the
/// table is searched linearly on every delivery, and a working set larger
/// than this would mostly churn (each replacement sends the topic again).
pub(super) const MAX_SERVER_ALIASES: u16 = 32;

/// Bytes a Topic Alias property takes (identifier and two-byte value): a
/// topic no longer than this gains nothing from an alias.
const ALIAS_PROPERTY_LEN: usize = 3;

/// A connection's topic aliases, both ways.
#[derive(Debug, Clone, Default)]
pub(super) struct TopicAliases {
    /// The client's aliases: alias `n` at index `n - 1` (at most our
    /// announced maximum).
    pub(super) inbound: Vec<Option<String>>,
    /// Ours, for what we send.
    outbound: OutboundAliases,
}

/// The topics the server aliased for the client: alias `n` is `slots[n - 1]`.
#[derive(Debug, Clone, Default)]
pub(super) struct OutboundAliases {
    slots: Vec<Slot>,
    /// Ticks on every use; a slot's `last_used` orders the slots for eviction.
    clock: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    topic: Box<str>,
    last_used: u32,
}

impl TopicAliases {
    /// The alias for the next PUBLISH to `topic`, if it gets one: `Use` when
    /// the client already knows it, else `Set` (a new alias, or the least
    /// recently used one rebound) when `fits_with_new_alias()` says the
    /// packet stays within the client's Maximum Packet Size with it.
    /// `table` is allocated here if it was not, at its first alias.
    pub(super) fn alias_for(
        table: &mut Option<Box<TopicAliases>>,
        client_maximum: u16,
        topic: &str,
        fits_with_new_alias: impl FnOnce() -> bool,
    ) -> Option<TopicAliasUse> {
        if client_maximum == 0 || topic.len() <= ALIAS_PROPERTY_LEN {
            return None;
        }
        if let Some(t) = table.as_deref_mut() {
            if let Some(alias) = t.outbound.find(topic) {
                return Some(TopicAliasUse::Use(alias));
            }
        }
        if !fits_with_new_alias() {
            return None;
        }
        let t = table.get_or_insert_with(Box::default);
        let limit = client_maximum.min(MAX_SERVER_ALIASES);
        Some(TopicAliasUse::Set(t.outbound.assign(topic, limit)))
    }
}

impl OutboundAliases {
    fn tick(&mut self) -> u32 {
        if self.clock == u32::MAX {
            // Renumber in order rather than let recency wrap around.
            let mut order: Vec<usize> = (0..self.slots.len()).collect();
            order.sort_by_key(|&i| self.slots[i].last_used);
            for (rank, i) in order.into_iter().enumerate() {
                self.slots[i].last_used = rank as u32;
            }
            self.clock = self.slots.len() as u32;
        }
        self.clock += 1;
        self.clock
    }

    fn find(&mut self, topic: &str) -> Option<u16> {
        let i = self.slots.iter().position(|s| &*s.topic == topic)?;
        let now = self.tick();
        self.slots[i].last_used = now;
        Some(i as u16 + 1)
    }

    /// Binds `topic` to a free alias up to `limit`, else to the least
    /// recently used one.
    fn assign(&mut self, topic: &str, limit: u16) -> u16 {
        let now = self.tick();
        let slot = Slot {
            topic: topic.into(),
            last_used: now,
        };
        if self.slots.len() < usize::from(limit) {
            self.slots.push(slot);
            return self.slots.len() as u16;
        }
        let lru = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last_used)
            .map_or(0, |(i, _)| i);
        self.slots[lru] = slot;
        lru as u16 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TopicAliasUse::{Set, Use};

    fn alias(t: &mut Option<Box<TopicAliases>>, max: u16, topic: &str) -> Option<TopicAliasUse> {
        TopicAliases::alias_for(t, max, topic, || true)
    }

    #[test]
    fn nothing_is_allocated_until_the_first_alias() {
        let mut t = None;
        assert_eq!(alias(&mut t, 0, "sensors/room-1/temp"), None);
        assert!(t.is_none(), "the client allows none");
        assert_eq!(alias(&mut t, 5, "abc"), None);
        assert!(t.is_none(), "three bytes gain nothing");
        assert_eq!(alias(&mut t, 5, "abcd"), Some(Set(1)));
        assert!(t.is_some());
    }

    #[test]
    fn first_send_sets_later_ones_use() {
        let mut t = None;
        assert_eq!(alias(&mut t, 2, "a/long/topic"), Some(Set(1)));
        assert_eq!(alias(&mut t, 2, "a/long/topic"), Some(Use(1)));
        assert_eq!(alias(&mut t, 2, "another/topic"), Some(Set(2)));
        assert_eq!(alias(&mut t, 2, "a/long/topic"), Some(Use(1)));
        assert_eq!(alias(&mut t, 2, "another/topic"), Some(Use(2)));
    }

    #[test]
    fn the_least_recently_used_alias_is_replaced() {
        let mut t = None;
        assert_eq!(alias(&mut t, 2, "topic/a"), Some(Set(1)));
        assert_eq!(alias(&mut t, 2, "topic/b"), Some(Set(2)));
        assert_eq!(alias(&mut t, 2, "topic/a"), Some(Use(1)));
        // b is the least recently used: c takes its alias.
        assert_eq!(alias(&mut t, 2, "topic/c"), Some(Set(2)));
        assert_eq!(alias(&mut t, 2, "topic/a"), Some(Use(1)));
        assert_eq!(alias(&mut t, 2, "topic/b"), Some(Set(2)));
    }

    #[test]
    fn never_more_than_the_client_allows_nor_the_server_cap() {
        let mut t = None;
        for i in 0..100 {
            let Some(Set(a)) = alias(&mut t, 3, &format!("topic/{i}")) else {
                panic!("each new topic is set");
            };
            assert!((1..=3).contains(&a), "alias {a}");
        }
        let mut t = None;
        for i in 0..100 {
            let Some(Set(a)) = alias(&mut t, u16::MAX, &format!("topic/{i}")) else {
                panic!("each new topic is set");
            };
            assert!((1..=MAX_SERVER_ALIASES).contains(&a), "alias {a}");
        }
    }

    #[test]
    fn a_packet_that_would_not_fit_with_a_new_alias_gets_none() {
        let mut t = None;
        assert_eq!(
            TopicAliases::alias_for(&mut t, 4, "a/long/topic", || false),
            None
        );
        assert!(t.is_none());
    }

    #[test]
    fn the_use_clock_wrapping_keeps_the_order() {
        let mut t = None;
        alias(&mut t, 2, "topic/a");
        alias(&mut t, 2, "topic/b");
        t.as_mut().unwrap().outbound.clock = u32::MAX - 1;
        assert_eq!(alias(&mut t, 2, "topic/a"), Some(Use(1)));
        assert_eq!(alias(&mut t, 2, "topic/a"), Some(Use(1)));
        assert_eq!(
            alias(&mut t, 2, "topic/c"),
            Some(Set(2)),
            "b was least recent"
        );
    }
}
