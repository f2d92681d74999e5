//! vigil-admin: the admin HTTP listener of `vigil serve`.
//!
//! Prometheus text at `/metrics`, the JSON API under `/api/v1/` (clients,
//! disconnect history, kick, subscriptions, retained messages, publish,
//! stats, reload) and `/healthz` / `/readyz`. It runs on a thread and a
//! single-threaded tokio runtime of its own, so a slow or hostile HTTP client
//! never holds an MQTT worker: a PINGRESP cannot wait behind a scrape.
//!
//! A crate of its own so the HTTP server (hyper, http1 only) is not built
//! into the broker core and its tests.

mod http;
mod metrics;
mod query;
mod routes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use thiserror::Error;
use vigil_broker::Broker;
use vigil_broker::Reloader;

pub use query::encode_segment;
pub use routes::Reply;

/// What the admin listener is told.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Bearer token every request but the probes must carry (None: none).
    pub token: Option<String>,
    /// What `POST /api/v1/reload` reloads, and the TLS listeners whose
    /// certificate expiry `/metrics` shows (None: nothing to reload).
    pub reloader: Option<Reloader>,
}

/// Why the admin listener could not start.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} for the admin API")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Its thread or runtime could not be started.
    #[error("cannot start the admin listener's thread")]
    Thread(#[source] std::io::Error),
}

/// A running admin listener; dropping it stops it.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `options.addr` and serves `broker` on a thread of its own.
    /// `/readyz` answers 503 until `set_ready(true)`.
    pub fn start(options: AdminOptions, broker: Arc<Broker>) -> Result<AdminServer, AdminError> {
        let listener =
            std::net::TcpListener::bind(options.addr).map_err(|source| AdminError::Bind {
                addr: options.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(AdminError::Thread)?;
        listener.set_nonblocking(true).map_err(AdminError::Thread)?;
        let ready = Arc::new(AtomicBool::new(false));
        let state = Arc::new(routes::State {
            broker,
            token: options.token,
            ready: ready.clone(),
            reloader: options.reloader,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AdminError::Thread)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("vigil-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => http::serve(listener, state, stopped).await,
                        Err(e) => tracing::error!(error = %e, "admin listener failed"),
                    }
                })
            })
            .map_err(AdminError::Thread)?;
        Ok(AdminServer {
            addr,
            ready,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what `/readyz` answers: ready once the store is recovered and
    /// the MQTT listener bound, not ready again while shutting down.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
