//! Write-through to the store, and recovery from it at start.
//!
//! What is written: persistent sessions (record on connect, subscribe,
//! unsubscribe and disconnect; deleted when they end), every QoS 1/2 delivery
//! queued for a persistent session (before it enters the mailbox) and its
//! progress through the handshake, inbound QoS 2 ids of persistent sessions
//! until PUBREL, and retained messages. QoS 0 deliveries and sessions that end
//! with their connection are never written.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use vigil_proto::message::Outgoing;
use vigil_proto::server::{DeliveryProgress, DeliveryStep, Inflight, InflightStage, SessionState};
use vigil_proto::time::Clock;
use vigil_proto::topic::SharedFilter;
use vigil_proto::{ProtocolVersion, QoS, Will};
use vigil_store::{
    Contents, MessageRecord, Op, QueuedEntry, Sent, SessionRecord, Store, SubscriptionRecord,
    Ticket, WillRecord,
};

use super::session::{Presence, SessionInner};
use super::{Broker, Session, SessionRef, Timer};

impl Broker {
    /// The store, when the broker has one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Submits `ops` to the store (nothing without one).
    pub(super) fn persist(&self, ops: Vec<Op>) -> Option<Ticket> {
        self.store.as_ref().map(|s| s.submit(ops))
    }

    /// The next queue position for a stored delivery.
    pub(super) fn next_seq(&self) -> NonZeroU64 {
        let n = self.next_seq.fetch_add(1, Relaxed);
        NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN)
    }

    /// The session as the store keeps it. `pending_will` is a will waiting on
    /// its delay, with when it is due (Unix ms).
    pub(super) fn session_record(
        &self,
        session: &Session,
        inner: &SessionInner,
        pending_will: Option<(&Will, u64)>,
    ) -> SessionRecord {
        let disconnected_at = inner.presence.away_since().map(std::num::NonZeroU64::get);
        let (will, will_due) = match (pending_will, &inner.will) {
            (Some((w, due)), _) => (Some(WillRecord::from_will(w)), Some(due)),
            (None, Some(w)) if inner.presence.conn().is_some() => {
                (Some(WillRecord::from_will(w)), None)
            }
            _ => (None, None),
        };
        SessionRecord {
            id: session.key,
            client_id: session.client_id().to_owned(),
            protocol: inner.protocol.level(),
            expiry: inner.expiry,
            subscriptions: inner
                .subscriptions
                .iter()
                .map(|(filter, (options, id))| SubscriptionRecord {
                    filter: filter.to_owned(),
                    options: *options,
                    id: *id,
                })
                .collect(),
            will,
            disconnected_at,
            will_due,
        }
    }

    /// Rewrites the record of a durable session after a change.
    pub(super) fn persist_session(&self, session: &SessionRef, inner: &SessionInner) {
        if session.is_durable() {
            let record = self.session_record(session, inner, None);
            self.persist(vec![Op::PutSession(record)]);
        }
    }

    /// Records what the connection of `session` did with stored deliveries.
    /// Returns the ticket that must be durable before the connection writes
    /// the packets these steps announce, when one of them is a QoS 2 step: a
    /// PUBLISH sent under a packet id the store does not know, or a PUBREL
    /// the store does not remember, would be sent again as new after a crash.
    pub(crate) fn record_progress(
        &self,
        session: &SessionRef,
        progress: &[DeliveryProgress],
    ) -> Option<Ticket> {
        let key = session.key;
        let gate = progress
            .iter()
            .any(|p| p.qos == QoS::ExactlyOnce && p.step != DeliveryStep::Done);
        let ops = progress
            .iter()
            .map(|p| {
                let seq = p.seq.get();
                match p.step {
                    DeliveryStep::Sent(id) => Op::Progress {
                        session: key,
                        seq,
                        sent: Sent::Published(id),
                    },
                    DeliveryStep::Released(id) => Op::Progress {
                        session: key,
                        seq,
                        sent: Sent::Released(id),
                    },
                    DeliveryStep::Done => Op::Dequeue { session: key, seq },
                }
            })
            .collect();
        self.persist(ops).filter(|_| gate)
    }

    /// Guards inbound QoS 2 `packet_id` of a durable session across a restart,
    /// so a PUBLISH re-sent after one is not routed twice. The PUBREC must wait
    /// for the returned ticket.
    pub(crate) fn guard_inbound_qos2(
        &self,
        session: &SessionRef,
        packet_id: u16,
    ) -> Option<Ticket> {
        if !session.is_durable() {
            return None;
        }
        self.persist(vec![Op::AddInbound {
            session: session.key,
            packet_id,
        }])
    }

    /// PUBREL arrived for inbound QoS 2 `packet_id`. The PUBCOMP must wait
    /// for the returned ticket: a client that saw PUBCOMP may reuse the id for
    /// a new message, which a stale guard would swallow as a duplicate.
    pub(crate) fn release_inbound_qos2(
        &self,
        session: &SessionRef,
        packet_id: u16,
    ) -> Option<Ticket> {
        if !session.is_durable() {
            return None;
        }
        self.persist(vec![Op::RemoveInbound {
            session: session.key,
            packet_id,
        }])
    }

    /// Forgets a stored delivery that was dropped before reaching the connection.
    pub(super) fn forget_delivery(&self, session: &SessionRef, outgoing: &Outgoing) {
        if let Some(seq) = outgoing.persisted {
            self.persist(vec![Op::Dequeue {
                session: session.key,
                seq: seq.get(),
            }]);
        }
    }

    /// Rebuilds sessions, queues, in-flight state, retained messages and
    /// timers from what the store held, at `clock`, one step per kind of record.
    /// Sessions that were connected when the broker stopped are treated as
    /// disconnected now (their wills follow the usual delay); sessions and
    /// will delays that ran out while the broker was down end now, wills first.
    pub(super) fn recover(&self, contents: Contents, clock: Clock) {
        let mut r = Recovery::default();
        let sessions_found = contents.sessions.len();
        let skipped = contents.skipped;

        self.recover_retained(&contents.retained, &clock);
        for record in contents.sessions {
            self.recover_session(record, &clock, &mut r);
        }
        let restored = Self::recover_queued(contents.queued, &mut r);
        Self::recover_inbound(contents.inbound_qos2, &mut r);

        for (session, state) in r.by_key.into_values() {
            // Restored pushes grew the queue by doubling: up to twice the
            // room it needs, kept for as long as the session stays away.
            session.mailbox.shrink_to_fit();
            // Recovered sessions are away (set above): this is what they
            // kept. An empty state is what no state means at the next
            // connect, and boxing it would cost 96 bytes a session.
            if state == SessionState::default() {
                continue;
            }
            if let Presence::Away { state: kept, .. } = &mut session.inner.lock().presence {
                *kept = Some(Box::new(state));
            }
        }
        self.next_key.fetch_max(r.max_key + 1, Relaxed);
        self.next_seq.fetch_max(r.max_seq + 1, Relaxed);
        self.persist(r.ops);
        info!(
            sessions = self.session_count(),
            expired = sessions_found - self.session_count(),
            queued = restored,
            retained = self.retained_count(),
            skipped_damaged = skipped,
            "recovered from the store"
        );
        if skipped > 0 {
            warn!(
                dropped = skipped,
                "damaged records were dropped by --salvage-store"
            );
        }
        for (session, will) in r.due_wills {
            self.publish_will(clock, &session, will);
        }
    }

    /// Retained messages, as they were.
    fn recover_retained(&self, retained: &[MessageRecord], clock: &Clock) {
        for m in retained {
            self.retained.update(&Arc::new(m.to_message(clock)));
        }
    }

    /// One persistent session: its will and expiry timers, its subscriptions,
    /// and its record rewritten as disconnected now. A session that expired
    /// while the broker was down is deleted instead (its will still goes out).
    fn recover_session(&self, record: SessionRecord, clock: &Clock, r: &mut Recovery) {
        let now = clock.instant;
        r.max_key = r.max_key.max(record.id);
        // One allocation for the id, shared by the session and the registry.
        let client_id: Arc<str> = Arc::from(record.client_id.as_str());
        let session = Arc::new(Session::new(record.id, client_id.clone()));
        let disconnected_at = record.disconnected_at.unwrap_or(clock.unix_ms);
        let away = Duration::from_millis(clock.unix_ms.saturating_sub(disconnected_at));
        let expires_in = (record.expiry != u32::MAX)
            .then(|| Duration::from_secs(u64::from(record.expiry)).saturating_sub(away));
        let will = record.will.as_ref().map(WillRecord::to_will);
        // A connection alive at the crash ended now: its will starts its delay now.
        let will_due = match (record.will_due, &record.will, record.disconnected_at) {
            (Some(due), Some(_), _) => Some(due),
            (None, Some(w), None) => {
                Some(clock.unix_ms + 1000 * u64::from(w.delay.min(record.expiry)))
            }
            _ => None,
        };
        if let (Some(w), Some(due)) = (will, will_due) {
            // A session that ends first cuts the delay short.
            let mut at = clock.to_instant(due);
            if let Some(e) = expires_in {
                at = at.min(now + e);
            }
            if at <= now {
                r.due_wills.push((session.clone(), w));
            } else {
                self.timers.lock().schedule(
                    at,
                    Timer::Will {
                        session: session.clone(),
                        generation: 0,
                        will: Box::new(w),
                    },
                );
            }
        }
        if expires_in.is_some_and(|e| e.is_zero()) {
            info!(client = %record.client_id, "session expired while the broker was down");
            r.ops.push(Op::DeleteSession(record.id));
            return;
        }
        if let Some(e) = expires_in {
            self.timers.lock().schedule(
                now + e,
                Timer::Expire {
                    session: session.clone(),
                    generation: 0,
                },
            );
        }
        {
            let mut inner = session.inner.lock();
            inner.presence = Presence::Away {
                since: std::num::NonZeroU64::new(disconnected_at),
                state: None,
            };
            inner.expiry = record.expiry;
            inner.protocol = match record.protocol {
                3 => ProtocolVersion::V3_1,
                4 => ProtocolVersion::V3_1_1,
                _ => ProtocolVersion::V5,
            };
            for s in &record.subscriptions {
                let (filter, group) = match SharedFilter::parse(&s.filter) {
                    Ok(Some(shared)) => (shared.filter, Some(shared.group)),
                    _ => (s.filter.as_str(), None),
                };
                self.subs
                    .subscribe(session.key, session.clone(), filter, group, s.options, s.id);
                inner.subscriptions.insert(&s.filter, (s.options, s.id));
            }
        }
        session.set_durable(true);
        let will_due = will_due.filter(|d| *d > clock.unix_ms);
        // Rewritten only when recovery changed it: a session that was already
        // offline with nothing due is stored as it is, and rewriting 100,000
        // of them would cost time and (transiently) memory for nothing.
        if record.disconnected_at.is_none()
            || record.will_due != will_due
            || (will_due.is_none() && record.will.is_some())
        {
            let mut record = record;
            record.disconnected_at = Some(disconnected_at);
            record.will_due = will_due;
            if record.will_due.is_none() {
                record.will = None;
            }
            r.ops.push(Op::PutSession(record));
        }
        self.sessions.lock().insert(client_id, session.clone());
        r.by_key
            .insert(session.key, (session, SessionState::default()));
    }

    /// Queued deliveries back into their sessions' mailboxes, and those that
    /// were sent into their in-flight windows. Entries that read the same
    /// message share its one allocation, as they did before the restart.
    /// Returns how many were restored.
    fn recover_queued(queued: Vec<QueuedEntry>, r: &mut Recovery) -> usize {
        let mut restored = 0usize;
        for entry in queued {
            r.max_seq = r.max_seq.max(entry.seq);
            let Some((session, state)) = r.by_key.get_mut(&entry.session) else {
                // Queued for a session that ended: the delete raced the write.
                r.ops.push(Op::Dequeue {
                    session: entry.session,
                    seq: entry.seq,
                });
                continue;
            };
            let outgoing = Outgoing {
                message: entry.message,
                qos: entry.qos,
                retain: entry.retain,
                subscription_ids: entry.subscription_ids,
                persisted: NonZeroU64::new(entry.seq),
                // Not stored: after a restart, a shared delivery waits for
                // the member it was routed to (its session persists).
                shared: false,
            };
            restored += 1;
            let (id, stage) = match entry.sent {
                None => {
                    session.mailbox.restore(outgoing);
                    continue;
                }
                Some(Sent::Published(id)) => (id, InflightStage::AwaitingAck),
                Some(Sent::Released(id)) => (id, InflightStage::AwaitingComp),
            };
            state.last_packet_id = state.last_packet_id.max(id);
            state.inflight.insert(id, Inflight { outgoing, stage });
        }
        restored
    }

    /// Inbound QoS 2 ids still awaiting PUBREL.
    fn recover_inbound(inbound: Vec<(u64, u16)>, r: &mut Recovery) {
        for (key, packet_id) in inbound {
            if let Some((_, state)) = r.by_key.get_mut(&key) {
                state.inbound_qos2.insert(packet_id);
            }
        }
    }
}

/// What recovery gathers while it reads the store, for the steps after it.
#[derive(Default)]
struct Recovery {
    max_key: u64,
    max_seq: u64,
    /// Writes that bring the store in line with what was recovered.
    ops: Vec<Op>,
    /// Wills whose delay ran out while the broker was down.
    due_wills: Vec<(SessionRef, Will)>,
    /// Recovered sessions by key, with the protocol state being rebuilt.
    by_key: HashMap<u64, (SessionRef, SessionState)>,
}
