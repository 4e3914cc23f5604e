//! The feeds a node wants, and what Redis answered to its `SUBSCRIBE`s: plain types, shared by
//! the handle, the state and the connection task.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::user_id::UserId;

/// A feed the node's broadcasters want: one per (channel name, user).
pub(crate) struct Wanted {
    /// Local channels (one per broadcaster of that name) that want it.
    pub(crate) count: usize,
    pub(crate) channel: Arc<str>,
    pub(crate) user: UserId,
    pub(crate) history: Arc<str>,
    pub(crate) marks: Arc<str>,
    /// The thread snapshots and the threads' recency.
    pub(crate) threads: [Arc<str>; 2],
    /// Redis confirmed the `SUBSCRIBE` on the current connection.
    pub(crate) confirmed: bool,
}

/// Redis answered the node's `SUBSCRIBE` to a feed with an error (an ACL without the user's
/// channel, say): why, and when the node asks again. Kept across reconnects, so that the
/// backoff goes on; dropped when Redis confirms the feed or the node no longer wants it.
pub(crate) struct Refused {
    /// What the node's streams of the user and [`BackplaneHealth::last_error`] say.
    ///
    /// [`BackplaneHealth::last_error`]: super::BackplaneHealth::last_error
    pub(crate) error: String,
    /// The wait before the next attempt: doubled at each refusal, within the reconnection
    /// bounds.
    pub(crate) backoff: Duration,
    /// The node asks again at its first link check from then on.
    pub(crate) retry_at: Instant,
}

impl Refused {
    /// The refusal after `previous` (if the feed was refused before): its backoff doubled, or
    /// `min` the first time, at most `max`.
    pub(crate) fn after(
        previous: Option<&Refused>,
        error: String,
        min: Duration,
        max: Duration,
    ) -> Self {
        // Both are at most a week (validated): no overflow.
        let backoff = previous.map_or(min, |p| (p.backoff * 2).min(max));
        Self {
            error,
            backoff,
            retry_at: Instant::now() + backoff,
        }
    }
}
