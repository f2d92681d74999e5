//! Shared subscriptions lose nothing: what was routed to a member of a share
//! group, queued or in flight, goes to another member of the group when the
//! member's session ends (MQTT 5 section 4.8.2), counted as a redelivery.
//!
//! - QoS 0 and 1, queued or sent and unacknowledged, and QoS 2 not yet sent,
//!   are handed on. The other member gets them as a first transmission on its
//!   own connection: its own fresh packet id, DUP 0 (MQTT-3.3.1-3: DUP says
//!   whether *this* PUBLISH is a retransmission, which it is not).
//! - A QoS 2 message whose PUBLISH was sent and not answered by PUBREC may
//!   have reached the member: MQTT-4.8.2-5 forbids sending it to anyone else,
//!   so it is counted as undeliverable instead (exactly once stays at most
//!   once). After PUBREC the member has it: nothing is owed.
//! - A member whose session persists (Session Expiry > 0) is waited for, as
//!   the specification allows: its messages stay in its session and are
//!   sent when it returns, or handed on when its session expires. New
//!   messages go to members that are online meanwhile.

use tracing::{info, warn};
use vigil_proto::message::Outgoing;
use vigil_proto::server::InflightStage;
use vigil_proto::time::Clock;
use vigil_proto::topic::{self, SharedFilter};
use vigil_proto::QoS;
use vigil_store::{MessageRecord, Op, QueuedRecord};

use super::session::SessionInner;
use super::{Broker, Counters, SessionRef, Wakes};

/// Shared-subscription deliveries of a session that is ending.
#[derive(Debug, Default)]
pub(crate) struct Orphans {
    /// The session's `$share/...` filters.
    filters: Vec<String>,
    /// Its deliveries routed through them, oldest first.
    deliveries: Vec<Outgoing>,
}

impl Broker {
    /// Takes the shared-subscription deliveries out of an ending session:
    /// in flight (oldest first), then accepted by its connection, then queued.
    /// Call before its subscriptions are removed.
    pub(super) fn take_shared_orphans(
        &self,
        session: &SessionRef,
        inner: &mut SessionInner,
    ) -> Orphans {
        let filters: Vec<String> = inner
            .subscriptions
            .keys()
            .filter(|f| f.starts_with("$share/"))
            .map(str::to_owned)
            .collect();
        if filters.is_empty() {
            return Orphans::default();
        }
        let mut deliveries = Vec::new();
        if let Some(state) = inner.presence.state_mut() {
            let last = state.last_packet_id;
            for (_, entry) in state.inflight.in_send_order(last) {
                if !entry.outgoing.shared {
                    continue;
                }
                match (entry.outgoing.qos, entry.stage) {
                    (QoS::ExactlyOnce, InflightStage::AwaitingAck) => {
                        Counters::add(&self.counters.shared_undeliverable, 1);
                        warn!(
                            client = session.client_id(),
                            topic = %entry.outgoing.message.topic,
                            "shared QoS 2 message sent to a member whose session ended: not sent to another (MQTT-4.8.2-5)"
                        );
                    }
                    (_, InflightStage::AwaitingAck) => deliveries.push(entry.outgoing.clone()),
                    (_, InflightStage::AwaitingComp) => {}
                }
            }
            deliveries.extend(state.pending.drain(..).filter(|o| o.shared));
        }
        deliveries.extend(session.mailbox.take_all().into_iter().filter(|o| o.shared));
        Orphans {
            filters,
            deliveries,
        }
    }

    /// Hands each orphaned delivery to another member of its group at `now`
    /// (what expired by then is dropped); call once the ended session's
    /// subscriptions are removed.
    pub(super) fn hand_on_shared(&self, now: Clock, session: &SessionRef, orphans: Orphans) {
        if orphans.deliveries.is_empty() {
            return;
        }
        let groups: Vec<SharedFilter<'_>> = orphans
            .filters
            .iter()
            .filter_map(|f| SharedFilter::parse(f).ok().flatten())
            .collect();
        let mut ops = Vec::new();
        let mut handed = Vec::new();
        let mut lost = 0u64;
        for o in orphans.deliveries {
            if o.message.is_expired(now.instant) {
                Counters::add(&self.counters.dropped_expired, 1);
                continue;
            }
            let member = groups
                .iter()
                .filter(|g| topic::matches(g.filter, &o.message.topic))
                .find_map(|g| {
                    self.subs
                        .pick_shared(g.filter, g.group, session.key, |s| s.is_online())
                });
            let Some(m) = member else {
                lost += 1;
                continue;
            };
            let mut outgoing = Outgoing {
                qos: o.message.qos.min(m.qos),
                retain: m.retain_as_published && o.message.retain,
                message: o.message,
                subscription_ids: m.subscription_ids,
                persisted: None,
                shared: true,
            };
            if self.store.is_some() && outgoing.qos != QoS::AtMostOnce && m.subscriber.is_durable()
            {
                let seq = self.next_seq();
                outgoing.persisted = Some(seq);
                ops.push(Op::Enqueue {
                    session: m.subscriber.key,
                    seq: seq.get(),
                    record: QueuedRecord {
                        message: MessageRecord::from_message(&outgoing.message, &now),
                        qos: outgoing.qos,
                        retain: outgoing.retain,
                        subscription_ids: outgoing.subscription_ids.clone(),
                    },
                });
            }
            handed.push((m.subscriber, outgoing));
        }
        if !ops.is_empty() {
            // Written before the member's connection can see the delivery.
            let _ = self.persist(ops);
        }
        let (mut wakes, mut queued) = (Wakes::default(), 0u64);
        let redelivered = handed.len() as u64;
        for (member, outgoing) in handed {
            if let Some(o) = self.push(&member, outgoing, &mut wakes, &mut queued) {
                self.drop_blocked(&member, &o);
            }
        }
        self.counters.messages_out.add(queued);
        Counters::add(&self.counters.shared_redelivered, redelivered);
        Counters::add(&self.counters.shared_undeliverable, lost);
        info!(
            client = session.client_id(),
            redelivered,
            lost,
            "session ended: its shared-subscription messages handed to other members"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use vigil_proto::message::Message;
    use vigil_proto::server::{CloseReason, Inflight, SessionState};
    use vigil_proto::{ProtocolVersion, Subscribe, Subscription, SubscriptionOptions};

    use super::super::tests::virtual_start;
    use super::super::{ConnectGrant, ConnectRequest, CoreConfig, DisconnectInfo};
    use super::*;

    fn req(id: &str, expiry: u32) -> ConnectRequest {
        ConnectRequest {
            client_id: id.into(),
            protocol: ProtocolVersion::V5,
            clean_start: true,
            session_expiry: expiry,
            will: None,
            username: None,
        }
    }

    fn member(b: &Broker, now: Clock, id: &str, expiry: u32, qos: QoS) -> ConnectGrant {
        let g = b.connect_now(now, &req(id, expiry));
        let sub = Subscribe {
            packet_id: 1,
            filters: vec![Subscription {
                filter: "$share/g/t".into(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            ..Subscribe::default()
        };
        b.subscribe(&g.session, &sub).unwrap();
        g
    }

    fn publish(b: &Broker, now: Clock, n: usize, qos: QoS) {
        for i in 0..n {
            b.publish(
                now,
                None,
                Message {
                    topic: "t".into(),
                    payload: Bytes::from(format!("{i}")),
                    qos,
                    retain: false,
                    properties: None,
                    expires_at: None,
                },
            );
        }
    }

    fn drain(s: &SessionRef) -> Vec<Outgoing> {
        let mut out = Vec::new();
        s.mailbox.drain_into(&mut out, 100);
        out
    }

    fn leave(b: &Broker, g: &ConnectGrant, state: SessionState, now: Clock) {
        let info = DisconnectInfo {
            reason: CloseReason::PeerClosed,
            publish_will: false,
            session_expiry: None,
            state,
        };
        b.disconnect(now, &g.session, g.conn_id, info);
    }

    /// QoS 2 stays exactly once: a PUBLISH sent to the departed member may
    /// have reached it and goes to no one else (MQTT-4.8.2-5); one it never
    /// sent, and one it had queued, go to the other member.
    #[test]
    fn qos2_sent_to_a_departed_member_is_not_sent_again_and_unsent_is() {
        let t0 = virtual_start();
        let b = Broker::new(CoreConfig::default(), t0.instant);
        let a = member(&b, t0, "a", 0, QoS::ExactlyOnce);
        let other = member(&b, t0, "b", 0, QoS::ExactlyOnce);
        publish(&b, t0, 6, QoS::ExactlyOnce);
        let mut mine = drain(&a.session);
        assert_eq!(mine.len(), 3, "round robin over two members");
        let queued = mine.pop().unwrap();
        a.session.mailbox.restore(queued);
        let mut state = SessionState::default();
        let stage = [InflightStage::AwaitingAck, InflightStage::AwaitingComp];
        for (id, (o, stage)) in mine.into_iter().zip(stage).enumerate() {
            let entry = Inflight { outgoing: o, stage };
            state.inflight.insert(id as u16 + 1, entry);
        }
        state.last_packet_id = 2;
        assert_eq!(drain(&other.session).len(), 3);
        leave(&b, &a, state, t0);
        let handed = drain(&other.session);
        assert_eq!(handed.len(), 1, "only the unsent one");
        assert!(handed[0].shared && handed[0].qos == QoS::ExactlyOnce);
        let c = b.counters();
        assert_eq!(Counters::get(&c.shared_redelivered), 1);
        assert_eq!(Counters::get(&c.shared_undeliverable), 1);
    }

    /// A member whose session persists is waited for; when its session
    /// expires (at exactly its deadline), what it still held goes to
    /// another member.
    #[test]
    fn a_persistent_member_is_waited_for_until_its_session_expires() {
        let t0 = virtual_start();
        let b = Broker::new(CoreConfig::default(), t0.instant);
        let a = member(&b, t0, "a", 60, QoS::AtLeastOnce);
        let other = member(&b, t0, "b", 0, QoS::AtLeastOnce);
        publish(&b, t0, 2, QoS::AtLeastOnce);
        let sent = drain(&a.session);
        assert_eq!(sent.len(), 1);
        drain(&other.session);
        let mut state = SessionState::default();
        for o in sent {
            let entry = Inflight {
                outgoing: o,
                stage: InflightStage::AwaitingAck,
            };
            state.inflight.insert(1, entry);
        }
        state.last_packet_id = 1;
        leave(&b, &a, state, t0);
        assert!(drain(&other.session).is_empty(), "waited for");
        // Meanwhile new messages go to the member that is online.
        publish(&b, t0, 2, QoS::AtLeastOnce);
        assert_eq!(drain(&other.session).len(), 2);
        let end = t0 + Duration::from_secs(60);
        b.handle_timeout(Clock {
            instant: end.instant - Duration::from_nanos(1),
            ..end
        });
        assert!(b.session("a").is_some(), "not a tick before");
        assert!(drain(&other.session).is_empty());
        b.handle_timeout(end);
        assert!(b.session("a").is_none(), "expired");
        assert_eq!(drain(&other.session).len(), 1, "handed on at expiry");
        assert_eq!(Counters::get(&b.counters().shared_redelivered), 1);
    }
}
