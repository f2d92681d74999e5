//! Test-only fault injection (feature `fault-injection`, which only vigil's
//! tests turn on): a partition between live nodes.
//!
//! When `VIGIL_FAULT_FILE` names a file, the node drops all cluster traffic
//! to the IP addresses listed in it, one per line (`127.0.0.3`, or an
//! `ip:port` whose port is ignored; `#` starts a comment). The file is
//! read again every `POLL`, and a missing or empty file blocks nothing, so
//! a test partitions and heals running processes by rewriting it.
//!
//! On loopback a connection's source address is not the node's own IP, so
//! the filter works on the side that sends or connects: gossip datagrams
//! to a blocked address are dropped (those from one too: UDP's source is
//! the peer's bound address), TCP connects to one are refused (links,
//! hand-overs, Raft), and a connection this node opened to an address that
//! becomes blocked is closed. A test blocks both sides (node 3's file lists
//! nodes 1 and 2, theirs list node 3), so traffic stops both ways.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::ChitchatEnvelope;
use tokio::sync::watch;
use tracing::warn;

/// The environment variable naming the file of blocked addresses.
pub(crate) const ENV: &str = "VIGIL_FAULT_FILE";
/// How often the file is read again.
const POLL: Duration = Duration::from_millis(50);

/// The blocked addresses, once armed.
static BLOCKED: OnceLock<watch::Sender<BTreeSet<IpAddr>>> = OnceLock::new();

/// Arms the switch if `VIGIL_FAULT_FILE` is set (once per process): a
/// thread of its own reads the file every `POLL`. Logs a WARN when armed.
pub(crate) fn arm() {
    let Some(path) = std::env::var_os(ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let mut started = false;
    let sender = BLOCKED.get_or_init(|| {
        started = true;
        watch::channel(BTreeSet::new()).0
    });
    if !started {
        return;
    }
    warn!(file = %path.display(), "fault injection armed: cluster traffic to the addresses listed in this file is dropped (a test build; never in production)");
    let watched = std::thread::Builder::new()
        .name("vigil-fault".into())
        .spawn(move || loop {
            let now = read(&path);
            let changed = sender.send_if_modified(|blocked| {
                let changed = *blocked != now;
                *blocked = now.clone();
                changed
            });
            if changed {
                warn!(blocked = ?now, "fault injection: blocked cluster addresses changed");
            }
            std::thread::sleep(POLL);
        });
    if let Err(e) = watched {
        warn!(cause = %e, "fault injection: cannot start the thread that reads the file");
    }
}

/// The addresses `path` lists; none when it is missing or unreadable.
fn read(path: &Path) -> BTreeSet<IpAddr> {
    std::fs::read_to_string(path)
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// The addresses in `text`: one per line, an IP or `ip:port`; blank lines,
/// comments and what does not parse are skipped.
fn parse(text: &str) -> BTreeSet<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.parse::<IpAddr>()
                .or_else(|_| l.parse::<SocketAddr>().map(|a| a.ip()))
                .ok()
        })
        .collect()
}

/// True when traffic to `addr` is dropped now.
pub(crate) fn blocked(addr: SocketAddr) -> bool {
    BLOCKED
        .get()
        .is_some_and(|b| b.borrow().contains(&addr.ip()))
}

/// Refuses a connect to a blocked `addr`, as an unreachable peer would.
pub(crate) fn refuse(addr: SocketAddr) -> std::io::Result<()> {
    if blocked(addr) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("{addr} is cut off by fault injection"),
        ));
    }
    Ok(())
}

/// Resolves when `addr` becomes blocked (never, when the switch is not
/// armed): a connection to it awaits this beside its traffic and closes.
pub(crate) async fn cut(addr: SocketAddr) -> std::io::Error {
    let Some(sender) = BLOCKED.get() else {
        return std::future::pending().await;
    };
    let mut blocked = sender.subscribe();
    if blocked.wait_for(|b| b.contains(&addr.ip())).await.is_err() {
        // The sender is a static: it never closes.
        return std::future::pending().await;
    }
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        format!("{addr} is cut off by fault injection"),
    )
}

/// The filter for the Raft links of client-id ownership, when armed.
pub(crate) fn peer_filter() -> Option<vigil_ownership::PeerFilter> {
    BLOCKED.get()?;
    Some(vigil_ownership::PeerFilter::new(blocked))
}

/// Chitchat's UDP transport with the blocked addresses' datagrams dropped.
pub(crate) struct FaultyTransport;

#[async_trait]
impl Transport for FaultyTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(FaultySocket(
            UdpTransport.open(listen_addr).await?,
        )))
    }
}

/// A gossip socket that drops what goes to or comes from a blocked address.
struct FaultySocket(Box<dyn Socket>);

#[async_trait]
impl Socket for FaultySocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.0.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        if blocked(to) {
            // Lost on the way, as UDP may: chitchat is not told.
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        self.0.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let got = self.0.recv().await?;
            if !blocked(got.from_addr) {
                return Ok(got);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_lists_ips_or_addresses_one_per_line() {
        let text = "127.0.0.1\n\n  127.0.0.2:7946  \n# a comment\n127.0.0.4 # node 4\nnot-an-ip\n";
        let ips: Vec<String> = parse(text).iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["127.0.0.1", "127.0.0.2", "127.0.0.4"]);
        assert!(parse("").is_empty());
        assert!(read(Path::new("/nonexistent/vigil-fault")).is_empty());
    }
}
