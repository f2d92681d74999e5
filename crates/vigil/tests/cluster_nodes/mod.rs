//! The harness of the cluster tests: `vigil serve` nodes on their own
//! loopback addresses, their logs, admin API and clients, and the waits
//! that poll until the cluster has converged.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_client::{Client, ConnectOptions, Event, Events, Message, QoS};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_vigil");

/// One `vigil serve` node, continued (if stopped) and killed (SIGKILL)
/// when dropped.
pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) id: u64,
    pub(crate) ip: &'static str,
    pub(crate) mqtt: u16,
    pub(crate) cluster: SocketAddr,
    pub(crate) admin: u16,
    /// The data directory (the ownership log), kept across a restart.
    pub(crate) dir: Option<tempfile::TempDir>,
    /// Whether it logged that its fault switch is armed (`VIGIL_FAULT_FILE`).
    pub(crate) fault_armed: bool,
    /// Its log lines not read yet, kept when the switch is armed (to see
    /// it apply a change of its file).
    log: Option<Mutex<mpsc::Receiver<String>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        signal(&self.child, "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIG`name` to `child` (`kill -STOP`, `kill -CONT`).
pub(crate) fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
}

/// The port or address at the end of a log line (`... 127.0.0.1:4242`).
pub(crate) fn addr_in(line: &str) -> SocketAddr {
    line.split_whitespace()
        .filter_map(|w| w.rsplit('=').next())
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

impl Node {
    /// Starts node `id` on `ip`, joining through `seeds`, with a new data
    /// directory.
    pub(crate) fn start(id: u64, ip: &'static str, seeds: &[SocketAddr]) -> Node {
        Node::start_in(id, ip, seeds, tempfile::tempdir().unwrap())
    }

    /// Starts node `id` on `ip`, joining through `seeds`, on data directory `dir`.
    pub(crate) fn start_in(
        id: u64,
        ip: &'static str,
        seeds: &[SocketAddr],
        dir: tempfile::TempDir,
    ) -> Node {
        Node::start_faulty(id, ip, seeds, dir, None)
    }

    /// Like [`Node::start_in`], with the fault switch armed on
    /// `fault_file` (see [`Partition`]) when given.
    pub(crate) fn start_faulty(
        id: u64,
        ip: &'static str,
        seeds: &[SocketAddr],
        dir: tempfile::TempDir,
        fault_file: Option<&Path>,
    ) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--store", "memory", "--bind", ip, "-p", "0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--workers", "1", "--admin-port", "0", "--admin-bind", ip])
            .args(["--sys-interval", "0"])
            .args(["--cluster-node-id", &id.to_string()])
            .args(["--cluster-bind", &format!("{ip}:0")]);
        for s in seeds {
            cmd.args(["--cluster-seed", &s.to_string()]);
        }
        if let Some(file) = fault_file {
            cmd.env("VIGIL_FAULT_FILE", file);
        }
        let mut child = cmd
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so the node never blocks on a full pipe.
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if std::env::var_os("CLUSTER_TEST_LOGS").is_some() {
                    eprintln!("[node {id}] {line}");
                }
                let _ = tx.send(line);
            }
        });
        let (mut mqtt, mut cluster, mut admin) = (None, None, None);
        let mut fault_armed = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        while mqtt.is_none() || cluster.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("node {id} did not start"));
            if line.contains("vigil listening") {
                mqtt = Some(addr_in(&line).port());
            } else if line.contains("cluster listening") {
                cluster = Some(addr_in(&line));
            } else if line.contains("admin listening") {
                admin = Some(addr_in(&line).port());
            } else if line.contains("fault injection armed") {
                fault_armed = true;
            }
        }
        Node {
            child,
            id,
            ip,
            mqtt: mqtt.unwrap(),
            cluster: cluster.unwrap(),
            admin: admin.unwrap(),
            dir: Some(dir),
            fault_armed,
            log: fault_armed.then(|| Mutex::new(rx)),
        }
    }

    /// Waits (at most `limit`) for a log line containing `needle`, reading
    /// the lines not read yet.
    pub(crate) fn wait_log(&self, needle: &str, limit: Duration) {
        let log = self.log.as_ref().expect("the node's log is kept");
        let log = log.lock().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!(
                    "node {}: no {needle:?} in its log within {limit:?}",
                    self.id
                ),
            }
        }
    }

    /// Waits until this node is in an ownership group of `voters` voters
    /// with a leader: until then its CONNECTs are refused (0x88).
    pub(crate) fn wait_owning(&self, voters: usize) {
        let what = format!("node {} in an ownership group of {voters}", self.id);
        wait_until(&what, Duration::from_secs(30), || {
            let o = &self.status()["ownership"];
            !o["leader"].is_null() && o["voters"].as_array().is_some_and(|v| v.len() == voters)
        });
    }

    /// `GET /api/v1/cluster` on this node's admin listener.
    pub(crate) fn status(&self) -> Value {
        status_of(self.ip, self.admin)
    }

    /// `GET /metrics` on this node's admin listener.
    pub(crate) fn metrics(&self) -> String {
        get(self.ip, self.admin, "/metrics")
    }

    /// What this node knows of member `id` (None: not a live member).
    pub(crate) fn member(&self, id: u64) -> Option<Value> {
        self.status()["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["node_id"] == id)
            .cloned()
    }

    /// Routes this node holds for member `id` (0 if it is not a member).
    pub(crate) fn routes_of(&self, id: u64) -> u64 {
        self.member(id).map_or(0, |m| m["routes"].as_u64().unwrap())
    }

    pub(crate) fn options(&self, client_id: &str) -> ConnectOptions {
        let mut o = ConnectOptions::new(self.ip, self.mqtt);
        o.session.client_id = client_id.into();
        o.session.keep_alive = 30;
        o.event_capacity = 8192;
        o
    }

    pub(crate) async fn client(&self, client_id: &str) -> (Client, Events) {
        Client::connect(self.options(client_id)).await.unwrap()
    }
}

/// The body of `GET path` on the admin listener at `ip:port`.
pub(crate) fn get(ip: &str, port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "GET {path}: {reply}");
    reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string()
}

/// `GET /api/v1/cluster` on the admin listener at `ip:port`.
pub(crate) fn status_of(ip: &str, port: u16) -> Value {
    let body = get(ip, port, "/api/v1/cluster");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of the Prometheus sample `series` (name and labels, exactly
/// as written) in `text`.
pub(crate) fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Polls `check` every 50 ms until it holds; panics after `limit`.
pub(crate) fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "not converged after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Three nodes: 1 on 127.0.0.1 seeds itself, 2 and 3 seed 1; returns once
/// every node sees the two others.
pub(crate) fn three_nodes() -> Vec<Node> {
    three_nodes_with(None)
}

/// Like [`three_nodes`], each node's fault switch armed on its file of
/// `partition` when given.
pub(crate) fn three_nodes_with(partition: Option<&Partition>) -> Vec<Node> {
    let start = |id: u64, ip: &'static str, seeds: &[SocketAddr]| {
        let file = partition.map(|p| p.file(id));
        Node::start_faulty(id, ip, seeds, tempfile::tempdir().unwrap(), file.as_deref())
    };
    let n1 = start(1, "127.0.0.1", &[]);
    let n2 = start(2, "127.0.0.2", &[n1.cluster]);
    let n3 = start(3, "127.0.0.3", &[n1.cluster]);
    let nodes = vec![n1, n2, n3];
    for n in &nodes {
        wait_until(
            "every node sees the others",
            Duration::from_secs(30),
            || n.status()["members"].as_array().unwrap().len() == 2,
        );
    }
    for n in &nodes {
        n.wait_owning(3);
    }
    nodes
}

/// Waits until `node` holds at least `n` routes of member `of`; returns
/// how long that took.
pub(crate) fn routes_converge(node: &Node, of: u64, n: u64) -> Duration {
    let what = format!("node {} sees {n} routes of node {of}", node.id);
    wait_until(&what, Duration::from_secs(30), || node.routes_of(of) >= n)
}

/// Receives messages until `done` says enough or `limit` passes.
pub(crate) async fn collect(
    events: &mut Events,
    limit: Duration,
    mut done: impl FnMut(&[Message]) -> bool,
) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&got) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Message(m))) => got.push(*m),
            Ok(Some(Event::Disconnected(e))) => panic!("subscriber lost its connection: {e}"),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// Payloads received on `topic`, as numbers, in arrival order.
pub(crate) fn seqs(got: &[Message], topic: &str) -> Vec<u32> {
    got.iter()
        .filter(|m| m.topic == topic)
        .map(|m| String::from_utf8_lossy(&m.payload).parse().unwrap())
        .collect()
}

/// Publishes `0..n` on `topic` at `qos`, pipelined, and waits for every ack.
pub(crate) async fn publish_seq(c: &Client, topic: &str, qos: QoS, n: u32) {
    let mut tokens = Vec::new();
    for i in 0..n {
        tokens.push(
            c.publish(Message::new(topic, i.to_string()).qos(qos))
                .await
                .unwrap(),
        );
    }
    for t in tokens {
        t.await.unwrap();
    }
}

/// The fault files of a test's nodes (`VIGIL_FAULT_FILE`, one per node):
/// each lists the IPs its node drops cluster traffic to, and the node reads
/// it again every 50 ms, so rewriting them partitions and heals live nodes.
pub(crate) struct Partition {
    dir: tempfile::TempDir,
}

impl Partition {
    /// No file yet: no partition.
    pub(crate) fn new() -> Partition {
        Partition {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Node `id`'s file.
    pub(crate) fn file(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("fault-{id}"))
    }

    /// Cuts the nodes of `side` off from the other `nodes`, both ways;
    /// returns once every node has applied it.
    pub(crate) fn cut(&self, nodes: &[Node], side: &[u64]) {
        for n in nodes {
            let blocked: Vec<&str> = nodes
                .iter()
                .filter(|o| side.contains(&o.id) != side.contains(&n.id))
                .map(|o| o.ip)
                .collect();
            self.write(n.id, &blocked.join("\n"));
        }
        Partition::applied(nodes);
    }

    /// Lifts every cut; returns once every node has applied it.
    pub(crate) fn heal(&self, nodes: &[Node]) {
        for n in nodes {
            self.write(n.id, "");
        }
        Partition::applied(nodes);
    }

    /// Waits until each node logged that its blocked set changed.
    fn applied(nodes: &[Node]) {
        for n in nodes {
            n.wait_log("blocked cluster addresses changed", Duration::from_secs(5));
        }
    }

    /// Replaces node `id`'s file at once (a rename), so the node never
    /// reads half of it.
    fn write(&self, id: u64, text: &str) {
        let tmp = self.dir.path().join(format!("fault-{id}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.file(id)).unwrap();
    }
}
