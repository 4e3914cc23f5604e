//! [`serve`]: an axum [`Router`] served over HTTP/1.1 and HTTP/2, with settings chosen for
//! long-lived SSE streams, the [stall timeout](crate::StallTimeout) and graceful shutdown, in
//! one call.
//!
//! ```no_run
//! use sse_hub::{Broadcaster, Config};
//!
//! # async fn run(app: axum::Router, hub: Broadcaster<serde_json::Value>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! sse_hub::serve(listener, app)
//!     .with_graceful_shutdown(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         // Ends every SSE stream, so that the shutdown does not wait for them.
//!         hub.shutdown();
//!     })
//!     .await
//! # }
//! ```
//!
//! What it does that `axum::serve` does not:
//!
//! * **HTTP/1.1 and HTTP/2 on one port.** A connection that opens with the HTTP/2 preface is
//!   served as HTTP/2 ("h2c with prior knowledge", which is also how an h2-speaking proxy such
//!   as Envoy or nginx's `grpc_pass` talks to a plain-text backend); any other as HTTP/1.1.
//!   Browsers speak HTTP/2 only over TLS: terminate TLS in a proxy in front of this server, or
//!   give `serve` a listener whose connections are TLS streams.
//! * **Streams per HTTP/2 connection**: [`DEFAULT_MAX_CONCURRENT_STREAMS`] (1 000) rather than
//!   hyper's 200, since each open `EventSource` of a browser holds a stream for as long as the
//!   page is open ([`Serve::max_concurrent_streams`]). Each stream's unsent data is bounded by
//!   [`DEFAULT_HTTP2_MAX_SEND_BUF`] rather than 400 KiB, so a stream whose client stops reading
//!   holds little.
//! * **Dead peers are found**: HTTP/2 pings every [`DEFAULT_HTTP2_KEEP_ALIVE`] (a connection
//!   that does not answer within as long is closed); on every connection, a write that makes no
//!   progress for [`DEFAULT_STALL_TIMEOUT`] closes it (see [`StallTimeout`](crate::StallTimeout)
//!   for why a stream cannot notice this by itself).
//! * **A stalled HTTP/2 stream is not reset (a known limit).** Over HTTP/2 one stream can
//!   stall while its connection is healthy: a proxy whose own client of that stream stopped
//!   reading stops granting the stream flow-control window, while the connection's other
//!   streams and pings flow, so the connection's writes progress and its write timeout never
//!   fires. hyper then holds the stream's next chunk and stops polling its body, so
//!   [`Broadcaster::disconnect_user`](crate::Broadcaster::disconnect_user) is not seen by it,
//!   and it keeps its place in the user's connection cap until the connection closes. Graceful
//!   shutdown is not held by it (see below). Watching each stream from its own task was
//!   measured at about 700 bytes more per idle stream, which the 3 KB per stream of an idle
//!   HTTP/2 stream cannot take.
//! * **A lean HTTP/1.1 path for SSE.** A request that can only be an SSE stream (`GET` with
//!   `Accept: text/event-stream`, which is what `EventSource` sends, with no body and no
//!   upgrade) is read, routed and answered by sse-hub's own HTTP/1.1 writer, which writes what
//!   hyper writes (status line, the response's headers, `transfer-encoding: chunked` or
//!   `content-length`, `date`, then the body's chunks and the last chunk) but keeps no buffer
//!   between writes: hyper keeps an 8 KiB read buffer and an 8 KiB write buffer (often twice
//!   the read buffer) for every open connection, most of an idle stream's memory. While the
//!   body is written the socket is read too, so a client that goes away is noticed at once, and
//!   a request pipelined behind the stream waits for its end; the reading stops only once 8 KiB
//!   of such bytes are held, and a client that goes away after sending more is found by a
//!   failed write. (So a client that pipelines a request and then shuts its side of the
//!   connection is taken to have gone, and its stream ends; hyper, which stops reading at a
//!   pipelined request, writes that stream to its end, then closes without answering the
//!   request.) Any other request goes to hyper, and so does everything after it on that
//!   connection ([`Serve::lean_http1`] turns the path off).
//! * **`TCP_NODELAY`** on every TCP connection ([`Serve::tcp_nodelay`]): with Nagle's algorithm
//!   a frame written while an earlier one is unacknowledged waits for the client's delayed
//!   acknowledgement, up to 40 ms; many streams multiplexed on one HTTP/2 connection hit this
//!   all the time.
//! * **A request head must arrive within** [`DEFAULT_HEADER_READ_TIMEOUT`], and may be at most
//!   [`DEFAULT_MAX_BUF_SIZE`] long, over HTTP/1.1 and HTTP/2 alike (hyper's defaults are about
//!   400 KiB and 16 KiB: a request a proxy forwards over HTTP/2 would be refused where the same
//!   request sent directly is served). So must a connection's first bytes, until they show its
//!   protocol: the whole 24-byte HTTP/2 preface, or a byte that is not the preface's (an
//!   HTTP/1.1 request). They are read before hyper gets the connection, since hyper-util waits
//!   for them with no timeout and hyper's own HTTP/1.1 head timer starts only after them: a
//!   connection that sends nothing, or only the start of the preface, would otherwise be held
//!   open until shutdown. On the lean path both are read under one timeout; with it off,
//!   hyper's timer starts once the first byte shows HTTP/1.1, so a head may take up to twice
//!   the timeout from the connect. After the preface, an HTTP/2 client that goes silent is
//!   found by the HTTP/2 pings ([`Serve::http2_keep_alive`]), not by this timeout.
//! * **A request head hyper refuses gets a JSON body.** hyper answers a head before any
//!   handler runs when it is too long (`431`: its end is not within [`Serve::max_buf_size`]
//!   bytes, or it has more than 100 header lines), its target is over 65 534 bytes (`414`), or
//!   it cannot be parsed (`400`: a bad request line or header line, a `Content-Length` that is
//!   not one number, a `Transfer-Encoding` that does not end in `chunked`), with an empty body,
//!   and closes the connection. Over HTTP/1.1 the lean path reads the heads first and answers
//!   these itself, with the same status and the library's JSON error body
//!   (`{"error": "request_head_too_large" | "uri_too_long" | "malformed_request", "message":
//!   ...}`, as [`error_response`](crate::sse::error_response) makes), then closes the
//!   connection too: a request sent after such a head is not served. The checks are hyper's,
//!   so a head hyper takes is still served. Two cases keep hyper's empty body: a head that
//!   comes after a request the lean path handed to hyper (a request that is not an SSE stream)
//!   on the same connection, and every head with [`Serve::lean_http1`] off. Over HTTP/2 a head
//!   over the limit is refused by the h2 crate itself: a `431` that no handler sees, or past
//!   four times the limit, the connection closed.
//! * **The router is shared**, not cloned per connection: `axum::serve` re-builds the router's
//!   route table for each connection (about 1 KB each for a router of one route).
//! * **The client's address** comes with every request as axum's
//!   [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), on the lean path and hyper's,
//!   as `axum::serve` gives it to a router made with `into_make_service_with_connect_info`
//!   (`serve` takes a `Router`, so it has no such variant): for a listener whose address is a
//!   `std::net::SocketAddr` (a `TcpListener`, or one adapted with `ListenerExt`). A Unix
//!   socket's requests have none.
//! * **Graceful shutdown**: once the future given to [`Serve::with_graceful_shutdown`] resolves,
//!   no new connection is accepted, every connection is asked to close once its responses are
//!   complete (HTTP/2 connections get a `GOAWAY`), and `serve` returns when all are closed. SSE
//!   responses complete when their streams end: end them in the same future with
//!   [`Broadcaster::shutdown`](crate::Broadcaster::shutdown) (or `EventRouter::shutdown`),
//!   which sends each client a jittered `retry:` first.
//!
//!   The close is bounded by the stall timeout: a connection still open a stall timeout after
//!   shutdown began is dropped, with whatever responses it still serves (their bodies and
//!   subscriptions are dropped, its clients see the connection close). Something would
//!   otherwise hold `serve` for ever: a response that never completes (an SSE stream that was
//!   not ended, a stream its peer no longer reads), or a client that never lets go. The stall
//!   timeout is the bound because it already says how long a response may make no progress: a
//!   stream that is ended at shutdown needs only to write its last frames, which a live client
//!   takes well within it, and one that cannot is one the stall timeout gives up on anyway.
//!   Responses that need longer to complete (a large download) are cut at that point: give
//!   `serve` a longer stall timeout. With no stall timeout (`stall_timeout(None)`), the close
//!   waits as long as the responses take. HTTP/2 streams run in tasks of their own, which end
//!   as they notice their connection is gone, just after `serve` returns.
//!
//! WebSocket and other HTTP/1.1 upgrades keep working, and so does HTTP/2's extended CONNECT.

use std::any::Any;
use std::fmt;
use std::future::{Future, IntoFuture, Pending};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;

use crate::config::HEARTBEAT_INTERVAL;

mod head;
mod lean;
mod peer;
mod rewind;

/// The default of [`Serve::max_concurrent_streams`]: how many requests (SSE streams) one
/// HTTP/2 connection may have open at once.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1_000;

/// The default of [`Serve::stall_timeout`]: twice the heartbeat interval, so that a live but
/// slow client has a whole heartbeat interval to drain its socket.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(2 * HEARTBEAT_INTERVAL.as_secs());

/// The default of [`Serve::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of [`Serve::max_buf_size`]: the largest request head accepted, and the most an
/// HTTP/1.1 connection buffers before it writes.
pub const DEFAULT_MAX_BUF_SIZE: usize = 64 * 1024;

/// The default interval of HTTP/2 keep-alive pings ([`Serve::http2_keep_alive`]).
pub const DEFAULT_HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The default of [`Serve::http2_max_send_buf`]: the data an HTTP/2 stream buffers before its
/// body is no longer polled (hyper's default is 400 KiB).
pub const DEFAULT_HTTP2_MAX_SEND_BUF: usize = 64 * 1024;

/// Serves `router` on `listener` until the shutdown future resolves (or forever). See the
/// [module docs](self).
///
/// `listener` is anything axum can serve on: a `tokio::net::TcpListener`, a
/// `tokio::net::UnixListener`, or one adapted with `axum::serve::ListenerExt` (for example
/// `listener.tap_io(|tcp| { let _ = tcp.set_nodelay(true); })`).
pub fn serve<L: Listener>(listener: L, router: Router) -> Serve<L> {
    Serve {
        listener,
        // Routes are made services once, here, rather than for each connection.
        router: router.with_state(()),
        settings: Settings::default(),
        shutdown: std::future::pending(),
    }
}

/// A server being configured: await it (it is an [`IntoFuture`]) to run it. Made by [`serve`].
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve<L, F = Pending<()>> {
    listener: L,
    router: Router,
    settings: Settings,
    shutdown: F,
}

#[derive(Debug, Clone)]
struct Settings {
    stall_timeout: Option<Duration>,
    header_read_timeout: Option<Duration>,
    max_buf_size: usize,
    max_concurrent_streams: u32,
    http2_keep_alive: Option<Duration>,
    http2_max_send_buf: usize,
    lean_http1: bool,
    tcp_nodelay: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stall_timeout: Some(DEFAULT_STALL_TIMEOUT),
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            max_buf_size: DEFAULT_MAX_BUF_SIZE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            http2_keep_alive: Some(DEFAULT_HTTP2_KEEP_ALIVE),
            http2_max_send_buf: DEFAULT_HTTP2_MAX_SEND_BUF,
            lean_http1: true,
            tcp_nodelay: true,
        }
    }
}

impl<L, F> Serve<L, F> {
    /// Closes a connection whose writes make no progress for `timeout`, and bounds each
    /// connection's graceful close by it (`None`: neither). Default [`DEFAULT_STALL_TIMEOUT`]. See the
    /// [module docs](self) and [`StallTimeout`](crate::StallTimeout).
    pub fn stall_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.settings.stall_timeout = timeout.into();
        self
    }

    /// Closes a connection whose first bytes do not show its protocol (the HTTP/2 preface or
    /// the start of an HTTP/1.1 request), or whose HTTP/1.1 request head does not arrive,
    /// within `timeout` (`None`: never). Default [`DEFAULT_HEADER_READ_TIMEOUT`]. See the
    /// [module docs](self).
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.settings.header_read_timeout = timeout.into();
        self
    }

    /// The largest request head accepted (over HTTP/2, the largest header list, as RFC 9113
    /// counts it), and the most an HTTP/1.1 connection buffers before it writes; at least
    /// 8 KiB. Default [`DEFAULT_MAX_BUF_SIZE`]. A longer head is refused with `431` (over
    /// HTTP/1.1 with a JSON body: see the [module docs](self)).
    pub fn max_buf_size(mut self, bytes: usize) -> Self {
        self.settings.max_buf_size = bytes.max(8 * 1024);
        self
    }

    /// How many requests (SSE streams) one HTTP/2 connection may have open at once; a client
    /// that wants more opens another connection. Default [`DEFAULT_MAX_CONCURRENT_STREAMS`].
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.settings.max_concurrent_streams = streams;
        self
    }

    /// Pings each HTTP/2 connection after `interval` without a frame from the client, and
    /// closes it if the ping is not answered within `interval` (`None`: no pings). Default
    /// [`DEFAULT_HTTP2_KEEP_ALIVE`].
    pub fn http2_keep_alive(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.settings.http2_keep_alive = interval.into();
        self
    }

    /// The data one HTTP/2 stream buffers before its body is no longer polled. Default
    /// [`DEFAULT_HTTP2_MAX_SEND_BUF`].
    pub fn http2_max_send_buf(mut self, bytes: usize) -> Self {
        self.settings.http2_max_send_buf = bytes;
        self
    }

    /// Whether SSE requests over HTTP/1.1 are answered on the lean path (see the
    /// [module docs](self)); default `true`. With `false`, hyper serves every request, and
    /// answers a request head it refuses (too long, or one it cannot parse) with its status
    /// and an empty body, where the lean path gives the library's JSON error body.
    pub fn lean_http1(mut self, enabled: bool) -> Self {
        self.settings.lean_http1 = enabled;
        self
    }

    /// Whether TCP connections are set `TCP_NODELAY`; default `true`. An SSE frame should leave
    /// at once: with Nagle's algorithm a small write waits while an earlier one is unacknowledged,
    /// and the client may delay its acknowledgement by up to 40 ms (frames that are ready
    /// together already leave in one write). Applies when the listener's connections are
    /// `tokio::net::TcpStream`s (a `TcpListener`, also through `ListenerExt::tap_io`).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.settings.tcp_nodelay = enabled;
        self
    }

    /// Shuts down gracefully once `signal` resolves: see the [module docs](self).
    pub fn with_graceful_shutdown<G>(self, signal: G) -> Serve<L, G>
    where
        G: Future<Output = ()> + Send + 'static,
    {
        Serve {
            listener: self.listener,
            router: self.router,
            settings: self.settings,
            shutdown: signal,
        }
    }
}

impl<L: Listener, F> Serve<L, F> {
    /// The address listened on.
    pub fn local_addr(&self) -> io::Result<L::Addr> {
        self.listener.local_addr()
    }
}

impl<L, F> fmt::Debug for Serve<L, F>
where
    L: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<L, F> IntoFuture for Serve<L, F>
where
    L: Listener,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl Settings {
    fn builder(&self) -> Builder<TokioExecutor> {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_buf_size)
            // Queue body chunks and write them with one `writev`, rather than copy them into
            // one buffer first.
            .writev(true)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_send_buf_size(self.http2_max_send_buf)
            // The same bound on a request head as over HTTP/1.1 (hyper's HTTP/2 default is
            // 16 KiB): a request an h2-speaking proxy forwards is not refused where the same
            // request sent directly is served.
            .max_header_list_size(u32::try_from(self.max_buf_size).unwrap_or(u32::MAX))
            .keep_alive_interval(self.http2_keep_alive)
            .keep_alive_timeout(self.http2_keep_alive.unwrap_or(DEFAULT_HTTP2_KEEP_ALIVE))
            // As axum::serve: HTTP/2 WebSockets need the extended CONNECT protocol.
            .enable_connect_protocol();
        builder
    }
}

impl<L, F> Serve<L, F>
where
    L: Listener,
    F: Future<Output = ()> + Send + 'static,
{
    async fn run(self) -> io::Result<()> {
        let Self {
            mut listener,
            router,
            settings,
            shutdown,
        } = self;
        let builder = Arc::new(settings.builder());
        // Shared, as the builder: each connection's task holds a reference, not a copy.
        let settings = Arc::new(settings);
        // `true` once shutdown began; every connection watches it.
        let (draining, drain_signal) = watch::channel(false);
        // Every connection holds a receiver: all are closed when the count falls to zero.
        let (closed, open) = watch::channel(());
        let mut shutdown = pin!(shutdown);
        loop {
            let (io, addr) = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let peer = peer::socket_addr(&addr);
            if settings.tcp_nodelay
                && let Some(tcp) = (&io as &dyn Any).downcast_ref::<tokio::net::TcpStream>()
            {
                let _ = tcp.set_nodelay(true);
            }
            let mut io = TimeoutStream::new(io);
            io.set_write_timeout(settings.stall_timeout);
            let io = Box::pin(io);
            // The router's state is behind an `Arc`: these clones are reference counts.
            let router = router.clone();
            let builder = builder.clone();
            let drain_signal = drain_signal.clone();
            let open = open.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                connection(io, router, peer, builder, &settings, drain_signal).await;
                drop(open);
            });
        }
        tracing::debug!(
            connections = closed.receiver_count() - 1,
            "shutting down: no new connections; waiting for the open ones to close"
        );
        drop(listener);
        let _ = draining.send(true);
        drop(open);
        closed.closed().await;
        Ok(())
    }
}

/// Serves one connection: on the lean path while its requests are SSE streams over HTTP/1.1
/// (when that path is on), then with hyper; once shutdown began, for at most the stall timeout.
async fn connection<I>(
    io: Pin<Box<TimeoutStream<I>>>,
    router: Router,
    peer: Option<SocketAddr>,
    builder: Arc<Builder<TokioExecutor>>,
    settings: &Settings,
    drain_signal: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut draining = drain_signal.clone();
    let served = serve_connection(io, router, peer, builder, settings, drain_signal);
    // The bound on a graceful close (see the module docs): a connection whose responses have
    // not completed a stall timeout after shutdown began is dropped, with whatever it still
    // serves. Without a stall timeout, the close waits as long as the responses take.
    let grace = async {
        drop(draining.wait_for(|draining| *draining).await);
        match settings.stall_timeout {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = served => {}
        () = grace => {
            tracing::debug!(
                grace = ?settings.stall_timeout,
                "connection dropped: still open a stall timeout after shutdown began"
            );
        }
    }
}

async fn serve_connection<I>(
    mut io: Pin<Box<TimeoutStream<I>>>,
    router: Router,
    peer: Option<SocketAddr>,
    builder: Arc<Builder<TokioExecutor>>,
    settings: &Settings,
    mut drain_signal: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let prefix = if settings.lean_http1 {
        match lean::serve(
            &mut io,
            &router,
            peer,
            settings.header_read_timeout,
            settings.max_buf_size,
            &mut drain_signal,
        )
        .await
        {
            lean::Outcome::Close => return,
            lean::Outcome::Hyper(prefix) => prefix,
        }
    } else {
        match read_until_protocol_known(&mut io, settings.header_read_timeout, &mut drain_signal)
            .await
        {
            Some(prefix) => prefix,
            None => return,
        }
    };
    // Boxed, so that a connection served on the lean path does not carry the space of hyper's
    // connection state in its task.
    Box::pin(with_hyper(
        rewind::Rewind::new(prefix, io),
        peer::WithPeer { router, peer },
        builder,
        drain_signal,
    ))
    .await;
}

/// What a client speaking HTTP/2 with prior knowledge opens with (RFC 9113, 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `read`, the first bytes of a connection, leave its protocol unknown: they are the
/// start of the HTTP/2 preface but not all of it (nothing read leaves it unknown too).
/// hyper-util decides between HTTP/1.1 and HTTP/2 on these bytes and, while they stay unknown,
/// waits for more with no timeout of its own.
fn protocol_unknown(read: &[u8]) -> bool {
    read.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(read)
}

/// Reads the first bytes of a connection that is not served on the lean path until its
/// protocol is known (see [`protocol_unknown`]), within `timeout`; they are returned for
/// hyper. `None` when the connection is to be closed: it closed or failed, the time ran out, or
/// shutdown began first (nothing was served on it yet).
async fn read_until_protocol_known<I>(
    io: &mut I,
    timeout: Option<Duration>,
    draining: &mut watch::Receiver<bool>,
) -> Option<Bytes>
where
    I: AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    // Never more than the preface: whatever follows is hyper's to read.
    let mut read = [0u8; HTTP2_PREFACE.len()];
    let mut len = 0;
    let sniff = async {
        while protocol_unknown(&read[..len]) {
            match io.read(&mut read[len..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => len += n,
            }
        }
        true
    };
    let sniff = async {
        match timeout {
            Some(timeout) => tokio::time::timeout(timeout, sniff).await.unwrap_or(false),
            None => sniff.await,
        }
    };
    let known = tokio::select! {
        known = sniff => known,
        _ = draining.wait_for(|draining| *draining) => false,
    };
    known.then(|| Bytes::copy_from_slice(&read[..len]))
}

async fn with_hyper<I>(
    io: rewind::Rewind<Pin<Box<TimeoutStream<I>>>>,
    router: peer::WithPeer,
    builder: Arc<Builder<TokioExecutor>>,
    mut drain_signal: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(error) = served {
                tracing::trace!(%error, "connection failed");
            }
        }
        () = async { drop(drain_signal.wait_for(|draining| *draining).await) } => {
            // Bounded by the caller's grace: a response that never completes (a stream whose
            // peer stopped reading it, an SSE stream that was not ended) does not hold it.
            connection.as_mut().graceful_shutdown();
            if let Err(error) = connection.await {
                tracing::trace!(%error, "connection failed while closing");
            }
        }
    }
}
