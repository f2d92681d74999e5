//! The connection driver: the one task that owns the socket and the client
//! session. It runs on its own thread (see `driver.rs`) and never waits on the
//! application: messages go out through a bounded channel, and when the
//! channel is full QoS 0 messages are dropped (counted) while QoS 1/2 messages
//! are parked unacknowledged, so the broker's Receive Maximum bounds them.
//! `Connected`/`Disconnected` are parked too when the channel is full, never
//! dropped.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tracing::{debug, info};
use vigil_proto::client::{ClientCloseReason, ClientEvent, ClientSession};
use vigil_proto::{Packet, Publish, QoS, ReasonCode, Subscription};

use crate::{
    packet_log, ClientError, Command, ConnectOptions, Connector, Event, Message, OfflinePolicy,
    Stats,
};

/// Where a publish's outcome goes, and the slot it holds in
/// `max_pending_publishes` until it is finished.
pub(crate) struct PublishWaiter {
    pub(crate) tx: oneshot::Sender<Result<ReasonCode, ClientError>>,
    pub(crate) _permit: OwnedSemaphorePermit,
}

impl PublishWaiter {
    fn finish(self, outcome: Result<ReasonCode, ClientError>) {
        let _ = self.tx.send(outcome);
        // The permit drops here: `publish` may queue one more.
    }
}

type RequestWaiter = oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>;

/// Token of SUBSCRIBEs the client sends on its own (resubscribe after a lost session).
const INTERNAL: u64 = 0;

/// Commands taken per wake-up, so a burst of publishes leaves in one write.
const COMMAND_BATCH: usize = 64;

/// Something the application has not taken yet because its queue was full.
enum Parked {
    /// A QoS 1/2 message, acknowledged when the application takes it.
    Message(Box<Publish>),
    /// `Connected` or `Disconnected`: never dropped.
    Status(Event),
}

pub(crate) struct EventLoop {
    options: ConnectOptions,
    connector: Arc<dyn Connector>,
    session: ClientSession,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    stats: Arc<Stats>,
    ready: Option<oneshot::Sender<Result<(), ClientError>>>,
    next_token: u64,
    publish_waiters: HashMap<u64, PublishWaiter>,
    request_waiters: HashMap<u64, RequestWaiter>,
    parked: VecDeque<Parked>,
    subscriptions: Vec<Subscription>,
    closed: Option<ClientCloseReason>,
    /// The socket error behind a `Transport` close, kept for its `io::ErrorKind`.
    io_error: Option<io::Error>,
    last_error: Option<Arc<ClientError>>,
    stop: Option<oneshot::Sender<()>>,
    stopping: bool,
    /// Waits for the re-authentication under way.
    reauth_waiter: Option<RequestWaiter>,
}

impl EventLoop {
    pub(crate) fn new(
        options: ConnectOptions,
        connector: Arc<dyn Connector>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        stats: Arc<Stats>,
        ready: oneshot::Sender<Result<(), ClientError>>,
    ) -> EventLoop {
        EventLoop {
            session: ClientSession::new(options.session.clone(), Instant::now()),
            options,
            connector,
            commands,
            events,
            stats,
            ready: Some(ready),
            next_token: 1,
            publish_waiters: HashMap::new(),
            request_waiters: HashMap::new(),
            parked: VecDeque::new(),
            subscriptions: Vec::new(),
            closed: None,
            io_error: None,
            last_error: None,
            stop: None,
            stopping: false,
            reauth_waiter: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let error = self.connect_once().await;
            if matches!(error, ClientError::ClosedWithoutDisconnect { .. }) {
                self.stats
                    .closed_without_disconnect
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.connection_lost(&error);
            if self.stopping {
                break;
            }
            if let Some(ready) = self.ready.take() {
                // The first connection never came up: the caller gets the reason.
                let _ = ready.send(Err(error));
                break;
            }
            let Some(backoff) = self.options.reconnect else {
                self.emit_status(Event::Disconnected(error));
                break;
            };
            if error.is_permanent_refusal() {
                info!(error = %error, "refused; not reconnecting");
                self.emit_status(Event::Disconnected(error));
                break;
            }
            info!(error = %error, "connection lost; reconnecting");
            self.emit_status(Event::Disconnected(error));
            if started.elapsed() >= backoff.stable_after {
                attempt = 0;
            }
            let delay = backoff.delay(attempt, rand::random::<f64>());
            attempt = attempt.saturating_add(1);
            self.emit_status(Event::Reconnecting { attempt, delay });
            if !self.wait_offline(delay).await {
                break;
            }
        }
        let end = if self.stopping {
            ClientError::Closed
        } else {
            ClientError::NotConnected {
                context: "the client stopped before the broker acknowledged the message".into(),
                cause: self.last_error.clone(),
            }
        };
        self.fail_everything(end);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // What the application has not taken yet: statuses are never dropped,
        // so wait until it reads them (or drops `Events`). QoS 1/2 messages
        // parked here were never acknowledged: the broker redelivers them
        // to a persistent session.
        for p in std::mem::take(&mut self.parked) {
            if let Parked::Status(ev) = p {
                if self.events.send(ev).await.is_err() {
                    break;
                }
            }
        }
    }

    /// One connection from TCP connect to its end; returns why it ended.
    async fn connect_once(&mut self) -> ClientError {
        let timeout = self.options.session.connect_timeout;
        let stream = match tokio::time::timeout(timeout, self.connector.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return ClientError::io(
                    format!(
                        "cannot connect to {}:{}",
                        self.options.host, self.options.port
                    ),
                    e,
                )
            }
            Err(_) => return ClientError::ConnectTimeout(timeout),
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        self.closed = None;
        self.io_error = None;
        // A fresh SCRAM nonce per connection, from the OS's CSPRNG
        // (rand's thread generator is seeded from it and is a CSPRNG).
        self.session.set_auth_nonce(scram_nonce());
        self.session.start(Instant::now());
        let mut rbuf = BytesMut::with_capacity(8192);
        let mut wbuf = BytesMut::new();
        loop {
            self.handle_session_events();
            wbuf.clear();
            let version = self.session.version();
            let trace = packet_log::enabled();
            while let Some(p) = self.session.poll_transmit() {
                if trace {
                    packet_log::log(&self.options.session.client_id, "sending", &p, version);
                }
                if let Err(e) = p.encode(version, &mut wbuf) {
                    debug!(error = %e, "packet not encodable; dropped");
                }
            }
            let qos0 = self.session.take_transmitted_qos0();
            if !wbuf.is_empty() {
                // Flushed too: TLS and WebSocket streams hold what they are given.
                let written = async {
                    wr.write_all(&wbuf).await?;
                    wr.flush().await
                };
                match written.await {
                    Ok(()) => {
                        self.session.handle_transmitted(Instant::now());
                        self.finish_publishes(qos0, || Ok(ReasonCode::SUCCESS));
                    }
                    Err(e) => {
                        self.transport_failed(e);
                        let lost = self.lost_before_written("the write failed");
                        self.finish_publishes(qos0, || Err(lost.clone()));
                    }
                }
            }
            if self.session.is_closed() {
                self.handle_session_events();
                let _ = wr.shutdown().await;
                return self.close_error();
            }
            // The timer first, before anything else can keep the loop busy: a
            // flood of inbound messages must not delay a PINGREQ.
            let deadline = self.session.poll_timeout();
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                // Whatever the socket already holds goes first: after a stall
                // (a stopped process) the broker's close or its PINGRESP is
                // waiting there, and is the truth, not our overdue timer. The
                // yield lets the runtime poll the reactor first, which learns
                // of that readiness only then.
                tokio::task::yield_now().await;
                let ready = tokio::select! {
                    biased;
                    read = rd.read_buf(&mut rbuf) => Some(read),
                    _ = std::future::ready(()) => None,
                };
                match ready {
                    Some(Ok(0)) => self.session.handle_peer_closed(Instant::now()),
                    Some(Ok(_)) => self.decode(&mut rbuf),
                    Some(Err(e)) => self.transport_failed(e),
                    None => {}
                }
                self.session.handle_timeout(Instant::now());
                continue;
            }
            let wake = tokio::select! {
                read = rd.read_buf(&mut rbuf) => Wake::Read(read),
                _ = sleep_until(deadline), if deadline.is_some() => Wake::Timer,
                permit = self.events.clone().reserve_owned(), if !self.parked.is_empty() => Wake::Room(permit.ok()),
                cmd = self.commands.recv() => Wake::Command(cmd),
            };
            match wake {
                Wake::Read(Ok(0)) => self.session.handle_peer_closed(Instant::now()),
                Wake::Read(Ok(_)) => self.decode(&mut rbuf),
                Wake::Read(Err(e)) => self.transport_failed(e),
                // Back to the top, where an overdue timer looks at the socket first.
                Wake::Timer => {}
                Wake::Room(Some(permit)) => self.hand_over_parked(permit),
                Wake::Room(None) => {
                    // The application dropped `Events`: release the broker's window.
                    for p in std::mem::take(&mut self.parked) {
                        if let Parked::Message(m) = p {
                            self.session.ack_inbound(m.packet_id, m.qos);
                        }
                    }
                }
                Wake::Command(Some(cmd)) => {
                    self.apply(cmd);
                    for _ in 1..COMMAND_BATCH {
                        match self.commands.try_recv() {
                            Ok(cmd) => self.apply(cmd),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Command(None) => {
                    // Every `Client` handle is gone: stop for good, do not reconnect.
                    self.stopping = true;
                    self.session.disconnect();
                }
            }
        }
    }

    /// A socket error: a reset or broken pipe is the broker hanging up, which
    /// gets the keep-alive diagnosis; anything else keeps its `io::Error`.
    fn transport_failed(&mut self, e: io::Error) {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ) {
            self.session.handle_peer_closed(Instant::now());
        } else {
            self.session.handle_transport_closed(e.to_string());
            self.io_error = Some(e);
        }
    }

    fn close_error(&mut self) -> ClientError {
        match self.closed.take() {
            Some(ClientCloseReason::Transport(why)) => match self.io_error.take() {
                Some(e) => ClientError::io("the connection failed", e),
                None => ClientError::io("the connection failed", io::Error::other(why)),
            },
            Some(reason) => ClientError::from(reason),
            None => ClientError::Closed,
        }
    }

    fn decode(&mut self, rbuf: &mut BytesMut) {
        let now = Instant::now();
        let max = self.options.session.max_packet_size.unwrap_or(u32::MAX);
        let trace = packet_log::enabled();
        loop {
            match Packet::decode(rbuf, self.session.version(), max) {
                Ok(Some(p)) => {
                    if trace {
                        let v = self.session.version();
                        packet_log::log(&self.options.session.client_id, "received", &p, v);
                    }
                    self.session.handle_packet(now, p)
                }
                Ok(None) => break,
                Err(e) => {
                    self.session
                        .fail(ClientCloseReason::ProtocolViolation(e.to_string()));
                    break;
                }
            }
        }
    }

    fn handle_session_events(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                ClientEvent::Connected {
                    session_present, ..
                } => match self.ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Ok(()));
                    }
                    None => {
                        self.emit_status(Event::Connected { session_present });
                        if !session_present && !self.subscriptions.is_empty() {
                            self.session
                                .subscribe(INTERNAL, self.subscriptions.clone(), None);
                        }
                    }
                },
                ClientEvent::Message(m) => self.deliver(m),
                ClientEvent::Published { token, reason } => {
                    if let Some(w) = self.publish_waiters.remove(&token) {
                        w.finish(if reason.is_error() {
                            Err(ClientError::PublishRefused(reason))
                        } else {
                            Ok(reason)
                        });
                    }
                }
                ClientEvent::Subscribed { token, reasons }
                | ClientEvent::Unsubscribed { token, reasons } => {
                    if let Some(w) = self.request_waiters.remove(&token) {
                        let _ = w.send(Ok(reasons));
                    }
                }
                ClientEvent::Reauthenticated => {
                    if let Some(w) = self.reauth_waiter.take() {
                        let _ = w.send(Ok(Vec::new()));
                    }
                }
                ClientEvent::Closed(reason) => self.closed = Some(reason),
            }
        }
    }

    /// `Connected` / `Disconnected`: behind whatever is parked, never dropped.
    fn emit_status(&mut self, ev: Event) {
        if !self.parked.is_empty() {
            self.parked.push_back(Parked::Status(ev));
            return;
        }
        match self.events.try_send(ev) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(ev)) => self.parked.push_back(Parked::Status(ev)),
        }
    }

    fn deliver(&mut self, m: Box<Publish>) {
        let (packet_id, qos) = (m.packet_id, m.qos);
        if qos == QoS::AtMostOnce {
            if !self.parked.is_empty() {
                // The queue was full a moment ago and what waits goes first: a
                // QoS 0 message must not overtake a parked `Disconnected`.
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match self.events.try_reserve() {
                Ok(permit) => permit.send(to_event(*m)),
                Err(TrySendError::Full(())) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Closed(())) => {}
            }
            return;
        }
        if !self.parked.is_empty() {
            self.parked.push_back(Parked::Message(m));
            return;
        }
        match self.events.try_reserve() {
            Ok(permit) => {
                self.session.ack_inbound(packet_id, qos);
                permit.send(to_event(*m));
            }
            Err(TrySendError::Full(())) => self.parked.push_back(Parked::Message(m)),
            // The application dropped `Events`: acknowledge so the broker is not stalled.
            Err(TrySendError::Closed(())) => self.session.ack_inbound(packet_id, qos),
        }
    }

    fn hand_over_parked(&mut self, permit: mpsc::OwnedPermit<Event>) {
        match self.parked.pop_front() {
            Some(Parked::Message(m)) => {
                // Acknowledged only now that the application has it.
                self.session.ack_inbound(m.packet_id, m.qos);
                permit.send(to_event(*m));
            }
            Some(Parked::Status(ev)) => {
                permit.send(ev);
            }
            None => {}
        }
    }

    fn apply(&mut self, cmd: Command) {
        let token = self.next_token;
        self.next_token += 1;
        let connected = self.session.is_connected();
        match cmd {
            Command::Publish(p, waiter) => {
                if let Some((size, max)) = self.session.oversize(&p) {
                    return waiter.finish(Err(ClientError::PacketTooLarge { size, max }));
                }
                if !connected {
                    return self.publish_offline(token, *p, waiter);
                }
                self.publish_waiters.insert(token, waiter);
                self.session.publish(token, *p);
            }
            Command::Subscribe(filters, waiter) => {
                if !connected {
                    let _ = waiter.send(Err(self.not_connected()));
                    return;
                }
                for f in &filters {
                    self.subscriptions.retain(|s| s.filter != f.filter);
                    self.subscriptions.push(f.clone());
                }
                self.request_waiters.insert(token, waiter);
                self.session.subscribe(token, filters, None);
            }
            Command::Unsubscribe(filters, waiter) => {
                if !connected {
                    let _ = waiter.send(Err(self.not_connected()));
                    return;
                }
                self.subscriptions.retain(|s| !filters.contains(&s.filter));
                self.request_waiters.insert(token, waiter);
                self.session.unsubscribe(token, filters);
            }
            Command::Reauthenticate(waiter) => {
                if self.reauth_waiter.is_some() {
                    let _ = waiter.send(Err(ClientError::ProtocolViolation(
                        "a re-authentication is already under way".into(),
                    )));
                    return;
                }
                self.session.set_auth_nonce(scram_nonce());
                if self.session.reauthenticate() {
                    self.reauth_waiter = Some(waiter);
                } else {
                    let _ = waiter.send(Err(self.not_connected()));
                }
            }
            Command::Disconnect(done) => {
                self.stopping = true;
                self.stop = Some(done);
                self.session.disconnect();
            }
        }
    }

    fn publish_offline(&mut self, token: u64, p: Publish, waiter: PublishWaiter) {
        match self.options.offline {
            OfflinePolicy::FailFast => waiter.finish(Err(self.not_connected())),
            OfflinePolicy::Queue(max) => {
                if self.session.unfinished_publishes() + self.session.waiting_qos0() >= max {
                    waiter.finish(Err(ClientError::QueueFull(max)));
                    return;
                }
                self.publish_waiters.insert(token, waiter);
                self.session.publish(token, p);
            }
        }
    }

    fn finish_publishes(
        &mut self,
        tokens: Vec<u64>,
        outcome: impl Fn() -> Result<ReasonCode, ClientError>,
    ) {
        for token in tokens {
            if let Some(w) = self.publish_waiters.remove(&token) {
                w.finish(outcome());
            }
        }
    }

    fn not_connected(&self) -> ClientError {
        ClientError::NotConnected {
            context: "the connection is down and the client is reconnecting".into(),
            cause: self.last_error.clone(),
        }
    }

    fn lost_before_written(&self, why: &str) -> ClientError {
        ClientError::NotConnected {
            context: format!("connection lost before the message was written ({why})"),
            cause: None,
        }
    }

    /// A connection ended: nothing QoS 0 that was not written may report success.
    fn connection_lost(&mut self, error: &ClientError) {
        let cause = Arc::new(error.clone());
        self.last_error = Some(cause.clone());
        let lost = ClientError::NotConnected {
            context: "connection lost before the message was written".into(),
            cause: Some(cause),
        };
        if self.options.offline == OfflinePolicy::FailFast || self.options.reconnect.is_none() {
            let tokens = self.session.drain_unsent_qos0();
            self.finish_publishes(tokens, || Err(lost.clone()));
        }
        for (_, w) in self.request_waiters.drain() {
            let _ = w.send(Err(lost.clone()));
        }
        if let Some(w) = self.reauth_waiter.take() {
            let _ = w.send(Err(error.clone()));
        }
        // Messages parked for the application stay: they were received. If the
        // broker resends one on resume, QoS 2 is filtered by the session's
        // inbound set; a QoS 1 duplicate is what QoS 1 allows.
    }

    /// Waits out a back-off delay while answering commands; false if the client stops.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                permit = self.events.clone().reserve_owned(), if !self.parked.is_empty() => match permit {
                    Ok(permit) => self.hand_over_parked(permit),
                    Err(_) => self.parked.clear(),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Disconnect(done)) => {
                        self.stop = Some(done);
                        return false;
                    }
                    Some(cmd) => self.apply(cmd),
                    None => return false,
                },
            }
        }
    }

    fn fail_everything(&mut self, error: ClientError) {
        if let Some(w) = self.reauth_waiter.take() {
            let _ = w.send(Err(error.clone()));
        }
        for (_, w) in self.publish_waiters.drain() {
            w.finish(Err(error.clone()));
        }
        for (_, w) in self.request_waiters.drain() {
            let _ = w.send(Err(error.clone()));
        }
    }
}

/// 24 random alphanumerics (143 bits): printable, no commas.
fn scram_nonce() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

fn to_event(p: Publish) -> Event {
    Event::Message(Box::new(Message::from_publish(p)))
}

/// What woke the connection loop.
enum Wake {
    Read(io::Result<usize>),
    Timer,
    Room(Option<mpsc::OwnedPermit<Event>>),
    Command(Option<Command>),
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
