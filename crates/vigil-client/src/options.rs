//! Connection options, reconnect back-off and the offline policy.

use std::time::Duration;

use bytes::Bytes;
use vigil_proto::client::ClientConfig;
use vigil_proto::{ProtocolVersion, Will};

/// How and where to connect. Non-exhaustive: build it with
/// `ConnectOptions::builder` (or `new` and then set fields), so options added
/// later are not breaking changes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The MQTT session settings (version, id, keep alive, will, ...).
    pub session: ClientConfig,
    /// Reconnect automatically with this back-off; `None` ends the client on the first loss.
    pub reconnect: Option<Backoff>,
    /// What publishes do while disconnected.
    pub offline: OfflinePolicy,
    /// Messages buffered for the application before the overflow policy applies.
    pub event_capacity: usize,
    /// Publishes accepted but not finished (queued, or in flight waiting for
    /// PUBACK/PUBCOMP) before `Client::publish` waits for one to finish.
    /// What is in flight at once is also bounded by the broker's Receive Maximum.
    pub max_pending_publishes: usize,
}

impl ConnectOptions {
    /// Options for `host:port` with default session settings.
    pub fn new(host: impl Into<String>, port: u16) -> ConnectOptions {
        ConnectOptions {
            host: host.into(),
            port,
            session: ClientConfig::default(),
            reconnect: None,
            offline: OfflinePolicy::FailFast,
            event_capacity: 1024,
            max_pending_publishes: 1024,
        }
    }

    /// A builder for `host:port`, starting from the defaults of `new`.
    pub fn builder(host: impl Into<String>, port: u16) -> ConnectOptionsBuilder {
        ConnectOptionsBuilder {
            options: ConnectOptions::new(host, port),
        }
    }
}

/// Builds `ConnectOptions`; every setter has the default of `ConnectOptions::new`.
#[derive(Debug, Clone)]
#[must_use = "call build() to get the options"]
pub struct ConnectOptionsBuilder {
    options: ConnectOptions,
}

impl ConnectOptionsBuilder {
    /// Protocol version (default MQTT 5).
    pub fn version(mut self, version: ProtocolVersion) -> Self {
        self.options.session.version = version;
        self
    }

    /// Client identifier (default empty: the broker assigns one).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.options.session.client_id = id.into();
        self
    }

    /// Clean Start / Clean Session (default true).
    pub fn clean_start(mut self, clean: bool) -> Self {
        self.options.session.clean_start = clean;
        self
    }

    /// Keep alive in seconds (default 30; 0 turns it off).
    pub fn keep_alive(mut self, seconds: u16) -> Self {
        self.options.session.keep_alive = seconds;
        self
    }

    /// How long to wait for any packet after a PINGREQ (default: the keep alive).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.options.session.ping_timeout = Some(timeout);
        self
    }

    /// How long to wait for CONNACK (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.session.connect_timeout = timeout;
        self
    }

    /// MQTT 5 Session Expiry Interval in seconds (default 0).
    pub fn session_expiry(mut self, seconds: u32) -> Self {
        self.options.session.session_expiry = seconds;
        self
    }

    /// Will message.
    pub fn will(mut self, will: Will) -> Self {
        self.options.session.will = Some(will);
        self
    }

    /// User name and password.
    pub fn credentials(mut self, username: impl Into<String>, password: Option<Bytes>) -> Self {
        self.options.session.username = Some(username.into());
        self.options.session.password = password;
        self
    }

    /// Log in with SCRAM (MQTT 5 enhanced authentication: `Mechanism::Sha256`
    /// is `SCRAM-SHA-256`) instead of sending the password. The connect fails
    /// with `ClientError::AuthenticationFailed` if the broker cannot prove it
    /// holds the credential. Needs MQTT 5.
    pub fn scram(
        mut self,
        mechanism: vigil_proto::scram::Mechanism,
        username: impl Into<String>,
        password: impl Into<Bytes>,
    ) -> Self {
        self.options.session.scram = Some(vigil_proto::client::ScramLogin {
            mechanism,
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Inbound QoS 1/2 messages accepted unacknowledged (MQTT 5 Receive Maximum, default 100).
    pub fn receive_maximum(mut self, n: u16) -> Self {
        self.options.session.receive_maximum = n;
        self
    }

    /// Largest packet accepted from the broker (MQTT 5 Maximum Packet Size).
    pub fn max_packet_size(mut self, bytes: u32) -> Self {
        self.options.session.max_packet_size = Some(bytes);
        self
    }

    /// Outbound QoS 1/2 messages in flight at most (default 100), below the
    /// broker's Receive Maximum; the whole window at MQTT 3.1.1.
    pub fn max_inflight(mut self, n: u16) -> Self {
        self.options.session.max_inflight = n;
        self
    }

    /// Reconnect with this back-off (default: no reconnect).
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.options.reconnect = Some(backoff);
        self
    }

    /// What publishes do while disconnected (default: fail fast).
    pub fn offline(mut self, policy: OfflinePolicy) -> Self {
        self.options.offline = policy;
        self
    }

    /// Events buffered for the application (default 1024).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.options.event_capacity = n;
        self
    }

    /// Publishes queued or in flight before `publish` waits (default 1024).
    pub fn max_pending_publishes(mut self, n: usize) -> Self {
        self.options.max_pending_publishes = n;
        self
    }

    /// The options.
    pub fn build(self) -> ConnectOptions {
        self.options
    }
}

/// Publishing while disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflinePolicy {
    /// Fail at once with `ClientError::NotConnected`.
    FailFast,
    /// Queue up to this many messages until the connection is back.
    Queue(usize),
}

/// Exponential back-off with jitter between reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
    /// A connection that stays up this long resets the delay to `min`.
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Delay before attempt `n` (0-based): min·2ⁿ capped at max, then ±25 % jitter
    /// so a fleet that lost its broker does not come back in one wave.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let capped = base.min(self.max);
        capped.mul_f64((0.75 + 0.5 * jitter.clamp(0.0, 1.0)).min(1.25))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_sets_what_it_says() {
        let o = ConnectOptions::builder("h", 1)
            .client_id("c")
            .keep_alive(5)
            .version(ProtocolVersion::V3_1_1)
            .max_pending_publishes(7)
            .build();
        assert_eq!((o.host.as_str(), o.port), ("h", 1));
        assert_eq!(o.session.client_id, "c");
        assert_eq!(o.session.keep_alive, 5);
        assert_eq!(o.session.version, ProtocolVersion::V3_1_1);
        assert_eq!(o.max_pending_publishes, 7);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            stable_after: Duration::from_secs(5),
        };
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(800));
        assert_eq!(b.delay(10, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(75));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(125));
    }
}
