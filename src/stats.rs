//! What a publish did ([`Published`]) and what a broadcaster has done ([`Stats`]): plain values
//! returned to the caller.

use serde::Serialize;

use crate::event_id::EventId;

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// The event's id on the user's channel; `None` when the user has no channel (no
    /// connection, and none within the retention), so there was nobody to deliver it to or to
    /// replay it for. With a backplane, the id in the shared history, or `None` when the
    /// publish was only queued ([`Delivery::Queued`]) or nothing was stored, or (rarely) when
    /// it was sent again after its answer was lost, had run once, and its entry had left the
    /// history by then.
    pub id: Option<EventId>,
    /// Whom it reached, as far as the publisher can know when the call returns.
    pub delivery: Delivery,
}

/// Whom a publish reached. Each variant counts one kind of thing, so that "nobody" and "not
/// known yet" are never the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Single node: the connections of the user the event reached. A connection subscribed to
    /// a thread skips the events of other threads and those without one, and is not counted
    /// for them: 0 means that nobody received the event, not that nobody is connected.
    Connections(usize),
    /// With a backplane, once it answered: the nodes that received the event, each of which
    /// delivers it to its own connections of the user.
    Nodes(usize),
    /// With a backplane, from a sync publish: the event is queued for the backplane and its
    /// outcome is not known when the call returns (failures are counted and handled as the
    /// [backplane docs](crate::backplane#faults) say).
    Queued,
}

impl Default for Delivery {
    fn default() -> Self {
        Self::Connections(0)
    }
}

impl Published {
    /// The connections reached, when the publish was delivered by this node itself.
    pub fn connections(&self) -> Option<usize> {
        match self.delivery {
            Delivery::Connections(n) => Some(n),
            _ => None,
        }
    }

    /// The nodes reached, when a backplane answered.
    pub fn nodes(&self) -> Option<usize> {
        match self.delivery {
            Delivery::Nodes(n) => Some(n),
            _ => None,
        }
    }
}

/// As JSON: `{"id": ..., "receivers": N}`, the shape the replaced crate's tools and the demo
/// server's clients read, where `receivers` is the connections reached, or with a backplane the
/// nodes; a backplane publish adds `"delivery": "nodes"` or `"delivery": "queued"` (then
/// `receivers` is 0) so that the two are told apart.
impl Serialize for Published {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (receivers, delivery) = match self.delivery {
            Delivery::Connections(n) => (n, None),
            Delivery::Nodes(n) => (n, Some("nodes")),
            Delivery::Queued => (0, Some("queued")),
        };
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("receivers", &receivers)?;
        if let Some(delivery) = delivery {
            map.serialize_entry("delivery", delivery)?;
        }
        map.end()
    }
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
    /// Events published since the broadcaster was created. With a backplane: the publishes
    /// this node handed to it and it took (not refused at once), whichever nodes deliver them.
    pub published: u64,
    /// Times a subscription fell behind the ring.
    pub lag_events: u64,
    /// Events that subscriptions skipped and signalled with `lagged` (the gaps); a thread
    /// stream opened from its state ends instead. For a thread subscription, its own events
    /// that the window still held and its policy skipped, plus every event the window dropped
    /// from its gap, other threads' included: an upper bound on its own losses, exact when the
    /// window dropped none of the gap (see [`subscription`](crate::subscription#gaps)).
    pub events_missed: u64,
    /// Events that lagging subscriptions recovered from the replay window.
    pub events_recovered: u64,
    /// Subscriptions that started with a `reset` because their `Last-Event-ID` could not be
    /// resumed.
    pub resets: u64,
    /// Events published on this node that could not go through the
    /// [backplane](crate::backplane): delivered to this node's connections only, without an
    /// id, and in no history; and those the backplane abandoned when it was dropped unclosed:
    /// delivered nowhere if still queued, or, if Redis had run one whose answer was still on
    /// the way, delivered by the other nodes (this node cannot tell: an upper bound).
    pub backplane_failures: u64,
    /// Bytes held by per-thread states ([`ThreadState`](crate::ThreadState)).
    pub thread_state_bytes: usize,
    /// Thread states forgotten because a user channel held its maximum of threads.
    pub threads_evicted: u64,
    /// Events a thread state could not apply ([`Folded::Unknown`](crate::Folded::Unknown)),
    /// and, with a backplane, thread states rebuilt from less than the whole thread (the
    /// backplane no longer held all of it: see the [backplane docs](crate::backplane#threads)).
    pub thread_states_unknown: u64,
    /// Events after which a thread state trimmed its oldest parts
    /// ([`Folded::Trimmed`](crate::Folded::Trimmed)).
    pub thread_states_trimmed: u64,
}
