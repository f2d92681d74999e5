//! Retiring a node that died for good from the client-id ownership group,
//! through the admin API (`DELETE /api/v1/cluster/members/{id}`, what
//! `vigil ctl retire` calls), on real `vigil serve` processes on 127.0.0.1
//! to .4. Every wait polls until the cluster has converged.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

// Each test file uses part of the harness.
#[allow(dead_code)]
mod cluster_nodes;
#[allow(dead_code)]
mod cluster_raw;

use cluster_nodes::*;
use cluster_raw::Raw;

/// `method path` on `node`'s admin listener: the status and the JSON body.
fn admin(node: &Node, method: &str, path: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect((node.ip, node.admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn voters(node: &Node) -> Vec<u64> {
    node.status()["ownership"]["voters"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Three nodes; one dies for good. Retiring it is refused while it lives,
/// on a node that does not lead the group (the answer names the leader),
/// and for this node itself; on the leader it leaves two voters. A fourth
/// node then joins as the third voter, and when one more of the first
/// nodes dies, the leader and the new node are still a majority: CONNECTs
/// go on. (Without the retirement the group would have four voters, two of
/// them dead, and refuse every CONNECT with 0x88.)
#[test]
fn a_dead_node_retired_from_the_group_no_longer_counts_in_its_majority() {
    let mut nodes = three_nodes();
    let leader_id = nodes[0].status()["ownership"]["leader"].as_u64().unwrap();
    let mut others: Vec<Node> = Vec::new();
    let mut leader = None;
    for n in nodes.drain(..) {
        if n.id == leader_id {
            leader = Some(n);
        } else {
            others.push(n);
        }
    }
    let leader = leader.unwrap();
    let dying = others.pop().unwrap();
    let follower = others.pop().unwrap();
    let dead_id = dying.id;

    let (status, v) = admin(
        &leader,
        "DELETE",
        &format!("/api/v1/cluster/members/{dead_id}"),
    );
    assert_eq!(status, 409, "a live node is not retired: {v}");
    let (status, _) = admin(
        &leader,
        "DELETE",
        &format!("/api/v1/cluster/members/{leader_id}"),
    );
    assert_eq!(status, 409, "nor the node asked");

    drop(dying); // SIGKILL
    for n in [&leader, &follower] {
        wait_until(
            "the dead node dropped by gossip",
            Duration::from_secs(30),
            || {
                n.status()["members"]
                    .as_array()
                    .is_some_and(|m| m.len() == 1)
            },
        );
    }
    let (status, v) = admin(
        &follower,
        "DELETE",
        &format!("/api/v1/cluster/members/{dead_id}"),
    );
    assert_eq!(status, 409, "only the leader changes the group: {v}");
    let why = v["error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("node {leader_id}")),
        "names the leader: {why}"
    );

    let (status, v) = admin(
        &leader,
        "DELETE",
        &format!("/api/v1/cluster/members/{dead_id}"),
    );
    assert_eq!(status, 200, "{v}");
    let mut two = vec![leader_id, follower.id];
    two.sort_unstable();
    assert_eq!(v["voters"], serde_json::json!(two));
    for n in [&leader, &follower] {
        wait_until("two voters everywhere", Duration::from_secs(30), || {
            voters(n) == two
        });
    }
    let (status, _) = admin(
        &leader,
        "DELETE",
        &format!("/api/v1/cluster/members/{dead_id}"),
    );
    assert_eq!(status, 404, "no longer a member");

    let newcomer = Node::start(4, "127.0.0.4", &[leader.cluster]);
    for n in [&leader, &follower, &newcomer] {
        n.wait_owning(3);
    }
    let mut three = vec![leader_id, follower.id, 4];
    three.sort_unstable();
    assert_eq!(voters(&leader), three);

    drop(follower); // SIGKILL: two of three voters left
    wait_until(
        "the second dead node dropped by gossip",
        Duration::from_secs(30),
        || {
            leader.status()["members"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        },
    );
    let (_c, code) = Raw::connect(&leader, "after-two-deaths");
    assert_eq!(code, 0, "the leader and node 4 are a majority of three");
    let (_c, code) = Raw::connect(&newcomer, "on-the-newcomer");
    assert_eq!(code, 0);
}
