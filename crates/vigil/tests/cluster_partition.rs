//! A network partition between live cluster nodes, with the test-only
//! fault switch (vigil-cluster's `fault-injection` feature, which this
//! crate's dev-dependency turns on for the `vigil` binary the tests run):
//! each node drops the cluster traffic (gossip, links, hand-overs, Raft) to
//! the IPs its `VIGIL_FAULT_FILE` lists, and the test rewrites the files to
//! cut and heal. Every wait polls until the cluster has converged, with
//! generous limits, never a fixed sleep; the figures are printed.

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

/// Node 3 is cut off from nodes 1 and 2, both processes alive: node 3
/// refuses new CONNECTs (0x88; 3.1.1: 3) and still serves its clients,
/// the majority goes on, and each side sees the other dead. A client id
/// held on node 3 connects on node 1 meanwhile. After healing, node 3
/// learns of that newer claim and closes its old connection (0x8E), routes
/// flow both ways again, and every node sees three members.
#[test]
fn a_partition_isolates_the_minority_and_heals() {
    let partition = Partition::new();
    let nodes = three_nodes_with(Some(&partition));
    for n in &nodes {
        assert!(n.fault_armed, "node {}: the fault switch is armed", n.id);
    }
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    let (mut sub1, _) = Raw::connect(n1, "sub1");
    sub1.subscribe("part/1");
    let (mut sub2, _) = Raw::connect(n2, "sub2");
    sub2.subscribe("part/2");
    let (mut sub3, _) = Raw::connect(n3, "sub3");
    sub3.subscribe("part/3");
    for (n, of) in [(n1, 2), (n1, 3), (n2, 3), (n3, 1)] {
        routes_converge(n, of, 1);
    }
    let (mut pub1, _) = Raw::connect(n1, "pub1");
    let (mut pub3, _) = Raw::connect(n3, "pub3");
    let (mut kept3, code) = Raw::connect(n3, "kept");
    assert_eq!(code, 0);
    assert!(delivered(&mut pub1, &mut sub3, "part/3", "before"));

    let leader = &n1.status()["ownership"]["leader"];
    eprintln!(
        "partition: node 3 cut off from nodes 1 and 2 (Raft leader: node {leader}); since the cut:"
    );
    partition.cut(&nodes, &[3]);
    let cut = Instant::now();
    let mut probe = 0;
    let mut probe_id = || {
        probe += 1;
        format!("probe-{probe}")
    };
    let (majority, refused) = std::thread::scope(|s| {
        let majority = s.spawn(|| {
            after(
                cut,
                "nodes 1 and 2 accept CONNECTs, node 1 reaches node 2",
                || {
                    Raw::connect(n1, "majority-1").1 == 0
                        && Raw::connect(n2, "majority-2").1 == 0
                        && delivered(&mut pub1, &mut sub2, "part/2", "during")
                },
            )
        });
        s.spawn(|| {
            after(cut, "nodes 1 and 2 see node 3 dead", || {
                n1.member(3).is_none() && n2.member(3).is_none()
            })
        });
        s.spawn(|| {
            after(cut, "node 3 sees nodes 1 and 2 dead", || {
                n3.status()["members"].as_array().unwrap().is_empty()
            })
        });
        let refused = after(cut, "node 3 refuses a CONNECT (0x88)", || {
            let (_c, code) = Raw::connect(n3, &probe_id());
            assert!(code == 0 || code == 0x88, "CONNACK {code:#x}");
            code == 0x88
        });
        (majority.join().unwrap(), refused)
    });
    assert!(kept3.ping(), "node 3's client is still served");
    let asked = Instant::now();
    let (_c, code) = Raw::connect(n3, &probe_id());
    assert_eq!(code, 0x88);
    let refusal = asked.elapsed();
    eprintln!("  a CONNECT on node 3 is refused in {refusal:?}");
    assert!(refusal < Duration::from_secs(5), "{refusal:?}");
    let (_c, code) = Raw::connect_level(n3.ip, n3.mqtt, &probe_id(), 4);
    assert_eq!(code, 0x03, "3.1.1: return code 3, server unavailable");
    assert!(
        kept3.ping(),
        "node 3's client is still served after refusals"
    );

    // The majority commits a newer claim of "kept"; node 3 cannot be asked
    // to hand over, and the CONNACK does not wait for it.
    let asked = Instant::now();
    let (mut kept1, code) = Raw::connect(n1, "kept");
    let took = asked.elapsed();
    assert_eq!(code, 0, "accepted on node 1");
    eprintln!("  \"kept\" connects on node 1 (node 3 unreachable): CONNACK in {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(kept3.ping(), "node 3 has not heard of it");

    eprintln!("healed; since the heal:");
    partition.heal(&nodes);
    let healed = Instant::now();
    let converged = std::thread::scope(|s| {
        let waits = [
            s.spawn(|| {
                after(healed, "node 3 accepts CONNECTs", || {
                    Raw::connect(n3, &probe_id()).1 == 0
                })
            }),
            s.spawn(|| {
                let mut reason = None;
                let took = after(healed, "node 3 closes its \"kept\" (0x8E)", || {
                    reason = kept3.disconnect_reason();
                    reason.is_some()
                });
                assert_eq!(reason, Some(0x8E), "Session taken over");
                took
            }),
            s.spawn(|| {
                after(healed, "node 1 reaches node 3's subscriber", || {
                    delivered(&mut pub1, &mut sub3, "part/3", "healed")
                })
            }),
            s.spawn(|| {
                after(healed, "node 3 reaches node 1's subscriber", || {
                    delivered(&mut pub3, &mut sub1, "part/1", "healed")
                })
            }),
            s.spawn(|| {
                after(healed, "every node sees three members", || {
                    nodes
                        .iter()
                        .all(|n| n.status()["members"].as_array().unwrap().len() == 2)
                })
            }),
        ];
        waits.map(|w| w.join().unwrap()).into_iter().max().unwrap()
    });
    assert!(kept1.ping(), "the newer \"kept\", on node 1, stays");
    eprintln!(
        "partition: majority serving after {majority:?}, node 3 refusing after {refused:?}; \
         converged {converged:?} after the heal"
    );
}
