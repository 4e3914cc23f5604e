//! What a user channel keeps of its threads when the backplane lost its data (a Redis restarted
//! without persistence): the thread then starts over in the backplane at ordinal 1, with
//! nothing before it. A node that held a thread's exact state *keeps* it ([`BeforeLoss`]), and
//! goes on from it with the thread's new events when the backplane holds every one of them,
//! re-seeding the backplane with the whole thread; a node that knew the thread without an exact
//! state cannot, and counts the state it reads back as unknown. The re-seeded snapshot outranks
//! the snapshots of nodes that folded the thread only from where it started over, which read it
//! back once the backplane refuses theirs. See the [backplane docs](crate::backplane#threads).

use super::*;

/// What a node knew of a thread when the backplane lost its data (see the module docs).
pub(super) enum BeforeLoss {
    /// Nothing lost, or settled.
    Nothing,
    /// The exact state the node held (the entry's `bytes` account for it), and how many of the
    /// thread's events since the backplane started it over it holds (0 when kept at the loss;
    /// more when kept at a later interruption, before a snapshot of it was seen stored), and
    /// the id of the last event it holds.
    Kept {
        state: Box<dyn ThreadState>,
        ordinal: u64,
        covers: EventId,
    },
    /// The node knew the thread but held no exact state of it.
    Unknown,
    /// That state was counted unknown when read back, and has folded no event since: the
    /// first event it cannot apply is that loss again (an event of a run whose start it lacks,
    /// to the AG-UI run state), not counted twice.
    Counted,
}

impl BeforeLoss {
    pub(super) fn bytes(&self) -> usize {
        match self {
            Self::Kept { state, .. } => state.bytes(),
            _ => 0,
        }
    }
}

/// Whether `read` holds the thread only since Redis started it over after every event the
/// entry folded: its snapshot is the empty one a thread's first event stores, covering the ids
/// before that event, which follows the entry's last.
fn started_after(read: &ThreadHistory, entry: &ThreadEntry) -> bool {
    read.snapshot
        .as_ref()
        .is_some_and(|s| s.count == 0 && s.covers >= entry.last_id)
}

/// Whether a read of the thread only since Redis started it over lacks what the node held:
/// * kept (but the backplane no longer holds every event since it started the thread over,
///   so the read is the most there is, another node's snapshot of the thread since then), or
///   known without an exact state, when the loss came;
/// * or, with no loss, folded before, and the read starts the thread over after all of that
///   (Redis dropped its keys and numbered an event 1 again, with no node's put-back yet).
fn lacks_what_it_held(before: &BeforeLoss, entry: &ThreadEntry, read: &ThreadHistory) -> bool {
    match before {
        BeforeLoss::Unknown | BeforeLoss::Kept { .. } => true,
        BeforeLoss::Nothing => entry.folded && started_after(read, entry),
        BeforeLoss::Counted => false,
    }
}

impl UserChannel {
    /// With a backplane, the feed was interrupted, or the backplane `lost` its data: no thread
    /// state can be trusted any more (the next frame or subscription of each thread syncs it
    /// again). After a loss, the exact states are kept as they were, since the backplane no
    /// longer holds what they cover (see [`BeforeLoss`]).
    pub(crate) fn threads_unsynced(&self, lost: bool) {
        if self.shared.config.threads.state.is_none() {
            return;
        }
        let mut state = self.lock();
        for entry in &mut state.threads {
            if let Sync::Syncing { done, .. } = &entry.sync {
                done.notify_waiters();
            }
            let exact = match entry.sync {
                Sync::Exact { ordinal } => Some(ordinal),
                _ => None,
            };
            let held = entry.state.take();
            if lost || entry.rejoined {
                match (held, exact) {
                    // After a loss, it holds none of what the backplane holds.
                    (Some(held), Some(ordinal)) => {
                        entry.before_loss = BeforeLoss::Kept {
                            state: held,
                            ordinal: if lost { 0 } else { ordinal },
                            covers: entry.last_id,
                        };
                    }
                    // A state kept from an earlier loss is still all there is.
                    _ => match &mut entry.before_loss {
                        BeforeLoss::Kept { ordinal, .. } if lost => *ordinal = 0,
                        BeforeLoss::Kept { .. } => {}
                        other => *other = BeforeLoss::Unknown,
                    },
                }
            }
            entry.sync = Sync::Inexact;
            entry.dirty_since = None;
            entry.reseed = false;
            let kept = entry.before_loss.bytes();
            self.shared.thread_state_resized(entry.bytes, kept);
            entry.bytes = kept;
        }
    }

    /// An event of the thread newer than the state, numbered at or below what the state folded:
    /// the backplane started the thread over without losing the rest of its data (Redis
    /// evicted or someone deleted the thread's keys, its generation marker staying), so no
    /// loss was announced. Handled as after a loss: the exact state held is kept, to go on
    /// from with the thread's events since it started over (and put back in the backplane).
    /// A node without an exact state notices it only at the thread's first event numbered
    /// 1 again, newer than the last it folded, which it then reads back rather than take for
    /// the thread's start (see `fold_remote_at`).
    pub(super) fn started_over(&self, entry: &mut ThreadEntry) {
        let shared = &self.shared;
        tracing::warn!(channel = %shared.config.name, user = %self.user, thread = %entry.id, "the backplane numbers the thread from the start again (its keys were evicted or deleted: Redis must run with maxmemory-policy noeviction)");
        entry.before_loss = match entry.state.take() {
            Some(held) => BeforeLoss::Kept {
                state: held,
                ordinal: 0,
                covers: entry.last_id,
            },
            None => BeforeLoss::Unknown,
        };
        entry.sync = Sync::Inexact;
        entry.reseed = false;
    }

    /// A state kept from before the backplane lost its data was joined to the thread's new
    /// events: logged, since what the backplane confirmed and no node received before the loss
    /// is gone (see the backplane docs, *Threads*).
    pub(super) fn warn_rejoined(&self, entry: &ThreadEntry) {
        let shared = &self.shared;
        tracing::warn!(channel = %shared.config.name, user = %self.user, thread = %entry.id, "the backplane lost the thread's data: this node goes on from the state it held, and stores it as the thread's snapshot");
    }

    /// The backplane lost the data of a thread this node knew without an exact state of it:
    /// the thread's state is partly unknown, as when an event cannot be applied.
    fn lost_unknown(&self, entry: &ThreadEntry) {
        let shared = &self.shared;
        shared.count_thread_state_unknown();
        tracing::warn!(channel = %shared.config.name, user = %self.user, thread = %entry.id, "the backplane lost the thread's data, and no exact state of it was held here: its state starts over, and is partly unknown");
    }

    /// The state a thread that starts over (its ordinal 1 on the feed) goes on from: the one
    /// kept from before a loss (everything the backplane now holds of the thread follows it),
    /// else a fresh one.
    pub(super) fn restart_base(
        &self,
        entry: &mut ThreadEntry,
        states: &Arc<dyn ThreadStates>,
        thread: &ThreadId,
    ) -> Box<dyn ThreadState> {
        match std::mem::replace(&mut entry.before_loss, BeforeLoss::Nothing) {
            BeforeLoss::Kept {
                state: kept,
                ordinal: 0,
                ..
            } => {
                self.warn_rejoined(entry);
                entry.reseed = true;
                entry.rejoined = true;
                entry.from_before_loss = true;
                kept
            }
            before => {
                // Counted when read back, and nothing folded since: the first event it cannot
                // apply is that same loss (see `BeforeLoss::Counted`).
                if matches!(before, BeforeLoss::Counted) {
                    entry.before_loss = before;
                }
                entry.rejoined = false;
                entry.from_before_loss = false;
                self.shared.thread_state_resized(entry.bytes, 0);
                entry.bytes = 0;
                states.create(thread)
            }
        }
    }

    /// The state a sync folds `read` into, and, if it is the one kept from before a loss, how
    /// many of the read's events it holds already. After a loss, the backplane holds the
    /// thread whole since it started over when it stores no snapshot of it and every event
    /// after: the kept state is then what came before. A node that kept its state reads past a
    /// snapshot of a node that folded the thread only from where it started over (see
    /// [`SyncStart::kept`]) while the history holds the thread whole since it started over;
    /// one that folds what came before too is another node's that went on from its kept state
    /// first, and is the thread's, as for any sync. A node that knew the thread without an
    /// exact state, and reads it only since it started over (with or without such a snapshot),
    /// counts it unknown; so does one whose kept state cannot be joined because the history no
    /// longer holds the thread whole since it started over (the read is then the partial
    /// snapshot and the events after it: the most there is), and one that folded the thread
    /// before, lost its exact state since, and reads only the thread Redis started over after
    /// all it folded (its keys evicted, an event numbered 1 again, no node's put-back yet).
    ///
    /// The kept state holds the read's events up to the last it folded (`covers`): Redis
    /// numbers the thread anew from where it started over, and its ids grow with time, so
    /// those are exactly its first `ordinal` (none when kept at the loss). When they are not,
    /// Redis did not start the thread over after the state was kept: its marker went without
    /// its data, and the node that set it again missed the data (its search gives up in a
    /// Redis with many other keys), and the read is the whole thread, as for any sync.
    pub(super) fn sync_base(
        &self,
        entry: &mut ThreadEntry,
        read: &ThreadHistory,
        states: &Arc<dyn ThreadStates>,
        thread: &ThreadId,
    ) -> (Box<dyn ThreadState>, Option<usize>) {
        let complete = read.is_complete();
        let whole = complete && read.snapshot.as_ref().is_none_or(|s| s.count == 0);
        // What a node that never held the thread folded from where it started over.
        let restarted = complete && read.snapshot.as_ref().is_none_or(|s| !s.from_before_loss);
        match std::mem::replace(&mut entry.before_loss, BeforeLoss::Nothing) {
            BeforeLoss::Kept {
                state,
                ordinal,
                covers,
            } if whole => {
                let have = read.events.iter().take_while(|(id, _)| *id <= covers);
                let have = have.count();
                if have as u64 == ordinal {
                    (state, Some(have))
                } else {
                    (states.create(thread), None)
                }
            }
            before if restarted && lacks_what_it_held(&before, entry, read) => {
                self.lost_unknown(entry);
                entry.before_loss = BeforeLoss::Counted;
                (states.create(thread), None)
            }
            _ => (states.create(thread), None),
        }
    }

    /// The backplane refused this node's snapshot of `thread`: it holds one that folds events
    /// from before it started the thread over after a loss, and this state, folded from where it
    /// started over, does not. The state is dropped, so that the thread's next event or
    /// subscription reads the whole thread back (see
    /// [`LocalChannels::thread_outranked`](crate::backplane::LocalChannels::thread_outranked)).
    /// A state that folds events from before too, or one not exact any more, stays.
    pub(crate) fn thread_outranked(&self, thread: &ThreadId) {
        let mut state = self.lock();
        let Some(entry) = state.threads.iter_mut().find(|t| t.id.same(thread)) else {
            return;
        };
        if entry.from_before_loss || !matches!(entry.sync, Sync::Exact { .. }) {
            return;
        }
        tracing::info!(channel = %self.shared.config.name, user = %self.user, thread = %entry.id, "the backplane holds the thread from before it lost its data, and this node's state of it does not: read back");
        entry.state = None;
        entry.sync = Sync::Inexact;
        entry.dirty_since = None;
        entry.reseed = false;
        self.shared.thread_state_resized(entry.bytes, 0);
        entry.bytes = 0;
    }
}
