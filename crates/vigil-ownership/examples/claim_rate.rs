//! Claims per second on a group of N ownership nodes on loopback
//! (127.0.0.1..=N), with C claims in flight at once spread over the nodes,
//! as a CONNECT storm would make them.
//!
//! `cargo run --release -p vigil-ownership --example claim_rate -- NODES CLAIMS CONCURRENCY`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use vigil_ownership::{Ownership, OwnershipConfig};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (nodes, claims, concurrency) = (arg(1, 3), arg(2, 20_000), arg(3, 1_000));
    let dir = tempfile::tempdir()?;
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=nodes {
        let listener = TcpListener::bind(format!("127.0.0.{id}:0")).await?;
        members.insert(id, listener.local_addr()?.to_string());
        listeners.push((id, listener));
    }
    let mut group = Vec::new();
    for (id, listener) in listeners {
        let bind = listener.local_addr()?;
        let config = OwnershipConfig::new(id, bind, dir.path().join(format!("node{id}.redb")));
        group.push(Arc::new(
            Ownership::start_with_listener(config, listener).await?,
        ));
    }
    for node in &group {
        node.bootstrap(&members).await?;
    }
    let started = Instant::now();
    while !group.iter().all(|n| n.status().leader.is_some()) {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("no leader within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // One claim at a time first: the latency a lone CONNECT pays.
    let lone = Instant::now();
    for i in 0..200u64 {
        let node = &group[(i % nodes) as usize];
        node.claim(&format!("lone-{i}"), (i % nodes) + 1).await?;
    }
    let lone_each = lone.elapsed() / 200;

    let before = group
        .iter()
        .filter_map(|n| n.status().last_applied)
        .max()
        .unwrap_or(0);
    let next = Arc::new(AtomicU64::new(0));
    let storm = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let node = group[(w % nodes) as usize].clone();
        let next = next.clone();
        let me = (w % nodes) + 1;
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= claims {
                    return Ok::<_, vigil_ownership::OwnershipError>(());
                }
                node.claim(&format!("client-{i}"), me).await?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let took = storm.elapsed();
    let after = group
        .iter()
        .filter_map(|n| n.status().last_applied)
        .max()
        .unwrap_or(0);
    println!(
        "nodes={nodes} claims={claims} concurrency={concurrency}: {:.0} claims/s ({took:.2?}), \
         {} Raft entries ({:.1} claims per entry); one at a time: {lone_each:.2?} per claim",
        claims as f64 / took.as_secs_f64(),
        after - before,
        claims as f64 / (after - before).max(1) as f64,
    );
    for node in group {
        if let Ok(node) = Arc::try_unwrap(node) {
            node.shutdown().await;
        }
    }
    Ok(())
}
