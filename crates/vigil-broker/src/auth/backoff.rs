//! Refusing an address that keeps guessing: after `max_failures` failed
//! logins within `window`, its CONNECTs are refused (CONNACK 0x8A "Banned";
//! 3.1.1: 5) until `ban` has passed. Pure deadline logic on an injected
//! clock; memory is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses tracked at most; past this, entries whose window is over are
/// swept, and if none are, new addresses are not tracked until some are.
const MAX_TRACKED: usize = 65_536;

/// The back-off rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Failed logins in one window that ban the address (0: never).
    pub max_failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long a banned address is refused.
    pub ban: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
}

/// Failed logins per source address.
#[derive(Debug)]
pub struct FailureTracker {
    policy: BackoffPolicy,
    entries: HashMap<IpAddr, Entry>,
}

impl FailureTracker {
    /// A tracker applying `policy`.
    pub fn new(policy: BackoffPolicy) -> FailureTracker {
        FailureTracker {
            policy,
            entries: HashMap::new(),
        }
    }

    /// When `ip`'s ban ends, if it is banned at `now`.
    pub fn banned_until(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        self.entries
            .get(&ip)
            .and_then(|e| e.banned_until)
            .filter(|&until| until > now)
    }

    /// Counts a failed login from `ip`; true if this one bans it.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.policy.max_failures == 0 {
            return false;
        }
        if self.entries.len() >= MAX_TRACKED && !self.entries.contains_key(&ip) {
            let policy = self.policy;
            self.entries.retain(|_, e| !expired(e, now, policy));
            if self.entries.len() >= MAX_TRACKED {
                return false;
            }
        }
        let policy = self.policy;
        let entry = self.entries.entry(ip).or_insert(Entry {
            failures: 0,
            window_start: now,
            banned_until: None,
        });
        if expired(entry, now, policy) {
            *entry = Entry {
                failures: 0,
                window_start: now,
                banned_until: None,
            };
        }
        entry.failures += 1;
        if entry.failures >= policy.max_failures && entry.banned_until.is_none() {
            entry.banned_until = Some(now + policy.ban);
            return true;
        }
        false
    }

    /// A successful login from `ip` clears its count.
    pub fn succeeded(&mut self, ip: IpAddr) {
        if !self.entries.is_empty() {
            self.entries.remove(&ip);
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

/// The entry can start over: its ban has ended, or (never banned) its
/// window is over.
fn expired(e: &Entry, now: Instant, policy: BackoffPolicy) -> bool {
    match e.banned_until {
        Some(until) => until <= now,
        None => now.saturating_duration_since(e.window_start) >= policy.window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BackoffPolicy = BackoffPolicy {
        max_failures: 3,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(30),
    };

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn the_third_failure_in_a_window_bans_for_the_ban_time() {
        let t0 = Instant::now();
        let mut t = FailureTracker::new(POLICY);
        assert!(!t.failed(ip(1), t0));
        assert!(!t.failed(ip(1), t0 + Duration::from_secs(10)));
        assert_eq!(t.banned_until(ip(1), t0 + Duration::from_secs(10)), None);
        assert!(t.failed(ip(1), t0 + Duration::from_secs(20)));
        let until = t0 + Duration::from_secs(50);
        assert_eq!(
            t.banned_until(ip(1), t0 + Duration::from_secs(21)),
            Some(until)
        );
        // Other addresses are not affected.
        assert_eq!(t.banned_until(ip(2), t0 + Duration::from_secs(21)), None);
        // The ban ends, and the count starts over.
        assert_eq!(t.banned_until(ip(1), until), None);
        assert!(!t.failed(ip(1), until));
        assert!(!t.failed(ip(1), until + Duration::from_secs(1)));
        assert!(t.failed(ip(1), until + Duration::from_secs(2)));
    }

    #[test]
    fn failures_spread_over_windows_never_ban_and_success_clears() {
        let t0 = Instant::now();
        let mut t = FailureTracker::new(POLICY);
        for k in 0..10u64 {
            // Two failures a window, every window.
            let w = t0 + Duration::from_secs(61 * k);
            assert!(!t.failed(ip(1), w));
            assert!(!t.failed(ip(1), w + Duration::from_secs(1)));
        }
        let t1 = t0 + Duration::from_secs(10_000);
        assert!(!t.failed(ip(3), t1));
        assert!(!t.failed(ip(3), t1));
        t.succeeded(ip(3));
        assert!(!t.failed(ip(3), t1), "the count started over");
    }

    #[test]
    fn zero_max_failures_disables_it_and_memory_is_bounded() {
        let t0 = Instant::now();
        let mut off = FailureTracker::new(BackoffPolicy {
            max_failures: 0,
            ..POLICY
        });
        for _ in 0..10 {
            assert!(!off.failed(ip(1), t0));
        }
        assert_eq!(off.tracked(), 0);
        let mut t = FailureTracker::new(POLICY);
        for n in 0..(MAX_TRACKED as u32 + 10) {
            t.failed(IpAddr::from(n.to_be_bytes()), t0);
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
        // Once their windows are over, new addresses are tracked again.
        t.failed(ip(250), t0 + Duration::from_secs(61));
        assert_eq!(t.tracked(), 1);
    }
}
