//! The incoming side: accepts peers' connections and answers their
//! requests, several at once per connection, each connection on its own
//! tasks so a slow or broken peer holds up only itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::frame::{self, FrameError};
use super::message::{Request, RequestFrame, Response, ResponseFrame, WriteReply};
use crate::submit::{commit_here, Shared};

/// Requests one connection may have in progress; past it the connection
/// is not read until one finishes (TCP then slows the peer).
const IN_PROGRESS: usize = 64;
/// Answers waiting to be written on one connection.
const ANSWER_QUEUE: usize = 256;
/// Pause after a failed accept (out of file descriptors): the error would
/// otherwise repeat at once and spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Accepts peers until the task is aborted (the node stops), which ends
/// every connection with it.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(stream, peer, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "ownership listener: accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Reads requests from one peer and answers each as it completes.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let (answers, mut queue) = mpsc::channel::<Vec<u8>>(ANSWER_QUEUE);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        if let Err(e) = frame::write_frames(&mut write, &mut queue).await {
            tracing::debug!(%peer, error = %e, "ownership link: write failed");
        }
    });
    let permits = Arc::new(Semaphore::new(IN_PROGRESS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let request = match frame::read_payload(&mut read).await.and_then(|p| match p {
            Some(payload) => frame::decode::<RequestFrame>(&payload).map(Some),
            None => Ok(None),
        }) {
            Ok(Some(request)) => request,
            Ok(None) => {
                tracing::debug!(%peer, "ownership link closed by the peer");
                break;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "ownership link failed");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "ownership link: malformed frame; closing the connection");
                break;
            }
        };
        let shared = shared.clone();
        let answers = answers.clone();
        tasks.spawn(async move {
            let body = answer(&shared, request.body).await;
            match frame::encode(&ResponseFrame {
                id: request.id,
                body,
            }) {
                // A closed queue means the connection is gone: nobody to tell.
                Ok(bytes) => drop(answers.send(bytes).await),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "ownership link: cannot encode an answer")
                }
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Dropping `tasks` aborts the writer and the requests in progress.
}

/// Hands one request to Raft (or, for a forwarded batch, commits it).
async fn answer(shared: &Shared, request: Request) -> Response {
    match request {
        Request::AppendEntries(rpc) => {
            Response::AppendEntries(shared.raft.append_entries(rpc).await)
        }
        Request::Vote(rpc) => Response::Vote(shared.raft.vote(rpc).await),
        Request::InstallSnapshot(rpc) => {
            Response::InstallSnapshot(shared.raft.install_snapshot(rpc).await)
        }
        Request::Write(batch) if batch.0.len() > crate::batcher::MAX_OPS => {
            tracing::warn!(
                ops = batch.0.len(),
                "ownership link: forwarded batch over the limit refused"
            );
            Response::Write(WriteReply::TooLarge)
        }
        Request::Write(batch) => {
            Response::Write(commit_here(shared, batch, Instant::now() + shared.claim_timeout).await)
        }
    }
}
