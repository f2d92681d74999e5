//! The storage trait, and the decoding of what a backend holds into records.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;
use vigil_proto::message::Message;
use vigil_proto::time::Clock;
use vigil_proto::QoS;

use crate::error::StoreError;
use crate::op::{Op, Sent};
use crate::record::{MessageRecord, QueuedHead, SessionRecord};

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
    /// The message, one allocation shared by every entry that queued the same
    /// message (as the live broker shares it), its expiry in this process's
    /// `Instant`s.
    pub message: Arc<Message>,
    /// Delivery QoS (after the subscription's downgrade).
    pub qos: QoS,
    /// RETAIN flag on this delivery.
    pub retain: bool,
    /// Subscription identifiers.
    pub subscription_ids: Vec<u32>,
    /// How far it had got, if it was sent.
    pub sent: Option<Sent>,
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

/// Decodes rows as a backend reads them, so a large store is never held
/// twice (raw and decoded). Feed `sent` before `queued`. The first damaged
/// record is an error naming `path` unless `salvage`, which collects its key
/// in `Damaged` instead.
pub(crate) struct Decoder<'p> {
    path: &'p Path,
    salvage: bool,
    contents: Contents,
    damaged: Damaged,
    sent: HashMap<(u64, u64), (u16, u8)>,
    clock: Clock,
    /// Messages decoded so far, by a hash of their stored bytes: a message
    /// fanned out to many sessions is stored once per queue entry, and each
    /// entry after the first gets the first one's allocation.
    messages: HashMap<u64, Arc<Message>>,
}

impl<'p> Decoder<'p> {
    pub(crate) fn new(path: &'p Path, salvage: bool) -> Decoder<'p> {
        Decoder {
            path,
            salvage,
            contents: Contents::default(),
            damaged: Damaged::default(),
            sent: HashMap::new(),
            clock: Clock::now(),
            messages: HashMap::new(),
        }
    }

    /// The message stored as `bytes`, shared with an equal one decoded
    /// before. The hash only finds the candidate; equality decides, so a
    /// collision costs a copy, never a wrong message.
    fn shared_message(&mut self, bytes: Bytes) -> Result<Arc<Message>, crate::RecordError> {
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        let message = MessageRecord::decode_whole(bytes)?.into_message(&self.clock);
        Ok(match self.messages.entry(h.finish()) {
            Entry::Occupied(e) if **e.get() == message => e.get().clone(),
            Entry::Occupied(_) => Arc::new(message),
            Entry::Vacant(v) => v.insert(Arc::new(message)).clone(),
        })
    }

    fn fail(&self, what: &'static str, key: String, e: &crate::RecordError) -> StoreError {
        StoreError::Corrupt {
            path: self.path.to_path_buf(),
            what,
            detail: format!(
                "{key}: {e} (start with --salvage-store to load every readable record and \
                 drop the damaged ones)"
            ),
        }
    }

    pub(crate) fn session(&mut self, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        match SessionRecord::from_bytes(id, bytes) {
            Ok(s) => self.contents.sessions.push(s),
            Err(e) if self.salvage => {
                warn!(session = id, fault = %e, "damaged session record dropped");
                self.damaged.sessions.push(id);
            }
            Err(e) => return Err(self.fail("session", format!("session {id}"), &e)),
        }
        Ok(())
    }

    pub(crate) fn sent(&mut self, key: (u64, u64), pair: (u16, u8)) {
        self.sent.insert(key, pair);
    }

    pub(crate) fn queued(&mut self, key: (u64, u64), bytes: &[u8]) -> Result<(), StoreError> {
        let sent = self.sent.remove(&key).and_then(Sent::from_pair);
        let decoded = QueuedHead::split(bytes)
            .and_then(|(head, message)| Ok((head, self.shared_message(message)?)));
        match decoded {
            Ok((head, message)) => self.contents.queued.push(QueuedEntry {
                session: key.0,
                seq: key.1,
                message,
                qos: head.qos,
                retain: head.retain,
                subscription_ids: head.subscription_ids,
                sent,
            }),
            Err(e) if self.salvage => {
                warn!(session = key.0, seq = key.1, fault = %e, "damaged queued message dropped");
                self.damaged.queued.push(key);
            }
            Err(e) => {
                let key = format!("session {} position {}", key.0, key.1);
                return Err(self.fail("queued message", key, &e));
            }
        }
        Ok(())
    }

    pub(crate) fn inbound(&mut self, key: (u64, u16)) {
        self.contents.inbound_qos2.push(key);
    }

    pub(crate) fn retained(&mut self, topic: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match MessageRecord::from_bytes(bytes) {
            Ok(m) => self.contents.retained.push(m),
            Err(e) if self.salvage => {
                warn!(topic, fault = %e, "damaged retained message dropped");
                self.damaged.retained.push(topic.to_owned());
            }
            Err(e) => return Err(self.fail("retained message", format!("topic {topic:?}"), &e)),
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> (Contents, Damaged) {
        self.contents.skipped = self.damaged.len();
        (self.contents, self.damaged)
    }
}
