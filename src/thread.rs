//! Threads: a tag on published events, and the state a channel may fold per thread.
//!
//! A publish may name a *thread* ([`ThreadId`]): any non-empty string of at most
//! [`MAX_THREAD_LEN`] bytes, chosen by the application (an AG-UI `threadId`, a conversation, a
//! document). The tag travels with the frame on the user's one broadcast channel; it is not
//! part of the wire. A subscription may ask for one thread and then receives only that
//! thread's frames: the filter runs in the subscription, compares a shared `Arc<str>` (no
//! allocation per skipped frame), and a skipped frame is neither delivered nor lost. Without a
//! thread a subscription receives everything, as before.
//!
//! A channel can also keep a *state per thread*, folded from the events as they are published:
//! [`ThreadState`], created by the [`ThreadStates`] of [`ThreadConfig::state`]. A connection to
//! the thread then starts with the state's *opening* (the frames that rebuild the thread so
//! far), taken under the channel lock together with the join, so that the live tail follows it
//! with no gap and no duplicate. The AG-UI run state ([`crate::run_state`]) is one.
//!
//! With a [backplane](crate::backplane), the thread travels with the event to every node, and a
//! connection on any node opens with the same state: see the
//! [backplane docs](crate::backplane#threads).
//!
//! Bounds: at most [`ThreadConfig::max_threads_per_user`] threads per user channel (past it, the
//! thread published to least recently is forgotten, counted in
//! [`Stats::threads_evicted`](crate::Stats::threads_evicted)), and what each state holds is
//! bounded by the state itself (the AG-UI run state takes a byte cap).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::InvalidThread;

/// The longest thread name, in bytes.
pub const MAX_THREAD_LEN: usize = 256;

/// A thread's name: a non-empty string of at most [`MAX_THREAD_LEN`] bytes. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(Arc<str>);

impl ThreadId {
    /// Checks a thread name.
    pub fn new(name: &str) -> Result<Self, InvalidThread> {
        if name.is_empty() {
            return Err(InvalidThread::Empty);
        }
        if name.len() > MAX_THREAD_LEN {
            return Err(InvalidThread::TooLong {
                len: name.len(),
                max: MAX_THREAD_LEN,
            });
        }
        Ok(Self(name.into()))
    }

    /// Checks a thread name given as bytes (a query parameter, say), which must be UTF-8.
    pub fn from_bytes(name: &[u8]) -> Result<Self, InvalidThread> {
        Self::new(std::str::from_utf8(name).map_err(|_| InvalidThread::NotUtf8)?)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two ids name the same thread: the pointer first, since a channel shares one
    /// allocation per thread, then the text.
    pub(crate) fn same(&self, other: &ThreadId) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }

    /// Whether a frame tagged `tag` is for a reader of `wanted`: without a thread, every frame;
    /// with one, the frames of that thread only.
    pub(crate) fn admits(wanted: Option<&ThreadId>, tag: Option<&ThreadId>) -> bool {
        match (wanted, tag) {
            (None, _) => true,
            (Some(wanted), Some(tag)) => wanted.same(tag),
            (Some(_), None) => false,
        }
    }
}

impl std::str::FromStr for ThreadId {
    type Err = InvalidThread;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

impl Borrow<str> for ThreadId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What folding one event did to a thread's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Folded {
    /// The event changed the state, or had nothing to change.
    Applied,
    /// The event was not understood (not the protocol's JSON, or a type the state ignores); it
    /// was delivered as published, and the state did not change.
    Ignored,
    /// The event could not be applied (a patch that does not apply, say): the state is now
    /// partly unknown until an event that replaces it. Counted and logged at `warn`.
    Unknown,
    /// The state hit its byte cap and dropped its oldest parts to take the event. Counted.
    Trimmed,
}

/// The state a channel keeps for one thread, folded from the events published into it.
///
/// Called under the user channel's lock: keep [`fold`](Self::fold) short, and allocate little.
///
/// With a [backplane](crate::backplane), the opening is also the thread's *snapshot* that the
/// nodes share: a fresh state that folds the `data:` of the opening's frames must reach the same
/// state (the same opening, and the same folds after it). The AG-UI run state does.
pub trait ThreadState: Send + 'static {
    /// Folds one event, given as its SSE data (for JSON events, the JSON text).
    fn fold(&mut self, data: &[u8]) -> Folded;

    /// Appends the frames a new connection to the thread starts with: complete SSE frames
    /// (`data:` lines and a blank line), without `id:` lines. Nothing when the thread has
    /// nothing to show.
    fn write_opening(&self, out: &mut Vec<u8>);

    /// The bytes the state holds, for the bounds and the memory gauge.
    fn bytes(&self) -> usize;

    /// A value that changes when the state passes a point worth a shared snapshot at once (the
    /// AG-UI run state: a run started, a run ended). With a [backplane](crate::backplane), a
    /// node writes the thread's snapshot when it changes, besides every so many events.
    /// Default: never changes.
    fn checkpoint(&self) -> u8 {
        0
    }
}

/// Creates the [`ThreadState`] of each new thread of a channel.
pub trait ThreadStates: fmt::Debug + Send + Sync + 'static {
    /// A new, empty state for `thread`.
    fn create(&self, thread: &ThreadId) -> Box<dyn ThreadState>;
}

/// How a broadcaster handles threads ([`Config::threads`](crate::Config::threads)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ThreadConfig {
    /// Threads a user channel keeps a state for; past it, the thread published to least
    /// recently is forgotten. Default 16.
    pub max_threads_per_user: usize,
    /// The per-thread state, if any; `None` (the default) keeps no state, and thread streams
    /// then resume by event id like any other.
    pub state: Option<Arc<dyn ThreadStates>>,
}

impl Default for ThreadConfig {
    fn default() -> Self {
        Self {
            max_threads_per_user: 16,
            state: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(ThreadId::new(""), Err(InvalidThread::Empty));
        assert!(ThreadId::new(&"x".repeat(MAX_THREAD_LEN)).is_ok());
        assert_eq!(
            ThreadId::new(&"x".repeat(MAX_THREAD_LEN + 1)),
            Err(InvalidThread::TooLong {
                len: MAX_THREAD_LEN + 1,
                max: MAX_THREAD_LEN
            })
        );
        assert_eq!(ThreadId::from_bytes(b"\xff"), Err(InvalidThread::NotUtf8));
        let a = ThreadId::new("t-1").unwrap();
        assert!(a.same(&a.clone()));
        assert!(a.same(&ThreadId::new("t-1").unwrap()));
        assert!(!a.same(&ThreadId::new("t-2").unwrap()));
    }
}
