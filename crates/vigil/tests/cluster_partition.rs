//! A network partition between live cluster nodes, with the test-only
//! fault switch (vigil-cluster's `fault-injection` feature, which this
//! crate's dev-dependency turns on for the `vigil` binary the tests run):
//! each node drops the cluster traffic (gossip, links, hand-overs, Raft) to
//! the IPs its `VIGIL_FAULT_FILE` lists, and the test rewrites the files to
//! cut and heal. Every wait polls until the cluster has converged, with
//! generous limits, never a fixed sleep; the figures are printed.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

// Each test file uses part of the harness.
#[allow(dead_code)]
mod cluster_nodes;
#[allow(dead_code)]
mod cluster_raw;

use cluster_nodes::*;
use cluster_raw::Raw;

/// How long anything here may take to converge.
const LIMIT: Duration = Duration::from_secs(30);

/// Whether `payload`, published by `from`, reaches `to` within 250 ms.
fn delivered(from: &mut Raw, to: &mut Raw, topic: &str, payload: &str) -> bool {
    from.publish(topic, payload) && to.receives(payload, Duration::from_millis(250))
}

/// Polls `check` until it holds (at most `LIMIT`); the time since `from`.
fn after(from: Instant, what: &str, check: impl FnMut() -> bool) -> Duration {
    wait_until(what, LIMIT, check);
    let took = from.elapsed();
    eprintln!("  {what}: {took:?}");
    took
}

/// A follower of the ownership group (node 3, or node 2 if node 3 leads)
/// is cut off from the two other nodes, both processes alive: see
/// `partition_and_heal`.
#[test]
fn a_partition_isolates_the_minority_and_heals() {
    partition_and_heal(|leader| if leader == 3 { 2 } else { 3 });
}

/// The same with the Raft leader cut off: it must notice it lost its
/// majority, and the two others elect a new leader.
#[test]
fn a_partition_isolating_the_raft_leader_heals_too() {
    partition_and_heal(|leader| leader);
}

/// Node `pick(leader)` is cut off from the two others: it refuses new
/// CONNECTs (0x88; 3.1.1: 3) and still serves its clients, the majority
/// goes on, and each side sees the other dead. A client id held on the
/// minority node connects on the majority meanwhile. After healing, the
/// minority node learns of that newer claim and closes its old connection
/// (0x8E), routes flow both ways again, and every node sees three members.
fn partition_and_heal(pick: impl Fn(u64) -> u64) {
    let partition = Partition::new();
    let nodes = three_nodes_with(Some(&partition));
    for n in &nodes {
        assert!(n.fault_armed, "node {}: the fault switch is armed", n.id);
    }
    let leader = nodes[0].status()["ownership"]["leader"].as_u64().unwrap();
    let minority = pick(leader);
    let m = nodes.iter().find(|n| n.id == minority).unwrap();
    let [a, b] = [0, 1].map(|i| nodes.iter().filter(|n| n.id != minority).nth(i).unwrap());
    let (mut sub_a, _) = Raw::connect(a, "sub-a");
    sub_a.subscribe("part/a");
    let (mut sub_b, _) = Raw::connect(b, "sub-b");
    sub_b.subscribe("part/b");
    let (mut sub_m, _) = Raw::connect(m, "sub-m");
    sub_m.subscribe("part/m");
    for (n, of) in [(a, b.id), (a, m.id), (b, m.id), (m, a.id)] {
        routes_converge(n, of, 1);
    }
    let (mut pub_a, _) = Raw::connect(a, "pub-a");
    let (mut pub_m, _) = Raw::connect(m, "pub-m");
    let (mut kept_m, code) = Raw::connect(m, "kept");
    assert_eq!(code, 0);
    assert!(delivered(&mut pub_a, &mut sub_m, "part/m", "before"));

    eprintln!(
        "partition: node {} cut off from nodes {} and {} (Raft leader: node {leader}); \
         since every node applied the cut:",
        m.id, a.id, b.id
    );
    partition.cut(&nodes, &[m.id]);
    let cut = Instant::now();
    let mut probe = 0;
    let mut probe_id = || {
        probe += 1;
        format!("probe-{probe}")
    };
    let (majority, refused) = std::thread::scope(|s| {
        let majority = s.spawn(|| {
            after(cut, "the majority accepts CONNECTs and forwards", || {
                Raw::connect(a, "majority-a").1 == 0
                    && Raw::connect(b, "majority-b").1 == 0
                    && delivered(&mut pub_a, &mut sub_b, "part/b", "during")
            })
        });
        s.spawn(|| {
            after(cut, "the majority sees the minority node dead", || {
                a.member(m.id).is_none() && b.member(m.id).is_none()
            })
        });
        s.spawn(|| {
            after(cut, "the minority node sees the two others dead", || {
                m.status()["members"].as_array().unwrap().is_empty()
            })
        });
        let refused = after(cut, "the minority node refuses a CONNECT (0x88)", || {
            let (_c, code) = Raw::connect(m, &probe_id());
            assert!(code == 0 || code == 0x88, "CONNACK {code:#x}");
            code == 0x88
        });
        (majority.join().unwrap(), refused)
    });
    assert!(kept_m.ping(), "the minority node's client is still served");
    let asked = Instant::now();
    let (_c, code) = Raw::connect(m, &probe_id());
    assert_eq!(code, 0x88);
    let refusal = asked.elapsed();
    eprintln!("  a CONNECT on the minority node is refused in {refusal:?}");
    assert!(refusal < Duration::from_secs(5), "{refusal:?}");
    let (_c, code) = Raw::connect_level(m.ip, m.mqtt, &probe_id(), 4);
    assert_eq!(code, 0x03, "3.1.1: return code 3, server unavailable");
    assert!(kept_m.ping(), "still served after refusals");

    // The majority commits a newer claim of "kept"; the minority node
    // cannot be asked to hand over, and the CONNACK does not wait for it.
    let asked = Instant::now();
    let (mut kept_a, code) = Raw::connect(a, "kept");
    let took = asked.elapsed();
    assert_eq!(code, 0, "accepted on node {}", a.id);
    eprintln!(
        "  \"kept\" connects on node {} (its old node unreachable): CONNACK in {took:?}",
        a.id
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(kept_m.ping(), "the minority node has not heard of it");

    eprintln!("healed; since every node applied the heal:");
    partition.heal(&nodes);
    let healed = Instant::now();
    let converging = AtomicBool::new(true);
    let (converged, (worst, refusals)) = std::thread::scope(|s| {
        // What a client of the majority sees meanwhile: the healed node
        // may bring a newer Raft term and an election with it.
        let majority = s.spawn(|| {
            let (mut worst, mut refusals) = (Duration::ZERO, 0);
            while converging.load(Relaxed) {
                let asked = Instant::now();
                let (_c, code) = Raw::connect(a, "majority-a");
                worst = worst.max(asked.elapsed());
                assert!(code == 0 || code == 0x88, "CONNACK {code:#x}");
                refusals += usize::from(code == 0x88);
                std::thread::sleep(Duration::from_millis(20));
            }
            (worst, refusals)
        });
        let waits = [
            s.spawn(|| {
                after(healed, "the minority node accepts CONNECTs", || {
                    Raw::connect(m, &probe_id()).1 == 0
                })
            }),
            s.spawn(|| {
                let mut reason = None;
                let took = after(
                    healed,
                    "the minority node closes its \"kept\" (0x8E)",
                    || {
                        reason = kept_m.disconnect_reason();
                        reason.is_some()
                    },
                );
                assert_eq!(reason, Some(0x8E), "Session taken over");
                took
            }),
            s.spawn(|| {
                after(
                    healed,
                    "the majority reaches the minority's subscriber",
                    || delivered(&mut pub_a, &mut sub_m, "part/m", "healed"),
                )
            }),
            s.spawn(|| {
                after(
                    healed,
                    "the minority reaches the majority's subscriber",
                    || delivered(&mut pub_m, &mut sub_a, "part/a", "healed"),
                )
            }),
            s.spawn(|| {
                after(healed, "every node sees three members", || {
                    nodes
                        .iter()
                        .all(|n| n.status()["members"].as_array().unwrap().len() == 2)
                })
            }),
        ];
        let converged = waits.map(|w| w.join().unwrap()).into_iter().max().unwrap();
        converging.store(false, Relaxed);
        (converged, majority.join().unwrap())
    });
    eprintln!(
        "  CONNECTs on node {} meanwhile: slowest CONNACK {worst:?}, {refusals} refused (0x88)",
        a.id
    );
    assert!(kept_a.ping(), "the newer \"kept\", on the majority, stays");
    eprintln!(
        "partition: majority serving after {majority:?}, minority refusing after {refused:?}; \
         converged {converged:?} after the heal"
    );
}
