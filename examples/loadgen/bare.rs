//! `--design bare`: the limit of sse-hub's design for the load generator's scenarios, to tell
//! what sse-hub costs apart from what any server built this way pays.
//!
//! It keeps only the skeleton of the design: a map from user to one
//! `tokio::sync::broadcast::Sender<Bytes>`, whose receivers are that user's connections, and
//! frames encoded once by the publisher and shared by every receiver. Each frame is the bytes
//! sse-hub writes for the same event (`data:` line, then `id: {epoch}-{seq}`); the sequence
//! number is the one the publisher already keeps for the event's value. Everything else sse-hub
//! does is left out: no replay window, no sequence numbers kept per channel, no connection
//! cap, no retention or removal of idle channels (a user's sender stays for the process's
//! life), no opening `retry:`/`id:` frame, no metrics or stats, and (but with `joined`, the
//! load generator's `--design bare-joined`) no joining of ready frames into one chunk: joined,
//! a poll takes every frame ready, up to sse-hub's `MAX_CHUNK`, into one chunk, so the skeleton
//! writes as seldom as sse-hub does. A connection that falls more than the ring's capacity behind gets a
//! `lagged` frame as sse-hub's `Notify` policy sends it (so the load generator counts the loss
//! as signalled), and goes on with the next frame.
//!
//! A connection's body is a `BroadcastStream` of its receiver, each frame one body chunk, and
//! sse-hub's heartbeat (`event: heartbeat`, data `HEARTBEAT_JSON`) after every idle interval,
//! timed as sse-hub's body times it. It is served by `sse_hub::serve` as the hub design is, on
//! the lean HTTP/1.1 path: that path is chosen by the request alone (a `GET` with `Accept:
//! text/event-stream`, no body, no upgrade, which is what the load generator's clients send),
//! and writes any response body as chunks, so nothing in the response needs to be arranged
//! for it. Over HTTP/2 (`--http2`) hyper serves it, as it serves the hub design.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures_core::Stream;
use sse_hub::UserId;
use tokio::sync::broadcast;
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// The users' channels.
pub struct Hub {
    channels: DashMap<UserId, broadcast::Sender<Bytes>, foldhash::fast::RandomState>,
    capacity: usize,
    heartbeat: Duration,
    /// sse-hub's heartbeat, shared by every connection.
    heartbeat_frame: Bytes,
    /// The `{epoch}-` of every frame's id: one random epoch, as sse-hub draws one per channel.
    id_prefix: String,
    /// Whether a poll joins the frames ready together into one chunk.
    joined: bool,
}

impl Hub {
    /// Sends a frame to `user`'s connections; false when the user has none.
    pub fn send(&self, user: &UserId, frame: Bytes) -> bool {
        self.channels
            .get(user)
            .is_some_and(|sender| sender.send(frame).is_ok())
    }

    /// The frame of an event whose data is `json` (one line) and whose user sequence number
    /// is `seq`: the bytes sse-hub writes for it.
    pub fn frame(&self, json: &str, seq: u64) -> Bytes {
        let mut frame = Vec::with_capacity(json.len() + self.id_prefix.len() + 32);
        frame.extend_from_slice(b"data: ");
        frame.extend_from_slice(json.as_bytes());
        frame.extend_from_slice(b"\nid: ");
        frame.extend_from_slice(self.id_prefix.as_bytes());
        frame.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        frame.extend_from_slice(b"\n\n");
        Bytes::from(frame)
    }
}

/// The bare server's channels and app (`GET /events/{channel}/{user}`, any channel name).
pub fn server(capacity: usize, heartbeat: Duration, joined: bool) -> (Arc<Hub>, Router) {
    let hub = Arc::new(Hub {
        channels: DashMap::default(),
        capacity: capacity.max(1),
        heartbeat: heartbeat.max(Duration::from_millis(1)),
        heartbeat_frame: Bytes::from(format!(
            "event: heartbeat\ndata: {}\n\n",
            sse_hub::HEARTBEAT_JSON
        )),
        id_prefix: format!("{}-", fastrand::u64(..)),
        joined,
    });
    let app = Router::new()
        .route("/events/{channel}/{user}", get(stream))
        .with_state(hub.clone());
    (hub, app)
}

async fn stream(
    State(hub): State<Arc<Hub>>,
    Path((_channel, user)): Path<(String, String)>,
) -> Response {
    let receiver = hub
        .channels
        .entry(UserId::from(user))
        .or_insert_with(|| broadcast::channel(hub.capacity).0)
        .subscribe();
    let body = BareBody {
        frames: BroadcastStream::new(receiver),
        heartbeat_frame: hub.heartbeat_frame.clone(),
        interval: hub.heartbeat,
        sleep: Box::pin(tokio::time::sleep(hub.heartbeat)),
        last_write: None,
        joined: hub.joined,
        carry: None,
    };
    // sse-hub's response headers.
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One connection's body: its receiver's frames, one chunk each, and heartbeats.
struct BareBody {
    frames: BroadcastStream<Bytes>,
    heartbeat_frame: Bytes,
    interval: Duration,
    sleep: Pin<Box<Sleep>>,
    /// When the last frame was written, if it was since the heartbeat timer was last armed.
    last_write: Option<Instant>,
    /// Whether ready frames are joined into one chunk.
    joined: bool,
    /// Joined: a frame that was ready but did not fit in the last chunk.
    carry: Option<Bytes>,
}

impl BareBody {
    /// The next frame ready, if any: the carried one first, then the receiver's (a loss as
    /// sse-hub's `lagged` frame).
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(frame) = self.carry.take() {
            return Poll::Ready(Some(frame));
        }
        Pin::new(&mut self.frames).poll_next(cx).map(|next| {
            next.map(|item| match item {
                Ok(frame) => frame,
                Err(BroadcastStreamRecvError::Lagged(missed)) => Bytes::from(format!(
                    "event: lagged\ndata: {{\"type\":\"lagged\",\"missed\":{missed}}}\n\n"
                )),
            })
        })
    }
}

impl Stream for BareBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                this.last_write = Some(Instant::now());
                if !this.joined {
                    return Poll::Ready(Some(Ok(frame)));
                }
                // One frame alone goes as it is, as in sse-hub's body: no copy.
                let Poll::Ready(Some(second)) = this.poll_frame(cx) else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                if frame.len() + second.len() > sse_hub::sse::MAX_CHUNK {
                    this.carry = Some(second);
                    return Poll::Ready(Some(Ok(frame)));
                }
                let mut chunk = BytesMut::with_capacity(frame.len() + second.len());
                chunk.extend_from_slice(&frame);
                chunk.extend_from_slice(&second);
                while let Poll::Ready(Some(next)) = this.poll_frame(cx) {
                    if chunk.len() + next.len() > sse_hub::sse::MAX_CHUNK {
                        this.carry = Some(next);
                        break;
                    }
                    chunk.extend_from_slice(&next);
                }
                return Poll::Ready(Some(Ok(chunk.freeze())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        // As sse-hub's body: the timer is re-armed when it fires after a write, for an interval
        // after that write, rather than on every write.
        loop {
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some(written) = this.last_write.take()
                && written + this.interval > now
            {
                this.sleep.as_mut().reset(written + this.interval);
                continue;
            }
            this.sleep.as_mut().reset(now + this.interval);
            return Poll::Ready(Some(Ok(this.heartbeat_frame.clone())));
        }
    }
}
