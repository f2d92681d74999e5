//! `conn`: open N connections at a target rate and hold them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::client_id;
use crate::conn::{connect_packet, BenchConn};
use crate::measure::{Latency, ProcSample};
use crate::progress::Progress;
use crate::{BenchError, Common, Report, Target};

/// Broker CPU and RSS over a window, as JSON (null fields without --broker-pid).
pub(crate) fn broker_usage(
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    secs: f64,
) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => json!({
            "cpu_percent": 100.0 * (a.cpu_secs - b.cpu_secs) / secs.max(0.001),
            "cpu_secs": a.cpu_secs - b.cpu_secs,
            "rss_before_bytes": b.rss_bytes,
            "rss_after_bytes": a.rss_bytes,
        }),
        _ => Value::Null,
    }
}

/// The human line for a `broker_usage` object (None when it is null: no
/// --broker-pid, or the process could not be read).
pub(crate) fn broker_usage_line(usage: &Value, delivered: Option<u64>) -> Option<String> {
    let percent = usage["cpu_percent"].as_f64()?;
    let cpu = usage["cpu_secs"].as_f64()?;
    let mib = |key: &str| usage[key].as_u64().map(|b| b as f64 / f64::from(1 << 20));
    let (before, after) = (mib("rss_before_bytes")?, mib("rss_after_bytes")?);
    let per_message = delivered
        .filter(|&n| n > 0)
        .map(|n| format!(", {:.2} µs per delivered message", cpu * 1e6 / n as f64))
        .unwrap_or_default();
    Some(format!(
        "broker: CPU {cpu:.2} s ({percent:.0}% of one core){per_message}, \
         RSS {before:.1} → {after:.1} MiB"
    ))
}

/// How many connections to open, how fast, and what they announce.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) connections: usize,
    pub(crate) rate: f64,
    pub(crate) keep_alive: u16,
}

pub(crate) async fn run(
    target: &Target,
    common: &Common,
    duration: Duration,
    progress: &Progress,
    plan: Plan,
) -> Result<Report, BenchError> {
    let Plan {
        connections,
        rate,
        keep_alive,
    } = plan;
    let before = common.broker_sample();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..connections {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let (target, id) = (target.clone(), client_id("conn", i));
        tasks.spawn(async move {
            let mut connect = connect_packet(target.version, id, keep_alive);
            let (user, password) = &target.credentials;
            connect.username = user.as_ref().map(|u| u.replace("{i}", &i.to_string()));
            connect.password = password.clone().map(bytes::Bytes::from);
            BenchConn::open_target(&target, connect).await
        });
        if i % 1000 == 0 {
            progress.say(format!("conn: {i}/{connections} opened"));
        }
    }
    let mut held = Vec::with_capacity(connections);
    let mut latency = Latency::default();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        match r.map_err(|e| BenchError::Protocol(e.to_string()))? {
            Ok((conn, took)) => {
                latency.record(took);
                held.push(conn);
            }
            Err(e) => *failures.entry(cause(&e)).or_default() += 1,
        }
    }
    let connect_secs = start.elapsed().as_secs_f64();
    progress.say(format!("conn: holding {} connections", held.len()));
    tokio::time::sleep(duration).await;
    let after = common.broker_sample();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if !held.is_empty() => {
            Some((a.rss_bytes as f64 - b.rss_bytes as f64) / held.len() as f64)
        }
        _ => None,
    };
    let failed: u64 = failures.values().sum();
    let l = latency.summary();
    let human = format!(
        "conn: {} connected, {failed} failed {:?}, {:.0} conn/s, CONNACK p50 {} ms p99 {} ms{}",
        held.len(),
        failures,
        held.len() as f64 / connect_secs.max(0.001),
        l["p50_ms"],
        l["p99_ms"],
        per_conn
            .map(|b| format!(", broker RSS {b:.0} B per connection"))
            .unwrap_or_default()
    );
    let usage = broker_usage(before, after, connect_secs + duration.as_secs_f64());
    let human = match broker_usage_line(&usage, None) {
        Some(line) => format!("{human}\n{line}"),
        None => human,
    };
    let json = json!({
        "scenario": "conn",
        "connections": connections,
        "keep_alive": keep_alive,
        "connected": held.len(),
        "failed": failed,
        "failures": failures,
        "connect_per_s": held.len() as f64 / connect_secs.max(0.001),
        "connack_latency": l,
        "broker_rss_per_connection_bytes": per_conn,
        "broker_usage": usage,
    });
    drop(held);
    Ok(Report { json, human })
}

/// A short label for a failure cause.
pub(crate) fn cause(e: &BenchError) -> String {
    match e {
        BenchError::Io(io) => format!("io: {}", io.kind()),
        BenchError::Timeout(_) => "timeout".into(),
        BenchError::Refused(code) => format!("refused: {code}"),
        BenchError::Protocol(_) => "protocol".into(),
        BenchError::Closed(_) => "closed".into(),
        BenchError::Args(_) => "args".into(),
    }
}
