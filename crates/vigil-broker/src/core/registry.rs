//! The session registry: which session a CONNECT gets (taking it over from a
//! live connection, clean start or resume), what a disconnect leaves behind
//! (a will now or after its delay, an expiry deadline, or the end of the
//! session), and ending a session for good. Plain synchronous state changes:
//! where a takeover must wait for the old connection, `claim` says so and
//! the connection layer waits.

use std::num::NonZeroU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use vigil_proto::server::{CloseReason, SessionState};
use vigil_proto::time::Clock;
use vigil_store::Op;

use super::session::{LiveConn, Presence, SessionInner};
use super::{
    Broker, Claim, ConnectGrant, ConnectRequest, Control, ControlSignal, Counters, DisconnectInfo,
    Session, SessionRef, Timer,
};

impl Broker {
    /// The session of `client_id`, registered fresh if the broker holds none:
    /// what a CONNECT claims.
    pub(crate) fn session_for(&self, client_id: &str) -> SessionRef {
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

    /// Attaches a new connection to `session` (from `session_for`) at `now`,
    /// unless a live connection holds it: that one is told
    /// `Control::TakenOver` and the answer is `Claim::Held` (see there).
    /// Claims of one session must not overlap: the caller holds the
    /// session's `connect_lock` from the first claim to the grant.
    pub(crate) fn claim(&self, now: Clock, session: &SessionRef, req: &ConnectRequest) -> Claim {
        let mut inner = session.inner.lock();
        if let Some(conn) = inner.presence.conn() {
            info!(
                client = session.client_id(),
                "taking over the session from its live connection"
            );
            conn.control.send(Control::TakenOver);
            return Claim::Held {
                conn_id: conn.conn_id,
            };
        }
        {
            // Session first, then registry: the order `end_session` takes them in.
            let mut map = self.sessions.lock();
            match map.get(req.client_id.as_str()) {
                Some(s) if Arc::ptr_eq(s, session) => {}
                Some(_) => return Claim::Replaced,
                None => {
                    map.insert(Arc::from(req.client_id.as_str()), session.clone());
                }
            }
        }
        let control = Arc::new(ControlSignal::default());
        let conn_id = self.next_conn.fetch_add(1, Relaxed);
        inner.generation += 1;
        let resume = matches!(inner.presence, Presence::Away { .. } | Presence::Online(_))
            && !req.clean_start;
        if !resume {
            self.clear_session(now, session, &mut inner);
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
                ops.push(Op::PutSession(self.session_record(session, &inner, None)));
            } else if was_durable {
                ops.push(Op::DeleteSession(session.key));
            }
            self.persist(ops);
        }
        drop(inner);
        session.set_online(true);
        Counters::add(&self.counters.connections_total, 1);
        Counters::add(&self.counters.connections_current, 1);
        Claim::Granted(ConnectGrant {
            session_present: resume,
            session: session.clone(),
            state,
            control,
            conn_id,
        })
    }

    /// The connection `conn_id`, told to hand `session` back (`Claim::Held`),
    /// did not in time: the session is taken from it as it is, without the
    /// protocol state it would have handed back. Its later `disconnect` is
    /// ignored. Nothing happens if it has handed back meanwhile.
    pub(crate) fn take_back(&self, session: &SessionRef, conn_id: u64) {
        let mut inner = session.inner.lock();
        if inner.presence.conn().map(|c| c.conn_id) != Some(conn_id) {
            return;
        }
        warn!(
            client = session.client_id(),
            "old connection did not hand its session back in time"
        );
        inner.presence = Presence::AWAY;
        session.set_online(false);
        self.counters.connections_current.fetch_sub(1, Relaxed);
        self.counters.count_disconnect(&CloseReason::TakenOver);
    }

    /// The connection `conn_id` of `session` has ended at `now`: its will is
    /// published now, or scheduled after its delay, or cancelled by the
    /// takeover that ended it; the session ends now (expiry 0) or is kept
    /// until `now` plus its expiry.
    pub(crate) fn disconnect(
        &self,
        now: Clock,
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
        // A will's delay is cut short by the end of its session.
        let will_due = now + secs(delay.min(expiry));
        if expiry == 0 {
            // Kept for the moment it takes to hand shared deliveries on.
            inner.presence = Presence::Away {
                since: None,
                state: Some(Box::new(info.state)),
            };
            self.end_session(now, session, &mut inner);
        } else {
            inner.presence = Presence::Away {
                since: None,
                state: Some(Box::new(info.state)),
            };
            if expiry != u32::MAX {
                self.schedule(
                    now.instant + secs(expiry),
                    Timer::Expire {
                        session: session.clone(),
                        generation,
                    },
                );
            }
            if session.is_durable() {
                let pending = will
                    .as_deref()
                    .filter(|_| delayed)
                    .map(|w| (w, will_due.unix_ms));
                if let Presence::Away { since, .. } = &mut inner.presence {
                    *since = NonZeroU64::new(now.unix_ms);
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
                self.publish_will(now, session, *will);
            } else {
                self.schedule(
                    will_due.instant,
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
    pub(crate) fn shutdown(&self) {
        let sessions: Vec<SessionRef> = self.sessions.lock().values().cloned().collect();
        for s in sessions {
            if let Some(c) = s.inner.lock().presence.conn() {
                c.control.send(Control::Shutdown);
            }
        }
    }

    pub(super) fn cap_expiry(&self, expiry: u32) -> u32 {
        match self.config.max_session_expiry {
            Some(max) => expiry.min(max),
            None => expiry,
        }
    }

    /// Forgets subscriptions, queued messages and state (clean start,
    /// session end); what came through shared subscriptions goes to other
    /// members of their groups.
    pub(super) fn clear_session(&self, now: Clock, session: &SessionRef, inner: &mut SessionInner) {
        let orphans = self.take_shared_orphans(session, inner);
        for filter in std::mem::take(&mut inner.subscriptions).into_keys() {
            self.remove_subscription(session, &filter);
        }
        session.mailbox.clear();
        if let Presence::Away { state, .. } = &mut inner.presence {
            *state = None;
        }
        self.hand_on_shared(now, session, orphans);
    }

    /// Ends a session for good at `now` and removes it from the registry.
    pub(super) fn end_session(&self, now: Clock, session: &SessionRef, inner: &mut SessionInner) {
        self.clear_session(now, session, inner);
        inner.presence = Presence::Ended;
        if session.is_durable() {
            session.set_durable(false);
            self.persist(vec![Op::DeleteSession(session.key)]);
        }
        self.forget_session(session);
    }

    /// Takes `session` out of the registry (if it is the one registered
    /// under its client id).
    pub(super) fn forget_session(&self, session: &SessionRef) {
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
