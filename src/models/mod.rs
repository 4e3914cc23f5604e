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

            /// Checks that the event would be written with each member once: a member
            /// kept among the unknown ones (`extra`) must not be `type` or a member the
            /// model writes itself, or the JSON would hold it twice (a browser's
            /// `JSON.parse` keeps the last, and this model could not read it back). The
            /// [`EventRouter`](crate::EventRouter) refuses such an event with
            /// [`PublishError::InvalidEvent`](crate::PublishError::InvalidEvent).
            pub fn validate(&self) -> Result<(), crate::error::InvalidEvent> {
                match self {
                    $(Self::$variant(e) => crate::models::check_unknown(e),)+
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

/// A model struct's members it does not know, kept as they came (`extra`; `unknown` where
/// `extra` is a member of the event).
pub(crate) trait Unknown {
    fn unknown(&self) -> &serde_json::Map<String, serde_json::Value>;
    fn unknown_mut(&mut self) -> &mut serde_json::Map<String, serde_json::Value>;
}

/// Implements [`Unknown`] for model structs whose unknown members are in field `$field`.
macro_rules! unknown_members {
    ($field:ident: $($model:ty),+ $(,)?) => {
        $(
            impl crate::models::Unknown for $model {
                fn unknown(&self) -> &serde_json::Map<String, serde_json::Value> {
                    &self.$field
                }
                fn unknown_mut(&mut self) -> &mut serde_json::Map<String, serde_json::Value> {
                    &mut self.$field
                }
            }
        )+
    };
}

/// The check behind `validate` of the A2A, system and analytics events: `event` written with
/// its unknown members repeats none of its own. Free when there is no unknown member (the usual
/// case); otherwise the known members are written once more to see which they are, since the
/// models skip absent optional members (an unknown `timestamp` beside no `timestamp` field is
/// written once, and is fine).
pub(crate) fn check_unknown<T: Unknown + serde::Serialize + Clone>(
    event: &T,
) -> Result<(), crate::error::InvalidEvent> {
    if event.unknown().is_empty() {
        return Ok(());
    }
    let mut known = event.clone();
    known.unknown_mut().clear();
    let written = serde_json::to_value(&known)
        .map_err(|error| crate::error::InvalidEvent::new("", error.to_string()))?;
    for member in event.unknown().keys() {
        if member == "type" || written.get(member).is_some() {
            return Err(crate::error::InvalidEvent::new(
                member.as_str(),
                "is a member the model writes: set it there, not among the unknown members",
            ));
        }
    }
    Ok(())
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
