//! Protocol-tagged envelope for mixed event streams.
//!
//! A context stream can interleave AG-UI, A2A and system events.
//! [`ContextEvent`] wraps each one with the [`Protocol`] it belongs to, so
//! a consumer can dispatch on `"protocol"` before looking at `"type"`:
//!
//! ```json
//! {"protocol":"agui","event":{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hi"}}
//! ```
//!
//! The inner `"event"` object is exactly the JSON of the wrapped
//! [`AgUiEvent`], [`A2AEvent`] or [`SystemEvent`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{A2AEvent, AgUiEvent, SystemEvent};

/// An AG-UI, A2A or system event tagged with its protocol, serialised as
/// `{"protocol": "agui" | "a2a" | "system", "event": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "protocol", content = "event")]
pub enum ContextEvent {
    /// `"agui"`: an AG-UI protocol event.
    #[serde(rename = "agui")]
    AgUi(AgUiEvent),
    /// `"a2a"`: an A2A protocol event.
    #[serde(rename = "a2a")]
    A2A(A2AEvent),
    /// `"system"`: an sse-hub system event.
    #[serde(rename = "system")]
    System(SystemEvent),
}

impl ContextEvent {
    /// The protocol of the wrapped event.
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::AgUi(_) => Protocol::AgUi,
            Self::A2A(_) => Protocol::A2A,
            Self::System(_) => Protocol::System,
        }
    }

    /// The wrapped event's `"type"` tag.
    pub fn event_type(&self) -> &str {
        match self {
            Self::AgUi(e) => e.event_type(),
            Self::A2A(e) => e.event_type(),
            Self::System(e) => e.event_type(),
        }
    }

    /// The wrapped event's optional `timestamp` (milliseconds since the Unix
    /// epoch).
    pub fn timestamp(&self) -> Option<i64> {
        match self {
            Self::AgUi(e) => e.timestamp(),
            Self::A2A(e) => e.timestamp(),
            Self::System(e) => e.timestamp(),
        }
    }
}

impl From<AgUiEvent> for ContextEvent {
    fn from(event: AgUiEvent) -> Self {
        Self::AgUi(event)
    }
}

impl From<A2AEvent> for ContextEvent {
    fn from(event: A2AEvent) -> Self {
        Self::A2A(event)
    }
}

impl From<SystemEvent> for ContextEvent {
    fn from(event: SystemEvent) -> Self {
        Self::System(event)
    }
}

/// The protocol a [`ContextEvent`] belongs to; serialised as the same
/// string as its `"protocol"` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// `"agui"`: AG-UI.
    #[serde(rename = "agui")]
    AgUi,
    /// `"a2a"`: A2A.
    #[serde(rename = "a2a")]
    A2A,
    /// `"system"`: sse-hub system events.
    #[serde(rename = "system")]
    System,
}

impl Protocol {
    /// The protocol's tag: `"agui"`, `"a2a"` or `"system"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgUi => "agui",
            Self::A2A => "a2a",
            Self::System => "system",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
