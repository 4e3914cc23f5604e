//! [`StallTimeout`]: connections that cannot be written to are closed.
//!
//! An SSE response is written only while the client reads. A client that stops reading (a
//! suspended laptop, a hostile script, a dead peer whose packets vanish) fills its socket, and
//! then hyper stops polling the response body. Nothing in the stream can notice that anymore:
//! [`Broadcaster::disconnect_user`](crate::Broadcaster::disconnect_user) and
//! [`Broadcaster::shutdown`](crate::Broadcaster::shutdown) end streams when they are next polled,
//! which for such a connection is never; it keeps its place in the per-user connection cap,
//! hyper's write buffer (up to 16 frames) and a socket, and it holds up graceful shutdown.
//!
//! The cure belongs to the connection, not to the stream: a write that makes no progress for a
//! whole timeout fails, hyper closes the connection, the response body and its
//! [`Subscription`](crate::Subscription) are dropped, and the user's connection count falls.
//! Wrap the listener you give `axum::serve`:
//!
//! ```no_run
//! use std::time::Duration;
//! use sse_hub::StallTimeout;
//!
//! # async fn run(app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(StallTimeout::new(listener, Duration::from_secs(30)), app).await
//! # }
//! ```
//!
//! A healthy client is never affected: an idle stream writes nothing but heartbeats, and each
//! write that completes restarts the clock. Choose a timeout longer than a slow but live client
//! needs to drain its socket; twice the heartbeat interval is a good start.
//!
//! Over HTTP/2 this sees only the connection: one stream whose peer stops granting it
//! flow-control window (a proxy whose own client of that stream stopped reading) stalls while
//! the connection's other streams keep its writes progressing. Such a stream is not reset (see
//! [`serve`](mod@crate::serve)'s docs), but [`serve`](crate::serve()) bounds graceful shutdown
//! by the stall timeout, so it does not hold that up; `axum::serve` with this listener does not.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use axum::serve::Listener;
use tokio_io_timeout::TimeoutStream;

/// A listener whose connections fail any write that makes no progress for `timeout`. See the
/// [module docs](self).
#[derive(Debug)]
pub struct StallTimeout<L> {
    listener: L,
    timeout: Duration,
}

impl<L> StallTimeout<L> {
    /// Wraps `listener`.
    pub fn new(listener: L, timeout: Duration) -> Self {
        Self { listener, timeout }
    }

    /// The wrapped listener.
    pub fn get_ref(&self) -> &L {
        &self.listener
    }
}

impl<L: Listener> Listener for StallTimeout<L> {
    type Io = Pin<Box<TimeoutStream<L::Io>>>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.listener.accept().await;
        let mut io = TimeoutStream::new(io);
        io.set_write_timeout(Some(self.timeout));
        (Box::pin(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
