//! Flags shared by `vigil pub` and `vigil sub`, named as Mosquitto's clients
//! name them (`-h` is the host, so help is `--help` only).

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use vigil_client::{ConnectOptions, ProtocolVersion, QoS, Will};

/// Connection flags.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Broker host.
    #[arg(short = 'h', long = "host", default_value = "localhost")]
    pub(crate) host: String,
    /// Broker port.
    #[arg(short = 'p', long = "port", default_value_t = 1883)]
    pub(crate) port: u16,
    /// Client id (default: vigil-pub-PID / vigil-sub-PID).
    #[arg(short = 'i', long = "id")]
    pub(crate) id: Option<String>,
    /// Keep alive in seconds.
    #[arg(short = 'k', long = "keepalive", default_value_t = 60)]
    pub(crate) keepalive: u16,
    /// User name.
    #[arg(short = 'u', long = "username")]
    pub(crate) username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw")]
    pub(crate) password: Option<String>,
    /// Log in with MQTT 5 enhanced authentication: SCRAM-SHA-256 or
    /// SCRAM-SHA-512, as -u with -P (needs -V 5; the password is not sent).
    #[arg(long = "auth-method", value_name = "METHOD")]
    pub(crate) auth_method: Option<String>,
    /// Protocol version: 5, 311 or 31 (also mqttv5, mqttv311, mqttv31).
    #[arg(short = 'V', long = "protocol-version", default_value = "311")]
    pub(crate) protocol_version: String,
    /// Keep the session when disconnected (clean session off; MQTT 5: with -x).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub(crate) keep_session: bool,
    /// MQTT 5 session expiry interval in seconds.
    #[arg(short = 'x', long = "session-expiry-interval")]
    pub(crate) session_expiry: Option<u32>,
    /// Debug output (packets and state) on stderr.
    #[arg(short = 'd', long = "debug")]
    pub(crate) debug: bool,
    /// Will topic.
    #[arg(long = "will-topic")]
    pub(crate) will_topic: Option<String>,
    /// Will payload.
    #[arg(long = "will-payload")]
    pub(crate) will_payload: Option<String>,
    /// Will QoS.
    #[arg(long = "will-qos", default_value_t = 0)]
    pub(crate) will_qos: u8,
    /// Will retain.
    #[arg(long = "will-retain")]
    pub(crate) will_retain: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,
}

/// A QoS flag value.
pub(crate) fn qos(n: u8) -> anyhow::Result<QoS> {
    QoS::from_u8(n).with_context(|| format!("QoS must be 0, 1 or 2, not {n}"))
}

impl ConnectArgs {
    /// Connect options from the flags.
    pub(crate) fn options(&self, default_id: &str) -> anyhow::Result<ConnectOptions> {
        let version = match self.protocol_version.as_str() {
            "5" | "mqttv5" => ProtocolVersion::V5,
            "311" | "mqttv311" => ProtocolVersion::V3_1_1,
            "31" | "mqttv31" => ProtocolVersion::V3_1,
            other => bail!("unknown protocol version {other:?}: use 5, 311 or 31"),
        };
        let mut o = ConnectOptions::new(self.host.clone(), self.port);
        let s = &mut o.session;
        s.version = version;
        s.client_id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("{default_id}-{}", std::process::id()));
        s.keep_alive = self.keepalive;
        s.clean_start = !self.keep_session;
        s.session_expiry =
            self.session_expiry
                .unwrap_or(if self.keep_session { u32::MAX } else { 0 });
        if let Some(method) = &self.auth_method {
            let Some(mechanism) = vigil_proto::scram::Mechanism::from_name(method) else {
                bail!("unknown --auth-method {method:?}: use SCRAM-SHA-256 or SCRAM-SHA-512");
            };
            if !version.is_v5() {
                bail!("--auth-method needs MQTT 5 (-V 5)");
            }
            let (Some(user), Some(pw)) = (&self.username, &self.password) else {
                bail!("--auth-method needs -u USER and -P PASSWORD");
            };
            s.scram = Some(vigil_proto::client::ScramLogin {
                mechanism,
                username: user.clone(),
                password: Bytes::from(pw.clone()),
            });
        } else {
            s.username = self.username.clone();
            s.password = self.password.clone().map(Bytes::from);
        }
        s.connect_timeout = Duration::from_secs(10);
        if let Some(topic) = &self.will_topic {
            s.will = Some(Will {
                topic: topic.clone(),
                payload: Bytes::from(self.will_payload.clone().unwrap_or_default()),
                qos: qos(self.will_qos)?,
                retain: self.will_retain,
                properties: Default::default(),
            });
        }
        Ok(o)
    }
}

/// Logs of `vigil pub`/`vigil sub` go to stderr: warnings (or `RUST_LOG`),
/// and with `-d` one line per packet sent and received, as `mosquitto_sub -d`
/// prints them (`Client vigil-sub-1 sending CONNECT`).
pub(crate) fn init_logging(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new("warn"),
    };
    if debug {
        if let Ok(d) = "vigil_client::packets=debug".parse() {
            filter = filter.add_directive(d);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
