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
}

pub use crate::observe::config::{AdminConfig, SysConfig};

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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BrokerConfig, ConfigError> {
        let path = Path::new("vigil.toml");
        let c = BrokerConfig::parse(text, path)?;
        c.validate(path)?;
        Ok(c)
    }

    #[test]
    fn empty_file_is_the_default_broker() {
        let c = parse("").unwrap();
        assert_eq!(c, BrokerConfig::default());
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:1883");
        assert!(c.keepalive.allow_zero_keepalive);
        assert_eq!(c.keepalive.max_keepalive, u16::MAX);
    }

    #[test]
    fn keys_override_defaults() {
        let c = parse(
            "[listener]\nport = 2883\nbind = \"127.0.0.1\"\nworkers = 3\n\n[keepalive]\nmax_keepalive = 60\nv3_out_of_range = \"refuse\"\n",
        )
        .unwrap();
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:2883");
        assert_eq!(c.listener.workers, 3);
        assert_eq!(
            c.listener.worker_threads(16),
            3,
            "an explicit count is kept"
        );
        let default = BrokerConfig::default().listener;
        assert_eq!(default.workers, 0);
        assert_eq!(
            [1, 2, 4, 16].map(|cores| default.worker_threads(cores)),
            [1, 1, 3, 15],
            "0: one per core but one, at least one"
        );
        assert_eq!(c.keepalive.max_keepalive, 60);
        assert_eq!(c.keepalive.v3_out_of_range, OutOfRangePolicy::Refuse);
        assert_eq!(c.limits, LimitsConfig::default());
    }

    #[test]
    fn server_topic_aliases_default_on_and_can_be_turned_off() {
        assert!(parse("").unwrap().limits.server_topic_aliases);
        let c = parse("[limits]\nserver_topic_aliases = false\n").unwrap();
        assert!(!c.limits.server_topic_aliases);
        let err = parse("[limits]\nserver_topic_aliases = 1\n").unwrap_err();
        assert!(err.to_string().starts_with("vigil.toml:2:"), "{err}");
    }

    #[test]
    fn slow_consumer_policy_is_read_and_a_wrong_one_named() {
        assert_eq!(
            BrokerConfig::default().sessions.slow_consumer,
            SlowConsumerPolicy::Disconnect
        );
        let c =
            parse("[sessions]\nslow_consumer = \"drop\"\nslow_consumer_wait_ms = 50\n").unwrap();
        assert_eq!(c.sessions.slow_consumer, SlowConsumerPolicy::Drop);
        assert_eq!(c.sessions.slow_consumer.as_str(), "drop");
        assert_eq!(c.sessions.slow_consumer_wait_ms, 50);
        let err = parse("[sessions]\nslow_consumer = \"wait\"\n").unwrap_err();
        assert!(err.to_string().starts_with("vigil.toml:2:"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[listener]\nport = 1883\nprot = 1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("vigil.toml:3:"), "{msg}");
        assert!(msg.contains("prot"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let err = parse("[keepalive]\n\nmax_keepalive = \"sixty\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("vigil.toml:3:"), "{msg}");
        assert!(
            msg.contains("max_keepalive") || msg.contains("u16") || msg.contains("string"),
            "{msg}"
        );
    }

    #[test]
    fn out_of_range_value_is_an_error() {
        let err = parse("[listener]\nport = 70000\n").unwrap_err();
        assert!(err.to_string().starts_with("vigil.toml:2:"), "{err}");
    }

    #[test]
    fn contradictory_limits_are_refused() {
        let err = parse("[keepalive]\nmin_keepalive = 100\nmax_keepalive = 10\n").unwrap_err();
        assert!(err.to_string().contains("min_keepalive (100)"), "{err}");
    }

    #[test]
    fn the_documented_complete_file_is_the_default_broker() {
        // docs/configuration.md shows every key with its default: keep it true.
        let doc = include_str!("../../../docs/configuration.md");
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block in docs/configuration.md");
        assert_eq!(parse(block).unwrap(), BrokerConfig::default());
        // The [admin] lines are comments there (the table turns it on).
        let admin_block = block
            .replace("# [admin]", "[admin]")
            .replace("# bind", "bind")
            .replace("# port", "port");
        assert_eq!(
            parse(&admin_block).unwrap().admin,
            Some(AdminConfig::default())
        );
        // Every key the parser knows, section by section, read from the
        // parser's own "expected one of" list so a new key cannot be missed.
        for section in [
            "listener",
            "keepalive",
            "limits",
            "sessions",
            "store",
            "auth",
            "sys",
            "admin",
        ] {
            let err = parse(&format!("[{section}]\nno_such_key = 1\n")).unwrap_err();
            let msg = err.to_string();
            let expected = msg
                .split_once("expected")
                .map(|(_, list)| list)
                .unwrap_or_else(|| panic!("no key list in {msg}"));
            let keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            assert!(!keys.is_empty(), "{msg}");
            for key in keys {
                assert!(
                    doc.contains(&format!("| `{key}` |")),
                    "[{section}] {key} has no row in docs/configuration.md"
                );
                assert!(
                    block.contains(&format!("{key} =")),
                    "[{section}] {key} is missing from the complete file"
                );
            }
        }
    }

    #[test]
    fn listeners_are_read_with_their_tls_tables() {
        let c = parse(
            r#"
[listener]
workers = 2

[[listeners]]
port = 1883

[[listeners]]
port = 8883
[listeners.tls]
cert = "server.crt"
key = "server.key"
ca = "ca.pem"
require_client_cert = true
min_version = "1.3"
identity = "san"

[[listeners]]
bind = "127.0.0.1"
port = 8080
protocol = "ws"
max_connections = 500

[[listeners]]
port = 8443
protocol = "ws"
path = "/"
tls = { cert = "server.crt", key = "server.key" }
"#,
        )
        .unwrap();
        let l = c.effective_listeners();
        assert_eq!(
            l.iter()
                .map(|l| (l.kind(), l.addr().to_string()))
                .collect::<Vec<_>>(),
            [
                ("mqtt", "127.0.0.1:1883".to_string()),
                ("mqtt+tls", "127.0.0.1:8883".to_string()),
                ("ws", "127.0.0.1:8080".to_string()),
                ("ws+tls", "127.0.0.1:8443".to_string()),
            ]
        );
        let tls = l[1].tls.as_ref().unwrap();
        assert_eq!(tls.ca.as_deref(), Some(Path::new("ca.pem")));
        assert!(tls.require_client_cert);
        assert_eq!(tls.min_version, TlsMinVersion::V1_3);
        assert_eq!(tls.identity, TlsIdentity::San);
        assert_eq!(l[3].tls.as_ref().unwrap().identity, TlsIdentity::Cn);
        assert_eq!(l[2].path, "/mqtt");
        assert_eq!(l[2].max_connections, 500);
        assert_eq!(l[0].max_connections, 100_000);
        assert_eq!(l[3].path, "/");
        assert_eq!(l[3].tls.as_ref().unwrap().min_version, TlsMinVersion::V1_2);
        assert_eq!(c.listener.workers, 2);
    }

    #[test]
    fn the_old_listener_table_is_one_plain_listener() {
        let c = parse("[listener]\nport = 2883\nmax_connections = 7\n").unwrap();
        let l = c.effective_listeners();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].kind(), l[0].port, l[0].max_connections),
            ("mqtt", 2883, 7)
        );
    }

    #[test]
    fn listener_mistakes_are_named() {
        let err = parse("[listener]\nport = 1883\n[[listeners]]\nport = 8883\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("[listener] port describe the single listener"),
            "{err}"
        );
        let err = parse("[[listeners]]\nport = 1883\n[[listeners]]\nport = 1883\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("127.0.0.1:1883 is given to two listeners"),
            "{err}"
        );
        let err =
            parse("[[listeners]]\nport = 80\nprotocol = \"ws\"\npath = \"mqtt\"\n").unwrap_err();
        assert!(
            err.to_string().contains("listeners[0] (ws port 80): path"),
            "{err}"
        );
        let err = parse(
            "[[listeners]]\nport = 8883\n[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nrequire_client_cert = true\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("require_client_cert needs tls.ca"),
            "{err}"
        );
        let err = parse(
            "[[listeners]]\nport = 8883\n[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"ca\"\nuse_identity_as_username = true\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(
                "listeners[0] (mqtt+tls port 8883): tls.use_identity_as_username needs tls.require_client_cert = true"
            ),
            "{err}"
        );
        let ok = parse(
            "[[listeners]]\nport = 8883\n[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"ca\"\nrequire_client_cert = true\nuse_identity_as_username = true\n",
        )
        .unwrap();
        assert!(
            ok.listeners[0]
                .tls
                .as_ref()
                .unwrap()
                .use_identity_as_username
        );
        assert!(ok.listeners[0].logs_in_by_certificate());
        assert!(!ListenerEntry::mqtt(default_bind(), 1883).logs_in_by_certificate());
        let err = parse("[[listeners]]\nport = 1\nprotocol = \"quic\"\n").unwrap_err();
        assert!(err.to_string().starts_with("vigil.toml:3:"), "{err}");
        let err = parse("[[listeners]]\nport = 1\n[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nmin_version = \"1.1\"\n").unwrap_err();
        assert!(
            err.to_string().contains("min_version") || err.to_string().contains("1.2"),
            "{err}"
        );
        let err = parse("[[listeners]]\nbind = \"127.0.0.1\"\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn every_listeners_key_is_documented() {
        let doc = include_str!("../../../docs/configuration.md");
        for text in [
            "[[listeners]]\nno_such_key = 1\n",
            "[[listeners]]\nport = 1\n[listeners.tls]\nno_such_key = 1\n",
        ] {
            let msg = parse(text).unwrap_err().to_string();
            let expected = msg
                .split_once("expected")
                .map(|(_, l)| l)
                .unwrap_or_else(|| panic!("{msg}"));
            let keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            assert!(!keys.is_empty(), "{msg}");
            for key in keys {
                assert!(
                    doc.contains(&format!("| `{key}` |")),
                    "{key} has no row in docs/configuration.md"
                );
            }
        }
    }

    #[test]
    fn admin_is_off_unless_its_table_is_present_and_refuses_an_open_bind_without_token() {
        assert_eq!(parse("").unwrap().admin, None);
        assert_eq!(parse("").unwrap().sys.interval, 10);
        let c = parse("[admin]\n").unwrap();
        assert_eq!(c.admin.unwrap().addr().to_string(), "127.0.0.1:18083");
        let err = parse("[admin]\nbind = \"0.0.0.0\"\n").unwrap_err();
        assert!(err.to_string().contains("admin.bind (0.0.0.0)"), "{err}");
        let c = parse("[admin]\nbind = \"0.0.0.0\"\ntoken = \"s3cret\"\n").unwrap();
        assert_eq!(
            c.admin.unwrap().resolve_token().unwrap().as_deref(),
            Some("s3cret")
        );
        let err = parse("[admin]\ntoken = \"a\"\ntoken_file = \"/t\"\n").unwrap_err();
        assert!(err.to_string().contains("both set"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = BrokerConfig::load(Path::new("/nonexistent/vigil.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vigil.toml"), "{err}");
        // The cause travels as the source only: printing the chain names it once.
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause.as_deref().is_some_and(|c| c.contains("No such file")),
            "{cause:?}"
        );
        assert!(!err.to_string().contains("No such file"), "{err}");
    }
}
