//! The per-connection task: owns the socket and the connection's state
//! machine, and moves bytes, deliveries and timers between them and the broker
//! core. All protocol decisions live in `vigil_proto::server`; this file only
//! does I/O.
//!
//! Memory: no buffer is held while a connection is idle. Reads land in a
//! per-thread scratch buffer and only the bytes received are copied to the heap, which is
//! dropped once every complete packet is decoded; the write buffer is dropped
//! once flushed. (Reading straight into a 4 KiB heap buffer per wake-up cost
//! ~3.6 KB of resident memory per idle connection in malloc's arenas.)

mod close;
mod enhanced_auth;
mod events;
mod parking;
pub(crate) mod room;
pub(crate) mod takeover;

pub(crate) use parking::ParkingLot;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};
use vigil_proto::server::{CloseReason, Closed, ServerConfig, ServerConnection};

use crate::core::{
    Broker, ConnStats, Control, ControlSignal, Counters, DisconnectInfo, SessionRef,
};
use crate::transport::Transport;

/// Stop pulling deliveries into the write buffer beyond this many bytes, so a
/// PINGRESP queued later waits behind at most this much of our own data.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Deliveries taken from the mailbox per batch.
const DRAIN_BATCH: usize = 256;
/// Batches per wake-up: the socket may take everything as fast as it comes,
/// and other connections of this thread must get their turn.
const DRAIN_BATCHES_PER_WAKE: usize = 4;
/// Bytes read per readiness event, into a per-thread scratch buffer: only
/// what arrived is then copied to the heap, so an idle connection's ping costs
/// 2 bytes of heap, not a read buffer.
const READ_CHUNK: usize = 16 * 1024;
/// Full reads in a row after which a connection lets others run (64 KiB).
const FLOOD_READS_BEFORE_YIELD: u8 = 4;

thread_local! {
    static READ_SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
    /// Deliveries on their way from a mailbox into a state machine; per
    /// thread for the same reason as `READ_SCRATCH` (used between awaits only).
    static DELIVERY_SCRATCH: std::cell::RefCell<Vec<vigil_proto::message::Outgoing>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// Where packets are encoded when nothing of the connection's is waiting
    /// for the socket: written at once, only what the socket did not take is
    /// copied into the connection's own buffer. (A buffer per burst cost a
    /// malloc, reallocs as it grew, and a free, per subscriber per message burst.)
    static WRITE_SCRATCH: std::cell::RefCell<BytesMut> =
        std::cell::RefCell::new(BytesMut::new());
}

/// A listener's live connections, and its name (for the admin API's
/// `listener` of each client): one pointer in every connection.
#[derive(Debug)]
pub(crate) struct ListenerLive {
    pub(crate) count: AtomicUsize,
    pub(crate) name: Arc<str>,
}

impl ListenerLive {
    pub(crate) fn new(name: Arc<str>) -> ListenerLive {
        ListenerLive {
            count: AtomicUsize::new(0),
            name,
        }
    }
}

/// Holds one place in the count of live connections until the connection's
/// task ends.
pub(crate) struct LiveSlot(pub(crate) Arc<ListenerLive>);

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The task that runs one client connection to its end. Built outside the
/// task (within the runtime that will run it, for the timer) so that the
/// task holds the connection once: an `async fn` taking these arguments kept
/// them beside the `Driver` made from them, ~110 bytes per idle connection.
pub(crate) fn serve(
    stream: impl Into<Transport>,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: ServerConfig,
    slot: Option<LiveSlot>,
    lot: Option<Arc<ParkingLot>>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let now = Instant::now();
    let mut conn = ServerConnection::new(config, now);
    let limit = broker.publish_rate();
    if limit.is_set() {
        conn.limit_publish_rate(limit, now);
    }
    let driver = Driver::new(
        stream.into(),
        peer,
        conn,
        broker,
        lot,
        slot,
        Arc::new(ConnStats::default()),
    );
    drive(driver)
}

/// Runs `driver` until the connection ends or parks.
// An `async fn` moves its argument into a second binding inside the future
// and keeps both: the task would carry the Driver twice.
#[allow(clippy::manual_async_fn)]
fn drive(mut driver: Driver) -> impl std::future::Future<Output = ()> + Send + 'static {
    // Used in place, not moved into a binding of the block's (a copy).
    async move {
        if let Some(place) = driver.run().await {
            driver.park(place);
        }
    }
}

/// The task of a parked connection that has something to do again; it
/// writes `unsent` (replies the lot could not finish) before anything else.
fn resume(
    body: parking::Body,
    unsent: &[u8],
    broker: Arc<Broker>,
    config: ServerConfig,
    lot: Option<Arc<ParkingLot>>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let stream = TcpStream::from_std(body.stream)?;
    let peer = parking::peer_of(&stream);
    let conn = ServerConnection::unpark(config, body.conn);
    let mut driver = Driver::new(
        stream.into(),
        peer,
        conn,
        broker,
        lot,
        body.slot,
        body.stats,
    );
    driver.attached = Some(body.attached);
    driver.control = Some(body.control);
    driver.write_buf = BytesMut::from(unsent);
    Ok(drive(driver))
}

thread_local! {
    /// The connection (by its driver's address) whose PINGREQ this thread
    /// read last, and when: kept here rather than in the driver, whose every
    /// byte is paid by each idle connection. Another connection's PINGREQ
    /// read before the PINGRESP is written replaces it (that sample is lost,
    /// never attributed to the wrong one).
    static PING_READ: std::cell::Cell<Option<(usize, Instant)>> = const { std::cell::Cell::new(None) };
}

fn ping_read(driver: &Driver, at: Instant) {
    PING_READ.set(Some((driver as *const Driver as usize, at)));
}

/// Everything encoded for `driver` is written: if a PINGREQ of its was
/// waiting, its PINGRESP (urgent, so encoded first) is on its way.
fn ping_answered(driver: &Driver) {
    if let Some((who, at)) = PING_READ.get() {
        if who == driver as *const Driver as usize {
            PING_READ.set(None);
            crate::observe::histogram::record_pingresp(at.elapsed());
        }
    }
}

struct Attached {
    session: SessionRef,
    conn_id: u64,
}

struct Driver {
    stream: Transport,
    peer: SocketAddr,
    conn: ServerConnection,
    broker: Arc<Broker>,
    attached: Option<Attached>,
    control: Option<Arc<ControlSignal>>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Boxed: set once, at the end, and 56 bytes in every task until then.
    closed: Option<Box<Closed>>,
    /// Reads in a row that filled the whole chunk (the peer is flooding).
    full_reads: u8,
    /// Streaming retained messages: let the worker's other connections run
    /// before the next pull.
    yield_owed: bool,
    /// The state machine's timer, kept from one wait to the next: re-created
    /// per wait it cost a timer-wheel insert and removal on every wake-up.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// When `timer` fires; None once it has (or was never armed).
    timer_at: Option<Instant>,
    /// When the connection last had something to do (its lot's clock).
    /// Its low 32 bits only (u64 made every idle task 8 bytes larger): an
    /// idle stretch is reconstructed from it as long as it is under 49
    /// days, and a longer one only parks later, never wrongly.
    busy_ms: u32,
    /// Where it parks once idle (None: never).
    lot: Option<Arc<ParkingLot>>,
    /// Released when the connection ends, however it ends.
    slot: Option<LiveSlot>,
    /// Its bytes, packets, last packet and in-flight count, for the admin
    /// API and the disconnect record.
    stats: Arc<ConnStats>,
}

impl Driver {
    /// A driver for a connection with no session attached yet (a new one,
    /// or a parked one whose caller attaches what it kept).
    fn new(
        stream: Transport,
        peer: SocketAddr,
        conn: ServerConnection,
        broker: Arc<Broker>,
        lot: Option<Arc<ParkingLot>>,
        slot: Option<LiveSlot>,
        stats: Arc<ConnStats>,
    ) -> Driver {
        Driver {
            stream,
            peer,
            conn,
            broker,
            attached: None,
            control: None,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            closed: None,
            full_reads: 0,
            yield_owed: false,
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            timer_at: None,
            busy_ms: lot.as_ref().map_or(0, |l| l.now_ms() as u32),
            lot,
            slot,
            stats,
        }
    }

    /// The client's identifier once CONNECT was accepted (for logs).
    fn client_id(&self) -> &str {
        self.attached.as_ref().map_or("", |a| a.session.client_id())
    }

    /// Serves the connection until it ends (None) or may park (its place).
    async fn run(&mut self) -> Option<Arc<parking::Parked>> {
        loop {
            self.process_events().await;
            if self.full_reads >= FLOOD_READS_BEFORE_YIELD || self.yield_owed {
                // A flooding publisher would otherwise keep this worker
                // thread for a whole cooperative budget (hundreds of reads),
                // while other clients' PINGREQs wait behind it.
                self.full_reads = 0;
                self.yield_owed = false;
                tokio::task::yield_now().await;
            }
            self.pull_deliveries().await;
            self.fill_write_buf();
            if self.conn.is_closed() {
                break;
            }
            if self.write_buf.is_empty() {
                // About to wait with nothing in flight: hold no empty buffers.
                self.conn.release_idle_buffers();
            }
            self.stats.set_inflight(self.conn.inflight());
            if self.conn.drops() != vigil_proto::server::DropCounts::default() {
                // Counted as they happen, not at the close: a connection
                // holding uncounted drops could never park either.
                let drops = self.conn.take_drops();
                self.count_drops(drops);
            }
            self.arm_timer();
            let mut timed_out = false;
            let want_deliveries = self.attached.is_some()
                && self.conn.wants_deliveries()
                && self.write_buf.len() < WRITE_HIGH_WATER;
            tokio::select! {
                biased;
                // Reading first: a client's PINGREQ already in our socket must be
                // seen before its keep-alive deadline is judged.
                // `poll_*_ready` in place of `readable()`/`writable()`: those futures are
                // 152 bytes each, and this wait is where every idle connection sits.
                // Not while over the publish rate: TCP backpressure instead.
                ready = std::future::poll_fn(|cx| self.stream.poll_read_ready(cx)), if !self.conn.reading_paused() => match ready {
                    Ok(()) => self.read(),
                    Err(e) => self.conn.handle_transport_closed(CloseReason::Io(e.to_string())),
                },
                ready = std::future::poll_fn(|cx| self.stream.poll_write_ready(cx)), if !self.write_buf.is_empty() || self.stream.wants_flush() => match ready {
                    Ok(()) => self.write(),
                    Err(e) => self.conn.handle_transport_closed(CloseReason::Io(e.to_string())),
                },
                // Polled in place, like the socket: a `Notified` future per
                // wait cost 64 bytes each in every idle connection's task.
                msg = std::future::poll_fn(|cx| poll_control(self.control.as_deref(), cx)) => self.on_control(msg),
                _ = std::future::poll_fn(|cx| poll_mailbox(self.attached.as_ref(), cx)), if want_deliveries => {}
                _ = &mut self.timer, if self.timer_at.is_some() => {
                    self.timer_at = None;
                    timed_out = true;
                    let now = Instant::now();
                    let paused = self.conn.reading_paused();
                    self.conn.handle_timeout(now);
                    if paused && !self.conn.reading_paused() {
                        // The pause is over: first what was read before it.
                        // This is work, not idleness: a throttled client
                        // wakes only here, and must not park for it.
                        timed_out = false;
                        if !self.read_buf.is_empty() {
                            self.decode_buffered(now);
                        }
                    }
                }
            }
            if !timed_out {
                if let Some(lot) = &self.lot {
                    self.busy_ms = lot.now_ms() as u32;
                }
            } else if let Some(place) = self.place_to_park() {
                return Some(place);
            }
        }
        // Boxed for the same reason as CONNECT: it runs once, at the end.
        Box::pin(self.finish()).await;
        None
    }

    /// When this connection may park, if it may: its lot's clock.
    fn park_at(&self) -> Option<u64> {
        let lot = self.lot.as_ref()?;
        let idle = self.attached.is_some()
            && self.read_buf.is_empty()
            && self.write_buf.is_empty()
            && self.conn.can_park();
        let now = lot.now_ms();
        let busy = now - u64::from((now as u32).wrapping_sub(self.busy_ms)).min(now);
        idle.then(|| busy + lot.park_after.as_millis() as u64)
    }

    /// A place in the lot, if the connection has been idle long enough and
    /// its session has nothing for it (the place is then its waker).
    fn place_to_park(&mut self) -> Option<Arc<parking::Parked>> {
        let lot = self.lot.as_ref()?;
        if self.park_at()? > lot.now_ms() {
            return None;
        }
        lot.reserve(
            self.attached.as_ref()?,
            self.control.as_deref()?,
            self.conn.poll_timeout(),
        )
    }

    /// Hands the connection to its lot; the task ends. Whatever cannot be
    /// parked goes on as a task.
    fn park(mut self, place: Arc<parking::Parked>) {
        let (Some(lot), Some(attached), Some(control)) =
            (self.lot.clone(), self.attached.take(), self.control.take())
        else {
            return;
        };
        let drops = self.conn.take_drops();
        self.count_drops(drops);
        let Some(conn) = self.conn.park() else {
            return;
        };
        let stream = match self.stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                warn!(client = %attached.session.client_id(), error = %e, "cannot park a connection: socket lost");
                return;
            }
        };
        let body = parking::Body {
            stream,
            conn,
            attached,
            control,
            slot: self.slot.take(),
            stats: self.stats.clone(),
        };
        if let Err(body) = lot.admit(place, body) {
            match resume(
                body,
                &[],
                self.broker.clone(),
                *lot.config(),
                Some(lot.clone()),
            ) {
                Ok(task) => {
                    tokio::spawn(task);
                }
                Err(e) => {
                    warn!(error = %e, "a connection could not go on after a failed park; dropped")
                }
            }
        }
    }

    fn count_drops(&self, drops: vigil_proto::server::DropCounts) {
        let counters = self.broker.counters();
        counters
            .dropped_expired
            .fetch_add(drops.expired, std::sync::atomic::Ordering::Relaxed);
        counters
            .dropped_too_large
            .fetch_add(drops.too_large, std::sync::atomic::Ordering::Relaxed);
    }

    /// Arms the timer for the state machine's next deadline. A deadline that
    /// moved later (every packet received pushes keep alive on) leaves the
    /// timer where it is: it fires early, `handle_timeout` finds nothing due,
    /// and the next turn arms the new deadline, one timer update per period
    /// instead of one per packet.
    fn arm_timer(&mut self) {
        let park_at = self
            .park_at()
            .zip(self.lot.as_ref())
            .map(|(at, lot)| lot.instant(at));
        let deadline = match (self.conn.poll_timeout(), park_at) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(d) => d,
                None => return,
            },
        };
        if self.timer_at.is_some_and(|at| at <= deadline) {
            return;
        }
        self.timer.as_mut().reset(deadline.into());
        self.timer_at = Some(deadline);
    }

    fn read(&mut self) {
        // One buffer per worker thread, not per task: this function never
        // awaits, so no other connection can use it meanwhile (and a fresh
        // stack array would be zeroed, 16 KiB, on every read).
        let got = READ_SCRATCH.with(|scratch| {
            let mut chunk = scratch.borrow_mut();
            // A short TCP read clears readiness (see `Transport::read_chunk`).
            let got = self.stream.read_chunk(&mut chunk[..]);
            if let Ok(n) = got {
                crate::observe::traffic::bytes_in(n);
                self.read_buf.extend_from_slice(&chunk[..n]);
                self.full_reads = if n == chunk.len() {
                    self.full_reads.saturating_add(1)
                } else {
                    0
                };
            }
            got
        });
        let read = match got {
            Ok(0) => {
                self.conn.handle_transport_closed(CloseReason::PeerClosed);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                self.conn
                    .handle_transport_closed(CloseReason::Io(e.to_string()));
                return;
            }
        };
        let now = Instant::now();
        self.stats.received(read, 0, now);
        self.decode_buffered(now);
    }

    /// Decodes and handles the complete packets read so far, stopping while
    /// the client is over its publish rate: what is left waits here, and
    /// nothing more is read (TCP holds the client back) until the pause ends.
    fn decode_buffered(&mut self, now: Instant) {
        let mut packets = 0;
        loop {
            if self.conn.reading_paused() {
                Counters::add(&self.broker.counters().publish_throttled, 1);
                break;
            }
            match self.conn.decode(&mut self.read_buf) {
                Ok(Some(packet)) => {
                    packets += 1;
                    if matches!(packet, vigil_proto::Packet::PingReq) {
                        ping_read(self, now);
                    }
                    self.conn.handle_packet(now, packet);
                    if self.conn.is_closed() {
                        break;
                    }
                }
                Ok(None) => {
                    if !self.read_buf.is_empty() {
                        self.conn.handle_read_progress(now);
                    }
                    break;
                }
                Err(e) => {
                    warn!(client = %self.client_id(), peer = %self.peer, fault = %e, "malformed or illegal packet");
                    self.conn.handle_decode_error(now, &e);
                    break;
                }
            }
        }
        self.stats.received(0, packets, now);
        crate::observe::traffic::packets_in(packets);
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
    }

    fn write(&mut self) {
        match self.stream.try_write(&self.write_buf) {
            Ok(n) => {
                crate::observe::traffic::bytes_out(n);
                self.stats.sent_bytes(n);
                let _ = self.write_buf.split_to(n);
                if self.write_buf.is_empty() {
                    ping_answered(self);
                    self.write_buf = BytesMut::new();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => self
                .conn
                .handle_transport_closed(CloseReason::Io(e.to_string())),
        }
    }

    /// Writes what the state machine wants sent, straight from the per-thread
    /// buffer when nothing is already waiting (order), else into `write_buf`
    /// for the next writable turn.
    fn fill_write_buf(&mut self) {
        if self.write_buf.is_empty() && !self.conn.is_closed() {
            WRITE_SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                self.encode_into(&mut scratch);
                if !scratch.is_empty() {
                    let taken = match self.stream.try_write(&scratch) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                        Err(e) => {
                            self.conn
                                .handle_transport_closed(CloseReason::Io(e.to_string()));
                            scratch.len()
                        }
                    };
                    crate::observe::traffic::bytes_out(taken);
                    self.stats.sent_bytes(taken);
                    if taken == scratch.len() {
                        ping_answered(self);
                    }
                    self.write_buf.extend_from_slice(&scratch[taken..]);
                    scratch.clear();
                }
            });
            if !self.conn.is_closed() {
                return;
            }
        }
        self.encode_into_write_buf();
    }

    fn encode_into_write_buf(&mut self) {
        let mut buf = std::mem::take(&mut self.write_buf);
        self.encode_into(&mut buf);
        self.write_buf = buf;
    }

    /// Encodes transmits into `buf` up to the high-water mark (everything once closed).
    fn encode_into(&mut self, buf: &mut BytesMut) {
        let mut packets = 0;
        while buf.len() < WRITE_HIGH_WATER || self.conn.is_closed() {
            let Some(written) = self.conn.encode_transmit(buf) else {
                break;
            };
            match written {
                Ok(_) => packets += 1,
                Err(e) => {
                    warn!(client = %self.client_id(), fault = %e, "packet could not be encoded; dropped")
                }
            }
        }
        if packets > 0 {
            self.stats.sent_packets(packets);
            crate::observe::traffic::packets_out(packets);
        }
    }

    /// Hands queued deliveries (and streamed retained messages) to the state
    /// machine while it has room; a QoS 2 delivery's packet id is durable
    /// before its PUBLISH is written.
    async fn pull_deliveries(&mut self) {
        let Some(session) = self.attached.as_ref().map(|a| a.session.clone()) else {
            return;
        };
        let now = Instant::now();
        let mut batches = 0;
        let mut streaming = false;
        while self.conn.wants_deliveries() && self.write_buf.len() < WRITE_HIGH_WATER {
            if batches == DRAIN_BATCHES_PER_WAKE {
                // Come back after the others. The drain re-armed the wake
                // for new pushes only: what is left needs a wake of its own.
                session.mailbox.wake();
                break;
            }
            batches += 1;
            let (drained, more) = DELIVERY_SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let more = self
                    .broker
                    .next_deliveries(&session, &mut scratch, DRAIN_BATCH, now);
                let drained = !scratch.is_empty();
                let mut by_qos = [0usize; 3];
                let mut payload = 0;
                for o in scratch.drain(..) {
                    by_qos[usize::from((o.qos as u8).min(2))] += 1;
                    payload += o.message.payload.len();
                    self.conn.deliver(now, o);
                }
                if drained {
                    crate::observe::traffic::publish_out(by_qos, payload);
                }
                (drained, more)
            });
            streaming |= more;
            if !drained {
                if more {
                    // A scan that found nothing in its budget: more to scan.
                    session.mailbox.wake();
                }
                break;
            }
            if let Some(t) = self.record_progress() {
                Box::pin(self.ack_when_durable(t, Vec::new())).await;
            }
            self.fill_write_buf();
        }
        // A stream feeds itself, unlike a queue filled by other tasks: a
        // reader as fast as the broker would keep this worker busy through
        // all of it, and other clients' PINGREQs waiting.
        self.yield_owed |= streaming;
    }

    fn on_control(&mut self, msg: Control) {
        match msg {
            Control::TakenOver => self.conn.close(
                vigil_proto::ReasonCode::SESSION_TAKEN_OVER,
                CloseReason::TakenOver,
            ),
            Control::Shutdown => self.conn.close(
                vigil_proto::ReasonCode::SERVER_SHUTTING_DOWN,
                CloseReason::ServerShutdown,
            ),
            Control::SlowConsumer => self.conn.close(
                vigil_proto::ReasonCode::QUOTA_EXCEEDED,
                CloseReason::SlowConsumer,
            ),
            Control::Revoked => crate::auth::close_revoked(&mut self.conn),
            Control::Expired => crate::auth::close_expired(&mut self.conn),
            Control::Kick => self.conn.close(
                vigil_proto::ReasonCode::ADMINISTRATIVE_ACTION,
                CloseReason::Kicked,
            ),
        }
    }
}

/// The broker's next word to this connection (never, before CONNECT).
fn poll_control(control: Option<&ControlSignal>, cx: &mut Context<'_>) -> Poll<Control> {
    control.map_or(Poll::Pending, |signal| signal.poll_recv(cx))
}

/// Ready when deliveries may be waiting in the session's mailbox.
fn poll_mailbox(attached: Option<&Attached>, cx: &mut Context<'_>) -> Poll<()> {
    attached.map_or(Poll::Pending, |a| a.session.mailbox.poll_notified(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle connections should cost about what Mosquitto's do
    /// (docs/architecture.md, "Memory"):
    /// keep what every connection carries small, and box what runs once.
    #[tokio::test]
    async fn an_idle_connection_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let broker = Broker::new(crate::core::CoreConfig::default(), Instant::now());
        let fut = serve(stream, peer, broker, ServerConfig::default(), None, None);
        let task = std::mem::size_of_val(&fut);
        let session = std::mem::size_of::<crate::core::Session>();
        let parked = parking::parked_size();
        eprintln!("connection task future: {task} B, session: {session} B, parked: {parked} B");
        // tokio's task cell adds ~180 bytes and rounds up to 128: a future
        // of at most 720 bytes is a cell of 896 (1,024 at 721).
        assert!(task <= 720, "connection task future grew to {task} bytes");
        // Behind its Arc's two counts: at most 320, jemalloc's next size
        // class after 256 (one byte more and it is 384).
        assert!(session <= 304, "Session grew to {session} bytes");
        // A parked connection is one allocation: at most jemalloc's 160 class.
        assert!(parked <= 160, "a parked connection grew to {parked} bytes");
    }
}
