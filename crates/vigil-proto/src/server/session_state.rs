//! The protocol state of a session that outlives any one connection: what a
//! resumed session must resend, and which inbound QoS 2 ids await PUBREL.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::message::Outgoing;

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightStage {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    AwaitingAck,
    /// PUBREC received and PUBREL sent; waiting for PUBCOMP.
    AwaitingComp,
}

/// One unacknowledged outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// The delivery.
    pub outgoing: Outgoing,
    /// Handshake stage.
    pub stage: InflightStage,
}

/// Session protocol state, moved from connection to connection of one client id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Outbound QoS 1/2 messages not yet acknowledged, by packet id.
    pub inflight: InflightMap,
    /// Deliveries accepted from the mailbox but not yet sent (window full).
    pub pending: VecDeque<Outgoing>,
    /// Inbound QoS 2 packet ids whose PUBREL has not arrived: a re-sent PUBLISH
    /// with one of these ids is acknowledged but not routed again.
    pub inbound_qos2: BTreeSet<u16>,
    /// Last packet id handed out.
    pub last_packet_id: u16,
}

impl SessionState {
    /// A free packet id, or `None` if all 65,535 are in flight.
    pub(crate) fn next_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains(self.last_packet_id) {
                return Some(self.last_packet_id);
            }
        }
        None
    }
}

/// Outbound QoS 1/2 messages not yet acknowledged, by packet id.
///
/// A hash map, not a B-tree: every PUBACK removes one entry, and a B-tree of
/// ~80-byte entries shifts its neighbours on each insert and remove (3.7 %
/// of broker time in memmove under pairs QoS 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InflightMap(HashMap<u16, Inflight, BuildHasherDefault<PacketIdHasher>>);

impl InflightMap {
    /// Adds `entry` under `id`, returning any entry it replaced.
    pub fn insert(&mut self, id: u16, entry: Inflight) -> Option<Inflight> {
        self.0.insert(id, entry)
    }

    /// The entry of `id`.
    pub fn get(&self, id: u16) -> Option<&Inflight> {
        self.0.get(&id)
    }

    /// The entry of `id`, to change its stage.
    pub fn get_mut(&mut self, id: u16) -> Option<&mut Inflight> {
        self.0.get_mut(&id)
    }

    /// Removes and returns the entry of `id`.
    pub fn remove(&mut self, id: u16) -> Option<Inflight> {
        self.0.remove(&id)
    }

    /// True when `id` is in flight.
    pub fn contains(&self, id: u16) -> bool {
        self.0.contains_key(&id)
    }

    /// Number of messages in flight.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every entry, oldest first, given the last packet id handed out: ids
    /// are handed out in increasing order (wrapping past 65,535), so the
    /// oldest is the one furthest behind `last`. Resending keeps this order.
    pub fn in_send_order(&self, last: u16) -> Vec<(u16, &Inflight)> {
        let mut entries: Vec<(u16, &Inflight)> = self.0.iter().map(|(&id, e)| (id, e)).collect();
        // Ids run 1..=65535: the distance behind `last`, counted in that ring.
        let behind = |id: u16| (i32::from(last) - i32::from(id)).rem_euclid(65_535);
        entries.sort_by_key(|&(id, _)| std::cmp::Reverse(behind(id)));
        entries
    }
}

/// Hashes a packet id with one multiplication: ids are small integers chosen
/// by us, not by a peer, so SipHash's flooding resistance buys nothing here.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketIdHasher(u64);

impl Hasher for PacketIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, id: u16) {
        // The high bits matter most to the table's probing: the golden-ratio
        // multiplication spreads consecutive ids across them.
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::message::Message;
    use crate::QoS;

    fn entry() -> Inflight {
        Inflight {
            outgoing: Outgoing {
                message: Arc::new(Message {
                    topic: "t".into(),
                    payload: Bytes::new(),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: None,
                    expires_at: None,
                }),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![],
                persisted: None,
                shared: false,
            },
            stage: InflightStage::AwaitingAck,
        }
    }

    #[test]
    fn send_order_survives_the_packet_id_wrapping() {
        let mut state = SessionState {
            last_packet_id: 65_533,
            ..SessionState::default()
        };
        let mut ids = Vec::new();
        for _ in 0..5 {
            let id = state.next_packet_id().expect("free id");
            state.inflight.insert(id, entry());
            ids.push(id);
        }
        assert_eq!(ids, [65_534, 65_535, 1, 2, 3]);
        // An ack in the middle, then a later id.
        assert!(state.inflight.remove(1).is_some());
        assert!(!state.inflight.contains(1));
        let id = state.next_packet_id().expect("free id");
        state.inflight.insert(id, entry());
        let order: Vec<u16> = state
            .inflight
            .in_send_order(state.last_packet_id)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(order, [65_534, 65_535, 2, 3, 4]);
    }
}
