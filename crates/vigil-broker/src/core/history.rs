//! "Why did this client disconnect?": the last disconnects of every client
//! id, kept in a bounded ring per id under a global bound, so an operator can
//! ask after the fact and a fleet of churning ids cannot grow it without end.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use vigil_proto::server::CloseReason;
use vigil_proto::ReasonCode;

use super::ConnFigures;

/// Disconnects kept per client id.
pub(crate) const PER_CLIENT: usize = 16;
/// Disconnects kept over all client ids; the oldest go first.
pub(crate) const GLOBAL: usize = 20_000;

/// One ended connection, as the broker saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct DisconnectRecord {
    /// When it ended (Unix milliseconds).
    pub at_unix_ms: u64,
    /// Stable label of the reason ("keep_alive_timeout", ...).
    pub reason: &'static str,
    /// The reason in words, with its numbers.
    pub detail: String,
    /// The MQTT 5 reason code that describes it (sent to v5 clients where the protocol allows).
    pub reason_code: u8,
    /// The effective keep alive in seconds (None: not negotiated).
    pub keep_alive_secs: Option<u64>,
    /// Seconds the client had been silent when it was closed for keep alive.
    pub silent_secs: Option<f64>,
    /// What became of the will: "publish", "discard" or "none".
    pub will: &'static str,
    /// The client's address.
    pub peer: String,
    /// How long the connection lasted, seconds.
    pub connected_secs: f64,
    /// Its bytes and packets each way (`since_last_packet` is None: see
    /// `silent_secs`; `inflight` is what was unacknowledged at the close).
    pub figures: ConnFigures,
}

impl DisconnectRecord {
    /// A record of `reason`, ended at `at_unix_ms`.
    pub fn new(
        at_unix_ms: u64,
        reason: &CloseReason,
        keep_alive: Option<Duration>,
        will: &'static str,
        peer: String,
        connected_for: Duration,
    ) -> DisconnectRecord {
        let silent_secs = match reason {
            CloseReason::KeepAliveTimeout { silent_for, .. } => Some(silent_for.as_secs_f64()),
            _ => None,
        };
        DisconnectRecord {
            at_unix_ms,
            reason: reason.label(),
            detail: reason.to_string(),
            reason_code: reason_code(reason).0,
            keep_alive_secs: keep_alive.map(|k| k.as_secs()),
            silent_secs,
            will,
            peer,
            connected_secs: connected_for.as_secs_f64(),
            figures: ConnFigures::default(),
        }
    }

    /// The record with the connection's final figures.
    pub fn with_figures(mut self, figures: ConnFigures) -> DisconnectRecord {
        self.figures = ConnFigures {
            since_last_packet: None,
            ..figures
        };
        self
    }
}

/// The MQTT 5 reason code naming `reason`.
pub(crate) fn reason_code(reason: &CloseReason) -> ReasonCode {
    match reason {
        CloseReason::ClientDisconnect(r) | CloseReason::ConnectRefused(r) => *r,
        CloseReason::KeepAliveTimeout { .. } => ReasonCode::KEEP_ALIVE_TIMEOUT,
        CloseReason::ConnectTimeout | CloseReason::AuthTimeout => ReasonCode::MAXIMUM_CONNECT_TIME,
        CloseReason::ProtocolError { reason, .. } => *reason,
        CloseReason::TakenOver => ReasonCode::SESSION_TAKEN_OVER,
        CloseReason::ServerShutdown => ReasonCode::SERVER_SHUTTING_DOWN,
        CloseReason::SlowConsumer => ReasonCode::QUOTA_EXCEEDED,
        CloseReason::Kicked => ReasonCode::ADMINISTRATIVE_ACTION,
        CloseReason::Revoked => ReasonCode::NOT_AUTHORIZED,
        CloseReason::LoginExpired => ReasonCode::MAXIMUM_CONNECT_TIME,
        CloseReason::PeerClosed | CloseReason::Io(_) => ReasonCode::UNSPECIFIED_ERROR,
        CloseReason::StoreFailed(_) => ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Each id's records with their sequence numbers, oldest first.
    per_client: HashMap<Arc<str>, VecDeque<(u64, DisconnectRecord)>>,
    /// (sequence, id) in the order records were added: the front names the
    /// oldest record when the global bound is hit. Entries whose record its
    /// own ring already dropped are skipped, and swept when they pile up.
    order: VecDeque<(u64, Arc<str>)>,
    live: usize,
    next_seq: u64,
}

impl Inner {
    fn is_live(&self, seq: u64, id: &str) -> bool {
        self.per_client
            .get(id)
            .is_some_and(|ring| ring.iter().any(|(s, _)| *s == seq))
    }
}

/// The bounded disconnect history of every client id.
#[derive(Debug)]
pub(crate) struct DisconnectHistory {
    per_client: usize,
    global: usize,
    inner: Mutex<Inner>,
}

impl Default for DisconnectHistory {
    fn default() -> Self {
        DisconnectHistory::with_bounds(PER_CLIENT, GLOBAL)
    }
}

impl DisconnectHistory {
    /// A history keeping `per_client` records per id and `global` in all.
    pub(crate) fn with_bounds(per_client: usize, global: usize) -> DisconnectHistory {
        DisconnectHistory {
            per_client: per_client.max(1),
            global: global.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Adds `record` to `client_id`'s ring, dropping the oldest beyond the bounds.
    pub(crate) fn record(&self, client_id: &str, record: DisconnectRecord) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let id: Arc<str> = match inner.per_client.get_key_value(client_id) {
            Some((k, _)) => k.clone(),
            None => Arc::from(client_id),
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let ring = inner.per_client.entry(id.clone()).or_default();
        if ring.len() >= self.per_client {
            ring.pop_front();
            inner.live -= 1;
        }
        ring.push_back((seq, record));
        inner.live += 1;
        inner.order.push_back((seq, id));
        while inner.live > self.global {
            let Some((seq, oldest)) = inner.order.pop_front() else {
                break;
            };
            let Some(ring) = inner.per_client.get_mut(&oldest) else {
                continue;
            };
            if ring.front().is_some_and(|(s, _)| *s == seq) {
                ring.pop_front();
                inner.live -= 1;
                if ring.is_empty() {
                    inner.per_client.remove(&oldest);
                }
            }
        }
        // Entries of records their ring dropped: sweep once they are as many
        // as the live ones, so the sweep costs O(1) per record.
        if inner.order.len() > 2 * inner.live + 64 {
            let order = std::mem::take(&mut inner.order);
            let kept: VecDeque<_> = order
                .into_iter()
                .filter(|(seq, id)| inner.is_live(*seq, id))
                .collect();
            inner.order = kept;
        }
    }

    /// The disconnects of `client_id`, newest first (None: none kept).
    pub(crate) fn of(&self, client_id: &str) -> Option<Vec<DisconnectRecord>> {
        let inner = self.inner.lock();
        inner
            .per_client
            .get(client_id)
            .map(|ring| ring.iter().rev().map(|(_, r)| r.clone()).collect())
    }

    /// Records kept in all.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> DisconnectRecord {
        DisconnectRecord::new(
            n,
            &CloseReason::KeepAliveTimeout {
                silent_for: Duration::from_millis(7500),
                keep_alive: Duration::from_secs(5),
            },
            Some(Duration::from_secs(5)),
            "publish",
            "127.0.0.1:1".into(),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn keeps_the_newest_per_client_newest_first() {
        let h = DisconnectHistory::with_bounds(3, 100);
        for n in 0..5 {
            h.record("a", rec(n));
        }
        let got: Vec<u64> = h.of("a").unwrap().iter().map(|r| r.at_unix_ms).collect();
        assert_eq!(got, vec![4, 3, 2]);
        assert_eq!(h.len(), 3);
        assert!(h.of("b").is_none());
    }

    #[test]
    fn the_global_bound_drops_the_oldest_over_all_ids() {
        let h = DisconnectHistory::with_bounds(10, 4);
        h.record("a", rec(1));
        h.record("b", rec(2));
        h.record("a", rec(3));
        h.record("c", rec(4));
        h.record("d", rec(5));
        h.record("e", rec(6));
        assert_eq!(h.len(), 4);
        // a's first and b's only record were the oldest.
        assert!(h.of("b").is_none());
        let a: Vec<u64> = h.of("a").unwrap().iter().map(|r| r.at_unix_ms).collect();
        assert_eq!(a, vec![3]);
        assert!(h.of("e").is_some());
    }

    #[test]
    fn one_churning_id_stays_bounded() {
        let h = DisconnectHistory::with_bounds(2, 100);
        for n in 0..10_000 {
            h.record("a", rec(n));
        }
        assert_eq!(h.len(), 2);
        assert!(h.inner.lock().order.len() <= 2 * 2 + 64 + 1);
    }

    #[test]
    fn a_keep_alive_close_keeps_its_numbers() {
        let r = rec(0);
        assert_eq!(r.reason, "keep_alive_timeout");
        assert_eq!(r.reason_code, 0x8D);
        assert_eq!(r.keep_alive_secs, Some(5));
        assert_eq!(r.silent_secs, Some(7.5));
        assert_eq!(
            r.detail,
            "keep alive expired after 7.500 s of silence with K = 5 s"
        );
    }
}
