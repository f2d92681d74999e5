//! The broker core: the session registry (takeover, clean start, resume,
//! expiry), routing of published messages into bounded mailboxes, retained
//! messages, and wills with their delay. Every method takes `&self` and is
//! called concurrently from connection tasks.
//!
//! Sans-IO, like `vigil_proto`: nothing here reads a clock, sleeps or waits.
//! Whatever depends on time takes `now` from its caller (an `Instant`, or a
//! `Clock` where a deadline or an expiry may be written to the store), and
//! the timers are pure deadline logic (`poll_timeout` / `handle_timeout(now)`).
//! Where the protocol must wait (a takeover's hand-back, room in a full
//! queue), the core gives a plain answer ("held", "full") and a notification
//! to wait on, and the tokio layer (`crate::connection`, the timer task in
//! `crate::server`) does the waiting with its timeouts. Tests drive all of
//! it on a virtual clock.

pub(crate) mod clients;
pub(crate) mod cluster;
pub(crate) mod conn_stats;
pub(crate) mod counters;
pub(crate) mod handover;
pub(crate) mod history;
pub(crate) mod mailbox;
pub(crate) mod overflow;
mod persist;
mod registry;
mod retained;
pub(crate) mod routing;
pub(crate) mod session;
mod shared;
pub(crate) mod signal;
mod subscriptions;
pub(crate) mod timers;
mod wake_inbox;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::info;
use vigil_proto::server::{CloseReason, SessionState};
use vigil_proto::time::Clock;
use vigil_proto::{ProtocolVersion, Will};
use vigil_store::{Contents, Store};

// The public face (re-exported at the crate root) ...
pub use conn_stats::ConnFigures;
pub use counters::{Counters, ShardedCounter};
pub use mailbox::MailboxLimits;
pub use overflow::{OverflowConfig, SlowConsumerPolicy};
// ... and what only the rest of the crate uses.
pub(crate) use conn_stats::ConnStats;
pub(crate) use mailbox::{PushOutcome, Wakes};
pub(crate) use overflow::StillBlocked;
pub(crate) use session::{Control, ControlSignal, Session, SessionRef};
pub(crate) use subscriptions::SubscriptionIndex;
pub(crate) use wake_inbox::WakeInbox;

use retained::RetainedIndex;
use session::Presence;
use signal::WakeSignal;
use timers::DeadlineQueue;

/// Limits of the broker core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// Bound of each session's delivery queue.
    pub mailbox: MailboxLimits,
    /// Upper bound on session expiry intervals (seconds).
    pub max_session_expiry: Option<u32>,
    /// How long a takeover waits for the old connection to hand its state
    /// back (the connection layer's wait: see `Claim::Held`).
    pub takeover_wait: Duration,
    /// What full subscriber queues cost publishers, and what slow consumers get.
    pub overflow: OverflowConfig,
    /// Inbound PUBLISH rate limits per client (`[limits] max_publish_rate`,
    /// `max_publish_bytes_rate`), applied by each connection. Kept here, not
    /// in the per-connection `ServerConfig`, which every connection carries.
    pub publish_rate: vigil_proto::server::PublishRateLimit,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            mailbox: MailboxLimits {
                max_messages: 1000,
                max_bytes: 16 * 1024 * 1024,
            },
            max_session_expiry: None,
            takeover_wait: Duration::from_secs(5),
            overflow: OverflowConfig::default(),
            publish_rate: vigil_proto::server::PublishRateLimit::default(),
        }
    }
}

/// A CONNECT the connection layer has validated.
#[derive(Debug, Clone)]
pub(crate) struct ConnectRequest {
    /// Client identifier (never empty: the connection assigns one first).
    pub client_id: String,
    /// Protocol version of the client.
    pub protocol: ProtocolVersion,
    /// Clean Start / Clean Session.
    pub clean_start: bool,
    /// Session Expiry Interval in seconds; u32::MAX never expires (3.1.1 clean session 0).
    pub session_expiry: u32,
    /// The will, if any.
    pub will: Option<Will>,
    /// User name, if any.
    pub username: Option<String>,
}

/// What a CONNECT's claim on its session came to.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The session is the new connection's.
    Granted(ConnectGrant),
    /// A live connection holds the session and was told `Control::TakenOver`.
    /// The caller waits (at most `CoreConfig::takeover_wait`) for it to hand
    /// the session back through `disconnect`, which fires the session's
    /// `released` notification, and claims again; if it did not hand back in
    /// time, `take_back` takes the session from it first.
    Held {
        /// The connection that holds it.
        conn_id: u64,
    },
    /// The registry holds another session for this client id now (the one
    /// claimed ended meanwhile): claim that one.
    Replaced,
}

/// The broker's yes to a CONNECT.
#[derive(Debug)]
pub(crate) struct ConnectGrant {
    /// Session Present.
    pub session_present: bool,
    /// The session (its mailbox is what the connection drains).
    pub session: SessionRef,
    /// Resumed protocol state (default for a new session).
    pub state: SessionState,
    /// Where the broker's `Control` messages arrive.
    pub control: Arc<ControlSignal>,
    /// This connection's id, to pass back to `disconnect`.
    pub conn_id: u64,
}

/// How a connection that held a session ended.
#[derive(Debug)]
pub(crate) struct DisconnectInfo {
    /// Why.
    pub reason: CloseReason,
    /// Publish the will (no DISCONNECT 0x00 was received).
    pub publish_will: bool,
    /// A Session Expiry Interval sent in the client's DISCONNECT.
    pub session_expiry: Option<u32>,
    /// The session's protocol state, handed back.
    pub state: SessionState,
}

#[derive(Debug)]
enum Timer {
    Will {
        session: SessionRef,
        generation: u64,
        will: Box<Will>,
    },
    Expire {
        session: SessionRef,
        generation: u64,
    },
}

/// The broker core, shared by every connection.
#[derive(Debug)]
pub struct Broker {
    config: CoreConfig,
    sessions: Mutex<HashMap<Arc<str>, SessionRef>>,
    subs: SubscriptionIndex<SessionRef>,
    retained: RetainedIndex,
    timers: Mutex<DeadlineQueue<Timer>>,
    /// Told when a deadline was scheduled, so the timer task looks again.
    timer_wake: WakeSignal,
    counters: Counters,
    next_key: AtomicU64,
    next_conn: AtomicU64,
    /// Write-through persistence; None keeps everything in memory only.
    store: Option<Store>,
    next_seq: AtomicU64,
    /// Authentication and authorization (crate::auth), when configured.
    pub(crate) auth: crate::auth::AuthSlot,
    /// Live connections' addresses and the like, for the admin API.
    clients: clients::ClientRegistry,
    /// The last disconnects of every client id.
    history: history::DisconnectHistory,
    /// When the broker started (for its uptime).
    started: Instant,
    /// The cluster this broker is a node of; never set on a single node.
    cluster: std::sync::OnceLock<Arc<dyn cluster::ClusterHook>>,
    /// On a cluster node, held (shared) by each local publish from its
    /// hand-off to the cluster to its local delivery, and (exclusive) by a
    /// session arriving from another node: a publish is routed wholly
    /// before the arrival or wholly after it.
    routing_gate: parking_lot::RwLock<()>,
}

impl Broker {
    /// A broker with no sessions, started at `now`.
    pub fn new(config: CoreConfig, now: Instant) -> Arc<Broker> {
        Arc::new(Broker::build(config, None, now))
    }

    /// A broker that writes through `store`, recovered at `now` from what it
    /// held (deadlines that ran out while it was down are due at once).
    pub fn with_store(
        config: CoreConfig,
        store: Store,
        contents: Contents,
        now: Clock,
    ) -> Arc<Broker> {
        let broker = Broker::build(config, Some(store), now.instant);
        broker.recover(contents, now);
        Arc::new(broker)
    }

    fn build(config: CoreConfig, store: Option<Store>, now: Instant) -> Broker {
        Broker {
            config,
            sessions: Mutex::new(HashMap::new()),
            subs: SubscriptionIndex::default(),
            retained: RetainedIndex::default(),
            timers: Mutex::new(DeadlineQueue::default()),
            timer_wake: WakeSignal::default(),
            counters: Counters::default(),
            next_key: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            store,
            next_seq: AtomicU64::new(1),
            auth: Default::default(),
            clients: clients::ClientRegistry::default(),
            history: history::DisconnectHistory::default(),
            started: now,
            cluster: std::sync::OnceLock::new(),
            routing_gate: parking_lot::RwLock::new(()),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The limits the broker was built with.
    pub(crate) fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The per-client PUBLISH rate limits new connections get.
    pub(crate) fn publish_rate(&self) -> vigil_proto::server::PublishRateLimit {
        self.config.publish_rate
    }

    /// Number of sessions held (online and offline).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// The session of `client_id`, if the broker holds one.
    pub(crate) fn session(&self, client_id: &str) -> Option<SessionRef> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// The earliest will-delay or session-expiry deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.lock().next_deadline()
    }

    /// Told whenever a new deadline is scheduled: the one task that drives
    /// the timers waits on it beside its sleep to `poll_timeout`.
    pub(crate) fn timers_changed(&self) -> &WakeSignal {
        &self.timer_wake
    }

    /// Fires the wills and session expiries due at `now`: a deadline fires
    /// at exactly its instant, never a tick before.
    pub(crate) fn handle_timeout(&self, now: Clock) {
        let due = self.timers.lock().pop_due(now.instant);
        for timer in due {
            match timer {
                Timer::Will {
                    session,
                    generation,
                    will,
                } => {
                    let still_away = {
                        let inner = session.inner.lock();
                        inner.generation == generation && inner.presence.conn().is_none()
                    };
                    if still_away {
                        self.publish_will(now, &session, *will);
                        // The record no longer carries a will waiting on its delay.
                        let inner = session.inner.lock();
                        if !inner.presence.is_ended() {
                            self.persist_session(&session, &inner);
                        }
                    }
                }
                Timer::Expire {
                    session,
                    generation,
                } => {
                    let mut inner = session.inner.lock();
                    let away = matches!(inner.presence, Presence::Away { .. });
                    if inner.generation == generation && away {
                        info!(client = session.client_id(), "session expired");
                        Counters::add(&self.counters.sessions_expired, 1);
                        self.end_session(now, &session, &mut inner);
                    }
                }
            }
        }
    }

    fn schedule(&self, at: Instant, timer: Timer) {
        self.timers.lock().schedule(at, timer);
        self.timer_wake.notify();
    }
}

#[cfg(test)]
impl Broker {
    /// Connects `req` in one step, as the connection layer does when no live
    /// connection holds the session (tests only: a held session panics).
    pub(crate) fn connect_now(&self, now: Clock, req: &ConnectRequest) -> ConnectGrant {
        loop {
            let session = self.session_for(&req.client_id);
            match self.claim(now, &session, req) {
                Claim::Granted(grant) => return grant,
                Claim::Replaced => continue,
                Claim::Held { conn_id } => panic!("connection {conn_id} holds the session"),
            }
        }
    }
}

#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod tests;
