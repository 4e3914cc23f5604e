//! Serving subscriptions over HTTP with axum.
//!
//! A [`Subscription`] becomes an SSE response through [`SseResponse`] (or in one call through
//! [`Broadcaster::sse_response`]). The body is the subscription's stream of shared frames,
//! written as they come, with no re-encoding and no copy:
//!
//! * Headers: `Content-Type: text/event-stream`, `Cache-Control: no-cache` and
//!   `X-Accel-Buffering: no` (so nginx does not buffer the stream). Never compress this
//!   response: compression buffers it. (tower-http's `CompressionLayer` leaves
//!   `text/event-stream` alone by default; a predicate of your own must too.)
//! * The first bytes go out at once: the `retry:` hint and a priming `id:` (the subscription's
//!   [start id](Subscription::start_id)), so clients and proxies see the stream open, and a
//!   client that reconnects before its first event still resumes without loss. (With a
//!   [backplane](crate::backplane), once the subscription has caught up with the shared history,
//!   a bounded wait.)
//! * Frames that are ready together go out as one chunk of at most [`MAX_CHUNK`] bytes (copied
//!   once into a buffer the connection reuses while it has a backlog), so hyper writes one
//!   chunk header and makes one `writev` for them all. A frame that is ready alone goes out at
//!   once, as the shared `Bytes`, uncopied: nothing is ever held back to wait for another.
//! * After every idle [`SseConfig::heartbeat_interval`] a heartbeat goes out: by default the
//!   replaced crate's `event: heartbeat` with data [`HEARTBEAT_JSON`], or a
//!   comment line, or nothing. It keeps proxies from cutting idle connections and finds dead
//!   peers: a failed write ends the response, which drops the subscription, and the user's
//!   connection count falls at once. A timeout on the silence between a response's chunks
//!   (tower-http's `ResponseBodyTimeoutLayer`, a proxy's read timeout) must be longer than the
//!   interval, or it cuts every idle stream.
//! * When the broadcaster shuts down, each stream ends after a last `retry:` hint with jitter, so
//!   clients do not all come back at the same moment; the response then completes and axum's
//!   graceful shutdown is not held up.
//! * A client that stops reading fills its socket, and then hyper stops polling the body, so
//!   nothing above can end it: serve through [`StallTimeout`](crate::StallTimeout), which closes
//!   a connection whose writes make no progress.
//!
//! The body's heartbeat uses tokio's timer, so serve it on a runtime with time enabled (as
//! `#[tokio::main]` builds it).
//!
//! The client's position comes in with the [`LastEventId`] extractor: the `Last-Event-ID`
//! header, or the `last_event_id` query parameter, which a browser's first `EventSource`
//! request uses since it cannot set headers.
//!
//! Errors become statuses with a JSON body `{"error": code, "message": text}`:
//! [`SubscribeError::TooManyConnections`] is `429`, [`SubscribeError::AtCapacity`] and
//! [`SubscribeError::ShuttingDown`] are `503`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use crate::config::{HEARTBEAT_INTERVAL, HEARTBEAT_JSON};
pub use crate::config::{Heartbeat, SseConfig};
use crate::error::{InvalidThread, PublishError, SubscribeError};
use crate::event_id::MAX_EVENT_ID_LEN;
use crate::registry::Broadcaster;
use crate::subscription::{Subscription, counts_delivered};
use crate::thread::ThreadId;
use crate::user_id::UserId;
use crate::wire::SseFrame;

/// The replaced crate's keep-alive for axum's own `Sse` responses: every
/// [`HEARTBEAT_INTERVAL`] of idle, an `event: heartbeat` with data [`HEARTBEAT_JSON`].
/// [`SseResponse`] needs none of this (its heartbeats come from [`SseConfig`]); it is here for
/// handlers that still serve `axum::response::Sse`.
pub fn standard_keep_alive() -> axum::response::sse::KeepAlive {
    axum::response::sse::KeepAlive::new()
        .interval(HEARTBEAT_INTERVAL)
        .event(
            axum::response::sse::Event::default()
                .event("heartbeat")
                .data(HEARTBEAT_JSON),
        )
}

/// A subscription as an SSE response. See the [module docs](self).
#[derive(Debug)]
pub struct SseResponse<E> {
    subscription: Subscription<E>,
    config: SseConfig,
}

impl<E> SseResponse<E> {
    /// Serves `subscription` with `config`.
    pub fn new(subscription: Subscription<E>, config: SseConfig) -> Self {
        Self {
            subscription,
            config,
        }
    }

    /// The body stream alone, for serving it some other way.
    pub fn into_stream(self) -> SseBody<E> {
        SseBody::new(self.subscription, self.config)
    }
}

impl<E: 'static> IntoResponse for SseResponse<E> {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from_stream(self.into_stream()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

/// The body of an [`SseResponse`]: the opening frame, the subscription's frames with heartbeats
/// between them, and on shutdown a last `retry:` hint.
pub struct SseBody<E> {
    subscription: Subscription<E>,
    /// The opening frame was sent. It is built when first polled: with a backplane, the
    /// subscription must have caught up first, since the priming id is its start id.
    opened: bool,
    retry: Option<Duration>,
    heartbeat: Option<(Bytes, Duration, Pin<Box<Sleep>>)>,
    /// When the last chunk was written, if it was since the heartbeat timer was last armed:
    /// read once per chunk, not per frame, and only with a heartbeat.
    last_write: Option<Instant>,
    shutdown_retry_jitter: Option<Duration>,
    done: bool,
    /// A frame that was ready but did not fit in the last chunk.
    carry: Option<Bytes>,
    /// The carried frame is a published event, counted delivered when the subscription
    /// yielded it: if the body is dropped before sending it, the count is taken back.
    carry_counted: bool,
    /// Where frames ready together are joined into one chunk. Kept while the connection has a
    /// backlog, so that its allocation is reused once hyper has written the last chunk; released
    /// as soon as a poll finds one frame or none.
    scratch: BytesMut,
    /// The connection's span: everything logged while the stream is polled carries its channel
    /// and user.
    span: tracing::Span,
}

impl<E> SseBody<E> {
    fn new(subscription: Subscription<E>, config: SseConfig) -> Self {
        let heartbeat = config.heartbeat_frame().map(|bytes| {
            let interval = config.heartbeat_interval.max(Duration::from_millis(1));
            (bytes, interval, Box::pin(tokio::time::sleep(interval)))
        });
        let span = tracing::debug_span!(
            "sse_stream",
            channel = %subscription.channel_name(),
            user = %subscription.user(),
        );
        Self {
            subscription,
            span,
            opened: false,
            retry: config.retry,
            heartbeat,
            last_write: None,
            shutdown_retry_jitter: config.shutdown_retry_jitter,
            done: false,
            carry: None,
            carry_counted: false,
            scratch: BytesMut::new(),
        }
    }

    /// The `retry:` hint and the priming `id:` (not for a degraded backplane subscription
    /// whose client has a last event id: it keeps its own).
    fn opening_frame(&self) -> Option<Bytes> {
        let primes = self.subscription.primes();
        if !primes && self.retry.is_none() {
            return None;
        }
        let start = self.subscription.start_id().to_string();
        let mut frame = SseFrame::new();
        if primes {
            frame = frame.id(&start);
        }
        if let Some(retry) = self.retry {
            frame = frame.retry(retry);
        }
        // An id of ours never holds CR, LF or NUL, so this cannot fail.
        frame.encode().ok()
    }

    fn closing_frame(&self) -> Option<Bytes> {
        // Shutdown, or a backplane stream ended to resume elsewhere: every stream of the node
        // may be ending at once.
        if !self.subscription.ends_with_jitter() {
            return None;
        }
        let jitter = self.shutdown_retry_jitter?;
        let delay = Duration::from_millis(fastrand::u64(0..=jitter.as_millis() as u64));
        SseFrame::new().retry(delay).encode().ok()
    }
}

impl<E> Stream for SseBody<E> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        let mut chunk = Chunk::Empty;
        if !this.opened {
            // Ready at once without a backplane.
            ready!(this.subscription.poll_caught_up(cx));
            this.opened = true;
            if let Some(opening) = this.opening_frame() {
                chunk.push(opening, &mut this.scratch);
            }
        }
        // A frame that did not fit in the last chunk goes first in this one.
        if let Some(carried) = this.carry.take() {
            this.carry_counted = false;
            chunk.push(carried, &mut this.scratch);
        }
        // Every frame ready now goes out in one chunk, up to `MAX_CHUNK` bytes: hyper then
        // formats one chunk header and makes one write for them all. Nothing waits for a frame
        // that is not ready yet: `Pending` (which may also mean the task's coop budget is spent)
        // sends what there is.
        while !this.done {
            match Pin::new(&mut this.subscription).poll_next(cx) {
                Poll::Ready(Some(frame)) => {
                    if !chunk.fits(frame.bytes().len()) {
                        this.carry_counted = counts_delivered(&frame);
                        this.carry = Some(frame.into_bytes());
                        break;
                    }
                    chunk.push(frame.into_bytes(), &mut this.scratch);
                }
                Poll::Ready(None) => {
                    this.done = true;
                    tracing::debug!(reason = ?this.subscription.end_reason(), "stream ended");
                    if let Some(closing) = this.closing_frame() {
                        if chunk.fits(closing.len()) {
                            chunk.push(closing, &mut this.scratch);
                        } else {
                            this.carry = Some(closing);
                        }
                    }
                }
                Poll::Pending => break,
            }
        }
        if !matches!(chunk, Chunk::Empty) && this.heartbeat.is_some() {
            this.last_write = Some(Instant::now());
        }
        match chunk {
            Chunk::Empty => {}
            Chunk::One(bytes) => {
                // A connection that is not busy keeps no buffer.
                this.scratch = BytesMut::new();
                return Poll::Ready(Some(Ok(bytes)));
            }
            Chunk::Many(_) => return Poll::Ready(Some(Ok(this.scratch.split().freeze()))),
        }
        if this.done {
            return Poll::Ready(None);
        }
        // Nothing is ready: an idle connection keeps no buffer.
        if this.scratch.capacity() > 0 {
            this.scratch = BytesMut::new();
        }
        let Some((bytes, interval, sleep)) = this.heartbeat.as_mut() else {
            return Poll::Pending;
        };
        // Rather than re-arm the timer on every write, re-arm it when it fires after one, for
        // an interval after that write: the wire is never silent for longer than an interval.
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some(written) = this.last_write.take()
                && written + *interval > now
            {
                sleep.as_mut().reset(written + *interval);
                continue;
            }
            sleep.as_mut().reset(now + *interval);
            return Poll::Ready(Some(Ok(bytes.clone())));
        }
    }
}

/// The largest chunk [`SseBody`] builds from frames that are ready together. A frame larger
/// than this goes out alone, uncopied.
pub const MAX_CHUNK: usize = 16 * 1024;

/// The chunk one poll of an [`SseBody`] is building.
enum Chunk {
    Empty,
    /// One frame: sent as it is, shared with every other connection, never copied.
    One(Bytes),
    /// Several frames, copied one after the other into the body's scratch buffer; the value is
    /// their length.
    Many(usize),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(bytes) => bytes.len(),
            Self::Many(len) => *len,
        }
    }

    /// Whether `len` more bytes may join the chunk: always when it is empty.
    fn fits(&self, len: usize) -> bool {
        matches!(self, Self::Empty) || self.len() + len <= MAX_CHUNK
    }

    fn push(&mut self, bytes: Bytes, scratch: &mut BytesMut) {
        *self = match std::mem::replace(self, Self::Empty) {
            Self::Empty => Self::One(bytes),
            Self::One(first) => {
                debug_assert!(scratch.is_empty());
                // Room for a few more frames of this size: a burst rarely stops at two.
                scratch.reserve((4 * (first.len() + bytes.len())).min(MAX_CHUNK));
                scratch.extend_from_slice(&first);
                scratch.extend_from_slice(&bytes);
                Self::Many(scratch.len())
            }
            Self::Many(_) => {
                scratch.extend_from_slice(&bytes);
                Self::Many(scratch.len())
            }
        };
    }
}

impl<E> Drop for SseBody<E> {
    fn drop(&mut self) {
        // A frame held for the next chunk was never handed to the server: not delivered.
        if self.carry.is_some() && self.carry_counted {
            self.subscription.uncount_last();
        }
        if !self.done {
            let _entered = self.span.enter();
            tracing::trace!("client gone: the connection closed before the stream ended");
        }
    }
}

impl<E> std::fmt::Debug for SseBody<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseBody")
            .field("subscription", &self.subscription)
            .field("done", &self.done)
            .finish()
    }
}

impl<E> Broadcaster<E> {
    /// Subscribes (resuming from `last_event_id`) and serves the subscription as an SSE
    /// response, in one call: what an axum handler returns.
    ///
    /// ```
    /// use axum::{Router, extract::{Path, State}, response::IntoResponse, routing::get};
    /// use sse_hub::{Broadcaster, LastEventId, UserId};
    ///
    /// async fn stream(
    ///     State(hub): State<Broadcaster<serde_json::Value>>,
    ///     Path(user): Path<String>,
    ///     last_event_id: LastEventId,
    /// ) -> impl IntoResponse {
    ///     hub.sse_response(&UserId::from(user), &last_event_id)
    /// }
    ///
    /// let app: Router = Router::new()
    ///     .route("/events/{user}", get(stream))
    ///     .with_state(Broadcaster::new(Default::default()));
    /// ```
    pub fn sse_response(
        &self,
        user: &UserId,
        last_event_id: &LastEventId,
    ) -> Result<SseResponse<E>, SubscribeError> {
        let subscription = self.subscribe_from(user, last_event_id.as_deref())?;
        Ok(SseResponse::new(subscription, self.config().sse.clone()))
    }

    /// [`sse_response`](Self::sse_response) for one thread of `user`: see
    /// [`subscribe_in_thread`](Self::subscribe_in_thread). When the broadcaster keeps a state
    /// per thread, the stream is the protocol's own: it opens with the state's opening, its
    /// heartbeats are comments (unless they are off), and it carries no control events (a loss
    /// the window cannot cover ends it instead; the reconnect opens from the state).
    pub fn sse_response_in_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        last_event_id: &LastEventId,
    ) -> Result<SseResponse<E>, SubscribeError> {
        let subscription = self.subscribe_in_thread(user, thread, last_event_id.as_deref())?;
        let mut config = self.config().sse.clone();
        if self.config().threads.state.is_some() && config.heartbeat != Heartbeat::Off {
            config.heartbeat = Heartbeat::Comment;
        }
        Ok(SseResponse::new(subscription, config))
    }
}

/// The client's last event id: the `Last-Event-ID` header, or else the `last_event_id` query
/// parameter. Never rejects a request: a missing or empty value is `None`, and a value that is
/// not valid UTF-8 or is too long is kept (cut short) so that the subscription answers it with a
/// `reset`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastEventId(pub Option<String>);

/// The query parameter [`LastEventId`] falls back to.
pub const LAST_EVENT_ID_QUERY: &str = "last_event_id";

impl LastEventId {
    /// The id, if the client sent one.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Reads it from request parts.
    pub fn from_parts(parts: &Parts) -> Self {
        let header = parts
            .headers
            .get("last-event-id")
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let query = || {
            form_urlencoded::parse(parts.uri.query()?.as_bytes())
                .find(|(key, _)| key == LAST_EVENT_ID_QUERY)
                .map(|(_, value)| value.into_owned())
        };
        // An empty header (a proxy's, say) is no id, and hides no query parameter.
        let value = header
            .filter(|v| !v.is_empty())
            .or_else(|| query().filter(|v| !v.is_empty()));
        Self(value.map(|mut v| {
            // One byte past the longest valid id keeps it invalid without keeping it all.
            if v.len() > MAX_EVENT_ID_LEN {
                let mut end = MAX_EVENT_ID_LEN + 1;
                while !v.is_char_boundary(end) {
                    end += 1;
                }
                v.truncate(end);
            }
            v
        }))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

/// The thread a request names in its `thread` query parameter, if any: what a handler passes to
/// [`Broadcaster::sse_response_in_thread`] or a publish into a thread. A name that is empty,
/// longer than [`MAX_THREAD_LEN`](crate::MAX_THREAD_LEN) or not UTF-8, and a query that names
/// the thread more than once, are rejected with `400` and
/// `{"error":"invalid_thread","message":...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadQuery(pub Option<ThreadId>);

/// The query parameter [`ThreadQuery`] reads.
pub const THREAD_QUERY: &str = "thread";

impl ThreadQuery {
    /// Reads it from a request's query string.
    pub fn from_query(query: Option<&str>) -> Result<Self, InvalidThread> {
        let Some(query) = query else {
            return Ok(Self(None));
        };
        let mut values = query.split('&').filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == THREAD_QUERY).then_some(value)
        });
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        // Taking one of two would publish into, or open, a thread the caller may not have
        // meant, with nothing to tell.
        if values.next().is_some() {
            return Err(InvalidThread::Repeated);
        }
        // Decoded to bytes, not lossily to text, so that a name that is not UTF-8 is refused
        // rather than changed.
        let value = value.replace('+', " ");
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(&value).collect();
        ThreadId::from_bytes(&bytes).map(|id| Self(Some(id)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ThreadQuery {
    type Rejection = InvalidThread;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_query(parts.uri.query())
    }
}

/// The JSON body of an error response: `{"error": code, "message": text}`.
pub fn error_response(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": code, "message": message.to_string() });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for SubscribeError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Self::TooManyConnections { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_connections")
            }
            Self::AtCapacity { .. } => (StatusCode::SERVICE_UNAVAILABLE, "at_capacity"),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        };
        error_response(status, code, self)
    }
}

impl IntoResponse for InvalidThread {
    fn into_response(self) -> Response {
        error_response(StatusCode::BAD_REQUEST, "invalid_thread", self)
    }
}

impl IntoResponse for PublishError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Self::FrameTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "frame_too_large"),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Self::AtCapacity { .. } => (StatusCode::SERVICE_UNAVAILABLE, "at_capacity"),
            Self::ThreadsNeedOneNode => (StatusCode::NOT_IMPLEMENTED, "threads_need_one_node"),
            Self::Backplane(crate::error::BackplaneError::Unknown) => {
                (StatusCode::GATEWAY_TIMEOUT, "backplane_outcome_unknown")
            }
            Self::Backplane(_) => (StatusCode::SERVICE_UNAVAILABLE, "backplane_unavailable"),
            Self::InvalidEvent(_) => (StatusCode::BAD_REQUEST, "invalid_event"),
            Self::Encode(_) | Self::NotUtf8 | Self::Frame(_) => {
                (StatusCode::BAD_REQUEST, "unencodable_event")
            }
        };
        error_response(status, code, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_event_id(uri: &str, header: Option<&str>) -> Option<String> {
        let mut request = axum::http::Request::builder().uri(uri);
        if let Some(header) = header {
            request = request.header("last-event-id", header);
        }
        let (parts, ()) = request.body(()).expect("request").into_parts();
        LastEventId::from_parts(&parts).0
    }

    #[test]
    fn the_header_wins_and_an_empty_one_leaves_the_query_parameter() {
        let uri = "/events?last_event_id=1-2";
        assert_eq!(last_event_id(uri, Some("3-4")).as_deref(), Some("3-4"));
        assert_eq!(last_event_id(uri, Some("")).as_deref(), Some("1-2"));
        assert_eq!(last_event_id(uri, None).as_deref(), Some("1-2"));
        assert_eq!(last_event_id("/events?last_event_id=", Some("")), None);
        assert_eq!(last_event_id("/events", None), None);
    }
}
