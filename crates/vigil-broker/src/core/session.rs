//! One client's session as the broker holds it: its mailbox, whether a
//! connection has it now, and what must survive until it expires.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use vigil_proto::server::SessionState;
use vigil_proto::{ProtocolVersion, SubscriptionOptions, Will};

use super::mailbox::Mailbox;

/// What the broker tells a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// A new connection with the same client id took the session: send
    /// DISCONNECT 0x8E (MQTT 5), close, and hand the state back.
    TakenOver,
    /// The broker is stopping: send DISCONNECT 0x8B (MQTT 5) and close.
    Shutdown,
}

#[derive(Debug)]
pub(crate) struct LiveConn {
    pub(crate) conn_id: u64,
    pub(crate) control: mpsc::UnboundedSender<Control>,
}

#[derive(Debug)]
pub(crate) struct SessionInner {
    pub(crate) conn: Option<LiveConn>,
    /// Bumped at every connect: timers armed for an older generation are void.
    pub(crate) generation: u64,
    /// Protocol state parked while no connection has the session.
    pub(crate) state: Option<SessionState>,
    pub(crate) expiry: u32,
    /// When the last connection ended (Unix ms), kept for the store.
    pub(crate) away_since: Option<u64>,
    /// Boxed: most sessions have no will, and a will's properties are large.
    pub(crate) will: Option<Box<Will>>,
    pub(crate) protocol: ProtocolVersion,
    /// Filters as the client wrote them (with any `$share/` prefix), with
    /// their options and subscription identifier (kept for the store).
    pub(crate) subscriptions: BTreeMap<String, (SubscriptionOptions, Option<u32>)>,
    /// Never connected yet.
    pub(crate) fresh: bool,
    /// Removed from the registry (expired or ended at disconnect).
    pub(crate) ended: bool,
}

/// A session, shared by the registry, the subscription index and its connection.
#[derive(Debug)]
pub struct Session {
    pub(crate) key: u64,
    client_id: Arc<str>,
    online: AtomicBool,
    /// Written through to the store (a store exists and the session outlives its connection).
    durable: AtomicBool,
    /// Deliveries waiting for the connection.
    pub mailbox: Mailbox,
    pub(crate) released: Notify,
    pub(crate) connect_lock: tokio::sync::Mutex<()>,
    pub(crate) inner: Mutex<SessionInner>,
}

impl Session {
    pub(crate) fn new(key: u64, client_id: Arc<str>) -> Session {
        Session {
            key,
            client_id,
            online: AtomicBool::new(false),
            durable: AtomicBool::new(false),
            mailbox: Mailbox::default(),
            released: Notify::new(),
            connect_lock: tokio::sync::Mutex::new(()),
            inner: Mutex::new(SessionInner {
                conn: None,
                generation: 0,
                state: None,
                expiry: 0,
                away_since: None,
                will: None,
                protocol: ProtocolVersion::V5,
                subscriptions: BTreeMap::new(),
                fresh: true,
                ended: false,
            }),
        }
    }

    /// The client identifier.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// True while a connection has this session.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    pub(crate) fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// True when the session's state and queue are written to the store.
    pub fn is_durable(&self) -> bool {
        self.durable.load(Ordering::Acquire)
    }

    pub(crate) fn set_durable(&self, durable: bool) {
        self.durable.store(durable, Ordering::Release);
    }

    /// The filters this session is subscribed to, as the client wrote them.
    pub fn subscriptions(&self) -> Vec<String> {
        self.inner.lock().subscriptions.keys().cloned().collect()
    }
}

/// A shared session handle.
pub type SessionRef = Arc<Session>;
