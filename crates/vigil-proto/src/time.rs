//! Time as the sans-IO cores see it: one moment on both clocks.
//!
//! The state machines take `now` from their caller. Most need only the
//! monotonic clock (`Instant`), but what is written to disk must be in wall
//! clock time, since an `Instant` means nothing after a restart: the broker's
//! core takes a `Clock` wherever it may persist a deadline or a message's
//! expiry, and the store converts with it. Lives here, beside `Message`
//! (whose expiry is an `Instant`), because both the broker and the store
//! need it.

use std::ops::Add;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One moment read from both clocks, to move deadlines between `Instant`s
/// (which do not survive a restart) and Unix milliseconds (which do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic now.
    pub instant: Instant,
    /// Wall-clock now, in Unix milliseconds.
    pub unix_ms: u64,
}

impl Clock {
    /// Reads both clocks. Only the I/O layers call this (the broker's tokio
    /// shell, the store as it loads); nothing in this crate does, and tests
    /// read it once for a base they then advance by hand.
    pub fn now() -> Clock {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis);
        Clock {
            instant: Instant::now(),
            unix_ms,
        }
    }

    /// `at` as Unix milliseconds.
    pub fn to_unix(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(ahead) => self.unix_ms.saturating_add(millis(ahead)),
            None => self
                .unix_ms
                .saturating_sub(millis(self.instant.duration_since(at))),
        }
    }

    /// Unix milliseconds `unix_ms` as an `Instant` (never before now minus the
    /// time the process can represent).
    pub fn to_instant(&self, unix_ms: u64) -> Instant {
        if unix_ms >= self.unix_ms {
            self.instant + Duration::from_millis(unix_ms - self.unix_ms)
        } else {
            let back = Duration::from_millis(self.unix_ms - unix_ms);
            self.instant.checked_sub(back).unwrap_or(self.instant)
        }
    }
}

/// The same moment `d` later on both clocks: how a virtual clock advances.
impl Add<Duration> for Clock {
    type Output = Clock;

    fn add(self, d: Duration) -> Clock {
        Clock {
            instant: self.instant + d,
            unix_ms: self.unix_ms.saturating_add(millis(d)),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_deadlines_between_instants_and_unix_time() {
        let c = Clock::now();
        let later = c.instant + Duration::from_secs(5);
        assert_eq!(c.to_unix(later), c.unix_ms + 5000);
        assert_eq!(c.to_instant(c.unix_ms + 5000), later);
        assert_eq!(c.to_unix(c.to_instant(c.unix_ms - 2000)), c.unix_ms - 2000);
    }

    #[test]
    fn advancing_moves_both_clocks_together() {
        let c = Clock::now();
        let d = c + Duration::from_millis(1500);
        assert_eq!(d.instant - c.instant, Duration::from_millis(1500));
        assert_eq!(d.unix_ms - c.unix_ms, 1500);
        assert_eq!(d.to_unix(c.instant), c.unix_ms);
    }
}
