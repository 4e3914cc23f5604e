//! [`LocalChannels`]: one node's broadcaster as its backplane sees it, where the frames of the
//! shared bus come back in.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::thread::ThreadId;
use crate::user_id::UserId;

/// What a broadcaster does for its backplane: the ways frames and orders come back from the
/// shared bus into one node. Implemented by the registry; a [`Backplane`](super::Backplane) reaches it only
/// through [`LocalChannels`].
pub(crate) trait LocalDelivery: Send + Sync {
    /// Publishes a finished frame to the user's local channel, if there is one; returns the
    /// local connections it reached. With a thread, the frame is tagged with it and folded
    /// into the thread's state, `ordinal` being its position in the thread.
    fn deliver_frame(&self, user: &UserId, frame: Bytes, thread: Option<(&ThreadId, u64)>)
    -> usize;
    /// Counts an event that could not go through the backplane.
    fn count_backplane_failure(&self);
    /// Ends the user's local streams, keeping the channel; returns how many were open. With
    /// `lost`, the backplane lost its data meanwhile (see [`LocalChannels::kick_after_loss`]).
    fn kick_user(&self, user: &UserId, lost: bool) -> usize;
    /// See [`LocalChannels::thread_outranked`].
    fn thread_outranked(&self, user: &UserId, thread: &ThreadId);
    /// Ends the user's degraded local streams only.
    fn kick_degraded(&self, user: &UserId);
}

/// The local channels of one broadcaster, as a [`Backplane`](super::Backplane) sees them: where it delivers the
/// frames of the live feed. Holds the broadcaster weakly.
#[derive(Clone)]
pub struct LocalChannels {
    name: Arc<str>,
    bounds: (usize, usize, Duration),
    max_threads: usize,
    inner: Weak<dyn LocalDelivery>,
}

impl std::fmt::Debug for LocalChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChannels")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LocalChannels {
    /// `bounds`: the replay window's events, bytes and age ([`Config::replay_events`],
    /// [`Config::replay_bytes`], [`Config::replay_age`]).
    ///
    /// [`Config::replay_events`]: crate::Config::replay_events
    /// [`Config::replay_bytes`]: crate::Config::replay_bytes
    /// [`Config::replay_age`]: crate::Config::replay_age
    pub(crate) fn new(
        name: &str,
        bounds: (usize, usize, Duration),
        max_threads: usize,
        inner: Weak<dyn LocalDelivery>,
    ) -> Self {
        Self {
            name: name.into(),
            bounds,
            max_threads,
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
        self.bounds.0
    }

    /// The bytes of frames a resume may replay: the broadcaster's
    /// [`Config::replay_bytes`](crate::Config::replay_bytes).
    pub fn history_bytes(&self) -> usize {
        self.bounds.1
    }

    /// How old an event may be and still be replayed: the broadcaster's
    /// [`Config::replay_age`](crate::Config::replay_age).
    pub fn history_age(&self) -> Duration {
        self.bounds.2
    }

    /// How many threads the backplane should keep per user: the broadcaster's
    /// [`ThreadConfig::max_threads_per_user`](crate::ThreadConfig::max_threads_per_user).
    pub fn max_threads(&self) -> usize {
        self.max_threads.max(1)
    }

    /// Counts an event lost to the backplane without delivering it (a publish abandoned when
    /// the backplane was dropped).
    pub fn count_failure(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.count_backplane_failure();
        }
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
            .map_or(0, |inner| inner.deliver_frame(user, frame, None))
    }

    /// [`deliver`](Self::deliver) for an event published into `thread`: the frame is tagged
    /// with the thread (a thread subscription receives it) and folded into the thread's state
    /// if the broadcaster keeps one. `ordinal` is the event's position in the thread, from 1,
    /// as the backplane numbers them: a node folds the ordinals in sequence, and reads the
    /// thread back from the backplane when one is missing.
    pub fn deliver_in_thread(
        &self,
        user: &UserId,
        frame: Bytes,
        thread: &ThreadId,
        ordinal: u64,
    ) -> usize {
        self.inner.upgrade().map_or(0, |inner| {
            inner.deliver_frame(user, frame, Some((thread, ordinal)))
        })
    }

    /// Delivers an event that could not go through the backplane to `user`'s local
    /// connections, without an `id:` line, and counts the loss.
    pub fn deliver_local_only(&self, user: &UserId, head: &[u8]) -> usize {
        self.deliver_unnumbered(user, head, None)
    }

    /// [`deliver_local_only`](Self::deliver_local_only) for an event published into
    /// `thread`: tagged with it, and not folded into its state (it is in no history, and no
    /// other node has it).
    pub fn deliver_local_only_in_thread(
        &self,
        user: &UserId,
        head: &[u8],
        thread: &ThreadId,
    ) -> usize {
        self.deliver_unnumbered(user, head, Some((thread, 0)))
    }

    /// `head` as a frame without an id line, delivered locally, the loss counted.
    fn deliver_unnumbered(
        &self,
        user: &UserId,
        head: &[u8],
        thread: Option<(&ThreadId, u64)>,
    ) -> usize {
        let Some(inner) = self.inner.upgrade() else {
            return 0;
        };
        let mut frame = Vec::with_capacity(head.len() + 1);
        frame.extend_from_slice(head);
        frame.push(b'\n');
        inner.count_backplane_failure();
        inner.deliver_frame(user, Bytes::from(frame), thread)
    }

    /// Ends `user`'s local streams; they reconnect and resume from the history. Returns how
    /// many were open.
    pub fn kick(&self, user: &UserId) -> usize {
        self.inner
            .upgrade()
            .map_or(0, |inner| inner.kick_user(user, false))
    }

    /// [`kick`](Self::kick), when the backplane knows it lost its data (a Redis restarted
    /// without persistence, or flushed with every connection up): the node then keeps its exact
    /// thread states as they were, since the backplane no longer holds what they cover, and
    /// joins them to what the backplane holds afterwards (see the
    /// [backplane docs](super#threads)). Returns how many streams were open. Call it as soon
    /// as the loss is known, before the backplane serves any read of its new data: a state
    /// made exact from that data meanwhile would be kept as one from before the loss.
    pub fn kick_after_loss(&self, user: &UserId) -> usize {
        self.inner
            .upgrade()
            .map_or(0, |inner| inner.kick_user(user, true))
    }

    /// The backplane refused this node's snapshot of `user`'s `thread`: it holds one that is
    /// [`from_before_loss`](super::ThreadSnapshot::from_before_loss), and this node's state is
    /// not (it folded the thread from where the backplane started it over after a loss, before
    /// a node that kept the whole thread put it back). The state is dropped, and read back at
    /// the thread's next event or subscription, which then open with the whole thread.
    pub fn thread_outranked(&self, user: &UserId, thread: &ThreadId) {
        if let Some(inner) = self.inner.upgrade() {
            inner.thread_outranked(user, thread);
        }
    }

    /// Ends `user`'s *degraded* local streams only: those whose
    /// [`catch_up`](super::Backplane::catch_up) failed, once the backplane can serve them again (they
    /// reconnect and resume from the history). The user's other streams are healthy and stay.
    pub fn end_degraded(&self, user: &UserId) {
        if let Some(inner) = self.inner.upgrade() {
            inner.kick_degraded(user);
        }
    }
}
