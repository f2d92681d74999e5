//! The server: runs every listener's accept loop (`listener`), the broker's
//! timers and the certificate reloads, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tracing::{error, info};
use vigil_proto::server::{KeepAlivePolicy, PublishRateLimit, ServerConfig};
use vigil_proto::time::Clock;

use vigil_store::{Durability, Store};

use crate::config::{BrokerConfig, DurabilityMode, OutOfRangePolicy, StoreBackend, StoreConfig};
use crate::connection::ParkingLot;
use crate::core::{Broker, CoreConfig, MailboxLimits, OverflowConfig};
use crate::listener::{BoundListener, Dealer};
use crate::transport::tls::{TlsSource, CERT_CHECK_INTERVAL};

/// Everything the listener needs, derived from a `BrokerConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Connections beyond this are closed at accept.
    pub max_connections: usize,
    /// New connections accepted per second at most (0: no limit).
    pub max_connection_rate: u32,
    /// Per-connection protocol limits.
    pub connection: ServerConfig,
    /// Broker core limits.
    pub core: CoreConfig,
    /// Idle time after which a connection with nothing in flight is parked
    /// off its task (None: never).
    pub park_idle_after: Option<Duration>,
    /// Period of the `$SYS` topics (None: none).
    pub sys_interval: Option<Duration>,
}

impl ServerOptions {
    /// The options a config file (plus flags) describes.
    pub fn from_config(config: &BrokerConfig) -> ServerOptions {
        let ka = &config.keepalive;
        ServerOptions {
            listen: config.listen_addr(),
            max_connections: config.listener.max_connections,
            max_connection_rate: config.listener.max_connection_rate,
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
                server_topic_aliases: config.limits.server_topic_aliases,
                enhanced_auth: true,
            },
            core: CoreConfig {
                mailbox: MailboxLimits {
                    max_messages: config.sessions.max_queued_messages,
                    max_bytes: config.sessions.max_queued_bytes,
                },
                max_session_expiry: config.sessions.max_session_expiry,
                takeover_wait: Duration::from_secs(5),
                overflow: OverflowConfig {
                    policy: config.sessions.slow_consumer,
                    wait: Duration::from_millis(config.sessions.slow_consumer_wait_ms),
                },
                publish_rate: PublishRateLimit {
                    messages: config.limits.max_publish_rate,
                    bytes: config.limits.max_publish_bytes_rate,
                },
            },
            park_idle_after: match config.listener.park_idle_after_ms {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            sys_interval: (config.sys.interval > 0)
                .then(|| Duration::from_secs(config.sys.interval)),
        }
    }
}

/// A bound, not yet running, broker.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<BoundListener>,
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
        Server::bind_broker(options, Broker::new(options.core, Instant::now())).await
    }

    /// Binds the listener for `broker` (for one opened on a store).
    pub async fn bind_broker(
        options: ServerOptions,
        broker: Arc<Broker>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(options.listen).await?;
        Ok(Server::with_listener(listener, options, broker))
    }

    /// A server on a listener bound beforehand: `vigil serve` binds first and
    /// opens the store after, so a busy port stops the start before a store
    /// is created or recovered.
    pub fn with_listener(
        listener: TcpListener,
        options: ServerOptions,
        broker: Arc<Broker>,
    ) -> Server {
        let max = options.max_connections;
        let plain =
            BoundListener::plain(listener, max).with_connection_rate(options.max_connection_rate);
        Server::with_listeners(vec![plain], options, broker)
    }

    /// A server on listeners bound beforehand (`BoundListener::bind`, one per
    /// `[[listeners]]` entry); `options.listen`, `max_connections` and
    /// `max_connection_rate` are not used, each listener has its own.
    pub fn with_listeners(
        listeners: Vec<BoundListener>,
        options: ServerOptions,
        broker: Arc<Broker>,
    ) -> Server {
        // Room for every connection allowed plus the broker's own descriptors.
        if let Some(first) = listeners.first() {
            let total = listeners
                .iter()
                .fold(0usize, |sum, l| sum.saturating_add(l.max_connections()));
            crate::fd_table::reserve(&first.socket, total.saturating_add(64));
        }
        Server {
            listeners,
            broker,
            options,
            workers: Vec::new(),
            lots: Vec::new(),
        }
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

    /// The first listener's bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(l) => l.local_addr(),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no listener",
            )),
        }
    }

    /// Every listener, in the order given.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// What reloads the TLS listeners' certificates (`vigil serve` calls it
    /// on SIGHUP); also reports their expiry.
    pub fn cert_reloader(&self) -> CertReloader {
        CertReloader {
            sources: self
                .listeners
                .iter()
                .filter_map(|l| Some((Arc::<str>::from(l.name()), l.tls()?.clone())))
                .collect(),
        }
    }

    /// The broker core (counters, sessions), for tests and metrics.
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `shutdown` completes, then tells every client (MQTT 5:
    /// DISCONNECT 0x8B) and waits up to 5 s for the connections to close.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let timers = tokio::spawn(run_timers(self.broker.clone()));
        let sys = match self.options.sys_interval {
            Some(every) => Some(crate::observe::sys::start(self.broker.clone(), every)?),
            None => None,
        };
        if self.workers.is_empty() && self.lots.is_empty() {
            if let Some(after) = self.options.park_idle_after {
                let (lot, task) =
                    ParkingLot::start(self.broker.clone(), self.options.connection, after)?;
                tokio::spawn(task);
                self.lots.push(lot);
            }
        }
        let reloader = self.cert_reloader();
        let watcher = (!reloader.sources.is_empty()).then(|| {
            let reloader = reloader.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CERT_CHECK_INTERVAL).await;
                    reloader.reload_changed();
                }
            })
        });
        let dealer = Arc::new(Dealer {
            broker: self.broker.clone(),
            config: self.options.connection,
            workers: std::mem::take(&mut self.workers),
            lots: std::mem::take(&mut self.lots),
            next_worker: AtomicUsize::new(0),
        });
        let live: Vec<Arc<crate::connection::ListenerLive>> =
            self.listeners.iter().map(|l| l.live.clone()).collect();
        let loops: Vec<_> = self
            .listeners
            .drain(..)
            .map(|l| tokio::spawn(crate::listener::accept_loop(l, dealer.clone())))
            .collect();
        shutdown.await;
        for l in &loops {
            l.abort();
        }
        if let Some(w) = watcher {
            w.abort();
        }
        let live_now = || {
            live.iter()
                .map(|l| l.count.load(Ordering::Acquire))
                .sum::<usize>()
        };
        info!("shutting down: disconnecting clients");
        self.broker.shutdown();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while live_now() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        timers.abort();
        drop(sys);
        if let Some(store) = self.broker.store().cloned() {
            // Sync the last commits before the process exits.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        Ok(())
    }
}

/// Reloads the certificates of every TLS listener of a server.
#[derive(Debug, Clone)]
pub struct CertReloader {
    sources: Vec<(Arc<str>, Arc<TlsSource>)>,
}

impl CertReloader {
    /// Reloads every TLS listener's files (SIGHUP); a file that fails keeps
    /// the old certificate and is logged with the file and the cause.
    /// Returns how many listeners now serve freshly loaded certificates.
    pub fn reload_all(&self) -> usize {
        self.reload_each()
            .iter()
            .filter(|(_, outcome)| outcome.is_ok())
            .count()
    }

    /// Reloads every TLS listener's files, each listener's outcome by its
    /// name (logged too); a failed one keeps its old certificate.
    pub fn reload_each(&self) -> Vec<(Arc<str>, Result<(), crate::transport::tls::TlsError>)> {
        self.sources
            .iter()
            .map(|(listener, source)| {
                let outcome = source.reload();
                match &outcome {
                    Ok(()) => {
                        info!(%listener, cert = %source.cert_file().display(), expires_in_s = source.seconds_until_expiry(), "certificate reloaded; new connections use it");
                    }
                    Err(e) => {
                        error!(%listener, error = %e, "certificate not reloaded; the previous one stays in use")
                    }
                }
                (listener.clone(), outcome)
            })
            .collect()
    }

    /// True when the server has no TLS listener.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Reloads the listeners whose certificate, key or CA file has a new
    /// modification time.
    pub fn reload_changed(&self) {
        for (listener, source) in &self.sources {
            match source.reload_if_changed() {
                None => {}
                Some(Ok(())) => {
                    info!(%listener, cert = %source.cert_file().display(), expires_in_s = source.seconds_until_expiry(), "certificate file changed; reloaded, new connections use it")
                }
                Some(Err(e)) => {
                    error!(%listener, error = %e, "certificate file changed but cannot be used; the previous one stays in use")
                }
            }
        }
    }

    /// Each TLS listener with the seconds until its certificate expires
    /// (negative: expired), for a metrics exporter.
    pub fn seconds_until_expiry(&self) -> Vec<(Arc<str>, i64)> {
        self.sources
            .iter()
            .map(|(name, s)| (name.clone(), s.seconds_until_expiry()))
            .collect()
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
        StoreBackend::Memory => return Ok(Broker::new(core, Instant::now())),
        StoreBackend::Disk => vigil_store::DiskBackend::open(&config.data_dir)?,
    };
    let durability = match config.durability {
        DurabilityMode::Always => Durability::Always,
        DurabilityMode::Periodic => {
            Durability::Periodic(Duration::from_millis(config.sync_interval_ms.max(1)))
        }
    };
    let started = Instant::now();
    let (store, contents) = Store::open(Box::new(backend), durability, salvage)?;
    let broker = Broker::with_store(core, store, contents, Clock::now());
    info!(
        data_dir = %config.data_dir.display(),
        took_ms = started.elapsed().as_millis() as u64,
        ?durability,
        "store opened"
    );
    Ok(broker)
}

/// The timer task: sleeps to the core's next will-delay or session-expiry
/// deadline (or until a new one is scheduled) and hands it the time then.
/// The one place the core's timers meet the real clock.
async fn run_timers(broker: Arc<Broker>) {
    loop {
        let changed = std::future::poll_fn(|cx| broker.timers_changed().poll_wait(cx));
        match broker.poll_timeout() {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = changed => {}
                }
            }
            None => changed.await,
        }
        broker.handle_timeout(Clock::now());
    }
}
