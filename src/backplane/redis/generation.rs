//! The generation markers a node has seen, which tell a Redis that lost its data (see the
//! generation script in [`scripts`](super::scripts)).

use std::collections::VecDeque;

use crate::backplane::redis::scripts::KEPT;

/// The generation markers a node has seen: the current one (`None` before the first
/// connection), and the few before it, most recent last. A reply read under an earlier marker
/// may reach the node after it heard of the new one (a thread read sent before the loss,
/// answered after the announcement was dispatched): such a marker is not new, and says
/// nothing. Marker values are random and never reused.
///
/// A node takes a new marker in only at a connection and from its feed, in the feed's order
/// (see [`Shared::generation_seen`](super::state::Shared::generation_seen)); a reply under a
/// marker it does not [know](Self::knows) yet is of data its feed has not reached.
#[derive(Default)]
pub(crate) struct Generations {
    current: Option<String>,
    earlier: VecDeque<String>,
}

/// Earlier generation markers a node remembers: one per loss it saw; a reply older than a few
/// losses does not come.
const EARLIER_GENERATIONS: usize = 8;

/// What a marker Redis showed says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    /// The current one, an earlier one, or the first the node sees: nothing happened.
    Known,
    /// A new marker that says the data was kept (the marker went alone).
    Kept,
    /// A new marker: Redis lost its data since the node saw the current one.
    Lost,
}

impl Generations {
    /// Whether `value` is the current marker or an earlier one: a reply read under it is of
    /// data the node's feed has reached.
    pub(crate) fn knows(&self, value: &str) -> bool {
        self.current.as_deref() == Some(value) || self.earlier.iter().any(|e| e == value)
    }

    /// Takes in a marker Redis showed, and says what it means.
    pub(crate) fn see(&mut self, value: &str) -> Marker {
        match self.current.as_deref() {
            Some(seen) if seen == value => return Marker::Known,
            None => {
                self.current = Some(value.to_owned());
                return Marker::Known;
            }
            Some(_) if self.earlier.iter().any(|e| e == value) => return Marker::Known,
            Some(_) => {}
        }
        if self.earlier.len() == EARLIER_GENERATIONS {
            self.earlier.pop_front();
        }
        self.earlier.extend(self.current.replace(value.to_owned()));
        if value.ends_with(KEPT) {
            Marker::Kept
        } else {
            Marker::Lost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_new_once_and_a_late_reply_under_an_old_one_says_nothing() {
        let mut generations = Generations::default();
        assert!(!generations.knows("a"));
        assert_eq!(generations.see("a"), Marker::Known, "the first marker");
        assert!(generations.knows("a") && !generations.knows("b"));
        assert_eq!(generations.see("a"), Marker::Known);
        assert_eq!(generations.see("b"), Marker::Lost);
        assert_eq!(generations.see("b"), Marker::Known, "counted once");
        assert_eq!(
            generations.see("a"),
            Marker::Known,
            "a reply read before the loss"
        );
        assert!(generations.knows("a") && generations.knows("b"));
        assert_eq!(generations.see(&format!("c{KEPT}")), Marker::Kept);
    }
}
