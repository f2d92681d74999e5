//! Retained messages across the cluster: every node holds every retained
//! message, and concurrent writes to one topic settle on the same winner
//! everywhere by last-writer-wins on a `Stamp` (hybrid logical clock, then
//! node id).
//!
//! The stamps live here, in memory, beside the broker's own retained index:
//! one per topic this node has written or received since it started, and a
//! tombstone per deleted topic, so a late copy of a deleted message cannot
//! bring it back. A retained message the node recovered from its store has
//! no stamp (it sorts before every stamped write): after a restart, the
//! other nodes' copies win.
//!
//! Tombstones are dropped `TOMBSTONE_TTL` after the deletion (by the time
//! in its stamp), so a broker that deletes many topics does not grow
//! forever. Until then they stop late copies in flight and copies held by
//! a node that was away; a node away longer than that may bring a deleted
//! message back (docs/cluster.md says so).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};

use crate::wire::Stamp;

/// How long a deletion's tombstone is kept: as long as chitchat keeps a
/// removed route's (`marked_for_deletion_grace_period`), so a node away
/// for less than that finds both its routes and its retained messages as
/// the cluster left them.
pub(crate) const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// Stamps of retained topics and the node's hybrid logical clock.
#[derive(Debug, Default)]
pub(crate) struct RetainedStamps {
    inner: Mutex<Stamps>,
}

/// The stamps, locked: a write is stamped and applied under one lock, so
/// the broker's index and the stamp of a topic change together.
#[derive(Debug, Default)]
pub(crate) struct Stamps {
    /// Last clock value handed out or seen.
    clock: u64,
    /// Topic -> (stamp of its last write, whether that write deleted it).
    by_topic: HashMap<String, (Stamp, bool)>,
    /// Deletions in the order they were recorded, for pruning: an entry
    /// whose topic was written again since is skipped when it comes up.
    deletions: VecDeque<(Stamp, String)>,
    /// Topics of `by_topic` whose last write deleted them.
    tombstones: usize,
}

impl RetainedStamps {
    /// Locks the stamps.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Stamps> {
        self.inner.lock()
    }
}

impl Stamps {
    /// Stamps a write made on this node `node` at `unix_ms`: later than
    /// every stamp this node has made or seen.
    pub(crate) fn local_write(
        &mut self,
        topic: &str,
        node: u64,
        unix_ms: u64,
        deleted: bool,
    ) -> Stamp {
        self.clock = (self.clock + 1).max(unix_ms << 16);
        let stamp = Stamp {
            clock: self.clock,
            node,
        };
        self.record(topic, stamp, deleted);
        stamp
    }

    fn record(&mut self, topic: &str, stamp: Stamp, deleted: bool) {
        if let Some((_, true)) = self.by_topic.insert(topic.to_owned(), (stamp, deleted)) {
            self.tombstones -= 1;
        }
        if deleted {
            self.tombstones += 1;
            self.deletions.push_back((stamp, topic.to_owned()));
        }
    }

    /// How many tombstones are held.
    pub(crate) fn tombstone_count(&self) -> usize {
        self.tombstones
    }

    /// Drops the tombstones of deletions stamped `TOMBSTONE_TTL` or more
    /// before `unix_ms`; returns how many. Deletions are looked at in the
    /// order they were recorded, so one that arrived stamped long ago may
    /// wait behind a younger one: it is dropped at most `TOMBSTONE_TTL`
    /// after it arrived.
    pub(crate) fn prune(&mut self, unix_ms: u64) -> usize {
        let ttl = TOMBSTONE_TTL.as_millis() as u64;
        let mut pruned = 0;
        while let Some((stamp, _)) = self.deletions.front() {
            if unix_ms.saturating_sub(stamp.clock >> 16) < ttl {
                break;
            }
            let Some((stamp, topic)) = self.deletions.pop_front() else {
                break;
            };
            if self.by_topic.get(&topic) == Some(&(stamp, true)) {
                self.by_topic.remove(&topic);
                self.tombstones -= 1;
                pruned += 1;
            }
        }
        pruned
    }

    /// A write another node stamped: true (and recorded) if it must be
    /// applied here. A stamped write applies if newer than this node's
    /// stamp for the topic; an unstamped copy (recovered from a store)
    /// only fills a gap: it applies if this node has no stamp and no
    /// retained message (`held`) for the topic.
    pub(crate) fn remote_write(
        &mut self,
        topic: &str,
        stamp: Stamp,
        deleted: bool,
        held: bool,
    ) -> bool {
        self.clock = self.clock.max(stamp.clock);
        match self.by_topic.get(topic) {
            Some((current, _)) if stamp <= *current => return false,
            None if stamp == Stamp::default() => return !held && !deleted,
            _ => {}
        }
        self.record(topic, stamp, deleted);
        true
    }

    /// The stamp of `topic` (the zero stamp if it has none).
    pub(crate) fn of(&self, topic: &str) -> Stamp {
        self.by_topic
            .get(topic)
            .map(|(s, _)| *s)
            .unwrap_or_default()
    }

    /// Every deleted topic with the stamp of its deletion.
    pub(crate) fn tombstones(&self) -> Vec<(String, Stamp)> {
        self.by_topic
            .iter()
            .filter(|(_, (_, deleted))| *deleted)
            .map(|(t, (s, _))| (t.clone(), *s))
            .collect()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_writer_wins_whatever_the_order_of_arrival() {
        // Node 1 and node 2 write the same topic; each node sees both
        // writes, in opposite orders, and both end with the same winner.
        let (mut a, mut b) = (Stamps::default(), Stamps::default());
        let first = a.local_write("t", 1, 1_000, false);
        let second = b.local_write("t", 2, 1_000, false);
        assert!(second > first, "same millisecond: the larger node id wins");
        assert!(a.remote_write("t", second, false, true));
        assert!(!b.remote_write("t", first, false, true));
        assert_eq!(a.of("t"), b.of("t"));
    }

    #[test]
    fn a_write_after_one_seen_sorts_after_it_even_with_a_slow_clock() {
        let mut a = Stamps::default();
        let far = Stamp {
            clock: 5_000 << 16,
            node: 9,
        };
        assert!(a.remote_write("t", far, false, false));
        // This node's wall clock is behind: the clock still moves forward.
        let mine = a.local_write("t", 1, 1_000, true);
        assert!(mine > far);
        assert_eq!(a.tombstones(), vec![("t".to_string(), mine)]);
        // A late copy of the deleted message does not come back.
        assert!(!a.remote_write("t", far, false, false));
    }

    #[test]
    fn tombstones_are_pruned_after_their_ttl_and_live_stamps_never() {
        let ttl = TOMBSTONE_TTL.as_millis() as u64;
        let t0 = 10_000_000;
        let mut a = Stamps::default();
        a.local_write("kept", 1, t0, false);
        let gone = a.local_write("gone", 1, t0, true);
        // Deleted, then written again: its deletion's tombstone is no
        // longer the topic's stamp and must not be dropped with it.
        a.local_write("again", 1, t0, true);
        let again = a.local_write("again", 1, t0 + 1, false);
        // A deletion another node stamped, arriving later.
        let remote = Stamp {
            clock: (t0 + 5_000) << 16,
            node: 2,
        };
        assert!(a.remote_write("remote", remote, true, true));
        assert_eq!(a.prune(t0 + ttl - 1), 0, "not yet");
        assert_eq!(a.tombstones().len(), 2);
        assert_eq!(a.tombstone_count(), 2);
        assert_eq!(a.prune(t0 + ttl), 1);
        assert_eq!(a.of("gone"), Stamp::default());
        assert_eq!(a.tombstones(), vec![("remote".to_string(), remote)]);
        assert_eq!(a.of("again"), again, "a live stamp stays");
        assert_ne!(a.of("kept"), Stamp::default(), "a live stamp stays");
        assert_eq!(a.prune(t0 + 5_000 + ttl), 1);
        assert!(a.tombstones().is_empty());
        assert_eq!(a.tombstone_count(), 0);
        assert!(a.deletions.is_empty(), "nothing left to look at");
        // Once pruned, the topic is as if never written here: a stamped
        // write applies, whatever its age.
        assert!(a.remote_write("gone", gone, false, false));
    }

    #[test]
    fn an_unstamped_copy_only_fills_a_gap() {
        let mut a = Stamps::default();
        assert_eq!(a.of("t"), Stamp::default());
        assert!(
            !a.remote_write("t", Stamp::default(), false, true),
            "held here"
        );
        assert!(
            a.remote_write("t", Stamp::default(), false, false),
            "missing here"
        );
        assert!(
            !a.remote_write("t", Stamp::default(), true, false),
            "nothing to delete"
        );
        assert!(a.remote_write("t", Stamp { clock: 1, node: 1 }, false, true));
        assert!(
            !a.remote_write("t", Stamp::default(), false, false),
            "stamped wins"
        );
    }
}
