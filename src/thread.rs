//! Threads: a tag on published events, and the state a channel may fold per thread.
//!
//! A publish may name a *thread* ([`ThreadId`]): any non-empty string of at most
//! [`MAX_THREAD_LEN`] bytes, chosen by the application (an AG-UI `threadId`, a conversation, a
//! document). The tag travels with the frame on the user's one broadcast channel; it is not
//! part of the wire. A subscription may ask for one thread and then receives only that
//! thread's frames: the filter runs in the subscription, and a skipped frame is neither
//! delivered nor lost. Without a thread a subscription receives everything, as before.
//!
//! On the ring, the tag is the thread's *key*, a 64-bit hash of its name keyed with a random
//! seed per process, computed once when the [`ThreadId`] is made: every receiver clones every
//! slot of the ring, and a plain integer costs that clone nothing, where a shared name would
//! cost two atomic operations per receiver per frame on a counter that every receiver touches.
//! The filter, the replay window and the backplane's catch-up all admit frames by the key, so
//! they agree. Two names of one user's threads could share a key with probability 2⁻⁶⁴ (the
//! seed is secret and per process); their frames would then reach both threads' streams of
//! that user, never another user's.
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
//! [`Stats::threads_evicted`](crate::Stats::threads_evicted); published to again, it starts
//! with a fresh state, which must say in its opening what it can no longer rebuild: the AG-UI
//! run state opens a run whose start it lost with a `RUN_ERROR`, see
//! [`run_state`](crate::run_state#edge-cases)), and what each state holds is bounded by the
//! state itself (the AG-UI run state takes a byte cap).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};

use crate::error::InvalidThread;

/// The longest thread name, in bytes.
pub const MAX_THREAD_LEN: usize = 256;

/// A thread's name: a non-empty string of at most [`MAX_THREAD_LEN`] bytes. Cheap to clone.
#[derive(Clone)]
pub struct ThreadId {
    name: Arc<str>,
    key: ThreadKey,
}

/// A thread's tag on the ring: a keyed hash of its name (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadKey(NonZeroU64);

impl ThreadKey {
    fn of(name: &str) -> Self {
        static SEED: OnceLock<foldhash::quality::RandomState> = OnceLock::new();
        let hash = SEED.get_or_init(Default::default).hash_one(name);
        Self(NonZeroU64::new(hash).unwrap_or(NonZeroU64::MIN))
    }

    /// Whether a frame tagged `tag` is for a reader of `wanted`: without a thread, every frame;
    /// with one, the frames of that thread only. The one rule for the ring, the window and the
    /// backplane's catch-up.
    pub(crate) fn admits(wanted: Option<ThreadKey>, tag: Option<ThreadKey>) -> bool {
        wanted.is_none() || wanted == tag
    }
}

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
        Ok(Self {
            key: ThreadKey::of(name),
            name: name.into(),
        })
    }

    /// Checks a thread name given as bytes (a query parameter, say), which must be UTF-8.
    pub fn from_bytes(name: &[u8]) -> Result<Self, InvalidThread> {
        Self::new(std::str::from_utf8(name).map_err(|_| InvalidThread::NotUtf8)?)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The thread's tag on the ring.
    pub(crate) fn key(&self) -> ThreadKey {
        self.key
    }

    /// Whether two ids name the same thread: the key first, which tells most apart, then the
    /// pointer, since a channel shares one allocation per thread, then the text.
    pub(crate) fn same(&self, other: &ThreadId) -> bool {
        self.key == other.key && (Arc::ptr_eq(&self.name, &other.name) || self.name == other.name)
    }

    /// [`ThreadKey::admits`] for ids.
    pub(crate) fn admits(wanted: Option<&ThreadId>, tag: Option<&ThreadId>) -> bool {
        ThreadKey::admits(wanted.map(Self::key), tag.map(Self::key))
    }
}

// Equality, order and hash are the name's, as `Borrow<str>` requires: the key follows from it.
impl PartialEq for ThreadId {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl Eq for ThreadId {}

impl PartialOrd for ThreadId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ThreadId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl Hash for ThreadId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
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
        &self.name
    }
}

impl fmt::Debug for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
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

    /// For a connection that opens now: the thread's next events it must not be sent, up to
    /// the first for which the returned test (of the event's SSE data) holds, which it gets
    /// with the rest. `None` (the default): every event follows the opening. The AG-UI run
    /// state opens a run whose start it lacks with a `RUN_ERROR`, after which the official
    /// client refuses anything but a `RUN_STARTED`: such a connection is not sent the rest of
    /// that run.
    fn holds_back_until(&self) -> Option<HoldBack> {
        None
    }
}

/// A test of an event's SSE data: see [`ThreadState::holds_back_until`].
pub type HoldBack = fn(&[u8]) -> bool;

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

    #[test]
    fn the_ring_admits_by_key_as_the_names_would() {
        let a = ThreadId::new("t-1").unwrap();
        let again = ThreadId::new("t-1").unwrap();
        let b = ThreadId::new("t-2").unwrap();
        assert_eq!(
            a.key(),
            again.key(),
            "one name, one key, however often it is made"
        );
        assert_ne!(a.key(), b.key());
        assert!(ThreadKey::admits(None, Some(a.key())));
        assert!(ThreadKey::admits(None, None));
        assert!(ThreadKey::admits(Some(a.key()), Some(again.key())));
        assert!(!ThreadKey::admits(Some(a.key()), Some(b.key())));
        assert!(!ThreadKey::admits(Some(a.key()), None));
        // Equality and hash are the name's, so a map keyed by ids is read with a `&str`.
        let map = std::collections::HashMap::from([(a.clone(), 1)]);
        assert_eq!(map.get("t-1"), Some(&1));
        assert_eq!(a, again);
        assert!(a < b);
    }
}
