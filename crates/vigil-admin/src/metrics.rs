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

/// A per-node cluster family: name, kind, help, and its value for one node.
type LinkFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&vigil_broker::LinkMetrics) -> u64,
);

/// A cluster node's members, routes and links (only with `[cluster]`).
fn cluster_families(o: &mut Out, m: &vigil_broker::ClusterMetrics, c: &Counters) {
    o.family(
        "vigil_cluster_members",
        "gauge",
        "Other cluster nodes, by state: live, leaving (said it is stopping), dead (declared dead by \
failure detection and still remembered by gossip, for an hour; earlier generations of restarted nodes included).",
    );
    let live = m.members_live.saturating_sub(m.members_leaving);
    for (state, n) in [
        ("live", live),
        ("leaving", m.members_leaving),
        ("dead", m.members_dead),
    ] {
        o.sample("vigil_cluster_members", &[("state", state)], n);
    }
    o.one(
        "vigil_cluster_local_routes",
        "gauge",
        "Distinct topic filters this node announces to the cluster.",
        m.local_routes,
    );
    let links: &[LinkFamily] = &[
        ("vigil_cluster_routes", "gauge", "Topic filters each other node announced.", |l| l.routes),
        ("vigil_cluster_link_up", "gauge", "1 while this node's link to the node is connected.", |l| u64::from(l.connected)),
        ("vigil_cluster_link_connects_total", "counter", "Connections of this node's link to the node (the first, then each reconnect).", |l| l.connects),
        ("vigil_cluster_link_frames_sent_total", "counter", "Frames written to the node (forwarded messages, retained writes; resent ones included).", |l| l.frames_out),
        ("vigil_cluster_link_bytes_sent_total", "counter", "Bytes written to the node.", |l| l.bytes_out),
        ("vigil_cluster_link_frames_acked_total", "counter", "Frames the node acknowledged.", |l| l.frames_acked),
        ("vigil_cluster_link_queued_frames", "gauge", "Frames queued for the node or waiting for its ack.", |l| l.queued),
        ("vigil_cluster_link_dropped_total", "counter", "QoS 0 messages dropped because the link to the node held 64 MiB.", |l| l.dropped_full),
        ("vigil_cluster_link_given_up_total", "counter", "Frames given up when the node left.", |l| l.given_up),
        ("vigil_cluster_link_frames_received_total", "counter", "Frames the node sent here.", |l| l.frames_in),
        ("vigil_cluster_link_bytes_received_total", "counter", "Bytes the node sent here.", |l| l.bytes_in),
    ];
    for (name, kind, help, value) in links {
        o.family(name, kind, help);
        for l in &m.links {
            o.sample(name, &[("node", &l.node_id.to_string())], value(l));
        }
    }
    for (name, kind, help, value) in [
        ("vigil_cluster_messages_forwarded_total", "counter", "Messages forwarded to other nodes (one per message and node).", m.forwarded),
        ("vigil_cluster_messages_received_total", "counter", "Messages other nodes forwarded here.", m.received),
        ("vigil_cluster_retained_sent_total", "counter", "Retained writes sent to other nodes (replication and replay to a joining node).", m.retained_out),
        ("vigil_cluster_retained_applied_total", "counter", "Retained writes from other nodes that won and were applied here.", m.retained_applied),
        ("vigil_cluster_retained_tombstones", "gauge", "Retained deletions remembered (each for an hour).", m.retained_tombstones),
        ("vigil_cluster_malformed_links_total", "counter", "Inbound links closed because the peer sent a malformed or unexpected frame.", m.malformed_links),
        ("vigil_cluster_nodes_lost_total", "counter", "Nodes dropped because they left or stopped answering.", m.nodes_lost),
        ("vigil_cluster_nodes_left_total", "counter", "Nodes that said they were stopping (graceful stop).", m.nodes_left),
        ("vigil_cluster_moved_sessions", "gauge", "Sessions handed over to other nodes whose messages this node still passes on.", m.moved_sessions),
        ("vigil_cluster_messages_passed_on_total", "counter", "Messages passed on to the node a session moved to, while the cluster learns its routes.", m.passed_on),
        ("vigil_cluster_remote_ack_waits_total", "counter", "Publishers' acknowledgements that waited for other nodes to accept forwarded QoS 1/2 messages (one per read batch).", Counters::get(&c.remote_ack_waits)),
        ("vigil_cluster_remote_ack_timeouts_total", "counter", "Of those, the ones sent after the 5 s deadline without every node's answer.", Counters::get(&c.remote_ack_timeouts)),
    ] {
        o.one(name, kind, help, value);
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
    if let Some(cluster) = broker.cluster() {
        cluster_families(&mut o, &cluster.metrics(), c);
    }
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
