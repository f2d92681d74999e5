//! Idle connections without a task. A connection that has had nothing to do
//! for a while and holds nothing in flight hands its socket and its compact
//! state (`ParkedConnection`) to its worker's parking lot and its task ends.
//! The lot watches every parked socket with one epoll set of its own and
//! every keep-alive deadline with one timer; the first byte from the client,
//! a delivery or a word from the broker, or the deadline, makes the
//! connection a task again, which then does what it would have done.
//!
//! Why: what tokio keeps per connection, whatever the connection does, is a
//! task cell (896 bytes for ours), an I/O registration (256) and a timer
//! entry (112): ~1,260 of the ~1,830 bytes an idle connection cost, and more
//! than Mosquitto's whole connection (~750). A parked one costs ~190.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use mio::unix::SourceFd;
use parking_lot::Mutex;
use tracing::{debug, warn};
use vigil_proto::server::{ParkedConnection, ServerConfig, PINGRESP};

use super::{Attached, LiveSlot};
use crate::core::{Broker, ConnStats, ControlSignal};

/// mio events taken per poll of the lot's epoll set.
const EVENTS_PER_POLL: usize = 256;

/// What a parked connection leaves with the lot.
pub(super) struct Body {
    pub(super) stream: std::net::TcpStream,
    pub(super) conn: ParkedConnection,
    pub(super) attached: Attached,
    pub(super) control: Arc<ControlSignal>,
    pub(super) slot: Option<LiveSlot>,
    pub(super) stats: Arc<ConnStats>,
}

/// One parked connection; also the waker its session's signals hold.
pub(super) struct Parked {
    lot: Weak<ParkingLot>,
    /// Its place in the lot (and its epoll token), set when admitted.
    key: AtomicU32,
    /// Queued on the lot's woken list already.
    woken: AtomicBool,
    /// When the lot must wake it for its keep-alive deadline (lot ms; 0:
    /// never); moved by pings answered in place, under the lot's lock.
    deadline_ms: AtomicU64,
    body: Mutex<Option<Body>>,
}

impl Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.woken.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(lot) = self.lot.upgrade() {
            lot.woken.lock().push(self.clone());
            lot.waker.wake();
        }
    }
}

struct LotState {
    registry: mio::Registry,
    slots: slab::Slab<Arc<Parked>>,
    /// Keep-alive deadlines (lot ms, key); entries of connections gone since
    /// are skipped when they come up, and swept when they outnumber the rest.
    deadlines: BinaryHeap<Reverse<(u64, u32)>>,
}

/// The parking lot of one worker: its parked connections, their sockets in
/// one epoll set, their deadlines under one timer.
pub(crate) struct ParkingLot {
    broker: Arc<Broker>,
    config: ServerConfig,
    /// How long a connection must have been idle to park.
    pub(super) park_after: Duration,
    epoch: Instant,
    state: Mutex<LotState>,
    woken: Mutex<Vec<Arc<Parked>>>,
    /// The lot's task: woken for woken connections and earlier deadlines.
    waker: AtomicWaker,
    rearm: AtomicBool,
}

impl std::fmt::Debug for ParkingLot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot")
            .field("parked", &self.state.lock().slots.len())
            .finish()
    }
}

impl ParkingLot {
    /// A lot and the task that serves it (to be spawned on the worker whose
    /// connections park there).
    pub(crate) fn start(
        broker: Arc<Broker>,
        config: ServerConfig,
        park_after: Duration,
    ) -> std::io::Result<(
        Arc<ParkingLot>,
        impl std::future::Future<Output = ()> + Send,
    )> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let lot = Arc::new(ParkingLot {
            broker,
            config,
            park_after,
            epoch: Instant::now(),
            state: Mutex::new(LotState {
                registry,
                slots: slab::Slab::new(),
                deadlines: BinaryHeap::new(),
            }),
            woken: Mutex::new(Vec::new()),
            waker: AtomicWaker::new(),
            rearm: AtomicBool::new(false),
        });
        let serving = lot.clone();
        Ok((lot, async move {
            if let Err(e) = serving.serve(poll).await {
                warn!(error = %e, "parking lot stopped; parked connections are lost");
            }
        }))
    }

    /// Milliseconds since the lot started (the connections' idle clock).
    pub(super) fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    /// The instant `ms` on the lot's clock is.
    pub(super) fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// The settings connections resumed from here run with.
    pub(super) fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn deadline_ms(&self, deadline: Option<Instant>) -> u64 {
        // +1: a deadline in the lot's first millisecond is not "never".
        deadline.map_or(0, |d| self.ms(d) + 1)
    }

    /// A place for a connection whose session signals `control` and
    /// `mailbox`, registered as their waker; `None` if either already has
    /// something for the connection (it must not park).
    pub(super) fn reserve(
        self: &Arc<Self>,
        attached: &Attached,
        control: &ControlSignal,
        deadline: Option<Instant>,
    ) -> Option<Arc<Parked>> {
        let parked = Arc::new(Parked {
            lot: Arc::downgrade(self),
            key: AtomicU32::new(u32::MAX),
            woken: AtomicBool::new(false),
            deadline_ms: AtomicU64::new(self.deadline_ms(deadline)),
            body: Mutex::new(None),
        });
        let waker = Waker::from(parked.clone());
        let busy = control.register(&waker) | attached.session.mailbox.register(&waker);
        (!busy).then_some(parked)
    }

    /// Parks `body` in the place `reserve` gave it. Returns the body if its
    /// socket cannot be watched (the connection must go on as a task).
    pub(super) fn admit(self: &Arc<Self>, parked: Arc<Parked>, body: Body) -> Result<(), Body> {
        let fd = body.stream.as_raw_fd();
        // All of it under the lot's lock: an epoll event for the socket, or
        // an unpark for a wake, takes that lock before it looks at the body,
        // so it sees the connection either not parked at all or parked whole.
        let mut state = self.state.lock();
        let key = state.slots.vacant_key();
        let Ok(token) = u32::try_from(key) else {
            return Err(body);
        };
        if let Err(e) =
            state
                .registry
                .register(&mut SourceFd(&fd), mio::Token(key), mio::Interest::READABLE)
        {
            warn!(error = %e, "cannot park a connection; it stays a task");
            return Err(body);
        }
        {
            let mut place = parked.body.lock();
            // Woken since `reserve`: the lot's unpark found no body, and
            // nothing will wake it again. It goes on as a task instead.
            if parked.woken.load(Ordering::Acquire) {
                drop(place);
                if let Err(e) = state.registry.deregister(&mut SourceFd(&fd)) {
                    debug!(error = %e, "deregistering a socket that did not park");
                }
                return Err(body);
            }
            body.attached.session.set_parked(true);
            *place = Some(body);
        }
        parked.key.store(token, Ordering::Relaxed);
        state.slots.insert(parked.clone());
        let deadline = parked.deadline_ms.load(Ordering::Relaxed);
        if deadline != 0 {
            let earliest = state.deadlines.peek().map(|Reverse((at, _))| *at);
            state.deadlines.push(Reverse((deadline, token)));
            if earliest.is_none_or(|at| deadline < at) {
                self.rearm.store(true, Ordering::Release);
                self.waker.wake();
            }
        }
        self.broker
            .counters()
            .connections_parked
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Number of connections parked now.
    pub(crate) fn parked(&self) -> usize {
        self.state.lock().slots.len()
    }

    async fn serve(self: Arc<Self>, poll: mio::Poll) -> std::io::Result<()> {
        // Deprecated for I/O safety (the fd must stay open while registered):
        // the Poll owns its epoll fd and the AsyncFd owns the Poll, so it does.
        #[allow(deprecated)]
        let mut poll =
            tokio::io::unix::AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        let mut events = mio::Events::with_capacity(EVENTS_PER_POLL);
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut timer_at: Option<u64> = None;
        let mut woken = Vec::new();
        loop {
            let next = self
                .state
                .lock()
                .deadlines
                .peek()
                .map(|Reverse((at, _))| *at);
            if next != timer_at {
                if let Some(at) = next {
                    let when = self.epoch + Duration::from_millis(at);
                    timer.as_mut().reset(when.into());
                }
                timer_at = next;
            }
            tokio::select! {
                biased;
                ready = poll.readable_mut() => {
                    let mut guard = ready?;
                    loop {
                        guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO))?;
                        let keys: Vec<usize> = events.iter().map(|e| e.token().0).collect();
                        for key in &keys {
                            let parked = self.state.lock().slots.get(*key).cloned();
                            if let Some(parked) = parked {
                                self.on_readable(&parked);
                            }
                        }
                        if keys.len() < EVENTS_PER_POLL {
                            break;
                        }
                    }
                    guard.clear_ready();
                }
                () = std::future::poll_fn(|cx| self.poll_woken(cx)) => {
                    std::mem::swap(&mut *self.woken.lock(), &mut woken);
                    for parked in woken.drain(..) {
                        self.unpark(&parked, &[]);
                    }
                }
                () = &mut timer, if timer_at.is_some() => {
                    timer_at = None;
                    self.expire_due();
                }
            }
        }
    }

    fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        let rearm = self.rearm.swap(false, Ordering::AcqRel);
        if rearm || !self.woken.lock().is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Wakes every parked connection whose keep-alive deadline has come.
    fn expire_due(self: &Arc<Self>) {
        let now = self.now_ms();
        loop {
            let due = {
                let mut state = self.state.lock();
                match state.deadlines.peek() {
                    Some(Reverse((at, _))) if *at <= now => {}
                    _ => break,
                }
                let Some(Reverse((at, key))) = state.deadlines.pop() else {
                    break;
                };
                // The connection of this entry may have gone, and its place
                // been taken by another with another deadline.
                state
                    .slots
                    .get(key as usize)
                    .filter(|p| p.deadline_ms.load(Ordering::Relaxed) == at)
                    .cloned()
            };
            if let Some(parked) = due {
                self.unpark(&parked, &[]);
            }
        }
        let mut state = self.state.lock();
        if state.deadlines.len() > 2 * state.slots.len() + 1024 {
            let live: Vec<_> = state
                .slots
                .iter()
                .map(|(key, p)| (key, p.deadline_ms.load(Ordering::Relaxed)))
                .filter(|(_, at)| *at != 0)
                .map(|(key, at)| Reverse((at, key as u32)))
                .collect();
            state.deadlines = live.into();
        }
    }

    /// The client of `parked` sent something: PINGREQs alone are answered
    /// here (most of what an idle client ever sends, and a task spawned
    /// for each would put two more hops in every PINGRESP under load);
    /// anything else makes the connection a task to read it.
    fn on_readable(self: &Arc<Self>, parked: &Arc<Parked>) {
        // Peeked, not read: what is not pings stays in the socket for the task.
        let mut seen = [0u8; 16];
        let mut replies = [0u8; 16];
        let unsent = {
            let mut body = parked.body.lock();
            let Some(body) = body.as_mut() else {
                return; // unparked already
            };
            let pings = match body.stream.peek(&mut seen) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // Fewer than the buffer holds: the socket is drained, so the
                // next byte is a new edge for the epoll set.
                Ok(n) if n < seen.len() => ParkedConnection::pings_in(&seen[..n]),
                _ => None,
            };
            let read_at = Instant::now();
            let len = pings.map_or(0, |p| 2 * p);
            if len == 0 || !matches!(body.stream.read(&mut seen[..len]), Ok(n) if n == len) {
                None // not only pings, or an error: the task meets it itself
            } else {
                body.conn.handle_ping(Instant::now());
                for reply in replies[..len].chunks_exact_mut(2) {
                    reply.copy_from_slice(&PINGRESP);
                }
                let written = match body.stream.write(&replies[..len]) {
                    Ok(n) => n.min(len),
                    Err(_) => 0,
                };
                crate::observe::traffic::bytes_in(len);
                crate::observe::traffic::bytes_out(written);
                let pings = (len / 2) as u64;
                crate::observe::traffic::packets_in(pings);
                crate::observe::traffic::packets_out(pings);
                body.stats.received(len, pings, read_at);
                body.stats.sent_bytes(written);
                body.stats.sent_packets(pings);
                if written == len {
                    crate::observe::histogram::record_pingresp(read_at.elapsed());
                    let deadline = self.deadline_ms(body.conn.deadline());
                    let mut state = self.state.lock();
                    parked.deadline_ms.store(deadline, Ordering::Relaxed);
                    if deadline != 0 {
                        let key = parked.key.load(Ordering::Relaxed);
                        state.deadlines.push(Reverse((deadline, key)));
                    }
                    return;
                }
                // The socket would not take the replies now: the task
                // writes the rest.
                Some(written..len)
            }
        };
        let unsent = unsent.map_or(&[][..], |r| &replies[r]);
        self.unpark(parked, unsent);
    }

    /// Makes `parked` a task again on this worker; `unsent` is what it must
    /// write before anything else.
    fn unpark(self: &Arc<Self>, parked: &Arc<Parked>, unsent: &[u8]) {
        let Some(body) = parked.body.lock().take() else {
            return; // unparked already: a stale wake or event
        };
        body.attached.session.set_parked(false);
        self.broker
            .counters()
            .connections_parked
            .fetch_sub(1, Ordering::Relaxed);
        {
            let mut state = self.state.lock();
            let key = parked.key.load(Ordering::Relaxed) as usize;
            if state.slots.get(key).is_some_and(|p| Arc::ptr_eq(p, parked)) {
                state.slots.remove(key);
            }
            let fd = body.stream.as_raw_fd();
            if let Err(e) = state.registry.deregister(&mut SourceFd(&fd)) {
                debug!(error = %e, "deregistering a parked socket");
            }
        }
        let client = body.attached.session.client_id().to_owned();
        match super::resume(
            body,
            unsent,
            self.broker.clone(),
            self.config,
            Some(self.clone()),
        ) {
            Ok(task) => {
                tokio::spawn(task);
            }
            Err(e) => {
                warn!(client = %client, error = %e, "a parked connection could not resume; dropped")
            }
        }
    }
}

/// Where a resumed connection's peer is (for logs), or the unspecified
/// address if the socket no longer says.
pub(super) fn peer_of(stream: &tokio::net::TcpStream) -> SocketAddr {
    stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Bytes of a parked connection's allocation (its `Arc`), for the size test.
#[cfg(test)]
pub(super) fn parked_size() -> usize {
    std::mem::size_of::<Parked>() + 2 * std::mem::size_of::<usize>()
}

#[cfg(test)]
mod tests {
    use vigil_proto::server::{Accepted, ServerConnection, ServerEvent};
    use vigil_proto::{Connect, Packet, ProtocolVersion};

    use super::*;
    use crate::core::{ConnectRequest, CoreConfig};

    /// A connected session's parkable body, and the client end of its socket.
    async fn body(broker: &Arc<Broker>, id: &str) -> (Body, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let grant = broker.connect_now(
            vigil_proto::time::Clock::now(),
            &ConnectRequest {
                client_id: id.into(),
                protocol: ProtocolVersion::V3_1_1,
                clean_start: true,
                session_expiry: 0,
                will: None,
                username: None,
            },
        );
        let now = Instant::now();
        let mut conn = ServerConnection::new(ServerConfig::default(), now);
        conn.handle_packet(
            now,
            Packet::Connect(Box::new(Connect {
                protocol: ProtocolVersion::V3_1_1,
                clean_start: true,
                keep_alive: 60,
                client_id: id.into(),
                ..Connect::default()
            })),
        );
        assert!(matches!(conn.poll_event(), Some(ServerEvent::Connect(_))));
        conn.accept(now, Accepted::default());
        assert!(matches!(conn.poll_transmit(), Some(Packet::ConnAck(_))));
        let body = Body {
            stream,
            conn: conn.park().expect("connected and idle: parks"),
            attached: Attached {
                session: grant.session,
                conn_id: grant.conn_id,
            },
            control: grant.control,
            slot: None,
            stats: Default::default(),
        };
        (body, client)
    }

    fn lot() -> Arc<ParkingLot> {
        let broker = Broker::new(CoreConfig::default(), Instant::now());
        let (lot, _serve) =
            ParkingLot::start(broker, ServerConfig::default(), Duration::ZERO).unwrap();
        lot
    }

    /// Two connections that both got a place before either was admitted
    /// park side by side (a place once fixed its slot when reserved, and the
    /// second took the first one's).
    #[tokio::test]
    async fn places_reserved_together_park_apart() {
        let lot = lot();
        let (a, _ca) = body(&lot.broker, "a").await;
        let (b, _cb) = body(&lot.broker, "b").await;
        let pa = lot.reserve(&a.attached, &a.control, None).unwrap();
        let pb = lot.reserve(&b.attached, &b.control, None).unwrap();
        assert!(lot.admit(pa.clone(), a).is_ok());
        assert!(lot.admit(pb.clone(), b).is_ok());
        assert_eq!(lot.parked(), 2);
        assert_ne!(
            pa.key.load(Ordering::Relaxed),
            pb.key.load(Ordering::Relaxed)
        );
    }

    /// A wake between `reserve` and `admit` (a delivery, a word from the
    /// broker) is not lost: the connection is handed back to go on as a task.
    #[tokio::test]
    async fn a_connection_woken_before_it_is_admitted_does_not_park() {
        let lot = lot();
        let (a, _ca) = body(&lot.broker, "a").await;
        let place = lot.reserve(&a.attached, &a.control, None).unwrap();
        Wake::wake_by_ref(&place);
        assert!(lot.admit(place, a).is_err(), "handed back to run as a task");
        assert_eq!(lot.parked(), 0);
    }
}
