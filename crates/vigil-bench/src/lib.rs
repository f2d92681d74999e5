//! vigil-bench: load and keep-alive soak scenarios that measure any MQTT
//! 3.1.1/5 broker (`vigil bench SCENARIO`). Clients speak the project codec
//! over raw tokio sockets, so the bench controls every byte (a half-open peer
//! is one that simply stops writing) and stays cheap enough not to be the
//! bottleneck. Every scenario has connect timeouts and a hard end; a broker
//! that goes away mid-run yields an error, never a hang or a success.
//!
//! The keep-alive rules the ping and expiry scenarios check are in
//! `docs/keepalive.md` at the repository's root.

pub mod conn;
pub mod measure;
pub mod payload;
mod progress;
mod scenarios;
pub mod tracker;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;
use thiserror::Error;
use vigil_proto::{ProtocolVersion, ReasonCode};

pub use scenarios::Scenario;

/// Why a bench run failed.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Something did not arrive in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The broker refused a connection.
    #[error("CONNACK refused: {0}")]
    Refused(ReasonCode),
    /// The broker sent something unexpected.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker closed a connection it should have kept.
    #[error("broker closed a connection: {0}")]
    Closed(String),
    /// Bad flags.
    #[error("invalid arguments: {0}")]
    Args(String),
}

/// Flags every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Broker host.
    #[arg(short = 'h', long = "host", default_value = "127.0.0.1", global = true)]
    pub host: String,
    /// Broker port.
    #[arg(short = 'p', long = "port", default_value_t = 1883, global = true)]
    pub port: u16,
    /// Protocol version: 5 or 311.
    #[arg(
        short = 'V',
        long = "protocol-version",
        default_value = "311",
        global = true
    )]
    pub protocol_version: String,
    /// Measured duration in seconds.
    #[arg(long = "duration", default_value_t = 10.0, global = true)]
    pub duration: f64,
    /// Print one JSON object instead of a human summary.
    #[arg(long = "json", global = true)]
    pub json: bool,
    /// Spread client sockets over these source addresses, e.g. 127.0.0.2-127.0.0.9.
    #[arg(long = "src-ips", global = true)]
    pub src_ips: Option<String>,
    /// Sample this process's CPU and RSS during the run (the broker), shown in the summary and the JSON.
    #[arg(long = "broker-pid", global = true)]
    pub broker_pid: Option<u32>,
    /// More broker processes whose CPU and RSS add to --broker-pid's (the
    /// other nodes of a cluster); repeatable.
    #[arg(long = "also-pid", value_name = "PID", global = true)]
    pub also_pids: Vec<u32>,
    /// Subscribers connect to this HOST:PORT instead of -h/-p (fan-in,
    /// fan-out, pairs): another node of a cluster, so that every message
    /// crosses a node-to-node link.
    #[arg(long = "sub-addr", value_name = "HOST:PORT", global = true)]
    pub sub_addr: Option<String>,
    /// Seconds to wait between the last SUBACK and the first PUBLISH
    /// (fan-in, fan-out, pairs): a cluster's routes take a moment to reach
    /// the other nodes, and what is published before is not forwarded.
    #[arg(
        long = "settle",
        value_name = "SECS",
        default_value_t = 0.0,
        global = true
    )]
    pub settle: f64,
    /// No progress output.
    #[arg(long = "quiet", global = true)]
    pub quiet: bool,
    /// Connect over TLS (conn, fan-in, fan-out and pairs), verifying the
    /// broker's certificate against --cafile and the host name given with -h.
    #[arg(long = "tls", global = true, requires = "cafile")]
    pub tls: bool,
    /// Connect over WebSocket (ws://host:port/mqtt, or wss:// with --tls;
    /// conn, fan-in, fan-out and pairs).
    #[arg(long = "ws", global = true)]
    pub ws: bool,
    /// PEM file of the CA that signed the broker's certificate (with --tls).
    #[arg(long = "cafile", value_name = "FILE", global = true)]
    pub cafile: Option<std::path::PathBuf>,
    /// User name for `conn`'s clients; `{i}` becomes the connection's
    /// index, so each connection can be its own user (a password file's cost).
    #[arg(long = "username", value_name = "USER", global = true)]
    pub username: Option<String>,
    /// Password for `conn`'s clients.
    #[arg(long = "password", value_name = "PW", global = true)]
    pub password: Option<String>,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help, global = true)]
    pub help: Option<bool>,
}

impl Common {
    /// CPU and RSS of the broker's processes (--broker-pid and every
    /// --also-pid), summed; None without --broker-pid or if one is gone.
    pub fn broker_sample(&self) -> Option<measure::ProcSample> {
        let mut total = measure::ProcSample::read(self.broker_pid?)?;
        for &pid in &self.also_pids {
            let s = measure::ProcSample::read(pid)?;
            total.cpu_secs += s.cpu_secs;
            total.rss_bytes += s.rss_bytes;
        }
        Some(total)
    }
}

/// `vigil bench` arguments.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub struct BenchArgs {
    /// Flags shared by all scenarios.
    #[command(flatten)]
    pub common: Common,
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Where and how the clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Broker address.
    pub addr: SocketAddr,
    /// Protocol version.
    pub version: ProtocolVersion,
    src_ips: Vec<IpAddr>,
    next_src: std::sync::Arc<AtomicUsize>,
    /// Connect timeout per connection.
    pub connect_timeout: Duration,
    /// MQTT over WebSocket (--ws): the URL clients upgrade on.
    pub ws_url: Option<String>,
    /// TLS client configuration and the name the certificate must carry (--tls).
    pub tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// User name template (`{i}`: connection index) and password.
    pub credentials: (Option<String>, Option<String>),
}

impl Target {
    /// Resolves the common flags.
    pub fn from_common(c: &Common) -> Result<Target, BenchError> {
        let addr = (c.host.as_str(), c.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| BenchError::Args(format!("cannot resolve {}", c.host)))?;
        let version = match c.protocol_version.as_str() {
            "5" | "mqttv5" => ProtocolVersion::V5,
            "311" | "mqttv311" => ProtocolVersion::V3_1_1,
            other => {
                return Err(BenchError::Args(format!(
                    "protocol version {other:?}: use 5 or 311"
                )))
            }
        };
        let src_ips = match &c.src_ips {
            Some(range) => parse_ip_range(range)?,
            None => Vec::new(),
        };
        let tls = match (&c.tls, &c.cafile) {
            (true, Some(cafile)) => Some(tls_config(&c.host, cafile)?),
            _ => None,
        };
        Ok(Target {
            addr,
            version,
            src_ips,
            next_src: Default::default(),
            connect_timeout: Duration::from_secs(10),
            ws_url: c.ws.then(|| {
                let scheme = if tls.is_some() { "wss" } else { "ws" };
                format!("{scheme}://{}:{}/mqtt", c.host, c.port)
            }),
            tls,
            credentials: (c.username.clone(), c.password.clone()),
        })
    }

    /// The target subscribers connect to: --sub-addr's, or this one.
    pub fn for_subscribers(&self, c: &Common) -> Result<Target, BenchError> {
        let Some(sub) = &c.sub_addr else {
            return Ok(self.clone());
        };
        let addr = sub
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| BenchError::Args(format!("cannot resolve --sub-addr {sub}")))?;
        if self.ws_url.is_some() || self.tls.is_some() {
            return Err(BenchError::Args(
                "--sub-addr works with plain MQTT only (not --ws or --tls)".into(),
            ));
        }
        Ok(Target {
            addr,
            ..self.clone()
        })
    }

    /// The next source address, round-robin (None: let the OS choose).
    pub fn next_src(&self) -> Option<IpAddr> {
        if self.src_ips.is_empty() {
            return None;
        }
        let i = self.next_src.fetch_add(1, Ordering::Relaxed);
        Some(self.src_ips[i % self.src_ips.len()])
    }
}

/// A TLS client configuration trusting the CAs in `cafile`, for `host`.
fn tls_config(
    host: &str,
    cafile: &std::path::Path,
) -> Result<
    (
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    ),
    BenchError,
> {
    use rustls::pki_types::pem::PemObject;
    let bad = |why: String| BenchError::Args(format!("--cafile {}: {why}", cafile.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(cafile).map_err(|e| bad(e.to_string()))?
    {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| BenchError::Args(format!("-h {host}: {e}")))?;
    Ok((std::sync::Arc::new(config), name))
}

/// `127.0.0.2-127.0.0.9` → the eight addresses (IPv4, last octet range).
pub fn parse_ip_range(s: &str) -> Result<Vec<IpAddr>, BenchError> {
    let bad = || BenchError::Args(format!("--src-ips {s:?}: expected A.B.C.D-A.B.C.E"));
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: std::net::Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: std::net::Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    let (oa, ob) = (a.octets(), b.octets());
    if oa[..3] != ob[..3] || oa[3] > ob[3] {
        return Err(bad());
    }
    Ok((oa[3]..=ob[3])
        .map(|last| IpAddr::from([oa[0], oa[1], oa[2], last]))
        .collect())
}

/// A finished run: the JSON object and a human summary.
#[derive(Debug, Clone)]
pub struct Report {
    /// Machine-readable result.
    pub json: Value,
    /// Lines for a person.
    pub human: String,
}

/// Runs one scenario to its hard end (duration + 60 s at most).
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let target = Target::from_common(&args.common)?;
    let duration = Duration::from_secs_f64(args.common.duration.max(0.1));
    let hard_end = duration + Duration::from_secs(60);
    let started = Instant::now();
    let progress = progress::Progress::new(!args.common.quiet && !args.common.json);
    let result = tokio::time::timeout(
        hard_end,
        scenarios::run(&args.scenario, &target, &args.common, duration, &progress),
    )
    .await;
    progress.finish();
    let mut report = match result {
        Ok(r) => r?,
        Err(_) => {
            return Err(BenchError::Timeout(format!(
                "the scenario to end within {} s",
                hard_end.as_secs()
            )))
        }
    };
    if let Value::Object(map) = &mut report.json {
        map.insert("elapsed_s".into(), started.elapsed().as_secs_f64().into());
        map.insert("broker".into(), format!("{}", target.addr).into());
        map.insert(
            "protocol".into(),
            args.common.protocol_version.clone().into(),
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges() {
        let ips = parse_ip_range("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(ips.len(), 3);
        assert_eq!(ips[2].to_string(), "127.0.0.4");
        assert!(parse_ip_range("127.0.0.9-127.0.0.2").is_err());
        assert_eq!(parse_ip_range("127.0.0.5").unwrap().len(), 1);
    }
}
