//! A CONNECT's wait for its session: the core's `claim` says whether the
//! session is free or held by a live connection (which it told to hand the
//! session back); the waiting, bounded by `takeover_wait`, is done here.

use vigil_proto::time::Clock;

use crate::core::handover::{MovedSession, ShippedSession};
use crate::core::{Broker, Claim, ConnectGrant, ConnectRequest};

/// Attaches a new connection to the session of `req.client_id`, taking it
/// over from a live connection first: that one is told `TakenOver` and hands
/// its state back through `Broker::disconnect`; if it does not within
/// `takeover_wait`, the session is taken from it as it is.
pub(crate) async fn connect(broker: &Broker, req: &ConnectRequest) -> ConnectGrant {
    loop {
        let session = broker.session_for(&req.client_id);
        // One CONNECT at a time per session, in the order they came.
        let _turn = session.connect_lock.lock().await;
        loop {
            let released = session.released.notified();
            tokio::pin!(released);
            // Listening before the claim: a hand-back right after it is not missed.
            released.as_mut().enable();
            match broker.claim(Clock::now(), &session, req) {
                Claim::Granted(grant) => return grant,
                Claim::Replaced => break,
                Claim::Held { conn_id } => {
                    let wait = broker.config().takeover_wait;
                    if tokio::time::timeout(wait, released).await.is_err() {
                        broker.take_back(&session, conn_id);
                    }
                }
            }
        }
    }
}

/// Takes the session of `client_id` out of this broker for another cluster
/// node: a live connection is told `TakenOver` (DISCONNECT 0x8E) and waited
/// for, up to `takeover_wait`, as a local takeover waits; then the session
/// is exported and retired here, its subscriptions kept for the cluster to
/// pass on what still comes for it, until `Broker::end_moved`. None: no
/// session to ship.
pub async fn hand_over_session(
    broker: &Broker,
    client_id: &str,
) -> Option<(ShippedSession, MovedSession)> {
    let session = broker.session(client_id)?;
    // In turn with local CONNECTs of the id.
    let _turn = session.connect_lock.lock().await;
    let released = session.released.notified();
    tokio::pin!(released);
    released.as_mut().enable();
    if let Some(conn_id) = broker.release_for_hand_over(&session) {
        let wait = broker.config().takeover_wait;
        if tokio::time::timeout(wait, released).await.is_err() {
            broker.take_back(&session, conn_id);
        }
    }
    let shipped = broker.export_session(Clock::now(), &session)?;
    Some((shipped, MovedSession(session.clone())))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use vigil_proto::server::{CloseReason, SessionState};
    use vigil_proto::ProtocolVersion;

    use super::*;
    use crate::core::{Control, CoreConfig, Counters, DisconnectInfo};

    fn req(id: &str) -> ConnectRequest {
        ConnectRequest {
            client_id: id.into(),
            protocol: ProtocolVersion::V5,
            clean_start: false,
            session_expiry: 60,
            will: None,
            username: None,
        }
    }

    fn bye() -> DisconnectInfo {
        DisconnectInfo {
            reason: CloseReason::PeerClosed,
            publish_will: false,
            session_expiry: None,
            state: SessionState::default(),
        }
    }

    /// Many CONNECTs for few client ids, each connection handing back when
    /// told or leaving by itself: every one is granted, none waits forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnect_storm_finishes_without_deadlock() {
        let b = Broker::new(
            CoreConfig {
                takeover_wait: Duration::from_millis(200),
                ..CoreConfig::default()
            },
            Instant::now(),
        );
        let mut tasks = Vec::new();
        for i in 0..200 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let g = connect(&b, &req(&format!("dev-{}", i % 50))).await;
                // Play the connection: hand back on takeover, or leave after a
                // moment (the storm's churn, not a synchronisation).
                tokio::select! {
                    c = g.control.recv() => assert_eq!(c, Control::TakenOver),
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
                b.disconnect(Clock::now(), &g.session, g.conn_id, bye());
            }));
        }
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("no deadlock");
        assert_eq!(Counters::get(&b.counters().connections_current), 0);
        assert_eq!(b.session_count(), 50);
    }

    /// A connection that never hands back is waited for `takeover_wait`
    /// (on tokio's paused clock), not a moment less, then loses the session.
    #[tokio::test(start_paused = true)]
    async fn an_old_connection_that_never_hands_back_loses_the_session_after_the_wait() {
        let wait = Duration::from_secs(5);
        let b = Broker::new(
            CoreConfig {
                takeover_wait: wait,
                ..CoreConfig::default()
            },
            Instant::now(),
        );
        let ghost = connect(&b, &req("dev")).await;
        let b2: Arc<Broker> = b.clone();
        let started = tokio::time::Instant::now();
        let new = tokio::spawn(async move { connect(&b2, &req("dev")).await });
        assert_eq!(ghost.control.recv().await, Control::TakenOver);
        let new = new.await.unwrap();
        assert_eq!(started.elapsed(), wait, "waited exactly takeover_wait");
        assert!(new.session_present);
        assert_eq!(Counters::get(&b.counters().disconnect_taken_over), 1);
        assert_eq!(Counters::get(&b.counters().connections_current), 1);
        // The ghost's late hand-back changes nothing.
        b.disconnect(Clock::now(), &ghost.session, ghost.conn_id, bye());
        assert!(new.session.is_online());
        assert_eq!(Counters::get(&b.counters().connections_current), 1);
    }
}
