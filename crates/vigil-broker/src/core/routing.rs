//! Publishing, subscribing and wills: the broker's routing glue over the
//! subscription index, the retained index and the session mailboxes.

use std::sync::Arc;
use std::time::Instant;

use tracing::info;
use vigil_proto::message::{Message, Outgoing};
use vigil_proto::time::Clock;
use vigil_proto::topic::{self, SharedFilter};
use vigil_proto::{Publish, ReasonCode, RetainHandling, Subscribe, Unsubscribe, Will};

use vigil_store::{MessageRecord, Op, QueuedRecord, Ticket};

use super::retained::RetainedCursor;
use super::subscriptions::Match;
use super::{Broker, Counters, PushOutcome, SessionRef, Wakes};
use crate::remote_acks::RemoteAcks;

/// Where a published message went.
#[derive(Debug)]
pub(crate) struct Routed {
    /// Number of subscribers it was routed to.
    pub matched: usize,
    /// QoS 1/2 deliveries waiting for room in an online subscriber's full queue.
    pub blocked: Vec<(SessionRef, Outgoing)>,
    /// The store commit that holds what routing wrote (retained message,
    /// deliveries to persistent sessions): acknowledge only once it is durable.
    pub ticket: Option<Ticket>,
    /// What other cluster nodes must accept before the publisher is acknowledged.
    pub remote: Option<RemoteAcks>,
}

/// A SUBSCRIBE that breaks a rule worth closing the connection for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscribeViolation {
    /// Reason code for the DISCONNECT.
    pub reason: ReasonCode,
    /// What was wrong.
    pub detail: String,
}

impl Broker {
    /// Routes a message published by `from` (None for wills) at `now` to
    /// every matching subscriber's mailbox and updates the retained index.
    /// Returns the number of subscribers it was routed to. QoS 1/2 deliveries
    /// that found an online subscriber's queue full are dropped here
    /// (counted); a publishing connection uses `publish_packet` instead,
    /// which hands them back so it can wait for room.
    pub fn publish(&self, now: Clock, from: Option<&SessionRef>, message: Message) -> usize {
        let routed = self.route(now, from, message, &mut Wakes::default());
        for (session, outgoing) in routed.blocked {
            self.drop_blocked(&session, &outgoing);
        }
        routed.matched
    }

    fn route(
        &self,
        now: Clock,
        from: Option<&SessionRef>,
        message: Message,
        wakes: &mut Wakes,
    ) -> Routed {
        if from.is_some() {
            self.counters.messages_in.add(1);
        }
        let message = Arc::new(message);
        let mut ops = Vec::new();
        // Computed once per message, and only when something is written.
        let mut record: Option<MessageRecord> = None;
        if message.retain {
            self.retained.update(&message);
            if self.store.is_some() {
                ops.push(if message.payload.is_empty() {
                    Op::DeleteRetained(message.topic.clone())
                } else {
                    Op::PutRetained(record_of(&mut record, &message, &now))
                });
            }
        }
        // Handed to the cluster (absent on a single node) before local
        // delivery, so the remote hop overlaps with the local work.
        let _gate = self.routing_gate();
        let remote = self.forward_to_cluster(&message);
        let mut matches = Vec::new();
        self.subs.match_topic(
            &message.topic,
            from.map(|s| s.key),
            |s| s.is_online(),
            &mut matches,
        );
        let mut routed = self.deliver_matches(now, &message, matches, ops, record, wakes);
        routed.remote = remote;
        routed
    }

    /// Queues `message` for each of `matches` (read access checked per
    /// delivery), writing `ops` and the deliveries to persistent sessions to
    /// the store first.
    pub(super) fn deliver_matches(
        &self,
        now: Clock,
        message: &Arc<Message>,
        mut matches: Vec<Match<SessionRef>>,
        mut ops: Vec<Op>,
        mut record: Option<MessageRecord>,
        wakes: &mut Wakes,
    ) -> Routed {
        // The ACL's read check, per delivery (none without an ACL).
        matches.retain(|m| self.may_deliver(&m.subscriber, &message.topic));
        let matched = matches.len();
        // One shared counter update per message, not per delivery.
        let mut queued = 0u64;
        let mut blocked = Vec::new();
        let stores_deliveries = self.store.is_some()
            && message.qos != vigil_proto::QoS::AtMostOnce
            && matches.iter().any(|m| m.subscriber.is_durable());
        if !stores_deliveries {
            for m in matches {
                let outgoing = Outgoing {
                    message: message.clone(),
                    qos: message.qos.min(m.qos),
                    retain: m.retain_as_published && message.retain,
                    subscription_ids: m.subscription_ids,
                    persisted: None,
                    shared: m.shared,
                };
                if let Some(o) = self.push(&m.subscriber, outgoing, wakes, &mut queued) {
                    blocked.push((m.subscriber, o));
                }
            }
            self.counters.messages_out.add(queued);
            let ticket = if ops.is_empty() {
                None
            } else {
                self.persist(ops)
            };
            return Routed {
                matched,
                blocked,
                ticket,
                remote: None,
            };
        }
        let mut deliveries = Vec::with_capacity(matches.len());
        for m in matches {
            let mut outgoing = Outgoing {
                message: message.clone(),
                qos: message.qos.min(m.qos),
                retain: m.retain_as_published && message.retain,
                subscription_ids: m.subscription_ids,
                persisted: None,
                shared: m.shared,
            };
            if outgoing.qos != vigil_proto::QoS::AtMostOnce && m.subscriber.is_durable() {
                let seq = self.next_seq();
                outgoing.persisted = Some(seq);
                ops.push(Op::Enqueue {
                    session: m.subscriber.key,
                    seq: seq.get(),
                    record: QueuedRecord {
                        message: record_of(&mut record, message, &now),
                        qos: outgoing.qos,
                        retain: outgoing.retain,
                        subscription_ids: outgoing.subscription_ids.clone(),
                    },
                });
            }
            deliveries.push((m.subscriber, outgoing));
        }
        // Written before any connection can see (and acknowledge) the delivery.
        let ticket = self.persist(ops);
        for (subscriber, outgoing) in deliveries {
            if let Some(o) = self.push(&subscriber, outgoing, wakes, &mut queued) {
                blocked.push((subscriber, o));
            }
        }
        self.counters.messages_out.add(queued);
        Routed {
            matched,
            blocked,
            ticket,
            remote: None,
        }
    }

    /// Routes an inbound PUBLISH received at `now`. QoS 1/2 deliveries to
    /// online subscribers whose queues are full come back in `blocked`: the
    /// caller must wake `wakes` and wait for room for them (`offer_blocked`,
    /// `give_up_blocked`) before acknowledging. Subscribers are not woken
    /// here but added to `wakes`.
    pub(crate) fn publish_packet(
        &self,
        from: &SessionRef,
        publish: Publish,
        now: Clock,
        wakes: &mut Wakes,
    ) -> Routed {
        let message = Message::from_publish(publish, now.instant);
        self.route(now, Some(from), message, wakes)
    }

    /// Adds the subscriptions of a SUBSCRIBE; returns one code per filter, and
    /// starts streaming the matching retained messages per Retain Handling.
    pub(crate) fn subscribe(
        &self,
        session: &SessionRef,
        sub: &Subscribe,
    ) -> Result<Vec<ReasonCode>, SubscribeViolation> {
        let id = sub.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(sub.filters.len());
        for s in &sub.filters {
            let (filter, group) = match SharedFilter::parse(&s.filter) {
                Ok(Some(shared)) => (shared.filter, Some(shared.group)),
                Ok(None) if topic::validate_topic_filter(&s.filter).is_ok() => {
                    (s.filter.as_str(), None)
                }
                _ => {
                    codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                    continue;
                }
            };
            if group.is_some() && s.options.no_local {
                return Err(SubscribeViolation {
                    reason: ReasonCode::PROTOCOL_ERROR,
                    detail: format!("No Local set on shared subscription {:?}", s.filter),
                });
            }
            let existed =
                self.subs
                    .subscribe(session.key, session.clone(), filter, group, s.options, id);
            if !existed {
                self.route_added(filter, group);
            }
            session
                .inner
                .lock()
                .subscriptions
                .insert(&s.filter, (s.options, id));
            codes.push(ReasonCode(s.options.qos.as_u8()));
            let send_retained = group.is_none()
                && match s.options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                // Streamed by the connection as it has room, not queued here:
                // the queue's bound would drop all but its first thousand.
                session
                    .mailbox
                    .add_stream(RetainedCursor::new(filter, s.options.qos, id));
            }
        }
        self.persist_session(session, &session.inner.lock());
        Ok(codes)
    }

    /// Moves up to `max` deliveries for `session` into `out`: what its queue
    /// holds first, then the next retained messages of its oldest stream
    /// (at least a quarter of `max` of them, so a busy queue does not starve
    /// a stream). Returns true while retained messages remain to stream.
    pub(crate) fn next_deliveries(
        &self,
        session: &SessionRef,
        out: &mut Vec<Outgoing>,
        max: usize,
        now: Instant,
    ) -> bool {
        let before = out.len();
        let (ended, streams) = session.mailbox.drain(out, max);
        if let Some(ended) = ended {
            self.stall_ended(session, ended.dropped);
        }
        if !streams {
            return false;
        }
        let Some(mut cursor) = session.mailbox.take_stream() else {
            return false;
        };
        let room = (max - (out.len() - before).min(max)).max(max / 4);
        let mut found = Vec::new();
        let done = self.retained.next_batch(&mut cursor, now, room, &mut found);
        // Read access is checked per message, retained ones included.
        found.retain(|m| self.may_deliver(session, &m.topic));
        self.counters.messages_out.add(found.len() as u64);
        out.extend(found.into_iter().map(|message| Outgoing {
            qos: message.qos.min(cursor.qos),
            message,
            retain: true,
            subscription_ids: cursor.subscription_id.into_iter().collect(),
            persisted: None,
            shared: false,
        }));
        if done {
            session.mailbox.has_streams()
        } else {
            session.mailbox.put_back_stream(cursor);
            true
        }
    }

    /// Removes the subscriptions of an UNSUBSCRIBE; one code per filter.
    pub(crate) fn unsubscribe(&self, session: &SessionRef, unsub: &Unsubscribe) -> Vec<ReasonCode> {
        let codes = unsub
            .filters
            .iter()
            .map(|f| {
                let existed = session.inner.lock().subscriptions.remove(f).is_some();
                self.remove_subscription(session, f);
                session.mailbox.remove_stream(f);
                if existed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.persist_session(session, &session.inner.lock());
        codes
    }

    /// Number of retained topics.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    pub(super) fn remove_subscription(&self, session: &SessionRef, filter: &str) {
        match SharedFilter::parse(filter) {
            Ok(Some(shared)) => {
                if self
                    .subs
                    .unsubscribe(session.key, shared.filter, Some(shared.group))
                {
                    self.route_removed(shared.filter, Some(shared.group));
                }
            }
            _ => {
                if self.subs.unsubscribe(session.key, filter, None) {
                    self.route_removed(filter, None);
                }
            }
        }
    }

    /// Publishes `session`'s will at `now` (its Message Expiry Interval
    /// counts from here).
    pub(super) fn publish_will(&self, now: Clock, session: &SessionRef, will: Will) {
        info!(client = session.client_id(), topic = %will.topic, "publishing will");
        Counters::add(&self.counters.wills_published, 1);
        let mut properties = will.properties;
        properties.will_delay_interval = None;
        let expires_at = properties
            .message_expiry_interval
            .map(|s| now.instant + std::time::Duration::from_secs(u64::from(s)));
        self.publish(
            now,
            None,
            Message {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
                properties: Message::boxed(properties),
                expires_at,
            },
        );
    }

    /// Queues one delivery (counted in `queued`, and the session added to
    /// `wakes` when it is owed a wake); hands back a QoS 1/2 delivery that
    /// found an online session's queue full and not yet stalled (the caller
    /// waits for room or drops it).
    pub(super) fn push(
        &self,
        session: &SessionRef,
        outgoing: Outgoing,
        wakes: &mut Wakes,
        queued: &mut u64,
    ) -> Option<Outgoing> {
        let online = session.is_online();
        let (outcome, wake) = session
            .mailbox
            .push_unwoken(outgoing, online, self.config.mailbox);
        if wake {
            wakes.add(session);
        }
        match outcome {
            PushOutcome::Queued => *queued += 1,
            PushOutcome::DroppedOffline => Counters::add(&self.counters.dropped_qos0, 1),
            PushOutcome::Full(o) if o.qos == vigil_proto::QoS::AtMostOnce => {
                Counters::add(&self.counters.dropped_qos0, 1)
            }
            // A stalled queue is a slow consumer already dealt with: its
            // overflow holds no publisher again until it has drained.
            PushOutcome::Full(o) if online && !session.mailbox.is_stalled() => return Some(o),
            PushOutcome::Full(o) => self.drop_blocked(session, &o),
            PushOutcome::Moved(o) => self.moved_delivery(session, &o),
        }
        None
    }
}

/// The store record of `m`, made on first use and reused after.
fn record_of(record: &mut Option<MessageRecord>, m: &Message, now: &Clock) -> MessageRecord {
    record
        .get_or_insert_with(|| MessageRecord::from_message(m, now))
        .clone()
}
