//! What a connection reads and writes: a plain TCP socket, or a byte stream
//! that a TLS and/or WebSocket handshake produced. After the handshake every
//! transport is just bytes to the same connection driver and the same
//! `ServerConnection`, so keep alive, takeover, wills, flow control and
//! persistence behave identically on every listener.
//!
//! The driver waits on readiness (`poll_read_ready`, `poll_write_ready`) and
//! then reads or writes without blocking, which is what a TCP socket offers
//! and what lets an idle TCP connection park off its task. A TLS or
//! WebSocket stream has no readiness of its own, so [`Framed`] turns its
//! `AsyncRead`/`AsyncWrite` into the same shape: "readable" means a read has
//! already produced bytes (held until the driver takes them), and bytes
//! the stream accepted but could not yet flush make it want a writable turn.
//!
//! TLS and WebSocket connections stay tasks (they never park): rustls and
//! tungstenite hold per-connection state and buffers that a parked
//! connection would have to carry anyway, and a parked entry holds only a
//! raw socket the lot can peek for PINGREQs, which an encrypted or framed
//! stream cannot offer.

pub mod tls;
pub(crate) mod ws;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes a framed stream reads per readiness check (the same chunk the
/// driver reads from a TCP socket).
const FRAMED_READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Where a framed stream decrypts or unframes into before the bytes are
    /// copied to its own buffer: no 16 KiB buffer per idle connection.
    static FRAMED_SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; FRAMED_READ_CHUNK].into_boxed_slice());
}

/// A connection's byte stream.
#[derive(Debug)]
pub(crate) enum Transport {
    /// A plain TCP socket (the only kind that can park).
    Tcp(TcpStream),
    /// TLS, WebSocket, or WebSocket over TLS.
    Framed(Box<Framed>),
}

impl From<TcpStream> for Transport {
    fn from(stream: TcpStream) -> Transport {
        Transport::Tcp(stream)
    }
}

/// Any byte stream a handshake produced.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// A TLS or WebSocket stream behind readiness-style methods.
pub(crate) struct Framed {
    /// Locked only inside one method call, never across an await: the
    /// driver polls read and write readiness from one select.
    inner: Mutex<FramedInner>,
    /// The client certificate's identity (subject CN, or SAN), for logs
    /// and for the authentication layer.
    identity: Option<Box<str>>,
    /// The listener logs clients in by that identity (`use_identity_as_username`).
    identity_is_username: bool,
}

struct FramedInner {
    io: Box<dyn ByteStream>,
    /// Bytes read while checking readiness, not yet taken by the driver
    /// (empty, and unallocated, while idle).
    pending: Vec<u8>,
    /// The peer closed its side: reads return 0 once `pending` is taken.
    eof: bool,
    /// The stream accepted bytes it has not yet flushed to the socket.
    unflushed: bool,
}

impl std::fmt::Debug for Framed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Framed {
    /// Wraps a stream whose handshake is done.
    pub(crate) fn new(io: Box<dyn ByteStream>, identity: Option<Box<str>>) -> Framed {
        Framed {
            inner: Mutex::new(FramedInner {
                io,
                pending: Vec::new(),
                eof: false,
                unflushed: false,
            }),
            identity,
            identity_is_username: false,
        }
    }

    /// Makes the certificate's identity this connection's user name.
    pub(crate) fn use_identity_as_username(&mut self) {
        self.identity_is_username = true;
    }
}

/// What a connection's client certificate makes of its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertLogin<'a> {
    /// The listener does not log clients in by certificate.
    Off,
    /// The verified certificate's identity: the user name, no password needed.
    User(&'a str),
    /// The listener logs clients in by certificate, but this one's carries
    /// no identity of the configured kind (no CN, or no SAN).
    NoIdentity,
}

/// A waker for writes made outside a task's poll: if the stream cannot take
/// them now, `unflushed` makes the driver wait for a writable turn, whose
/// poll registers the real waker.
fn noop_context<R>(f: impl FnOnce(&mut Context<'_>) -> R) -> R {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    f(&mut cx)
}

impl Transport {
    /// The client certificate's subject CN (TLS listeners that verified
    /// one), for the authentication layer (`use_identity_as_username`).
    pub(crate) fn peer_identity(&self) -> Option<&str> {
        match self {
            Transport::Tcp(_) => None,
            Transport::Framed(f) => f.identity.as_deref(),
        }
    }

    /// Whether, and as whom, the client certificate logs this connection in.
    pub(crate) fn cert_login(&self) -> CertLogin<'_> {
        match self {
            Transport::Framed(f) if f.identity_is_username => match f.identity.as_deref() {
                Some(user) => CertLogin::User(user),
                None => CertLogin::NoIdentity,
            },
            _ => CertLogin::Off,
        }
    }

    /// Ready when a read will not block (it may return 0: closed).
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let framed = match self {
            Transport::Tcp(s) => return s.poll_read_ready(cx),
            Transport::Framed(f) => f,
        };
        let mut inner = framed.inner.lock();
        if !inner.pending.is_empty() || inner.eof {
            return Poll::Ready(Ok(()));
        }
        let inner = &mut *inner;
        FRAMED_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut inner.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    if buf.filled().is_empty() {
                        inner.eof = true;
                    } else {
                        inner.pending.extend_from_slice(buf.filled());
                    }
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }

    /// Ready when a write may make progress.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let framed = match self {
            Transport::Tcp(s) => return s.poll_write_ready(cx),
            Transport::Framed(f) => f,
        };
        let mut inner = framed.inner.lock();
        if !inner.unflushed {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut inner.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                inner.unflushed = false;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    /// Whether bytes already accepted still wait to reach the socket (the
    /// driver must then wait for a writable turn even with nothing to write).
    pub(crate) fn wants_flush(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Framed(f) => f.inner.lock().unflushed,
        }
    }

    /// Reads what is there without blocking: `WouldBlock` if nothing is.
    ///
    /// TCP: a read shorter than `buf` drained the socket, so readiness is
    /// cleared with it (as tokio's own poll_read does), or the next turn
    /// would make a read that only says EAGAIN (30 % of reads in fan-out
    /// QoS 1). An edge that arrived meanwhile is kept by tokio.
    pub(crate) fn read_chunk(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => {
                let mut short = 0;
                let got = stream.try_io(tokio::io::Interest::READABLE, || {
                    let n = stream.try_read(buf)?;
                    if n > 0 && n < buf.len() {
                        short = n;
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match got {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
                    other => other,
                }
            }
            Transport::Framed(f) => {
                let mut inner = f.inner.lock();
                if inner.pending.is_empty() {
                    return if inner.eof {
                        Ok(0)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    };
                }
                let n = inner.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&inner.pending[..n]);
                inner.pending.drain(..n);
                if inner.pending.is_empty() {
                    inner.pending = Vec::new();
                }
                Ok(n)
            }
        }
    }

    /// Writes what the stream takes now without blocking (`WouldBlock` if
    /// nothing); an empty `buf` only pushes out what a framed stream holds.
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let framed = match self {
            Transport::Tcp(s) => return s.try_write(buf),
            Transport::Framed(f) => f,
        };
        let mut inner = framed.inner.lock();
        noop_context(|cx| {
            let taken = if buf.is_empty() {
                0
            } else {
                match Pin::new(&mut inner.io).poll_write(cx, buf) {
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => {
                        inner.unflushed = true;
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
            };
            match Pin::new(&mut inner.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => inner.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => inner.unflushed = true,
            }
            Ok(taken)
        })
    }

    /// The TCP socket, to park it; framed streams cannot park.
    pub(crate) fn into_std(self) -> io::Result<std::net::TcpStream> {
        match self {
            Transport::Tcp(s) => s.into_std(),
            Transport::Framed(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a TLS or WebSocket connection cannot park",
            )),
        }
    }
}

/// For the last flush and the close (TLS close_notify, WebSocket Close).
impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Framed(f) => Pin::new(&mut f.inner.get_mut().io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Framed(f) => Pin::new(&mut f.inner.get_mut().io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Framed(f) => Pin::new(&mut f.inner.get_mut().io).poll_shutdown(cx),
        }
    }
}
