//! What `vigil serve` logs by default. openraft (client-id ownership) logs
//! an unreachable peer at ERROR on every retry of every replication stream
//! and vote, many lines a second for as long as a node is down, which buries
//! the lines an operator needs; its WARNs are routine (a vote or membership
//! message ignored while a group forms) and vigil logs the ownership events
//! that matter itself. The default filter takes openraft down to ERROR, and
//! `OncePerCallsite` lets each of its ERROR call sites through once per
//! `QUIET_PERIOD`. `RUST_LOG` replaces both: whoever sets
//! it gets exactly what they asked for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// The filter directives when `RUST_LOG` is unset, for base level `level`.
pub(crate) fn default_directives(level: &str) -> String {
    format!("{level},openraft=error")
}

/// Longest silence imposed on one openraft call site: one line per site
/// and period says a peer is still unreachable without a line per retry.
pub(crate) const QUIET_PERIOD: Duration = Duration::from_secs(30);

/// Lets each openraft WARN/ERROR call site log once per `QUIET_PERIOD`;
/// passes every other event untouched.
#[derive(Debug, Default)]
pub(crate) struct OncePerCallsite {
    last: Mutex<RateLimit>,
}

/// When each call site last logged: the clock comes from the caller.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    last: HashMap<Identifier, Instant>,
}

impl RateLimit {
    /// True if `site` may log at `now` (and then records it).
    pub(crate) fn allow(&mut self, site: Identifier, now: Instant) -> bool {
        match self.last.get(&site) {
            Some(&t) if now.saturating_duration_since(t) < QUIET_PERIOD => false,
            _ => {
                self.last.insert(site, now);
                true
            }
        }
    }
}

/// Whether `meta` is one of the openraft lines this filter thins out.
fn is_limited(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && *meta.level() <= Level::WARN
        && (meta.target() == "openraft" || meta.target().starts_with("openraft::"))
}

impl<S> Filter<S> for OncePerCallsite {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !is_limited(meta)
            || self
                .last
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .allow(meta.callsite(), Instant::now())
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Limited sites are decided per event; the rest always pass here.
        if is_limited(meta) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::EnvFilter;

    #[test]
    fn the_default_filter_takes_openraft_down_to_error() {
        let d = default_directives("info");
        assert_eq!(d, "info,openraft=error");
        let filter = EnvFilter::new(&d).to_string();
        assert!(filter.contains("openraft=error"), "{filter}");
    }

    /// A call site of which only the identity is used (a field, so two
    /// statics have two addresses).
    struct Site(#[allow(dead_code)] u8);
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            panic!("only the identity of a test call site is used")
        }
    }
    static A: Site = Site(1);
    static B: Site = Site(2);

    #[test]
    fn a_call_site_logs_once_per_quiet_period() {
        let t0 = Instant::now();
        let mut limit = RateLimit::default();
        let (a, b) = (Identifier(&A), Identifier(&B));
        assert!(limit.allow(a.clone(), t0));
        assert!(!limit.allow(a.clone(), t0 + Duration::from_millis(100)));
        assert!(
            limit.allow(b.clone(), t0 + Duration::from_millis(100)),
            "another site has its own period"
        );
        assert!(!limit.allow(a.clone(), t0 + QUIET_PERIOD - Duration::from_millis(1)));
        assert!(limit.allow(a.clone(), t0 + QUIET_PERIOD));
        assert!(!limit.allow(a, t0 + QUIET_PERIOD + Duration::from_secs(1)));
    }

    /// A writer into a shared buffer, for reading back what was logged.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn openraft_retry_errors_are_logged_once_and_ours_every_time() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        let buf = Buffer::default();
        let writer = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(EnvFilter::new(default_directives("info")))
            .with_filter(OncePerCallsite::default());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5 {
                tracing::error!(target: "openraft::replication", "RPCError");
                tracing::info!(target: "openraft::core", "elected");
                tracing::warn!(target: "vigil_cluster", "link down");
            }
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("RPCError").count(), 1, "{text}");
        assert_eq!(text.matches("elected").count(), 0, "{text}");
        assert_eq!(text.matches("link down").count(), 5, "{text}");
    }
}
