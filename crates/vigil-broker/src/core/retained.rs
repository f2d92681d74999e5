//! Retained messages by topic. Lookup on subscribe scans the retained topics
//! with the filter matcher: O(retained topics) per subscribe, which is fine for
//! the tens of thousands of retained topics typical fleets keep; a level trie
//! is the upgrade path if that changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use vigil_proto::message::Message;
use vigil_proto::topic;

/// Topic → last retained message.
#[derive(Debug, Default)]
pub(crate) struct RetainedIndex {
    by_topic: RwLock<HashMap<String, Arc<Message>>>,
}

impl RetainedIndex {
    /// Stores `msg` as the retained message of its topic; an empty payload deletes it.
    pub(crate) fn update(&self, msg: &Arc<Message>) {
        let mut map = self.by_topic.write();
        if msg.payload.is_empty() {
            map.remove(&msg.topic);
        } else {
            map.insert(msg.topic.clone(), msg.clone());
        }
    }

    /// Unexpired retained messages matching `filter`; expired ones are dropped.
    pub(crate) fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut expired = Vec::new();
        let found = {
            let map = self.by_topic.read();
            map.iter()
                .filter(|(t, _)| topic::matches(filter, t))
                .filter_map(|(t, m)| {
                    if m.is_expired(now) {
                        expired.push(t.clone());
                        None
                    } else {
                        Some(m.clone())
                    }
                })
                .collect()
        };
        if !expired.is_empty() {
            let mut map = self.by_topic.write();
            for t in expired {
                if map.get(&t).is_some_and(|m| m.is_expired(now)) {
                    map.remove(&t);
                }
            }
        }
        found
    }

    /// Number of retained topics.
    pub(crate) fn len(&self) -> usize {
        self.by_topic.read().len()
    }
}
