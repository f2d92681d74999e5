//! The one task that owns the socket and the client session. It never waits
//! on the application: messages go out through a bounded channel, and when the
//! channel is full QoS 0 messages are dropped (counted) while QoS 1/2 messages
//! are parked unacknowledged, so the broker's Receive Maximum bounds them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};
use vigil_proto::client::{ClientCloseReason, ClientEvent, ClientSession};
use vigil_proto::{Packet, Publish, QoS, ReasonCode, Subscription};

use crate::{ClientError, Command, ConnectOptions, Connector, Event, OfflinePolicy, Stats};

type PublishWaiter = oneshot::Sender<Result<ReasonCode, ClientError>>;
type RequestWaiter = oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>;

/// Token of SUBSCRIBEs the client sends on its own (resubscribe after a lost session).
const INTERNAL: u64 = 0;

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
    qos0_unwritten: Vec<u64>,
    qos0_queued: Vec<u64>,
    parked: VecDeque<Box<Publish>>,
    subscriptions: Vec<Subscription>,
    closed: Option<ClientCloseReason>,
    stop: Option<oneshot::Sender<()>>,
    stopping: bool,
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
            qos0_unwritten: Vec::new(),
            qos0_queued: Vec::new(),
            parked: VecDeque::new(),
            subscriptions: Vec::new(),
            closed: None,
            stop: None,
            stopping: false,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let error = self.connect_once().await;
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
                let _ = self.events.try_send(Event::Disconnected(error));
                break;
            };
            info!(error = %error, "connection lost; reconnecting");
            let _ = self.events.try_send(Event::Disconnected(error));
            if started.elapsed() >= backoff.stable_after {
                attempt = 0;
            }
            let delay = backoff.delay(attempt, rand::random::<f64>());
            attempt = attempt.saturating_add(1);
            if !self.wait_offline(delay).await {
                break;
            }
        }
        self.fail_everything(ClientError::Closed);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// One connection from TCP connect to its end; returns why it ended.
    async fn connect_once(&mut self) -> ClientError {
        let timeout = self.options.session.connect_timeout;
        let stream = match tokio::time::timeout(timeout, self.connector.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return ClientError::Io(format!(
                    "cannot connect to {}:{}: {e}",
                    self.options.host, self.options.port
                ))
            }
            Err(_) => return ClientError::ConnectTimeout(timeout),
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        self.closed = None;
        self.session.start(Instant::now());
        let mut rbuf = BytesMut::with_capacity(4096);
        let mut wbuf = BytesMut::new();
        loop {
            self.handle_session_events();
            wbuf.clear();
            let version = self.session.version();
            while let Some(p) = self.session.poll_transmit() {
                if let Err(e) = p.encode(version, &mut wbuf) {
                    debug!(error = %e, "packet not encodable; dropped");
                }
            }
            if !wbuf.is_empty() {
                match wr.write_all(&wbuf).await {
                    Ok(()) => {
                        for token in self.qos0_unwritten.drain(..) {
                            if let Some(w) = self.publish_waiters.remove(&token) {
                                let _ = w.send(Ok(ReasonCode::SUCCESS));
                            }
                        }
                    }
                    Err(e) => self.session.handle_transport_closed(e.to_string()),
                }
            }
            if self.session.is_closed() {
                self.handle_session_events();
                let _ = wr.shutdown().await;
                return self
                    .closed
                    .take()
                    .map(ClientError::from)
                    .unwrap_or(ClientError::Closed);
            }
            let deadline = self.session.poll_timeout();
            let wake = tokio::select! {
                biased;
                read = rd.read_buf(&mut rbuf) => Wake::Read(read),
                _ = sleep_until(deadline), if deadline.is_some() => Wake::Timer,
                permit = self.events.clone().reserve_owned(), if !self.parked.is_empty() => Wake::Room(permit.ok().map(Box::new)),
                cmd = self.commands.recv() => Wake::Command(cmd),
            };
            match wake {
                Wake::Read(Ok(0)) => self
                    .session
                    .handle_transport_closed("the broker closed the connection".into()),
                Wake::Read(Ok(_)) => self.decode(&mut rbuf),
                Wake::Read(Err(e)) => self.session.handle_transport_closed(e.to_string()),
                Wake::Timer => self.session.handle_timeout(Instant::now()),
                Wake::Room(Some(permit)) => {
                    if let Some(m) = self.parked.pop_front() {
                        self.session.ack_inbound(m.packet_id, m.qos);
                        permit.send(Event::Message(m));
                    }
                }
                Wake::Room(None) => {
                    // The application dropped `Events`: release the broker's window.
                    for m in std::mem::take(&mut self.parked) {
                        self.session.ack_inbound(m.packet_id, m.qos);
                    }
                }
                Wake::Command(Some(cmd)) => self.apply(cmd),
                Wake::Command(None) => self.session.disconnect(),
            }
        }
    }

    fn decode(&mut self, rbuf: &mut BytesMut) {
        let now = Instant::now();
        let max = self.options.session.max_packet_size.unwrap_or(u32::MAX);
        loop {
            match Packet::decode(rbuf, self.session.version(), max) {
                Ok(Some(p)) => self.session.handle_packet(now, p),
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
                } => {
                    match self.ready.take() {
                        Some(ready) => {
                            let _ = ready.send(Ok(()));
                        }
                        None => {
                            let _ = self.events.try_send(Event::Connected { session_present });
                            if !session_present && !self.subscriptions.is_empty() {
                                self.session
                                    .subscribe(INTERNAL, self.subscriptions.clone(), None);
                            }
                        }
                    }
                    self.qos0_unwritten.append(&mut self.qos0_queued);
                }
                ClientEvent::Message(m) => self.deliver(m),
                ClientEvent::Published { token, reason } => {
                    if let Some(w) = self.publish_waiters.remove(&token) {
                        let _ = w.send(if reason.is_error() {
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
                ClientEvent::Closed(reason) => self.closed = Some(reason),
            }
        }
    }

    fn deliver(&mut self, m: Box<Publish>) {
        let (packet_id, qos) = (m.packet_id, m.qos);
        if qos == QoS::AtMostOnce {
            if let Err(TrySendError::Full(_)) = self.events.try_send(Event::Message(m)) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if !self.parked.is_empty() {
            self.parked.push_back(m);
            return;
        }
        match self.events.try_send(Event::Message(m)) {
            Ok(()) => self.session.ack_inbound(packet_id, qos),
            Err(TrySendError::Full(Event::Message(m))) => self.parked.push_back(m),
            // The application dropped `Events`: acknowledge so the broker is not stalled.
            Err(_) => self.session.ack_inbound(packet_id, qos),
        }
    }

    fn apply(&mut self, cmd: Command) {
        let token = self.next_token;
        self.next_token += 1;
        let connected = self.session.is_connected();
        match cmd {
            Command::Publish(p, waiter) => {
                if !connected {
                    return self.publish_offline(token, p, waiter);
                }
                let qos = p.qos;
                self.publish_waiters.insert(token, waiter);
                self.session.publish(token, *p);
                if qos == QoS::AtMostOnce {
                    self.qos0_unwritten.push(token);
                }
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
            Command::Disconnect(done) => {
                self.stopping = true;
                self.stop = Some(done);
                self.session.disconnect();
            }
        }
    }

    fn publish_offline(&mut self, token: u64, p: Box<Publish>, waiter: PublishWaiter) {
        match self.options.offline {
            OfflinePolicy::FailFast => {
                let _ = waiter.send(Err(self.not_connected()));
            }
            OfflinePolicy::Queue(max) => {
                if self.session.unfinished_publishes() + self.qos0_queued.len() >= max {
                    let _ = waiter.send(Err(ClientError::QueueFull(max)));
                    return;
                }
                if p.qos == QoS::AtMostOnce {
                    self.qos0_queued.push(token);
                }
                self.publish_waiters.insert(token, waiter);
                self.session.publish(token, *p);
            }
        }
    }

    fn not_connected(&self) -> ClientError {
        ClientError::NotConnected("the connection is down and the client is reconnecting".into())
    }

    /// A connection ended: nothing QoS 0 that was not written may report success.
    fn connection_lost(&mut self, error: &ClientError) {
        let lost = ClientError::NotConnected(format!(
            "connection lost before the message was written: {error}"
        ));
        for token in self.qos0_unwritten.drain(..) {
            if let Some(w) = self.publish_waiters.remove(&token) {
                let _ = w.send(Err(lost.clone()));
            }
        }
        if self.options.offline == OfflinePolicy::FailFast {
            for token in self.session.drain_unsent_qos0() {
                if let Some(w) = self.publish_waiters.remove(&token) {
                    let _ = w.send(Err(lost.clone()));
                }
            }
        }
        for (_, w) in self.request_waiters.drain() {
            let _ = w.send(Err(lost.clone()));
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
        for (_, w) in self.publish_waiters.drain() {
            let _ = w.send(Err(error.clone()));
        }
        for (_, w) in self.request_waiters.drain() {
            let _ = w.send(Err(error.clone()));
        }
    }
}

/// What woke the connection loop.
enum Wake {
    Read(std::io::Result<usize>),
    Timer,
    Room(Option<Box<mpsc::OwnedPermit<Event>>>),
    Command(Option<Command>),
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
