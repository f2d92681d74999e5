//! `slow-sub`: publishers flood a subscriber that reads slowly while healthy
//! clients only ping. Reports what the broker did to the slow subscriber and
//! that no healthy client was disconnected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::task::JoinSet;
use vigil_proto::{Packet, Publish, Subscribe, Subscription};

use super::client_id;
use super::ping::{PingStats, PingerPool};
use crate::conn::{connect_packet, BenchConn};
use crate::measure::Latency;
use crate::progress::Progress;
use crate::{BenchError, Common, Report, Target};

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    target: &Target,
    common: &Common,
    duration: Duration,
    progress: &Progress,
    publishers: usize,
    healthy: usize,
    keep_alive: u16,
    read_rate: usize,
    payload: usize,
) -> Result<Report, BenchError> {
    let k = Duration::from_secs(u64::from(keep_alive.max(1)));
    let start = Instant::now();
    let end = start + duration;
    // The slow subscriber pings like any client: only its reading is slow.
    let mut slow = BenchConn::open(
        target.addr,
        None,
        connect_packet(target.version, client_id("slow", 0), keep_alive),
        target.connect_timeout,
    )
    .await?
    .0;
    slow.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription {
            filter: "bench/slow".into(),
            ..Default::default()
        }],
        ..Default::default()
    }))
    .await?;
    let slow_task = tokio::spawn(async move {
        let mut read = 0u64;
        let chunk = (read_rate / 10).max(64);
        let mut next_ping = Instant::now() + k;
        while Instant::now() < end {
            if Instant::now() >= next_ping {
                if slow.send(&Packet::PingReq).await.is_err() {
                    return (read, Some(start.elapsed()));
                }
                next_ping += k;
            }
            match tokio::time::timeout(Duration::from_millis(100), slow.read_raw(chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (read, Some(start.elapsed())),
                Ok(Ok(n)) => read += n as u64,
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (read, None)
    });
    let stats = Arc::new(PingStats::default());
    let pool = PingerPool::start(k, Arc::new(end.into()), stats.clone())?;
    for i in 0..healthy {
        let conn = BenchConn::open(
            target.addr,
            target.next_src(),
            connect_packet(target.version, client_id("healthy", i), keep_alive),
            target.connect_timeout,
        )
        .await?
        .0;
        let first = Instant::now() + k.mul_f64(i as f64 / healthy.max(1) as f64);
        pool.add(conn, first)?;
    }
    let published = Arc::new(AtomicU64::new(0));
    let mut pubs = JoinSet::new();
    for p in 0..publishers {
        let mut conn = BenchConn::open(
            target.addr,
            None,
            connect_packet(target.version, client_id("flood", p), 60),
            target.connect_timeout,
        )
        .await?
        .0;
        let published = published.clone();
        pubs.spawn(async move {
            let body = Bytes::from(vec![0u8; payload]);
            while Instant::now() < end {
                for _ in 0..64 {
                    conn.queue(&Packet::Publish(Publish {
                        topic: "bench/slow".into(),
                        payload: body.clone(),
                        ..Default::default()
                    }));
                }
                if conn.flush().await.is_err() {
                    return;
                }
                published.fetch_add(64, Ordering::Relaxed);
            }
        });
    }
    let mut max_rss = 0u64;
    while Instant::now() < end {
        if let Some(s) = common.broker_sample() {
            max_rss = max_rss.max(s.rss_bytes);
        }
        progress.say(format!(
            "slow-sub: {} published, {} healthy disconnected",
            published.load(Ordering::Relaxed),
            stats.wrongful()
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut latency = Latency::default();
    latency.merge_samples(&pool.finish(|| {}).await?);
    pubs.abort_all();
    let (read, slow_closed_at) = slow_task
        .await
        .map_err(|e| BenchError::Protocol(e.to_string()))?;
    let wrongful = stats.wrongful();
    let (closed, late) = (
        stats.closed.load(Ordering::Relaxed),
        stats.late.load(Ordering::Relaxed),
    );
    let l = latency.summary();
    let outcome = match slow_closed_at {
        Some(t) => format!("disconnected by the broker after {:.1} s", t.as_secs_f64()),
        None => "still connected at the end".into(),
    };
    let human = format!(
        "slow-sub: {} published; slow subscriber read {read} bytes and was {outcome}; healthy clients disconnected: {wrongful}/{healthy} ({closed} closed, {late} PINGRESP later than K; PINGRESP p99 {} ms max {} ms){}",
        published.load(Ordering::Relaxed),
        l["p99_ms"],
        l["max_ms"],
        if max_rss > 0 { format!("; broker RSS max {} MiB", max_rss / (1 << 20)) } else { String::new() }
    );
    let json = json!({
        "scenario": "slow-sub",
        "publishers": publishers,
        "healthy": healthy,
        "keep_alive_s": keep_alive,
        "published": published.load(Ordering::Relaxed),
        "slow_bytes_read": read,
        "slow_disconnected_after_s": slow_closed_at.map(|t| t.as_secs_f64()),
        "healthy_disconnected": wrongful,
        "healthy_closed_by_broker": closed,
        "healthy_late_pingresp": late,
        "healthy_pingresp_latency": l,
        "broker_rss_max_bytes": if max_rss > 0 { Some(max_rss) } else { None },
    });
    Ok(Report { json, human })
}
