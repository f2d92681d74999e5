//! fan-in, fan-out and pairs: delivered messages per second, end-to-end
//! latency from the timestamp in each payload, loss and duplicates per
//! publisher sequence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;
use vigil_proto::{Ack, Packet, Publish, QoS, Subscribe, Subscription, SubscriptionOptions};

use super::{client_id, Flow};
use crate::conn::{connect_packet, BenchConn};
use crate::measure::Latency;
use crate::payload::Stamp;
use crate::progress::Progress;
use crate::tracker::SeqTracker;
use crate::{BenchError, Common, Report, Target};

/// Who publishes to whom.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    FanIn(usize),
    FanOut(usize),
    Pairs(usize),
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::FanIn(_) => "fan-in",
            Shape::FanOut(_) => "fan-out",
            Shape::Pairs(_) => "pairs",
        }
    }

    fn publishers(self) -> usize {
        match self {
            Shape::FanIn(n) | Shape::Pairs(n) => n,
            Shape::FanOut(_) => 1,
        }
    }

    fn subscribers(self) -> usize {
        match self {
            Shape::FanOut(n) | Shape::Pairs(n) => n,
            Shape::FanIn(_) => 1,
        }
    }

    fn pub_topic(self, p: usize) -> String {
        match self {
            Shape::Pairs(_) => format!("bench/pair/{p}"),
            _ => "bench/flow".into(),
        }
    }

    /// The publishers whose messages subscriber `s` must receive.
    fn feeds(self, s: usize) -> Vec<u32> {
        match self {
            Shape::FanIn(n) => (0..n as u32).collect(),
            Shape::FanOut(_) => vec![0],
            Shape::Pairs(_) => vec![s as u32],
        }
    }
}

struct SubResult {
    tracker: SeqTracker,
    latency: Latency,
    feeds: Vec<u32>,
}

pub(crate) async fn run(
    target: &Target,
    common: &Common,
    duration: Duration,
    progress: &Progress,
    shape: Shape,
    flow: &Flow,
) -> Result<Report, BenchError> {
    let qos =
        QoS::from_u8(flow.qos).ok_or_else(|| BenchError::Args("QoS must be 0, 1 or 2".into()))?;
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    progress.say(format!(
        "{}: connecting {} subscribers",
        shape.name(),
        shape.subscribers()
    ));
    let mut subs = JoinSet::new();
    let sub_target = target.for_subscribers(common)?;
    for s in 0..shape.subscribers() {
        let filter = match shape {
            Shape::Pairs(_) => format!("bench/pair/{s}"),
            _ => "bench/flow".into(),
        };
        let mut conn = open(&sub_target, client_id("sub", s), flow.persistent).await?;
        conn.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription {
                filter,
                options: SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            }],
            ..Subscribe::default()
        }))
        .await?;
        match conn.recv().await? {
            Some(Packet::SubAck(a)) if a.reasons.iter().all(|r| !r.is_error()) => {}
            other => {
                return Err(BenchError::Protocol(format!(
                    "SUBACK expected, got {other:?}"
                )))
            }
        }
        let (delivered, stop) = (delivered.clone(), stop.clone());
        subs.spawn(subscriber(conn, base, delivered, stop, shape.feeds(s)));
    }

    progress.say(format!(
        "{}: connecting {} publishers",
        shape.name(),
        shape.publishers()
    ));
    let mut conns = Vec::new();
    for p in 0..shape.publishers() {
        conns.push(open(target, client_id("pub", p), false).await?);
    }
    if common.settle > 0.0 {
        progress.say(format!(
            "{}: settling for {} s",
            shape.name(),
            common.settle
        ));
        tokio::time::sleep(Duration::from_secs_f64(common.settle)).await;
    }
    let before = common.broker_sample();
    let start = Instant::now();
    let end = start + duration;
    let mut pubs = JoinSet::new();
    for (p, conn) in conns.into_iter().enumerate() {
        pubs.spawn(publisher(
            conn,
            p as u32,
            shape.pub_topic(p),
            qos,
            flow.clone(),
            base,
            end,
        ));
    }
    let mut last_report = Instant::now();
    let mut sent = vec![0u64; shape.publishers()];
    while !pubs.is_empty() {
        tokio::select! {
            done = pubs.join_next() => {
                if let Some(r) = done {
                    let (p, n) = r.map_err(|e| BenchError::Protocol(e.to_string()))??;
                    sent[p as usize] = n;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            let secs = start.elapsed().as_secs_f64().max(0.001);
            progress.say(format!(
                "{}: {:.0} deliveries/s",
                shape.name(),
                delivered.load(Ordering::Relaxed) as f64 / secs
            ));
            last_report = Instant::now();
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let after = common.broker_sample();
    // Drain: wait until every expected delivery arrived, or 3 s without progress.
    let expected: u64 = (0..shape.subscribers())
        .map(|s| {
            shape
                .feeds(s)
                .iter()
                .map(|&p| sent[p as usize])
                .sum::<u64>()
        })
        .sum();
    let mut last = delivered.load(Ordering::Relaxed);
    let mut idle = Instant::now();
    while last < expected && idle.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            idle = Instant::now();
        }
    }
    let all_secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latency = Latency::default();
    let (mut received, mut duplicates, mut lost) = (0u64, 0u64, 0u64);
    while let Some(r) = subs.join_next().await {
        let r: SubResult = r.map_err(|e| BenchError::Protocol(e.to_string()))??;
        latency.merge(&r.latency);
        received += r.tracker.received();
        duplicates += r.tracker.duplicates();
        lost += r
            .feeds
            .iter()
            .map(|&p| r.tracker.missing(p, sent[p as usize]))
            .sum::<u64>();
    }
    let total_sent: u64 = sent.iter().sum();
    let rate = received as f64 / all_secs.max(publish_secs).max(0.001);
    let json = json!({
        "scenario": shape.name(),
        "publishers": shape.publishers(),
        "subscribers": shape.subscribers(),
        "qos": flow.qos,
        "persistent": flow.persistent,
        "payload_bytes": flow.payload.max(crate::payload::HEADER_LEN),
        "rate_per_publisher": flow.rate,
        "duration_s": publish_secs,
        "sent": total_sent,
        "expected_deliveries": expected,
        "delivered": received,
        "lost": lost,
        "duplicates": duplicates,
        "delivered_per_s": rate,
        "latency": latency.summary(),
        "broker_usage": super::conn::broker_usage(before, after, publish_secs),
    });
    let l = latency.summary();
    let human = format!(
        "{}: {} pub → {} sub, QoS {}, {} B: sent {total_sent}, delivered {received}/{expected} ({rate:.0}/s), lost {lost}, dup {duplicates}, latency p50 {} ms p99 {} ms max {} ms",
        shape.name(), shape.publishers(), shape.subscribers(), flow.qos, flow.payload, l["p50_ms"], l["p99_ms"], l["max_ms"]
    );
    let human = match super::conn::broker_usage_line(&json["broker_usage"], Some(received)) {
        Some(line) => format!("{human}\n{line}"),
        None => human,
    };
    Ok(Report { json, human })
}

async fn open(target: &Target, id: String, persistent: bool) -> Result<BenchConn, BenchError> {
    let mut connect = connect_packet(target.version, id, 60);
    if persistent {
        // Ids are unique per run, so a new session starts either way.
        if target.version.is_v5() {
            connect.properties.session_expiry_interval = Some(300);
        } else {
            connect.clean_start = false;
        }
    }
    Ok(BenchConn::open_target(target, connect).await?.0)
}

/// Publishes until `end`; returns (publisher, messages sent).
async fn publisher(
    mut conn: BenchConn,
    index: u32,
    topic: String,
    qos: QoS,
    flow: Flow,
    base: Instant,
    end: Instant,
) -> Result<(u32, u64), BenchError> {
    let mut seq = 0u64;
    let mut inflight = 0usize;
    let mut next_id = 0u16;
    let started = Instant::now();
    while Instant::now() < end {
        // Open loop: send whatever is due by now (timers tick in milliseconds,
        // so a per-message sleep would cap the rate at 1000/s).
        let batch = match flow.rate {
            Some(rate) => {
                let due = (rate * started.elapsed().as_secs_f64()) as u64;
                let n = due.saturating_sub(seq).min(256) as usize;
                if n == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                n
            }
            None => 64,
        };
        for _ in 0..batch {
            if qos != QoS::AtMostOnce && inflight >= flow.inflight.max(1) {
                break;
            }
            let stamp = Stamp {
                publisher: index,
                seq,
                sent_ns: base.elapsed().as_nanos() as u64,
            };
            next_id = next_id.checked_add(1).unwrap_or(1);
            conn.queue(&Packet::Publish(Publish {
                qos,
                topic: topic.clone().into(),
                packet_id: if qos == QoS::AtMostOnce { 0 } else { next_id },
                payload: stamp.encode(flow.payload),
                ..Publish::default()
            }));
            seq += 1;
            if qos != QoS::AtMostOnce {
                inflight += 1;
            }
        }
        conn.flush().await?;
        // Closed loop at QoS 1/2: wait for acks to open the window again.
        while qos != QoS::AtMostOnce && inflight > flow.inflight.max(1) / 2 {
            let packet = tokio::time::timeout(Duration::from_secs(10), conn.recv())
                .await
                .map_err(|_| BenchError::Timeout("acknowledgements from the broker".into()))??;
            match packet {
                Some(Packet::PubAck(_)) | Some(Packet::PubComp(_)) => inflight -= 1,
                Some(Packet::PubRec(a)) => {
                    conn.send(&Packet::PubRel(Ack::new(a.packet_id))).await?
                }
                Some(_) => {}
                None => return Err(BenchError::Closed(format!("publisher {index}"))),
            }
        }
    }
    Ok((index, seq))
}

async fn subscriber(
    mut conn: BenchConn,
    base: Instant,
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    feeds: Vec<u32>,
) -> Result<SubResult, BenchError> {
    let mut tracker = SeqTracker::default();
    let mut latency = Latency::default();
    while !stop.load(Ordering::Relaxed) {
        let packet =
            match tokio::time::timeout(Duration::from_millis(100), conn.recv_flushing()).await {
                Err(_) => continue,
                Ok(p) => p?,
            };
        match packet {
            Some(Packet::Publish(p)) => {
                if let Some(stamp) = Stamp::decode(&p.payload) {
                    let now_ns = base.elapsed().as_nanos() as u64;
                    latency.record(Duration::from_nanos(now_ns.saturating_sub(stamp.sent_ns)));
                    if tracker.record(stamp.publisher, stamp.seq) {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => conn.queue(&Packet::PubAck(Ack::new(p.packet_id))),
                    QoS::ExactlyOnce => conn.queue(&Packet::PubRec(Ack::new(p.packet_id))),
                }
            }
            Some(Packet::PubRel(a)) => conn.queue(&Packet::PubComp(Ack::new(a.packet_id))),
            Some(_) => {}
            None => return Err(BenchError::Closed("a subscriber".into())),
        }
    }
    Ok(SubResult {
        tracker,
        latency,
        feeds,
    })
}
