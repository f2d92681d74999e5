//! `ping`: N idle clients each pinging every K seconds, optionally beside a
//! publish load. Measures PINGRESP latency and wrongful disconnects (a
//! healthy, pinging client closed by the broker), which must be 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;
use vigil_proto::{Packet, Publish, Subscribe, Subscription};

use super::client_id;
use tokio::sync::{mpsc, oneshot};

use crate::conn::{connect_packet, BenchConn, DetachedConn};
use crate::measure::{Latency, Samples};
use crate::progress::Progress;
use crate::{BenchError, Report, Target};

pub(crate) async fn run(
    target: &Target,
    duration: Duration,
    progress: &Progress,
    clients: usize,
    keep_alive: u16,
    publish_rate: Option<f64>,
) -> Result<Report, BenchError> {
    let k = Duration::from_secs(u64::from(keep_alive.max(1)));
    let stats = Arc::new(PingStats::default());
    // Each client pings from its own CONNACK on: opening 19,000 connections
    // takes several seconds, and a client left silent for 1.5 K meanwhile is
    // rightly closed by a broker that keeps the rule. The measured window
    // (and `end`) starts once every client is connected.
    let end = Arc::new(OnceLock::new());
    let pool = PingerPool::start(k, end.clone(), stats.clone())?;
    for i in 0..clients {
        let connect = connect_packet(target.version, client_id("ping", i), keep_alive);
        let conn = BenchConn::open(
            target.addr,
            target.next_src(),
            connect,
            target.connect_timeout,
        )
        .await?
        .0;
        // Spread the pings over one interval so they do not all land at once.
        let first = Instant::now() + k.mul_f64(i as f64 / clients.max(1) as f64);
        pool.add(conn, first)?;
        if i % 1000 == 0 {
            progress.say(format!("ping: {i}/{clients} connected"));
        }
    }
    let start = Instant::now();
    let _ = end.set(start + duration);
    let load =
        publish_rate.map(|rate| tokio::spawn(publish_load(target.clone(), rate, start + duration)));
    let mut latency = Latency::default();
    let samples = pool
        .finish(|| {
            progress.say(format!(
                "ping: {} PINGRESPs, {} wrongful disconnects",
                stats.pings.load(Ordering::Relaxed),
                stats.wrongful()
            ))
        })
        .await?;
    latency.merge_samples(&samples);
    let published = match load {
        Some(h) => h.await.map_err(|e| BenchError::Protocol(e.to_string()))??,
        None => 0,
    };
    let wrongful = stats.wrongful();
    let (closed, late) = (
        stats.closed.load(Ordering::Relaxed),
        stats.late.load(Ordering::Relaxed),
    );
    let l = latency.summary();
    let human = format!(
        "ping: {clients} clients, K = {keep_alive} s, {} PINGRESPs p50 {} ms p99 {} ms max {} ms, wrongful disconnects {wrongful} ({closed} closed, {late} PINGRESP later than K), {published} messages published beside",
        latency.count(), l["p50_ms"], l["p99_ms"], l["max_ms"]
    );
    let json = json!({
        "scenario": "ping",
        "clients": clients,
        "keep_alive_s": keep_alive,
        "publish_rate": publish_rate,
        "published": published,
        "pingresp_latency": l,
        "wrongful_disconnects": wrongful,
        "closed_by_broker": closed,
        "late_pingresp": late,
    });
    Ok(Report { json, human })
}

/// What the pingers saw, shared across their tasks.
#[derive(Debug, Default)]
pub(crate) struct PingStats {
    /// PINGRESPs received.
    pub(crate) pings: AtomicU64,
    /// Healthy clients the broker closed (EOF, error, DISCONNECT, or silence
    /// for 3 × K after a PINGREQ).
    pub(crate) closed: AtomicU64,
    /// PINGRESPs that came later than K (a client with ping timeout K would
    /// have given up): counted apart from closes, because on a loaded 2-core
    /// machine the bench's own scheduling can be the late party.
    pub(crate) late: AtomicU64,
}

impl PingStats {
    /// Closed plus late: healthy clients a real client library would have lost.
    pub(crate) fn wrongful(&self) -> u64 {
        self.closed.load(Ordering::Relaxed) + self.late.load(Ordering::Relaxed)
    }
}

/// Pinging clients on a thread and runtime of their own. The bench's load
/// (publishers that write as fast as the broker reads) keeps its runtime's
/// threads busy; pingers queued behind it there measured the bench's own
/// scheduling, and more of it the faster the broker took the load.
pub(crate) struct PingerPool {
    to_pool: Option<mpsc::UnboundedSender<(DetachedConn, Instant)>>,
    done: oneshot::Receiver<Result<Samples, BenchError>>,
    end: Arc<OnceLock<Instant>>,
}

impl Drop for PingerPool {
    /// A run that ends early (a failed connect) ends its pingers too: they
    /// ping until `end`, which is otherwise set once all are connected.
    fn drop(&mut self) {
        let _ = self.end.set(Instant::now());
    }
}

impl PingerPool {
    /// Starts the pool's thread; its pingers ping every `k` until `end`.
    pub(crate) fn start(
        k: Duration,
        end: Arc<OnceLock<Instant>>,
        stats: Arc<PingStats>,
    ) -> Result<PingerPool, BenchError> {
        let (to_pool, mut arrivals) = mpsc::unbounded_channel::<(DetachedConn, Instant)>();
        let (done_tx, done) = oneshot::channel();
        let pool_end = end.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("bench-pingers".into())
            .spawn(move || {
                let samples = runtime.block_on(async move {
                    let mut tasks = JoinSet::new();
                    // A socket this runtime cannot take is the bench's failure,
                    // not a client the broker closed: it ends the run, named.
                    let mut failed = None;
                    while let Some((conn, first)) = arrivals.recv().await {
                        match conn.attach() {
                            Ok(conn) => {
                                tasks.spawn(pinger(conn, first, k, end.clone(), stats.clone()));
                            }
                            Err(e) => {
                                let _ = end.set(Instant::now());
                                failed.get_or_insert(e);
                            }
                        }
                    }
                    let mut samples = Samples::default();
                    while let Some(done) = tasks.join_next().await {
                        // A pinger never panics; if one did, its samples are lost, not the run.
                        if let Ok(s) = done {
                            samples.append(s);
                        }
                    }
                    failed.map_or(Ok(samples), Err)
                });
                let _ = done_tx.send(samples);
            })?;
        Ok(PingerPool {
            to_pool: Some(to_pool),
            done,
            end: pool_end,
        })
    }

    /// Hands `conn` to the pool; it pings first at `first`.
    pub(crate) fn add(&self, conn: BenchConn, first: Instant) -> Result<(), BenchError> {
        let conn = conn.detach()?;
        let sent = self.to_pool.as_ref().map(|pool| pool.send((conn, first)));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(BenchError::Protocol("the pinger thread stopped".into())),
        }
    }

    /// Waits until every pinger has ended, calling `tick` every 500 ms
    /// meanwhile, and returns their PINGRESP latencies.
    pub(crate) async fn finish(mut self, mut tick: impl FnMut()) -> Result<Samples, BenchError> {
        // No more pingers: the pool's thread waits for those it has.
        self.to_pool = None;
        loop {
            tokio::select! {
                samples = &mut self.done => {
                    return samples.map_err(|_| BenchError::Protocol("the pinger thread died".into()))?;
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => tick(),
            }
        }
    }
}

/// Pings every `k` from `first` until `end`, recording PINGRESP latency.
async fn pinger(
    mut conn: BenchConn,
    first: Instant,
    k: Duration,
    end: Arc<OnceLock<Instant>>,
    stats: Arc<PingStats>,
) -> Samples {
    let mut latency = Samples::default();
    let mut next = first;
    // `end` is set once every client is connected; until then, keep pinging.
    let before_end = |at: Instant| end.get().is_none_or(|e| at < *e);
    while before_end(next) {
        tokio::time::sleep_until(next.into()).await;
        if !before_end(next) {
            break;
        }
        let sent = Instant::now();
        if conn.send(&Packet::PingReq).await.is_err() {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            return latency;
        }
        loop {
            match tokio::time::timeout(3 * k, conn.recv()).await {
                Ok(Ok(Some(Packet::PingResp))) => {
                    let took = sent.elapsed();
                    if took > k {
                        stats.late.fetch_add(1, Ordering::Relaxed);
                    }
                    latency.record(took);
                    stats.pings.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Ok(Some(_))) => {}
                _ => {
                    stats.closed.fetch_add(1, Ordering::Relaxed);
                    return latency;
                }
            }
        }
        next += k;
    }
    latency
}

/// A QoS 0 publisher at `rate` messages/s with one subscriber draining it.
async fn publish_load(target: Target, rate: f64, end: Instant) -> Result<u64, BenchError> {
    let mut sub = BenchConn::open(
        target.addr,
        None,
        connect_packet(target.version, client_id("load-sub", 0), 60),
        target.connect_timeout,
    )
    .await?
    .0;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription {
            filter: "bench/load".into(),
            ..Default::default()
        }],
        ..Default::default()
    }))
    .await?;
    tokio::spawn(async move { while let Ok(Some(_)) = sub.recv().await {} });
    let mut publisher = BenchConn::open(
        target.addr,
        None,
        connect_packet(target.version, client_id("load-pub", 0), 60),
        target.connect_timeout,
    )
    .await?
    .0;
    let mut n = 0u64;
    let started = Instant::now();
    let payload = bytes::Bytes::from(vec![0u8; 64]);
    while Instant::now() < end {
        let due = (rate * started.elapsed().as_secs_f64()) as u64;
        for _ in n..due {
            publisher.queue(&Packet::Publish(Publish {
                topic: "bench/load".into(),
                payload: payload.clone(),
                ..Default::default()
            }));
        }
        n = n.max(due);
        publisher.flush().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(n)
}
