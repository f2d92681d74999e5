//! Broker configuration: a TOML file (every key optional), overridden by
//! command-line flags in the `vigil` binary. Errors name the file, the line and
//! the key, because a broker that fails to start must say exactly why.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub use crate::core::SlowConsumerPolicy;

/// Everything `vigil serve` can be told. `BrokerConfig::default()` is the
/// no-config-file broker: `127.0.0.1:1883`, anonymous access, every keep alive accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Settings shared by every listener, and the single plain listener
    /// used when no `[[listeners]]` entry is given.
    pub listener: ListenerConfig,
    /// Listeners (`[[listeners]]`); empty: one plain MQTT listener from `[listener]`.
    pub listeners: Vec<ListenerEntry>,
    /// Keep-alive limits (docs/keepalive.md, broker rule 3).
    pub keepalive: KeepAliveConfig,
    /// Packet and flow-control limits.
    pub limits: LimitsConfig,
    /// Session and queue bounds.
    pub sessions: SessionsConfig,
    /// Persistence.
    pub store: StoreConfig,
    /// Authentication and authorization.
    pub auth: crate::auth::AuthConfig,
    /// `$SYS` topics.
    pub sys: SysConfig,
    /// The admin HTTP listener (None: off).
    pub admin: Option<AdminConfig>,
    /// Cluster membership (None: a single broker).
    pub cluster: Option<ClusterConfig>,
}

pub use crate::observe::config::{AdminConfig, SysConfig};
pub use cluster::ClusterConfig;

mod cluster;

/// The TCP listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address to bind (default 127.0.0.1: any other address needs
    /// authentication or an explicit `auth.allow_anonymous = true`).
    pub bind: IpAddr,
    /// TCP port (default 1883).
    pub port: u16,
    /// Connections beyond this are refused at accept (default 100 000).
    pub max_connections: usize,
    /// New connections accepted per second at most (token bucket holding a
    /// second's worth); the rest wait in the kernel's accept queue (default
    /// 0: no limit).
    pub max_connection_rate: u32,
    /// Seconds a new TCP connection may take to send CONNECT (default 10).
    pub connect_timeout: u64,
    /// Worker threads, each serving its share of the connections for their
    /// whole life (default 0: one per core but one, at least one).
    pub workers: usize,
    /// Milliseconds a connection with nothing in flight may stay idle
    /// before it is parked off its task, to hold idle fleets in less memory
    /// (default 1000; 0: never park).
    pub park_idle_after_ms: u64,
}

impl ListenerConfig {
    /// The number of worker threads to start on a machine with `cores` cores.
    ///
    /// `workers = 0` leaves one core to the kernel, whose TCP stack does most
    /// of a broker's work, and to whatever shares the machine: on 2 cores one
    /// worker cost 20-45% less broker CPU per delivered message than two in
    /// every `vigil bench` scenario (fan-out 1 -> 100 QoS 1: 1.6-1.7 against
    /// 3.0-3.1 us), because two spent it waking each other across threads.
    pub fn worker_threads(&self, cores: usize) -> usize {
        match self.workers {
            0 => cores.saturating_sub(1).max(1),
            n => n,
        }
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// MQTT over TCP (or TLS) (default).
    #[default]
    Mqtt,
    /// MQTT over WebSocket (or WebSocket over TLS).
    Ws,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerEntry {
    /// Address to bind (default 127.0.0.1, as the single listener's: any
    /// other address needs authentication or explicit anonymous access).
    #[serde(default = "default_bind")]
    pub bind: IpAddr,
    /// TCP port (required).
    pub port: u16,
    /// `mqtt` (default) or `ws`.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// The HTTP path WebSocket clients upgrade on (`ws` only; default `/mqtt`).
    #[serde(default = "default_ws_path")]
    pub path: String,
    /// Connections on this listener beyond this are refused at accept (default 100 000).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// New connections accepted per second at most on this listener (token
    /// bucket holding a second's worth); the rest wait in the kernel's
    /// accept queue (default 0: no limit).
    #[serde(default)]
    pub max_connection_rate: u32,
    /// TLS on this listener (`mqtt` + tls: MQTT over TLS; `ws` + tls: WSS).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn default_ws_path() -> String {
    "/mqtt".into()
}

fn default_max_connections() -> usize {
    100_000
}

impl ListenerEntry {
    /// A plain MQTT listener on `bind:port`.
    pub fn mqtt(bind: IpAddr, port: u16) -> ListenerEntry {
        ListenerEntry {
            bind,
            port,
            protocol: ListenerProtocol::Mqtt,
            path: default_ws_path(),
            max_connections: default_max_connections(),
            max_connection_rate: 0,
            tls: None,
        }
    }

    /// The socket address to listen on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// True when the listener itself authenticates every client: mutual TLS
    /// whose verified certificate is the login (`require_client_cert` and
    /// `use_identity_as_username`). Such a listener needs no password file
    /// or `allow_anonymous` to listen on a public address.
    pub fn logs_in_by_certificate(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.require_client_cert && t.use_identity_as_username)
    }

    /// `mqtt`, `mqtt+tls`, `ws` or `ws+tls`, for logs.
    pub fn kind(&self) -> &'static str {
        match (self.protocol, self.tls.is_some()) {
            (ListenerProtocol::Mqtt, false) => "mqtt",
            (ListenerProtocol::Mqtt, true) => "mqtt+tls",
            (ListenerProtocol::Ws, false) => "ws",
            (ListenerProtocol::Ws, true) => "ws+tls",
        }
    }
}

/// Lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3 (default).
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// A listener's `[listeners.tls]` table. Paths are relative to the working directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate (then its chain).
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file of CA certificates client certificates are verified against.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `ca` (default false).
    #[serde(default)]
    pub require_client_cert: bool,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsMinVersion,
    /// Which name of a verified client certificate is the client's
    /// identity: "cn" (subject common name, default) or "san" (first DNS,
    /// e-mail or URI subject alternative name).
    #[serde(default)]
    pub identity: TlsIdentity,
    /// Log clients in by their certificate (Mosquitto's option of the same
    /// name): the identity above becomes the user name for the ACL and for
    /// authentication, no password is needed and one sent is ignored.
    /// Needs `require_client_cert` (default false).
    #[serde(default)]
    pub use_identity_as_username: bool,
}

impl TlsConfig {
    /// Why `use_identity_as_username` cannot work with these settings, if it
    /// cannot: a listener that let clients in without a certificate would
    /// have no user name for them, or take the one they claim.
    pub fn identity_problem(&self) -> Option<String> {
        (self.use_identity_as_username && !self.require_client_cert).then(|| {
            "tls.use_identity_as_username needs tls.require_client_cert = true (and tls.ca): \
             without a verified client certificate there is no identity to use as the user name"
                .to_string()
        })
    }
}

/// Which name of a client certificate identifies the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsIdentity {
    /// The subject's common name (default).
    #[default]
    Cn,
    /// The first DNS, e-mail or URI subject alternative name.
    San,
}

/// What a 3.1/3.1.1 client whose keep alive is outside the configured limits gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutOfRangePolicy {
    /// Accept the client's own value: it has no way to learn another (default).
    #[default]
    Accept,
    /// Refuse with CONNACK return code 0x02 and a log line saying why.
    Refuse,
}

/// Keep-alive limits applied to each CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepAliveConfig {
    /// Smallest keep alive accepted, seconds (default 0: no lower limit).
    pub min_keepalive: u16,
    /// Largest keep alive accepted, seconds (default 65535: no upper limit).
    pub max_keepalive: u16,
    /// Whether keep alive 0 (no keep alive) is accepted (default true).
    pub allow_zero_keepalive: bool,
    /// What MQTT 3.1/3.1.1 clients outside the limits get (default accept).
    pub v3_out_of_range: OutOfRangePolicy,
}

/// Packet size and flow-control limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest packet accepted from a client, bytes (default 1 MiB, announced in MQTT 5 CONNACK).
    pub max_packet_size: u32,
    /// Inbound QoS 1/2 messages a client may have unacknowledged (MQTT 5 Receive Maximum; default 100).
    pub receive_maximum: u16,
    /// Topic aliases a client may use (default 64; 0 disables).
    pub topic_alias_maximum: u16,
    /// Outbound QoS 1/2 messages in flight per client when it announces no Receive Maximum (default 100).
    pub max_inflight: u16,
    /// Whether vigil assigns topic aliases to what it sends MQTT 5 clients
    /// that allow them (Topic Alias Maximum > 0 in CONNECT; default true).
    pub server_topic_aliases: bool,
    /// PUBLISH packets a second one client may send; over it vigil stops
    /// reading that client for a while instead of dropping anything
    /// (default 0: no limit).
    pub max_publish_rate: u32,
    /// PUBLISH bytes (whole packets) a second one client may send, enforced
    /// the same way (default 0: no limit).
    pub max_publish_bytes_rate: u32,
}

/// Per-session bounds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Messages queued for one session before the overflow policy applies (default 1000).
    pub max_queued_messages: usize,
    /// Bytes queued for one session before the overflow policy applies (default 16 MiB).
    pub max_queued_bytes: usize,
    /// Upper bound on a session's expiry interval, seconds (default: none).
    pub max_session_expiry: Option<u32>,
    /// What happens to a connected subscriber whose queue stays full:
    /// `disconnect` (default) or `drop`.
    pub slow_consumer: SlowConsumerPolicy,
    /// Longest time a publisher waits for room in full subscriber queues
    /// before the slow-consumer policy applies, milliseconds (default 500).
    pub slow_consumer_wait_ms: u64,
}

/// Which store backend holds persistent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded on-disk store in `data_dir` (default).
    #[default]
    Disk,
    /// Nothing survives a restart.
    Memory,
}

/// When a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Group commit; acks sent only after the commit holding the message (default).
    #[default]
    Always,
    /// Commits flushed periodically: faster, with a window of loss on crash.
    Periodic,
}

/// Persistence settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Backend (default disk).
    pub backend: StoreBackend,
    /// Directory of the on-disk store (default `./vigil-data`).
    pub data_dir: PathBuf,
    /// Durability mode (default always).
    pub durability: DurabilityMode,
    /// In `periodic` mode, the longest time between syncs, milliseconds (default 1000).
    pub sync_interval_ms: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 1883,
            max_connections: 100_000,
            max_connection_rate: 0,
            connect_timeout: 10,
            workers: 0,
            park_idle_after_ms: 1000,
        }
    }
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig {
            min_keepalive: 0,
            max_keepalive: u16::MAX,
            allow_zero_keepalive: true,
            v3_out_of_range: OutOfRangePolicy::Accept,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_packet_size: 1024 * 1024,
            receive_maximum: 100,
            topic_alias_maximum: 64,
            max_inflight: 100,
            server_topic_aliases: true,
            max_publish_rate: 0,
            max_publish_bytes_rate: 0,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_session_expiry: None,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            slow_consumer_wait_ms: 500,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Disk,
            data_dir: PathBuf::from("./vigil-data"),
            durability: DurabilityMode::Always,
            sync_interval_ms: 1000,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read. The cause is the error's source, not
    /// part of its message, so a report that prints the chain says it once.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key/value is wrong.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// Values that parse but contradict each other.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or `<flags>` for command-line values).
        path: PathBuf,
        /// What is wrong, naming the keys.
        message: String,
    },
}

impl BrokerConfig {
    /// The listeners to start: the `[[listeners]]` entries, or one plain
    /// MQTT listener from `[listener]` when there are none.
    pub fn effective_listeners(&self) -> Vec<ListenerEntry> {
        if !self.listeners.is_empty() {
            return self.listeners.clone();
        }
        let mut plain = ListenerEntry::mqtt(self.listener.bind, self.listener.port);
        plain.max_connections = self.listener.max_connections;
        plain.max_connection_rate = self.listener.max_connection_rate;
        vec![plain]
    }

    /// Loads a TOML file; keys that are absent keep their defaults.
    pub fn load(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = BrokerConfig::parse(&text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Parses TOML text; `path` is only used to name the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<BrokerConfig, ConfigError> {
        let config: BrokerConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        if !config.listeners.is_empty() {
            // `[listener]`'s address keys only describe the listener used
            // when there is no `[[listeners]]`: silently ignoring them would
            // leave a port the user asked for closed.
            let table: toml::Table = toml::from_str(text).unwrap_or_default();
            let set: Vec<&str> = ["bind", "port", "max_connections", "max_connection_rate"]
                .into_iter()
                .filter(|k| {
                    table
                        .get("listener")
                        .and_then(|l| l.as_table())
                        .is_some_and(|l| l.contains_key(*k))
                })
                .collect();
            if !set.is_empty() {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "[listener] {} describe the single listener used when there is no \
                         [[listeners]]; this file has [[listeners]], so give each listener \
                         its own: move them into a [[listeners]] entry",
                        set.join(", ")
                    ),
                });
            }
        }
        Ok(config)
    }

    /// Checks values that parse but cannot work together.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let ka = &self.keepalive;
        if ka.min_keepalive > ka.max_keepalive {
            return Err(invalid(format!(
                "keepalive.min_keepalive ({}) is greater than keepalive.max_keepalive ({})",
                ka.min_keepalive, ka.max_keepalive
            )));
        }
        if self.limits.max_packet_size < 16 {
            return Err(invalid(format!(
                "limits.max_packet_size ({}) is too small to hold any CONNECT (minimum 16)",
                self.limits.max_packet_size
            )));
        }
        if self.limits.receive_maximum == 0 {
            return Err(invalid("limits.receive_maximum must be at least 1".into()));
        }
        if self.limits.max_inflight == 0 {
            return Err(invalid("limits.max_inflight must be at least 1".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let name = format!("listeners[{i}] ({} port {})", l.kind(), l.port);
            if l.port != 0 && !seen.insert(l.addr()) {
                return Err(invalid(format!(
                    "{name}: {} is given to two listeners",
                    l.addr()
                )));
            }
            if l.protocol == ListenerProtocol::Ws && !l.path.starts_with('/') {
                return Err(invalid(format!(
                    "{name}: path {:?} must start with /",
                    l.path
                )));
            }
            if l.max_connections == 0 {
                return Err(invalid(format!(
                    "{name}: max_connections must be at least 1"
                )));
            }
            if let Some(tls) = &l.tls {
                if tls.require_client_cert && tls.ca.is_none() {
                    return Err(invalid(format!(
                        "{name}: tls.require_client_cert needs tls.ca, the CA client certificates are checked against"
                    )));
                }
                if let Some(problem) = tls.identity_problem() {
                    return Err(invalid(format!("{name}: {problem}")));
                }
            }
        }
        if self.sessions.max_queued_messages == 0 {
            return Err(invalid(
                "sessions.max_queued_messages must be at least 1".into(),
            ));
        }
        if let Some(problem) = self.admin.as_ref().and_then(AdminConfig::problem) {
            return Err(invalid(problem));
        }
        if let Some(problem) = self.cluster.as_ref().and_then(ClusterConfig::problem) {
            return Err(invalid(problem));
        }
        Ok(())
    }

    /// The socket address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.listener.bind, self.listener.port)
    }

    /// The connect timeout as a Duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.listener.connect_timeout)
    }
}

/// 1-based line and column of a byte offset, for error messages.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
