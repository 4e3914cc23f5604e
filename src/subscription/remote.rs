//! A subscription's backplane side: catching up with the shared history, then reading ids from
//! the frames of the live feed, with the skip at the seam (see the
//! [backplane docs](crate::backplane)).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::backplane::{Backplane, BoxFuture, History};
use crate::error::BackplaneError;
use crate::event_id::EventId;
use crate::frame::Frame;
use crate::reason::ResetReason;
use crate::thread::ThreadId;
use crate::user_id::UserId;
use crate::wire::frame_id;

/// What a subscription learnt when it caught up with the backplane.
pub(crate) struct CaughtUp {
    pub(crate) start: EventId,
    pub(crate) reset: Option<ResetReason>,
    pub(crate) replay: Vec<Frame>,
    /// The backplane could not be read: live local events only.
    pub(crate) degraded: bool,
    /// The thread's state is exact on this node now: open from it.
    pub(crate) open_thread: bool,
}

/// What a subscription waits for before its first frame.
enum CatchUp {
    /// The history after the client's id.
    History(BoxFuture<'static, Result<History, BackplaneError>>),
    /// The thread's state made exact on this node (see `UserChannel::thread_sync_begin`).
    Thread(BoxFuture<'static, Result<(), BackplaneError>>),
}

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
    /// The catch-up failed: the subscription cannot vouch for any id (it does not know what
    /// the history holds between the client's id and the live feed), so it forwards only
    /// frames without one, and ends at the first live frame with an id, which the client
    /// then gets through its resume, in order. So a degraded subscription never moves the
    /// client's last event id: nothing is skipped silently, and nothing is delivered twice.
    degraded: bool,
    /// A degraded subscription met a frame with an id: the stream must end.
    must_end: bool,
    /// The channel's count of degraded kicks when the subscription joined: a degraded
    /// subscription also ends when the backplane, connected, asks the channel to end its
    /// degraded streams (`LocalChannels::end_degraded`); the user's healthy streams stay.
    degraded_kicks: u32,
    /// The subscription's start id, once caught up.
    pub(crate) start: Option<EventId>,
    /// A thread subscription resuming by id: the replay keeps only the thread's events.
    thread: Option<ThreadId>,
}

impl Remote {
    pub(crate) fn new(
        backplane: &Arc<dyn Backplane>,
        channel: &str,
        user: &UserId,
        last_event_id: Option<&str>,
        degraded_kicks: u32,
    ) -> Self {
        let after = last_event_id.and_then(EventId::parse);
        let catch_up = CatchUp::History(backplane.catch_up(channel, user, after));
        Self {
            catch_up: Some(Mutex::new(catch_up)),
            last_event_id: last_event_id.map(str::to_owned),
            skip_through: None,
            last_id: EventId::new(0, 0),
            primes: true,
            degraded: false,
            must_end: false,
            degraded_kicks,
            start: None,
            thread: None,
        }
    }

    /// Replays only `thread`'s events.
    pub(crate) fn in_thread(mut self, thread: Option<ThreadId>) -> Self {
        self.thread = thread;
        self
    }

    /// A thread subscription that opens from the thread's state: at once when the state is
    /// exact here (`sync` is `None`; `start` is the channel's last id, `covered` the id the
    /// state covers), or once `sync` made it exact. The opening is taken under the channel's
    /// lock, so the live frames after it follow by sequence number; and since a sync may have
    /// read the history ahead of the feed, those up to `covered` are skipped too.
    pub(crate) fn thread_state(
        start: EventId,
        covered: EventId,
        sync: Option<BoxFuture<'static, Result<(), BackplaneError>>>,
    ) -> Self {
        Self {
            catch_up: sync.map(|sync| Mutex::new(CatchUp::Thread(sync))),
            last_event_id: None,
            skip_through: Some(covered),
            last_id: start,
            primes: true,
            degraded: false,
            must_end: false,
            degraded_kicks: 0,
            start: Some(start),
            thread: None,
        }
    }

    /// Whether the stream should open with a priming `id:`: not when degraded, so that the
    /// client keeps its own last event id, unless it has none (then `0-0`, see `caught_up`).
    pub(crate) fn primes(&self) -> bool {
        self.primes
    }

    /// Drives the catch-up; `Ready(Some(..))` once, when it completes, then `Ready(None)`.
    pub(crate) fn poll_catch_up(&mut self, cx: &mut Context<'_>) -> Poll<Option<CaughtUp>> {
        let Some(future) = self.catch_up.as_mut() else {
            return Poll::Ready(None);
        };
        let future = future.get_mut().unwrap_or_else(|p| p.into_inner());
        let history = match future {
            CatchUp::History(future) => std::task::ready!(future.as_mut().poll(cx)),
            CatchUp::Thread(future) => {
                let synced = std::task::ready!(future.as_mut().poll(cx));
                self.catch_up = None;
                return Poll::Ready(Some(self.thread_synced(synced)));
            }
        };
        self.catch_up = None;
        Poll::Ready(Some(self.caught_up(history)))
    }

    fn thread_synced(&mut self, synced: Result<(), BackplaneError>) -> CaughtUp {
        if synced.is_err() {
            // The thread cannot be rebuilt now: end, so that the client comes back (after a
            // jittered `retry:`) rather than get an opening that is not the thread's.
            self.must_end = true;
        }
        CaughtUp {
            start: self.last_id,
            reset: None,
            replay: Vec::new(),
            degraded: false,
            open_thread: synced.is_ok(),
        }
    }

    /// The thread's opening was taken: the stream starts after `start`, and skips the live
    /// frames up to `covered`, which the opening holds already.
    pub(crate) fn opened_at(&mut self, start: EventId, covered: EventId) {
        self.start = Some(start);
        self.last_id = start;
        self.skip_through = Some(covered);
    }

    /// The thread's state could not be opened: end.
    pub(crate) fn end_now(&mut self) {
        self.must_end = true;
    }

    fn caught_up(&mut self, history: Result<History, BackplaneError>) -> CaughtUp {
        let raw = self.last_event_id.take();
        let parsed = raw.as_deref().map(|raw| EventId::parse(raw).ok_or(()));
        let history = match history {
            Ok(history) => history,
            Err(_) => {
                // A client with an id keeps it. One without has nothing to keep, and would come
                // back without an id, to start after everything published while it was served
                // degraded: it is primed with `0-0`, before every event, which no history can
                // resume, so that its reconnect starts with a `reset`.
                self.primes = parsed.is_none();
                self.degraded = true;
                self.last_id = match parsed {
                    Some(Ok(id)) => id,
                    _ => EventId::new(0, 0),
                };
                return CaughtUp {
                    start: self.last_id,
                    reset: matches!(parsed, Some(Err(()))).then_some(ResetReason::Malformed),
                    replay: Vec::new(),
                    degraded: true,
                    open_thread: false,
                };
            }
        };
        let reset = match parsed {
            None => None,
            Some(Err(())) => Some(ResetReason::Malformed),
            Some(Ok(id)) if id > history.last_id => Some(ResetReason::Unknown),
            // The backplane answers a `deleted_through` newer than the id for every id it
            // cannot resume from: trimmed, beyond the replay bounds, or lost with the
            // history's tail (the id is missing from the span the history holds whole).
            Some(Ok(id)) if history.deleted_through > id => Some(ResetReason::Expired),
            Some(Ok(_)) => None,
        };
        let start = match parsed {
            Some(Ok(id)) if reset.is_none() => id,
            _ => history.last_id,
        };
        let mut replayed = start;
        let replay: Vec<Frame> = if reset.is_none() {
            let wanted = self.thread.take();
            history
                .events
                .into_iter()
                .inspect(|(id, _, _)| replayed = *id)
                .filter(|(_, _, thread)| ThreadId::admits(wanted.as_ref(), thread.as_ref()))
                .map(|(id, bytes, _)| Frame::event(id.seq(), id.epoch(), bytes))
                .collect()
        } else {
            Vec::new()
        };
        self.skip_through = Some(replayed.max(history.last_id));
        self.last_id = replayed;
        CaughtUp {
            start,
            reset,
            replay,
            degraded: false,
            open_thread: false,
        }
    }

    /// While live frames up to the last replayed id are still being skipped, that id.
    pub(crate) fn skipping(&self) -> Option<EventId> {
        self.skip_through
    }

    /// Whether a degraded subscription met a frame it cannot deliver: end the stream.
    pub(crate) fn must_end(&self) -> bool {
        self.must_end
    }

    /// Whether the subscription is degraded and the channel's degraded streams were ended
    /// since it joined (`degraded_kicks` is the channel's count now).
    pub(crate) fn degraded_kicked(&self, degraded_kicks: impl FnOnce(u32) -> bool) -> bool {
        self.degraded && degraded_kicks(self.degraded_kicks)
    }

    /// The frame a subscription yields for a frame of its local channel, or `None` to skip it.
    /// A frame without an `id:` line (delivered while the backplane was unreachable) is
    /// [unnumbered](crate::FrameKind::Unnumbered): the client's last event id stays the last id
    /// delivered.
    pub(crate) fn frame(&mut self, bytes: Bytes) -> Option<Frame> {
        let Some(id) = frame_id(&bytes) else {
            return Some(Frame::unnumbered(bytes));
        };
        if self.degraded {
            self.must_end = true;
            return None;
        }
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
