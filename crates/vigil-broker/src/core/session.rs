//! One client's session as the broker holds it: its mailbox, whether a
//! connection has it now, and what must survive until it expires.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::Notify;
use vigil_proto::server::SessionState;
use vigil_proto::{ProtocolVersion, Will};

pub(crate) use filters::Filters;

use super::mailbox::Mailbox;
use super::signal::WakeSignal;

/// What the broker tells a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// A new connection with the same client id took the session: send
    /// DISCONNECT 0x8E (MQTT 5), close, and hand the state back.
    TakenOver,
    /// The broker is stopping: send DISCONNECT 0x8B (MQTT 5) and close.
    Shutdown,
    /// The client's queue stayed full (slow consumer policy `disconnect`):
    /// send DISCONNECT 0x97 (MQTT 5) and close.
    SlowConsumer,
    /// A reload revoked the client's credentials: send DISCONNECT 0x87
    /// (MQTT 5) and close.
    Revoked,
    /// The client's login (a JWT) expired: send DISCONNECT 0xA0 (MQTT 5) and close.
    Expired,
    /// An operator kicked the client: send DISCONNECT 0x98 (MQTT 5) and close.
    Kick,
}

impl Control {
    fn to_word(self) -> u8 {
        match self {
            Control::TakenOver => 1,
            Control::Shutdown => 2,
            Control::SlowConsumer => 3,
            Control::Revoked => 4,
            Control::Expired => 5,
            Control::Kick => 6,
        }
    }

    fn from_word(word: u8) -> Option<Control> {
        match word {
            1 => Some(Control::TakenOver),
            2 => Some(Control::Shutdown),
            3 => Some(Control::SlowConsumer),
            4 => Some(Control::Revoked),
            5 => Some(Control::Expired),
            6 => Some(Control::Kick),
            _ => None,
        }
    }
}

/// The broker's word to one live connection. A connection closes on the
/// first word it gets, so one atomic and a wake carry it: the tokio
/// channel this replaces kept ~400 bytes per idle connection.
#[derive(Debug, Default)]
pub(crate) struct ControlSignal {
    word: AtomicU8,
    wake: WakeSignal,
}

impl ControlSignal {
    /// Sends `control`; while an earlier word is unread, that one stands.
    pub(crate) fn send(&self, control: Control) {
        let _ =
            self.word
                .compare_exchange(0, control.to_word(), Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify();
    }

    /// Ready with the next word from the broker; else registers `cx` for it.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Control> {
        loop {
            if let Some(c) = Control::from_word(self.word.swap(0, Ordering::AcqRel)) {
                return Poll::Ready(c);
            }
            // A permit is stored: a word sent since the check ends this wait.
            std::task::ready!(self.wake.poll_wait(cx));
        }
    }

    /// Makes `waker` the one a word wakes; true if a word is already unread
    /// (it is left for `poll_recv`).
    pub(crate) fn register(&self, waker: &std::task::Waker) -> bool {
        self.wake.register(waker);
        self.word.load(Ordering::Acquire) != 0
    }

    /// Waits for the next word from the broker.
    #[cfg(test)]
    pub(crate) async fn recv(&self) -> Control {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

#[derive(Debug)]
pub(crate) struct LiveConn {
    pub(crate) conn_id: u64,
    pub(crate) control: Arc<ControlSignal>,
}

/// Where a session is in its life: one value, so that no impossible mix of
/// flags (a connection on an ended session, a fresh one with kept state)
/// can be written.
#[derive(Debug)]
pub(crate) enum Presence {
    /// Never connected.
    Fresh,
    /// A connection has it.
    Online(LiveConn),
    /// No connection has it; kept for the next one until it expires.
    Away {
        /// When the last connection ended (Unix ms), kept for the store:
        /// set for durable sessions only. (NonZero: 8 bytes, not 16, in
        /// every session; Unix ms is never 0.)
        since: Option<std::num::NonZeroU64>,
        /// The protocol state its connection handed back (boxed: 96 bytes
        /// a connected session would carry for nothing). None when the
        /// old connection did not hand it back in time, or after recovery.
        state: Option<Box<SessionState>>,
    },
    /// Removed from the registry (expired, or ended at disconnect).
    Ended,
}

impl Presence {
    /// Away with nothing kept yet.
    pub(crate) const AWAY: Presence = Presence::Away {
        since: None,
        state: None,
    };

    /// The connection that has the session, if one does.
    pub(crate) fn conn(&self) -> Option<&LiveConn> {
        match self {
            Presence::Online(conn) => Some(conn),
            _ => None,
        }
    }

    /// True once the session was removed from the registry.
    pub(crate) fn is_ended(&self) -> bool {
        matches!(self, Presence::Ended)
    }

    /// The protocol state kept while away.
    pub(crate) fn state_mut(&mut self) -> Option<&mut SessionState> {
        match self {
            Presence::Away { state, .. } => state.as_deref_mut(),
            _ => None,
        }
    }

    /// When the last connection ended (Unix ms), while away.
    pub(crate) fn away_since(&self) -> Option<std::num::NonZeroU64> {
        match self {
            Presence::Away { since, .. } => *since,
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct SessionInner {
    pub(crate) presence: Presence,
    /// Bumped at every connect: timers armed for an older generation are void.
    pub(crate) generation: u64,
    pub(crate) expiry: u32,
    /// Boxed: most sessions have no will, and a will's properties are large.
    pub(crate) will: Option<Box<Will>>,
    pub(crate) protocol: ProtocolVersion,
    /// The authenticated user name, for the ACL's read check at delivery.
    pub(crate) username: Option<Arc<String>>,
    /// Filters as the client wrote them (with any `$share/` prefix), with
    /// their options and subscription identifier (kept for the store).
    pub(crate) subscriptions: Filters,
}

/// A session, shared by the registry, the subscription index and its connection.
#[derive(Debug)]
pub struct Session {
    pub(crate) key: u64,
    client_id: Arc<str>,
    online: AtomicBool,
    /// Written through to the store (a store exists and the session outlives its connection).
    durable: AtomicBool,
    /// Its connection is parked off its task now (for the admin API).
    parked: AtomicBool,
    /// Deliveries waiting for the connection.
    pub mailbox: Mailbox,
    /// Told when a connection lets go of the session (`Broker::disconnect`):
    /// a CONNECT whose claim was `Held` listens here, never the core.
    pub(crate) released: Notify,
    /// Held by the connection layer from a CONNECT's first claim on the
    /// session to its grant, so concurrent CONNECTs take the session over
    /// one after another, in the order they came. Never locked by the core.
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
            parked: AtomicBool::new(false),
            mailbox: Mailbox::default(),
            released: Notify::new(),
            connect_lock: tokio::sync::Mutex::new(()),
            inner: Mutex::new(SessionInner {
                presence: Presence::Fresh,
                generation: 0,
                expiry: 0,
                will: None,
                protocol: ProtocolVersion::V5,
                username: None,
                subscriptions: Filters::default(),
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

    /// True while its connection is parked off its task (idle).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    pub(crate) fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Relaxed);
    }

    /// True when the session's state and queue are written to the store.
    pub fn is_durable(&self) -> bool {
        self.durable.load(Ordering::Acquire)
    }

    pub(crate) fn set_durable(&self, durable: bool) {
        self.durable.store(durable, Ordering::Release);
    }

    /// True while the session holds a will (set by CONNECT, cleared once
    /// published or discarded).
    pub fn has_will(&self) -> bool {
        self.inner.lock().will.is_some()
    }

    /// The filters this session is subscribed to, as the client wrote them.
    pub fn subscriptions(&self) -> Vec<String> {
        self.inner
            .lock()
            .subscriptions
            .keys()
            .map(str::to_owned)
            .collect()
    }
}

/// A shared session handle.
pub(crate) type SessionRef = Arc<Session>;

mod filters;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_control_word_reaches_its_connection_once() {
        let signal = Arc::new(ControlSignal::default());
        // Sent before anyone waits: kept, and the first word stands.
        signal.send(Control::TakenOver);
        signal.send(Control::Shutdown);
        assert_eq!(signal.recv().await, Control::TakenOver);
        // Read once: the next wait sees nothing until a new word is sent.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(signal.poll_recv(&mut cx).is_pending());
        let s = signal.clone();
        let waiter = tokio::spawn(async move { s.recv().await });
        tokio::task::yield_now().await;
        signal.send(Control::Shutdown);
        let got = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert_eq!(got.expect("woken").expect("task"), Control::Shutdown);
    }
}
