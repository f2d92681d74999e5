//! The storage trait, and the decoding of what a backend holds into records.

use std::path::Path;

use tracing::warn;

use crate::error::StoreError;
use crate::op::{Op, Sent};
use crate::record::{MessageRecord, QueuedRecord, SessionRecord};

/// A place the broker's durable state lives.
pub trait Backend: Send + 'static {
    /// Reads everything back. `salvage` skips (and deletes) records that
    /// cannot be decoded instead of failing.
    fn load(&mut self, salvage: bool) -> Result<Contents, StoreError>;
    /// Applies `ops` atomically; `durable` means on stable storage before returning.
    fn commit(&mut self, ops: &[Op], durable: bool) -> Result<(), StoreError>;
}

/// Everything a store holds, decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Contents {
    /// Persistent sessions.
    pub sessions: Vec<SessionRecord>,
    /// Queued deliveries, ordered by session then queue position.
    pub queued: Vec<QueuedEntry>,
    /// Inbound QoS 2 packet ids awaiting PUBREL, by session.
    pub inbound_qos2: Vec<(u64, u16)>,
    /// Retained messages.
    pub retained: Vec<MessageRecord>,
    /// Records skipped as damaged (salvage mode).
    pub skipped: usize,
}

/// One queued delivery read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEntry {
    /// Session key.
    pub session: u64,
    /// Queue position.
    pub seq: u64,
    /// The delivery.
    pub record: QueuedRecord,
    /// How far it had got, if it was sent.
    pub sent: Option<Sent>,
}

/// A backend's tables as raw bytes, in key order.
#[derive(Debug, Default)]
pub(crate) struct RawContents {
    pub(crate) sessions: Vec<(u64, Vec<u8>)>,
    pub(crate) queued: Vec<((u64, u64), Vec<u8>)>,
    pub(crate) sent: Vec<((u64, u64), (u16, u8))>,
    pub(crate) inbound: Vec<(u64, u16)>,
    pub(crate) retained: Vec<(String, Vec<u8>)>,
}

/// Keys of damaged records, for salvage mode to delete.
#[derive(Debug, Default)]
pub(crate) struct Damaged {
    pub(crate) sessions: Vec<u64>,
    pub(crate) queued: Vec<(u64, u64)>,
    pub(crate) retained: Vec<String>,
}

impl Damaged {
    pub(crate) fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.queued.is_empty() && self.retained.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len() + self.queued.len() + self.retained.len()
    }
}

impl RawContents {
    /// Decodes every record; the first damaged one is an error naming `path`
    /// unless `salvage`, which collects it in `Damaged` instead.
    pub(crate) fn decode(
        self,
        path: &Path,
        salvage: bool,
    ) -> Result<(Contents, Damaged), StoreError> {
        let mut damaged = Damaged::default();
        let fail = |what: &'static str, key: String, e: crate::RecordError| StoreError::Corrupt {
            path: path.to_path_buf(),
            what,
            detail: format!(
                "{key}: {e} (start with --salvage-store to load every readable record and \
                 drop the damaged ones)"
            ),
        };
        let mut contents = Contents::default();
        for (id, bytes) in self.sessions {
            match SessionRecord::from_bytes(id, &bytes) {
                Ok(s) => contents.sessions.push(s),
                Err(e) if salvage => {
                    warn!(session = id, fault = %e, "damaged session record dropped");
                    damaged.sessions.push(id);
                }
                Err(e) => return Err(fail("session", format!("session {id}"), e)),
            }
        }
        let mut sent = self.sent.into_iter().peekable();
        for (key, bytes) in self.queued {
            while sent.peek().is_some_and(|(k, _)| *k < key) {
                sent.next();
            }
            let state = match sent.peek() {
                Some((k, pair)) if *k == key => Sent::from_pair(*pair),
                _ => None,
            };
            match QueuedRecord::from_bytes(&bytes) {
                Ok(record) => contents.queued.push(QueuedEntry {
                    session: key.0,
                    seq: key.1,
                    record,
                    sent: state,
                }),
                Err(e) if salvage => {
                    warn!(session = key.0, seq = key.1, fault = %e, "damaged queued message dropped");
                    damaged.queued.push(key);
                }
                Err(e) => {
                    return Err(fail(
                        "queued message",
                        format!("session {} position {}", key.0, key.1),
                        e,
                    ))
                }
            }
        }
        contents.inbound_qos2 = self.inbound;
        for (topic, bytes) in self.retained {
            match MessageRecord::from_bytes(&bytes) {
                Ok(m) => contents.retained.push(m),
                Err(e) if salvage => {
                    warn!(topic, fault = %e, "damaged retained message dropped");
                    damaged.retained.push(topic);
                }
                Err(e) => return Err(fail("retained message", format!("topic {topic:?}"), e)),
            }
        }
        contents.skipped = damaged.len();
        Ok((contents, damaged))
    }
}
