//! Chains: what a thread subscription lost.
//!
//! A subscription sees a gap when the ring overwrote frames it had not read; it takes back from
//! the window what the window still holds, and what the window dropped too is lost. For a
//! subscription to every event that is the whole dropped range. A thread subscription, though,
//! delivers only its thread's events: frames of the user's other threads and unthreaded frames
//! in the dropped range are no loss to it, and ending its stream for them (a thread stream ends
//! on a loss) would fail a run in a tab that missed nothing.
//!
//! So every event of a thread is linked to the previous event of its thread, its *chain*
//! (`Slot::prev` on the ring, `Retained::prev` in the window; 0 when there is none, and always
//! 0 for an unthreaded event, which no thread subscription delivers). The channel knows each
//! chain's last event (the thread's entry). At a gap a thread subscription at position `p`
//! whose window starts again at `oldest` follows its chain back from its last event, through
//! the window, to the first link before `oldest`: it lost something if and only if that link
//! is after `p`. A link the walk cannot follow (an event too large for the window, or a thread
//! the channel forgot, whose first event after is linked to the last event of any thread
//! forgotten) counts as a loss: the check may end a stream that lost nothing, never skip an
//! event silently.
//!
//! A thread subscription that resumes by id (a channel without thread state) is judged the same
//! way: its `Last-Event-ID` older than the window is `expired` only if an event of its thread
//! left the window after it; otherwise it resumes, replaying its thread's events from the
//! window.
//!
//! The link costs no memory: in the ring's slot it takes the word that was padding, and the
//! window's entries keep their 64 bytes by giving up their own sequence number, which their
//! place gives (the window always holds consecutive events). A per-thread position map in
//! each subscription, or a per-thread window, would cost memory per thread and per
//! connection; the walk costs time only at a gap, under the lock, bounded by the window.

use super::{Slot, State, UserChannel};
use crate::thread::{ThreadId, ThreadKey};

impl State {
    /// Whether the chain of the thread `key`, whose last event is `head`, has an event in
    /// `after < seq < oldest` (the part of a gap the window no longer holds), following the
    /// links back from `head` through the window and the `arriving` slot. A link that cannot be
    /// followed counts as a loss: an event not in the window (too large to keep, or published
    /// after the check's range), or one of another chain, which a thread made again after the
    /// channel forgot it links to (the last event of any thread forgotten, whose chain may pass
    /// over this thread's events). The answer errs on ending a stream, never on skipping an
    /// event silently.
    pub(super) fn chain_lost(
        &self,
        key: ThreadKey,
        head: u64,
        after: u64,
        oldest: u64,
        arriving: &Slot,
    ) -> bool {
        let mut at = head;
        loop {
            if at <= after {
                return false;
            }
            if at < oldest {
                return true;
            }
            let (thread, prev) = if at == arriving.seq {
                (arriving.thread, arriving.prev)
            } else {
                match self.retained(at) {
                    Some(r) => (r.thread, r.prev),
                    None => return true,
                }
            };
            if thread != Some(key) {
                return true;
            }
            at = prev;
        }
    }

    /// Whether `thread` has an event in `after < seq < oldest`: [`chain_lost`](Self::chain_lost)
    /// from the thread's last event, or, for a thread the channel does not hold (never
    /// published to, or forgotten), from the last event of any thread forgotten.
    pub(super) fn thread_lost(
        &self,
        thread: &ThreadId,
        after: u64,
        oldest: u64,
        arriving: &Slot,
    ) -> bool {
        let head = self
            .threads
            .iter()
            .find(|t| t.id.same(thread))
            .map_or(self.forgotten, |t| t.last_event);
        self.chain_lost(thread.key(), head, after, oldest, arriving)
    }
}

impl UserChannel {
    /// The frame's tag and its chain link (see the module docs): the thread's, from its fold;
    /// none for an unthreaded frame, which no thread subscription delivers.
    pub(super) fn link(thread: Option<(ThreadKey, u64)>) -> (Option<ThreadKey>, u64) {
        match thread {
            Some((key, prev)) => (Some(key), prev),
            None => (None, 0),
        }
    }
}
