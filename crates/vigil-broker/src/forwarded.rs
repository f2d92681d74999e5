//! Messages another cluster node forwarded here, delivered as a batch: the
//! core routes each one (`Broker::deliver_forwarded`, no waiting), and this
//! thin async layer then wakes the subscribers and waits, as a local
//! publisher's connection would, for room in queues that were full.

use vigil_proto::message::{Message, Outgoing};
use vigil_proto::time::Clock;
use vigil_store::Ticket;

use crate::connection::room;
use crate::core::{Broker, SessionRef, Wakes};

/// One batch of forwarded messages being delivered to local subscribers.
#[derive(Debug)]
pub struct ForwardedBatch {
    now: Clock,
    wakes: Wakes,
    blocked: Vec<(SessionRef, Outgoing)>,
    ticket: Option<Ticket>,
}

impl ForwardedBatch {
    /// An empty batch whose messages arrived at `now`.
    pub fn new(now: Clock) -> ForwardedBatch {
        ForwardedBatch {
            now,
            wakes: Wakes::default(),
            blocked: Vec::new(),
            ticket: None,
        }
    }

    /// Routes `message` to this node's subscribers: every matching plain
    /// subscription and one member of each shared group in `groups`
    /// (`(group, filter)`). Returns the number of subscribers it matched.
    pub fn deliver(
        &mut self,
        broker: &Broker,
        message: Message,
        groups: &[(String, String)],
    ) -> usize {
        self.deliver_selected(broker, message, groups, &|_| true)
    }

    /// As `deliver`, to the sessions whose client id `select` accepts only
    /// (a cluster node passing on a moved session's messages names it; a
    /// session that had a message on the node it left skips that one).
    pub fn deliver_selected(
        &mut self,
        broker: &Broker,
        message: Message,
        groups: &[(String, String)],
        select: &dyn Fn(&str) -> bool,
    ) -> usize {
        let routed = broker.deliver_forwarded(self.now, message, groups, select, &mut self.wakes);
        self.ticket = self.ticket.max(routed.ticket);
        self.blocked.extend(routed.blocked);
        routed.matched
    }

    /// Also waits for `ticket` (a store commit made for this batch).
    pub fn add_ticket(&mut self, ticket: Option<Ticket>) {
        self.ticket = self.ticket.max(ticket);
    }

    /// Wakes the subscribers, waits (at most the slow-consumer wait) for room
    /// for deliveries that found a full queue, and returns the store commit
    /// that must be durable before the batch is acknowledged.
    pub async fn finish(self, broker: &Broker) -> Option<Ticket> {
        let ForwardedBatch {
            mut wakes,
            blocked,
            ticket,
            ..
        } = self;
        wakes.wake_all();
        if !blocked.is_empty() {
            room::deliver_blocked(broker, None, blocked).await;
        }
        ticket
    }
}
