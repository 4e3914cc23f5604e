//! Typed event models for the four standard sse-hub channels.
//!
//! sse-hub pushes events from an AI-agent backend to browsers over
//! Server-Sent Events. Each standard channel carries exactly one event type:
//!
//! | Channel   | Event type         | Module        |
//! |-----------|--------------------|---------------|
//! | AG-UI     | [`AgUiEvent`]      | [`agui`]      |
//! | A2A       | [`A2AEvent`]       | [`a2a`]       |
//! | System    | [`SystemEvent`]    | [`system`]    |
//! | Analytics | [`AnalyticsEvent`] | [`analytics`] |
//!
//! [`ContextEvent`] (module [`context`]) wraps an AG-UI, A2A or system event
//! together with the [`Protocol`] it belongs to, for streams that mix them.
//!
//! # JSON conventions
//!
//! * Every event is a single JSON object whose `"type"` member names the
//!   event in `SCREAMING_SNAKE_CASE` (for example `"TEXT_MESSAGE_CONTENT"`).
//!   [`AgUiEvent::event_type`] and friends return that tag.
//! * AG-UI, A2A and system events use `camelCase` member names; the AG-UI
//!   events follow the public AG-UI protocol exactly, so standard AG-UI
//!   front ends consume the JSON unchanged. Analytics events use
//!   `snake_case` member names.
//! * Optional members are omitted when absent (never written as `null`); an
//!   explicit `null` in input is read as absent.
//! * Nothing is lost: members the model does not know are kept in each
//!   struct's `extra` map (`unknown` for analytics' `REAL_TIME_STATS`, whose
//!   `extra` is a member) and written back. An AG-UI event of unknown
//!   `"type"` is carried as [`agui::AgUiEvent::Unknown`]; for the other
//!   channels an unknown `"type"` is an error.
//! * AG-UI events are checked against the AG-UI 1.0 schemas when read and
//!   when routed ([`agui::InvalidEvent`] names the member); see [`agui`].
//! * `timestamp`, where present, is milliseconds since the Unix epoch.
//! * Free-form payloads (state, messages, A2A tasks, artifacts, ...) are
//!   [`serde_json::Value`].

/// Implements `From<Struct>` for every variant, plus `event_type()` and
/// `timestamp()`, for an enum whose variants are newtypes over a struct of
/// the same name that has a `timestamp: Option<i64>` field.
macro_rules! event_enum {
    ($enum:ident { $($variant:ident => $tag:literal),+ $(,)? }) => {
        impl $enum {
            /// The event's `"type"` tag as it appears in JSON
            /// (`SCREAMING_SNAKE_CASE`).
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $tag,)+
                }
            }

            /// The event's optional `timestamp` (milliseconds since the Unix
            /// epoch).
            pub fn timestamp(&self) -> Option<i64> {
                match self {
                    $(Self::$variant(e) => e.timestamp,)+
                }
            }
        }

        $(
            impl From<$variant> for $enum {
                fn from(event: $variant) -> Self {
                    Self::$variant(event)
                }
            }
        )+
    };
}

pub mod a2a;
pub mod agui;
pub mod analytics;
pub mod context;
pub mod system;

pub use a2a::{A2AEvent, TaskState};
pub use agui::{AgUiEvent, InvalidEvent, Role};
pub use analytics::AnalyticsEvent;
pub use context::{ContextEvent, Protocol};
pub use system::SystemEvent;
