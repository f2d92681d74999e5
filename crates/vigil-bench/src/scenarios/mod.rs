//! The scenarios. Each returns a `Report` or the error that ended it.

mod conn;
mod expiry;
mod ping;
mod slow_sub;
mod throughput;

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::progress::Progress;
use crate::{BenchError, Common, Report, Target};

/// Message flow settings shared by the throughput scenarios.
#[derive(Debug, Clone, Args)]
pub struct Flow {
    /// QoS of publishes and subscriptions.
    #[arg(short = 'q', long = "qos", default_value_t = 0)]
    pub qos: u8,
    /// Payload size in bytes (at least 20: sequence and timestamp).
    #[arg(short = 's', long = "payload", default_value_t = 64)]
    pub payload: usize,
    /// Open loop: messages per second per publisher. Default: closed loop, as fast as the broker takes them.
    #[arg(long = "rate")]
    pub rate: Option<f64>,
    /// Closed loop: QoS 1/2 messages in flight per publisher.
    #[arg(long = "inflight", default_value_t = 64)]
    pub inflight: usize,
    /// Subscribers hold persistent sessions (MQTT 5 session expiry 300 s;
    /// 3.1.1 clean session 0), so a durable broker stores what it queues.
    #[arg(long = "persistent")]
    pub persistent: bool,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N connections at a target rate and hold them.
    Conn {
        /// Connections.
        #[arg(short = 'n', long = "connections", default_value_t = 1000)]
        connections: usize,
        /// Connections opened per second.
        #[arg(long = "rate", default_value_t = 2000.0)]
        rate: f64,
        /// Keep alive in seconds the connections announce; they never ping,
        /// so hold them for less than 1.5 × this. 0 (off) is refused by some
        /// brokers (rumqttd).
        #[arg(short = 'k', long = "keep-alive", default_value_t = 0)]
        keep_alive: u16,
    },
    /// N idle clients pinging every K seconds, optionally beside a publish load.
    Ping {
        /// Clients.
        #[arg(short = 'n', long = "clients", default_value_t = 1000)]
        clients: usize,
        /// Keep alive (and ping interval) in seconds.
        #[arg(short = 'k', long = "keep-alive", default_value_t = 5)]
        keep_alive: u16,
        /// QoS 0 messages per second published beside the pings.
        #[arg(long = "publish-rate")]
        publish_rate: Option<f64>,
    },
    /// P publishers → 1 subscriber.
    FanIn {
        /// Publishers.
        #[arg(short = 'n', long = "publishers", default_value_t = 4)]
        publishers: usize,
        /// Message flow.
        #[command(flatten)]
        flow: Flow,
    },
    /// 1 publisher → N subscribers.
    FanOut {
        /// Subscribers.
        #[arg(short = 'n', long = "subscribers", default_value_t = 100)]
        subscribers: usize,
        /// Message flow.
        #[command(flatten)]
        flow: Flow,
    },
    /// N publisher/subscriber pairs.
    Pairs {
        /// Pairs.
        #[arg(short = 'n', long = "pairs", default_value_t = 100)]
        pairs: usize,
        /// Message flow.
        #[command(flatten)]
        flow: Flow,
    },
    /// M clients with keep alive K and a will go silent (half-open): when are they closed and their wills sent?
    Expiry {
        /// Clients.
        #[arg(short = 'n', long = "clients", default_value_t = 1000)]
        clients: usize,
        /// Keep alive in seconds.
        #[arg(short = 'k', long = "keep-alive", default_value_t = 5)]
        keep_alive: u16,
    },
    /// Publishers flood a subscriber that reads slowly, beside healthy pinging clients.
    SlowSub {
        /// Publishers.
        #[arg(long = "publishers", default_value_t = 2)]
        publishers: usize,
        /// Healthy clients that only ping.
        #[arg(long = "healthy", default_value_t = 100)]
        healthy: usize,
        /// Keep alive of every client, seconds.
        #[arg(short = 'k', long = "keep-alive", default_value_t = 2)]
        keep_alive: u16,
        /// Bytes per second the slow subscriber reads.
        #[arg(long = "read-rate", default_value_t = 16_384)]
        read_rate: usize,
        /// Payload size in bytes.
        #[arg(short = 's', long = "payload", default_value_t = 1024)]
        payload: usize,
    },
}

pub(crate) async fn run(
    scenario: &Scenario,
    target: &Target,
    common: &Common,
    duration: Duration,
    progress: &Progress,
) -> Result<Report, BenchError> {
    let over_tls = matches!(
        scenario,
        Scenario::Conn { .. }
            | Scenario::FanIn { .. }
            | Scenario::FanOut { .. }
            | Scenario::Pairs { .. }
    );
    if (target.tls.is_some() || target.ws_url.is_some()) && !over_tls {
        return Err(BenchError::Args(
            "--tls and --ws run the conn, fan-in, fan-out and pairs scenarios".into(),
        ));
    }
    match scenario {
        Scenario::Conn {
            connections,
            rate,
            keep_alive,
        } => {
            let plan = conn::Plan {
                connections: *connections,
                rate: *rate,
                keep_alive: *keep_alive,
            };
            conn::run(target, common, duration, progress, plan).await
        }
        Scenario::Ping {
            clients,
            keep_alive,
            publish_rate,
        } => {
            ping::run(
                target,
                duration,
                progress,
                *clients,
                *keep_alive,
                *publish_rate,
            )
            .await
        }
        Scenario::FanIn { publishers, flow } => {
            throughput::run(
                target,
                common,
                duration,
                progress,
                throughput::Shape::FanIn(*publishers),
                flow,
            )
            .await
        }
        Scenario::FanOut { subscribers, flow } => {
            throughput::run(
                target,
                common,
                duration,
                progress,
                throughput::Shape::FanOut(*subscribers),
                flow,
            )
            .await
        }
        Scenario::Pairs { pairs, flow } => {
            throughput::run(
                target,
                common,
                duration,
                progress,
                throughput::Shape::Pairs(*pairs),
                flow,
            )
            .await
        }
        Scenario::Expiry {
            clients,
            keep_alive,
        } => expiry::run(target, progress, *clients, *keep_alive).await,
        Scenario::SlowSub {
            publishers,
            healthy,
            keep_alive,
            read_rate,
            payload,
        } => {
            slow_sub::run(
                target,
                common,
                duration,
                progress,
                *publishers,
                *healthy,
                *keep_alive,
                *read_rate,
                *payload,
            )
            .await
        }
    }
}

/// Unique client ids per run, so runs against the same broker never take each other over.
pub(crate) fn client_id(role: &str, i: usize) -> String {
    use std::sync::OnceLock;
    static RUN: OnceLock<u32> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0))
    });
    format!("bench-{run:08x}-{role}-{i}")
}
