//! A publisher's wait for room in full subscriber queues (backpressure): the
//! core says whether a held-back delivery went in (`offer_blocked`) and what
//! a queue still full at the deadline costs (`give_up_blocked`); the waiting
//! on each mailbox's `space`, bounded by `overflow.wait`, is done here.

use std::time::Instant;

use vigil_proto::message::Outgoing;

use crate::core::{Broker, SessionRef, StillBlocked};

/// Waits (at most `overflow.wait` for all of them) for room in each full
/// queue of `blocked`, holding the publisher `from` meanwhile; gives up on
/// what is still blocked at the deadline.
pub(crate) async fn deliver_blocked(
    broker: &Broker,
    from: Option<&SessionRef>,
    blocked: Vec<(SessionRef, Outgoing)>,
) {
    let started = Instant::now();
    if let Some(from) = from {
        from.mailbox.set_held(true, started);
    }
    let deadline = tokio::time::Instant::now() + broker.config().overflow.wait;
    for (session, outgoing) in blocked {
        if let Err(o) = wait_for_room(broker, &session, outgoing, deadline).await {
            broker.give_up_blocked(&session, &o, started);
        }
    }
    if let Some(from) = from {
        from.mailbox.set_held(false, Instant::now());
    }
}

/// Offers `outgoing` to `session` each time its mailbox makes room, until it
/// goes in, the session goes offline, or `deadline` passes (handed back).
async fn wait_for_room(
    broker: &Broker,
    session: &SessionRef,
    mut outgoing: Outgoing,
    deadline: tokio::time::Instant,
) -> Result<(), Outgoing> {
    let space = session.mailbox.space();
    loop {
        let room = space.notified();
        tokio::pin!(room);
        // Listening before the try: room made right after it is not missed.
        room.as_mut().enable();
        match broker.offer_blocked(session, outgoing) {
            Ok(()) => return Ok(()),
            Err(StillBlocked::Offline(o)) => return Err(o),
            Err(StillBlocked::Full(o)) => outgoing = o,
        }
        if tokio::time::timeout_at(deadline, room).await.is_err() {
            return Err(outgoing);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use vigil_proto::time::Clock;
    use vigil_proto::{ProtocolVersion, QoS, RetainHandling, Subscribe, Subscription};
    use vigil_proto::{Publish, SubscriptionOptions};

    use super::*;
    use crate::core::{ConnectRequest, CoreConfig, Counters, MailboxLimits, Wakes};

    fn req(id: &str) -> ConnectRequest {
        ConnectRequest {
            client_id: id.into(),
            protocol: ProtocolVersion::V5,
            clean_start: true,
            session_expiry: 0,
            will: None,
            username: None,
        }
    }

    fn sub_t() -> Subscribe {
        Subscribe {
            packet_id: 1,
            filters: vec![Subscription {
                filter: "t".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    retain_handling: RetainHandling::SendAtSubscribe,
                    ..SubscriptionOptions::default()
                },
            }],
            ..Subscribe::default()
        }
    }

    fn qos1() -> Publish {
        Publish {
            topic: "t".into(),
            qos: QoS::AtLeastOnce,
            packet_id: 1,
            ..Default::default()
        }
    }

    /// A subscriber with a queue of two, and a publisher that filled it and
    /// holds a third message back.
    fn full_queue(wait: Duration) -> (Arc<Broker>, SessionRef, Vec<(SessionRef, Outgoing)>) {
        let config = CoreConfig {
            mailbox: MailboxLimits {
                max_messages: 2,
                max_bytes: 1 << 20,
            },
            overflow: crate::core::OverflowConfig {
                wait,
                ..Default::default()
            },
            ..CoreConfig::default()
        };
        let now = Clock::now();
        let b = Broker::new(config, now.instant);
        let subscriber = b.connect_now(now, &req("slow"));
        b.subscribe(&subscriber.session, &sub_t()).unwrap();
        let publisher = b.connect_now(now, &req("pub"));
        for _ in 0..2 {
            let routed = b.publish_packet(&publisher.session, qos1(), now, &mut Wakes::default());
            assert!(routed.blocked.is_empty());
        }
        let routed = b.publish_packet(&publisher.session, qos1(), now, &mut Wakes::default());
        assert_eq!(
            routed.blocked.len(),
            1,
            "the third QoS 1 message waits for room"
        );
        (b, subscriber.session, routed.blocked)
    }

    #[tokio::test]
    async fn a_full_online_queue_holds_the_publisher_instead_of_dropping_qos1() {
        let (b, subscriber, blocked) = full_queue(Duration::from_secs(60));
        let deliver = deliver_blocked(&b, None, blocked);
        tokio::pin!(deliver);
        // Polled once: the queue is full, so it waits (for room), and only then
        // does the subscriber drain one; no sleep decides the order.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(deliver.as_mut(), cx))
        })
        .await;
        assert!(
            first.is_pending(),
            "the publisher is held while the queue is full"
        );
        let mut out = Vec::new();
        subscriber.mailbox.drain_into(&mut out, 1);
        assert_eq!(out.len(), 1);
        tokio::time::timeout(Duration::from_secs(5), deliver)
            .await
            .expect("the held message went in once there was room");
        assert_eq!(subscriber.mailbox.len(), 2, "delivered once there was room");
        assert_eq!(
            Counters::get(&b.counters().dropped_queue_full),
            0,
            "nothing acknowledged was dropped"
        );
    }

    /// On tokio's paused clock: a queue that stays full is given up on at
    /// exactly `overflow.wait`, as a slow consumer.
    #[tokio::test(start_paused = true)]
    async fn a_queue_still_full_at_the_deadline_is_a_slow_consumer() {
        let wait = Duration::from_millis(500);
        let (b, subscriber, blocked) = full_queue(wait);
        let started = tokio::time::Instant::now();
        deliver_blocked(&b, None, blocked).await;
        assert_eq!(started.elapsed(), wait);
        assert!(subscriber.mailbox.is_stalled());
        assert_eq!(Counters::get(&b.counters().slow_consumers), 1);
        assert_eq!(Counters::get(&b.counters().dropped_queue_full), 1);
    }
}
