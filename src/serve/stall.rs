//! The stall timeout for HTTP/2 streams: a stream that makes no progress for the timeout is
//! reset, though its connection is healthy.
//!
//! Why the connection's timeout is not enough: over HTTP/2 each stream has its own flow-control
//! window. A peer that stops reading one stream (a proxy whose own client of that stream went
//! quiet) stops granting that stream window, while the connection's other streams and its pings
//! flow on. The socket's writes keep making progress, so the write timeout of the connection
//! never fires; hyper holds the stream's next chunk waiting for window and stops polling its
//! body, so [`Broadcaster::disconnect_user`](crate::Broadcaster::disconnect_user) and
//! [`Broadcaster::shutdown`](crate::Broadcaster::shutdown), which end a stream when its body is
//! next polled, are never seen. The dead stream would hold its place in the user's connection
//! cap, its send buffer and its subscription until the connection closes.
//!
//! How: hyper runs each HTTP/2 stream as a task of its own, spawned on the executor given to
//! it. [`StreamExecutor`] spawns each such task with a watch beside it, and hands the task, through
//! a task-local, the [`Progress`] the watch reads. Every response body is wrapped in a
//! [`Watched`] body, which records in the [`Progress`] of the task that polls it whether hyper
//! holds a chunk it took from the body: hyper polls the body again only once it could send that
//! chunk. When hyper has held a chunk, with no further chunk taken, for the whole timeout, the
//! watch ends the task: dropping it drops the body (and with it the subscription) and the
//! stream's last handle, on which h2 resets the stream (`RST_STREAM` with `CANCEL`).
//!
//! Edge cases:
//!
//! * A stream that stalls while its body has nothing to send is not reset until the body next
//!   has a frame (for an SSE stream, the next event or heartbeat), since until then it is
//!   waiting for its body, not for its peer.
//! * What "no progress" means here is coarser than for a socket: h2 tells hyper there is room
//!   for the held chunk only once all the stream's buffered data (at most about
//!   [`Serve::http2_max_send_buf`](super::Serve::http2_max_send_buf) plus a chunk) has been
//!   sent, so each taking of a chunk, not each byte sent, restarts the clock. A slow client that
//!   takes its buffered data within the timeout is never reset; one that cannot is reset, as an
//!   SSE client that slow only falls further behind.
//! * Outside an HTTP/2 stream's task (HTTP/1.1 over hyper, the lean path) the body wrapper finds
//!   no [`Progress`] and does nothing: there, a stalled response stalls the socket, and the
//!   connection's write timeout closes it.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use axum::routing::future::RouteFuture;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tower_service::Service as _;

tokio::task_local! {
    /// The progress of the HTTP/2 stream whose task is being polled.
    static STREAM: Arc<Progress>;
}

/// What a stream's body tells the watch of its task.
#[derive(Debug, Default)]
struct Progress {
    /// Data frames taken from the body so far.
    frames: AtomicU64,
    /// Whether hyper holds the last frame taken (it has not polled the body since).
    holding: AtomicBool,
}

/// The executor hyper spawns HTTP/2 streams on: each is spawned on tokio, and, with a stall
/// timeout, watched (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamExecutor {
    pub(super) stall_timeout: Option<Duration>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let Some(timeout) = self.stall_timeout else {
            tokio::spawn(stream);
            return;
        };
        let progress = Arc::new(Progress::default());
        let stream = STREAM.scope(progress.clone(), stream);
        tokio::spawn(async move {
            let stream = pin!(stream);
            tokio::select! {
                // The stream first: a chunk it sends in this poll is progress.
                biased;
                () = stream => {}
                () = stalled(&progress, timeout) => {
                    tracing::debug!(
                        ?timeout,
                        "HTTP/2 stream reset: its peer took nothing for the stall timeout"
                    );
                }
            }
        });
    }
}

/// Resolves once hyper has held a chunk of the stream, with no further chunk taken, for
/// `timeout`. Checked after each poll of the stream (the `select!` above polls it first), so
/// it needs no waker of its own but its timer's.
async fn stalled(progress: &Progress, timeout: Duration) {
    // Made at the first hold only: most streams never wait for window.
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let mut seen = 0;
    poll_fn(|cx| {
        if !progress.holding.load(Ordering::Relaxed) {
            // Waiting for its body (or for the service's response), not for its peer.
            return Poll::Pending;
        }
        let frames = progress.frames.load(Ordering::Relaxed);
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if frames != seen {
            // A new chunk is held: its own timeout starts now.
            seen = frames;
            timer.as_mut().reset(Instant::now() + timeout);
        }
        timer.as_mut().poll(cx)
    })
    .await
}

/// A response body that reports to the [`Progress`] of the HTTP/2 stream task polling it.
pub(super) struct Watched<B> {
    body: B,
    /// Looked up at the first poll, which hyper makes in the stream's task; `None` outside one.
    progress: Option<Arc<Progress>>,
    looked: bool,
}

impl<B> Watched<B> {
    fn new(body: B) -> Self {
        Self {
            body,
            progress: None,
            looked: false,
        }
    }
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if !this.looked {
            this.looked = true;
            this.progress = STREAM.try_with(Arc::clone).ok();
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(progress) = &this.progress {
            // Polled again: whatever hyper held is sent (or buffered by h2).
            let holding = matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_data());
            if holding {
                progress.frames.fetch_add(1, Ordering::Relaxed);
            }
            progress.holding.store(holding, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The router as hyper's service, with every response body [`Watched`].
#[derive(Clone)]
pub(super) struct Routed {
    pub(super) router: Router,
}

impl hyper::service::Service<Request<Incoming>> for Routed {
    type Response = Response<Watched<Body>>;
    type Error = Infallible;
    type Future = Responding;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // The router is always ready; a clone is a reference count.
        Responding(self.router.clone().call(request))
    }
}

/// The future of [`Routed`]'s response.
pub(super) struct Responding(RouteFuture<Infallible>);

impl Future for Responding {
    type Output = Result<Response<Watched<Body>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map_ok(|response| response.map(Watched::new))
    }
}
