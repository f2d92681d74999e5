//! A group of ownership nodes in one process, each on its own loopback
//! address (127.0.0.N) and port, with its own redb file.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use vigil_ownership::{NodeId, Ownership, OwnershipConfig};

/// How long anything in these tests may take to converge before it fails.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// Logs to the test output with `RUST_LOG=vigil_ownership=debug`.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, failing the test after `CONVERGE`.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "{what}: not within {CONVERGE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`], for a check that is itself asynchronous.
pub async fn eventually_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "{what}: not within {CONVERGE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Settings for a test node: quick heartbeats so elections take well under
/// a second, and a 2 s claim timeout.
pub fn config(id: NodeId, addr: SocketAddr, path: PathBuf) -> OwnershipConfig {
    let mut config = OwnershipConfig::new(id, addr, path);
    config.heartbeat = Duration::from_millis(50);
    config.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
    config.claim_timeout = Duration::from_secs(2);
    config
}

/// Nodes 1..=n, bootstrapped together from the static list.
pub struct Group {
    pub dir: tempfile::TempDir,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub nodes: BTreeMap<NodeId, Option<Ownership>>,
    pub tweak: fn(&mut OwnershipConfig),
}

impl Group {
    /// Starts `n` nodes on 127.0.0.1..=127.0.0.n and forms the group.
    pub async fn start(n: u64) -> Group {
        Group::start_with(n, |_| {}).await
    }

    /// Like [`Group::start`], with every node's settings changed by `tweak`.
    pub async fn start_with(n: u64, tweak: fn(&mut OwnershipConfig)) -> Group {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut group = Group {
            dir,
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tweak,
        };
        let mut listeners = Vec::new();
        for id in 1..=n {
            let ip = format!("127.0.0.{id}");
            let listener = TcpListener::bind((ip.as_str(), 0)).await.expect("bind");
            group
                .addrs
                .insert(id, listener.local_addr().expect("address"));
            listeners.push((id, listener));
        }
        for (id, listener) in listeners {
            let node = Ownership::start_with_listener(group.config(id), listener)
                .await
                .expect("start");
            group.nodes.insert(id, Some(node));
        }
        let members = group.members();
        for node in group.running() {
            node.bootstrap(&members).await.expect("bootstrap");
        }
        group.leader().await;
        group
    }

    /// Node `id`'s settings.
    pub fn config(&self, id: NodeId) -> OwnershipConfig {
        let mut config = config(
            id,
            self.addrs[&id],
            self.dir.path().join(format!("node{id}.redb")),
        );
        (self.tweak)(&mut config);
        config
    }

    /// The static list every node bootstraps from.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        self.addrs
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect()
    }

    /// The running node `id`.
    pub fn node(&self, id: NodeId) -> &Ownership {
        self.nodes[&id].as_ref().expect("node running")
    }

    /// Every running node.
    pub fn running(&self) -> impl Iterator<Item = &Ownership> {
        self.nodes.values().flatten()
    }

    /// The leader every running node agrees on, once they do.
    pub async fn leader(&self) -> NodeId {
        eventually("a leader all running nodes agree on", || {
            let leaders: Vec<_> = self.running().map(|n| n.status().leader).collect();
            let first = leaders[0]?;
            (leaders.iter().all(|l| *l == Some(first)) && self.nodes[&first].is_some())
                .then_some(first)
        })
        .await
    }

    /// Stops node `id` (Raft, listener, links; its file stays).
    pub async fn stop(&mut self, id: NodeId) {
        let node = self
            .nodes
            .get_mut(&id)
            .and_then(Option::take)
            .expect("node running");
        node.shutdown().await;
    }

    /// Starts node `id` again on its address and file.
    pub async fn restart(&mut self, id: NodeId) {
        let node = Ownership::start(self.config(id)).await.expect("restart");
        self.nodes.insert(id, Some(node));
    }
}
