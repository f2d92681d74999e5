//! A deadline queue: the broker's will-delay and session-expiry timers as pure
//! logic over `Instant`s, so tests drive them on a virtual clock.

use std::collections::BTreeMap;
use std::time::Instant;

/// Items due at instants; ties keep insertion order.
#[derive(Debug)]
pub(crate) struct DeadlineQueue<T> {
    entries: BTreeMap<(Instant, u64), T>,
    seq: u64,
}

impl<T> Default for DeadlineQueue<T> {
    fn default() -> Self {
        DeadlineQueue {
            entries: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<T> DeadlineQueue<T> {
    /// Schedules `item` at `at`.
    pub(crate) fn schedule(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.entries.insert((at, self.seq), item);
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns every item due at or before `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        while let Some(entry) = self.entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    /// True when nothing is scheduled.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_exactly_when_due() {
        let t0 = Instant::now();
        let mut q = DeadlineQueue::default();
        q.schedule(t0 + Duration::from_secs(5), "b");
        q.schedule(t0 + Duration::from_secs(1), "a");
        q.schedule(t0 + Duration::from_secs(5), "c");
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(q.pop_due(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(q.pop_due(t0 + Duration::from_secs(1)), vec!["a"]);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(60)), vec!["b", "c"]);
        assert!(q.is_empty());
    }
}
