//! One user's channel: the broadcast ring its connections read, and the replay window behind it.
//!
//! Publishing and subscribing on a channel take its one mutex, briefly and never across an
//! `.await`. Under it a publish assigns the next sequence number, appends the frame to the
//! window and sends it on the ring; a subscribe joins the ring and reads the window. Because
//! both happen under the same lock, a resuming subscriber sees every event exactly once: those
//! up to the moment it joined in the window, those after it on the ring.
//!
//! The window is a `VecDeque` of the same [`Bytes`] the ring carries, so keeping history costs
//! one reference per event and nothing at all until the first publish.
//!
//! A channel is created by the registry on first subscribe and is *idle* when its last receiver
//! is dropped. An idle channel is queued for removal after the retention; removal marks it
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
use crate::subscription::frame_id;
use crate::thread::{Folded, ThreadId, ThreadState};
use crate::user_id::UserId;

/// What travels on a user's broadcast ring: a published event's sequence number and finished
/// frame, or, with sequence number 0 (events start at 1), a *kick* that wakes receivers so they
/// see that the channel was disconnected (see [`UserChannel::kick`]).
///
/// A struct rather than an enum so that tokio's preallocated slot stays as small as an
/// `Option<Bytes>` and a `u64`: the ring is the idle cost of every user.
///
/// The thread tag costs 16 bytes a slot (an `Option<Arc<str>>`, shared by every event of the
/// thread): 128 bytes per user with the default ring.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) frame: Bytes,
    pub(crate) thread: Option<ThreadId>,
}

impl Slot {
    const KICK_SEQ: u64 = 0;

    fn kick() -> Self {
        Self {
            seq: Self::KICK_SEQ,
            frame: Bytes::new(),
            thread: None,
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
    state: Mutex<State>,
    pub(crate) shared: Arc<Shared>,
    /// Where the channel queues itself when its last receiver leaves.
    expiry: Arc<ExpiryQueue<UserChannel>>,
}

struct State {
    /// Sequence number of the last event published; 0 before the first.
    head: u64,
    window: VecDeque<Retained>,
    window_bytes: usize,
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
    /// With a backplane: the sequence number from which some thread's snapshot is due
    /// (`u64::MAX`: none).
    snapshot_due: u64,
}

struct Retained {
    seq: u64,
    at: Instant,
    frame: Bytes,
    thread: Option<ThreadId>,
}

/// A thread of the channel: its one shared name, when it was last published to, and its state
/// when the broadcaster folds threads.
struct ThreadEntry {
    id: ThreadId,
    last_seq: u64,
    state: Option<Box<dyn ThreadState>>,
    /// What `state` held after its last fold, as accounted in the shared gauge.
    bytes: usize,
    /// With a backplane: whether `state` is the thread's, as the shared history has it.
    sync: Sync,
    /// With a backplane: the state covers every event of the thread up to this id. A sync
    /// may read the history ahead of the node's feed, so the frames the feed still brings up
    /// to it are in the state already: a subscription skips them.
    last_id: EventId,
    /// With a backplane: the sequence number of the first event folded since the last
    /// snapshot was written, if any.
    dirty_since: Option<u64>,
    /// The state's [`checkpoint`](ThreadState::checkpoint) after the last fold.
    checkpoint: u8,
}

/// With a backplane, whether a node's state of a thread is the thread's. A node folds the
/// thread's events as the feed delivers them, numbered by the backplane: in sequence, its state
/// is exact; after a gap (the node started listening mid-thread, or its feed was interrupted)
/// it reads the thread back from the backplane (a *sync*), and folds meanwhile nothing.
enum Sync {
    /// Every event of the thread up to the `ordinal`-th is folded, and nothing else. Always so
    /// without a backplane.
    Exact { ordinal: u64 },
    /// The state is not the thread's (and is dropped).
    Inexact,
    /// A sync is reading the thread back; the frames delivered since it started are folded
    /// from the window when it installs its state (see [`SyncStart`]).
    Syncing { token: u64, done: Arc<Notify> },
}

/// Sync tokens, unique in the process.
static SYNC_TOKENS: AtomicU64 = AtomicU64::new(1);

/// What delivering a backplane frame asks of the broadcaster, besides the receivers it reached.
#[derive(Default)]
pub(crate) struct Delivered {
    pub(crate) receivers: usize,
    /// A thread to read back from the backplane.
    pub(crate) sync: Option<(ThreadId, SyncStart)>,
    /// Snapshots to store in the backplane.
    pub(crate) snapshots: Vec<(ThreadId, ThreadSnapshot)>,
}

/// A sync to run: see [`UserChannel::thread_install`]. The frames delivered after `from_seq`
/// are folded from the window when it installs its state.
#[derive(Clone)]
pub(crate) struct SyncStart {
    pub(crate) token: u64,
    pub(crate) from_seq: u64,
    pub(crate) done: Arc<Notify>,
}

/// Where a thread's state stands when a subscription wants it exact.
pub(crate) enum SyncBegin {
    Exact,
    /// A sync runs: wait for it.
    Wait(Arc<Notify>),
    /// Nobody syncs: run this one.
    Start(SyncStart),
    /// The channel was removed.
    Closed,
}

/// The `data:` of a finished frame, as the client reassembles it: the `data:` lines' values
/// joined by line feeds.
fn frame_data(frame: &[u8]) -> Cow<'_, [u8]> {
    let mut lines = frame
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "));
    let Some(first) = lines.next() else {
        return Cow::Borrowed(&[]);
    };
    let Some(second) = lines.next() else {
        return Cow::Borrowed(first);
    };
    let mut joined = [first, second].join(&b'\n');
    for line in lines {
        joined.push(b'\n');
        joined.extend_from_slice(line);
    }
    Cow::Owned(joined)
}

/// The frames of an opening (complete SSE frames, each ending with a blank line), each as its
/// data.
fn opening_datas(opening: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut datas = Vec::new();
    let mut rest = opening;
    while !rest.is_empty() {
        let end = memchr::memmem::find(rest, b"\n\n").map_or(rest.len(), |at| at + 2);
        let (frame, tail) = rest.split_at(end);
        datas.push(frame_data(frame));
        rest = tail;
    }
    datas
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
    /// For a thread subscription on a channel that folds threads: the thread state's opening,
    /// which covers every event up to `position`.
    pub(crate) opening: Option<Bytes>,
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

/// What a lagging receiver can get back from the window.
pub(crate) struct Backfill {
    /// The oldest sequence number the window still had after the receiver's position: events
    /// before it are lost.
    pub(crate) oldest: u64,
    /// The frames of the receiver's thread (all frames, without a thread) it missed.
    pub(crate) frames: Vec<(u64, Bytes)>,
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
            state: Mutex::new(State {
                head: 0,
                window: VecDeque::new(),
                window_bytes: 0,
                active: false,
                idle_since: Instant::now(),
                queued: true,
                closed: false,
                threads: Vec::new(),
                last_remote_id: EventId::new(0, 0),
                snapshot_due: u64::MAX,
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
        state.head += 1;
        let seq = state.head;
        // A thread's events are kept for the retention after the last of them, not after the
        // channel went idle: a run streaming to nobody for longer than the retention must still
        // be there when the page opens. (The queued expiry re-queues itself at the new
        // deadline.)
        if thread.is_some() && !state.active && now > state.idle_since {
            state.idle_since = now;
        }
        let thread = thread.map(|thread| self.fold(&mut state, thread, seq, &payload));
        let id = EventId::new(self.epoch, seq);
        let frame = payload.finish(id);
        let receivers = self.append(&mut state, seq, frame, thread, now);
        Some((id, receivers))
    }

    /// Records the event `seq` in its thread, folding it into the thread's state if the
    /// broadcaster keeps one; returns the thread's shared name for the frame's tag.
    fn fold(&self, state: &mut State, thread: &ThreadId, seq: u64, payload: &Payload) -> ThreadId {
        let at = self.thread_at(state, thread, seq, false);
        let entry = &mut state.threads[at];
        entry.last_seq = seq;
        self.fold_into(entry, &payload.data(), seq);
        entry.id.clone()
    }

    /// The index of `thread`'s entry, created if needed (forgetting the thread published to
    /// least recently if the channel holds its maximum). A new entry has a fresh state, or
    /// with a backplane (`remote`) none until it is known exact.
    fn thread_at(&self, state: &mut State, thread: &ThreadId, seq: u64, remote: bool) -> usize {
        if let Some(at) = state.threads.iter().position(|t| t.id.same(thread)) {
            return at;
        }
        let shared = &self.shared;
        if state.threads.len() >= shared.config.threads.max_threads_per_user.max(1) {
            self.evict_oldest_thread(state);
        }
        let states = shared.config.threads.state.as_ref();
        state.threads.push(ThreadEntry {
            id: thread.clone(),
            last_seq: seq,
            state: if remote {
                None
            } else {
                states.map(|states| states.create(thread))
            },
            bytes: 0,
            sync: if remote {
                Sync::Inexact
            } else {
                Sync::Exact { ordinal: 0 }
            },
            last_id: EventId::new(0, 0),
            dirty_since: None,
            checkpoint: 0,
        });
        state.threads.len() - 1
    }

    /// Folds one event's data into the entry's state, if it has one, with the accounting.
    fn fold_into(&self, entry: &mut ThreadEntry, data: &[u8], seq: u64) {
        let shared = &self.shared;
        if let Some(thread_state) = entry.state.as_mut() {
            let folded = thread_state.fold(data);
            let bytes = thread_state.bytes();
            shared.thread_state_resized(entry.bytes, bytes);
            entry.bytes = bytes;
            match folded {
                Folded::Unknown => {
                    shared.thread_states_unknown.fetch_add(1, Ordering::Relaxed);
                    shared.metrics.thread_states_unknown.increment(1);
                    tracing::warn!(channel = %shared.config.name, user = %self.user, thread = %entry.id, seq, "event could not be applied to the thread's state: its state is unknown until replaced");
                }
                Folded::Trimmed => {
                    shared.thread_states_trimmed.fetch_add(1, Ordering::Relaxed);
                    shared.metrics.thread_states_trimmed.increment(1);
                    tracing::debug!(channel = %shared.config.name, user = %self.user, thread = %entry.id, bytes, "thread state trimmed to its cap");
                }
                _ => {}
            }
        }
    }

    /// Forgets the thread published to least recently.
    fn evict_oldest_thread(&self, state: &mut State) {
        let Some(at) = (0..state.threads.len()).min_by_key(|&i| state.threads[i].last_seq) else {
            return;
        };
        let gone = state.threads.swap_remove(at);
        let shared = &self.shared;
        shared.thread_state_resized(gone.bytes, 0);
        shared.threads_evicted.fetch_add(1, Ordering::Relaxed);
        shared.metrics.threads_evicted.increment(1);
        tracing::info!(channel = %shared.config.name, user = %self.user, thread = %gone.id, "thread forgotten: the user's channel holds its maximum of threads");
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
        state.head += 1;
        let seq = state.head;
        let id = frame_id(&frame);
        if let Some(id) = id {
            state.last_remote_id = id;
        }
        let mut delivered = Delivered::default();
        let tag = thread.map(|(thread, ordinal)| {
            self.fold_remote(&mut state, thread, ordinal, seq, id, &frame, &mut delivered)
        });
        delivered.receivers = self.append(&mut state, seq, frame, tag, now);
        if seq >= state.snapshot_due {
            self.due_snapshots(&mut state, seq, &mut delivered);
        }
        Some(delivered)
    }

    /// Events of the user's history between two snapshots of a thread: half the history, so
    /// that a snapshot is written while the history still holds what follows the previous one.
    fn snapshot_every(&self) -> u64 {
        (self.shared.config.replay_events as u64 / 2).max(1)
    }

    /// [`fold`](Self::fold) for a frame from the backplane: see [`Sync`].
    #[allow(clippy::too_many_arguments)]
    fn fold_remote(
        &self,
        state: &mut State,
        thread: &ThreadId,
        ordinal: u64,
        seq: u64,
        id: Option<EventId>,
        frame: &[u8],
        delivered: &mut Delivered,
    ) -> ThreadId {
        let at = self.thread_at(state, thread, seq, true);
        let every = self.snapshot_every();
        let states = self.shared.config.threads.state.clone();
        let entry = &mut state.threads[at];
        entry.last_seq = seq;
        let (Some(states), Some(id)) = (states, id) else {
            return entry.id.clone();
        };
        if ordinal == 0 {
            return entry.id.clone();
        }
        let next = match &entry.sync {
            Sync::Exact { ordinal: have } if ordinal <= *have => return entry.id.clone(),
            Sync::Exact { ordinal: have } => ordinal == have + 1,
            Sync::Inexact => false,
            Sync::Syncing { .. } => return entry.id.clone(),
        };
        if !next && ordinal == 1 {
            // The thread starts here (it is new, or the backplane forgot it): nothing before.
            self.shared.thread_state_resized(entry.bytes, 0);
            entry.bytes = 0;
            entry.state = Some(states.create(thread));
        } else if !next {
            self.shared.thread_state_resized(entry.bytes, 0);
            entry.bytes = 0;
            entry.state = None;
            let start = SyncStart {
                token: SYNC_TOKENS.fetch_add(1, Ordering::Relaxed),
                from_seq: seq - 1,
                done: Arc::new(Notify::new()),
            };
            entry.sync = Sync::Syncing {
                token: start.token,
                done: start.done.clone(),
            };
            entry.dirty_since = None;
            delivered.sync = Some((entry.id.clone(), start));
            return entry.id.clone();
        }
        self.fold_into(entry, &frame_data(frame), seq);
        entry.sync = Sync::Exact { ordinal };
        entry.last_id = id;
        let checkpoint = entry.state.as_ref().map_or(0, |s| s.checkpoint());
        let crossed = std::mem::replace(&mut entry.checkpoint, checkpoint) != checkpoint;
        let mut due = None;
        if crossed {
            delivered
                .snapshots
                .push((entry.id.clone(), Self::snapshot_of(entry)));
        } else if entry.dirty_since.is_none() {
            entry.dirty_since = Some(seq);
            due = Some(seq + every);
        }
        let tag = entry.id.clone();
        if let Some(due) = due {
            state.snapshot_due = state.snapshot_due.min(due);
        }
        tag
    }

    /// The entry's snapshot, now: it is then clean.
    fn snapshot_of(entry: &mut ThreadEntry) -> ThreadSnapshot {
        entry.dirty_since = None;
        let mut opening = Vec::new();
        if let Some(thread_state) = entry.state.as_ref() {
            thread_state.write_opening(&mut opening);
        }
        let count = match entry.sync {
            Sync::Exact { ordinal } => ordinal,
            _ => 0,
        };
        ThreadSnapshot {
            covers: entry.last_id,
            count,
            opening: Bytes::from(opening),
        }
    }

    /// Writes the snapshots due at `seq`, and sets when the next is due.
    fn due_snapshots(&self, state: &mut State, seq: u64, delivered: &mut Delivered) {
        let every = self.snapshot_every();
        let mut next = u64::MAX;
        for entry in &mut state.threads {
            let Some(since) = entry.dirty_since else {
                continue;
            };
            if !matches!(entry.sync, Sync::Exact { .. }) {
                entry.dirty_since = None;
            } else if seq >= since + every {
                delivered
                    .snapshots
                    .push((entry.id.clone(), Self::snapshot_of(entry)));
            } else {
                next = next.min(since + every);
            }
        }
        state.snapshot_due = next;
    }

    /// A subscription wants `thread`'s state exact: it is, or a sync runs, or one must start.
    pub(crate) fn thread_sync_begin(&self, thread: &ThreadId) -> SyncBegin {
        let mut state = self.lock();
        if state.closed {
            return SyncBegin::Closed;
        }
        let head = state.head;
        let at = self.thread_at(&mut state, thread, head, true);
        let entry = &mut state.threads[at];
        match &entry.sync {
            Sync::Exact { .. } => SyncBegin::Exact,
            Sync::Syncing { done, .. } => SyncBegin::Wait(done.clone()),
            Sync::Inexact => {
                let start = SyncStart {
                    token: SYNC_TOKENS.fetch_add(1, Ordering::Relaxed),
                    from_seq: head,
                    done: Arc::new(Notify::new()),
                };
                entry.sync = Sync::Syncing {
                    token: start.token,
                    done: start.done.clone(),
                };
                SyncBegin::Start(start)
            }
        }
    }

    /// Whether `thread`'s state is exact.
    pub(crate) fn thread_exact(&self, thread: &ThreadId) -> bool {
        let state = self.lock();
        state
            .threads
            .iter()
            .any(|t| t.id.same(thread) && matches!(t.sync, Sync::Exact { .. }))
    }

    /// Whether the sync whose completion `done` signals still runs.
    pub(crate) fn thread_syncing(&self, thread: &ThreadId, done: &Arc<Notify>) -> bool {
        let state = self.lock();
        state.threads.iter().any(|t| {
            t.id.same(thread)
                && matches!(&t.sync, Sync::Syncing { done: d, .. } if Arc::ptr_eq(d, done))
        })
    }

    /// Installs what a sync read of `thread` (started as `start`): the snapshot and the events
    /// after it folded into a fresh state, then the thread's frames the channel delivered since
    /// the sync started and the read did not cover (ids after its `last_id`), from the window.
    /// The state is then exact. Returns the snapshot to store when the read was not complete
    /// (the history no longer holds every event after the snapshot: the state is rebuilt from
    /// what there is, counted as unknown, and becomes the thread's).
    ///
    /// The sync fails (the state stays inexact, and the next frame or subscription syncs
    /// again) if the read failed, if the window no longer holds every frame since the sync
    /// started, or if the state was invalidated meanwhile.
    pub(crate) fn thread_install(
        &self,
        thread: &ThreadId,
        start: &SyncStart,
        read: Option<ThreadHistory>,
    ) -> Option<ThreadSnapshot> {
        /// Wakes the subscriptions waiting for the sync, however it ends.
        struct Done<'a>(&'a Notify);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.notify_waiters();
            }
        }
        let _done = Done(&start.done);
        let states = self.shared.config.threads.state.clone()?;
        let mut state = self.lock();
        let now = Instant::now();
        self.evict(&mut state, now, (0, 0));
        let head = state.head;
        let oldest = state.window.front().map_or(head + 1, |r| r.seq);
        let State {
            threads, window, ..
        } = &mut *state;
        let entry = threads.iter_mut().find(|t| t.id.same(thread))?;
        let current = matches!(&entry.sync, Sync::Syncing { token, .. } if *token == start.token);
        if !current {
            return None;
        }
        let complete_window = head == start.from_seq || oldest <= start.from_seq + 1;
        let (Some(read), true) = (read, complete_window) else {
            entry.sync = Sync::Inexact;
            return None;
        };
        let complete = read.is_complete();
        let mut fresh = states.create(thread);
        if let Some(snapshot) = &read.snapshot {
            for data in opening_datas(&snapshot.opening) {
                fresh.fold(&data);
            }
        }
        for (_, frame) in &read.events {
            fresh.fold(&frame_data(frame));
        }
        let mut ordinal = read.count;
        let mut last_id = read.last_id;
        for retained in window.iter().filter(|r| r.seq > start.from_seq) {
            let ours = retained.thread.as_ref().is_some_and(|t| t.same(thread));
            match frame_id(&retained.frame) {
                Some(id) if ours && id > read.last_id => {
                    fresh.fold(&frame_data(&retained.frame));
                    ordinal += 1;
                    last_id = id;
                }
                _ => {}
            }
        }
        let bytes = fresh.bytes();
        self.shared.thread_state_resized(entry.bytes, bytes);
        entry.bytes = bytes;
        entry.checkpoint = fresh.checkpoint();
        entry.state = Some(fresh);
        entry.sync = Sync::Exact { ordinal };
        entry.last_id = last_id;
        if complete {
            return None;
        }
        let shared = &self.shared;
        shared.thread_states_unknown.fetch_add(1, Ordering::Relaxed);
        shared.metrics.thread_states_unknown.increment(1);
        tracing::warn!(channel = %shared.config.name, user = %self.user, thread = %entry.id, "the backplane's history no longer holds every event of the thread after its snapshot: its state is rebuilt from what there is, and is partly unknown");
        Some(Self::snapshot_of(entry))
    }

    /// With a backplane, the feed was interrupted: no thread state can be trusted any more
    /// (the next frame or subscription of each thread syncs it again).
    pub(crate) fn threads_unsynced(&self) {
        if self.shared.config.threads.state.is_none() {
            return;
        }
        let mut state = self.lock();
        for entry in &mut state.threads {
            if let Sync::Syncing { done, .. } = &entry.sync {
                done.notify_waiters();
            }
            entry.sync = Sync::Inexact;
            entry.state = None;
            entry.dirty_since = None;
            self.shared.thread_state_resized(entry.bytes, 0);
            entry.bytes = 0;
        }
    }

    /// With a backplane, the opening of `thread` if its state is exact, with the sequence
    /// number it covers and the id of the channel's last frame: taken under the lock that
    /// deliveries take, so that the live tail follows it with no gap and no duplicate.
    /// Also the id the state covers: the frames up to it that the feed still brings are in
    /// the opening.
    pub(crate) fn thread_opening(
        &self,
        thread: &ThreadId,
    ) -> Option<(Bytes, u64, EventId, EventId)> {
        let state = self.lock();
        let entry = state.threads.iter().find(|t| t.id.same(thread))?;
        if !matches!(entry.sync, Sync::Exact { .. }) {
            return None;
        }
        let mut opening = Vec::new();
        if let Some(thread_state) = entry.state.as_ref() {
            thread_state.write_opening(&mut opening);
        }
        Some((
            Bytes::from(opening),
            state.head,
            state.last_remote_id,
            entry.last_id,
        ))
    }

    /// Appends the frame `seq` to the window and sends it on the ring; returns the receivers.
    fn append(
        &self,
        state: &mut State,
        seq: u64,
        frame: Bytes,
        thread: Option<ThreadId>,
        now: Instant,
    ) -> usize {
        let config = &self.shared.config;
        let len = frame.len();
        // A frame larger than the whole window is only sent, never kept; the window is emptied
        // then, since it must hold a run of consecutive events: one with a hole in it would let
        // a resume or a back-fill skip the big event without a `reset` or a `lagged`.
        let keep = config.replay_events > 0 && len <= config.replay_bytes;
        // Room is made before the frame is added, so that the accounted bytes never exceed the
        // window's bound, not even for a moment.
        let incoming = if keep { (1, len) } else { (usize::MAX, 0) };
        self.evict(state, now, incoming);
        if keep {
            state.window.push_back(Retained {
                seq,
                at: now,
                frame: frame.clone(),
                thread: thread.clone(),
            });
            state.window_bytes += len;
            self.shared.buffered_added(len);
        }
        self.sender.send(Slot { seq, frame, thread }).unwrap_or(0)
    }

    /// Drops what the window may no longer keep: over the count, over the bytes, or too old,
    /// counting `incoming` (events, bytes) about to be added.
    fn evict(&self, state: &mut State, now: Instant, incoming: (usize, usize)) {
        let config = &self.shared.config;
        while let Some(oldest) = state.window.front() {
            let over = state.window.len().saturating_add(incoming.0) > config.replay_events
                || state.window_bytes + incoming.1 > config.replay_bytes
                || now.saturating_duration_since(oldest.at) > config.replay_age;
            if !over {
                break;
            }
            let len = oldest.frame.len();
            state.window.pop_front();
            state.window_bytes -= len;
            self.shared.buffered_removed(len);
        }
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
        let receiver = self.sender.subscribe();
        if !state.active {
            state.active = true;
            self.shared.user_became_active();
        }
        self.evict(&mut state, Instant::now(), (0, 0));
        let head = state.head;
        let entry = thread.and_then(|thread| state.threads.iter().find(|t| t.id.same(thread)));
        let mut joined = Joined {
            receiver,
            position: head,
            head,
            replay: Vec::new(),
            reset: None,
            kicks: self.kicks.load(Ordering::Acquire),
            opening: None,
            thread: entry.map(|t| t.id.clone()).or_else(|| thread.cloned()),
            needs_sync: false,
            remote_id: state.last_remote_id,
            covered: entry.map_or(EventId::new(0, 0), |t| t.last_id),
        };
        if thread.is_some() && config.threads.state.is_some() {
            if remote && !entry.is_some_and(|t| matches!(t.sync, Sync::Exact { .. })) {
                joined.needs_sync = true;
                return Ok(joined);
            }
            // The opening covers every event up to `head`, read under the lock that publishes
            // take: the live tail starts right after it.
            let mut opening = Vec::new();
            if let Some(thread_state) = entry.and_then(|t| t.state.as_ref()) {
                thread_state.write_opening(&mut opening);
            }
            joined.opening = Some(Bytes::from(opening));
            return Ok(joined);
        }
        let Some(raw) = last_event_id else {
            return Ok(joined);
        };
        let oldest = state.window.front().map_or(head + 1, |r| r.seq);
        joined.reset = match EventId::parse(raw) {
            None => Some(ResetReason::Malformed),
            Some(id) if id.epoch() != self.epoch => Some(ResetReason::Stale),
            Some(id) if id.seq() > head => Some(ResetReason::Unknown),
            Some(id) if id.seq() + 1 < oldest => Some(ResetReason::Expired),
            Some(id) => {
                joined.position = id.seq();
                joined.replay =
                    Self::frames_between(&state, id.seq(), u64::MAX, joined.thread.as_ref()).1;
                None
            }
        };
        Ok(joined)
    }

    /// The oldest sequence number the window holds after `after` (`before` if none), and the
    /// window's frames with `after < seq < before` of `thread` (of every thread if `None`).
    fn frames_between(
        state: &State,
        after: u64,
        before: u64,
        thread: Option<&ThreadId>,
    ) -> (u64, Vec<(u64, Bytes)>) {
        let start = state.window.partition_point(|r| r.seq <= after);
        let oldest = state
            .window
            .get(start)
            .map_or(before, |r| r.seq.min(before));
        let frames = state
            .window
            .range(start..)
            .take_while(|r| r.seq < before)
            .filter(|r| match (thread, &r.thread) {
                (None, _) => true,
                (Some(wanted), Some(tag)) => wanted.same(tag),
                (Some(_), None) => false,
            })
            .map(|r| (r.seq, r.frame.clone()))
            .collect();
        (oldest, frames)
    }

    /// What a lagging receiver missed, `after < seq < before`, that the window still has.
    pub(crate) fn backfill(&self, after: u64, before: u64, thread: Option<&ThreadId>) -> Backfill {
        let mut state = self.lock();
        self.evict(&mut state, Instant::now(), (0, 0));
        let (oldest, frames) = Self::frames_between(&state, after, before, thread);
        Backfill { oldest, frames }
    }

    /// Drops a receiver under the lock, so that the count is exact when this returns and the
    /// channel is queued for expiry if it was the last.
    pub(crate) fn leave_with(self: &Arc<Self>, drop_receiver: impl FnOnce()) {
        let mut state = self.lock();
        drop_receiver();
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
        let _state = self.lock();
        self.kicks.fetch_add(1, Ordering::AcqRel);
        let _ = self.sender.send(Slot::kick());
    }

    pub(crate) fn kicked_since(&self, kicks: u32) -> bool {
        self.kicks.load(Ordering::Acquire) != kicks
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
        self.shared.buffered_removed(state.window_bytes);
        state.window = VecDeque::new();
        state.window_bytes = 0;
        for thread in std::mem::take(&mut state.threads) {
            self.shared.thread_state_resized(thread.bytes, 0);
        }
        true
    }

    /// Bytes and frames held by the window.
    pub(crate) fn buffered(&self) -> (usize, usize) {
        let state = self.lock();
        (state.window_bytes, state.window.len())
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
