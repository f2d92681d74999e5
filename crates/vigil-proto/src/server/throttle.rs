//! Rate limits on a clock the caller passes in: the token bucket both the
//! broker's accept loops (`max_connection_rate`) and each connection's
//! inbound PUBLISHes (`max_publish_rate`, `max_publish_bytes_rate`) use.
//!
//! Over its publish limit a connection is not refused and nothing is
//! dropped: the driver stops reading its socket (TCP then slows the client
//! down) until the bucket has room again. That pause is vigil's doing, so
//! the keep-alive deadline does not run during it (docs/keepalive.md, broker
//! rule 11).

use std::time::{Duration, Instant};

/// The longest burst a bucket lets through at once: one second's worth.
pub const BURST: Duration = Duration::from_secs(1);

/// A token bucket holding one second's worth of `rate` units, refilled at
/// `rate` a second, kept as the time its level next reaches full (GCRA): one
/// `Instant`, no background refill. A full bucket lets `rate` units through
/// at once; after that the average is held at `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Nanoseconds of refill one unit costs (1e9 / rate).
    unit_nanos: u64,
    /// When the bucket would be full again, given what has been taken.
    full_at: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` units a second (`rate` at least 1).
    pub fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            unit_nanos: 1_000_000_000 / u64::from(rate.max(1)),
            full_at: now,
        }
    }

    fn cost(&self, units: u64) -> Duration {
        Duration::from_nanos(units.saturating_mul(self.unit_nanos))
    }

    /// When `units` may be taken without going over (None: now).
    pub fn ready_at(&self, now: Instant, units: u64) -> Option<Instant> {
        let after = self.full_at.max(now) + self.cost(units);
        // `after - BURST` only once it lies beyond `now + BURST`: never
        // earlier than `now`, so it cannot underflow the clock.
        (after > now + BURST).then(|| after - BURST)
    }

    /// Takes `units` at `now`, whether or not there was room: what was
    /// already read must be counted. See [`TokenBucket::over_until`].
    pub fn take(&mut self, now: Instant, units: u64) {
        self.full_at = self.full_at.max(now) + self.cost(units);
    }

    /// If more was taken than the bucket held, when it is back within its
    /// limit (the taker waits until then).
    pub fn over_until(&self, now: Instant) -> Option<Instant> {
        (self.full_at > now + BURST).then(|| self.full_at - BURST)
    }
}

/// Per-client limits on inbound PUBLISHes (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishRateLimit {
    /// PUBLISH packets a second.
    pub messages: u32,
    /// PUBLISH bytes (whole packets, as sent) a second.
    pub bytes: u32,
}

impl PublishRateLimit {
    /// True when either limit is set.
    pub fn is_set(&self) -> bool {
        self.messages > 0 || self.bytes > 0
    }
}

/// One connection's publish buckets and whether its reading is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishThrottle {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    /// Reading stops until then; None: reading.
    paused_until: Option<Instant>,
}

impl PublishThrottle {
    /// Full buckets for `limit`, or None when it sets no limit.
    pub(crate) fn new(limit: PublishRateLimit, now: Instant) -> Option<Box<PublishThrottle>> {
        limit.is_set().then(|| {
            Box::new(PublishThrottle {
                messages: (limit.messages > 0).then(|| TokenBucket::new(limit.messages, now)),
                bytes: (limit.bytes > 0).then(|| TokenBucket::new(limit.bytes, now)),
                paused_until: None,
            })
        })
    }

    /// Counts a PUBLISH of `len` bytes read at `now`; returns true if
    /// reading must now pause (it was not paused before).
    pub(crate) fn charge(&mut self, now: Instant, len: usize) -> bool {
        let mut until = None;
        if let Some(b) = &mut self.messages {
            b.take(now, 1);
            until = until.max(b.over_until(now));
        }
        if let Some(b) = &mut self.bytes {
            b.take(now, len as u64);
            until = until.max(b.over_until(now));
        }
        let started = until.is_some() && self.paused_until.is_none();
        if until.is_some() {
            self.paused_until = until.max(self.paused_until);
        }
        started
    }

    /// Until when reading is paused.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends the pause if it is over by `now`; returns true if it ended.
    pub(crate) fn resume_if_due(&mut self, now: Instant) -> bool {
        match self.paused_until {
            Some(at) if now >= at => {
                self.paused_until = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_lets_one_seconds_worth_through_then_holds_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20, t0);
        for i in 0..20 {
            assert_eq!(b.ready_at(t0, 1), None, "take {i} of the burst");
            b.take(t0, 1);
        }
        assert_eq!(b.ready_at(t0, 1), Some(t0 + ms(50)), "one unit per 50 ms");
        b.take(t0 + ms(50), 1);
        assert_eq!(b.ready_at(t0 + ms(50), 1), Some(t0 + ms(100)));
        // Idle for a second: full again, no more.
        let t1 = t0 + ms(2000);
        for _ in 0..20 {
            assert_eq!(b.ready_at(t1, 1), None);
            b.take(t1, 1);
        }
        assert!(b.ready_at(t1, 1).is_some());
    }

    #[test]
    fn taking_more_than_there_is_makes_a_debt_paid_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert_eq!(b.over_until(t0), None);
        b.take(t0, 3000); // a packet of 3 s' worth
        assert_eq!(b.over_until(t0), Some(t0 + ms(2000)));
        assert_eq!(b.over_until(t0 + ms(2000)), None);
    }

    #[test]
    fn publish_throttle_pauses_over_either_limit_and_resumes_on_time() {
        let t0 = Instant::now();
        let limit = PublishRateLimit {
            messages: 10,
            bytes: 0,
        };
        let mut t = PublishThrottle::new(limit, t0).unwrap();
        for _ in 0..10 {
            assert!(!t.charge(t0, 100));
        }
        assert!(t.charge(t0, 100), "the 11th pauses");
        assert_eq!(t.paused_until(), Some(t0 + ms(100)));
        assert!(!t.resume_if_due(t0 + ms(99)));
        assert!(t.resume_if_due(t0 + ms(100)));
        assert_eq!(t.paused_until(), None);

        let bytes = PublishRateLimit {
            messages: 0,
            bytes: 1000,
        };
        let mut t = PublishThrottle::new(bytes, t0).unwrap();
        assert!(t.charge(t0, 1500), "1.5 s of bytes at once");
        assert_eq!(t.paused_until(), Some(t0 + ms(500)));
        assert!(PublishThrottle::new(PublishRateLimit::default(), t0).is_none());
    }

    fn publish(payload: &'static [u8]) -> crate::Packet {
        crate::Packet::Publish(crate::Publish {
            topic: "t".into(),
            payload: bytes::Bytes::from_static(payload),
            ..crate::Publish::default()
        })
    }

    /// docs/keepalive.md, broker rule 11: while vigil does not read a
    /// throttled client, the client is never closed for keep alive, and the
    /// deadline counts again from the moment vigil reads again.
    #[test]
    fn a_throttled_client_is_not_closed_for_keep_alive_while_vigil_does_not_read() {
        use super::super::tests::connected;
        use super::super::{ServerConfig, ServerEvent};
        let t0 = Instant::now();
        let packet = publish(&[7u8; 300]);
        let crate::Packet::Publish(p) = &packet else {
            unreachable!()
        };
        let len = p.encoded_len(crate::ProtocolVersion::V5) as u32;
        // One packet is three seconds' worth of bytes: reading pauses for
        // two, longer than 1.5 x K with K = 1 s.
        let mut c = connected(ServerConfig::default(), crate::ProtocolVersion::V5, 1, t0);
        c.limit_publish_rate(
            PublishRateLimit {
                messages: 0,
                bytes: len / 3,
            },
            t0,
        );
        assert_eq!(c.poll_timeout(), Some(t0 + ms(1500)));
        c.handle_packet(t0, packet);
        assert!(matches!(c.poll_event(), Some(ServerEvent::Publish(_))));
        assert!(c.reading_paused());
        let resume = c.poll_timeout().unwrap();
        assert!(
            resume >= t0 + ms(1990) && resume <= t0 + ms(2010),
            "the pause, not the keep-alive deadline, is next: {:?}",
            resume - t0
        );
        assert!(!c.can_park(), "a paused connection keeps its task");
        // Far past 1.5 x K of silence, but vigil was not reading: still open.
        c.handle_timeout(t0 + ms(1500));
        c.handle_timeout(resume - ms(1));
        assert!(!c.is_closed());
        assert!(c.reading_paused());
        // Reading resumes; the deadline restarts from there.
        c.handle_timeout(resume);
        assert!(!c.reading_paused());
        assert_eq!(c.poll_timeout(), Some(resume + ms(1500)));
        c.handle_timeout(resume + ms(1499));
        assert!(!c.is_closed());
        // Really silent now: closed at exactly 1.5 x K after the resume.
        c.handle_timeout(resume + ms(1500));
        assert!(c.is_closed());
        let closed = loop {
            match c.poll_event() {
                Some(ServerEvent::Closed(closed)) => break closed,
                Some(_) => continue,
                None => panic!("no Closed event"),
            }
        };
        assert_eq!(
            closed.reason.to_string(),
            "keep alive expired after 1.500 s of silence with K = 1 s"
        );
    }

    #[test]
    fn a_client_under_its_rate_is_never_paused() {
        use super::super::tests::connected;
        use super::super::ServerConfig;
        let t0 = Instant::now();
        let mut c = connected(ServerConfig::default(), crate::ProtocolVersion::V5, 1, t0);
        c.limit_publish_rate(
            PublishRateLimit {
                messages: 100,
                bytes: 0,
            },
            t0,
        );
        // 50 a second for 10 s: under 100/s, never paused, never expired.
        for i in 0..500 {
            let now = t0 + ms(20 * i);
            c.handle_packet(now, publish(b"x"));
            assert!(!c.reading_paused(), "message {i}");
            c.handle_timeout(now);
            assert!(!c.is_closed());
        }
    }
}
