//! [`Channel`]: the four standard agent channels, by name.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// One of the four standard agent channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// AG-UI events: `"agui"`.
    AgUi,
    /// Agent-to-agent events: `"a2a"`.
    A2A,
    /// The aggregated context stream: `"context"`.
    Context,
    /// Analytics events: `"analytics"`.
    Analytics,
}

impl Channel {
    /// All four, in this order.
    pub const ALL: [Channel; 4] = [Self::AgUi, Self::A2A, Self::Context, Self::Analytics];

    /// The channel's name: in URLs, metrics labels and tracing fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgUi => "agui",
            Self::A2A => "a2a",
            Self::Context => "context",
            Self::Analytics => "analytics",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the four standard channels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel {0:?}: expected agui, a2a, context or analytics")]
pub struct UnknownChannel(pub String);

/// Parsed from the name, so that an axum handler can take `Path<Channel>`; anything else is an
/// error that lists the four names.
impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}
