//! [`Frame`]: what a subscription yields, an event or a control event, already encoded.
//!
//! Events are the frames their publish encoded once and shares with every receiver. Control
//! events are written here, per connection, since they concern one connection only:
//!
//! | event | data | when |
//! |---|---|---|
//! | `lagged` | `{"type":"lagged","missed":N}` | N events were lost to this connection |
//! | `reset` | `{"type":"reset","reason":R}` | the `Last-Event-ID` it resumed from cannot be resumed |
//!
//! Control frames carry no `id:`, so the client's last event id stays on the last event it
//! really received.

use bytes::Bytes;

use crate::event_id::EventId;
use crate::reason::ResetReason;

/// The SSE event name of the control event that signals lost events.
pub const LAGGED_EVENT: &str = "lagged";
/// The SSE event name of the control event that signals a `Last-Event-ID` that cannot be resumed.
pub const RESET_EVENT: &str = "reset";

/// What a [`Frame`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameKind {
    /// A published event.
    Event(EventId),
    /// A published event that has no id: with a backplane, one that could not go through it
    /// and was delivered to this node's connections only. Sent without an `id:` line, so the
    /// client's last event id stays on the last event that had one.
    Unnumbered,
    /// The opening of a thread stream: the frames that rebuild the thread's state so far (see
    /// [`ThreadState`](crate::ThreadState)), without ids.
    Opening,
    /// `missed` events were lost to this subscription (for a thread subscription, an upper
    /// bound on its own losses: see [`subscription`](crate::subscription#gaps)).
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The subscription could not resume from the client's id and continues live.
    Reset(ResetReason),
}

/// One frame a subscription yields: its kind and its encoded SSE bytes, shared with every other
/// receiver of the same event.
#[derive(Debug, Clone)]
pub struct Frame {
    kind: FrameKind,
    bytes: Bytes,
}

impl Frame {
    pub(crate) fn event(seq: u64, epoch: u64, bytes: Bytes) -> Self {
        Self {
            kind: FrameKind::Event(EventId::new(epoch, seq)),
            bytes,
        }
    }

    pub(crate) fn unnumbered(bytes: Bytes) -> Self {
        Self {
            kind: FrameKind::Unnumbered,
            bytes,
        }
    }

    pub(crate) fn opening(bytes: Bytes) -> Self {
        Self {
            kind: FrameKind::Opening,
            bytes,
        }
    }

    pub(crate) fn lagged(missed: u64) -> Self {
        let data = format!("{{\"type\":\"lagged\",\"missed\":{missed}}}");
        Self::control(FrameKind::Lagged { missed }, LAGGED_EVENT, &data)
    }

    pub(crate) fn reset(reason: ResetReason) -> Self {
        let data = format!("{{\"type\":\"reset\",\"reason\":\"{}\"}}", reason.as_str());
        Self::control(FrameKind::Reset(reason), RESET_EVENT, &data)
    }

    fn control(kind: FrameKind, name: &str, data: &str) -> Self {
        let mut bytes = Vec::with_capacity(data.len() + 32);
        crate::wire::write_field(&mut bytes, "event", name);
        crate::wire::write_field(&mut bytes, "data", data);
        bytes.push(b'\n');
        Self {
            kind,
            bytes: Bytes::from(bytes),
        }
    }

    /// What the frame is.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// The event id, for an event frame.
    pub fn id(&self) -> Option<EventId> {
        match self.kind {
            FrameKind::Event(id) => Some(id),
            _ => None,
        }
    }

    /// The encoded frame, ready for the wire.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The encoded frame.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}
