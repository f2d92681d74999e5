//! The end of a connection: the last packets flushed (DISCONNECT before the
//! close), the client's unread bytes drained so it reads the reason instead
//! of a reset, and the core told.

use std::time::Duration;

use vigil_proto::time::Clock;

use super::*;

/// How long a closing connection may take to flush its last packets.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);
/// After a close that told the client why, how long, and how many of the
/// client's bytes, the half-closed socket is drained before it is closed: a
/// socket closed with bytes unread answers with a reset, and a client that
/// then writes (an ack, a ping) gets EPIPE instead of reading the reason.
const DRAIN_ON_CLOSE: Duration = Duration::from_secs(1);
/// See `DRAIN_ON_CLOSE`.
const DRAIN_ON_CLOSE_BYTES: usize = 64 * 1024;

impl Driver {
    /// Flushes the last packets (DISCONNECT before close), then tells the core.
    pub(super) async fn finish(&mut self) {
        self.process_events().await;
        self.fill_write_buf();
        if !self.write_buf.is_empty() {
            use tokio::io::AsyncWriteExt;
            let flush = self.stream.write_all(&self.write_buf);
            if tokio::time::timeout(FLUSH_ON_CLOSE, flush).await.is_err() {
                debug!(client = %self.client_id(), "could not flush before close");
            }
        }
        // Bounded: a TLS close_notify or WebSocket Close waits for a peer
        // that may never read again.
        let shutdown = tokio::io::AsyncWriteExt::shutdown(&mut self.stream);
        let _ = tokio::time::timeout(FLUSH_ON_CLOSE, shutdown).await;
        let told_why = self.conn.told_why();
        let closed = self.closed.take().map_or(
            Closed {
                reason: CloseReason::PeerClosed,
                publish_will: true,
                session_expiry: None,
            },
            |c| *c,
        );
        self.count_drops(self.conn.drops());
        let now = Clock::now();
        match self.attached.take() {
            Some(a) => {
                // What happens to the will, as the core is about to decide:
                // "publish" (possibly after its delay), "discard", or "none".
                let will = match (a.session.has_will(), closed.publish_will) {
                    (false, _) => "none",
                    (true, true) => "publish",
                    (true, false) => "discard",
                };
                info!(client = %a.session.client_id(), peer = %self.peer, reason = %closed.reason, will = %will, "client disconnected");
                self.broker.note_disconnect(
                    now,
                    &a.session,
                    crate::core::clients::Ended {
                        conn_id: a.conn_id,
                        reason: &closed.reason,
                        keep_alive: self.conn.keep_alive(),
                        will,
                        peer: self.peer,
                        figures: self.stats.read(now.instant),
                    },
                );
                let info = DisconnectInfo {
                    reason: closed.reason,
                    publish_will: closed.publish_will,
                    session_expiry: closed.session_expiry,
                    state: self.conn.take_state(),
                };
                self.broker.disconnect(now, &a.session, a.conn_id, info);
            }
            None => {
                self.broker.counters().count_disconnect(&closed.reason);
                debug!(peer = %self.peer, reason = %closed.reason, "connection closed before CONNACK");
            }
        }
        if told_why {
            // After the core has been told: a takeover or a will does not
            // wait for this.
            self.drain_before_close().await;
        }
    }

    /// Reads and discards what the client still sends, until it closes its
    /// side or `DRAIN_ON_CLOSE` / `DRAIN_ON_CLOSE_BYTES` run out. Only the
    /// closing task does this; the bytes go through the thread's scratch
    /// buffer, never held across an await.
    async fn drain_before_close(&mut self) {
        let mut left = DRAIN_ON_CLOSE_BYTES;
        let drain = async {
            while left > 0 {
                if std::future::poll_fn(|cx| self.stream.poll_read_ready(cx))
                    .await
                    .is_err()
                {
                    return;
                }
                let got = READ_SCRATCH.with(|scratch| {
                    let mut chunk = scratch.borrow_mut();
                    let n = left.min(chunk.len());
                    self.stream.read_chunk(&mut chunk[..n])
                });
                match got {
                    Ok(0) => return,
                    Ok(n) => left -= n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        if tokio::time::timeout(DRAIN_ON_CLOSE, drain).await.is_err() {
            debug!(peer = %self.peer, "client still sending when its connection was closed");
        }
    }
}
