//! A session moving between cluster nodes: taken out of the node that held
//! it (its subscriptions, queued deliveries and in-flight state, with their
//! packet ids) and put into the node its client connected to, so that the
//! CONNACK there says Session Present = 1. The format is the store's own
//! records (`SessionRecord`, `QueuedRecord`) in a frame of counts.

use std::num::NonZeroU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tracing::info;
use vigil_proto::message::Outgoing;
use vigil_proto::server::{Inflight, InflightStage, SessionState};
use vigil_proto::time::Clock;
use vigil_proto::topic::SharedFilter;
use vigil_proto::ProtocolVersion;
use vigil_store::{MessageRecord, Op, QueuedRecord, RecordError, Sent, SessionRecord};

use super::session::{Presence, SessionInner};
use super::{Broker, Control, Session, SessionRef, Timer};

/// A session shipped to another node, whose subscriptions still bring its
/// messages here (to be passed on) until `Broker::end_moved`.
#[derive(Debug, Clone)]
pub struct MovedSession(pub(crate) SessionRef);

impl MovedSession {
    /// Its client id.
    pub fn client_id(&self) -> &str {
        self.0.client_id()
    }

    /// A handle to a session of no broker, for tests of code that keeps
    /// these handles.
    #[doc(hidden)]
    pub fn detached(client_id: &str) -> MovedSession {
        MovedSession(Arc::new(Session::new(0, Arc::from(client_id))))
    }
}

/// One session as it travels: the store's records of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedSession {
    /// Client id, expiry, protocol and subscriptions (no will: the old
    /// node dealt with it when its connection ended).
    pub record: SessionRecord,
    /// Deliveries in the order they go out: in flight first (oldest first,
    /// with the packet id and stage they had), then those not yet sent.
    pub deliveries: Vec<(QueuedRecord, Option<Sent>)>,
    /// Inbound QoS 2 packet ids whose PUBREL has not arrived.
    pub inbound_qos2: Vec<u16>,
    /// The last packet id handed out, so new ones follow it.
    pub last_packet_id: u16,
}

/// A shipped session that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The bytes end before what they announce.
    #[error("shipped session truncated")]
    Truncated,
    /// A record inside does not decode.
    #[error("shipped session has a bad record: {0}")]
    Record(#[from] RecordError),
}

impl ShippedSession {
    /// Encodes it: the session record, then each delivery (stage byte,
    /// packet id, length-prefixed queued record), the inbound ids and the
    /// last packet id.
    pub fn to_bytes(&self) -> Result<Bytes, ShipError> {
        let mut out = BytesMut::new();
        let record = self.record.to_bytes()?;
        out.put_u32(record.len() as u32);
        out.put_slice(&record);
        out.put_u32(self.deliveries.len() as u32);
        for (queued, sent) in &self.deliveries {
            let (stage, id) = match sent {
                None => (0u8, 0u16),
                Some(Sent::Published(id)) => (1, *id),
                Some(Sent::Released(id)) => (2, *id),
            };
            out.put_u8(stage);
            out.put_u16(id);
            let bytes = queued.to_bytes()?;
            out.put_u32(bytes.len() as u32);
            out.put_slice(&bytes);
        }
        out.put_u32(self.inbound_qos2.len() as u32);
        for id in &self.inbound_qos2 {
            out.put_u16(*id);
        }
        out.put_u16(self.last_packet_id);
        Ok(out.freeze())
    }

    /// Decodes what `to_bytes` wrote.
    pub fn from_bytes(mut r: Bytes) -> Result<ShippedSession, ShipError> {
        let record = take_chunk(&mut r)?;
        let record = SessionRecord::from_bytes(0, &record)?;
        let n = take_u32(&mut r)? as usize;
        let mut deliveries = Vec::with_capacity(n.min(r.remaining() / 7));
        for _ in 0..n {
            if r.remaining() < 3 {
                return Err(ShipError::Truncated);
            }
            let (stage, id) = (r.get_u8(), r.get_u16());
            let sent = match stage {
                0 => None,
                1 => Some(Sent::Published(id)),
                2 => Some(Sent::Released(id)),
                s => return Err(RecordError(format!("delivery stage {s}")).into()),
            };
            deliveries.push((QueuedRecord::from_bytes(&take_chunk(&mut r)?)?, sent));
        }
        let n = take_u32(&mut r)? as usize;
        if r.remaining() < n * 2 + 2 {
            return Err(ShipError::Truncated);
        }
        let inbound_qos2 = (0..n).map(|_| r.get_u16()).collect();
        let last_packet_id = r.get_u16();
        Ok(ShippedSession {
            record,
            deliveries,
            inbound_qos2,
            last_packet_id,
        })
    }
}

fn take_u32(r: &mut Bytes) -> Result<u32, ShipError> {
    if r.remaining() < 4 {
        return Err(ShipError::Truncated);
    }
    Ok(r.get_u32())
}

fn take_chunk(r: &mut Bytes) -> Result<Bytes, ShipError> {
    let n = take_u32(r)? as usize;
    if r.remaining() < n {
        return Err(ShipError::Truncated);
    }
    Ok(r.split_to(n))
}

impl Broker {
    /// The session of `client_id` about to be shipped: if a connection
    /// holds it, that one is told `TakenOver` (DISCONNECT 0x8E) and its id
    /// is returned, for the caller to wait for its hand-back.
    pub(crate) fn release_for_hand_over(&self, session: &SessionRef) -> Option<u64> {
        let inner = session.inner.lock();
        let conn = inner.presence.conn()?;
        conn.control.send(Control::TakenOver);
        Some(conn.conn_id)
    }

    /// Takes `session` out of this broker at `now`, for another node: its
    /// records, and the session retired here: out of the registry and the
    /// store, its mailbox sealed, so every delivery is either in the
    /// records or handed to the cluster (`ClusterHook::moved_delivery`).
    /// Its subscriptions stay until `end_moved`: messages that still come
    /// here for it (until the cluster has learnt where it went) are passed
    /// on. None if a connection holds it or it has ended (nothing to ship).
    pub(crate) fn export_session(
        &self,
        now: Clock,
        session: &SessionRef,
    ) -> Option<ShippedSession> {
        let mut inner = session.inner.lock();
        let state = match &mut inner.presence {
            Presence::Away { state, .. } => state.take().map(|s| *s).unwrap_or_default(),
            Presence::Fresh => SessionState::default(),
            Presence::Online(_) | Presence::Ended => return None,
        };
        let mut record = self.session_record(session, &inner, None);
        record.will = None;
        record.will_due = None;
        let mut deliveries = Vec::new();
        let queued = |o: &Outgoing| QueuedRecord {
            message: MessageRecord::from_message(&o.message, &now),
            qos: o.qos,
            retain: o.retain,
            subscription_ids: o.subscription_ids.clone(),
        };
        for (id, f) in state.inflight.in_send_order(state.last_packet_id) {
            let sent = match f.stage {
                InflightStage::AwaitingAck => Sent::Published(id),
                InflightStage::AwaitingComp => Sent::Released(id),
            };
            deliveries.push((queued(&f.outgoing), Some(sent)));
        }
        for o in state
            .pending
            .iter()
            .chain(&session.mailbox.take_all_and_seal())
        {
            deliveries.push((queued(o), None));
        }
        let shipped = ShippedSession {
            record,
            deliveries,
            inbound_qos2: state.inbound_qos2.iter().copied().collect(),
            last_packet_id: state.last_packet_id,
        };
        info!(
            client = session.client_id(),
            deliveries = shipped.deliveries.len(),
            "session handed over to another node"
        );
        inner.presence = Presence::Ended;
        if session.is_durable() {
            session.set_durable(false);
            self.persist(vec![Op::DeleteSession(session.key)]);
        }
        self.forget_session(session);
        Some(shipped)
    }

    /// Ends for good, at `now`, a session `export_session` took out: its
    /// subscriptions go.
    pub fn end_moved(&self, now: Clock, moved: &MovedSession) {
        let session = &moved.0;
        let mut inner = session.inner.lock();
        self.clear_session(now, session, &mut inner);
    }

    /// Puts a session shipped from another node into this broker at `now`,
    /// offline, for the CONNECT that asked for it to resume (Session Present
    /// = 1). A session of the same id held here is replaced, unless a
    /// connection holds it (then false, and nothing changes).
    pub fn import_session(&self, now: Clock, shipped: ShippedSession) -> bool {
        let client_id = shipped.record.client_id.clone();
        if let Some(old) = self.session(&client_id) {
            let mut inner = old.inner.lock();
            if inner.presence.conn().is_some() {
                return false;
            }
            if !inner.presence.is_ended() {
                self.end_session(now, &old, &mut inner);
            }
        }
        let session = Arc::new(Session::new(
            self.next_key.fetch_add(1, Relaxed),
            Arc::from(client_id.as_str()),
        ));
        let mut inner = session.inner.lock();
        inner.expiry = self.cap_expiry(shipped.record.expiry);
        inner.protocol = match shipped.record.protocol {
            3 => ProtocolVersion::V3_1,
            4 => ProtocolVersion::V3_1_1,
            _ => ProtocolVersion::V5,
        };
        for s in &shipped.record.subscriptions {
            let (filter, group) = match SharedFilter::parse(&s.filter) {
                Ok(Some(shared)) => (shared.filter, Some(shared.group)),
                _ => (s.filter.as_str(), None),
            };
            let existed =
                self.subs
                    .subscribe(session.key, session.clone(), filter, group, s.options, s.id);
            if !existed {
                self.route_added(filter, group);
            }
            inner.subscriptions.insert(&s.filter, (s.options, s.id));
        }
        let durable = self.store.is_some() && inner.expiry > 0;
        let mut ops = Vec::new();
        let mut state = SessionState {
            last_packet_id: shipped.last_packet_id,
            inbound_qos2: shipped.inbound_qos2.iter().copied().collect(),
            ..SessionState::default()
        };
        for (record, sent) in shipped.deliveries {
            let persisted = durable.then(|| self.next_seq());
            let outgoing = Outgoing {
                message: Arc::new(record.message.to_message(&now)),
                qos: record.qos,
                retain: record.retain,
                subscription_ids: record.subscription_ids.clone(),
                persisted,
                shared: false,
            };
            if let Some(seq) = persisted {
                ops.push(Op::Enqueue {
                    session: session.key,
                    seq: seq.get(),
                    record,
                });
                if let Some(sent) = sent {
                    ops.push(Op::Progress {
                        session: session.key,
                        seq: seq.get(),
                        sent,
                    });
                }
            }
            match sent {
                None => session.mailbox.restore(outgoing),
                Some(Sent::Published(id)) => {
                    let stage = InflightStage::AwaitingAck;
                    state.inflight.insert(id, Inflight { outgoing, stage });
                }
                Some(Sent::Released(id)) => {
                    let stage = InflightStage::AwaitingComp;
                    state.inflight.insert(id, Inflight { outgoing, stage });
                }
            }
        }
        inner.presence = Presence::Away {
            since: NonZeroU64::new(now.unix_ms),
            state: Some(Box::new(state)),
        };
        if durable {
            session.set_durable(true);
            ops.insert(
                0,
                Op::PutSession(self.session_record(&session, &inner, None)),
            );
            for id in &shipped.inbound_qos2 {
                ops.push(Op::AddInbound {
                    session: session.key,
                    packet_id: *id,
                });
            }
            self.persist(ops);
        }
        self.schedule_expiry(now, &session, &inner);
        drop(inner);
        self.sessions
            .lock()
            .insert(Arc::from(client_id.as_str()), session);
        true
    }

    fn schedule_expiry(&self, now: Clock, session: &SessionRef, inner: &SessionInner) {
        if inner.expiry != u32::MAX {
            self.schedule(
                now.instant + Duration::from_secs(u64::from(inner.expiry)),
                Timer::Expire {
                    session: session.clone(),
                    generation: inner.generation,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::QoS;
    use vigil_store::SubscriptionRecord;

    fn shipped() -> ShippedSession {
        let now = Clock::now();
        let message = vigil_proto::message::Message {
            topic: "mv/x".into(),
            payload: Bytes::from_static(b"one"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
        };
        let queued = QueuedRecord {
            message: MessageRecord::from_message(&message, &now),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![7],
        };
        ShippedSession {
            record: SessionRecord {
                id: 0,
                client_id: "mover".into(),
                protocol: 5,
                expiry: 300,
                subscriptions: vec![SubscriptionRecord {
                    filter: "mv/#".into(),
                    options: vigil_proto::SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                    id: Some(7),
                }],
                will: None,
                disconnected_at: Some(now.unix_ms),
                will_due: None,
            },
            deliveries: vec![(queued.clone(), Some(Sent::Published(3))), (queued, None)],
            inbound_qos2: vec![9],
            last_packet_id: 3,
        }
    }

    #[test]
    fn a_shipped_session_round_trips_and_truncation_is_an_error() {
        let s = shipped();
        let bytes = s.to_bytes().unwrap();
        assert_eq!(ShippedSession::from_bytes(bytes.clone()).unwrap(), s);
        for cut in [0, 3, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                ShippedSession::from_bytes(bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_exported_session_imports_with_its_subscriptions_and_deliveries() {
        let now = Clock::now();
        let b = Broker::new(super::super::CoreConfig::default(), now.instant);
        assert!(b.import_session(now, shipped()));
        let session = b.session("mover").unwrap();
        assert_eq!(session.subscriptions(), vec!["mv/#".to_string()]);
        assert_eq!(session.mailbox.len(), 1, "the unsent delivery is queued");
        let again = b.export_session(now, &session).unwrap();
        assert_eq!(again.deliveries.len(), 2);
        assert_eq!(again.deliveries[0].1, Some(Sent::Published(3)));
        assert_eq!(again.inbound_qos2, vec![9]);
        assert_eq!(again.last_packet_id, 3);
        assert!(b.session("mover").is_none(), "exported: ended here");
        assert!(
            session.mailbox.is_sealed(),
            "later deliveries are handed back"
        );
        assert_eq!(
            session.subscriptions(),
            vec!["mv/#".to_string()],
            "until end_moved"
        );
        b.end_moved(now, &MovedSession(session.clone()));
        assert!(session.subscriptions().is_empty());
    }
}
