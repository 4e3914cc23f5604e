//! Event ids: what `Last-Event-ID` carries back.
//!
//! Every frame published on a user channel gets an [`EventId`]: the channel's *epoch* and a
//! sequence number that starts at 1 and grows by one per event. On the wire it is the opaque
//! string `{epoch}-{seq}`, both in decimal (the shape of a Redis stream id, so that
//! ids issued through a Redis backplane look and parse the same), which contains no CR, LF or NUL and so is always a valid SSE
//! `id:` value.
//!
//! The epoch is drawn anew whenever a user's channel is created (first subscribe, or after the
//! retained channel expired, or after a restart of the process), so an id issued by an earlier
//! channel can never be mistaken for a position in the current one: resuming with it yields a
//! `reset` instead of a wrong replay. Epochs come from one process-wide counter that starts at a
//! random value, so they are unique within a process and, with overwhelming probability, across
//! processes.

use std::fmt;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest `Last-Event-ID` value worth parsing; anything longer is malformed.
///
/// Our ids are at most 20 + 1 + 20 bytes; the bound keeps hostile headers from costing more
/// than a glance.
pub const MAX_EVENT_ID_LEN: usize = 64;

/// The position of an event in a user channel.
///
/// `seq` 0 is the position before the first event: a client holding `{epoch}-0` resumes with
/// everything the channel published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    epoch: u64,
    seq: u64,
}

impl EventId {
    /// An id from its parts.
    pub const fn new(epoch: u64, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// The epoch of the channel that issued the id.
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number within that channel.
    pub const fn seq(&self) -> u64 {
        self.seq
    }

    /// Parses the wire form. `None` for anything that is not exactly `{decimal}-{decimal}` within
    /// [`MAX_EVENT_ID_LEN`] bytes: a client's id is untrusted input.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_EVENT_ID_LEN {
            return None;
        }
        let (epoch, seq) = s.split_once('-')?;
        let number = |s: &str| {
            let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if digits { s.parse::<u64>().ok() } else { None }
        };
        Some(Self {
            epoch: number(epoch)?,
            seq: number(seq)?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A fresh epoch for a channel being created.
pub(crate) fn next_epoch() -> u64 {
    static NEXT: LazyLock<AtomicU64> = LazyLock::new(|| AtomicU64::new(fastrand::u64(..)));
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_wire_form() {
        let id = EventId::new(u64::MAX, 42);
        assert_eq!(id.to_string(), "18446744073709551615-42");
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "x-1",
            "1-x",
            "1-1-1",
            "1 -1",
            "1-+1",
            "1-1\n",
            "fffffffffffffffff-1",
            "1-99999999999999999999999",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(EventId::parse(&"1".repeat(MAX_EVENT_ID_LEN + 1)), None);
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(next_epoch(), next_epoch());
    }
}
