//! The changes the broker asks the store to make, and how they map onto the
//! store's tables (shared by every backend, so they behave the same).

use bytes::Bytes;
use tracing::error;

use crate::record::{MessageRecord, QueuedRecord, SessionRecord};

/// How far a stored delivery has got with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Sent as PUBLISH with this packet id, waiting for PUBACK / PUBREC.
    Published(u16),
    /// PUBREL sent for this packet id, waiting for PUBCOMP.
    Released(u16),
}

impl Sent {
    pub(crate) fn to_pair(self) -> (u16, u8) {
        match self {
            Sent::Published(id) => (id, 1),
            Sent::Released(id) => (id, 2),
        }
    }

    pub(crate) fn from_pair((id, stage): (u16, u8)) -> Option<Sent> {
        match stage {
            1 => Some(Sent::Published(id)),
            2 => Some(Sent::Released(id)),
            _ => None,
        }
    }
}

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes (or rewrites) a session record.
    PutSession(SessionRecord),
    /// Forgets a session with its queue and inbound QoS 2 ids.
    DeleteSession(u64),
    /// Forgets a session's queue and inbound QoS 2 ids (clean start), keeping the record.
    ClearQueue(u64),
    /// Adds a delivery to a session's queue.
    Enqueue {
        /// Session key.
        session: u64,
        /// Position in the queue (increasing per session).
        seq: u64,
        /// The delivery.
        record: QueuedRecord,
    },
    /// Records how far a queued delivery has got.
    Progress {
        /// Session key.
        session: u64,
        /// Queue position.
        seq: u64,
        /// Its handshake state.
        sent: Sent,
    },
    /// Removes a delivery that is done.
    Dequeue {
        /// Session key.
        session: u64,
        /// Queue position.
        seq: u64,
    },
    /// Guards inbound QoS 2 `packet_id` until PUBREL.
    AddInbound {
        /// Session key.
        session: u64,
        /// Packet id.
        packet_id: u16,
    },
    /// PUBREL received for inbound QoS 2 `packet_id`.
    RemoveInbound {
        /// Session key.
        session: u64,
        /// Packet id.
        packet_id: u16,
    },
    /// Sets the retained message of its topic.
    PutRetained(MessageRecord),
    /// Deletes the retained message of a topic.
    DeleteRetained(String),
}

/// The primitive table operations a backend offers.
pub(crate) trait Tables {
    type Error;
    fn put_session(&mut self, id: u64, bytes: &[u8]) -> Result<(), Self::Error>;
    fn delete_session(&mut self, id: u64) -> Result<(), Self::Error>;
    fn clear_queue(&mut self, session: u64) -> Result<(), Self::Error>;
    fn put_queued(&mut self, key: (u64, u64), bytes: &[u8]) -> Result<(), Self::Error>;
    fn put_sent(&mut self, key: (u64, u64), sent: (u16, u8)) -> Result<(), Self::Error>;
    fn remove_queued(&mut self, key: (u64, u64)) -> Result<(), Self::Error>;
    fn add_inbound(&mut self, key: (u64, u16)) -> Result<(), Self::Error>;
    fn remove_inbound(&mut self, key: (u64, u16)) -> Result<(), Self::Error>;
    fn put_retained(&mut self, topic: &str, bytes: &[u8]) -> Result<(), Self::Error>;
    fn delete_retained(&mut self, topic: &str) -> Result<(), Self::Error>;
}

/// Applies `ops` in order. A record that cannot be encoded (never expected:
/// every message came from the decoder) is logged and skipped, not fatal.
pub(crate) fn apply<T: Tables>(tables: &mut T, ops: &[Op]) -> Result<(), T::Error> {
    for op in ops {
        match op {
            Op::PutSession(s) => {
                if let Some(b) = encoded("session", s.to_bytes()) {
                    tables.put_session(s.id, &b)?;
                }
            }
            Op::DeleteSession(id) => {
                tables.clear_queue(*id)?;
                tables.delete_session(*id)?;
            }
            Op::ClearQueue(id) => tables.clear_queue(*id)?,
            Op::Enqueue {
                session,
                seq,
                record,
            } => {
                if let Some(b) = encoded("queued message", record.to_bytes()) {
                    tables.put_queued((*session, *seq), &b)?;
                }
            }
            Op::Progress { session, seq, sent } => {
                tables.put_sent((*session, *seq), sent.to_pair())?;
            }
            Op::Dequeue { session, seq } => tables.remove_queued((*session, *seq))?,
            Op::AddInbound { session, packet_id } => tables.add_inbound((*session, *packet_id))?,
            Op::RemoveInbound { session, packet_id } => {
                tables.remove_inbound((*session, *packet_id))?;
            }
            Op::PutRetained(m) => {
                if let Some(b) = encoded("retained message", m.to_bytes()) {
                    tables.put_retained(&m.publish.topic, &b)?;
                }
            }
            Op::DeleteRetained(topic) => tables.delete_retained(topic)?,
        }
    }
    Ok(())
}

fn encoded(what: &str, r: Result<Bytes, crate::RecordError>) -> Option<Bytes> {
    match r {
        Ok(b) => Some(b),
        Err(e) => {
            error!(fault = %e, "{what} could not be encoded; not stored");
            None
        }
    }
}
