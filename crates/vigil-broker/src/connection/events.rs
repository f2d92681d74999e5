//! What the connection does with the state machine's requests: each one is a
//! call into the broker core whose answer goes back into the state machine.

use std::sync::Arc;

use bytes::Bytes;

use tracing::{error, info, warn};
use vigil_proto::message::Outgoing;
use vigil_proto::server::{Accepted, CloseReason, ServerEvent};
use vigil_proto::time::Clock;
use vigil_proto::{Connect, QoS, ReasonCode};
use vigil_store::Ticket;

use super::{Attached, Driver};
use crate::auth::Login;
use crate::core::{ConnectRequest, Counters, SessionRef, WakeInbox, Wakes};
use crate::remote_acks::RemoteAcks;
use crate::transport::CertLogin;

/// What answering the events of one read gathers.
#[derive(Default)]
struct ReadBatch {
    /// Acks held until the store commit holding their messages is durable;
    /// once one is held, later ones queue behind it to keep PUBACK order.
    held: Vec<(u16, QoS, usize)>,
    ticket: Option<Ticket>,
    /// Writes of any kind wait for this (PUBCOMP after a stored release).
    gate: Option<Ticket>,
    /// Subscribers of this read's PUBLISHes, woken once at the end.
    wakes: Wakes,
    /// Other cluster nodes that must accept this read's QoS 1/2 messages
    /// before their acks go out (None on a single node).
    remote: Option<RemoteAcks>,
}

/// What an event leaves to await.
pub(super) enum Wait {
    /// A CONNECT; with the login and server-final of the enhanced
    /// authentication exchange it began, once that succeeded.
    Connect(Box<Connect>, Option<Box<(Arc<Login>, Bytes)>>),
    /// Room in full subscriber queues, then the ack.
    Room {
        blocked: Vec<(SessionRef, Outgoing)>,
        ack: (u16, QoS, usize),
    },
}

/// What answering a read's events left to await.
enum Unanswered {
    /// A wait came up part-way; events after it are still to answer.
    Wait(ReadBatch, Wait),
    /// Every event is answered; the held acks wait for this commit and
    /// the batch's other cluster nodes.
    Durable(ReadBatch, Option<Ticket>),
}

impl Driver {
    /// Answers every pending event; a CONNECT may wait for a takeover.
    pub(super) async fn process_events(&mut self) {
        // Everything that awaits is boxed and made only when a wait comes up
        // (a CONNECT, a full subscriber queue, a store that acks when
        // durable): inline, its ~200 bytes sat in every idle connection's
        // task. Boxed before the await: a match scrutinee would keep its
        // slot across it.
        let waiting = match self.answer_events() {
            Some(rest) => Box::pin(self.answer_events_waiting(rest)),
            None => return,
        };
        waiting.await;
    }

    /// Answers pending events until one leaves something to await.
    fn answer_events(&mut self) -> Option<Unanswered> {
        let mut batch = ReadBatch::default();
        if let Some(wait) = self.handle_events_until_wait(&mut batch) {
            return Some(Unanswered::Wait(batch, wait));
        }
        let ticket = self.end_batch(&mut batch);
        if ticket.is_none() && batch.remote.is_none() {
            return None;
        }
        Some(Unanswered::Durable(batch, ticket))
    }

    /// Awaits what `answer_events` left, answering the events after it.
    async fn answer_events_waiting(&mut self, rest: Unanswered) {
        let (mut batch, ticket) = match rest {
            Unanswered::Durable(batch, ticket) => (batch, ticket),
            Unanswered::Wait(mut batch, first) => {
                let mut next = Some(first);
                while let Some(wait) = next {
                    match wait {
                        // This future is boxed already: what it awaits needs no box of its own.
                        Wait::Connect(c, authenticated) => self.on_connect(c, authenticated).await,
                        Wait::Room { blocked, ack } => {
                            // Backpressure: no ack and no further reads until the
                            // subscribers that are behind have room for this message.
                            let from = self.attached.as_ref().map(|a| a.session.clone());
                            super::room::deliver_blocked(&self.broker, from.as_ref(), blocked)
                                .await;
                            self.ack_routed(&mut batch, ack);
                        }
                    }
                    next = self.handle_events_until_wait(&mut batch);
                }
                let ticket = self.end_batch(&mut batch);
                (batch, ticket)
            }
        };
        let held = std::mem::take(&mut batch.held);
        if let Some(remote) = batch.remote.take() {
            Counters::add(&self.broker.counters().remote_ack_waits, 1);
            if !remote.settled().await {
                Counters::add(&self.broker.counters().remote_ack_timeouts, 1);
                warn!(client = %self.client_id(), "other cluster nodes did not accept a message in time; acknowledging it anyway");
            }
            if ticket.is_none() {
                for (packet_id, qos, matched) in held {
                    crate::auth::send_ack(&mut self.conn, packet_id, qos, matched);
                }
                return;
            }
        }
        if let Some(t) = ticket {
            self.ack_when_durable(t, held).await;
        }
    }

    /// Wakes the batch's subscribers and hands its progress to the broker;
    /// returns the commit the held acks (or the writes) must wait for, when
    /// the store acks only what is durable.
    fn end_batch(&mut self, batch: &mut ReadBatch) -> Option<Ticket> {
        batch.wakes.wake_all();
        let gate = batch.gate.max(self.record_progress());
        if !self.broker.store().is_some_and(|s| s.acks_wait()) {
            return None;
        }
        if batch.held.is_empty() {
            gate
        } else {
            batch.ticket.max(gate)
        }
    }

    /// Answers pending events until one leaves something to await.
    fn handle_events_until_wait(&mut self, batch: &mut ReadBatch) -> Option<Wait> {
        // Read once per run of events, not per event: they were read together.
        let mut now = None;
        while let Some(event) = self.conn.poll_event() {
            if let Some(wait) = self.handle_event(event, batch, &mut now) {
                return Some(wait);
            }
        }
        None
    }

    /// Answers one event; returns what must be awaited, if anything, with
    /// every owed wake already paid (a wait may need the subscribers to drain).
    /// `now` is read on first need.
    fn handle_event(
        &mut self,
        event: ServerEvent,
        batch: &mut ReadBatch,
        now: &mut Option<Clock>,
    ) -> Option<Wait> {
        match event {
            ServerEvent::Connect(c) => {
                batch.wakes.wake_all();
                return Some(Wait::Connect(c, None));
            }
            ServerEvent::Auth(a) => {
                let wait = self.on_auth(*a);
                if wait.is_some() {
                    batch.wakes.wake_all();
                }
                return wait;
            }
            ServerEvent::Publish(p) => {
                let a = self.attached.as_ref()?;
                let (packet_id, qos) = (p.packet_id, p.qos);
                crate::observe::traffic::publish_in(qos as u8, p.payload.len());
                if !crate::auth::may_publish(&self.broker, &a.session, &p.topic) {
                    self.ack_routed(batch, (packet_id, qos, crate::auth::DENIED));
                    return None;
                }
                if qos == QoS::ExactlyOnce {
                    let guard = self.broker.guard_inbound_qos2(&a.session, packet_id);
                    batch.ticket = batch.ticket.max(guard);
                }
                let now = *now.get_or_insert_with(Clock::now);
                let routed = self
                    .broker
                    .publish_packet(&a.session, p, now, &mut batch.wakes);
                if qos != QoS::AtMostOnce {
                    batch.ticket = batch.ticket.max(routed.ticket);
                    if let Some(remote) = routed.remote {
                        match &mut batch.remote {
                            Some(r) => r.merge(remote),
                            None => batch.remote = Some(remote),
                        }
                    }
                }
                let ack = (packet_id, qos, routed.matched);
                if !routed.blocked.is_empty() {
                    batch.wakes.wake_all();
                    return Some(Wait::Room {
                        blocked: routed.blocked,
                        ack,
                    });
                }
                self.ack_routed(batch, ack);
            }
            ServerEvent::Subscribe(mut s) => {
                let a = self.attached.as_ref()?;
                let denied = crate::auth::screen_subscribe(&self.broker, &a.session, &mut s);
                match self.broker.subscribe(&a.session, &s) {
                    Ok(codes) => self
                        .conn
                        .send_suback(s.packet_id, crate::auth::merge_suback(codes, &denied)),
                    Err(v) => self.conn.close(
                        v.reason,
                        CloseReason::ProtocolError {
                            reason: v.reason,
                            detail: v.detail,
                        },
                    ),
                }
            }
            ServerEvent::Unsubscribe(u) => {
                let a = self.attached.as_ref()?;
                let codes = self.broker.unsubscribe(&a.session, &u);
                self.conn.send_unsuback(u.packet_id, codes);
            }
            ServerEvent::Closed(closed) => self.closed = Some(Box::new(closed)),
            ServerEvent::Released(packet_id) => {
                if let Some(a) = &self.attached {
                    let gate = self.broker.release_inbound_qos2(&a.session, packet_id);
                    batch.gate = batch.gate.max(gate);
                }
            }
        }
        None
    }

    /// Acknowledges a routed PUBLISH now, or holds the ack until the commit
    /// holding it is durable.
    fn ack_routed(&mut self, batch: &mut ReadBatch, (packet_id, qos, matched): (u16, QoS, usize)) {
        let acks_wait = self.broker.store().is_some_and(|s| s.acks_wait());
        let waits = (acks_wait && batch.ticket.is_some()) || batch.remote.is_some();
        if waits && qos != QoS::AtMostOnce {
            batch.held.push((packet_id, qos, matched));
        } else {
            crate::auth::send_ack(&mut self.conn, packet_id, qos, matched);
        }
    }

    /// Hands the steps stored deliveries took to the broker; returns what
    /// must be durable before the packets they announce are written.
    pub(super) fn record_progress(&mut self) -> Option<Ticket> {
        let a = self.attached.as_ref()?;
        let mut progress = Vec::new();
        self.conn.take_progress(&mut progress);
        if progress.is_empty() {
            return None;
        }
        self.broker.record_progress(&a.session, &progress)
    }

    /// Waits until `ticket` is durable, then sends the held acks; closes the
    /// connection without them if the store failed.
    pub(super) async fn ack_when_durable(&mut self, ticket: Ticket, held: Vec<(u16, QoS, usize)>) {
        let Some(store) = self.broker.store().cloned() else {
            return;
        };
        match store.durable(ticket).await {
            Ok(()) => {
                for (packet_id, qos, matched) in held {
                    crate::auth::send_ack(&mut self.conn, packet_id, qos, matched);
                }
            }
            Err(e) => {
                error!(client = %self.client_id(), fault = %e, "message not stored; closing without acknowledging it");
                self.conn.close(
                    ReasonCode::UNSPECIFIED_ERROR,
                    CloseReason::StoreFailed(e.to_string()),
                );
            }
        }
    }

    async fn on_connect(
        &mut self,
        c: Box<Connect>,
        authenticated: Option<Box<(Arc<Login>, Bytes)>>,
    ) {
        if authenticated.is_none() && c.properties.authentication_method.is_some() {
            return self.start_enhanced_auth(c);
        }
        let (scram_login, auth_data) = match authenticated {
            Some(done) => {
                let (login, data) = *done;
                (Some(login), Some(data))
            }
            None => (None, None),
        };
        let v5 = c.protocol.is_v5();
        let assigned = c.client_id.is_empty();
        let client_id = if assigned {
            format!("vigil-{:016x}", rand::random::<u64>())
        } else {
            c.client_id.clone()
        };
        let session_expiry = if v5 {
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        let cert_user = match self.stream.cert_login() {
            CertLogin::Off => None,
            CertLogin::User(user) => Some(user.to_string()),
            CertLogin::NoIdentity => {
                warn!(client = %client_id, peer = %self.peer, "connection refused: use_identity_as_username is set but the client certificate has no identity of the configured kind (tls.identity)");
                if let Some(auth) = self.broker.auth() {
                    auth.counters()
                        .connect_no_identity
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return self.conn.refuse(ReasonCode::NOT_AUTHORIZED);
            }
        };
        let login = match (self.broker.auth(), scram_login) {
            // Logged in by the SCRAM exchange before this CONNECT went on.
            (_, Some(login)) => Some(login),
            (Some(auth), None) => match auth
                .check_connect(&c, &client_id, self.peer, cert_user.as_deref())
                .await
            {
                Ok(login) => Some(login),
                Err(code) => return self.conn.refuse(code),
            },
            // No gate: the certificate still names the client.
            (None, None) => cert_user.map(|user| Arc::new(Login::named(Some(user)))),
        };
        let request = ConnectRequest {
            client_id: client_id.clone(),
            protocol: c.protocol,
            clean_start: c.clean_start,
            session_expiry,
            will: c.will.clone(),
            // The ACL knows the client by the name it authenticated as.
            username: login
                .as_ref()
                .map_or_else(|| c.username.clone(), |l| l.username.clone()),
        };
        // On a cluster node the id is claimed across the cluster first: one
        // Raft write per CONNECT, never per PUBLISH. A single node has no
        // hook and skips this.
        let ticket = match self
            .broker
            .cluster()
            .and_then(|hook| hook.claim_client(&client_id, c.clean_start))
        {
            Some(claim) => match claim.await {
                Ok(ticket) => Some(ticket),
                Err(cause) => {
                    warn!(client = %client_id, peer = %self.peer, %cause, "connection refused: the cluster could not confirm this node owns the client id (server unavailable)");
                    return self.conn.refuse(ReasonCode::SERVER_UNAVAILABLE);
                }
            },
            None => None,
        };
        let grant = super::takeover::connect(&self.broker, &request).await;
        if let (Some(ticket), Some(cluster)) = (ticket, self.broker.cluster()) {
            cluster.client_attached(&client_id, ticket);
        }
        info!(
            client = %client_id,
            peer = %self.peer,
            protocol = c.protocol.level(),
            keep_alive = c.keep_alive,
            clean_start = c.clean_start,
            session_present = grant.session_present,
            "client connected"
        );
        let now = Clock::now();
        self.conn.accept(
            now.instant,
            Accepted {
                session_present: grant.session_present,
                assigned_client_id: (assigned && v5).then_some(client_id),
                state: grant.state,
                auth_data,
            },
        );
        self.broker.note_connected(
            now,
            grant.session.client_id(),
            crate::core::clients::NewConnection {
                conn_id: grant.conn_id,
                peer: self.peer,
                username: login
                    .as_ref()
                    .map_or_else(|| c.username.clone(), |l| l.username.clone()),
                protocol: c.protocol,
                keep_alive: self.conn.keep_alive(),
                listener: self.slot.as_ref().map(|s| s.0.name.clone()),
                stats: self.stats.clone(),
            },
        );
        grant.session.mailbox.set_home(WakeInbox::here());
        if let (Some(auth), Some(login)) = (self.broker.auth(), login) {
            auth.track(grant.conn_id, &grant.session, login);
        }
        self.control = Some(grant.control);
        self.attached = Some(Attached {
            session: grant.session,
            conn_id: grant.conn_id,
        });
    }
}
