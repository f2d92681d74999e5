//! The ownership group over real TCP on 127.0.0.1–3: election, claims on
//! any node, epochs, races, failures, restart, batching, joining, and
//! malformed frames.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_ownership::{Epoch, Owner, Ownership, OwnershipError, OwnershipEvent};

use support::{eventually, Group};

/// Waits until every running node's applied state has `client_id` owned by `owner`.
async fn seen_everywhere(group: &Group, client_id: &str, owner: Option<Owner>) {
    eventually(
        &format!("{client_id} owned by {owner:?} on every node"),
        || {
            group
                .running()
                .all(|n| n.owner(client_id).expect("read") == owner)
                .then_some(())
        },
    )
    .await;
}

fn follower_of(group: &Group, leader: u64) -> u64 {
    *group
        .addrs
        .keys()
        .find(|id| **id != leader)
        .expect("a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_elects_a_leader_and_claims_on_any_node_are_seen_on_all() {
    let group = Group::start(3).await;
    let leader = group.leader().await;
    for id in 1..=3u64 {
        let client_id = format!("client-{id}");
        // Followers forward to the leader; the leader commits.
        let claimed = group.node(id).claim(&client_id, id).await.expect("claim");
        assert_eq!(claimed.previous, None);
        seen_everywhere(
            &group,
            &client_id,
            Some(Owner {
                node: id,
                epoch: claimed.epoch,
            }),
        )
        .await;
    }
    let status = group.node(follower_of(&group, leader)).status();
    assert_eq!(status.voters, BTreeSet::from([1, 2, 3]));
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.role, "follower");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_strictly_increase_and_a_stale_release_is_refused() {
    let group = Group::start(3).await;
    let mut changes_on_1 = group.node(1).changes();

    let first = group.node(1).claim("device", 1).await.expect("claim on 1");
    let second = group.node(2).claim("device", 2).await.expect("claim on 2");
    assert!(
        second.epoch > first.epoch,
        "{} then {}",
        first.epoch,
        second.epoch
    );
    let old = Owner {
        node: 1,
        epoch: first.epoch,
    };
    let new = Owner {
        node: 2,
        epoch: second.epoch,
    };
    assert_eq!(
        second.previous,
        Some(old),
        "the claim names the owner to ask for a hand-over"
    );

    // Node 1 learns from its change stream that its client was taken.
    let taken = loop {
        match tokio::time::timeout(support::CONVERGE, changes_on_1.recv()).await {
            Ok(Ok(OwnershipEvent::Changed(change))) if change.taken_from(1) => break change,
            Ok(Ok(_)) => continue,
            other => panic!("no takeover reported to node 1: {other:?}"),
        }
    };
    assert_eq!(
        (taken.client_id.as_str(), taken.previous, taken.current),
        ("device", Some(old), Some(new))
    );

    // The old owner's release, and a hand-over checked against the old epoch, are refused.
    match group.node(1).release("device", 1, first.epoch).await {
        Err(OwnershipError::StaleEpoch { current }) => assert_eq!(current, Some(new)),
        other => panic!("stale release: {other:?}"),
    }
    match group
        .node(3)
        .verify_current("device", old, support::CONVERGE)
        .await
    {
        Err(OwnershipError::StaleEpoch { current }) => assert_eq!(current, Some(new)),
        other => panic!("stale hand-over: {other:?}"),
    }
    // Node 1 checks the new owner's request before handing over.
    group
        .node(1)
        .verify_current("device", new, support::CONVERGE)
        .await
        .expect("current");
    seen_everywhere(&group, "device", Some(new)).await;

    group
        .node(3)
        .release("device", 2, second.epoch)
        .await
        .expect("release by the current owner");
    seen_everywhere(&group, "device", None).await;
    let third = group
        .node(3)
        .claim("device", 3)
        .await
        .expect("claim after release");
    assert!(
        third.epoch > second.epoch,
        "an epoch is never reused after a release"
    );
    assert_eq!(third.previous, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_from_two_nodes_leave_one_owner_with_increasing_epochs() {
    let group = Group::start(3).await;
    let leader = group.leader().await;
    let mut last = Epoch(0);
    for round in 0..100 {
        let (a, b) = tokio::join!(
            group.node(1).claim("racer", 1),
            group.node(2).claim("racer", 2)
        );
        let (a, b) = (a.expect("claim on 1"), b.expect("claim on 2"));
        assert_ne!(a.epoch, b.epoch, "round {round}");
        assert!(
            a.epoch > last && b.epoch > last,
            "round {round}: epochs go back"
        );
        let (winner, loser) = if a.epoch > b.epoch {
            ((1, a), (2, b))
        } else {
            ((2, b), (1, a))
        };
        // The later claim replaced the earlier one, and reports it.
        assert_eq!(
            winner.1.previous,
            Some(Owner {
                node: loser.0,
                epoch: loser.1.epoch
            }),
            "round {round}"
        );
        last = winner.1.epoch;
        let owner = Owner {
            node: winner.0,
            epoch: winner.1.epoch,
        };
        // The leader applied both before answering.
        assert_eq!(
            group.node(leader).owner("racer").expect("read"),
            Some(owner),
            "round {round}"
        );
        if round % 25 == 24 {
            seen_everywhere(&group, "racer", Some(owner)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_of_three_nodes_stopped_claims_still_work() {
    let mut group = Group::start(3).await;
    let leader = group.leader().await;
    // Stopping the leader is the harder case: the others elect a new one.
    group.stop(leader).await;
    let new_leader = group.leader().await;
    assert_ne!(new_leader, leader);
    for id in group
        .addrs
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect::<Vec<_>>()
    {
        let client_id = format!("after-{id}");
        let claimed = group
            .node(id)
            .claim(&client_id, id)
            .await
            .expect("claim with two of three");
        seen_everywhere(
            &group,
            &client_id,
            Some(Owner {
                node: id,
                epoch: claimed.epoch,
            }),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_nodes_stopped_a_claim_fails_with_no_quorum_in_time() {
    let mut group = Group::start(3).await;
    let leader = group.leader().await;
    group
        .node(leader)
        .claim("before", leader)
        .await
        .expect("claim with all three");
    // Leave the leader alone: it must notice it lost its majority.
    let others: Vec<_> = group
        .addrs
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    for id in &others {
        group.stop(*id).await;
    }
    let bound = group.node(leader).status();
    assert_eq!(bound.node_id, leader);
    let started = Instant::now();
    let refused = group.node(leader).claim("during", leader).await;
    let took = started.elapsed();
    println!("a leader without its majority refused a claim after {took:?}");
    assert!(
        matches!(refused, Err(OwnershipError::NoQuorum(_))),
        "{refused:?}"
    );
    assert!(took <= Duration::from_secs(3), "NoQuorum after {took:?}");
    // Connections already held are the broker's business: the state is still readable.
    assert_eq!(
        group
            .node(leader)
            .owner("before")
            .expect("read")
            .map(|o| o.node),
        Some(leader)
    );

    // A follower left alone (no leader at all) is refused within the bound too.
    group.restart(others[0]).await;
    group.leader().await;
    group.stop(leader).await;
    let started = Instant::now();
    let refused = group.node(others[0]).claim("alone", others[0]).await;
    let took = started.elapsed();
    println!("a follower without a leader refused a claim after {took:?}");
    assert!(
        matches!(refused, Err(OwnershipError::NoQuorum(_))),
        "{refused:?}"
    );
    assert!(took <= Duration::from_secs(3), "NoQuorum after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_recovers_its_state_from_redb_and_catches_up() {
    // Small snapshots so the node also catches up past a purged log.
    let mut group = Group::start_with(3, |c| {
        c.snapshot_after = 20;
        c.keep_after_snapshot = 5;
    })
    .await;
    let leader = group.leader().await;
    let restarted = follower_of(&group, leader);
    let before = group
        .node(leader)
        .claim("before-stop", leader)
        .await
        .expect("claim");
    let before = Owner {
        node: leader,
        epoch: before.epoch,
    };
    seen_everywhere(&group, "before-stop", Some(before)).await;

    group.stop(restarted).await;
    // One claim per entry, more entries than a snapshot interval.
    let mut after = Vec::new();
    for i in 0..60 {
        let client_id = format!("while-down-{i}");
        let claimed = group
            .node(leader)
            .claim(&client_id, leader)
            .await
            .expect("claim while down");
        after.push((
            client_id,
            Owner {
                node: leader,
                epoch: claimed.epoch,
            },
        ));
    }

    group.restart(restarted).await;
    // Read before it hears from anyone: what it had applied is on disk.
    assert_eq!(
        group.node(restarted).owner("before-stop").expect("read"),
        Some(before)
    );
    eventually("the restarted node caught up", || {
        let node = group.node(restarted);
        after
            .iter()
            .all(|(id, owner)| node.owner(id).expect("read") == Some(*owner))
            .then_some(())
    })
    .await;
    let claimed = group
        .node(restarted)
        .claim("after-restart", restarted)
        .await
        .expect("claim on the restarted node");
    seen_everywhere(
        &group,
        "after-restart",
        Some(Owner {
            node: restarted,
            epoch: claimed.epoch,
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_claims_share_few_raft_entries() {
    let group = Group::start(3).await;
    let leader = group.leader().await;
    let log_before = group.node(leader).status().last_applied.expect("applied");
    let started = Instant::now();
    let claims = (0..1000u64).map(|i| {
        let node = group.node(i % 3 + 1);
        async move { node.claim(&format!("storm-{i}"), i % 3 + 1).await }
    });
    let results = futures_util::future::join_all(claims).await;
    let took = started.elapsed();
    let epochs: BTreeSet<Epoch> = results
        .iter()
        .map(|r| r.as_ref().expect("claim").epoch)
        .collect();
    assert_eq!(epochs.len(), 1000, "every claim has its own epoch");
    let log_after = group.node(leader).status().last_applied.expect("applied");
    let entries = log_after - log_before;
    println!("1000 concurrent claims on 3 nodes: {took:?}, {entries} Raft entries");
    assert!(
        entries <= 100,
        "{entries} entries for 1000 claims: not batched"
    );
    eventually("all 1000 applied everywhere", || {
        group
            .running()
            .all(|n| n.owned_count().expect("count") == 1000)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_as_a_learner_then_a_voter() {
    let mut group = Group::start(3).await;
    let leader = group.leader().await;
    let early = group.node(2).claim("early", 2).await.expect("claim");

    let listener = tokio::net::TcpListener::bind("127.0.0.4:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    group.addrs.insert(4, addr);
    let fourth = Ownership::start_with_listener(group.config(4), listener)
        .await
        .expect("start node 4");
    group.nodes.insert(4, Some(fourth));
    // No bootstrap on a joining node: the leader adds it.
    group
        .node(leader)
        .add_learner(4, &addr.to_string())
        .await
        .expect("add learner");
    group
        .node(leader)
        .change_membership(BTreeSet::from([1, 2, 3, 4]))
        .await
        .expect("change membership");
    eventually("node 4 is a voter everywhere", || {
        group
            .running()
            .all(|n| n.status().voters == BTreeSet::from([1, 2, 3, 4]))
            .then_some(())
    })
    .await;
    assert_eq!(
        group.node(4).owner("early").expect("read"),
        Some(Owner {
            node: 2,
            epoch: early.epoch
        })
    );
    let claimed = group
        .node(4)
        .claim("joined", 4)
        .await
        .expect("claim on node 4");
    seen_everywhere(
        &group,
        "joined",
        Some(Owner {
            node: 4,
            epoch: claimed.epoch,
        }),
    )
    .await;

    let follower = follower_of(&group, leader);
    match group
        .node(follower)
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
    {
        Err(OwnershipError::NotLeader { leader: Some(l) }) => assert_eq!(l, leader),
        other => panic!("membership change on a follower: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_that_connection() {
    let group = Group::start(3).await;
    let target = group.addrs[&1];
    for garbage in [
        &[0xff, 0xff, 0xff, 0xff][..],
        &[0, 0, 0, 0],
        &[0, 0, 0, 3, 0xff, 0xff, 0xff],
    ] {
        let mut stream = TcpStream::connect(target).await.expect("connect");
        stream.write_all(garbage).await.expect("write");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(support::CONVERGE, stream.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{garbage:?}: the node answered {read:?}"
        );
    }
    let claimed = group.node(2).claim("still-fine", 2).await.expect("claim");
    seen_everywhere(
        &group,
        "still-fine",
        Some(Owner {
            node: 2,
            epoch: claimed.epoch,
        }),
    )
    .await;
}

/// Whether `cut_off_node_3` cuts node 3 off from the two others.
static CUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_filter_partitions_live_nodes_and_they_converge_once_it_lifts() {
    use std::sync::atomic::Ordering::Relaxed;
    // Each node's filter cuts the calls that cross the partition, both
    // ways: node 3 to 1 and 2, and 1 and 2 to node 3 (127.0.0.3).
    let group = Group::start_with(3, |c| {
        let me = c.node_id;
        c.peer_filter = Some(vigil_ownership::PeerFilter::new(move |addr| {
            let to_3 = addr.ip() == std::net::IpAddr::from([127, 0, 0, 3]);
            CUT.load(Relaxed) && (me == 3) != to_3
        }));
    })
    .await;
    let first = group.node(3).claim("kept", 3).await.expect("claim");
    CUT.store(true, Relaxed);
    let refused = support::eventually_async("node 3 refuses claims", || async {
        match group.node(3).claim("newcomer", 3).await {
            Err(e @ OwnershipError::NoQuorum(_)) => Some(e),
            _ => None,
        }
    })
    .await;
    println!("cut off: node 3 refused a claim ({refused})");
    let taken = support::eventually_async("the majority claims", || async {
        group.node(1).claim("kept", 1).await.ok()
    })
    .await;
    assert!(taken.epoch > first.epoch);
    let stale = Some(Owner {
        node: 3,
        epoch: first.epoch,
    });
    assert_eq!(group.node(3).owner("kept").expect("read"), stale);
    CUT.store(false, Relaxed);
    let healed = Instant::now();
    let owner = Some(Owner {
        node: 1,
        epoch: taken.epoch,
    });
    seen_everywhere(&group, "kept", owner).await;
    println!(
        "healed: node 3 applied the newer claim {:?} after",
        healed.elapsed()
    );
    group
        .node(3)
        .claim("after", 3)
        .await
        .expect("node 3 claims again");
}
