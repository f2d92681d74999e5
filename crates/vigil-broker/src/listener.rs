//! Listeners: each bound socket with what it speaks (MQTT or WebSocket,
//! with or without TLS) and its own connection limit, and the accept loop
//! that deals its connections to the workers. Every transport ends in the
//! same `connection::serve`; a TLS or WebSocket handshake runs first on the
//! connection's own task (never on the accepting one), bounded by the
//! connect timeout, so a storm of stalled handshakes delays nobody else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};
use vigil_proto::server::{ServerConfig, TokenBucket};

use crate::config::{ListenerEntry, ListenerProtocol};
use crate::connection::{ListenerLive, LiveSlot, ParkingLot};
use crate::core::{Broker, Counters};
use crate::transport::tls::{self, TlsError, TlsSource};
use crate::transport::{ws, Framed, Transport};

/// Why a listener could not be started.
#[derive(Debug, Error)]
pub enum ListenError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Settings that cannot work together.
    #[error("listener {listener}: {message}")]
    Invalid {
        /// The listener (kind and address).
        listener: String,
        /// What is wrong, naming the keys.
        message: String,
    },
    /// A certificate, key or CA file could not be used.
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener (kind and address).
        listener: String,
        /// The file and the cause.
        source: TlsError,
    },
}

/// What a listener's connections speak before MQTT.
#[derive(Debug, Clone)]
enum Wire {
    Mqtt,
    Ws { path: Arc<str> },
}

/// A bound listener, not yet accepting.
#[derive(Debug)]
pub struct BoundListener {
    pub(crate) socket: TcpListener,
    wire: Wire,
    tls: Option<Arc<TlsSource>>,
    /// Client certificates log clients in (`use_identity_as_username`).
    identity_as_username: bool,
    max_connections: usize,
    /// New connections a second (0: no limit), `max_connection_rate`.
    max_connection_rate: u32,
    name: Arc<str>,
    pub(crate) live: Arc<ListenerLive>,
}

impl BoundListener {
    /// Binds `entry`'s address and loads its certificate (TLS) first, so a
    /// bad certificate stops the start with the file named.
    pub async fn bind(entry: &ListenerEntry) -> Result<BoundListener, ListenError> {
        let addr = entry.addr();
        if let Some(message) = entry.tls.as_ref().and_then(|t| t.identity_problem()) {
            return Err(ListenError::Invalid {
                listener: format!("{} {addr}", entry.kind()),
                message,
            });
        }
        let tls = match &entry.tls {
            Some(settings) => {
                let alpn: &[&[u8]] = match entry.protocol {
                    ListenerProtocol::Mqtt => &[b"mqtt"],
                    // Browsers offer http/1.1 (and h2) for a wss:// URL.
                    ListenerProtocol::Ws => &[b"http/1.1"],
                };
                let source =
                    TlsSource::load(settings, alpn).map_err(|source| ListenError::Tls {
                        listener: format!("{} {addr}", entry.kind()),
                        source,
                    })?;
                Some(Arc::new(source))
            }
            None => None,
        };
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError::Bind { addr, source })?;
        let mut bound = BoundListener::plain(socket, entry.max_connections);
        bound.max_connection_rate = entry.max_connection_rate;
        bound.wire = match entry.protocol {
            ListenerProtocol::Mqtt => Wire::Mqtt,
            ListenerProtocol::Ws => Wire::Ws {
                path: entry.path.as_str().into(),
            },
        };
        bound.tls = tls;
        bound.identity_as_username = entry
            .tls
            .as_ref()
            .is_some_and(|t| t.use_identity_as_username);
        bound.name = format!("{} {}", entry.kind(), bound.local_addr().unwrap_or(addr)).into();
        bound.live = Arc::new(ListenerLive::new(bound.name.clone()));
        Ok(bound)
    }

    /// A plain MQTT listener on a socket bound beforehand.
    pub fn plain(socket: TcpListener, max_connections: usize) -> BoundListener {
        let name: Arc<str> = match socket.local_addr() {
            Ok(a) => format!("mqtt {a}").into(),
            Err(_) => "mqtt".into(),
        };
        BoundListener {
            socket,
            wire: Wire::Mqtt,
            tls: None,
            identity_as_username: false,
            max_connections,
            max_connection_rate: 0,
            live: Arc::new(ListenerLive::new(name.clone())),
            name,
        }
    }

    /// Accepts at most `rate` new connections a second (0: no limit).
    pub fn with_connection_rate(mut self, rate: u32) -> BoundListener {
        self.max_connection_rate = rate;
        self
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Its kind and address, as logs name it (`mqtt+tls 0.0.0.0:8883`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its TLS certificate source, if it is a TLS listener.
    pub fn tls(&self) -> Option<&Arc<TlsSource>> {
        self.tls.as_ref()
    }

    /// Connections beyond this are refused.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
}

/// What every accept loop shares.
pub(crate) struct Dealer {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: ServerConfig,
    pub(crate) workers: Vec<tokio::runtime::Handle>,
    pub(crate) lots: Vec<Arc<ParkingLot>>,
    pub(crate) next_worker: AtomicUsize,
}

/// Accepts connections on `listener` until the task is aborted.
///
/// With `max_connection_rate`, a connection accepted when the bucket is
/// empty is held until it has a token, and the loop accepts nothing
/// meanwhile: the others wait in the kernel's accept queue (a full queue
/// makes clients' SYNs wait and retry), none is refused.
pub(crate) async fn accept_loop(listener: BoundListener, dealer: Arc<Dealer>) {
    let mut rate = (listener.max_connection_rate > 0)
        .then(|| TokenBucket::new(listener.max_connection_rate, std::time::Instant::now()));
    loop {
        let (stream, peer) = match listener.socket.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                warn!(listener = %listener.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(bucket) = &mut rate {
            let now = std::time::Instant::now();
            if let Some(at) = bucket.ready_at(now, 1) {
                Counters::add(&dealer.broker.counters().accepts_delayed, 1);
                debug!(listener = %listener.name, %peer, wait_ms = at.duration_since(now).as_millis() as u64, "accept delayed: max_connection_rate");
                tokio::time::sleep_until(at.into()).await;
            }
            bucket.take(std::time::Instant::now(), 1);
        }
        Counters::add(&dealer.broker.counters().sockets_total, 1);
        if listener.live.count.load(Ordering::Acquire) >= listener.max_connections {
            warn!(listener = %listener.name, %peer, max = listener.max_connections, "connection refused: max_connections reached");
            continue;
        }
        listener.live.count.fetch_add(1, Ordering::AcqRel);
        let slot = Some(LiveSlot(listener.live.clone()));
        let _ = stream.set_nodelay(true);
        // Backstop for peers that vanish without FIN while keep alive is 0.
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(120))
            .with_interval(Duration::from_secs(30));
        let _ = SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        dealer.deal(&listener, stream, peer, slot);
    }
}

impl Dealer {
    /// Starts the connection's task on the next worker (or this runtime).
    fn deal(
        &self,
        listener: &BoundListener,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Option<LiveSlot>,
    ) {
        let broker = self.broker.clone();
        let config = self.config;
        let plain = matches!(listener.wire, Wire::Mqtt) && listener.tls.is_none();
        if self.workers.is_empty() {
            let lot = self.lots.first().cloned();
            if plain {
                tokio::spawn(crate::connection::serve(
                    stream, peer, broker, config, slot, lot,
                ));
            } else {
                tokio::spawn(handshake_then_serve(
                    listener.secure(),
                    stream,
                    peer,
                    broker,
                    config,
                    slot,
                ));
            }
            return;
        }
        let n = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let worker = &self.workers[n];
        // The socket moves to the worker's I/O driver and the task's timer
        // to its clock (both taken from the runtime entered here): its
        // readiness wakes that worker's thread only.
        let _worker = worker.enter();
        let stream = match stream.into_std().and_then(TcpStream::from_std) {
            Ok(s) => s,
            Err(e) => {
                warn!(listener = %listener.name, %peer, error = %e, "connection dropped: cannot hand it to a worker");
                return;
            }
        };
        if plain {
            let lot = self.lots.get(n).cloned();
            worker.spawn(crate::connection::serve(
                stream, peer, broker, config, slot, lot,
            ));
        } else {
            worker.spawn(handshake_then_serve(
                listener.secure(),
                stream,
                peer,
                broker,
                config,
                slot,
            ));
        }
    }
}

/// What a TLS or WebSocket connection's handshake needs.
struct Secure {
    listener: Arc<str>,
    tls: Option<Arc<TlsSource>>,
    ws_path: Option<Arc<str>>,
    identity_as_username: bool,
}

impl BoundListener {
    fn secure(&self) -> Secure {
        Secure {
            listener: self.name.clone(),
            tls: self.tls.clone(),
            identity_as_username: self.identity_as_username,
            ws_path: match &self.wire {
                Wire::Mqtt => None,
                Wire::Ws { path } => Some(path.clone()),
            },
        }
    }
}

/// The task of a TLS and/or WebSocket connection: the handshake, bounded by
/// the connect timeout, then the same driver as a plain one. TLS and
/// WebSocket connections are never parked (see `transport`).
async fn handshake_then_serve(
    secure: Secure,
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: ServerConfig,
    slot: Option<LiveSlot>,
) {
    // Boxed, and so freed once done: inline, the handshake's state (a
    // rustls connection mid-handshake, ~1.5 KB) would size the task for
    // the connection's whole life.
    let handshake = Box::pin(handshake(&secure, stream, config.max_packet_size));
    let transport = match tokio::time::timeout(config.connect_timeout, handshake).await {
        Ok(Ok(t)) => t,
        Ok(Err(why)) => {
            warn!(listener = %secure.listener, %peer, reason = %why, "connection closed during its handshake");
            return;
        }
        Err(_) => {
            warn!(listener = %secure.listener, %peer, timeout_s = config.connect_timeout.as_secs_f64(), "connection closed: handshake not finished within the connect timeout");
            return;
        }
    };
    if let Some(identity) = transport.peer_identity() {
        debug!(listener = %secure.listener, %peer, %identity, "client certificate accepted");
    }
    crate::connection::serve(transport, peer, broker, config, slot, None).await;
}

async fn handshake(
    secure: &Secure,
    stream: TcpStream,
    max_packet_size: u32,
) -> Result<Transport, String> {
    let framed = match (&secure.tls, &secure.ws_path) {
        (Some(source), None) => {
            let (tls, identity) = tls::accept(source, stream)
                .await
                .map_err(|e| e.to_string())?;
            let mut framed = Framed::new(Box::new(tls), identity);
            if secure.identity_as_username {
                framed.use_identity_as_username();
            }
            framed
        }
        (Some(source), Some(path)) => {
            let (tls, identity) = tls::accept(source, stream)
                .await
                .map_err(|e| e.to_string())?;
            let ws = ws::accept(tls, path, max_packet_size).await?;
            let mut framed = Framed::new(Box::new(ws::WsBytes::new(ws)), identity);
            if secure.identity_as_username {
                framed.use_identity_as_username();
            }
            framed
        }
        (None, Some(path)) => {
            let ws = ws::accept(stream, path, max_packet_size).await?;
            Framed::new(Box::new(ws::WsBytes::new(ws)), None)
        }
        (None, None) => return Ok(Transport::Tcp(stream)),
    };
    Ok(Transport::Framed(Box::new(framed)))
}
