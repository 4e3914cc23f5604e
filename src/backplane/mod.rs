//! Several servers as one: a backplane shares every user channel between the nodes.
//!
//! Behind a load balancer a user's tabs land on different nodes, and a reconnect lands on any
//! node. A *backplane* makes the nodes behave as one: an event published on any node reaches
//! every connection of the user on every node, exactly once and in one order, and a
//! `Last-Event-ID` issued by one node resumes on any other.
//!
//! Without a backplane (the default) a [`Broadcaster`](crate::Broadcaster) is the single-node
//! hub described in the [crate docs](crate), and pays nothing for this module: each hot path
//! checks one `Option`. With one ([`Broadcaster::with_backplane`](crate::Broadcaster::with_backplane),
//! [`EventRouter::with_backplane`](crate::EventRouter::with_backplane)), the broadcaster keeps
//! its local machinery (per-user ring, window, lag policies, caps, retention) and the backplane
//! adds the shared history and the fan-out between nodes. The implementation this crate ships
//! is [`RedisBackplane`] (cargo feature `redis`).
//!
//! # The model
//!
//! ```text
//!   node A: broadcast(alice, e)                                  node B
//!     │ encode once: event:/data: lines                             │
//!     ▼                                                             │
//!   Redis script: XADD history ──► id ──► frame = head + "id: <id>"  │
//!                 PUBLISH frame ──────────────┬─────────────────────┤
//!                                             ▼                     ▼
//!                      A's alice channel ──► tabs      B's alice channel ──► tabs
//! ```
//!
//! * **History.** Each (channel, user) has a bounded history in the backplane whose ids are the
//!   events' ids: a client's `Last-Event-ID` names a position in that shared history, valid on
//!   every node. Ids have the same `{ms}-{seq}` shape as single-node [`EventId`]s.
//! * **Live fan-out.** A node listens to a user's live feed only while it holds a channel for
//!   that user (connections, or retention after the last one), so no node receives traffic for
//!   users it does not serve.
//! * **Delivery.** Every node, the publishing one included, delivers an event to its local
//!   connections *only* from the live feed. The publisher never delivers it itself, so it
//!   cannot deliver it twice; and the feed carries the events in the history's order, so every
//!   node delivers them in the same order.
//! * **Encode once.** The publisher encodes the event's `event:`/`data:` lines once; the
//!   backplane appends the `id:` line and the finished frame travels pre-encoded to every node,
//!   where it is shared by every local connection as one [`Bytes`].
//! * **Resume.** A subscribe joins the local channel first, then waits until the node listens
//!   to the user's feed, then reads the history after the client's id. Live frames whose id is
//!   not after the last one read are skipped, so the seam has no gap and no duplicate. An id
//!   that cannot be resumed gives a `reset`, as on a single node: `malformed`, `expired` (the
//!   history no longer holds what followed it) or `unknown` (ahead of the history).
//!
//! Inside a node, frames still get local sequence numbers: the ring, the replay window and the
//! lag policies work on them as on a single node; only the ids the client sees are the
//! backplane's.
//!
//! # Faults
//!
//! * **The backplane is unreachable when publishing.** The publish fails with
//!   [`PublishError::Backplane`](crate::PublishError::Backplane), and the publishing node's own
//!   connections still receive the event, *without an `id:` line*, so their last event id stays
//!   valid; the loss (other nodes, and the history) is counted in
//!   [`Stats::backplane_failures`](crate::Stats::backplane_failures) and in the
//!   `sse_hub_backplane_failures_total` metric.
//! * **The live feed was interrupted.** A node cannot know what it missed while it was not
//!   listening, so when it is connected again it ends its local streams: clients reconnect with
//!   their `Last-Event-ID` and resume from the history, with the gap signalled if the history
//!   lost events too (a restarted Redis without persistence), never a silent loss and never a
//!   duplicate.
//! * **A subscribe while the backplane is down** is served, degraded: live local events only,
//!   no history, no priming id (the client keeps its last id). Such streams are ended as soon as
//!   the backplane is back, so that they resume properly.
//!
//! # Sync and async
//!
//! The backplane is reached over the network, so its operations are asynchronous:
//!
//! * [`Broadcaster::broadcast_async`](crate::Broadcaster::broadcast_async) (and
//!   [`EventRouter::route_async`](crate::EventRouter::route_async)) publish and report the id or
//!   the error. The sync [`broadcast`](crate::Broadcaster::broadcast) *queues* the event for the
//!   backplane, in order with every other publish of the node, and returns at once with no id;
//!   its failures are handled as above (local delivery, counted) but not returned, except a
//!   full queue, which is [`BackplaneError::Overloaded`].
//! * [`Broadcaster::subscribe_async`](crate::Broadcaster::subscribe_async) resolves once the
//!   subscription is caught up, so its [`start_id`](crate::Subscription::start_id) is final. The
//!   sync [`subscribe_from`](crate::Broadcaster::subscribe_from) and
//!   [`sse_response`](crate::Broadcaster::sse_response) work too: the subscription catches up
//!   when first polled, and the SSE body sends its priming `id:` after that.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::event_id::EventId;
use crate::registry::{Inner, Published};
use crate::subscription::{Frame, ResetReason};
use crate::user_id::UserId;

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "redis")]
pub use self::redis::{BackplaneHealth, RedisBackplane, RedisConfig};

/// A boxed future that is `Send`, as the [`Backplane`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the backplane could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The backplane is not connected (it reconnects by itself).
    #[error("the backplane is not connected")]
    Disconnected,
    /// The node's queue of publishes waiting for the backplane is full.
    #[error("the backplane's publish queue is full")]
    Overloaded,
    /// The backplane did not answer in time.
    #[error("the backplane did not answer in time")]
    Timeout,
    /// The backplane answered with an error.
    #[error("backplane error: {0}")]
    Failed(String),
}

/// What a backplane's history holds after a position: the answer to [`Backplane::catch_up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The last id the history ever issued (`0-0` if none).
    pub last_id: EventId,
    /// The newest id deleted from the history (`0-0` if none): a client whose id is older lost
    /// what followed it.
    pub deleted_through: EventId,
    /// The finished frames after the requested position, oldest first, each ending with its
    /// `id:` line.
    pub events: Vec<(EventId, Bytes)>,
}

/// A distributed event bus shared by the nodes of a cluster: see the [module docs](self).
///
/// The methods are called by the broadcasters attached to the backplane; none blocks (they are
/// called under the registry's locks). An implementation must never call back into a
/// [`LocalChannels`] from inside one of them.
pub trait Backplane: Send + Sync + 'static {
    /// A broadcaster was created with this backplane: frames for its channel name go to
    /// `channels`.
    fn attach(&self, channels: LocalChannels);

    /// The node now holds a channel for `user` on `channel`: listen to its live feed. Calls for
    /// the same channel and user are counted; the node stops listening when as many
    /// [`channel_removed`](Self::channel_removed) calls have been made.
    fn channel_created(&self, channel: &str, user: &UserId);

    /// The node no longer holds that channel.
    fn channel_removed(&self, channel: &str, user: &UserId);

    /// Publishes an event, given as its encoded `event:`/`data:` lines, to `user` on the
    /// channel of `channels`.
    ///
    /// The publish is queued when this is called, in call order; the future only reports the
    /// outcome, and dropping it does not cancel the publish. The result is the event's id and
    /// the number of nodes that received it, or no id when nothing was stored because no node
    /// serves the user and the user has no history (as a single node does for a user without
    /// a channel). When the backplane cannot take the
    /// event, the implementation delivers it to the node's own connections with
    /// [`LocalChannels::deliver_local_only`] and returns the error.
    fn publish(
        &self,
        channels: &LocalChannels,
        user: &UserId,
        head: Bytes,
    ) -> BoxFuture<'static, Result<Published, BackplaneError>>;

    /// Waits (bounded) until the node listens to `user`'s live feed on `channel`, then reads
    /// the history after `after` (no events when `after` is `None`).
    fn catch_up(
        &self,
        channel: &str,
        user: &UserId,
        after: Option<EventId>,
    ) -> BoxFuture<'static, Result<History, BackplaneError>>;

    /// Whether the backplane is connected now.
    fn is_connected(&self) -> bool;
}

/// The local channels of one broadcaster, as a [`Backplane`] sees them: where it delivers the
/// frames of the live feed. Holds the broadcaster weakly.
#[derive(Clone)]
pub struct LocalChannels {
    name: Arc<str>,
    history_len: usize,
    inner: Weak<Inner>,
}

impl std::fmt::Debug for LocalChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChannels")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LocalChannels {
    pub(crate) fn new(name: &str, history_len: usize, inner: Weak<Inner>) -> Self {
        Self {
            name: name.into(),
            history_len,
            inner,
        }
    }

    /// The broadcaster's channel name ([`Config::name`](crate::Config::name)).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many events the channel's history should keep per user: the broadcaster's
    /// [`Config::replay_events`](crate::Config::replay_events).
    pub fn history_len(&self) -> usize {
        self.history_len
    }

    /// Whether the broadcaster still exists.
    pub fn is_alive(&self) -> bool {
        self.inner.strong_count() > 0
    }

    /// Publishes a finished frame (ending with its `id:` line and the blank line) to `user`'s
    /// local channel, if the node holds one. Returns the local connections it reached.
    pub fn deliver(&self, user: &UserId, frame: Bytes) -> usize {
        self.inner
            .upgrade()
            .map_or(0, |inner| inner.deliver_frame(user, frame))
    }

    /// Delivers an event that could not go through the backplane to `user`'s local
    /// connections, without an `id:` line, and counts the loss.
    pub fn deliver_local_only(&self, user: &UserId, head: &[u8]) -> usize {
        let Some(inner) = self.inner.upgrade() else {
            return 0;
        };
        let mut frame = Vec::with_capacity(head.len() + 1);
        frame.extend_from_slice(head);
        frame.push(b'\n');
        inner.backplane_failed();
        inner.deliver_frame(user, Bytes::from(frame))
    }

    /// Ends `user`'s local streams; they reconnect and resume from the history. Returns how
    /// many were open.
    pub fn kick(&self, user: &UserId) -> usize {
        self.inner
            .upgrade()
            .map_or(0, |inner| inner.kick_user(user))
    }
}

/// The id on a finished frame's last line, `id: <id>`, if it has one.
pub(crate) fn frame_id(frame: &[u8]) -> Option<EventId> {
    let body = frame.strip_suffix(b"\n\n")?;
    let start = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let id = body[start..].strip_prefix(b"id: ")?;
    EventId::parse(std::str::from_utf8(id).ok()?)
}

/// What a subscription learnt when it caught up with the backplane.
pub(crate) struct CaughtUp {
    pub(crate) start: EventId,
    pub(crate) reset: Option<ResetReason>,
    pub(crate) replay: Vec<Frame>,
    /// The backplane could not be read: live local events only.
    pub(crate) degraded: bool,
}

type CatchUp = BoxFuture<'static, Result<History, BackplaneError>>;

/// A subscription's state in backplane mode: the catch-up in progress, then the skip of live
/// frames already replayed, and the id of the last event delivered.
pub(crate) struct Remote {
    /// `Mutex` only to keep the subscription `Sync`; always reached through `get_mut`.
    catch_up: Option<Mutex<CatchUp>>,
    last_event_id: Option<String>,
    /// Live frames with an id up to this one were replayed or precede the start: skip them.
    skip_through: Option<EventId>,
    /// The id of the last event delivered: the client's last event id.
    last_id: EventId,
    primes: bool,
    /// The subscription's start id, once caught up.
    pub(crate) start: Option<EventId>,
}

impl Remote {
    pub(crate) fn new(
        backplane: &Arc<dyn Backplane>,
        channel: &str,
        user: &UserId,
        last_event_id: Option<&str>,
    ) -> Self {
        let after = last_event_id.and_then(EventId::parse);
        Self {
            catch_up: Some(Mutex::new(backplane.catch_up(channel, user, after))),
            last_event_id: last_event_id.map(str::to_owned),
            skip_through: None,
            last_id: EventId::new(0, 0),
            primes: true,
            start: None,
        }
    }

    /// Whether the stream should open with a priming `id:`: not when degraded, so that the
    /// client keeps its own last event id.
    pub(crate) fn primes(&self) -> bool {
        self.primes
    }

    /// Drives the catch-up; `Ready(Some(..))` once, when it completes, then `Ready(None)`.
    pub(crate) fn poll_catch_up(&mut self, cx: &mut Context<'_>) -> Poll<Option<CaughtUp>> {
        let Some(future) = self.catch_up.as_mut() else {
            return Poll::Ready(None);
        };
        let future = future.get_mut().unwrap_or_else(|p| p.into_inner());
        let history = std::task::ready!(future.as_mut().poll(cx));
        self.catch_up = None;
        Poll::Ready(Some(self.caught_up(history)))
    }

    fn caught_up(&mut self, history: Result<History, BackplaneError>) -> CaughtUp {
        let raw = self.last_event_id.take();
        let parsed = raw.as_deref().map(|raw| EventId::parse(raw).ok_or(()));
        let history = match history {
            Ok(history) => history,
            Err(_) => {
                self.primes = false;
                self.last_id = match parsed {
                    Some(Ok(id)) => id,
                    _ => EventId::new(0, 0),
                };
                return CaughtUp {
                    start: self.last_id,
                    reset: matches!(parsed, Some(Err(()))).then_some(ResetReason::Malformed),
                    replay: Vec::new(),
                    degraded: true,
                };
            }
        };
        let reset = match parsed {
            None => None,
            Some(Err(())) => Some(ResetReason::Malformed),
            Some(Ok(id)) if id > history.last_id => Some(ResetReason::Unknown),
            Some(Ok(id)) if history.deleted_through > id => Some(ResetReason::Expired),
            Some(Ok(_)) => None,
        };
        let start = match parsed {
            Some(Ok(id)) if reset.is_none() => id,
            _ => history.last_id,
        };
        let replay: Vec<Frame> = if reset.is_none() {
            history
                .events
                .into_iter()
                .map(|(id, bytes)| Frame::event(id.seq(), id.epoch(), bytes))
                .collect()
        } else {
            Vec::new()
        };
        let replayed = replay.last().and_then(Frame::id).unwrap_or(start);
        self.skip_through = Some(replayed.max(history.last_id));
        self.last_id = replayed;
        CaughtUp {
            start,
            reset,
            replay,
            degraded: false,
        }
    }

    /// The frame a subscription yields for a frame of its local channel, or `None` to skip it.
    /// A frame without an `id:` line (delivered while the backplane was unreachable) reports
    /// the last id delivered, which is still the client's last event id after it.
    /// Live frames up to the last replayed id are still being skipped.
    pub(crate) fn skipping(&self) -> bool {
        self.skip_through.is_some()
    }

    pub(crate) fn frame(&mut self, bytes: Bytes) -> Option<Frame> {
        let Some(id) = frame_id(&bytes) else {
            return Some(Frame::event(
                self.last_id.seq(),
                self.last_id.epoch(),
                bytes,
            ));
        };
        if let Some(skip) = self.skip_through {
            if id <= skip {
                return None;
            }
            self.skip_through = None;
        }
        self.last_id = id;
        Some(Frame::event(id.seq(), id.epoch(), bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_id_line_of_a_frame() {
        assert_eq!(
            frame_id(b"data: x\nid: 17-3\n\n"),
            Some(EventId::new(17, 3))
        );
        assert_eq!(frame_id(b"id: 1-0\n\n"), Some(EventId::new(1, 0)));
        assert_eq!(frame_id(b"data: x\n\n"), None);
        assert_eq!(frame_id(b"data: id: 1-2\n\n"), None);
        assert_eq!(frame_id(b"data: x\nid: 1-2\n"), None);
    }
}
