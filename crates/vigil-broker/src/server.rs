//! The listener: accepts TCP connections, spawns one task per connection,
//! runs the broker's timers, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpListener;
use tracing::{info, warn};
use vigil_proto::server::{KeepAlivePolicy, ServerConfig};

use vigil_store::{Durability, Store};

use crate::config::{BrokerConfig, DurabilityMode, OutOfRangePolicy, StoreBackend, StoreConfig};
use crate::connection::ParkingLot;
use crate::core::{Broker, CoreConfig, MailboxLimits};

/// Everything the listener needs, derived from a `BrokerConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Connections beyond this are closed at accept.
    pub max_connections: usize,
    /// Per-connection protocol limits.
    pub connection: ServerConfig,
    /// Broker core limits.
    pub core: CoreConfig,
    /// Idle time after which a connection with nothing in flight is parked
    /// off its task (None: never).
    pub park_idle_after: Option<Duration>,
}

impl ServerOptions {
    /// The options a config file (plus flags) describes.
    pub fn from_config(config: &BrokerConfig) -> ServerOptions {
        let ka = &config.keepalive;
        ServerOptions {
            listen: config.listen_addr(),
            max_connections: config.listener.max_connections,
            connection: ServerConfig {
                max_packet_size: config.limits.max_packet_size,
                receive_maximum: config.limits.receive_maximum,
                topic_alias_maximum: config.limits.topic_alias_maximum,
                max_inflight: config.limits.max_inflight,
                keep_alive: KeepAlivePolicy {
                    min: ka.min_keepalive,
                    max: ka.max_keepalive,
                    allow_zero: ka.allow_zero_keepalive,
                    refuse_v3_out_of_range: ka.v3_out_of_range == OutOfRangePolicy::Refuse,
                },
                connect_timeout: config.connect_timeout(),
            },
            core: CoreConfig {
                mailbox: MailboxLimits {
                    max_messages: config.sessions.max_queued_messages,
                    max_bytes: config.sessions.max_queued_bytes,
                },
                max_session_expiry: config.sessions.max_session_expiry,
                takeover_wait: Duration::from_secs(5),
            },
            park_idle_after: match config.listener.park_idle_after_ms {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
        }
    }
}

/// A bound, not yet running, broker.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    broker: Arc<Broker>,
    options: ServerOptions,
    /// Runtimes the connections are dealt to in turn; empty: the caller's.
    workers: Vec<tokio::runtime::Handle>,
    /// The parking lot of each worker (or of the caller's runtime).
    lots: Vec<Arc<ParkingLot>>,
}

impl Server {
    /// Binds the listener, with a broker that keeps everything in memory.
    pub async fn bind(options: ServerOptions) -> std::io::Result<Server> {
        Server::bind_broker(options, Broker::new(options.core)).await
    }

    /// Binds the listener for `broker` (for one opened on a store).
    pub async fn bind_broker(
        options: ServerOptions,
        broker: Arc<Broker>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(options.listen).await?;
        // Room for every connection allowed plus the broker's own descriptors.
        crate::fd_table::reserve(&listener, options.max_connections.saturating_add(64));
        Ok(Server {
            listener,
            broker,
            options,
            workers: Vec::new(),
            lots: Vec::new(),
        })
    }

    /// Deals connections to `workers` in turn (one single-threaded runtime per
    /// core) instead of spawning them on the caller's runtime.
    pub fn with_workers(mut self, workers: Vec<tokio::runtime::Handle>) -> std::io::Result<Server> {
        for worker in &workers {
            worker.spawn(Arc::new(crate::core::WakeInbox::default()).serve());
            if let Some(after) = self.options.park_idle_after {
                let (lot, task) =
                    ParkingLot::start(self.broker.clone(), self.options.connection, after)?;
                worker.spawn(task);
                self.lots.push(lot);
            }
        }
        self.workers = workers;
        Ok(self)
    }

    /// Connections parked now, over every worker.
    pub fn parked_connections(&self) -> usize {
        self.lots.iter().map(|l| l.parked()).sum()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The broker core (counters, sessions), for tests and metrics.
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `shutdown` completes, then tells every client (MQTT 5:
    /// DISCONNECT 0x8B) and waits up to 5 s for the connections to close.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let timers = tokio::spawn(self.broker.clone().run_timers());
        if self.workers.is_empty() && self.lots.is_empty() {
            if let Some(after) = self.options.park_idle_after {
                let (lot, task) =
                    ParkingLot::start(self.broker.clone(), self.options.connection, after)?;
                tokio::spawn(task);
                self.lots.push(lot);
            }
        }
        let live = Arc::new(AtomicUsize::new(0));
        let mut next_worker = 0usize;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if live.load(Ordering::Acquire) >= self.options.max_connections {
                        warn!(%peer, max = self.options.max_connections, "connection refused: max_connections reached");
                        continue;
                    }
                    live.fetch_add(1, Ordering::AcqRel);
                    let slot = Some(crate::connection::LiveSlot(live.clone()));
                    let _ = stream.set_nodelay(true);
                    // Backstop for peers that vanish without FIN while keep alive is 0.
                    let keepalive = TcpKeepalive::new()
                        .with_time(Duration::from_secs(120))
                        .with_interval(Duration::from_secs(30));
                    let _ = SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                    let broker = self.broker.clone();
                    let config = self.options.connection;
                    if self.workers.is_empty() {
                        let lot = self.lots.first().cloned();
                        tokio::spawn(crate::connection::serve(stream, peer, broker, config, slot, lot));
                        continue;
                    }
                    let lot = self.lots.get(next_worker % self.workers.len()).cloned();
                    let worker = &self.workers[next_worker % self.workers.len()];
                    next_worker = next_worker.wrapping_add(1);
                    // The socket moves to the worker's I/O driver and the task's
                    // timer to its clock (both taken from the runtime entered
                    // here): its readiness wakes that worker's thread only.
                    let task = {
                        let _worker = worker.enter();
                        stream
                            .into_std()
                            .and_then(tokio::net::TcpStream::from_std)
                            .map(|stream| crate::connection::serve(stream, peer, broker, config, slot, lot))
                    };
                    match task {
                        Ok(task) => {
                            worker.spawn(task);
                        }
                        Err(e) => warn!(%peer, error = %e, "connection dropped: cannot hand it to a worker"),
                    }
                }
            }
        }
        info!("shutting down: disconnecting clients");
        self.broker.shutdown();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while live.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        timers.abort();
        if let Some(store) = self.broker.store().cloned() {
            // Sync the last commits before the process exits.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        Ok(())
    }
}

/// Starts `count` single-threaded runtimes, each on a thread of its own that
/// lives as long as the process, for `Server::with_workers`. One runtime per
/// worker, each connection on one of them for its whole life: a work-stealing
/// pool moved the tasks a fan-out burst woke between threads, parking and
/// waking its workers thousands of times a second (broker CPU per delivered
/// message 1.9 -> 1.6 us in fan-out 1 -> 100).
pub fn spawn_worker_runtimes(count: usize) -> std::io::Result<Vec<tokio::runtime::Handle>> {
    (1..=count)
        .map(|i| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("vigil-worker-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
            Ok(handle)
        })
        .collect()
}

/// Opens the store `config` describes (None for the memory backend, which
/// keeps nothing across restarts) and recovers a broker from it.
pub fn open_broker(
    core: CoreConfig,
    config: &StoreConfig,
    salvage: bool,
) -> Result<Arc<Broker>, vigil_store::StoreError> {
    let backend = match config.backend {
        StoreBackend::Memory => return Ok(Broker::new(core)),
        StoreBackend::Disk => vigil_store::DiskBackend::open(&config.data_dir)?,
    };
    let durability = match config.durability {
        DurabilityMode::Always => Durability::Always,
        DurabilityMode::Periodic => {
            Durability::Periodic(Duration::from_millis(config.sync_interval_ms.max(1)))
        }
    };
    let started = std::time::Instant::now();
    let (store, contents) = Store::open(Box::new(backend), durability, salvage)?;
    let broker = Broker::with_store(core, store, contents);
    info!(
        data_dir = %config.data_dir.display(),
        took_ms = started.elapsed().as_millis() as u64,
        ?durability,
        "store opened"
    );
    Ok(broker)
}
