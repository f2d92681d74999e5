//! The HTTP/1.1 shell around `routes`: hyper (http1 only) with bounded
//! headers, bodies, connection count and time, so a slow or huge request
//! costs the admin thread a little and the MQTT workers nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::routes::{self, Reply, State};

/// Admin connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// Largest request body (a publish is the largest thing anyone posts).
pub(crate) const MAX_BODY: usize = 256 * 1024;
/// Longest wait for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one admin connection, however busy it keeps.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Serves until `stop` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, "admin listening");
    }
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "admin connection refused: too many at once");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "admin connection ended"),
                Err(_) => debug!(%peer, "admin connection closed: lifetime over"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let reply = match routes::authorize(state, &path, auth.as_deref()) {
        Err(reply) => reply,
        Ok(()) => {
            let limited = Limited::new(req.into_body(), MAX_BODY);
            match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
                Err(_) => Reply::error(408, "request body not received in time", None),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Reply::error(
                    413,
                    &format!("request body larger than {MAX_BODY} bytes"),
                    None,
                ),
                Ok(Err(_)) => Reply::error(400, "request body could not be read", None),
                Ok(Ok(body)) => routes::route(state, &method, &path, &query, &body.to_bytes()),
            }
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(ct) = hyper::header::HeaderValue::from_str(reply.content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, ct);
    }
    response
}
