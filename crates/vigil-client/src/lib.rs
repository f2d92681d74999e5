//! vigil-client: an async MQTT 3.1.1 / 5.0 client whose keep alive never
//! kills a healthy connection.
//!
//! A `Client` is a cheap, cloneable handle; one event-loop task owns the
//! socket and the sans-IO `vigil_proto::client::ClientSession`. Control
//! packets (PINGRESP, acks) are handled on that task and never wait behind the
//! application: messages go to the application through a bounded queue
//! (`Events`). When it is full, QoS 0 messages are dropped and counted
//! (`Client::dropped_messages`), and QoS 1/2 messages are held unacknowledged,
//! which makes the broker stop at its Receive Maximum instead of the client
//! buffering without bound.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vigil_client::ClientError> {
//! use vigil_client::{Client, ConnectOptions, Event, QoS};
//! let (client, mut events) = Client::connect(ConnectOptions::new("127.0.0.1", 1883)).await?;
//! client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//! client.publish("sensors/t1", "21.5", QoS::AtLeastOnce, false).await?;
//! while let Some(Event::Message(m)) = events.recv().await {
//!     println!("{} {:?}", m.topic, m.payload);
//! }
//! # Ok(()) }
//! ```

mod error;
mod event_loop;
mod options;
mod transport;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use error::ClientError;
pub use options::{Backoff, ConnectOptions, OfflinePolicy};
pub use transport::{AsyncStream, ConnectFuture, Connector, TcpConnector};
pub use vigil_proto::client::ClientConfig;
pub use vigil_proto::{
    ProtocolVersion, Publish, QoS, ReasonCode, Subscription, SubscriptionOptions, Will,
};

/// What the client tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message from the broker.
    Message(Box<Publish>),
    /// Connected (again); `session_present` says whether the broker kept the session.
    Connected {
        /// Session Present from CONNACK.
        session_present: bool,
    },
    /// The connection was lost, with the cause; a reconnect follows if configured.
    Disconnected(ClientError),
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
}

pub(crate) enum Command {
    Publish(
        Box<Publish>,
        oneshot::Sender<Result<ReasonCode, ClientError>>,
    ),
    Subscribe(
        Vec<Subscription>,
        oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>,
    ),
    Unsubscribe(
        Vec<String>,
        oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>,
    ),
    Disconnect(oneshot::Sender<()>),
}

/// A handle to a running client; clone it freely.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Publish(..) => "Publish",
            Command::Subscribe(..) => "Subscribe",
            Command::Unsubscribe(..) => "Unsubscribe",
            Command::Disconnect(..) => "Disconnect",
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
    pub async fn connect_with(
        options: ConnectOptions,
        connector: Arc<dyn Connector>,
    ) -> Result<(Client, Events), ClientError> {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::channel(options.event_capacity.max(1));
        let stats = Arc::new(Stats::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let event_loop =
            event_loop::EventLoop::new(options, connector, cmd_rx, ev_tx, stats.clone(), ready_tx);
        tokio::spawn(event_loop.run());
        ready_rx.await.map_err(|_| ClientError::Closed)??;
        Ok((
            Client {
                commands: cmd_tx,
                stats,
            },
            Events { rx: ev_rx },
        ))
    }

    /// Publishes; resolves when written (QoS 0), on PUBACK (QoS 1) or on PUBCOMP (QoS 2).
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<ReasonCode, ClientError> {
        self.publish_message(Publish {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            ..Publish::default()
        })
        .await
    }

    /// Publishes a fully specified message (properties included).
    pub async fn publish_message(&self, publish: Publish) -> Result<ReasonCode, ClientError> {
        vigil_proto::topic::validate_topic_name(&publish.topic)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.send(Command::Publish(Box::new(publish), tx)).await?;
        rx.await.map_err(|_| ClientError::Closed)?
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

    /// Sends DISCONNECT (no will) and stops the client.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Disconnect(tx)).await?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// QoS 0 messages dropped because the application did not keep up.
    pub fn dropped_messages(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    async fn send(&self, cmd: Command) -> Result<(), ClientError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| ClientError::Closed)
    }
}
