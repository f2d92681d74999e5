//! A vigil cluster on one machine: each node a `vigil serve` process on its
//! own loopback address (127.0.0.1, .2, .3: Linux routes all of 127/8 to
//! loopback), with its own in-memory store, its MQTT, cluster and admin
//! ports chosen by the system and read back from its log, and its own data
//! directory (for the client-id ownership log). Every wait polls until the
//! cluster has converged, with generous limits, never a fixed sleep.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_client::{Client, Message, QoS};

// Each test file uses part of the harness.
#[allow(dead_code)]
mod cluster_nodes;
#[allow(dead_code)]
mod cluster_raw;

use cluster_nodes::*;
use cluster_raw::{admin_get_status, Raw};

/// Subscribers on two nodes get everything a publisher on a third sends,
/// at every QoS, once each and in order; and the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_publish_subscribe_at_every_qos_is_complete_and_in_order() {
    let nodes = three_nodes();
    let (s2, mut e2) = nodes[1].client("sub-2").await;
    let (s3, mut e3) = nodes[2].client("sub-3").await;
    s2.subscribe("t/#", QoS::ExactlyOnce).await.unwrap();
    s3.subscribe("t/#", QoS::ExactlyOnce).await.unwrap();
    let took = routes_converge(&nodes[0], 2, 1);
    eprintln!("a subscription on node 2 reached node 1's routes in {took:?}");
    routes_converge(&nodes[0], 3, 1);
    routes_converge(&nodes[1], 3, 1);
    const N: u32 = 200;
    let (p1, _pe1) = nodes[0].client("pub-1").await;
    let (p2, _pe2) = nodes[1].client("pub-2").await;
    let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for (i, q) in qos.iter().enumerate() {
        publish_seq(&p1, &format!("t/1/{i}"), *q, N).await;
    }
    publish_seq(&p2, "t/2/1", QoS::AtLeastOnce, N).await;
    let expected = 4 * N as usize;
    for (node, events) in [(2, &mut e2), (3, &mut e3)] {
        let got = collect(events, Duration::from_secs(30), |g| g.len() >= expected).await;
        for topic in ["t/1/0", "t/1/1", "t/1/2", "t/2/1"] {
            assert_eq!(
                seqs(&got, topic),
                (0..N).collect::<Vec<_>>(),
                "node {node}, {topic}: not every message once, in order"
            );
        }
        assert_eq!(got.len(), expected, "node {node}: duplicates");
    }
}

/// A shared group gets each message once across the cluster; with a member
/// on the publisher's node, that member gets them all (preferred local).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_gets_each_message_once_across_the_cluster() {
    let nodes = three_nodes();
    let (m2, mut e2) = nodes[1].client("member-2").await;
    let (m3, mut e3) = nodes[2].client("member-3").await;
    m2.subscribe("$share/g/s/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    m3.subscribe("$share/g/s/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    routes_converge(&nodes[0], 2, 1);
    routes_converge(&nodes[0], 3, 1);
    let (p, _pe) = nodes[0].client("pub").await;
    const N: u32 = 100;
    publish_seq(&p, "s/x", QoS::AtLeastOnce, N).await;
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for events in [&mut e2, &mut e3] {
        // Each member's share arrives; the total is checked below.
        let got = collect(events, Duration::from_secs(3), |g| g.len() >= N as usize).await;
        per_node.push(got.len());
        all.extend(seqs(&got, "s/x"));
    }
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "each message once");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "both nodes take turns: {per_node:?}"
    );

    let (m1, mut e1) = nodes[0].client("member-1").await;
    m1.subscribe("$share/g/s/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    publish_seq(&p, "s/y", QoS::AtLeastOnce, N).await;
    let got = collect(&mut e1, Duration::from_secs(30), |g| g.len() >= N as usize).await;
    assert_eq!(seqs(&got, "s/y"), (0..N).collect::<Vec<_>>());
    for events in [&mut e2, &mut e3] {
        let stray = collect(events, Duration::from_millis(500), |g| !g.is_empty()).await;
        assert!(
            stray.is_empty(),
            "a remote member got {} of them",
            stray.len()
        );
    }
}

/// A node that joins late learns the routes and gets the retained messages
/// (deletions included); a node restarted with the same id comes back with
/// no stale routes and the retained messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_syncs_and_a_restarted_node_has_no_stale_routes() {
    let n1 = Node::start(1, "127.0.0.1", &[]);
    let mut n2 = Node::start(2, "127.0.0.2", &[n1.cluster]);
    wait_until("1 and 2 see each other", Duration::from_secs(30), || {
        n1.member(2).is_some() && n2.member(1).is_some()
    });
    n1.wait_owning(2);
    n2.wait_owning(2);
    let (p, _pe) = n1.client("retainer").await;
    for i in 1..=20u32 {
        let m = Message::new(format!("r/{i}"), format!("kept {i}")).retain(true);
        p.publish(m.qos(QoS::AtLeastOnce))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let clear = Message::new("r/5", "").retain(true).qos(QoS::AtLeastOnce);
    p.publish(clear).await.unwrap().await.unwrap();
    let (s1, mut e1) = n1.client("late-sub").await;
    s1.subscribe("late/#", QoS::AtLeastOnce).await.unwrap();
    let (s2, _e2) = n2.client("stale-sub").await;
    s2.subscribe("stale/#", QoS::AtLeastOnce).await.unwrap();
    routes_converge(&n1, 2, 1);

    let n3 = Node::start(3, "127.0.0.3", &[n1.cluster]);
    n3.wait_owning(3);
    routes_converge(&n3, 1, 1);
    for node in [&n3, &n2] {
        retained_converge(node, 19).await;
    }
    let (p3, _pe3) = n3.client("late-pub").await;
    publish_seq(&p3, "late/x", QoS::AtLeastOnce, 10).await;
    let got = collect(&mut e1, Duration::from_secs(30), |g| g.len() >= 10).await;
    assert_eq!(seqs(&got, "late/x"), (0..10).collect::<Vec<_>>());

    let old_generation = n1.member(2).unwrap()["generation"].as_u64().unwrap();
    drop(s2);
    let dir = n2.dir.take().unwrap();
    drop(n2);
    // Same id and data directory (its ownership log), a new Raft port.
    n2 = Node::start_in(2, "127.0.0.2", &[n1.cluster], dir);
    wait_until(
        "node 1 sees node 2's new generation, without its old routes",
        Duration::from_secs(30),
        || {
            n1.member(2).is_some_and(|m| {
                m["generation"].as_u64().unwrap() > old_generation && m["routes"] == 0
            })
        },
    );
    // Its old subscription's routes are gone everywhere, not only on node 1.
    wait_until("node 3 drops them too", Duration::from_secs(30), || {
        n3.member(2)
            .is_some_and(|m| m["generation"].as_u64().unwrap() > old_generation)
            && n3.routes_of(2) == 0
    });
    wait_until(
        "node 2 back in the ownership group at its new address",
        Duration::from_secs(30),
        || {
            let raft = n2.status()["ownership"]["raft_addr"].clone();
            n1.status()["ownership"]["nodes"][2.to_string()] == raft
        },
    );
    n2.wait_owning(3);
    retained_converge(&n2, 19).await;
}

/// Subscribes to `r/#` on `node` until the 19 retained messages (20 set,
/// one deleted) are all there.
async fn retained_converge(node: &Node, n: usize) {
    let started = Instant::now();
    loop {
        let (c, mut e) = node.client(&format!("reader-{}", node.id)).await;
        c.subscribe("r/#", QoS::AtLeastOnce).await.unwrap();
        let got = collect(&mut e, Duration::from_secs(1), |g| g.len() >= n).await;
        let _ = c.disconnect().await;
        let mut payloads: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        payloads.sort();
        if payloads.len() == n {
            assert!(
                !payloads.contains(&"kept 5".to_string()),
                "a deleted one came back"
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node {}: {} of {n} retained messages",
            node.id,
            payloads.len()
        );
    }
}

/// `kill -9` of one of three nodes while a publisher streams: the two
/// others keep serving and lose nothing between them; the dead node is
/// dropped within seconds (the figure is printed), and its clients can
/// reconnect to another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_nodes_under_load_loses_nothing_between_the_others() {
    let mut nodes = three_nodes();
    let (s2, mut e2) = nodes[1].client("load-sub-2").await;
    s2.subscribe("load/#", QoS::AtLeastOnce).await.unwrap();
    let (s3, _e3) = nodes[2].client("load-sub-3").await;
    s3.subscribe("load/#", QoS::AtLeastOnce).await.unwrap();
    routes_converge(&nodes[0], 2, 1);
    routes_converge(&nodes[0], 3, 1);
    let (p, _pe) = nodes[0].client("load-pub").await;
    const N: u32 = 3000;
    const KILL_AT: u32 = 500;
    let mut victim = nodes.pop().unwrap();
    let mut tokens = std::collections::VecDeque::new();
    let mut watcher = None;
    for i in 0..N {
        let m = Message::new("load/x", i.to_string()).qos(QoS::AtLeastOnce);
        tokens.push_back(p.publish(m).await.unwrap());
        if tokens.len() > 50 {
            tokens.pop_front().unwrap().await.unwrap();
        }
        if i == KILL_AT {
            victim.child.kill().unwrap();
            victim.child.wait().unwrap();
            // Timed from its own thread, while the publisher goes on.
            let (ip, admin) = (nodes[0].ip, nodes[0].admin);
            watcher = Some(std::thread::spawn(move || {
                let killed = Instant::now();
                let gone = |m: &Value| m["node_id"] == 3;
                while status_of(ip, admin)["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(gone)
                {
                    assert!(killed.elapsed() < Duration::from_secs(30), "never dropped");
                    std::thread::sleep(Duration::from_millis(20));
                }
                killed.elapsed()
            }));
        }
    }
    for t in tokens {
        t.await.unwrap();
    }
    let n1 = &nodes[0];
    let detected = watcher.unwrap().join().unwrap();
    eprintln!("node 3 killed with SIGKILL: dropped by node 1 within {detected:?}");
    assert!(detected < Duration::from_secs(10), "{detected:?}");
    let got = collect(&mut e2, Duration::from_secs(60), |g| g.len() >= N as usize).await;
    let mut seen = HashSet::new();
    let firsts: Vec<u32> = seqs(&got, "load/x")
        .into_iter()
        .filter(|s| seen.insert(*s))
        .collect();
    assert_eq!(
        firsts,
        (0..N).collect::<Vec<_>>(),
        "every message, in order"
    );

    // The dead node's client reconnects to another node and is served.
    victim.ip = "127.0.0.2";
    victim.mqtt = nodes[1].mqtt;
    let (back, mut eb) = Client::connect(victim.options("load-sub-3")).await.unwrap();
    back.subscribe("after/#", QoS::AtLeastOnce).await.unwrap();
    routes_converge(n1, 2, 2);
    publish_seq(&p, "after/x", QoS::AtLeastOnce, 5).await;
    let got = collect(&mut eb, Duration::from_secs(30), |g| g.len() >= 5).await;
    assert_eq!(seqs(&got, "after/x"), (0..5).collect::<Vec<_>>());
    let counts: HashMap<&str, u64> = [("nodes_lost", n1.status()["nodes_lost"].as_u64().unwrap())]
        .into_iter()
        .collect();
    assert_eq!(counts["nodes_lost"], 1);
}

/// A node stopped with SIGTERM tells the others before it goes: they drop
/// its routes at once, not when failure detection notices it gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_withdraws_its_routes_before_failure_detection() {
    let n1 = Node::start(1, "127.0.0.1", &[]);
    let mut n2 = Node::start(2, "127.0.0.2", &[n1.cluster]);
    wait_until(
        "node 2's link to node 1 is up",
        Duration::from_secs(30),
        || n2.member(1).is_some_and(|m| m["link"]["connected"] == true),
    );
    n1.wait_owning(2);
    n2.wait_owning(2);
    let (s2, _e2) = n2.client("leaver-sub").await;
    s2.subscribe("leave/#", QoS::AtLeastOnce).await.unwrap();
    routes_converge(&n1, 2, 1);

    let sigterm = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &n2.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (mut routes_gone, mut member_gone) = (None, None);
    while member_gone.is_none() {
        assert!(
            sigterm.elapsed() < Duration::from_secs(30),
            "node 1 still lists node 2 30 s after its SIGTERM"
        );
        let member = n1.member(2);
        let at = sigterm.elapsed();
        if routes_gone.is_none() && member.as_ref().is_none_or(|m| m["routes"] == 0) {
            routes_gone = Some(at);
        }
        if member.is_none() {
            member_gone = Some(at);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (routes_gone, member_gone) = (routes_gone.unwrap(), member_gone.unwrap());
    eprintln!(
        "after SIGTERM, node 1 dropped node 2's routes in {routes_gone:?}; \
         failure detection dropped node 2 itself in {member_gone:?}"
    );
    assert_eq!(
        n1.status()["nodes_left"],
        1,
        "node 1 heard node 2 say it was stopping"
    );
    assert!(
        routes_gone < Duration::from_secs(1) && routes_gone < member_gone,
        "routes dropped in {routes_gone:?}, node in {member_gone:?}"
    );
    let exit = n2.child.wait().unwrap();
    assert!(exit.success(), "node 2 stopped cleanly: {exit}");
}

/// `/metrics` counts what crossed the link, on both nodes: members by
/// state, routes, messages and bytes each way, remote-ack waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metrics_count_a_forwarded_message_on_both_nodes() {
    let n1 = Node::start(1, "127.0.0.1", &[]);
    let n2 = Node::start(2, "127.0.0.2", &[n1.cluster]);
    n1.wait_owning(2);
    n2.wait_owning(2);
    let (s2, mut e2) = n2.client("metrics-sub").await;
    s2.subscribe("metrics/#", QoS::AtLeastOnce).await.unwrap();
    routes_converge(&n1, 2, 1);
    let before = n1.metrics();
    assert_eq!(sample(&before, "vigil_cluster_members{state=\"live\"}"), 1);
    assert_eq!(sample(&before, "vigil_cluster_routes{node=\"2\"}"), 1);
    let forwarded = sample(&before, "vigil_cluster_messages_forwarded_total");
    let waits = sample(&before, "vigil_cluster_remote_ack_waits_total");

    let (p1, _pe1) = n1.client("metrics-pub").await;
    publish_seq(&p1, "metrics/x", QoS::AtLeastOnce, 3).await;
    let got = collect(&mut e2, Duration::from_secs(30), |g| g.len() >= 3).await;
    assert_eq!(seqs(&got, "metrics/x"), vec![0, 1, 2]);

    let sent = n1.metrics();
    assert_eq!(
        sample(&sent, "vigil_cluster_messages_forwarded_total"),
        forwarded + 3
    );
    assert!(sample(&sent, "vigil_cluster_link_frames_sent_total{node=\"2\"}") >= 3);
    assert!(sample(&sent, "vigil_cluster_link_frames_acked_total{node=\"2\"}") >= 3);
    assert!(sample(&sent, "vigil_cluster_link_bytes_sent_total{node=\"2\"}") > 0);
    assert_eq!(sample(&sent, "vigil_cluster_link_up{node=\"2\"}"), 1);
    assert!(sample(&sent, "vigil_cluster_remote_ack_waits_total") > waits);
    assert_eq!(sample(&sent, "vigil_cluster_remote_ack_timeouts_total"), 0);
    assert_eq!(sample(&sent, "vigil_cluster_local_routes"), 0);

    let received = n2.metrics();
    assert_eq!(
        sample(&received, "vigil_cluster_messages_received_total"),
        3
    );
    assert!(
        sample(
            &received,
            "vigil_cluster_link_frames_received_total{node=\"1\"}"
        ) >= 3
    );
    assert!(
        sample(
            &received,
            "vigil_cluster_link_bytes_received_total{node=\"1\"}"
        ) > 0
    );
    assert_eq!(sample(&received, "vigil_cluster_local_routes"), 1);
    assert_eq!(sample(&received, "vigil_cluster_malformed_links_total"), 0);
    assert_eq!(
        sample(&received, "vigil_cluster_members{state=\"dead\"}"),
        0
    );
}

/// A client id connected to node 1 connects again to node 2: the node 1
/// connection gets DISCONNECT 0x8E and node 1 keeps no session for it; the
/// node 2 connection is accepted and served.
#[test]
fn a_connect_on_another_node_takes_the_client_over_with_0x8e() {
    let nodes = three_nodes();
    let (mut on_a, code) = Raw::connect(&nodes[0], "roaming");
    assert_eq!(code, 0, "accepted on node 1");
    assert!(on_a.ping());
    let started = Instant::now();
    let (mut on_b, code) = Raw::connect(&nodes[1], "roaming");
    assert_eq!(code, 0, "accepted on node 2");
    assert_eq!(
        on_a.disconnect_reason(),
        Some(0x8E),
        "node 1's connection told Session taken over"
    );
    eprintln!(
        "cross-node takeover: old connection closed {:?} after the new CONNECT",
        started.elapsed()
    );
    assert!(on_b.ping(), "node 2's connection is served");
    wait_until(
        "node 1 keeps no session for the client",
        Duration::from_secs(10),
        || admin_get_status(&nodes[0], "/api/v1/clients/roaming") == 404,
    );
    assert_eq!(admin_get_status(&nodes[1], "/api/v1/clients/roaming"), 200);
}

/// The same client id connects to nodes 1 and 2 at once, many times: each
/// time exactly one connection survives (the other is refused or told
/// 0x8E), and the survivor is served.
#[test]
fn racing_connects_on_two_nodes_leave_exactly_one_connection() {
    let nodes = three_nodes();
    const ROUNDS: usize = 100;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let id = format!("racer-{round}");
        let (a, b) = (&nodes[0], &nodes[1]);
        let (a_addr, b_addr) = ((a.ip, a.mqtt), (b.ip, b.mqtt));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = [a_addr, b_addr]
            .into_iter()
            .map(|(ip, port)| {
                let (id, barrier) = (id.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Raw::connect_to(ip, port, &id)
                })
            })
            .collect();
        let mut conns: Vec<(Raw, u8)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        for (_, code) in &conns {
            assert!(
                *code == 0 || *code == 0x88,
                "round {round}: CONNACK {code:#x}"
            );
        }
        // The loser may be refused (0x88: a newer claim was applied before
        // its own returned) or accepted and then told 0x8E: poll until one
        // accepted connection is left, then check it stays.
        let alive = |conns: &mut Vec<(Raw, u8)>| {
            conns.retain_mut(|(c, code)| *code == 0 && c.ping());
            conns.len()
        };
        let what = format!("round {round}: one connection left");
        wait_until(&what, Duration::from_secs(10), || alive(&mut conns) <= 1);
        assert_eq!(alive(&mut conns), 1, "round {round}: exactly one survivor");
    }
    let took = started.elapsed();
    eprintln!("{ROUNDS} racing connects settled in {took:?}");
}

/// With two of three nodes stopped (SIGSTOP), the remaining node refuses a
/// new CONNECT with 0x88 within seconds while its existing connection is
/// still served; once they continue (SIGCONT), new CONNECTs succeed again.
#[test]
fn a_node_without_a_majority_refuses_new_connects_and_serves_its_clients() {
    let nodes = three_nodes();
    let (mut kept, code) = Raw::connect(&nodes[0], "kept");
    assert_eq!(code, 0);
    for n in &nodes[1..] {
        signal(&n.child, "STOP");
    }
    let stopped = Instant::now();
    let mut refused_after = None;
    while refused_after.is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "a CONNECT was still accepted 30 s after the majority stopped"
        );
        let (_c, code) = Raw::connect(&nodes[0], "newcomer");
        assert!(code == 0 || code == 0x88, "unexpected CONNACK {code:#x}");
        if code == 0x88 {
            refused_after = Some(stopped.elapsed());
        }
    }
    let refused_after = refused_after.unwrap();
    eprintln!("minority: first CONNACK 0x88 {refused_after:?} after SIGSTOP of two nodes");
    assert!(kept.ping(), "the existing connection is still served");
    let refused_at = Instant::now();
    let (_c, code) = Raw::connect(&nodes[0], "newcomer-2");
    assert_eq!(code, 0x88);
    let refusal = refused_at.elapsed();
    eprintln!("minority: a CONNECT is refused in {refusal:?}");
    assert!(refusal < Duration::from_secs(5), "{refusal:?}");
    let (_c, code) = Raw::connect_level(nodes[0].ip, nodes[0].mqtt, "newcomer-311", 4);
    assert_eq!(code, 0x03, "3.1.1: return code 3, server unavailable");
    assert!(kept.ping(), "still served after the refusals");
    for n in &nodes[1..] {
        signal(&n.child, "CONT");
    }
    let continued = Instant::now();
    wait_until(
        "new CONNECTs succeed after SIGCONT",
        Duration::from_secs(30),
        || Raw::connect(&nodes[0], "after-heal").1 == 0,
    );
    eprintln!(
        "healed: CONNECTs accepted {:?} after SIGCONT",
        continued.elapsed()
    );
    assert!(kept.ping(), "the kept connection was never dropped");
}

/// EMQX's `t_cluster_takeover`: a persistent session (MQTT 5, expiry
/// 300 s, Receive Maximum 1) on node 1 with three QoS 1 messages, one in
/// flight and two queued, reconnects to node 2: the old connection gets
/// DISCONNECT 0x8E, the new CONNACK says Session Present = 1, the one in
/// flight comes again with DUP, then the two queued, in order, then a new
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_moves_with_its_client_to_another_node() {
    let nodes = three_nodes();
    let (mut old, present, code) = Raw::connect_persistent_max(&nodes[0], "mover", 300, Some(1));
    assert_eq!((present, code), (false, 0));
    old.subscribe("mv/#");
    routes_converge(&nodes[2], 1, 1);
    let (p, _pe) = nodes[2].client("mv-pub").await;
    // Acknowledged to the publisher: all three are in the session on node
    // 1. Receive Maximum 1: the first in flight (not acknowledged), two
    // queued.
    publish_seq(&p, "mv/x", QoS::AtLeastOnce, 3).await;
    assert_eq!(old.next_publish(), ("0".to_string(), false));
    let started = Instant::now();
    let (mut new, present, code) = Raw::connect_persistent_max(&nodes[1], "mover", 300, Some(1));
    let took = started.elapsed();
    assert_eq!(code, 0);
    assert!(present, "Session Present = 1 on node 2");
    assert_eq!(old.disconnect_reason(), Some(0x8E));
    eprintln!("session moved from node 1 to node 2: CONNACK after {took:?}");
    assert_eq!(
        new.next_publish_acked(),
        ("0".to_string(), true),
        "the one in flight, resent with DUP"
    );
    for i in 1..3 {
        assert_eq!(
            new.next_publish_acked(),
            (i.to_string(), false),
            "the queued ones, in order"
        );
    }
    routes_converge(&nodes[2], 2, 1);
    let fourth = Message::new("mv/x", "3").qos(QoS::AtLeastOnce);
    p.publish(fourth).await.unwrap().await.unwrap();
    assert_eq!(
        new.next_publish_acked(),
        ("3".to_string(), false),
        "a new message"
    );
    assert_eq!(admin_get_status(&nodes[0], "/api/v1/clients/mover"), 404);
}

/// While a persistent session moves from node 1 to node 2, publishers on
/// all three nodes keep sending QoS 1 messages: every one reaches the
/// client, on its old connection or its new one, although the cluster
/// learns the new node's route only a gossip round later (node 1 passes
/// on what still comes to it). Redelivered ones carry DUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_a_session_moves_are_not_lost() {
    move_while_publishing(false, QoS::AtLeastOnce).await;
}

/// The same with another subscriber to the topics on node 2 from the
/// start, so the publishers' nodes send node 2 its own copy of each
/// message as well: the moved session takes one copy of each, never two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moving_session_gets_one_copy_when_its_new_node_had_the_topic() {
    move_while_publishing(true, QoS::AtLeastOnce).await;
}

/// The same at QoS 2, with a client that keeps its QoS 2 state across its
/// two connections as the protocol asks: each message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moving_session_gets_qos_2_messages_exactly_once() {
    move_while_publishing(true, QoS::ExactlyOnce).await;
}

async fn move_while_publishing(watcher_on_new_node: bool, qos: QoS) {
    let level = qos as u8;
    let pending = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let nodes = three_nodes();
    let (mut old, _, code) = Raw::connect_persistent(&nodes[0], "mover", 300);
    assert_eq!(code, 0);
    old.subscribe_qos("mv/#", level);
    routes_converge(&nodes[2], 1, 1);
    let mut watcher = None;
    if watcher_on_new_node {
        let (mut w, code) = Raw::connect(&nodes[1], "watcher");
        assert_eq!(code, 0);
        w.subscribe_qos("mv/#", level);
        routes_converge(&nodes[2], 2, 1);
        routes_converge(&nodes[0], 2, 1);
        let mine = Default::default();
        watcher = Some(std::thread::spawn(move || {
            w.receive_all(Duration::from_secs(3), &mine)
        }));
    }
    let state = pending.clone();
    let old_reader = std::thread::spawn(move || old.receive_all(Duration::from_secs(20), &state));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    // Publishers on the node the session leaves, the one it goes to, and
    // the third.
    routes_converge(&nodes[1], 1, 1);
    for (node, topic) in [
        (&nodes[2], "mv/3"),
        (&nodes[0], "mv/1"),
        (&nodes[1], "mv/2"),
    ] {
        let (client, _events) = node.client(&format!("pub-{topic}")).await;
        let stop = stop.clone();
        let topic = topic.to_string();
        publishers.push(tokio::spawn(async move {
            let _events = _events;
            let mut tokens = Vec::new();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let m = Message::new(topic.as_str(), n.to_string()).qos(qos);
                tokens.push(client.publish(m).await.unwrap());
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for t in tokens {
                t.await.unwrap();
            }
            (topic, n)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut new, present, code) = Raw::connect_persistent(&nodes[1], "mover", 300);
    assert_eq!((present, code), (true, 0), "Session Present = 1 on node 2");
    let state = pending.clone();
    let new_reader = std::thread::spawn(move || new.receive_all(Duration::from_secs(3), &state));
    // Well past the gossip round that tells node 3 where the route went.
    routes_converge(&nodes[2], 2, 1);
    routes_converge(&nodes[0], 2, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = HashMap::new();
    for p in publishers {
        let (topic, n) = p.await.unwrap();
        sent.insert(topic, n);
    }
    let (on_old, reason) = old_reader.join().unwrap();
    assert_eq!(reason, Some(0x8E), "the old connection was taken over");
    let (on_new, _) = new_reader.join().unwrap();
    let passed_on = nodes[0].status()["passed_on"].as_u64().unwrap_or(0);
    for (topic, n) in &sent {
        let mut seen: HashMap<u32, u32> = HashMap::new();
        let mut repeated_without_dup = 0;
        for (t, payload, dup) in on_old.iter().chain(on_new.iter()) {
            if t != topic {
                continue;
            }
            let count = seen.entry(payload.parse().unwrap()).or_default();
            *count += 1;
            if *count > 1 && !dup {
                repeated_without_dup += 1;
            }
        }
        let missing: Vec<u32> = (0..*n).filter(|i| !seen.contains_key(i)).collect();
        let repeats: u32 = seen.values().map(|c| c - 1).sum();
        eprintln!(
            "{topic}: {n} published, {} on the old connection, {} on the new, {} missing, {repeats} repeated ({repeated_without_dup} without DUP); node 1 passed on {passed_on}",
            on_old.iter().filter(|m| &m.0 == topic).count(),
            on_new.iter().filter(|m| &m.0 == topic).count(),
            missing.len(),
        );
        assert!(missing.is_empty(), "{topic}: lost {missing:?}");
        assert_eq!(
            repeated_without_dup, 0,
            "{topic}: a second copy without DUP"
        );
        if qos == QoS::ExactlyOnce {
            assert_eq!(repeats, 0, "{topic}: QoS 2 more than once");
        }
    }
    if let Some(w) = watcher {
        let (got, _) = w.join().unwrap();
        let total: u32 = sent.values().sum();
        assert_eq!(got.len() as u32, total, "the watcher got each message once");
    }
}
