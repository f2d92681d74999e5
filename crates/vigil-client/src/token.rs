//! The handle `Client::publish` returns: awaiting it gives the message's outcome.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use vigil_proto::ReasonCode;

use crate::ClientError;

/// The outcome of one publish, to await: `Ok(reason)` once the message was
/// written (QoS 0), acknowledged by PUBACK (QoS 1) or completed by PUBCOMP
/// (QoS 2); `Err` if the broker refused it or the connection was lost first.
/// Dropping a token does not cancel its message.
#[derive(Debug)]
#[must_use = "await the token to learn whether the broker accepted the message"]
pub struct PublishToken {
    rx: oneshot::Receiver<Result<ReasonCode, ClientError>>,
}

impl PublishToken {
    pub(crate) fn new(rx: oneshot::Receiver<Result<ReasonCode, ClientError>>) -> PublishToken {
        PublishToken { rx }
    }

    /// The outcome if it is already known, without waiting.
    pub fn try_outcome(&mut self) -> Option<Result<ReasonCode, ClientError>> {
        match self.rx.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(ClientError::Closed)),
        }
    }
}

impl Future for PublishToken {
    type Output = Result<ReasonCode, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}
