//! Why a stream did not continue as it was: [`ResetReason`] for a resume that could not be
//! honoured, [`EndReason`] for a stream that ended. Plain values, shared by the subscription, the
//! metrics and the backplane.

/// Why a resume started with a `reset`. The strings are the `reason` in the control event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetReason {
    /// `"malformed"`: the id is not one sse-hub issues (garbage, or too long).
    Malformed,
    /// `"stale"`: the id comes from an earlier channel of this user (it expired, or the server
    /// restarted), so its position means nothing now.
    Stale,
    /// `"expired"`: some of the events after the id have left the replay window (for a
    /// subscription to one thread, some of that thread's events). The
    /// subscription continues live from the newest event; the ones the window still holds are
    /// not replayed, since they would follow a gap of unknown size. A client that must not miss
    /// anything reloads its state from its source of truth on `reset`.
    Expired,
    /// `"unknown"`: the id is ahead of anything the channel published.
    Unknown,
}

impl ResetReason {
    /// The reason as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Stale => "stale",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
        }
    }
}

/// Why a subscription's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// [`Broadcaster::disconnect_user`](crate::Broadcaster::disconnect_user) was called; or,
    /// with a [backplane](crate::backplane), the node ended the stream so that its client
    /// resumes from the shared history (the node's feed was interrupted, a degraded stream can
    /// be served properly again, or a thread could not be read back).
    Disconnected,
    /// The broadcaster shut down.
    Shutdown,
    /// It fell behind and lost events: under [`LagPolicy::Disconnect`](crate::LagPolicy::Disconnect),
    /// or, whatever the policy, as a thread stream opened from its thread's state, which
    /// cannot signal a loss in-band.
    Lagged,
}
