//! What a publish did ([`Published`]) and what a broadcaster has done ([`Stats`]): plain values
//! returned to the caller.

use serde::Serialize;

use crate::event_id::EventId;

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The event's id on the user's channel; `None` when the user has no channel (no
    /// connection, and none within the retention), so there was nobody to deliver it to or to
    /// replay it for.
    pub id: Option<EventId>,
    /// How many connections it reached.
    pub receivers: usize,
}

/// A snapshot of a broadcaster's state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Users with at least one connection.
    pub users: usize,
    /// Open subscriptions.
    pub connections: usize,
    /// User channels without a connection, kept for the retention.
    pub retained_channels: usize,
    /// Bytes of frames held by the replay windows.
    pub buffered_bytes: usize,
    /// Events published since the broadcaster was created.
    pub published: u64,
    /// Times a subscription fell behind the ring.
    pub lag_events: u64,
    /// Events that subscriptions skipped and signalled with `lagged` (the gaps).
    pub events_missed: u64,
    /// Events that lagging subscriptions recovered from the replay window.
    pub events_recovered: u64,
    /// Subscriptions that started with a `reset` because their `Last-Event-ID` could not be
    /// resumed.
    pub resets: u64,
    /// Events published on this node that could not go through the
    /// [backplane](crate::backplane): delivered to this node's connections only, without an
    /// id, and in no history.
    pub backplane_failures: u64,
}
