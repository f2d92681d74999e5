//! The broker core: the session registry (takeover, clean start, resume,
//! expiry), routing of published messages into bounded mailboxes, retained
//! messages, and wills with their delay. Every method takes `&self` and is
//! called concurrently from connection tasks; the timers are pure deadline
//! logic (`poll_timeout` / `handle_timeout(now)`) driven by one small task.

pub mod clients;
pub mod cluster;
pub mod conn_stats;
pub mod counters;
pub mod history;
pub mod mailbox;
pub mod overflow;
mod persist;
mod retained;
pub mod routing;
pub mod session;
mod shared;
pub mod signal;
mod subscriptions;
pub mod timers;
mod wake_inbox;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{info, warn};
use vigil_proto::server::{CloseReason, SessionState};
use vigil_proto::{ProtocolVersion, ReasonCode, Will};
use vigil_store::{Clock, Contents, Op, Store};

pub use conn_stats::{ConnFigures, ConnStats};
pub use counters::{Counters, ShardedCounter};
pub use mailbox::{Mailbox, MailboxLimits, PushOutcome, StallEnded, Wakes};
pub use overflow::{OverflowConfig, SlowConsumerPolicy};
pub use session::{Control, ControlSignal, Session, SessionRef};
pub use subscriptions::{Match, SubscriptionIndex};
pub use wake_inbox::WakeInbox;

use retained::RetainedIndex;
use session::{LiveConn, Presence, SessionInner};
use timers::DeadlineQueue;

/// Limits of the broker core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// Bound of each session's delivery queue.
    pub mailbox: MailboxLimits,
    /// Upper bound on session expiry intervals (seconds).
    pub max_session_expiry: Option<u32>,
    /// How long a takeover waits for the old connection to hand its state back.
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
pub struct ConnectRequest {
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
    /// The client's address.
    pub peer: SocketAddr,
}

/// The broker's yes to a CONNECT.
#[derive(Debug)]
pub struct ConnectGrant {
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
pub struct DisconnectInfo {
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
    timer_wake: Notify,
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
    started: Instant,
    /// The cluster this broker is a node of; never set on a single node.
    cluster: std::sync::OnceLock<Arc<dyn cluster::ClusterHook>>,
}

impl Broker {
    /// A broker with no sessions.
    pub fn new(config: CoreConfig) -> Arc<Broker> {
        Arc::new(Broker::build(config, None))
    }

    /// A broker that writes through `store`, recovered from what it held.
    pub fn with_store(config: CoreConfig, store: Store, contents: Contents) -> Arc<Broker> {
        let broker = Broker::build(config, Some(store));
        broker.recover(contents);
        Arc::new(broker)
    }

    fn build(config: CoreConfig, store: Option<Store>) -> Broker {
        Broker {
            config,
            sessions: Mutex::new(HashMap::new()),
            subs: SubscriptionIndex::default(),
            retained: RetainedIndex::default(),
            timers: Mutex::new(DeadlineQueue::default()),
            timer_wake: Notify::new(),
            counters: Counters::default(),
            next_key: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            store,
            next_seq: AtomicU64::new(1),
            auth: Default::default(),
            clients: clients::ClientRegistry::default(),
            history: history::DisconnectHistory::default(),
            started: Instant::now(),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The per-client PUBLISH rate limits new connections get.
    pub fn publish_rate(&self) -> vigil_proto::server::PublishRateLimit {
        self.config.publish_rate
    }

    /// Number of sessions held (online and offline).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// The session of `client_id`, if the broker holds one.
    pub fn session(&self, client_id: &str) -> Option<SessionRef> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// Attaches a new connection to the session of `req.client_id`, taking it
    /// over from a live connection first (which gets `Control::TakenOver` and
    /// must hand its state back through `disconnect`).
    pub async fn connect(&self, req: ConnectRequest) -> Result<ConnectGrant, ReasonCode> {
        loop {
            let session = self.session_for(&req.client_id);
            let _serialised = session.connect_lock.lock().await;
            self.take_over(&session).await;
            {
                let mut map = self.sessions.lock();
                match map.get(req.client_id.as_str()) {
                    Some(s) if Arc::ptr_eq(s, &session) => {}
                    Some(_) => continue,
                    None => {
                        map.insert(Arc::from(req.client_id.as_str()), session.clone());
                    }
                }
            }
            let control = Arc::new(ControlSignal::default());
            let conn_id = self.next_conn.fetch_add(1, Relaxed);
            let mut inner = session.inner.lock();
            inner.generation += 1;
            let resume = matches!(inner.presence, Presence::Away { .. } | Presence::Online(_))
                && !req.clean_start;
            if !resume {
                self.clear_session(&session, &mut inner);
            }
            inner.expiry = self.cap_expiry(req.session_expiry);
            inner.will = req.will.clone().map(Box::new);
            inner.username = req.username.clone().map(Arc::new);
            inner.protocol = req.protocol;
            let live = Presence::Online(LiveConn {
                conn_id,
                control: control.clone(),
            });
            let state = match std::mem::replace(&mut inner.presence, live) {
                Presence::Away { state, .. } => state.map(|s| *s).unwrap_or_default(),
                _ => SessionState::default(),
            };
            if self.store.is_some() {
                let was_durable = session.is_durable();
                let durable = inner.expiry > 0;
                session.set_durable(durable);
                let mut ops = Vec::new();
                if !resume && was_durable {
                    ops.push(Op::ClearQueue(session.key));
                }
                if durable {
                    ops.push(Op::PutSession(self.session_record(&session, &inner, None)));
                } else if was_durable {
                    ops.push(Op::DeleteSession(session.key));
                }
                self.persist(ops);
            }
            drop(inner);
            session.set_online(true);
            Counters::add(&self.counters.connections_total, 1);
            Counters::add(&self.counters.connections_current, 1);
            return Ok(ConnectGrant {
                session_present: resume,
                session: session.clone(),
                state,
                control,
                conn_id,
            });
        }
    }

    /// The connection `conn_id` of `session` has ended.
    pub fn disconnect(
        &self,
        now: Instant,
        session: &SessionRef,
        conn_id: u64,
        info: DisconnectInfo,
    ) {
        let mut inner = session.inner.lock();
        if inner.presence.conn().map(|c| c.conn_id) != Some(conn_id) {
            return;
        }
        inner.presence = Presence::AWAY;
        session.set_online(false);
        self.counters.connections_current.fetch_sub(1, Relaxed);
        self.counters.count_disconnect(&info.reason);
        if let Some(e) = info.session_expiry {
            inner.expiry = self.cap_expiry(e);
        }
        let will = inner.will.take().filter(|_| info.publish_will);
        let expiry = inner.expiry;
        let generation = inner.generation;
        let delay = will
            .as_ref()
            .map_or(0, |w| w.properties.will_delay_interval.unwrap_or(0));
        // The reconnect that took the session over cancels a delayed will.
        let cancelled = info.reason == CloseReason::TakenOver && delay > 0;
        let delayed = will.is_some() && !cancelled && delay > 0 && expiry > 0;
        if expiry == 0 {
            // Kept for the moment it takes to hand shared deliveries on.
            inner.presence = Presence::Away {
                since: None,
                state: Some(Box::new(info.state)),
            };
            self.end_session(session, &mut inner);
        } else {
            inner.presence = Presence::Away {
                since: None,
                state: Some(Box::new(info.state)),
            };
            if expiry != u32::MAX {
                self.schedule(
                    now + secs(expiry),
                    Timer::Expire {
                        session: session.clone(),
                        generation,
                    },
                );
            }
            if session.is_durable() {
                let clock = Clock::now();
                let due = clock.to_unix(now + secs(delay.min(expiry)));
                let pending = will.as_deref().filter(|_| delayed).map(|w| (w, due));
                if let Presence::Away { since, .. } = &mut inner.presence {
                    *since = std::num::NonZeroU64::new(clock.to_unix(now));
                }
                let record = self.session_record(session, &inner, pending);
                self.persist(vec![Op::PutSession(record)]);
            }
        }
        drop(inner);
        session.released.notify_waiters();
        if let Some(will) = will {
            if cancelled {
                info!(
                    client = session.client_id(),
                    "delayed will cancelled by takeover"
                );
            } else if !delayed {
                self.publish_will(session, *will);
            } else {
                self.schedule(
                    now + secs(delay.min(expiry)),
                    Timer::Will {
                        session: session.clone(),
                        generation,
                        will,
                    },
                );
            }
        }
    }

    /// Tells every live connection to close with `Control::Shutdown`.
    pub fn shutdown(&self) {
        let sessions: Vec<SessionRef> = self.sessions.lock().values().cloned().collect();
        for s in sessions {
            if let Some(c) = s.inner.lock().presence.conn() {
                c.control.send(Control::Shutdown);
            }
        }
    }

    /// The earliest will-delay or session-expiry deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.lock().next_deadline()
    }

    /// Fires the wills and session expiries due at `now`.
    pub fn handle_timeout(&self, now: Instant) {
        let due = self.timers.lock().pop_due(now);
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
                        self.publish_will(&session, *will);
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
                        self.end_session(&session, &mut inner);
                    }
                }
            }
        }
    }

    /// Runs the timers until the task is dropped: sleeps to the next deadline.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.poll_timeout();
            let woken = self.timer_wake.notified();
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = woken => {}
                    }
                }
                None => woken.await,
            }
            self.handle_timeout(Instant::now());
        }
    }

    fn schedule(&self, at: Instant, timer: Timer) {
        self.timers.lock().schedule(at, timer);
        self.timer_wake.notify_one();
    }

    fn cap_expiry(&self, expiry: u32) -> u32 {
        match self.config.max_session_expiry {
            Some(max) => expiry.min(max),
            None => expiry,
        }
    }

    fn session_for(&self, client_id: &str) -> SessionRef {
        let mut map = self.sessions.lock();
        if let Some(s) = map.get(client_id) {
            return s.clone();
        }
        let id: Arc<str> = Arc::from(client_id);
        let s = Arc::new(Session::new(
            self.next_key.fetch_add(1, Relaxed),
            id.clone(),
        ));
        map.insert(id, s.clone());
        s
    }

    async fn take_over(&self, session: &SessionRef) {
        let released = session.released.notified();
        tokio::pin!(released);
        // Enabled before looking, so a hand-back right after the look is not missed.
        released.as_mut().enable();
        let control = session
            .inner
            .lock()
            .presence
            .conn()
            .map(|c| c.control.clone());
        let Some(control) = control else { return };
        info!(
            client = session.client_id(),
            "taking over the session from its live connection"
        );
        control.send(Control::TakenOver);
        if tokio::time::timeout(self.config.takeover_wait, released)
            .await
            .is_err()
        {
            warn!(
                client = session.client_id(),
                "old connection did not hand its session back in time"
            );
        }
        let mut inner = session.inner.lock();
        if inner.presence.conn().is_some() {
            inner.presence = Presence::AWAY;
            session.set_online(false);
            self.counters.connections_current.fetch_sub(1, Relaxed);
            self.counters.count_disconnect(&CloseReason::TakenOver);
        }
    }

    /// Forgets subscriptions, queued messages and state (clean start,
    /// session end); what came through shared subscriptions goes to other
    /// members of their groups.
    fn clear_session(&self, session: &SessionRef, inner: &mut SessionInner) {
        let orphans = self.take_shared_orphans(session, inner);
        for filter in std::mem::take(&mut inner.subscriptions).into_keys() {
            self.remove_subscription(session, &filter);
        }
        session.mailbox.clear();
        if let Presence::Away { state, .. } = &mut inner.presence {
            *state = None;
        }
        self.hand_on_shared(session, orphans);
    }

    /// Ends a session for good and removes it from the registry.
    fn end_session(&self, session: &SessionRef, inner: &mut SessionInner) {
        self.clear_session(session, inner);
        inner.presence = Presence::Ended;
        if session.is_durable() {
            session.set_durable(false);
            self.persist(vec![Op::DeleteSession(session.key)]);
        }
        let mut map = self.sessions.lock();
        if map
            .get(session.client_id())
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            map.remove(session.client_id());
        }
    }
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod tests;
