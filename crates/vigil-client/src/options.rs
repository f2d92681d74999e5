//! Connection options, reconnect back-off and the offline policy.

use std::time::Duration;

use vigil_proto::client::ClientConfig;

/// How and where to connect.
#[derive(Debug, Clone)]
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
        }
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
