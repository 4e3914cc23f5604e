//! [`Routed`]: what one route call reached, per target channel.

use std::borrow::Cow;

use serde::Serialize;

use crate::stats::Published;

/// What a route call reached: one entry per target channel, in routing order. Serialises as a
/// map from channel name to [`Published`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    targets: Vec<(Cow<'static, str>, Published)>,
}

impl Routed {
    /// Records what a publish to `channel` did; for [`Route`](crate::Route) implementations.
    pub fn push(&mut self, channel: impl Into<Cow<'static, str>>, published: Published) {
        self.targets.push((channel.into(), published));
    }

    /// What the publish to `channel` did, if it was a target.
    pub fn get(&self, channel: &str) -> Option<Published> {
        self.targets
            .iter()
            .find(|(c, _)| c == channel)
            .map(|(_, p)| *p)
    }

    /// Every target and what it reached.
    pub fn targets(&self) -> impl Iterator<Item = (&str, Published)> {
        self.targets.iter().map(|(c, p)| (&**c, *p))
    }

    /// Connections reached across all targets delivered by this node (targets published
    /// through a backplane count nodes, not connections, and are left out: see
    /// [`Published::delivery`]).
    pub fn connections(&self) -> usize {
        self.targets
            .iter()
            .filter_map(|(_, p)| p.connections())
            .sum()
    }
}

impl Serialize for Routed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.targets.len()))?;
        for (channel, published) in &self.targets {
            map.serialize_entry(channel, published)?;
        }
        map.end()
    }
}
