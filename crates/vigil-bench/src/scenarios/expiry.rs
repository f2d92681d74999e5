//! `expiry`: M clients with keep alive K and a will connect, then go silent
//! while keeping the socket open (a half-open peer). Measures when the broker
//! closes each one and when each will arrives, against 1.5 × K after the
//! client's last byte (its CONNECT).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::task::JoinSet;
use vigil_proto::{Packet, QoS, Subscribe, Subscription, SubscriptionOptions, Will};

use super::client_id;
use crate::conn::{connect_packet, BenchConn};
use crate::measure::Latency;
use crate::progress::Progress;
use crate::{BenchError, Report, Target};

/// A close more than this before the deadline counts as early (clock and
/// scheduling slack between our write and the broker's read of CONNECT).
const EARLY_SLACK: Duration = Duration::from_millis(5);

pub(crate) async fn run(
    target: &Target,
    progress: &Progress,
    clients: usize,
    keep_alive: u16,
) -> Result<Report, BenchError> {
    let k = Duration::from_secs(u64::from(keep_alive.max(1)));
    let deadline_after = k * 3 / 2;
    // The watcher never pings: the longest keep alive there is rather than
    // 0, which some brokers refuse (rumqttd).
    let mut watcher = BenchConn::open(
        target.addr,
        None,
        connect_packet(target.version, client_id("will-watch", 0), u16::MAX),
        target.connect_timeout,
    )
    .await?
    .0;
    let will_prefix = format!("bench/will/{}", client_id("x", 0));
    watcher
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription {
                filter: format!("{will_prefix}/#"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            }],
            ..Default::default()
        }))
        .await?;
    if !matches!(watcher.recv().await?, Some(Packet::SubAck(_))) {
        return Err(BenchError::Protocol(
            "no SUBACK for the will watcher".into(),
        ));
    }
    let mut deadlines: HashMap<String, Instant> = HashMap::new();
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let mut connect = connect_packet(target.version, client_id("silent", i), keep_alive);
        let topic = format!("{will_prefix}/{i}");
        connect.will = Some(Will {
            topic: topic.clone(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            ..Default::default()
        });
        let before = Instant::now();
        let (mut conn, _) = BenchConn::open(
            target.addr,
            target.next_src(),
            connect,
            target.connect_timeout,
        )
        .await?;
        // The broker's clock starts when it reads CONNECT, after `before`.
        let deadline = before + deadline_after;
        deadlines.insert(topic, deadline);
        tasks.spawn(async move {
            // Silent from here on: read only, to see when the broker closes us.
            let closed = loop {
                match conn.recv().await {
                    Ok(Some(Packet::Disconnect(_))) | Ok(None) | Err(_) => break Instant::now(),
                    Ok(Some(_)) => {}
                }
            };
            closed.saturating_duration_since(deadline).as_nanos() as i128
                - deadline.saturating_duration_since(closed).as_nanos() as i128
        });
        if i % 1000 == 0 {
            progress.say(format!("expiry: {i}/{clients} connected and silent"));
        }
    }
    let last_deadline = deadlines
        .values()
        .max()
        .copied()
        .unwrap_or_else(Instant::now);
    let mut will_lateness = Latency::default();
    let mut wills = 0usize;
    let mut early_wills = 0usize;
    let watch_until = last_deadline + Duration::from_secs(5);
    while wills < clients {
        let left = watch_until.saturating_duration_since(Instant::now());
        let Ok(packet) = tokio::time::timeout(left, watcher.recv()).await else {
            break;
        };
        match packet? {
            Some(Packet::Publish(p)) => {
                let now = Instant::now();
                if let Some(d) = deadlines.get(&*p.topic) {
                    if now + EARLY_SLACK < *d {
                        early_wills += 1;
                    }
                    will_lateness.record(now.saturating_duration_since(*d));
                    wills += 1;
                }
                if p.qos == QoS::AtLeastOnce {
                    watcher
                        .send(&Packet::PubAck(vigil_proto::Ack::new(p.packet_id)))
                        .await?;
                }
                progress.say(format!("expiry: {wills}/{clients} wills"));
            }
            Some(_) => {}
            None => return Err(BenchError::Closed("the will watcher".into())),
        }
    }
    let mut close_lateness = Latency::default();
    let mut early_closes = 0usize;
    let mut closes = 0usize;
    let wait_closes = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(ns) = r {
                closes += 1;
                if ns < -(EARLY_SLACK.as_nanos() as i128) {
                    early_closes += 1;
                }
                close_lateness.record(Duration::from_nanos(ns.max(0) as u64));
            }
        }
    })
    .await;
    let unclosed = clients - closes;
    if wait_closes.is_err() {
        tasks.abort_all();
    }
    let (c, w) = (close_lateness.summary(), will_lateness.summary());
    let human = format!(
        "expiry: {clients} silent clients, K = {keep_alive} s: closed {closes} (late by p50 {} ms, p99 {} ms, max {} ms; early {early_closes}; never {unclosed}); wills {wills}/{clients} (late by p50 {} ms, p99 {} ms, max {} ms; early {early_wills})",
        c["p50_ms"], c["p99_ms"], c["max_ms"], w["p50_ms"], w["p99_ms"], w["max_ms"]
    );
    let json = json!({
        "scenario": "expiry",
        "clients": clients,
        "keep_alive_s": keep_alive,
        "deadline_s": deadline_after.as_secs_f64(),
        "closed": closes,
        "never_closed": unclosed,
        "early_closes": early_closes,
        "close_lateness": c,
        "wills_delivered": wills,
        "wills_expected": clients,
        "early_wills": early_wills,
        "will_lateness": w,
    });
    Ok(Report { json, human })
}
