//! What an operator asks of the broker about its clients: who is connected
//! (address, user, protocol, keep alive, since when), why a client id was
//! disconnected, and "close this one". Kept beside the session registry and
//! touched only at connect and disconnect, never per message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::info;
use vigil_proto::server::CloseReason;
use vigil_proto::time::Clock;
use vigil_proto::ProtocolVersion;

use super::history::DisconnectRecord;
use super::{Broker, ConnFigures, ConnStats, Control, SessionRef};

/// What the broker knows of one live connection.
#[derive(Debug, Clone)]
struct ConnMeta {
    conn_id: u64,
    peer: SocketAddr,
    username: Option<String>,
    protocol: ProtocolVersion,
    keep_alive: Option<Duration>,
    connected_at: Instant,
    connected_unix_ms: u64,
    listener: Option<Arc<str>>,
    stats: Arc<ConnStats>,
}

/// What `note_connected` records of a connection just accepted.
#[derive(Debug)]
pub(crate) struct NewConnection {
    pub(crate) conn_id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) username: Option<String>,
    pub(crate) protocol: ProtocolVersion,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) listener: Option<Arc<str>>,
    pub(crate) stats: Arc<ConnStats>,
}

/// What `note_disconnect` records of a connection that ended.
#[derive(Debug)]
pub(crate) struct Ended<'a> {
    pub(crate) conn_id: u64,
    pub(crate) reason: &'a CloseReason,
    pub(crate) keep_alive: Option<Duration>,
    /// What became of the will: "publish", "discard" or "none".
    pub(crate) will: &'static str,
    pub(crate) peer: SocketAddr,
    pub(crate) figures: ConnFigures,
}

/// The live connections by client id.
#[derive(Debug, Default)]
pub(crate) struct ClientRegistry {
    live: Mutex<HashMap<Arc<str>, ConnMeta>>,
}

/// One client as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientInfo {
    /// Client identifier.
    pub client_id: String,
    /// A connection has the session now.
    pub connected: bool,
    /// The client's address (None: offline session).
    pub peer: Option<SocketAddr>,
    /// User name of the connection.
    pub username: Option<String>,
    /// MQTT protocol level (3, 4 or 5).
    pub protocol: Option<u8>,
    /// Effective keep alive, seconds.
    pub keep_alive_secs: Option<u64>,
    /// When the connection was accepted (Unix ms).
    pub connected_at_unix_ms: Option<u64>,
    /// Messages waiting in its queue.
    pub queued: usize,
    /// Its subscriptions.
    pub subscriptions: usize,
    /// The session outlives the connection in the store.
    pub durable: bool,
    /// Its connection is idle and parked off its task.
    pub parked: bool,
    /// The listener its connection came through (its kind and address).
    pub listener: Option<String>,
    /// Its connection's bytes, packets, last packet and in-flight count.
    pub figures: Option<ConnFigures>,
}

/// Filters of `GET /api/v1/clients`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFilter {
    /// Client ids starting with this.
    pub prefix: Option<String>,
    /// This user name.
    pub username: Option<String>,
    /// Addresses whose text contains this.
    pub address: Option<String>,
    /// This protocol level.
    pub protocol: Option<u8>,
    /// Listeners whose name (`mqtt 0.0.0.0:1883`, `mqtt+tls ...`) contains this.
    pub listener: Option<String>,
    /// Only connected clients (false: offline sessions too).
    pub connected_only: bool,
}

/// What `Broker::kick` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kicked {
    /// The live connection was told to close (DISCONNECT 0x98).
    Connection,
    /// No connection: the offline session was discarded.
    SessionDiscarded,
    /// No connection, and the session was kept (not asked to discard it).
    NotConnected,
}

impl Broker {
    /// Records the connection `conn_id` of `client_id` (after CONNACK at
    /// `now`), from `listener`, counting into `stats`.
    pub(crate) fn note_connected(&self, now: Clock, client_id: &str, conn: NewConnection) {
        let meta = ConnMeta {
            conn_id: conn.conn_id,
            peer: conn.peer,
            username: conn.username,
            protocol: conn.protocol,
            keep_alive: conn.keep_alive,
            connected_at: now.instant,
            connected_unix_ms: now.unix_ms,
            listener: conn.listener,
            stats: conn.stats,
        };
        self.clients.live.lock().insert(Arc::from(client_id), meta);
    }

    /// Records why the connection `conn_id` of `session` ended at `now`, in
    /// the client id's disconnect history, and forgets the connection.
    pub(crate) fn note_disconnect(&self, now: Clock, session: &SessionRef, ended: Ended<'_>) {
        let Ended {
            conn_id,
            reason,
            keep_alive,
            will,
            peer,
            figures,
        } = ended;
        let connected_at = {
            let mut live = self.clients.live.lock();
            match live.get(session.client_id()) {
                // A takeover may already have put the new connection here.
                Some(m) if m.conn_id == conn_id => {
                    live.remove(session.client_id()).map(|m| m.connected_at)
                }
                _ => None,
            }
        };
        let connected_for =
            connected_at.map_or(Duration::ZERO, |t| now.instant.saturating_duration_since(t));
        if let CloseReason::KeepAliveTimeout {
            silent_for,
            keep_alive,
        } = reason
        {
            let deadline = *keep_alive * 3 / 2;
            crate::observe::histogram::KEEPALIVE_LATENESS
                .record(silent_for.saturating_sub(deadline));
        }
        let record = DisconnectRecord::new(
            now.unix_ms,
            reason,
            keep_alive,
            will,
            peer.to_string(),
            connected_for,
        )
        .with_figures(figures);
        self.history.record(session.client_id(), record);
    }

    /// The last disconnects of `client_id`, newest first.
    pub fn disconnects(&self, client_id: &str) -> Option<Vec<DisconnectRecord>> {
        self.history.of(client_id)
    }

    fn client_info(
        &self,
        session: &SessionRef,
        meta: Option<&ConnMeta>,
        now: Instant,
    ) -> ClientInfo {
        let subscriptions = session.inner.lock().subscriptions.len();
        ClientInfo {
            client_id: session.client_id().to_owned(),
            connected: session.is_online(),
            peer: meta.map(|m| m.peer),
            username: meta.and_then(|m| m.username.clone()),
            protocol: meta.map(|m| m.protocol.level()),
            keep_alive_secs: meta.and_then(|m| m.keep_alive.map(|k| k.as_secs())),
            connected_at_unix_ms: meta.map(|m| m.connected_unix_ms),
            queued: session.mailbox.len(),
            subscriptions,
            durable: session.is_durable(),
            parked: session.is_online() && session.is_parked(),
            listener: meta.and_then(|m| m.listener.as_deref().map(str::to_owned)),
            figures: meta.map(|m| m.stats.read(now)),
        }
    }

    /// The clients (sessions) matching `filter`, sorted by client id, as
    /// they are at `now`.
    pub fn clients(&self, filter: &ClientFilter, now: Instant) -> Vec<ClientInfo> {
        let sessions: Vec<SessionRef> = self.sessions.lock().values().cloned().collect();
        let live = self.clients.live.lock().clone();
        let mut out: Vec<ClientInfo> = sessions
            .iter()
            .filter(|s| {
                filter
                    .prefix
                    .as_deref()
                    .is_none_or(|p| s.client_id().starts_with(p))
            })
            .map(|s| self.client_info(s, live.get(s.client_id()), now))
            .filter(|c| !filter.connected_only || c.connected)
            .filter(|c| {
                filter
                    .username
                    .as_deref()
                    .is_none_or(|u| c.username.as_deref() == Some(u))
            })
            .filter(|c| {
                filter
                    .address
                    .as_deref()
                    .is_none_or(|a| c.peer.is_some_and(|p| p.to_string().contains(a)))
            })
            .filter(|c| filter.protocol.is_none_or(|p| c.protocol == Some(p)))
            .filter(|c| {
                filter
                    .listener
                    .as_deref()
                    .is_none_or(|l| c.listener.as_deref().is_some_and(|n| n.contains(l)))
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// One client as it is at `now` (None: the broker holds no session for it).
    pub fn client(&self, client_id: &str, now: Instant) -> Option<ClientInfo> {
        let session = self.session(client_id)?;
        let meta = self.clients.live.lock().get(client_id).cloned();
        Some(self.client_info(&session, meta.as_ref(), now))
    }

    /// Closes `client_id`'s connection with DISCONNECT 0x98 (Administrative
    /// action); with `discard_session` its session ends too instead of
    /// waiting for its expiry (at `now`). None: no such client.
    pub fn kick(&self, now: Clock, client_id: &str, discard_session: bool) -> Option<Kicked> {
        self.close_client(now, client_id, Control::Kick, discard_session)
    }

    /// Another node of the cluster holds `client_id` now (a newer claim):
    /// its connection here, if any, is closed as a takeover closes it
    /// (DISCONNECT 0x8E on MQTT 5, the will as a local takeover leaves it);
    /// with `end_session` its session here ends too (at `now`, or when the
    /// connection hands back), so that no second session of the id remains.
    /// None: this node holds no session for it.
    pub fn end_taken_elsewhere(
        &self,
        now: Clock,
        client_id: &str,
        end_session: bool,
    ) -> Option<Kicked> {
        self.close_client(now, client_id, Control::TakenOver, end_session)
    }

    fn close_client(
        &self,
        now: Clock,
        client_id: &str,
        control: Control,
        discard_session: bool,
    ) -> Option<Kicked> {
        let session = self.session(client_id)?;
        let mut inner = session.inner.lock();
        if inner.presence.is_ended() {
            return None;
        }
        if discard_session {
            // Read by `disconnect` when the closed connection hands back.
            inner.expiry = 0;
        }
        match inner.presence.conn() {
            Some(conn) => {
                info!(
                    client = client_id,
                    discard_session,
                    ?control,
                    "closing client"
                );
                conn.control.send(control);
                Some(Kicked::Connection)
            }
            None if discard_session => {
                info!(client = client_id, "discarding offline session");
                self.end_session(now, &session, &mut inner);
                Some(Kicked::SessionDiscarded)
            }
            None => Some(Kicked::NotConnected),
        }
    }

    /// Time from the broker's start to `now`.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Retained messages unexpired at `now` whose topic matches `filter`, by topic.
    pub fn retained_matching(
        &self,
        filter: &str,
        now: Instant,
    ) -> Vec<Arc<vigil_proto::message::Message>> {
        let mut found = self.retained.matching(filter, now);
        found.sort_by(|a, b| a.topic.cmp(&b.topic));
        found
    }

    /// A page of `retained_matching`: up to `limit` messages whose topic
    /// sorts after `after`, and the `after` of the next page (None: last
    /// page); expiry is judged at `now`.
    pub fn retained_page(
        &self,
        filter: &str,
        after: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> (Vec<Arc<vigil_proto::message::Message>>, Option<String>) {
        self.retained.page(filter, after, limit, now)
    }

    /// Payload bytes of every retained message.
    pub fn retained_bytes(&self) -> u64 {
        self.retained.payload_bytes()
    }

    /// Live connections by listener name and MQTT protocol level (3, 4,
    /// 5), counted now; every listener that has one, sorted.
    pub fn connections_by_listener(&self) -> Vec<(String, u8, usize)> {
        let mut counts: std::collections::BTreeMap<(String, u8), usize> = Default::default();
        for meta in self.clients.live.lock().values() {
            let listener = meta.listener.as_deref().unwrap_or("mqtt").to_owned();
            *counts.entry((listener, meta.protocol.level())).or_default() += 1;
        }
        counts.into_iter().map(|((l, p), n)| (l, p, n)).collect()
    }

    /// Messages waiting in every session's queue.
    pub fn queued_total(&self) -> usize {
        self.queued_totals().0
    }

    /// Messages waiting in every session's queue, and their bytes as the
    /// queues count them (topic + payload + 64 per message).
    pub fn queued_totals(&self) -> (usize, usize) {
        let sessions: Vec<SessionRef> = self.sessions.lock().values().cloned().collect();
        sessions.iter().fold((0, 0), |(n, b), s| {
            let (sn, sb) = s.mailbox.totals();
            (n + sn, b + sb)
        })
    }

    /// Subscriptions over all sessions, and how many of them are shared.
    pub fn subscription_counts(&self) -> (usize, usize) {
        let sessions: Vec<SessionRef> = self.sessions.lock().values().cloned().collect();
        sessions.iter().fold((0, 0), |(all, shared), s| {
            let inner = s.inner.lock();
            let n = inner
                .subscriptions
                .keys()
                .filter(|f| f.starts_with("$share/"))
                .count();
            (all + inner.subscriptions.len(), shared + n)
        })
    }

    /// Subscriptions over all sessions (filter, client id).
    pub fn all_subscriptions(&self) -> Vec<(String, String)> {
        let sessions: Vec<SessionRef> = self.sessions.lock().values().cloned().collect();
        let mut out: Vec<(String, String)> = sessions
            .iter()
            .flat_map(|s| {
                s.subscriptions()
                    .into_iter()
                    .map(|f| (f, s.client_id().to_owned()))
            })
            .collect();
        out.sort();
        out
    }
}
