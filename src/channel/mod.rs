//! One user's channel: the broadcast ring its connections read, and the replay window behind it.
//!
//! Publishing and subscribing on a channel take its one mutex, briefly and never across an
//! `.await`. Under it a publish folds the event into its thread's state (if any), then assigns
//! the next sequence number, appends the frame to the window and sends it on the ring (nothing
//! that can fail comes between taking a number and sending it, so no stream sees a gap that was
//! not a loss); a subscribe joins the ring and reads the window. Because
//! both happen under the same lock, a resuming subscriber sees every event exactly once: those
//! up to the moment it joined in the window, those after it on the ring.
//!
//! The window (`window.rs`) is a `VecDeque` of the same [`Bytes`] the ring carries, so keeping
//! history costs one reference per event and nothing at all until the first publish.
//!
//! # Chains
//!
//! Every event of a thread is linked to the previous event of its thread, so that a thread
//! subscription that lags, or resumes from an id the window no longer holds, counts as lost
//! only its own events: see `chain.rs`.
//!
//! A channel is created by the registry on first subscribe, or by a publish into a thread (born
//! idle), and is *idle* while it has no receiver. An idle channel is queued for removal after
//! the retention (on one node, a thread's publish restarts it); removal marks it
//! `closed` under the lock, so a subscriber that raced with it retries on a fresh channel
//! instead of joining one that is gone.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use crate::backplane::{ThreadHistory, ThreadSnapshot};
use crate::encode::Payload;
use crate::event_id::{EventId, next_epoch};
use crate::expiry::ExpiryQueue;
use crate::reason::ResetReason;
use crate::shared::Shared;
use crate::thread::{Folded, HoldBack, ThreadId, ThreadKey, ThreadState, ThreadStates};
use crate::user_id::UserId;
use crate::wire::frame_id;

mod chain;
mod loss;
mod threads;
mod window;

use loss::BeforeLoss;
use threads::*;
pub(crate) use threads::{Delivered, SyncBegin, SyncStart};
pub(crate) use window::Backfill;
use window::Retained;

/// What travels on a user's broadcast ring: a published event's sequence number and finished
/// frame, or, with sequence number 0 (events start at 1), a *kick* that wakes receivers so they
/// see that the channel was disconnected (see [`UserChannel::kick`]).
///
/// A struct rather than an enum so that tokio's preallocated slot stays as small as an
/// `Option<Bytes>` and a `u64`: the ring is the idle cost of every user.
///
/// The thread tag is the thread's [`ThreadKey`], a plain integer, so that the clone every
/// receiver makes of every slot costs nothing for it (see [`crate::thread`]).
///
/// The slot keeps the 56 bytes it had with a shared name as the tag (80 in tokio's ring, with
/// its lock and counters): at 48, fan-out to 100 and 1 000 connections read 5–14 % slower than
/// the build before in four interleaved runs, which padding undid in three. The cause is not
/// understood (the instructions per delivery fell) and the bench's spread is about ±10 %, so
/// the layout that was measured before stays; it costs 64 bytes per user. The word that was
/// padding now carries [`Slot::prev`], the link of the frame's chain (see the module docs,
/// *Chains*).
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) frame: Bytes,
    pub(crate) thread: Option<ThreadKey>,
    /// The sequence number of the previous event of the frame's thread (see the module docs,
    /// *Chains*); 0 if none, and for an unthreaded frame.
    pub(crate) prev: u64,
}

impl Slot {
    const KICK_SEQ: u64 = 0;

    fn kick() -> Self {
        Self {
            seq: Self::KICK_SEQ,
            frame: Bytes::new(),
            thread: None,
            prev: 0,
        }
    }

    pub(crate) fn is_kick(&self) -> bool {
        self.seq == Self::KICK_SEQ
    }
}

pub(crate) struct UserChannel {
    pub(crate) user: UserId,
    pub(crate) epoch: u64,
    sender: broadcast::Sender<Slot>,
    /// Bumped by every [`kick`](Self::kick); a subscription ends when it differs from the value it
    /// joined with. Checked on a `Kick` slot and after a lag, which may have overwritten one.
    kicks: AtomicU32,
    /// Bumped by every [`kick_degraded`](Self::kick_degraded): a *degraded* backplane
    /// subscription ends when it differs from the value it joined with; the others stay.
    degraded_kicks: AtomicU32,
    state: Mutex<State>,
    pub(crate) shared: Arc<Shared>,
    /// Where the channel queues itself when its last receiver leaves.
    expiry: Arc<ExpiryQueue<UserChannel>>,
}

struct State {
    /// Sequence number of the last event published; 0 before the first.
    head: u64,
    /// The frames kept for resumes and back-fills: always a run of consecutive events (see
    /// [`UserChannel::append`]), the front being event `window_start`, so that an entry needs
    /// no sequence number of its own.
    window: VecDeque<Retained>,
    /// The sequence number of the window's front (meaningless while the window is empty).
    window_start: u64,
    /// The last event of every thread the channel forgot (see `evict_oldest_thread`): a thread
    /// created afresh links its first event to it, since its earlier events may be after a
    /// subscription's position (0: none forgotten).
    forgotten: u64,
    window_bytes: usize,
    /// When the window's oldest frame was published (meaningless while the window is empty):
    /// kept here so that a publish checks the window's bounds without reading its buffer, which
    /// is cold memory for a user published to now and then.
    oldest_at: Instant,
    /// The channel has at least one receiver.
    active: bool,
    /// When the channel last became idle.
    idle_since: Instant,
    /// The channel has an entry in the registry's idle queue.
    queued: bool,
    /// Removed from the registry: nobody may join it any more.
    closed: bool,
    /// The threads published to, with their states; empty until the first thread publish.
    threads: Vec<ThreadEntry>,
    /// With a backplane: the id of the last frame delivered with one.
    last_remote_id: EventId,
    /// With a backplane: the sequence number of the last frame delivered without an id (one
    /// in no history, which no catch-up replays); 0 if none.
    last_unnumbered: u64,
    /// With a backplane: the sequence number from which some thread's snapshot is due
    /// (`u64::MAX`: none).
    snapshot_due: u64,
    /// The receivers that filter on a thread, by thread: those that skip a frame of another
    /// thread, or without one, so that a publish does not count them among those it reached.
    /// Empty (no allocation) while no connection asked for a thread.
    thread_receivers: Vec<(ThreadKey, usize)>,
}

/// What a new receiver starts with.
pub(crate) struct Joined {
    pub(crate) receiver: broadcast::Receiver<Slot>,
    /// The position the subscription starts from: frames after it are delivered.
    pub(crate) position: u64,
    /// The channel's last sequence number when it joined: the ring delivers what follows.
    pub(crate) head: u64,
    /// Frames from the window to deliver before live ones.
    pub(crate) replay: Vec<(u64, Bytes)>,
    pub(crate) reset: Option<ResetReason>,
    pub(crate) kicks: u32,
    pub(crate) degraded_kicks: u32,
    /// For a thread subscription on a channel that folds threads: the thread state's opening,
    /// which covers every event up to `position`.
    pub(crate) opening: Option<Bytes>,
    /// With the opening: the thread's events the subscription must not deliver after it (see
    /// [`ThreadState::holds_back_until`](crate::ThreadState::holds_back_until)).
    pub(crate) holds_back: Option<HoldBack>,
    /// The thread the subscription filters on, sharing the channel's allocation of its name.
    pub(crate) thread: Option<ThreadId>,
    /// With a backplane: the thread's state is not known exact here; the subscription must
    /// sync it, then open from it.
    pub(crate) needs_sync: bool,
    /// With a backplane: the id of the last frame the channel delivered with one.
    pub(crate) remote_id: EventId,
    /// With a backplane: the id the thread's state covers (see `ThreadEntry::last_id`).
    pub(crate) covered: EventId,
}

/// Why a channel refused a receiver.
pub(crate) enum JoinRefused {
    /// The channel was removed meanwhile: look the user up again.
    Closed,
    TooManyConnections,
    ShuttingDown,
}

impl UserChannel {
    /// A new, idle channel. The caller queues it for expiry so that it cannot leak if the
    /// subscribe that created it fails.
    pub(crate) fn new(
        user: UserId,
        shared: Arc<Shared>,
        expiry: Arc<ExpiryQueue<UserChannel>>,
    ) -> Self {
        let (sender, _) = broadcast::channel(shared.config.capacity.clamp(1, 1 << 20));
        Self {
            user,
            epoch: next_epoch(),
            sender,
            kicks: AtomicU32::new(0),
            degraded_kicks: AtomicU32::new(0),
            state: Mutex::new(State {
                head: 0,
                window: VecDeque::new(),
                window_start: 0,
                forgotten: 0,
                window_bytes: 0,
                oldest_at: Instant::now(),
                active: false,
                idle_since: Instant::now(),
                queued: true,
                closed: false,
                threads: Vec::new(),
                last_remote_id: EventId::new(0, 0),
                last_unnumbered: 0,
                snapshot_due: u64::MAX,
                thread_receivers: Vec::new(),
            }),
            shared,
            expiry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent in a way that
        // matters more than losing the channel would, so a poisoned lock is used as is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn receiver_count(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Publishes a frame: the next sequence number, the window, then the ring. Returns `None`
    /// when the channel was removed meanwhile (the event then has nobody to reach).
    /// With a thread, the event is tagged with it and folded into the thread's state first.
    pub(crate) fn publish(
        &self,
        payload: Payload,
        thread: Option<&ThreadId>,
        now: Instant,
    ) -> Option<(EventId, usize)> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        // The sequence number is taken (`head` moved) only once the fold is done, right before
        // the append: a fold that panics (a `ThreadState` is the caller's code) then leaves no
        // number taken and never sent, which every stream of the user would see as a gap.
        let seq = state.head + 1;
        if thread.is_some() {
            Self::keep_for_thread(&mut state, now);
        }
        let linked = thread.map(|thread| self.fold(&mut state, thread, seq, &payload));
        let id = EventId::new(self.epoch, seq);
        let frame = payload.finish(id);
        state.head = seq;
        let (thread, prev) = Self::link(linked);
        let receivers = self.append(&mut state, seq, frame, thread, prev, now);
        Some((id, receivers))
    }

    /// A thread's events keep an idle channel for the retention after the last of them, not
    /// after the channel went idle: a run streaming to nobody for longer than the retention must
    /// still be there when the page opens, and with a backplane, its node must not stop
    /// listening mid-run. (The queued expiry re-queues itself at the new deadline.)
    fn keep_for_thread(state: &mut State, now: Instant) {
        if !state.active && now > state.idle_since {
            state.idle_since = now;
        }
    }

    /// Publishes a frame that a backplane finished with its own `id:` line: the next local
    /// sequence number (for the ring, the window and gap detection), the window, then the ring.
    /// Returns `None` when the channel was removed meanwhile.
    ///
    /// With a thread, the frame is tagged with it, and folded into the thread's state if the
    /// broadcaster keeps one and the state is exact (see [`Sync`]): `ordinal` is the event's
    /// position in the thread (0 for a frame that went through no backplane, which is not
    /// folded). What the broadcaster must do next (a sync, snapshots to store) is returned.
    pub(crate) fn publish_frame(
        &self,
        frame: Bytes,
        thread: Option<(&ThreadId, u64)>,
        now: Instant,
    ) -> Option<Delivered> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        // From the feed as from a local publish: whichever node published it.
        if thread.is_some() {
            Self::keep_for_thread(&mut state, now);
        }
        // Taken only after the fold, as in `publish`.
        let seq = state.head + 1;
        let id = frame_id(&frame);
        match id {
            Some(id) => state.last_remote_id = id,
            None => state.last_unnumbered = seq,
        }
        let mut delivered = Delivered::default();
        let tag = thread.map(|(thread, ordinal)| {
            self.fold_remote(&mut state, thread, ordinal, seq, id, &frame, &mut delivered)
        });
        state.head = seq;
        let (tag, prev) = Self::link(tag);
        delivered.receivers = self.append(&mut state, seq, frame, tag, prev, now);
        if seq >= state.snapshot_due {
            self.due_snapshots(&mut state, seq, &mut delivered);
        }
        Some(delivered)
    }

    /// Adds a receiver, and reads the window when resuming from `last_event_id`. With a thread,
    /// the receiver filters on it; if the broadcaster folds threads, it starts with the thread
    /// state's opening instead of a resume.
    ///
    /// With a backplane (`remote`), a thread subscription opens from the thread's state only if
    /// it is exact here; otherwise the subscription must sync it first (`needs_sync`).
    pub(crate) fn join(
        &self,
        last_event_id: Option<&str>,
        thread: Option<&ThreadId>,
        remote: bool,
    ) -> Result<Joined, JoinRefused> {
        let config = &self.shared.config;
        let mut state = self.lock();
        if state.closed {
            return Err(JoinRefused::Closed);
        }
        // Checked under the channel lock, which shutdown also takes to kick the channel: a
        // receiver either is refused here or is kicked.
        if self.shared.is_shutting_down() {
            return Err(JoinRefused::ShuttingDown);
        }
        if self.sender.receiver_count() >= config.max_connections_per_user {
            return Err(JoinRefused::TooManyConnections);
        }
        self.evict(&mut state, Instant::now(), (0, 0));
        let head = state.head;
        let entry = thread.and_then(|thread| state.threads.iter().find(|t| t.id.same(thread)));
        let opens = thread.is_some() && config.threads.state.is_some();
        let needs_sync =
            opens && remote && !entry.is_some_and(|t| matches!(t.sync, Sync::Exact { .. }));
        // The opening covers every event up to `head`, read under the lock that publishes take:
        // the live tail starts right after it. It is written before the receiver is made and
        // counted: a thread state is the caller's code, and one that panics here must leave no
        // receiver counted among its thread's, which no `leave_with` would take off.
        let opening = (opens && !needs_sync).then(|| {
            let mut opening = Vec::new();
            if let Some(thread_state) = entry.and_then(|t| t.state.as_ref()) {
                thread_state.write_opening(&mut opening);
            }
            Bytes::from(opening)
        });
        let holds_back = opening
            .as_ref()
            .and(entry.and_then(|t| t.state.as_ref()))
            .and_then(|thread_state| thread_state.holds_back_until());
        let thread_id = entry.map(|t| t.id.clone()).or_else(|| thread.cloned());
        let covered = entry.map_or(EventId::new(0, 0), |t| t.last_id);
        let receiver = self.sender.subscribe();
        if let Some(thread) = thread {
            state.thread_receiver_joined(thread.key());
        }
        if !state.active {
            state.active = true;
            self.shared.user_became_active();
        }
        let mut joined = Joined {
            receiver,
            position: head,
            head,
            replay: Vec::new(),
            reset: None,
            kicks: self.kicks.load(Ordering::Acquire),
            degraded_kicks: self.degraded_kicks.load(Ordering::Acquire),
            opening,
            holds_back,
            thread: thread_id,
            needs_sync,
            remote_id: state.last_remote_id,
            covered,
        };
        if opens {
            return Ok(joined);
        }
        let Some(raw) = last_event_id else {
            return Ok(joined);
        };
        let oldest = state.front_seq().unwrap_or(head + 1);
        // A thread subscription lost something only if an event of its thread left the window
        // (see the module docs, *Chains*), as at a gap: the user's other threads may have pushed
        // its position out of the window without taking anything of its own.
        let expired = |after: u64| match joined.thread.as_ref() {
            _ if after + 1 >= oldest => false,
            None => true,
            Some(thread) => state.thread_lost(thread, after, oldest, &Slot::kick()),
        };
        joined.reset = match EventId::parse(raw) {
            None => Some(ResetReason::Malformed),
            Some(id) if id.epoch() != self.epoch => Some(ResetReason::Stale),
            Some(id) if id.seq() > head => Some(ResetReason::Unknown),
            Some(id) if expired(id.seq()) => Some(ResetReason::Expired),
            Some(id) => {
                joined.position = id.seq();
                joined.replay =
                    Self::frames_between(&state, id.seq(), u64::MAX, joined.thread.as_ref()).1;
                None
            }
        };
        Ok(joined)
    }

    /// Drops a receiver (that filtered on `thread`, if any) under the lock, so that the count
    /// is exact when this returns and the channel is queued for expiry if it was the last.
    pub(crate) fn leave_with(
        self: &Arc<Self>,
        thread: Option<ThreadKey>,
        drop_receiver: impl FnOnce(),
    ) {
        let mut state = self.lock();
        drop_receiver();
        if let Some(thread) = thread {
            state.thread_receiver_left(thread);
        }
        if state.active && self.sender.receiver_count() == 0 {
            state.active = false;
            state.idle_since = Instant::now();
            self.shared.user_became_idle();
            if !state.queued {
                state.queued = true;
                self.expiry.push(self, state.idle_since);
            }
        }
    }

    /// Ends every subscription on the channel; the channel itself, with its window and epoch,
    /// stays, so the clients resume where they were.
    pub(crate) fn kick(&self) {
        self.bump_and_wake(&self.kicks);
    }

    pub(crate) fn kicked_since(&self, kicks: u32) -> bool {
        self.kicks.load(Ordering::Acquire) != kicks
    }

    /// Ends the channel's *degraded* backplane subscriptions only (see `Remote`): the
    /// backplane can serve them properly now, and the others are healthy.
    pub(crate) fn kick_degraded(&self) {
        self.bump_and_wake(&self.degraded_kicks);
    }

    /// Bumps a kick counter and sends a `Kick` slot, under the state lock, so that every
    /// receiver wakes and compares the counter with the value it joined with.
    fn bump_and_wake(&self, counter: &AtomicU32) {
        let _state = self.lock();
        counter.fetch_add(1, Ordering::AcqRel);
        let _ = self.sender.send(Slot::kick());
    }

    pub(crate) fn degraded_kicked_since(&self, degraded_kicks: u32) -> bool {
        self.degraded_kicks.load(Ordering::Acquire) != degraded_kicks
    }

    /// Called by the sweeper for a queued channel once its deadline passed. Closes the channel
    /// and returns `true` when it has been idle for the whole retention; otherwise re-queues it
    /// if it is idle again, or forgets it if it is active.
    pub(crate) fn expire(self: &Arc<Self>, now: Instant) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        if state.active {
            state.queued = false;
            return false;
        }
        let deadline = self.expiry.expiry(state.idle_since);
        if deadline > now {
            self.expiry.push(self, state.idle_since);
            return false;
        }
        state.closed = true;
        state.queued = false;
        // The memory goes now, not when the last reference to the channel does.
        release_held(&self.shared, &mut state);
        true
    }
}

/// A channel gives back what it counts in its broadcaster's gauges when it goes, whichever way
/// it goes: swept after its retention, or with its broadcaster, maybe after a connection that
/// outlived the broadcaster. A new broadcaster under the same name then starts from zero.
impl Drop for UserChannel {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        release_held(&self.shared, state);
        if !state.active {
            self.shared.metrics.retained_channels.decrement(1.0);
        }
        self.shared.channels.fetch_sub(1, Ordering::Relaxed);
        self.shared.metrics.channels.decrement(1.0);
    }
}

/// Frees the window and the thread states, and takes their bytes off the gauges.
fn release_held(shared: &Shared, state: &mut State) {
    UserChannel::empty_window(shared, state);
    for thread in std::mem::take(&mut state.threads) {
        shared.thread_state_resized(thread.bytes, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::Slot;

    #[test]
    fn a_ring_slot_costs_a_bytes_a_sequence_number_and_a_thread_tag() {
        assert_eq!(std::mem::size_of::<Option<Slot>>(), 56);
    }
}
