//! The protocol state of a session that outlives any one connection: what a
//! resumed session must resend, and which inbound QoS 2 ids await PUBREL.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    pub inflight: BTreeMap<u16, Inflight>,
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
            if !self.inflight.contains_key(&self.last_packet_id) {
                return Some(self.last_packet_id);
            }
        }
        None
    }
}
