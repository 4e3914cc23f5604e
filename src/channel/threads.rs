//! A user channel's threads: their states, folded as events pass, on one node or from the
//! backplane's feed (with the sync that makes a state exact again after a gap), the snapshots
//! a backplane stores, and the opening a thread subscription starts with.

use super::*;
use crate::wire::data_of;

/// A thread of the channel: its one shared name, when it was last published to, and its state
/// when the broadcaster folds threads.
pub(super) struct ThreadEntry {
    pub(super) id: ThreadId,
    pub(super) last_seq: u64,
    /// The last event published to the thread: the head of its chain (see the channel docs,
    /// *Chains*). Not `last_seq`, which also moves when a subscription looks the thread up.
    pub(super) last_event: u64,
    pub(super) state: Option<Box<dyn ThreadState>>,
    /// What `state` held after its last fold, as accounted in the shared gauge.
    pub(super) bytes: usize,
    /// With a backplane: whether `state` is the thread's, as the shared history has it.
    pub(super) sync: Sync,
    /// With a backplane: the state covers every event of the thread up to this id. A sync
    /// may read the history ahead of the node's feed, so the frames the feed still brings up
    /// to it are in the state already (or were numbered before Redis started the thread over,
    /// and are no part of it): a subscription skips them, and so does the fold.
    pub(super) last_id: EventId,
    /// With a backplane: the last exact state held folded some of the thread's events. The one
    /// notion of "the node knew the thread" when the thread's first event comes again
    /// (`fold_remote_at`) or a read holds it only since Redis started it over (`sync_base`):
    /// not `last_id`, which a sync of a thread with no event sets too (to the user's last id).
    pub(super) folded: bool,
    /// With a backplane: the sequence number of the first event folded since the last
    /// snapshot was written, if any.
    pub(super) dirty_since: Option<u64>,
    /// The state's [`checkpoint`](ThreadState::checkpoint) after the last fold.
    pub(super) checkpoint: u8,
    /// With a backplane that lost its data: what this node knew of the thread then, until it
    /// is joined to what the backplane holds afterwards (see [`BeforeLoss`]).
    pub(super) before_loss: BeforeLoss,
    /// With a backplane: the state holds what the backplane lost (this node joined its kept
    /// state to the thread's new events), so the next fold writes the thread's snapshot, which
    /// puts the whole thread back in the backplane.
    pub(super) reseed: bool,
    /// With a backplane: the state was joined from a kept one, so it holds events the
    /// backplane lost, until a sync finds the backplane holds a snapshot from after the loss.
    /// Until then, a feed interruption keeps it as a loss does: its snapshot may not have
    /// reached the backplane.
    pub(super) rejoined: bool,
    /// With a backplane: the state folds events from before the backplane last started the
    /// thread over (joined from a kept one, or read from a snapshot that does), so its
    /// snapshots outrank those of states that fold only what followed (see
    /// [`ThreadSnapshot::from_before_loss`]).
    pub(super) from_before_loss: bool,
}

/// With a backplane, whether a node's state of a thread is the thread's. A node folds the
/// thread's events as the feed delivers them, numbered by the backplane: in sequence, its state
/// is exact; after a gap (the node started listening mid-thread, or its feed was interrupted)
/// it reads the thread back from the backplane (a *sync*), and folds meanwhile nothing.
pub(super) enum Sync {
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
    /// The node kept the thread's state across a loss of the backplane's data: the read passes
    /// over a snapshot that lacks what came before (see [`Backplane::catch_up_thread`]).
    ///
    /// [`Backplane::catch_up_thread`]: crate::backplane::Backplane::catch_up_thread
    pub(crate) kept: bool,
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

/// The frames of an opening (complete SSE frames, each ending with a blank line), each as its
/// data.
pub(super) fn opening_datas(opening: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut datas = Vec::new();
    let mut rest = opening;
    while !rest.is_empty() {
        let end = memchr::memmem::find(rest, b"\n\n").map_or(rest.len(), |at| at + 2);
        let (frame, tail) = rest.split_at(end);
        datas.push(data_of(frame));
        rest = tail;
    }
    datas
}

impl UserChannel {
    /// Records the event `seq` in its thread, folding it into the thread's state if the
    /// broadcaster keeps one; returns the thread's tag for the frame and the frame's chain
    /// link, the thread's previous event (see the channel docs, *Chains*).
    pub(super) fn fold(
        &self,
        state: &mut State,
        thread: &ThreadId,
        seq: u64,
        payload: &Payload,
    ) -> (ThreadKey, u64) {
        let at = self.thread_at(state, thread, seq, false);
        let entry = &mut state.threads[at];
        entry.last_seq = seq;
        let prev = entry.last_event;
        self.fold_into(entry, &payload.data(), seq);
        // Linked after the fold, as the sequence number is taken after it: a fold that panics
        // (a caller's state) leaves `seq` to the next publish, of any thread, and the chain
        // must not point at it.
        entry.last_event = seq;
        (entry.id.key(), prev)
    }

    /// The index of `thread`'s entry, created if needed (forgetting the thread published to
    /// least recently if the channel holds its maximum). A new entry has a fresh state, or
    /// with a backplane (`remote`) none until it is known exact.
    pub(super) fn thread_at(
        &self,
        state: &mut State,
        thread: &ThreadId,
        seq: u64,
        remote: bool,
    ) -> usize {
        // The thread published to last is kept first: a run streams its tokens into one
        // thread, so the search ends at the first entry however many threads the user has.
        if let Some(at) = state.threads.iter().position(|t| t.id.same(thread)) {
            if at > 0 {
                state.threads.swap(0, at);
            }
            return 0;
        }
        let shared = &self.shared;
        if state.threads.len() >= shared.config.threads.max_threads_per_user.max(1) {
            self.evict_oldest_thread(state);
        }
        let states = shared.config.threads.state.as_ref();
        let forgotten = state.forgotten;
        state.threads.push(ThreadEntry {
            id: thread.clone(),
            last_seq: seq,
            last_event: forgotten,
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
            folded: false,
            dirty_since: None,
            checkpoint: 0,
            before_loss: BeforeLoss::Nothing,
            reseed: false,
            rejoined: false,
            from_before_loss: false,
        });
        let last = state.threads.len() - 1;
        state.threads.swap(0, last);
        0
    }

    /// Folds one event's data into the entry's state, if it has one, with the accounting.
    pub(super) fn fold_into(&self, entry: &mut ThreadEntry, data: &[u8], seq: u64) {
        let shared = &self.shared;
        if let Some(thread_state) = entry.state.as_mut() {
            let folded = thread_state.fold(data);
            let bytes = thread_state.bytes();
            shared.thread_state_resized(entry.bytes, bytes);
            entry.bytes = bytes;
            let counted = matches!(entry.before_loss, BeforeLoss::Counted);
            if counted {
                entry.before_loss = BeforeLoss::Nothing;
            }
            match folded {
                // The loss the state was counted for when read back (see `BeforeLoss`).
                Folded::Unknown if counted => {}
                Folded::Unknown => {
                    shared.count_thread_state_unknown();
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
    pub(super) fn evict_oldest_thread(&self, state: &mut State) {
        let Some(at) = (0..state.threads.len()).min_by_key(|&i| state.threads[i].last_seq) else {
            return;
        };
        let gone = state.threads.swap_remove(at);
        state.forgotten = state.forgotten.max(gone.last_event);
        let shared = &self.shared;
        shared.thread_state_resized(gone.bytes, 0);
        shared.threads_evicted.fetch_add(1, Ordering::Relaxed);
        shared.metrics.threads_evicted.increment(1);
        tracing::info!(channel = %shared.config.name, user = %self.user, thread = %gone.id, "thread forgotten: the user's channel holds its maximum of threads");
    }

    /// Events of the user's history between two snapshots of a thread: half the history, so
    /// that a snapshot is written while the history still holds what follows the previous one.
    pub(super) fn snapshot_every(&self) -> u64 {
        (self.shared.config.replay_events as u64 / 2).max(1)
    }

    /// [`fold`](Self::fold) for a frame from the backplane: see [`Sync`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fold_remote(
        &self,
        state: &mut State,
        thread: &ThreadId,
        ordinal: u64,
        seq: u64,
        id: Option<EventId>,
        frame: &[u8],
        delivered: &mut Delivered,
    ) -> (ThreadKey, u64) {
        let at = self.thread_at(state, thread, seq, true);
        let prev = state.threads[at].last_event;
        let key = self.fold_remote_at(state, at, thread, ordinal, seq, id, frame, delivered);
        // After the fold, as in `fold`.
        state.threads[at].last_event = seq;
        (key, prev)
    }

    /// [`fold_remote`](Self::fold_remote) once the entry `at` is found.
    #[allow(clippy::too_many_arguments)]
    fn fold_remote_at(
        &self,
        state: &mut State,
        at: usize,
        thread: &ThreadId,
        ordinal: u64,
        seq: u64,
        id: Option<EventId>,
        frame: &[u8],
        delivered: &mut Delivered,
    ) -> ThreadKey {
        let every = self.snapshot_every();
        let states = self.shared.config.threads.state.clone();
        let entry = &mut state.threads[at];
        entry.last_seq = seq;
        let (Some(states), Some(id)) = (states, id) else {
            return entry.id.key();
        };
        if ordinal == 0 {
            return entry.id.key();
        }
        let next = match &entry.sync {
            // Covered already, whatever its ordinal: a copy (a catch-up read ahead of the feed,
            // a retry), or an event of the thread from before Redis numbered it anew, which a
            // read ahead of the feed passed over (its ordinal may even follow the read's).
            Sync::Exact { .. } if id <= entry.last_id => return entry.id.key(),
            Sync::Exact { ordinal: have } if ordinal <= *have => {
                self.started_over(entry);
                false
            }
            Sync::Exact { ordinal: have } => ordinal == have + 1,
            Sync::Inexact => false,
            Sync::Syncing { .. } => return entry.id.key(),
        };
        // A node that knew the thread without its exact state when the backplane lost it
        // reads it back, even from its first event: another node may have put the whole
        // thread back by then. So does one that folded events of the thread before, holds no
        // exact state of it now (its feed was interrupted, say), and kept none across a loss:
        // a first event newer than those is the thread started over (its keys evicted), not
        // its start, and another node may hold it whole. One that folded none (it read the
        // thread while it had no event) lacks nothing: it takes the event for the thread's
        // start, as a node that never met the thread does, and folds what its feed brings; a
        // read would run ahead of that feed, which may still bring the run Redis numbered anew
        // since (see `ThreadEntry::folded`).
        let unknown = matches!(entry.before_loss, BeforeLoss::Unknown);
        let knew = entry.folded && !matches!(entry.before_loss, BeforeLoss::Kept { .. });
        if !next && ordinal == 1 && !unknown && !knew {
            // The thread starts here (it is new, or the backplane forgot it, or lost it):
            // nothing before, in the backplane.
            let base = self.restart_base(entry, &states, thread);
            entry.state = Some(base);
        } else if !next {
            // A state that holds what the backplane lost is kept for the sync, which may join
            // it (as is one kept from before a loss).
            if let (true, Sync::Exact { ordinal }, Some(held)) =
                (entry.rejoined, &entry.sync, entry.state.take())
            {
                entry.before_loss = BeforeLoss::Kept {
                    state: held,
                    ordinal: *ordinal,
                    covers: entry.last_id,
                };
            }
            let kept = entry.before_loss.bytes();
            self.shared.thread_state_resized(entry.bytes, kept);
            entry.bytes = kept;
            entry.state = None;
            let start = SyncStart {
                token: SYNC_TOKENS.fetch_add(1, Ordering::Relaxed),
                from_seq: seq - 1,
                done: Arc::new(Notify::new()),
                kept: matches!(entry.before_loss, BeforeLoss::Kept { .. }),
            };
            entry.sync = Sync::Syncing {
                token: start.token,
                done: start.done.clone(),
            };
            entry.dirty_since = None;
            delivered.sync = Some((entry.id.clone(), start));
            return entry.id.key();
        }
        self.fold_into(entry, &data_of(frame), seq);
        entry.sync = Sync::Exact { ordinal };
        entry.last_id = id;
        entry.folded = true;
        let checkpoint = entry.state.as_ref().map_or(0, |s| s.checkpoint());
        let crossed = std::mem::replace(&mut entry.checkpoint, checkpoint) != checkpoint;
        let reseed = std::mem::take(&mut entry.reseed);
        let mut due = None;
        if crossed || reseed {
            delivered
                .snapshots
                .push((entry.id.clone(), Self::snapshot_of(entry)));
        } else if entry.dirty_since.is_none() {
            entry.dirty_since = Some(seq);
            due = Some(seq + every);
        }
        let tag = entry.id.key();
        if let Some(due) = due {
            state.snapshot_due = state.snapshot_due.min(due);
        }
        tag
    }

    /// The entry's snapshot, now: it is then clean.
    pub(super) fn snapshot_of(entry: &mut ThreadEntry) -> ThreadSnapshot {
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
            from_before_loss: entry.from_before_loss,
        }
    }

    /// Writes the snapshots due at `seq`, and sets when the next is due.
    pub(super) fn due_snapshots(&self, state: &mut State, seq: u64, delivered: &mut Delivered) {
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
                    kept: matches!(entry.before_loss, BeforeLoss::Kept { .. }),
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
    /// The state is then exact. Returns the snapshot to store when the stored one does not
    /// cover the state: events followed it, or the read was not complete (the history no
    /// longer holds every event after the snapshot: the state is rebuilt from what there is,
    /// counted as unknown, and becomes the thread's).
    ///
    /// A state kept from before the backplane lost its data is the base instead of a fresh one
    /// when the read holds the whole thread since it started over (see [`BeforeLoss`]).
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
        let oldest = state.front_seq().unwrap_or(head + 1);
        let skip = state.index_after(start.from_seq);
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
        let (mut fresh, rejoin) = self.sync_base(entry, &read, &states, thread);
        let have = rejoin.unwrap_or(0);
        if let Some(snapshot) = &read.snapshot {
            for data in opening_datas(&snapshot.opening) {
                fresh.fold(&data);
            }
        }
        for (_, frame) in read.events.iter().skip(have) {
            fresh.fold(&data_of(frame));
        }
        let mut ordinal = read.count;
        let mut last_id = read.last_id;
        for retained in window.range(skip..) {
            let ours = retained.thread == Some(thread.key());
            match frame_id(&retained.frame) {
                Some(id) if ours && id > read.last_id => {
                    fresh.fold(&data_of(&retained.frame));
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
        entry.folded = ordinal > 0;
        if ordinal > 0 && matches!(entry.before_loss, BeforeLoss::Counted) {
            // It folded events already, uncounted: the first of the lost run was among them.
            entry.before_loss = BeforeLoss::Nothing;
        }
        entry.rejoined = rejoin.is_some();
        entry.from_before_loss =
            entry.rejoined || read.snapshot.as_ref().is_some_and(|s| s.from_before_loss);
        if entry.rejoined {
            self.warn_rejoined(entry);
            // Until the thread's first new event, the backplane does not count it, and
            // refuses its snapshot: the fold of that event writes it.
            entry.reseed = ordinal == 0;
        }
        // This node now holds the thread's exact state, maybe alone (the one that folded the
        // events after the stored snapshot may be gone, its next snapshot not yet due): it
        // stores it, before the history trims those events.
        let stored = read.snapshot.as_ref().map_or(0, |s| s.count);
        if complete && ordinal == stored {
            return None;
        }
        if complete {
            return Some(Self::snapshot_of(entry));
        }
        let shared = &self.shared;
        shared.count_thread_state_unknown();
        tracing::warn!(channel = %shared.config.name, user = %self.user, thread = %entry.id, "the backplane's history no longer holds every event of the thread after its snapshot: its state is rebuilt from what there is, and is partly unknown");
        Some(Self::snapshot_of(entry))
    }

    /// With a backplane, the opening of `thread` if its state is exact, with the sequence
    /// number it covers and the id of the channel's last frame: taken under the lock that
    /// deliveries take, so that the live tail follows it with no gap and no duplicate.
    /// Also the id the state covers: the frames up to it that the feed still brings are in
    /// the opening; and what the subscription must not deliver after it (see `Joined`).
    #[allow(clippy::type_complexity)]
    pub(crate) fn thread_opening(
        &self,
        thread: &ThreadId,
    ) -> Option<(Bytes, u64, EventId, EventId, Option<HoldBack>)> {
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
            entry.state.as_ref().and_then(|s| s.holds_back_until()),
        ))
    }
}
