//! Retained messages by topic, in topic order, and the cursors that stream
//! them to a new subscriber.
//!
//! A SUBSCRIBE does not copy the matching retained messages anywhere: it
//! leaves a `RetainedCursor` (the filter and the last topic sent) with the
//! session, and the subscriber's connection pulls the next few matches from
//! it whenever it has room for more deliveries (its in-flight window and write
//! buffer), so 200,000 retained messages cost the subscriber no more memory
//! than a few hundred, and every one of them arrives. Each pull holds the read
//! lock for a bounded number of topics, so publishers that set retained
//! messages never wait long behind a subscriber's scan.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use vigil_proto::message::Message;
use vigil_proto::{topic, QoS};

/// Topics examined per pull at most, matching or not: a filter that matches
/// few of many retained topics must not hold the lock through all of them.
const SCAN_BUDGET: usize = 4096;

/// Topic → last retained message, ordered so a cursor can resume after a topic.
#[derive(Debug, Default)]
pub(crate) struct RetainedIndex {
    by_topic: RwLock<BTreeMap<String, Arc<Message>>>,
    /// Payload bytes of every retained message (changed under the write lock).
    payload_bytes: AtomicU64,
}

/// Where one subscriber's stream of retained messages for one filter stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetainedCursor {
    /// The filter as the client wrote it (an UNSUBSCRIBE of it ends the stream).
    pub(crate) filter: Box<str>,
    /// The last topic handed out; None before the first.
    after: Option<String>,
    /// Granted QoS of the subscription.
    pub(crate) qos: QoS,
    /// Its Subscription Identifier, if any.
    pub(crate) subscription_id: Option<u32>,
}

impl RetainedCursor {
    /// A stream of the retained messages matching `filter` (not a shared one).
    pub(crate) fn new(filter: &str, qos: QoS, subscription_id: Option<u32>) -> RetainedCursor {
        RetainedCursor {
            filter: filter.into(),
            after: None,
            qos,
            subscription_id,
        }
    }

    /// Every topic the filter can match starts with this: its levels before
    /// the first wildcard (without the separator, as `a/#` also matches `a`).
    fn prefix(&self) -> &str {
        match self.filter.find(['+', '#']) {
            Some(i) => self.filter[..i].trim_end_matches('/'),
            None => &self.filter,
        }
    }

    fn has_wildcard(&self) -> bool {
        self.filter.contains(['+', '#'])
    }
}

impl RetainedIndex {
    /// Stores `msg` as the retained message of its topic; an empty payload deletes it.
    pub(crate) fn update(&self, msg: &Arc<Message>) {
        let mut map = self.by_topic.write();
        let old = if msg.payload.is_empty() {
            map.remove(&msg.topic)
        } else {
            self.payload_bytes
                .fetch_add(msg.payload.len() as u64, Relaxed);
            map.insert(msg.topic.clone(), msg.clone())
        };
        if let Some(old) = old {
            self.payload_bytes
                .fetch_sub(old.payload.len() as u64, Relaxed);
        }
    }

    /// Appends up to `max` unexpired retained messages that match the
    /// cursor's filter after where it stands, and moves it past them (and
    /// past at most `SCAN_BUDGET` topics in all). Returns true once the
    /// stream is over. Expired messages met on the way are removed.
    pub(crate) fn next_batch(
        &self,
        cursor: &mut RetainedCursor,
        now: Instant,
        max: usize,
        out: &mut Vec<Arc<Message>>,
    ) -> bool {
        let mut expired = Vec::new();
        let done = {
            let map = self.by_topic.read();
            if !cursor.has_wildcard() {
                // One topic: a lookup, not a scan of every topic it prefixes.
                if cursor.after.is_none() {
                    if let Some(m) = map.get(&*cursor.filter) {
                        if m.is_expired(now) {
                            expired.push(m.topic.clone());
                        } else if max > 0 {
                            out.push(m.clone());
                        } else {
                            return false;
                        }
                    }
                }
                true
            } else {
                self.scan(&map, cursor, now, max, out, &mut expired)
            }
        };
        if !expired.is_empty() {
            let mut map = self.by_topic.write();
            for t in expired {
                if map.get(&t).is_some_and(|m| m.is_expired(now)) {
                    if let Some(old) = map.remove(&t) {
                        self.payload_bytes
                            .fetch_sub(old.payload.len() as u64, Relaxed);
                    }
                }
            }
        }
        done
    }

    fn scan(
        &self,
        map: &BTreeMap<String, Arc<Message>>,
        cursor: &mut RetainedCursor,
        now: Instant,
        max: usize,
        out: &mut Vec<Arc<Message>>,
        expired: &mut Vec<String>,
    ) -> bool {
        let prefix = cursor.prefix();
        let start = match &cursor.after {
            Some(t) => Bound::Excluded(t.as_str()),
            None => Bound::Included(prefix),
        };
        let mut found = 0;
        let mut last: Option<&String> = None;
        let mut done = true;
        for (examined, (t, m)) in map.range::<str, _>((start, Bound::Unbounded)).enumerate() {
            if !t.starts_with(prefix) {
                break;
            }
            if found == max || examined == SCAN_BUDGET {
                done = false;
                break;
            }
            last = Some(t);
            if !topic::matches(&cursor.filter, t) {
                continue;
            }
            if m.is_expired(now) {
                expired.push(t.clone());
                continue;
            }
            out.push(m.clone());
            found += 1;
        }
        if let Some(t) = last {
            cursor.after = Some(t.clone());
        }
        done
    }

    /// Unexpired retained messages matching `filter`, all at once, in topic
    /// order (the admin API and tests). Taken in batches through a cursor,
    /// so the index's lock is never held for a whole scan.
    pub(crate) fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut cursor = RetainedCursor::new(filter, QoS::AtMostOnce, None);
        let mut out = Vec::new();
        while !self.next_batch(&mut cursor, now, 256, &mut out) {}
        out
    }

    /// Up to `limit` unexpired retained messages matching `filter` whose
    /// topic sorts after `after`, in topic order, and the `after` of the
    /// next page (None: this was the last).
    pub(crate) fn page(
        &self,
        filter: &str,
        after: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> (Vec<Arc<Message>>, Option<String>) {
        let mut cursor = RetainedCursor::new(filter, QoS::AtMostOnce, None);
        cursor.after = after.map(str::to_owned);
        let mut out = Vec::new();
        let mut done = false;
        while !done && out.len() < limit {
            let left = limit - out.len();
            done = self.next_batch(&mut cursor, now, left, &mut out);
        }
        let next = if done {
            None
        } else {
            out.last().map(|m| m.topic.clone())
        };
        (out, next)
    }

    /// The unexpired retained message of `topic`.
    pub(crate) fn get(&self, topic: &str, now: Instant) -> Option<Arc<Message>> {
        let map = self.by_topic.read();
        map.get(topic).filter(|m| !m.is_expired(now)).cloned()
    }

    /// Up to `limit` unexpired retained messages of any topic sorting
    /// after `after`, in topic order (a whole-index copy, in pages).
    pub(crate) fn after(
        &self,
        after: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> Vec<Arc<Message>> {
        let map = self.by_topic.read();
        let start = match after {
            Some(t) => Bound::Excluded(t),
            None => Bound::Unbounded,
        };
        map.range::<str, _>((start, Bound::Unbounded))
            .map(|(_, m)| m)
            .filter(|m| !m.is_expired(now))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Number of retained topics.
    pub(crate) fn len(&self) -> usize {
        self.by_topic.read().len()
    }

    /// Payload bytes of every retained message.
    pub(crate) fn payload_bytes(&self) -> u64 {
        self.payload_bytes.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn retained(topic: &str, expires_at: Option<Instant>) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
            expires_at,
        })
    }

    fn topics(found: &[Arc<Message>]) -> Vec<&str> {
        found.iter().map(|m| m.topic.as_str()).collect()
    }

    #[test]
    fn a_cursor_streams_every_match_once_in_small_batches() {
        let index = RetainedIndex::default();
        for t in ["a", "a/1", "a/2/x", "ab/1", "b/1", "$SYS/a", "a/3"] {
            index.update(&retained(t, None));
        }
        let now = Instant::now();
        let mut cursor = RetainedCursor::new("a/#", QoS::AtLeastOnce, None);
        let mut out = Vec::new();
        let mut pulls = 0;
        while !index.next_batch(&mut cursor, now, 1, &mut out) {
            pulls += 1;
            assert!(pulls < 10, "the stream never ends");
        }
        assert_eq!(topics(&out), ["a", "a/1", "a/2/x", "a/3"]);
        assert_eq!(topics(&index.matching("+/1", now)), ["a/1", "ab/1", "b/1"]);
        // A leading wildcard never matches a `$` topic.
        assert_eq!(index.matching("#", now).len(), 6);
        assert_eq!(topics(&index.matching("$SYS/#", now)), ["$SYS/a"]);
        assert_eq!(topics(&index.matching("a/2/x", now)), ["a/2/x"]);
        assert!(index.matching("a/9", now).is_empty());
    }

    #[test]
    fn a_topic_set_behind_the_cursor_is_not_streamed_and_one_ahead_is() {
        let index = RetainedIndex::default();
        for t in ["t/1", "t/3"] {
            index.update(&retained(t, None));
        }
        let now = Instant::now();
        let mut cursor = RetainedCursor::new("t/+", QoS::AtMostOnce, None);
        let mut out = Vec::new();
        assert!(!index.next_batch(&mut cursor, now, 1, &mut out));
        // Behind: the live PUBLISH reaches the subscriber by routing instead.
        index.update(&retained("t/0", None));
        index.update(&retained("t/2", None));
        while !index.next_batch(&mut cursor, now, 1, &mut out) {}
        assert_eq!(topics(&out), ["t/1", "t/2", "t/3"]);
    }

    #[test]
    fn a_sparse_match_holds_the_lock_for_a_bounded_scan_per_pull() {
        let index = RetainedIndex::default();
        for i in 0..(3 * SCAN_BUDGET) {
            index.update(&retained(&format!("n/{i:06}/x"), None));
        }
        index.update(&retained("n/zzz/y", None));
        let now = Instant::now();
        let mut cursor = RetainedCursor::new("n/+/y", QoS::AtMostOnce, None);
        let mut out = Vec::new();
        let mut pulls = 1;
        while !index.next_batch(&mut cursor, now, 100, &mut out) {
            pulls += 1;
        }
        assert_eq!(topics(&out), ["n/zzz/y"]);
        assert!(pulls >= 3, "{pulls} pulls: the scan was not bounded");
    }

    #[test]
    fn expired_retained_messages_are_skipped_and_removed() {
        let index = RetainedIndex::default();
        let now = Instant::now();
        index.update(&retained("e/old", Some(now - Duration::from_secs(1))));
        index.update(&retained("e/new", Some(now + Duration::from_secs(60))));
        assert_eq!(topics(&index.matching("e/#", now)), ["e/new"]);
        assert_eq!(index.len(), 1);
        index.update(&retained("e/gone", Some(now - Duration::from_secs(1))));
        assert!(index.matching("e/gone", now).is_empty());
        assert_eq!(index.len(), 1);
    }
}
