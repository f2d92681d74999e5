//! The admin API's routes: plain functions from a request's method, path,
//! query and body to a reply, so every rule (auth, 404, 400 naming the
//! field) is the same whichever HTTP shell carries it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use vigil_broker::observe::sys::disconnect_counters;
use vigil_broker::DisconnectRecord;
use vigil_broker::{Broker, Counters};
use vigil_broker::{ClientFilter, ClientInfo, Kicked};
use vigil_broker::{ReloadReport, Reloader};
use vigil_proto::message::Message;
use vigil_proto::time::Clock;
use vigil_proto::QoS;

use crate::query;

/// The dashboard: one page, its CSS and JavaScript inline, polling the API.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) broker: Arc<Broker>,
    pub(crate) token: Option<String>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) reloader: Option<Reloader>,
}

/// An HTTP reply: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    /// A JSON error: `{"error": message, "field": field}`.
    pub(crate) fn error(status: u16, message: &str, field: Option<&str>) -> Reply {
        let mut v = json!({ "error": message });
        if let Some(f) = field {
            v["field"] = json!(f);
        }
        Reply::json(status, &v)
    }
}

/// The probes answer anyone (they tell nothing); the rest needs the token.
pub(crate) fn authorize(state: &State, path: &str, auth: Option<&str>) -> Result<(), Reply> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    // The dashboard page holds no data: it asks the API, with the token.
    if path == "/healthz" || path == "/readyz" || path == "/" {
        return Ok(());
    }
    let given = auth.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(Reply::error(
            401,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)",
            None,
        ))
    }
}

/// Compares without returning early, so response time does not tell how
/// many leading bytes of a guess were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// Routes one request.
pub(crate) fn route(state: &State, method: &str, path: &str, query: &str, body: &Bytes) -> Reply {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let params = match query::pairs(query) {
        Ok(p) => p,
        Err(field) => {
            return Reply::error(
                400,
                "query parameter is not valid percent-encoding",
                Some(&field),
            )
        }
    };
    let b = &*state.broker;
    match (method, segments.as_slice()) {
        ("GET", []) => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: DASHBOARD.as_bytes().to_vec(),
        },
        ("GET", ["healthz"]) => Reply::json(200, &json!({ "status": "ok" })),
        ("GET", ["readyz"]) => {
            if state.ready.load(Ordering::Acquire) {
                Reply::json(200, &json!({ "status": "ready" }))
            } else {
                Reply::json(503, &json!({ "status": "not ready" }))
            }
        }
        ("GET", ["metrics"]) => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: crate::metrics::render(b, state.reloader.as_ref()).into_bytes(),
        },
        ("GET", ["api", "v1", "stats"]) => Reply::json(200, &stats(b)),
        ("GET", ["api", "v1", "cluster"]) => match b.cluster() {
            Some(c) => Reply::json(200, &c.status()),
            None => Reply::error(
                404,
                "this broker is not a cluster node (no [cluster])",
                None,
            ),
        },
        ("DELETE", ["api", "v1", "cluster", "members", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return Reply::error(400, "the node id must be a positive integer", Some("id"));
            };
            match b.cluster() {
                Some(c) => match c.retire_member(id) {
                    Ok(v) => Reply::json(200, &v),
                    Err((status, why)) => Reply::error(status, &why, None),
                },
                None => Reply::error(
                    404,
                    "this broker is not a cluster node (no [cluster])",
                    None,
                ),
            }
        }
        ("GET", ["api", "v1", "clients"]) => list_clients(b, &params),
        ("GET", ["api", "v1", "clients", id]) => {
            with_id(id, |id| match b.client(&id, Instant::now()) {
                Some(c) => Reply::json(200, &client_json(&c)),
                None => no_client(&id),
            })
        }
        ("DELETE", ["api", "v1", "clients", id]) => with_id(id, |id| {
            let discard = match flag(&params, "session") {
                Ok(d) => d,
                Err(r) => return r,
            };
            match b.kick(Clock::now(), &id, discard) {
                None => no_client(&id),
                Some(k) => Reply::json(
                    200,
                    &json!({
                        "client_id": id,
                        "result": match k {
                            Kicked::Connection => "disconnected",
                            Kicked::SessionDiscarded => "session discarded",
                            Kicked::NotConnected => "not connected",
                        },
                        "session_discarded": discard,
                    }),
                ),
            }
        }),
        ("GET", ["api", "v1", "clients", id, "disconnects"]) => {
            with_id(id, |id| match b.disconnects(&id) {
                Some(list) => Reply::json(
                    200,
                    &json!({
                        "client_id": id,
                        "disconnects": list.iter().map(record_json).collect::<Vec<_>>(),
                    }),
                ),
                None => Reply::error(404, &format!("no disconnect of client {id} is known"), None),
            })
        }
        ("GET", ["api", "v1", "subscriptions"]) => {
            let subs: Vec<Value> = b
                .all_subscriptions()
                .into_iter()
                .map(|(filter, client)| json!({ "client_id": client, "filter": filter }))
                .collect();
            Reply::json(200, &json!({ "total": subs.len(), "subscriptions": subs }))
        }
        ("GET", ["api", "v1", "retained"]) => list_retained(b, &params),
        ("DELETE", ["api", "v1", "retained", ..]) => {
            let raw = path.trim_start_matches("/api/v1/retained/");
            let topic = match query::decode(raw, false) {
                Ok(t) => t,
                Err(_) => {
                    return Reply::error(400, "topic is not valid percent-encoding", Some("topic"))
                }
            };
            if let Err(e) = vigil_proto::topic::validate_topic_name(&topic) {
                return Reply::error(400, &format!("not a topic name: {e}"), Some("topic"));
            }
            if b.retained_matching(&topic, Instant::now()).is_empty() {
                return Reply::error(404, &format!("no retained message on {topic}"), None);
            }
            b.publish(
                Clock::now(),
                None,
                broker_message(topic.clone(), Bytes::new(), QoS::AtMostOnce, true),
            );
            Reply::json(200, &json!({ "topic": topic, "result": "deleted" }))
        }
        ("POST", ["api", "v1", "publish"]) => publish(b, body),
        ("POST", ["api", "v1", "reload"]) => reload(state.reloader.as_ref()),
        (_, ["healthz" | "readyz" | "metrics"])
        | (
            _,
            ["api", "v1", "stats" | "clients" | "subscriptions" | "retained" | "publish" | "reload", ..],
        ) => Reply::error(405, &format!("{method} is not allowed on {path}"), None),
        _ => Reply::error(404, &format!("no such endpoint: {path}"), None),
    }
}

fn with_id(raw: &str, f: impl FnOnce(String) -> Reply) -> Reply {
    match query::decode(raw, false) {
        Ok(id) => f(id),
        Err(_) => Reply::error(400, "client id is not valid percent-encoding", Some("id")),
    }
}

fn no_client(id: &str) -> Reply {
    Reply::error(404, &format!("no client {id}"), None)
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn flag(params: &[(String, String)], key: &str) -> Result<bool, Reply> {
    match param(params, key) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(_) => Err(Reply::error(400, "expected true or false", Some(key))),
    }
}

fn number(
    params: &[(String, String)],
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, Reply> {
    match param(params, key) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Reply::error(
                400,
                &format!("expected a number from 1 to {max}"),
                Some(key),
            )),
        },
    }
}

fn list_clients(b: &Broker, params: &[(String, String)]) -> Reply {
    const KNOWN: [&str; 8] = [
        "prefix",
        "username",
        "address",
        "listener",
        "protocol",
        "connected",
        "page",
        "limit",
    ];
    if let Some((k, _)) = params.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return Reply::error(400, "unknown query parameter", Some(k));
    }
    let parsed = (|| {
        let protocol = match param(params, "protocol") {
            None => None,
            Some("3") => Some(3),
            Some("4") => Some(4),
            Some("5") => Some(5),
            Some(_) => return Err(Reply::error(400, "expected 3, 4 or 5", Some("protocol"))),
        };
        let filter = ClientFilter {
            prefix: param(params, "prefix").map(str::to_owned),
            username: param(params, "username").map(str::to_owned),
            address: param(params, "address").map(str::to_owned),
            listener: param(params, "listener").map(str::to_owned),
            protocol,
            connected_only: flag(params, "connected")?,
        };
        let page = number(params, "page", 1, usize::MAX)?;
        let limit = number(params, "limit", 100, 1000)?;
        Ok((filter, page, limit))
    })();
    let (filter, page, limit) = match parsed {
        Ok(p) => p,
        Err(r) => return r,
    };
    let all = b.clients(&filter, Instant::now());
    let shown: Vec<Value> = all
        .iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .map(client_json)
        .collect();
    Reply::json(
        200,
        &json!({ "total": all.len(), "page": page, "limit": limit, "clients": shown }),
    )
}

/// `GET /api/v1/retained?topic=&limit=&after=`: a page of retained
/// messages in topic order; `next` is the `after` of the next page (null:
/// none), so a large store is read a page at a time without a scan per
/// page from its start.
fn list_retained(b: &Broker, params: &[(String, String)]) -> Reply {
    const KNOWN: [&str; 3] = ["topic", "limit", "after"];
    if let Some((k, _)) = params.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return Reply::error(400, "unknown query parameter", Some(k));
    }
    let filter = param(params, "topic").unwrap_or("#");
    if let Err(e) = vigil_proto::topic::validate_topic_filter(filter) {
        return Reply::error(400, &format!("not a topic filter: {e}"), Some("topic"));
    }
    let limit = match number(params, "limit", 100, 1000) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let after = param(params, "after").filter(|a| !a.is_empty());
    let (page, next) = b.retained_page(filter, after, limit, Instant::now());
    let found: Vec<Value> = page
        .iter()
        .map(|m| {
            json!({
                "topic": m.topic,
                "qos": m.qos as u8,
                "payload": String::from_utf8_lossy(&m.payload),
                "bytes": m.payload.len(),
            })
        })
        .collect();
    Reply::json(
        200,
        &json!({ "count": found.len(), "limit": limit, "next": next, "retained": found }),
    )
}

fn client_json(c: &ClientInfo) -> Value {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "client_id": c.client_id,
        "connected": c.connected,
        "address": c.peer.map(|p| p.to_string()),
        "username": c.username,
        "protocol": c.protocol,
        "keep_alive": c.keep_alive_secs,
        "connected_at_ms": c.connected_at_unix_ms,
        "connected_for_secs": c.connected_at_unix_ms.map(|t| now_ms.saturating_sub(t) / 1000),
        "queued": c.queued,
        "subscriptions": c.subscriptions,
        "persistent": c.durable,
        "parked": c.parked,
        "listener": c.listener,
        "bytes_in": c.figures.map(|f| f.bytes_in),
        "bytes_out": c.figures.map(|f| f.bytes_out),
        "packets_in": c.figures.map(|f| f.packets_in),
        "packets_out": c.figures.map(|f| f.packets_out),
        "last_packet_secs_ago": c
            .figures
            .and_then(|f| f.since_last_packet)
            .map(|d| d.as_secs_f64()),
        "inflight": c.figures.map(|f| f.inflight),
    })
}

/// A disconnect record as JSON (also what `vigil ctl why` reads).
pub(crate) fn record_json(r: &DisconnectRecord) -> Value {
    json!({
        "at_ms": r.at_unix_ms,
        "reason": r.reason,
        "detail": r.detail,
        "reason_code": r.reason_code,
        "keep_alive": r.keep_alive_secs,
        "silent_secs": r.silent_secs,
        "will": r.will,
        "address": r.peer,
        "connected_secs": r.connected_secs,
        "bytes_in": r.figures.bytes_in,
        "bytes_out": r.figures.bytes_out,
        "packets_in": r.figures.packets_in,
        "packets_out": r.figures.packets_out,
        "inflight": r.figures.inflight,
    })
}

fn stats(b: &Broker) -> Value {
    let c = b.counters();
    let g = Counters::get;
    let disconnects: serde_json::Map<String, Value> = disconnect_counters(c)
        .iter()
        .map(|(reason, counter)| ((*reason).to_owned(), json!(g(counter))))
        .collect();
    let sessions = b.session_count() as u64;
    let connected = g(&c.connections_current);
    let packets = vigil_broker::observe::traffic::packet_totals();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": b.uptime(Instant::now()).as_secs(),
        "connections": connected,
        "connections_parked": g(&c.connections_parked),
        "connects_total": g(&c.connections_total),
        "sessions": sessions,
        "sessions_offline": sessions.saturating_sub(connected),
        "sessions_expired": g(&c.sessions_expired),
        "messages_received": c.messages_in.get(),
        "messages_sent": c.messages_out.get(),
        "messages_dropped": {
            "qos0": g(&c.dropped_qos0),
            "queue_full": g(&c.dropped_queue_full),
            "expired": g(&c.dropped_expired),
            "too_large": g(&c.dropped_too_large),
        },
        "wills_published": g(&c.wills_published),
        "bytes_received": vigil_broker::observe::traffic::totals().0,
        "bytes_sent": vigil_broker::observe::traffic::totals().1,
        "packets_received": packets.packets_in,
        "packets_sent": packets.packets_out,
        "disconnects": disconnects,
        "retained_messages": b.retained_count(),
        "subscriptions": b.subscription_counts().0,
        "queued_messages": b.queued_total(),
    })
}

fn broker_message(topic: String, payload: Bytes, qos: QoS, retain: bool) -> Message {
    Message {
        topic,
        payload,
        qos,
        retain,
        properties: None,
        expires_at: None,
    }
}

/// `POST /api/v1/publish` `{"topic": .., "payload": "..", "qos": 0, "retain": false}`.
fn publish(b: &Broker, body: &Bytes) -> Reply {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Reply::error(400, "expected a JSON object", Some("body")),
        Err(e) => return Reply::error(400, &format!("body is not JSON: {e}"), Some("body")),
    };
    let Some(topic) = v.get("topic").and_then(Value::as_str) else {
        return Reply::error(400, "a string is required", Some("topic"));
    };
    if let Err(e) = vigil_proto::topic::validate_topic_name(topic) {
        return Reply::error(400, &format!("not a topic name: {e}"), Some("topic"));
    }
    let payload = match v.get("payload") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) => Bytes::from(s.clone().into_bytes()),
        Some(_) => return Reply::error(400, "expected a string", Some("payload")),
    };
    let qos = match v.get("qos").map(Value::as_u64) {
        None => QoS::AtMostOnce,
        Some(Some(0)) => QoS::AtMostOnce,
        Some(Some(1)) => QoS::AtLeastOnce,
        Some(Some(2)) => QoS::ExactlyOnce,
        Some(_) => return Reply::error(400, "expected 0, 1 or 2", Some("qos")),
    };
    let retain = match v.get("retain") {
        None => false,
        Some(Value::Bool(r)) => *r,
        Some(_) => return Reply::error(400, "expected true or false", Some("retain")),
    };
    let message = broker_message(topic.to_owned(), payload, qos, retain);
    let matched = b.publish(Clock::now(), None, message);
    Reply::json(200, &json!({ "topic": topic, "matched": matched }))
}

/// `POST /api/v1/reload`: what SIGHUP does. 200 when every file was
/// reloaded; else 400 (a file read but wrong: its file, line and cause) or
/// 500 (a file that could not be read), the failed parts keeping their old
/// contents in force.
fn reload(reloader: Option<&Reloader>) -> Reply {
    let report = match reloader {
        Some(r) => r.reload("POST /api/v1/reload"),
        None => ReloadReport::default(),
    };
    let reloaded: Vec<Value> = report
        .items
        .iter()
        .filter(|i| i.failure.is_none())
        .map(|i| json!({ "what": i.what, "revoked": i.revoked }))
        .collect();
    let failed: Vec<Value> = report
        .items
        .iter()
        .filter_map(|i| {
            let f = i.failure.as_ref()?;
            Some(json!({
                "what": i.what,
                "file": f.file.as_ref().map(|p| p.display().to_string()),
                "line": f.line,
                "cause": f.cause,
            }))
        })
        .collect();
    if report.ok() {
        let result = if reloaded.is_empty() {
            "nothing to reload"
        } else {
            "reloaded"
        };
        return Reply::json(
            200,
            &json!({ "result": result, "reloaded": reloaded, "failed": failed }),
        );
    }
    let unreadable = report
        .items
        .iter()
        .any(|i| i.failure.as_ref().is_some_and(|f| f.unreadable));
    Reply::json(
        if unreadable { 500 } else { 400 },
        &json!({
            "error": "reload failed; what failed keeps its previous contents in force",
            "reloaded": reloaded,
            "failed": failed,
        }),
    )
}
