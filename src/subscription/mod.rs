//! [`Subscription`]: one connection's stream of frames, with resume and the lag policy.
//!
//! A subscription reads its user's broadcast ring through tokio-stream's `BroadcastStream`
//! and yields [`Frame`]s: published events, each with its [`EventId`], and two control events.
//!
//! | event | data | when |
//! |---|---|---|
//! | `lagged` | `{"type":"lagged","missed":N}` | N events were lost to this connection: it fell behind further than the policy could recover |
//! | `reset` | `{"type":"reset","reason":R}` | first, when the `Last-Event-ID` it resumed from cannot be resumed; R is one of the [`ResetReason`] strings |
//!
//! Control frames carry no `id:`, so the client's last event id stays on the last event it
//! really received.
//!
//! # Gaps
//!
//! Every event carries its sequence number, so a subscription notices a gap by itself: the next
//! event is not the one after the last it delivered. A gap appears when the receiver fell more
//! than the ring's capacity behind (tokio reports `Lagged` and skips to the oldest event it
//! still has). What follows depends on the [`LagPolicy`]:
//!
//! * `Recover` takes the missing events from the replay window and delivers them in order before
//!   the next one. If the window has dropped some of them, a `lagged` frame counting those comes
//!   first.
//! * `Notify` yields a `lagged` frame counting the gap, then goes on with the next event.
//! * `Disconnect` yields the `lagged` frame and ends, without the next event: the client's last
//!   event id is the last event it got, so its reconnect resumes from the window.
//!
//! Events the ring still delivers after a replay are skipped by sequence number, so nothing is
//! ever delivered twice.
//!
//! A subscription to one thread counts differently: whether it lost anything is decided by
//! following its thread's chain of events (`channel/chain.rs`; where a link cannot be
//! followed it errs toward a loss, never toward silence), but how many is not known
//! without more memory per thread, so N in its `lagged` (and in the metrics) is its own events
//! that the window still held and the policy skipped (`Notify`, `Disconnect`; `Recover`
//! delivers them), plus every event the window dropped from the gap, other threads' included:
//! an upper bound on its own losses, never fewer, and exact when the window dropped none.
//!
//! # Ending
//!
//! A subscription ends when its user is disconnected
//! ([`Broadcaster::disconnect_user`](crate::Broadcaster::disconnect_user), or, with a
//! [backplane](crate::backplane), by its node so that the client resumes from the shared
//! history), when the broadcaster shuts down, or after a lag that lost events under
//! `Disconnect` (and under any policy for a thread stream opened from its state, which has no
//! `lagged` to send); [`Subscription::end_reason`] says which.
//! Dropping a subscription removes the connection at once: the counts are exact when `drop`
//! returns.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::channel::{Backfill, Joined, Slot, UserChannel};
use crate::config::LagPolicy;
use crate::event_id::EventId;
pub use crate::frame::{Frame, FrameKind, LAGGED_EVENT, RESET_EVENT};
pub use crate::reason::{EndReason, ResetReason};
use crate::thread::{HoldBack, ThreadId, ThreadKey};
use crate::user_id::UserId;
use crate::wire::data_of;

mod remote;

pub(crate) use remote::Remote;

/// One connection's stream of [`Frame`]s for a user. See the [module docs](self).
///
/// Dropping it closes the connection: the user's connection count falls before `drop`
/// returns.
///
/// It is a `tokio::sync::broadcast` receiver underneath, so it takes part in tokio's
/// cooperative scheduling: polled in a loop without ever yielding (with `now_or_never`, say), it
/// returns `Pending` after a budget of reads even with frames waiting; `.await` it instead.
pub struct Subscription<E> {
    channel: Arc<UserChannel>,
    /// `None` only while dropping.
    live: Option<BroadcastStream<Slot>>,
    /// Frames to yield before reading the ring again: a reset, a replay, a back-fill.
    pending: VecDeque<Frame>,
    /// The sequence number of the last event delivered (or replayed into `pending`).
    position: u64,
    /// The local sequence number the subscription started from; with a backplane the start id
    /// is the remote's.
    start: u64,
    policy: LagPolicy,
    /// Fields kept small: this struct is most of what an extra connection costs.
    kicks: u32,
    ended: Option<EndReason>,
    delivered: u32,
    /// What only some connections need: the backplane side and the thread filter. Boxed,
    /// since most connections have neither and this struct is most of what a connection costs.
    ext: Option<Box<Ext>>,
    _event: PhantomData<fn() -> E>,
}

/// The parts of a [`Subscription`] that only some connections need.
#[derive(Default)]
struct Ext {
    /// The backplane side: catch-up, ids from the frames, skip at the seam. `None` in
    /// single-node mode.
    remote: Option<Remote>,
    /// The thread it receives, if it asked for one.
    thread: Option<ThreadFilter>,
}

/// A thread subscription's filter.
struct ThreadFilter {
    /// Frames of other threads are skipped: neither delivered nor lost.
    id: ThreadId,
    /// The stream opened with its thread state's opening: it never yields control frames, and
    /// a loss the window cannot cover ends it (its reconnect opens from the state again).
    opened_from_state: bool,
    /// The thread's events it does not deliver after that opening, up to the first that
    /// passes this test (see [`ThreadState::holds_back_until`](crate::ThreadState)).
    holds_back: Option<HoldBack>,
}

/// The replaced crate's name for the RAII handle of a connection: a [`Subscription`] is that
/// guard, and dropping it unregisters the connection, synchronously.
pub type ConnectionGuard<E> = Subscription<E>;

/// Frames counted locally before they are added to the shared metric, so that fan-out does not
/// make every receiver write one shared counter per frame.
const DELIVERED_FLUSH: u32 = 256;

impl<E> Subscription<E> {
    pub(crate) fn new(channel: Arc<UserChannel>, joined: Joined, policy: LagPolicy) -> Self {
        let epoch = channel.epoch;
        let mut pending =
            VecDeque::with_capacity(joined.replay.len() + usize::from(joined.reset.is_some()));
        if let Some(reason) = joined.reset {
            pending.push_back(Frame::reset(reason));
        }
        // Everything up to the head is replayed, or not of the subscription's thread, or (on a
        // reset) not to be delivered: the ring's next frame is the next to deliver.
        let position = joined.head;
        if let Some(opening) = joined.opening.as_ref().filter(|o| !o.is_empty()) {
            pending.push_back(Frame::opening(opening.clone()));
        }
        pending.extend(
            joined
                .replay
                .into_iter()
                .map(|(seq, bytes)| Frame::event(seq, epoch, bytes)),
        );
        Self {
            start: joined.position,
            channel,
            live: Some(BroadcastStream::new(joined.receiver)),
            pending,
            position,
            policy,
            kicks: joined.kicks,
            ended: None,
            delivered: 0,
            ext: joined.thread.map(|id| {
                Box::new(Ext {
                    remote: None,
                    thread: Some(ThreadFilter {
                        id,
                        opened_from_state: joined.opening.is_some() || joined.needs_sync,
                        holds_back: joined.holds_back,
                    }),
                })
            }),
            _event: PhantomData,
        }
    }

    /// Makes this a backplane subscription, which catches up with the shared history when
    /// first polled.
    pub(crate) fn with_remote(mut self, remote: Remote) -> Self {
        self.ext.get_or_insert_default().remote = Some(remote);
        self
    }

    /// Drives the backplane catch-up, if any, to its end: then the start id is final and the
    /// `reset` or replay frames are pending. Ready at once in single-node mode.
    pub(crate) fn poll_caught_up(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(remote) = self.remote_mut() else {
            return Poll::Ready(());
        };
        let Some(caught) = ready!(remote.poll_catch_up(cx)) else {
            return Poll::Ready(());
        };
        remote.start = Some(caught.start);
        if caught.open_thread {
            self.open_thread();
        }
        let shared = &self.channel.shared;
        if let Some(reason) = caught.reset {
            shared.resets.fetch_add(1, Ordering::Relaxed);
            shared.metrics.reset(reason);
            tracing::debug!(channel = %shared.config.name, user = %self.channel.user, reason = reason.as_str(), "resume reset");
            self.pending.push_back(Frame::reset(reason));
        }
        if caught.degraded {
            tracing::warn!(channel = %shared.config.name, user = %self.channel.user, "backplane unreachable: live local events only until it is back");
        }
        self.pending.extend(caught.replay);
        Poll::Ready(())
    }

    /// With a backplane, a thread subscription whose state is now exact on this node: the
    /// opening, taken under the channel's lock, then the live frames after it.
    fn open_thread(&mut self) {
        let opened = self
            .thread()
            .and_then(|t| self.channel.thread_opening(&t.id));
        let Some(ext) = self.ext.as_mut() else {
            return;
        };
        let Some(remote) = ext.remote.as_mut() else {
            return;
        };
        match opened {
            Some((opening, head, start, covered, holds_back)) => {
                remote.opened_at(start, covered);
                if let Some(filter) = ext.thread.as_mut() {
                    filter.holds_back = holds_back;
                }
                self.position = head;
                if !opening.is_empty() {
                    self.pending.push_back(Frame::opening(opening));
                }
            }
            // Invalidated again meanwhile (the feed was interrupted): the client comes back.
            None => remote.end_now(),
        }
    }

    /// Whether the SSE stream should open with the start id as a priming `id:`; not for a
    /// degraded backplane subscription whose client has a last event id: it keeps its own.
    pub(crate) fn primes(&self) -> bool {
        self.remote().is_none_or(|remote| remote.primes())
    }

    /// Overrides the broadcaster's [`LagPolicy`] for this subscription.
    pub fn with_lag_policy(mut self, policy: LagPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The user this subscription belongs to.
    pub fn user(&self) -> &UserId {
        &self.channel.user
    }

    /// The name of the broadcaster it belongs to.
    pub fn channel_name(&self) -> &str {
        &self.channel.shared.config.name
    }

    /// The position the subscription started from: the id the client resumed from, or, for a
    /// fresh or reset subscription, the id of the channel's last event when it joined. Sent to
    /// the client as a priming `id:` so that even a client that got no event yet resumes
    /// without loss.
    pub fn start_id(&self) -> EventId {
        let local = || EventId::new(self.channel.epoch, self.start);
        self.remote()
            .as_ref()
            .and_then(|r| r.start)
            .unwrap_or_else(local)
    }

    /// Why the stream ended, once it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.ended
    }

    /// Whether the stream should end with a jittered `retry:` hint
    /// ([`SseConfig::shutdown_retry_jitter`](crate::SseConfig::shutdown_retry_jitter)): on
    /// shutdown, and for a backplane subscription ended so that it resumes from the shared
    /// history (the backplane reconnected, or a degraded subscription ended), when every
    /// stream of the node may end at once.
    pub(crate) fn ends_with_jitter(&self) -> bool {
        match self.ended {
            Some(EndReason::Shutdown) => true,
            Some(EndReason::Disconnected) => self.remote().is_some(),
            _ => false,
        }
    }

    fn end(&mut self, reason: EndReason) {
        self.ended = Some(reason);
    }

    fn kicked(&self) -> Option<EndReason> {
        if self.channel.kicked_since(self.kicks) {
            return Some(if self.channel.shared.is_shutting_down() {
                EndReason::Shutdown
            } else {
                EndReason::Disconnected
            });
        }
        self.remote()
            .is_some_and(|r| r.degraded_kicked(|n| self.channel.degraded_kicked_since(n)))
            .then_some(EndReason::Disconnected)
    }

    /// Handles the event `slot.seq` arriving after a gap (`seq > position + 1`).
    ///
    /// A thread subscription counts as lost only what it would have delivered: its thread's
    /// events. The channel tells from the frames' chain links whether the window dropped any
    /// of those (see the channel's docs, *Chains*): a gap of other threads' frames and
    /// unthreaded ones only is no loss, whatever the policy.
    fn fill_gap(&mut self, slot: Slot) {
        let shared = &self.channel.shared;
        let epoch = self.channel.epoch;
        let seq = slot.seq;
        let gap = seq - self.position - 1;
        shared.lag_events.fetch_add(1, Ordering::Relaxed);
        // While a backplane subscription still skips what its catch-up replayed, the frames
        // the ring overwrote may be ones the client already has: take them from the window
        // through the skip rather than count them lost, whatever the policy, and those the
        // window dropped too are no loss if they precede the skip. A stream opened from a
        // thread's state cannot signal a loss in-band, so it always recovers first.
        let skipping = self.remote().and_then(|r| r.skipping());
        let opened_from_state = self.thread().is_some_and(|t| t.opened_from_state);
        let recover = self.policy == LagPolicy::Recover || skipping.is_some() || opened_from_state;
        // A thread subscription reads the window whatever its policy, to tell its own losses
        // from other threads' frames.
        let backfill = (recover || self.thread().is_some()).then(|| {
            let thread = self.thread().map(|t| &t.id);
            self.channel
                .backfill(self.position, seq, thread, &slot, skipping)
        });
        let position = self.position;
        let dropped = |b: &Backfill| {
            if b.lost { b.oldest - position - 1 } else { 0 }
        };
        let mut missed = gap;
        match backfill {
            // No recovery, and some of its own events in the gap: reported and skipped.
            Some(backfill) if !recover && (backfill.lost || !backfill.frames.is_empty()) => {
                missed = backfill.frames.len() as u64 + dropped(&backfill);
                self.pending.push_back(Frame::lagged(missed));
            }
            // Recovery, or nothing of its own in the gap (then nothing to recover or report).
            Some(backfill) => {
                missed = dropped(&backfill);
                if missed > 0 && !opened_from_state {
                    self.pending.push_back(Frame::lagged(missed));
                }
                // A stream opened from the state that lost events ends without the frames the
                // window had: those are not recovered, and not counted as such.
                if missed == 0 || !opened_from_state {
                    let mut remote = self.ext.as_mut().and_then(|ext| ext.remote.as_mut());
                    let before = self.pending.len();
                    self.pending.extend(
                        backfill
                            .frames
                            .into_iter()
                            .filter_map(|(s, b)| event_frame(remote.as_deref_mut(), epoch, s, b)),
                    );
                    // Only what the client gets: not the frames skipped as replayed already.
                    let count = (self.pending.len() - before) as u64;
                    shared.events_recovered.fetch_add(count, Ordering::Relaxed);
                    shared.metrics.recovered(count);
                }
            }
            None => self.pending.push_back(Frame::lagged(missed)),
        }
        shared.events_missed.fetch_add(missed, Ordering::Relaxed);
        shared.metrics.lagged(missed);
        tracing::debug!(channel = %shared.config.name, user = %self.channel.user, gap, missed, policy = ?self.policy, "subscription lagged");
        // A thread stream ends rather than skip: its client reconnects, and the reconnect
        // opens from the thread's state, which has everything.
        if missed > 0 && (self.policy == LagPolicy::Disconnect || opened_from_state) {
            self.end(EndReason::Lagged);
            return;
        }
        if self.wants(slot.thread) {
            let frame = event_frame(self.remote_mut(), epoch, seq, slot.frame);
            self.pending.extend(frame);
        }
        self.position = seq;
    }

    fn remote(&self) -> Option<&Remote> {
        self.ext.as_ref()?.remote.as_ref()
    }

    fn remote_mut(&mut self) -> Option<&mut Remote> {
        self.ext.as_mut()?.remote.as_mut()
    }

    fn thread(&self) -> Option<&ThreadFilter> {
        self.ext.as_ref()?.thread.as_ref()
    }

    /// Whether `frame`, an event of its thread, is one the opening holds back: the first that
    /// passes the test ends the holding back (see `ThreadFilter::holds_back`).
    fn held_back(&mut self, frame: &Frame) -> bool {
        let Some(filter) = self.ext.as_mut().and_then(|ext| ext.thread.as_mut()) else {
            return false;
        };
        let Some(resumes) = filter.holds_back else {
            return false;
        };
        if resumes(&data_of(frame.bytes())) {
            filter.holds_back = None;
            return false;
        }
        true
    }

    /// Whether a frame tagged `thread` is for this subscription.
    fn wants(&self, thread: Option<ThreadKey>) -> bool {
        ThreadKey::admits(self.thread().map(|t| t.id.key()), thread)
    }

    fn count_delivered(&mut self) {
        self.delivered += 1;
        // Flushed one frame past a batch, keeping that frame's count here: a body that did not
        // send the last frame it took gives its count back (`uncount_last`), and a metric
        // cannot go down once added to.
        if self.delivered > DELIVERED_FLUSH {
            self.channel
                .shared
                .metrics
                .delivered(u64::from(DELIVERED_FLUSH));
            self.delivered = 1;
        }
    }

    /// Takes back the count of the last frame yielded, which the caller never sent on: an SSE
    /// body that held it for its next chunk and was dropped first (see [`counts_delivered`]).
    pub(crate) fn uncount_last(&mut self) {
        self.delivered = self.delivered.saturating_sub(1);
    }
}

impl<E> Stream for Subscription<E> {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let this = self.get_mut();
        if this.remote().is_some() {
            ready!(this.poll_caught_up(cx));
        }
        loop {
            if let Some(frame) = this.pending.pop_front() {
                if counts_delivered(&frame) {
                    if this.held_back(&frame) {
                        continue;
                    }
                    this.count_delivered();
                }
                return Poll::Ready(Some(frame));
            }
            if this.ended.is_some() {
                return Poll::Ready(None);
            }
            // A degraded backplane subscription met an event it cannot vouch for: end, so that
            // the client resumes from the history (see `Remote::frame`).
            if this.remote().is_some_and(|r| r.must_end()) {
                this.end(EndReason::Disconnected);
                continue;
            }
            let Some(live) = this.live.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(live).poll_next(cx)) {
                Some(Ok(slot)) if !slot.is_kick() => {
                    let seq = slot.seq;
                    if seq <= this.position {
                        continue;
                    }
                    if seq == this.position + 1 {
                        this.position = seq;
                        let Slot { frame, thread, .. } = slot;
                        if !this.wants(thread) {
                            continue;
                        }
                        let epoch = this.channel.epoch;
                        let Some(frame) = event_frame(this.remote_mut(), epoch, seq, frame) else {
                            continue;
                        };
                        if this.held_back(&frame) {
                            continue;
                        }
                        this.count_delivered();
                        return Poll::Ready(Some(frame));
                    }
                    this.fill_gap(slot);
                }
                // A kick, or a lag (which may have overwritten a kick; the next event shows the gap).
                Some(Ok(_)) | Some(Err(BroadcastStreamRecvError::Lagged(_))) => {
                    if let Some(reason) = this.kicked() {
                        this.end(reason);
                    }
                }
                // The sender is gone: the channel was removed, which needs no receivers, so
                // this cannot happen to a live subscription; end quietly all the same.
                None => this.end(EndReason::Disconnected),
            }
        }
    }
}

/// Whether yielding `frame` counts in `frames_delivered`: a published event, with an id or
/// without; not a control frame, nor a thread stream's opening.
pub(crate) fn counts_delivered(frame: &Frame) -> bool {
    matches!(frame.kind(), FrameKind::Event(_) | FrameKind::Unnumbered)
}

/// The frame yielded for the event `seq` of the local channel; with a backplane, its id is the
/// one on its `id:` line, and `None` skips a frame already replayed.
fn event_frame(remote: Option<&mut Remote>, epoch: u64, seq: u64, bytes: Bytes) -> Option<Frame> {
    match remote {
        None => Some(Frame::event(seq, epoch, bytes)),
        Some(remote) => remote.frame(bytes),
    }
}

impl<E> Drop for Subscription<E> {
    fn drop(&mut self) {
        if self.delivered > 0 {
            self.channel
                .shared
                .metrics
                .delivered(u64::from(self.delivered));
        }
        if let Some(live) = self.live.take() {
            // BroadcastStream cannot give its receiver back; dropping it drops the receiver,
            // which the channel must see under its lock to count exactly.
            let thread = self.thread().map(|t| t.id.key());
            self.channel.leave_with(thread, move || drop(live));
        }
        self.channel.shared.connection_closed();
    }
}

impl<E> std::fmt::Debug for Subscription<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("user", &self.channel.user)
            .field("position", &EventId::new(self.channel.epoch, self.position))
            .field("pending", &self.pending.len())
            .field("ended", &self.ended)
            .finish()
    }
}

#[allow(dead_code)]
fn _assert_send_sync(s: Subscription<()>) -> impl Send + Sync + Unpin {
    s
}

#[cfg(test)]
mod tests {
    /// Most of what an extra connection costs; BENCHMARKS.md measures the whole.
    #[test]
    fn a_subscription_stays_small() {
        assert!(std::mem::size_of::<super::Subscription<()>>() <= 96);
    }
}
