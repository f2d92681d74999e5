//! What a publisher's acknowledgement waits for on other cluster nodes.
//! The core only hands these back from routing; the waiting (with its
//! deadline) is the connection's, so the core stays free of timers.

use std::time::Instant;

use tokio::sync::watch;

/// Acceptances by other nodes that a publisher's acknowledgement waits
/// for: per link, the sequence number its peer must have accepted. A link
/// publishes the highest sequence number settled (accepted, or given up
/// with its peer) on a watch channel; a dropped channel settles everything.
#[derive(Debug, Clone)]
pub struct RemoteAcks {
    waits: Vec<(watch::Receiver<u64>, u64)>,
    /// Past this the acknowledgement goes out whatever the links say, so a
    /// node that hangs holds no publisher for longer than this.
    deadline: Instant,
}

impl RemoteAcks {
    /// Nothing to wait for yet, and `deadline` as the limit.
    pub fn new(deadline: Instant) -> RemoteAcks {
        RemoteAcks {
            waits: Vec::new(),
            deadline,
        }
    }

    /// Waits for `settled` to reach `seq` as well.
    pub fn push(&mut self, settled: watch::Receiver<u64>, seq: u64) {
        match self
            .waits
            .iter_mut()
            .find(|(rx, _)| rx.same_channel(&settled))
        {
            Some((_, s)) => *s = (*s).max(seq),
            None => self.waits.push((settled, seq)),
        }
    }

    /// Adds what `other` waits for (the later deadline holds).
    pub fn merge(&mut self, other: RemoteAcks) {
        self.deadline = self.deadline.max(other.deadline);
        for (rx, seq) in other.waits {
            self.push(rx, seq);
        }
    }

    /// True when there is nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }

    /// Completes once every link has settled its sequence number, or at
    /// the deadline. Returns false if the deadline cut it short.
    pub async fn settled(self) -> bool {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        for (mut rx, seq) in self.waits {
            let reached = rx.wait_for(|&settled| settled >= seq);
            match tokio::time::timeout_at(deadline, reached).await {
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        true
    }
}
