//! Keep-alive negotiation (docs/keepalive.md, broker rule 3) and the
//! expiry deadline (rule 1: 1.5 × K after the last complete inbound packet).

use std::time::{Duration, Instant};

use crate::{ProtocolVersion, ReasonCode};

/// Operator limits on the keep alive a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlivePolicy {
    /// Smallest accepted value, seconds.
    pub min: u16,
    /// Largest accepted value, seconds.
    pub max: u16,
    /// Whether 0 (keep alive off) is accepted.
    pub allow_zero: bool,
    /// For 3.1/3.1.1 clients outside the limits: refuse (true) or accept their value (false).
    pub refuse_v3_out_of_range: bool,
}

impl Default for KeepAlivePolicy {
    /// Every value accepted, 0 included: a broker must not break fleets by default.
    fn default() -> Self {
        KeepAlivePolicy {
            min: 0,
            max: u16::MAX,
            allow_zero: true,
            refuse_v3_out_of_range: false,
        }
    }
}

/// What the broker does with a client's requested keep alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveDecision {
    /// Use this value; `announce` says whether CONNACK carries Server Keep Alive.
    Use {
        /// Effective keep alive in seconds.
        seconds: u16,
        /// MQTT 5: send Server Keep Alive (0x13) because the value differs from the request.
        announce: bool,
    },
    /// Refuse the connection with this CONNACK code (3.1.1 clients only).
    Refuse(ReasonCode),
}

impl KeepAlivePolicy {
    /// Applies the limits to `requested` for a client of `version`.
    pub fn decide(&self, requested: u16, version: ProtocolVersion) -> KeepAliveDecision {
        let wanted = if requested == 0 {
            if self.allow_zero {
                0
            } else {
                self.max.max(self.min.max(1))
            }
        } else {
            requested.clamp(self.min.max(1), self.max.max(1))
        };
        if wanted == requested {
            return KeepAliveDecision::Use {
                seconds: requested,
                announce: false,
            };
        }
        if version.is_v5() {
            KeepAliveDecision::Use {
                seconds: wanted,
                announce: true,
            }
        } else if self.refuse_v3_out_of_range {
            // 3.1.1 has no keep-alive refusal code; 0x02 (identifier rejected)
            // is what the keep-alive rules ask for, with a log line saying why.
            KeepAliveDecision::Refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
        } else {
            // A 3.1.1 client cannot learn another value: shortening it would kill it.
            KeepAliveDecision::Use {
                seconds: requested,
                announce: false,
            }
        }
    }
}

/// The keep-alive timer of one connection: one deadline, moved only by
/// inbound activity, and suspended while the broker itself does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeepAliveTimer {
    keep_alive: Duration,
    last_activity: Instant,
}

impl KeepAliveTimer {
    pub(crate) fn new(seconds: u16, now: Instant) -> KeepAliveTimer {
        KeepAliveTimer {
            keep_alive: Duration::from_secs(u64::from(seconds)),
            last_activity: now,
        }
    }

    /// The broker reads again at `now` after a pause (publish rate limit):
    /// silence counts from here, as if the client had just sent something
    /// (it may have: it is in the socket, unread).
    pub(crate) fn reading_resumed(&mut self, now: Instant) {
        self.touch(now);
    }

    /// The deadline, or none while the broker is not reading the client
    /// (`reading_paused`): that silence is not the client's (rule 11).
    pub(crate) fn deadline_reading(&self, reading_paused: bool) -> Option<Instant> {
        if reading_paused {
            None
        } else {
            self.deadline()
        }
    }

    /// Inbound activity: a complete packet, or bytes of one still arriving.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_activity = self.last_activity.max(now);
    }

    /// 1.5 × K after the last activity; `None` when keep alive is off.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.keep_alive.is_zero() {
            None
        } else {
            Some(self.last_activity + self.keep_alive * 3 / 2)
        }
    }

    pub(crate) fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    pub(crate) fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_activity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolVersion::{V3_1_1, V5};

    fn limits(min: u16, max: u16, allow_zero: bool, refuse: bool) -> KeepAlivePolicy {
        KeepAlivePolicy {
            min,
            max,
            allow_zero,
            refuse_v3_out_of_range: refuse,
        }
    }

    #[test]
    fn default_accepts_every_value_including_zero() {
        let p = KeepAlivePolicy::default();
        for k in [0, 1, 5, 60, 65535] {
            for v in [V3_1_1, V5] {
                assert_eq!(
                    p.decide(k, v),
                    KeepAliveDecision::Use {
                        seconds: k,
                        announce: false
                    }
                );
            }
        }
    }

    #[test]
    fn v5_is_clamped_and_told() {
        let p = limits(10, 60, false, false);
        assert_eq!(
            p.decide(5, V5),
            KeepAliveDecision::Use {
                seconds: 10,
                announce: true
            }
        );
        assert_eq!(
            p.decide(600, V5),
            KeepAliveDecision::Use {
                seconds: 60,
                announce: true
            }
        );
        assert_eq!(
            p.decide(0, V5),
            KeepAliveDecision::Use {
                seconds: 60,
                announce: true
            }
        );
        assert_eq!(
            p.decide(30, V5),
            KeepAliveDecision::Use {
                seconds: 30,
                announce: false
            }
        );
    }

    #[test]
    fn v311_out_of_range_refused_or_accepted_by_policy() {
        let refuse = limits(10, 60, false, true);
        let refused = KeepAliveDecision::Refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        assert_eq!(refuse.decide(600, V3_1_1), refused);
        assert_eq!(refuse.decide(0, V3_1_1), refused);
        assert_eq!(
            refuse.decide(30, V3_1_1),
            KeepAliveDecision::Use {
                seconds: 30,
                announce: false
            }
        );
        let accept = limits(10, 60, false, false);
        assert_eq!(
            accept.decide(600, V3_1_1),
            KeepAliveDecision::Use {
                seconds: 600,
                announce: false
            }
        );
    }

    #[test]
    fn deadline_is_one_and_a_half_keep_alive_after_last_activity() {
        let t0 = Instant::now();
        let mut t = KeepAliveTimer::new(5, t0);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_millis(7500)));
        t.touch(t0 + Duration::from_secs(3));
        assert_eq!(t.deadline(), Some(t0 + Duration::from_millis(10_500)));
        assert_eq!(KeepAliveTimer::new(0, t0).deadline(), None);
    }

    #[test]
    fn no_deadline_runs_while_the_broker_does_not_read() {
        let t0 = Instant::now();
        let mut t = KeepAliveTimer::new(1, t0);
        assert_eq!(t.deadline_reading(true), None);
        // Paused for 10 s, far beyond 1.5 x K: the deadline restarts at the resume.
        t.reading_resumed(t0 + Duration::from_secs(10));
        assert_eq!(
            t.deadline_reading(false),
            Some(t0 + Duration::from_millis(11_500))
        );
    }
}
