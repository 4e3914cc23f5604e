//! The replay window of a user channel: the frames kept for resumes and back-fills.
//!
//! The window holds the same [`Bytes`] the ring carries, so it costs one reference and 64 bytes
//! of bookkeeping per event, and nothing until the first publish. It is bounded three ways,
//! [`replay_events`](crate::Config::replay_events), [`replay_bytes`](crate::Config::replay_bytes)
//! and [`replay_age`](crate::Config::replay_age): room is made before a frame is added, so the
//! accounted bytes never pass the bound, and the front's time is kept in the channel's state, so
//! that a publish reads the window's buffer only when something is due to go.
//!
//! The window is always a run of consecutive events, the front being `window_start`, so that an
//! entry needs no sequence number of its own and a resume or a back-fill can tell exactly what
//! it no longer has. A frame larger than the whole window is sent but not kept, and empties the
//! window: a window with a hole where it was would let a resume skip it without a `reset` or a
//! `lagged`.
//!
//! A receiver that fell behind the ring takes back from here what it missed
//! ([`UserChannel::backfill`]); whether it lost any of its own events beyond the window is the
//! chain walk's answer for a thread subscription (`chain.rs`), the gap's for any other.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Slot, State, UserChannel};
use crate::event_id::EventId;
use crate::shared::Shared;
use crate::thread::{ThreadId, ThreadKey};
use crate::wire::frame_id;

/// A frame of the window; its sequence number is its place in the window (see `window_start`).
pub(super) struct Retained {
    /// See [`Slot::prev`].
    pub(super) prev: u64,
    pub(super) at: Instant,
    pub(super) frame: Bytes,
    pub(super) thread: Option<ThreadKey>,
}

impl State {
    /// The sequence number of the window's front, if the window holds a frame.
    pub(super) fn front_seq(&self) -> Option<u64> {
        (!self.window.is_empty()).then_some(self.window_start)
    }

    /// The index in the window of the first frame after `seq` (the window's length if none).
    pub(super) fn index_after(&self, seq: u64) -> usize {
        let before = (seq + 1).saturating_sub(self.window_start);
        usize::try_from(before).map_or(self.window.len(), |i| i.min(self.window.len()))
    }

    /// Of the ring's `receivers`, those that deliver a frame tagged `thread`: not those that
    /// filter on another thread (or on any, for a frame without one).
    pub(super) fn receiving(&self, receivers: usize, thread: Option<ThreadKey>) -> usize {
        let skipping: usize = self
            .thread_receivers
            .iter()
            .filter(|(key, _)| Some(*key) != thread)
            .map(|(_, n)| n)
            .sum();
        receivers.saturating_sub(skipping)
    }

    pub(super) fn thread_receiver_joined(&mut self, thread: ThreadKey) {
        match self
            .thread_receivers
            .iter_mut()
            .find(|(key, _)| *key == thread)
        {
            Some((_, n)) => *n += 1,
            None => self.thread_receivers.push((thread, 1)),
        }
    }

    pub(super) fn thread_receiver_left(&mut self, thread: ThreadKey) {
        if let Some(at) = self
            .thread_receivers
            .iter()
            .position(|(key, _)| *key == thread)
        {
            self.thread_receivers[at].1 -= 1;
            if self.thread_receivers[at].1 == 0 {
                self.thread_receivers.swap_remove(at);
            }
        }
    }

    /// The window's frame `seq`, if it holds it.
    pub(super) fn retained(&self, seq: u64) -> Option<&Retained> {
        let i = seq.checked_sub(self.window_start)?;
        self.window.get(usize::try_from(i).ok()?)
    }
}

/// What a lagging receiver can get back from the window.
pub(crate) struct Backfill {
    /// The oldest sequence number the window still had after the receiver's position: events
    /// before it are lost.
    pub(crate) oldest: u64,
    /// The frames of the receiver's thread (all frames, without a thread) it missed.
    pub(crate) frames: Vec<(u64, Bytes)>,
    /// Whether some event before `oldest` that the receiver would have delivered (of its
    /// thread; any, without a thread) is gone.
    pub(crate) lost: bool,
}

impl UserChannel {
    /// Appends the frame `seq` to the window and sends it on the ring; returns the receivers
    /// that deliver it.
    pub(super) fn append(
        &self,
        state: &mut State,
        seq: u64,
        frame: Bytes,
        thread: Option<ThreadKey>,
        prev: u64,
        now: Instant,
    ) -> usize {
        let config = &self.shared.config;
        let len = frame.len();
        // A frame larger than the whole window is only sent, never kept; the window is emptied
        // then, since it must hold a run of consecutive events: one with a hole in it would let
        // a resume or a back-fill skip the big event without a `reset` or a `lagged`.
        let keep = config.replay_events > 0 && len <= config.replay_bytes;
        if keep {
            // Room is made before the frame is added, so that the accounted bytes never exceed
            // the window's bound, not even for a moment.
            self.evict(state, now, (1, len));
            if state.window.is_empty() {
                state.oldest_at = now;
                state.window_start = seq;
            }
            state.window.push_back(Retained {
                prev,
                at: now,
                frame: frame.clone(),
                thread,
            });
            state.window_bytes += len;
            self.shared.buffered_added(len);
        } else {
            // Emptied outright rather than evicted against an incoming count of "everything",
            // which a `replay_events` of `usize::MAX` (a window bounded by bytes only) never
            // exceeds.
            Self::empty_window(&self.shared, state);
        }
        let receivers = self
            .sender
            .send(Slot {
                seq,
                frame,
                thread,
                prev,
            })
            .unwrap_or(0);
        state.receiving(receivers, thread)
    }

    /// Drops what the window may no longer keep: over the count, over the bytes, or too old,
    /// counting `incoming` (events, bytes) about to be added.
    pub(super) fn evict(&self, state: &mut State, now: Instant, incoming: (usize, usize)) {
        let config = &self.shared.config;
        // Older than `replay_age` means before `cutoff` (nothing is, this early after boot).
        let cutoff = now.checked_sub(config.replay_age);
        // Checked on the state alone (`oldest_at` is the front's time): the window's buffer is
        // read only when something is due.
        while !state.window.is_empty() {
            let over = state.window.len().saturating_add(incoming.0) > config.replay_events
                || state.window_bytes + incoming.1 > config.replay_bytes
                || cutoff.is_some_and(|cutoff| state.oldest_at < cutoff);
            if !over {
                break;
            }
            if let Some(oldest) = state.window.pop_front() {
                state.window_start += 1;
                let len = oldest.frame.len();
                state.window_bytes -= len;
                self.shared.buffered_removed(len);
            }
            if let Some(next) = state.window.front() {
                state.oldest_at = next.at;
            }
        }
    }

    /// Drops every frame of the window, releasing its memory and its accounting.
    pub(super) fn empty_window(shared: &Shared, state: &mut State) {
        shared.buffered_removed(state.window_bytes);
        state.window = VecDeque::new();
        state.window_bytes = 0;
    }

    /// The oldest sequence number the window holds after `after` (`before` if none), and the
    /// window's frames with `after < seq < before` of `thread` (of every thread if `None`).
    pub(super) fn frames_between(
        state: &State,
        after: u64,
        before: u64,
        thread: Option<&ThreadId>,
    ) -> (u64, Vec<(u64, Bytes)>) {
        let wanted = thread.map(ThreadId::key);
        let start = state.index_after(after);
        let first = state.window_start + start as u64;
        let oldest = if start < state.window.len() {
            first.min(before)
        } else {
            before
        };
        let frames = state
            .window
            .range(start..)
            .zip(first..)
            .take_while(|&(_, seq)| seq < before)
            .filter(|(r, _)| ThreadKey::admits(wanted, r.thread))
            .map(|(r, seq)| (seq, r.frame.clone()))
            .collect();
        (oldest, frames)
    }

    /// What a lagging receiver missed, `after < seq < before`, that the window still has, and
    /// whether it lost any of its own events (see the module docs, *Chains*). `arriving` is the
    /// slot `before`, whose link the window may not hold (a frame too large to keep).
    ///
    /// With a backplane, `covered` is the id through which the receiver skips frames, which
    /// its catch-up (or its thread's opening) gave the client already: the frames the window
    /// dropped are no loss if they all precede it. The feed brings ids in order, so they do
    /// when the first frame after them has an id up to `covered`, unless one of them had no
    /// id (in no history, so in no catch-up), which the channel cannot rule out once a frame
    /// without an id came after `after`.
    pub(crate) fn backfill(
        &self,
        after: u64,
        before: u64,
        thread: Option<&ThreadId>,
        arriving: &Slot,
        covered: Option<EventId>,
    ) -> Backfill {
        let mut state = self.lock();
        self.evict(&mut state, Instant::now(), (0, 0));
        let (oldest, frames) = Self::frames_between(&state, after, before, thread);
        let lost = match thread {
            None => oldest > after + 1,
            Some(thread) => state.thread_lost(thread, after, oldest, arriving),
        };
        let lost = lost
            && !covered.is_some_and(|covered| {
                let next = if oldest == before {
                    Some(&arriving.frame)
                } else {
                    state.retained(oldest).map(|r| &r.frame)
                };
                state.last_unnumbered <= after
                    && next
                        .and_then(|frame| frame_id(frame))
                        .is_some_and(|id| id <= covered)
            });
        Backfill {
            oldest,
            frames,
            lost,
        }
    }

    /// Bytes and frames held by the window.
    pub(crate) fn buffered(&self) -> (usize, usize) {
        let state = self.lock();
        (state.window_bytes, state.window.len())
    }
}

#[cfg(test)]
mod tests {
    /// The `64·N` of the memory formula in the crate docs.
    #[test]
    fn a_window_entry_costs_64_bytes() {
        assert_eq!(std::mem::size_of::<super::Retained>(), 64);
    }
}
