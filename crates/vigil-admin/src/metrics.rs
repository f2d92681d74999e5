//! Prometheus text exposition (format 0.0.4), written by hand: the broker's
//! counters already exist and are read once per scrape, so a registry of
//! metric objects (prometheus-client) would either put its own atomics on the
//! message path or need a custom collector for every family; the text format
//! itself is a few lines.

use std::fmt::Write;

use vigil_broker::observe::histogram::{self, Snapshot};
use vigil_broker::observe::sys::disconnect_counters;
use vigil_broker::Reloader;
use vigil_broker::{Broker, Counters};

/// MQTT 5 reason code of each disconnect label, for the help text.
const REASON_CODES: &str = "client_disconnect=client's code, keep_alive_timeout=0x8D, \
taken_over=0x8E, protocol_error=0x81/0x82/0x95.., peer_closed=none, socket_error=none, \
store_failed=0x83, server_shutdown=0x8B, connect_timeout=none, auth_timeout=none, \
connect_refused=CONNACK code, slow_consumer=0x97, kicked=0x98, revoked=0x87, login_expired=0xA0";

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, s: &Snapshot) {
        self.family(name, "histogram", help);
        for (bound, count) in s.bounds.iter().zip(&s.cumulative) {
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {}", s.count);
        let _ = writeln!(self.0, "{name}_sum {}", s.sum);
        let _ = writeln!(self.0, "{name}_count {}", s.count);
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The authentication gate's refusals, by reason (only with `[auth]`).
fn auth_families(o: &mut Out, a: &vigil_broker::auth::AuthCounters) {
    let g = Counters::get;
    o.family(
        "vigil_auth_failures_total",
        "counter",
        "CONNECTs refused by authentication, by reason: bad_credentials=0x86, \
not_authorized=0x87 (no credentials, or refused), will_denied=0x87 (the ACL refuses the will's topic), \
banned=0x8A (too many failures from the address), no_cert_identity=0x87 (use_identity_as_username, \
certificate without the identity), reload_failed (a reload whose password file, ACL or JWT key \
did not load; the old one stays).",
    );
    for (reason, counter) in [
        ("bad_credentials", &a.connect_bad_credentials),
        ("not_authorized", &a.connect_not_authorized),
        ("will_denied", &a.connect_will_denied),
        ("banned", &a.connect_banned),
        ("no_cert_identity", &a.connect_no_identity),
        ("reload_failed", &a.reload_failures),
    ] {
        o.sample(
            "vigil_auth_failures_total",
            &[("reason", reason)],
            g(counter),
        );
    }
    o.family(
        "vigil_auth_denied_total",
        "counter",
        "Operations the ACL refused: subscribe (SUBACK 0x87), publish (PUBACK 0x87), delivery (withheld).",
    );
    for (what, counter) in [
        ("subscribe", &a.subscribe_denied),
        ("publish", &a.publish_denied),
        ("delivery", &a.delivery_denied),
    ] {
        o.sample("vigil_auth_denied_total", &[("what", what)], g(counter));
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics of `broker` (and of the TLS listeners `reloader` knows), now.
pub(crate) fn render(broker: &Broker, reloader: Option<&Reloader>) -> String {
    let c = broker.counters();
    let g = Counters::get;
    let mut o = Out(String::with_capacity(4096));
    o.family(
        "vigil_connections",
        "gauge",
        "MQTT connections open now (after CONNACK), by listener and protocol level.",
    );
    for (listener, level, n) in broker.connections_by_listener() {
        o.sample(
            "vigil_connections",
            &[("listener", &listener), ("protocol", &level.to_string())],
            n as u64,
        );
    }
    o.one(
        "vigil_connections_parked",
        "gauge",
        "Idle connections parked off their task now.",
        g(&c.connections_parked),
    );
    o.one(
        "vigil_connects_total",
        "counter",
        "Connections accepted (CONNACK success).",
        g(&c.connections_total),
    );
    o.family(
        "vigil_disconnects_total",
        "counter",
        &format!("Connections ended, by reason (MQTT 5 reason code: {REASON_CODES})."),
    );
    for (reason, counter) in disconnect_counters(c) {
        o.sample("vigil_disconnects_total", &[("reason", reason)], g(counter));
    }
    o.one(
        "vigil_accepts_delayed_total",
        "counter",
        "Connections whose accept waited for the listener's max_connection_rate.",
        g(&c.accepts_delayed),
    );
    o.one(
        "vigil_publish_throttled_total",
        "counter",
        "Times a client went over max_publish_rate / max_publish_bytes_rate and vigil paused reading it.",
        g(&c.publish_throttled),
    );
    if let Some(auth) = broker.auth() {
        auth_families(&mut o, auth.counters());
    }
    let (received, sent) = vigil_broker::observe::traffic::publishes();
    o.family(
        "vigil_messages_received_total",
        "counter",
        "PUBLISH packets received from clients, by QoS.",
    );
    for (q, n) in received.iter().enumerate() {
        o.sample(
            "vigil_messages_received_total",
            &[("qos", &q.to_string())],
            *n,
        );
    }
    o.family(
        "vigil_messages_sent_total",
        "counter",
        "Deliveries handed to client connections to send, by delivery QoS.",
    );
    for (q, n) in sent.iter().enumerate() {
        o.sample("vigil_messages_sent_total", &[("qos", &q.to_string())], *n);
    }
    o.one(
        "vigil_messages_routed_total",
        "counter",
        "Deliveries queued to subscribers (connected or not), wills and broker messages included.",
        c.messages_out.get(),
    );
    o.family(
        "vigil_messages_dropped_total",
        "counter",
        "Deliveries dropped, by cause.",
    );
    for (cause, counter) in [
        ("qos0", &c.dropped_qos0),
        ("queue_full", &c.dropped_queue_full),
        ("expired", &c.dropped_expired),
        ("too_large", &c.dropped_too_large),
    ] {
        o.sample(
            "vigil_messages_dropped_total",
            &[("cause", cause)],
            g(counter),
        );
    }
    let (bytes_in, bytes_out) = vigil_broker::observe::traffic::totals();
    o.one(
        "vigil_bytes_received_total",
        "counter",
        "Bytes read from client sockets.",
        bytes_in,
    );
    o.one(
        "vigil_bytes_sent_total",
        "counter",
        "Bytes written to client sockets.",
        bytes_out,
    );
    let sessions = broker.session_count() as u64;
    let online = g(&c.connections_current);
    o.family("vigil_sessions", "gauge", "Sessions held, by state.");
    o.sample("vigil_sessions", &[("state", "online")], online);
    o.sample(
        "vigil_sessions",
        &[("state", "offline")],
        sessions.saturating_sub(online),
    );
    o.one(
        "vigil_sessions_expired_total",
        "counter",
        "Sessions ended by their expiry interval.",
        g(&c.sessions_expired),
    );
    o.one(
        "vigil_wills_published_total",
        "counter",
        "Will messages published.",
        g(&c.wills_published),
    );
    o.one(
        "vigil_queued_messages",
        "gauge",
        "Messages waiting in session queues.",
        broker.queued_total() as u64,
    );
    o.one(
        "vigil_retained_messages",
        "gauge",
        "Retained topics.",
        broker.retained_count() as u64,
    );
    o.one(
        "vigil_subscriptions",
        "gauge",
        "Subscriptions over all sessions.",
        broker.subscription_counts().0 as u64,
    );
    let expiry = reloader
        .map(Reloader::certificate_expiry)
        .unwrap_or_default();
    if !expiry.is_empty() {
        o.family(
            "vigil_tls_certificate_expiry_seconds",
            "gauge",
            "Seconds until the serving certificate's notAfter, by TLS listener (negative: expired).",
        );
        for (listener, secs) in &expiry {
            o.sample(
                "vigil_tls_certificate_expiry_seconds",
                &[("listener", listener)],
                *secs,
            );
        }
    }
    o.one(
        "vigil_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        broker.uptime(std::time::Instant::now()).as_secs(),
    );
    o.histogram(
        "vigil_keepalive_close_lateness_seconds",
        "Keep-alive closes: close time minus the 1.5 x keep alive deadline.",
        &histogram::KEEPALIVE_LATENESS.snapshot(),
    );
    o.histogram(
        "vigil_pingresp_service_seconds",
        "PINGREQ read to PINGRESP written, running and parked connections.",
        &histogram::pingresp_snapshot(),
    );
    if let Some(store) = broker.store() {
        o.histogram(
            "vigil_store_commit_seconds",
            "Store commits: time of each (with its sync when durability = always).",
            &store.commit_latency(),
        );
        o.histogram(
            "vigil_store_commit_batch_ops",
            "Store commits: operations carried by each (group commit).",
            &store.batch_size(),
        );
    }
    o.0
}
