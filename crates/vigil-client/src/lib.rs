//! vigil-client: an async MQTT 3.1.1 / 5.0 client whose keep alive never
//! kills a healthy connection, whatever the application does.
//!
//! # Guarantees
//!
//! - **The connection lives apart from the application.** A `Client` is a
//!   cheap, cloneable handle; the connection driver (socket I/O, the
//!   keep-alive timer, PINGREQ/PINGRESP, acks) runs on its own thread with a
//!   small current-thread tokio runtime. An application that blocks its own
//!   thread or runtime (a blocking write, `std::thread::sleep`, a busy loop)
//!   cannot delay a PINGREQ: the keep alive never lapses because of it.
//! - **Messages the application does not take are bounded.** They go to it
//!   through a bounded queue (`Events`, `ConnectOptions::event_capacity`).
//!   When it is full, QoS 0 messages are dropped and counted
//!   (`Client::stats`), and QoS 1/2 messages are held unacknowledged, so the
//!   broker's flow control (Receive Maximum) stops the flow; nothing
//!   acknowledged is ever dropped. `Event::Connected` and
//!   `Event::Disconnected` are never dropped: they wait behind the queue.
//! - **Publishing pipelines.** `Client::publish` returns once the message is
//!   queued, with a `PublishToken`; awaiting the token gives the outcome
//!   (written for QoS 0, PUBACK for QoS 1, PUBCOMP for QoS 2). Up to the
//!   broker's Receive Maximum QoS 1/2 messages are in flight at once, and up to
//!   `max_pending_publishes` are accepted before `publish` waits, so a slow
//!   link costs one round trip per window, not per message. A token never
//!   reports success for a message that was not written or acknowledged.
//! - **Failures say why.** `ClientError` names the cause with its numbers and
//!   keeps its source (`ClientError::io_kind`); a broker that closes without
//!   DISCONNECT gets a diagnosis from the time of this client's last packet,
//!   an outstanding PINGREQ and the keep alive.
//!
//! Every packet sent and received is logged at debug level under the tracing
//! target `vigil_client::packets`, one line each as `mosquitto_sub -d` words
//! them (`Client c1 received PUBLISH (d0, q1, r0, m3, 'a/b', ... (5 bytes))`).
//!
//! The cost of the driver thread is one OS thread and one current-thread
//! runtime per client (measured in the README's client section).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vigil_client::ClientError> {
//! use vigil_client::{Client, ConnectOptions, Event, Message, QoS};
//! let options = ConnectOptions::builder("127.0.0.1", 1883).client_id("demo").build();
//! let (client, mut events) = Client::connect(options).await?;
//! client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//! // Queued at once; the token resolves on PUBACK.
//! let token = client.publish(Message::new("sensors/t1", "21.5").qos(QoS::AtLeastOnce)).await?;
//! token.await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Message(m) => println!("{} {:?}", m.topic, m.payload),
//!         Event::Disconnected(e) => eprintln!("lost: {e}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod error;
mod event_loop;
mod message;
mod options;
mod packet_log;
#[cfg(feature = "tls")]
mod tls;
mod token;
mod transport;
#[cfg(feature = "ws")]
mod ws;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

pub use error::ClientError;
pub use message::Message;
pub use options::{Backoff, ConnectOptions, ConnectOptionsBuilder, OfflinePolicy};
#[cfg(feature = "tls")]
pub use tls::TlsConnector;
pub use token::PublishToken;
pub use transport::{AsyncStream, ConnectFuture, Connector, TcpConnector};
pub use vigil_proto::client::ClientConfig;
pub use vigil_proto::{
    Properties, ProtocolVersion, QoS, ReasonCode, Subscription, SubscriptionOptions, Will,
};
#[cfg(feature = "ws")]
pub use ws::WsConnector;

use event_loop::PublishWaiter;

/// What the client tells the application. Non-exhaustive: match with a `_` arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A message from the broker.
    Message(Box<Message>),
    /// Connected again after a loss (the first connection is `Client::connect`
    /// returning); `session_present` says whether the broker kept the session.
    #[non_exhaustive]
    Connected {
        /// Session Present from CONNACK.
        session_present: bool,
    },
    /// The connection was lost, with the cause; a reconnect follows if
    /// configured (announced by `Reconnecting`), except after a refusal that
    /// retrying cannot fix (`ClientError::is_permanent_refusal`).
    Disconnected(ClientError),
    /// The next connection attempt starts after `delay` (back-off with jitter).
    #[non_exhaustive]
    Reconnecting {
        /// Which attempt this is since the back-off last started over (1 first).
        attempt: u32,
        /// How long the client waits before it.
        delay: std::time::Duration,
    },
}

/// The receiving side of the client: messages and connection events.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client has stopped for good.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    dropped: AtomicU64,
    closed_without_disconnect: AtomicU64,
}

/// What the client has counted. Non-exhaustive: counters will be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientStats {
    /// QoS 0 messages dropped because the application's queue was full.
    pub dropped_messages: u64,
    /// Connections the broker closed without DISCONNECT.
    pub closed_without_disconnect: u64,
}

pub(crate) enum Command {
    Publish(Box<vigil_proto::Publish>, PublishWaiter),
    Subscribe(
        Vec<Subscription>,
        oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>,
    ),
    Unsubscribe(
        Vec<String>,
        oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>,
    ),
    Disconnect(oneshot::Sender<()>),
    Reauthenticate(oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>),
}

/// A handle to a running client; clone it freely. The connection stops when
/// every handle is dropped, or on `disconnect`.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    pending: Arc<Semaphore>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Publish(..) => "Publish",
            Command::Subscribe(..) => "Subscribe",
            Command::Unsubscribe(..) => "Unsubscribe",
            Command::Disconnect(..) => "Disconnect",
            Command::Reauthenticate(..) => "Reauthenticate",
        })
    }
}

impl Client {
    /// Connects over TCP and returns once the broker accepted the CONNECT (or
    /// with the reason it did not).
    pub async fn connect(options: ConnectOptions) -> Result<(Client, Events), ClientError> {
        let connector = TcpConnector::new(options.host.clone(), options.port);
        Client::connect_with(options, Arc::new(connector)).await
    }

    /// Like `connect`, over any transport (TLS and WebSocket plug in here).
    /// The connector's future runs on the client's driver thread.
    pub async fn connect_with(
        options: ConnectOptions,
        connector: Arc<dyn Connector>,
    ) -> Result<(Client, Events), ClientError> {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::channel(options.event_capacity.max(1));
        let pending = Arc::new(Semaphore::new(
            options
                .max_pending_publishes
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let stats = Arc::new(Stats::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let event_loop =
            event_loop::EventLoop::new(options, connector, cmd_rx, ev_tx, stats.clone(), ready_tx);
        spawn_driver(event_loop)?;
        ready_rx.await.map_err(|_| ClientError::Closed)??;
        Ok((
            Client {
                commands: cmd_tx,
                pending,
                stats,
            },
            Events { rx: ev_rx },
        ))
    }

    /// Queues a message and returns as soon as it is queued (waiting only
    /// while `max_pending_publishes` messages are unfinished). Await the token
    /// for the outcome: written (QoS 0), PUBACK (QoS 1) or PUBCOMP (QoS 2).
    /// Dropping the token does not cancel the message.
    pub async fn publish(&self, message: Message) -> Result<PublishToken, ClientError> {
        vigil_proto::topic::validate_topic_name(&message.topic)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let permit = self
            .pending
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let waiter = PublishWaiter {
            tx,
            _permit: permit,
        };
        self.send(Command::Publish(Box::new(message.into_publish()), waiter))
            .await?;
        Ok(PublishToken::new(rx))
    }

    /// Subscribes to one filter; returns the broker's code (granted QoS or failure).
    pub async fn subscribe(
        &self,
        filter: impl Into<String>,
        qos: QoS,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        self.subscribe_many(vec![Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }])
        .await
    }

    /// Subscribes to several filters with full options.
    pub async fn subscribe_many(
        &self,
        filters: Vec<Subscription>,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Subscribe(filters, tx)).await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Unsubscribes.
    pub async fn unsubscribe(
        &self,
        filter: impl Into<String>,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Unsubscribe(vec![filter.into()], tx))
            .await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends DISCONNECT (no will) and stops the client. Messages still in
    /// flight fail with `ClientError::Closed`: await their tokens first.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Disconnect(tx)).await?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Runs the SCRAM exchange again on the open connection (MQTT 5 AUTH
    /// 0x19) and returns once the broker proved itself again. Messages keep
    /// flowing meanwhile. Fails with `ClientError::NotConnected` if the
    /// connection did not log in with SCRAM or is down, and with the broker's
    /// DISCONNECT if it refuses.
    pub async fn reauthenticate(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Reauthenticate(tx)).await?;
        rx.await.map_err(|_| ClientError::Closed)?.map(|_| ())
    }

    /// QoS 0 messages dropped because the application did not keep up.
    pub fn dropped_messages(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// The client's counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            dropped_messages: self.stats.dropped.load(Ordering::Relaxed),
            closed_without_disconnect: self.stats.closed_without_disconnect.load(Ordering::Relaxed),
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), ClientError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

/// Starts the connection driver on its own thread with a current-thread
/// runtime: the application's runtime may be a current-thread one that it
/// blocks, and the driver must keep the keep alive whatever it does. One
/// thread per client is what that costs (see the README for the figures).
fn spawn_driver(event_loop: event_loop::EventLoop) -> Result<(), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // One socket and a few timers: the default room for 1,024 readiness
        // events per poll is 12 KiB of nothing in every client.
        .max_io_events_per_tick(16)
        .build()
        .map_err(|e| ClientError::io("cannot start the client's runtime", e))?;
    std::thread::Builder::new()
        .name("vigil-client".into())
        // The driver's futures are small, but a TLS or WebSocket handshake
        // (rustls, tungstenite) overflowed 256 KiB in a debug build. 1 MiB is
        // address space, not memory: only the pages touched are resident.
        .stack_size(1024 * 1024)
        .spawn(move || runtime.block_on(event_loop.run()))
        .map_err(|e| ClientError::io("cannot start the client's thread", e))?;
    Ok(())
}
