//! Broker configuration: a TOML file (every key optional), overridden by
//! command-line flags in the `vigil` binary. Errors name the file, the line and
//! the key, because a broker that fails to start must say exactly why.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Everything `vigil serve` can be told. `BrokerConfig::default()` is the
/// no-config-file broker: `0.0.0.0:1883`, anonymous access, every keep alive accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Where to listen.
    pub listener: ListenerConfig,
    /// Keep-alive limits (see shared/docs/keepalive.md, broker rule 3).
    pub keepalive: KeepAliveConfig,
    /// Packet and flow-control limits.
    pub limits: LimitsConfig,
    /// Session and queue bounds.
    pub sessions: SessionsConfig,
    /// Persistence.
    pub store: StoreConfig,
}

/// The TCP listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address to bind (default 0.0.0.0).
    pub bind: IpAddr,
    /// TCP port (default 1883).
    pub port: u16,
    /// Connections beyond this are refused at accept (default 100 000).
    pub max_connections: usize,
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
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 1883,
            max_connections: 100_000,
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
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_session_expiry: None,
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
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
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
        toml::from_str(text).map_err(|e| {
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
        })
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
        if self.sessions.max_queued_messages == 0 {
            return Err(invalid(
                "sessions.max_queued_messages must be at least 1".into(),
            ));
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
        assert_eq!(c.listen_addr().to_string(), "0.0.0.0:1883");
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
    fn missing_file_names_the_path() {
        let err = BrokerConfig::load(Path::new("/nonexistent/vigil.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vigil.toml"), "{err}");
    }
}
