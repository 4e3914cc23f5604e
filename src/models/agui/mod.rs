//! AG-UI protocol events: the whole AG-UI 1.0 event set, lossless and strict.
//!
//! [AG-UI](https://docs.ag-ui.com) (Agent–User Interaction protocol) is the open event protocol
//! between an agent backend and a user-facing front end. [`AgUiEvent`] has one variant per
//! event type of AG-UI 1.0 (`@ag-ui/core` 1.0.0, whose schemas are the authority): run
//! lifecycle, steps, streamed text messages, tool calls, state, messages and activities,
//! reasoning, subagents, and the `RAW` and `CUSTOM` extension points. Each variant's struct
//! has every member the protocol defines, named as it writes them (`camelCase`), `timestamp`
//! an integer of milliseconds.
//!
//! # Lossless
//!
//! Reading an event and writing it back keeps every member:
//!
//! * members this version of the model does not know (a newer protocol's additions) are kept
//!   in each struct's `extra` map and written back after the known ones;
//! * an event whose `type` the model does not know is carried as it came, as
//!   [`AgUiEvent::Unknown`], never refused;
//! * free-form members (state, messages, run input, outcomes, token usage, JSON Patch
//!   operations) are [`serde_json::Value`]s, so nothing inside them is lost either.
//!
//! The one normalisation: an optional member set to `null` is read, and written, as absent
//! (the 1.0 schemas reject `null` there; absent is what the producer meant).
//!
//! *Limit: member order.* Inside free-form values, objects are `serde_json::Map`s, which keep
//! their members sorted by name unless serde_json's `preserve_order` feature is on: an event
//! read from JSON and written back lists them sorted, where a JavaScript client would see them
//! in the order published (a form built from a JSON Schema's `properties`, say). Values are
//! kept exactly (floats too: serde_json's `float_roundtrip` is on). An application that needs
//! the published order can turn `preserve_order` on for its build; the run state then follows
//! the client except for a JSON Patch `remove`, after which the remaining members of a state
//! object may come out of a later opening in another order.
//!
//! # Strict where the protocol is strict
//!
//! An event the 1.0 schemas reject is an error that names the member ([`InvalidEvent`]):
//! reading it from JSON fails, and [`AgUiEvent::validate`] refuses one built in Rust, which
//! [`EventRouter::route_agui`](crate::EventRouter::route_agui) does before anything is
//! published. Checked: every required member and its type; `TEXT_MESSAGE_START` and
//! `TEXT_MESSAGE_CHUNK` roles (developer, system, assistant, user); `TOOL_CALL_RESULT` role
//! (`tool`) and content parts; `timestamp` an integer (never a string or a float) within
//! ±(2^53 − 1); `metadata` an object; `STATE_DELTA` and `ACTIVITY_DELTA` as JSON Patch
//! (parsed by the `json-patch` crate: `op`, JSON Pointers, required `value`/`from`);
//! `MESSAGES_SNAPSHOT` messages against their role's schema (every message has an `id`);
//! `RUN_STARTED` `input` as a full run input; `RUN_FINISHED` and `SUBAGENT_FINISHED`
//! outcomes; token usage counts. Events of unknown type are not checked: their schema is not
//! known.
//!
//! ```
//! use sse_hub::models::agui::{AgUiEvent, TextMessageContent};
//!
//! let event = AgUiEvent::from(TextMessageContent {
//!     message_id: "m-1".into(),
//!     delta: "Hello".into(),
//!     ..Default::default()
//! });
//! assert_eq!(
//!     serde_json::to_string(&event).unwrap(),
//!     r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hello"}"#
//! );
//!
//! // Members and types this version does not know pass through intact.
//! let newer = r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hi","tone":"warm"}"#;
//! let event: AgUiEvent = serde_json::from_str(newer).unwrap();
//! assert_eq!(serde_json::to_string(&event).unwrap(), newer);
//! let future = r#"{"type":"HOLOGRAM_STARTED","beam":1}"#;
//! let event: AgUiEvent = serde_json::from_str(future).unwrap();
//! assert_eq!(event.event_type(), "HOLOGRAM_STARTED");
//! assert_eq!(serde_json::to_string(&event).unwrap(), future);
//!
//! // What the protocol refuses is an error naming the member.
//! let tool_text = r#"{"type":"TEXT_MESSAGE_START","messageId":"m-1","role":"tool"}"#;
//! let error = serde_json::from_str::<AgUiEvent>(tool_text).unwrap_err();
//! assert!(error.to_string().contains("invalid `role`"), "{error}");
//! ```

mod checks;
mod events;
mod members;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use events::{
    ActivityDelta, ActivitySnapshot, Custom, MessagesSnapshot, Raw, ReasoningEncryptedValue,
    ReasoningEnd, ReasoningMessageChunk, ReasoningMessageContent, ReasoningMessageEnd,
    ReasoningMessageStart, ReasoningStart, RunError, RunFinished, RunStarted, StateDelta,
    StateSnapshot, StepFinished, StepStarted, SubagentError, SubagentFinished, SubagentStarted,
    TextMessageChunk, TextMessageContent, TextMessageEnd, TextMessageStart, ToolCallArgs,
    ToolCallChunk, ToolCallEnd, ToolCallResult, ToolCallStart,
};
pub use members::MAX_SAFE_INTEGER;

use events::Members;
use members::{Key, KeySeed, Member, TagSeed, WireEnum, kind, read_wire_enum};

pub use crate::error::InvalidEvent;

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident (default $default:ident) {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// The value's name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $wire, )+
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::$default
            }
        }

        impl WireEnum for $name {
            const ALL: &'static [(Self, &'static str)] = &[$( (Self::$variant, $wire), )+];
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let wire = <Cow<'de, str>>::deserialize(deserializer)?;
                Self::from_wire(&wire)
                    .ok_or_else(|| de::Error::unknown_variant(&wire, &[$($wire),+]))
            }
        }

        impl Member for Option<$name> {
            fn read<'de, A: MapAccess<'de>>(
                map: &mut A,
                name: &'static str,
            ) -> Result<Self, A::Error> {
                read_wire_enum(map, name)
            }
            fn missing() -> Option<Self> {
                Some(None)
            }
            fn is_absent(&self) -> bool {
                self.is_none()
            }
        }

        impl Member for $name {
            fn read<'de, A: MapAccess<'de>>(
                map: &mut A,
                name: &'static str,
            ) -> Result<Self, A::Error> {
                read_wire_enum(map, name)?.ok_or_else(|| {
                    de::Error::custom(<$name as WireEnum>::unknown(name, "null"))
                })
            }
            fn missing() -> Option<Self> {
                None
            }
            fn is_absent(&self) -> bool {
                false
            }
        }
    };
}

wire_enum! {
    /// The role of a message's author, serialised in lowercase. `TEXT_MESSAGE_START` takes
    /// developer, system, assistant or user; `TOOL_CALL_RESULT` takes tool.
    Role (default Assistant) {
        /// `"developer"`: the application developer.
        Developer = "developer",
        /// `"system"`: the system.
        System = "system",
        /// `"assistant"`: the agent (the default).
        Assistant = "assistant",
        /// `"user"`: the end user.
        User = "user",
        /// `"tool"`: a tool's result.
        Tool = "tool",
        /// `"activity"`: structured progress materialised as a message.
        Activity = "activity",
        /// `"reasoning"`: the agent's reasoning materialised as a message.
        Reasoning = "reasoning",
    }
}

wire_enum! {
    /// `REASONING_MESSAGE_START`'s `role`, which is always `"reasoning"`.
    ReasoningRole (default Reasoning) {
        /// `"reasoning"`.
        Reasoning = "reasoning",
    }
}

wire_enum! {
    /// `REASONING_ENCRYPTED_VALUE`'s `subtype`: what the encrypted value belongs to.
    EncryptedValueSubtype (default Message) {
        /// `"tool-call"`: a tool call.
        ToolCall = "tool-call",
        /// `"message"`: a message.
        Message = "message",
    }
}

/// `TOOL_CALL_RESULT`'s `content`: a string, or an array of content parts (text, image,
/// audio, video, document; each checked against its schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolCallResultContent {
    /// The output as text.
    Text(String),
    /// The output as content parts, e.g. `{"type":"text","text":"..."}`.
    Parts(Vec<Value>),
}

impl Default for ToolCallResultContent {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl From<String> for ToolCallResultContent {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for ToolCallResultContent {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl Member for ToolCallResultContent {
    fn read<'de, A: MapAccess<'de>>(map: &mut A, name: &'static str) -> Result<Self, A::Error> {
        match map.next_value::<Value>()? {
            Value::String(text) => Ok(Self::Text(text)),
            Value::Array(parts) => Ok(Self::Parts(parts)),
            other => Err(de::Error::custom(InvalidEvent::new(
                name,
                format!(
                    "must be a string or an array of content parts, got {}",
                    kind(&other)
                ),
            ))),
        }
    }
    fn missing() -> Option<Self> {
        None
    }
    fn is_absent(&self) -> bool {
        false
    }
}

/// An event whose `type` this version of the model does not know, carried as it came.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnknownEvent {
    /// The event's `type`.
    pub event_type: String,
    /// Every other member, unchanged.
    pub members: Map<String, Value>,
}

macro_rules! agui_events {
    ($( $(#[$vmeta:meta])* $variant:ident => $tag:literal, )+) => {
        /// An AG-UI event, tagged by `"type"` in JSON: one variant per AG-UI 1.0 event type,
        /// and [`Unknown`](Self::Unknown) for any other type. See the [module](self) docs.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AgUiEvent {
            $( $(#[$vmeta])* $variant($variant), )+
            /// An event of a type this version does not know (a newer protocol's), carried as
            /// it came: read and written back unchanged, never checked.
            Unknown(UnknownEvent),
        }

        $(
            impl $variant {
                /// The event's `"type"` tag.
                pub const TYPE: &'static str = $tag;
            }

            impl From<$variant> for AgUiEvent {
                fn from(event: $variant) -> Self {
                    Self::$variant(event)
                }
            }
        )+

        impl AgUiEvent {
            /// Every `"type"` of AG-UI 1.0 the model knows.
            pub const TYPES: &'static [&'static str] = &[$($tag),+];

            /// The event's `"type"` tag (`SCREAMING_SNAKE_CASE`).
            pub fn event_type(&self) -> &str {
                match self {
                    $( Self::$variant(_) => $tag, )+
                    Self::Unknown(e) => &e.event_type,
                }
            }

            /// The event's `timestamp` (milliseconds since the Unix epoch), if any.
            pub fn timestamp(&self) -> Option<i64> {
                match self {
                    $( Self::$variant(e) => e.timestamp, )+
                    Self::Unknown(e) => e.members.get("timestamp").and_then(Value::as_i64),
                }
            }

            /// The event's `rawEvent` (the original upstream event), if any.
            pub fn raw_event(&self) -> Option<&Value> {
                match self {
                    $( Self::$variant(e) => e.raw_event.as_ref(), )+
                    Self::Unknown(e) => e.members.get("rawEvent"),
                }
                .filter(|raw| !raw.is_null())
            }

            /// The event's `metadata`, if any.
            pub fn metadata(&self) -> Option<&Map<String, Value>> {
                match self {
                    $( Self::$variant(e) => e.metadata.as_ref(), )+
                    Self::Unknown(e) => e.members.get("metadata").and_then(Value::as_object),
                }
            }

            /// The members the model does not know: a known type's `extra`, or every member
            /// (but `type`) of an [`Unknown`](Self::Unknown) one.
            pub fn extra(&self) -> &Map<String, Value> {
                match self {
                    $( Self::$variant(e) => &e.extra, )+
                    Self::Unknown(e) => &e.members,
                }
            }

            /// Checks the event against the AG-UI 1.0 schemas; the error names the member.
            /// Events read from JSON were checked already; one built in Rust is checked by
            /// the router before it is published. An [`Unknown`](Self::Unknown) event is
            /// refused only when its `type` is one the model knows (build that variant
            /// instead) or it has a `type` among its members.
            pub fn validate(&self) -> Result<(), InvalidEvent> {
                match self {
                    $( Self::$variant(e) => e.validate(), )+
                    Self::Unknown(e) => {
                        if Self::TYPES.contains(&e.event_type.as_str()) {
                            Err(InvalidEvent::new(
                                "type",
                                format!(
                                    "{:?} is a type the model knows: build its variant",
                                    e.event_type
                                ),
                            ))
                        } else if e.members.contains_key("type") {
                            Err(InvalidEvent::new(
                                "type",
                                "is the event's `event_type`, not one of its members",
                            ))
                        } else {
                            Ok(())
                        }
                    }
                }
            }

            /// Reads the members that follow the `type` tag.
            fn read_tagged<'de, A: MapAccess<'de>>(tag: &str, map: A) -> Result<Self, A::Error> {
                Ok(match tag {
                    $( $tag => Self::$variant(<$variant as Members>::read_members(map, true)?), )+
                    _ => Self::Unknown(read_unknown(tag, map)?),
                })
            }
        }

        impl Serialize for AgUiEvent {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                match self {
                    $(
                        Self::$variant(e) => {
                            map.serialize_entry("type", $tag)?;
                            e.write_members(&mut map)?;
                        }
                    )+
                    Self::Unknown(e) => {
                        map.serialize_entry("type", &e.event_type)?;
                        for (key, value) in &e.members {
                            if key != "type" {
                                map.serialize_entry(key, value)?;
                            }
                        }
                    }
                }
                map.end()
            }
        }
    };
}

agui_events! {
    /// `RUN_STARTED`: a run begins.
    RunStarted => "RUN_STARTED",
    /// `RUN_FINISHED`: a run ended without failing.
    RunFinished => "RUN_FINISHED",
    /// `RUN_ERROR`: a run failed.
    RunError => "RUN_ERROR",
    /// `STEP_STARTED`: a named step begins.
    StepStarted => "STEP_STARTED",
    /// `STEP_FINISHED`: a named step ends.
    StepFinished => "STEP_FINISHED",
    /// `TEXT_MESSAGE_START`: a streamed text message begins.
    TextMessageStart => "TEXT_MESSAGE_START",
    /// `TEXT_MESSAGE_CONTENT`: the next fragment of a text message.
    TextMessageContent => "TEXT_MESSAGE_CONTENT",
    /// `TEXT_MESSAGE_END`: a text message is complete.
    TextMessageEnd => "TEXT_MESSAGE_END",
    /// `TEXT_MESSAGE_CHUNK`: start, content and end in one.
    TextMessageChunk => "TEXT_MESSAGE_CHUNK",
    /// `TOOL_CALL_START`: a tool call begins.
    ToolCallStart => "TOOL_CALL_START",
    /// `TOOL_CALL_ARGS`: the next fragment of a tool call's arguments.
    ToolCallArgs => "TOOL_CALL_ARGS",
    /// `TOOL_CALL_END`: a tool call's arguments are complete.
    ToolCallEnd => "TOOL_CALL_END",
    /// `TOOL_CALL_CHUNK`: a tool call's start, args and end in one.
    ToolCallChunk => "TOOL_CALL_CHUNK",
    /// `TOOL_CALL_RESULT`: what a tool returned.
    ToolCallResult => "TOOL_CALL_RESULT",
    /// `STATE_SNAPSHOT`: the whole agent state.
    StateSnapshot => "STATE_SNAPSHOT",
    /// `STATE_DELTA`: a JSON Patch to the agent state.
    StateDelta => "STATE_DELTA",
    /// `MESSAGES_SNAPSHOT`: every message of the conversation.
    MessagesSnapshot => "MESSAGES_SNAPSHOT",
    /// `ACTIVITY_SNAPSHOT`: an activity's content.
    ActivitySnapshot => "ACTIVITY_SNAPSHOT",
    /// `ACTIVITY_DELTA`: a JSON Patch to an activity's content.
    ActivityDelta => "ACTIVITY_DELTA",
    /// `REASONING_START`: a span of reasoning begins.
    ReasoningStart => "REASONING_START",
    /// `REASONING_MESSAGE_START`: a reasoning message begins.
    ReasoningMessageStart => "REASONING_MESSAGE_START",
    /// `REASONING_MESSAGE_CONTENT`: the next fragment of a reasoning message.
    ReasoningMessageContent => "REASONING_MESSAGE_CONTENT",
    /// `REASONING_MESSAGE_END`: a reasoning message is complete.
    ReasoningMessageEnd => "REASONING_MESSAGE_END",
    /// `REASONING_MESSAGE_CHUNK`: a reasoning message's start, content and end in one.
    ReasoningMessageChunk => "REASONING_MESSAGE_CHUNK",
    /// `REASONING_END`: a span of reasoning ends.
    ReasoningEnd => "REASONING_END",
    /// `REASONING_ENCRYPTED_VALUE`: an opaque, encrypted reasoning artefact.
    ReasoningEncryptedValue => "REASONING_ENCRYPTED_VALUE",
    /// `SUBAGENT_STARTED`: a subagent invocation begins.
    SubagentStarted => "SUBAGENT_STARTED",
    /// `SUBAGENT_FINISHED`: a subagent invocation's segment ends.
    SubagentFinished => "SUBAGENT_FINISHED",
    /// `SUBAGENT_ERROR`: a subagent invocation failed.
    SubagentError => "SUBAGENT_ERROR",
    /// `RAW`: a provider-native event passed through.
    Raw => "RAW",
    /// `CUSTOM`: an application's own event.
    Custom => "CUSTOM",
}

/// Reads the members of an event of unknown type.
fn read_unknown<'de, A: MapAccess<'de>>(tag: &str, mut map: A) -> Result<UnknownEvent, A::Error> {
    let mut members = Map::new();
    while let Some(Key(key)) = map.next_key_seed(KeySeed)? {
        if key == "type" {
            return Err(de::Error::duplicate_field("type"));
        }
        let value = map.next_value()?;
        members.insert(key.into_owned(), value);
    }
    Ok(UnknownEvent {
        event_type: tag.to_owned(),
        members,
    })
}

/// Reads an event: when `type` comes first (as producers write it), straight into its
/// struct; otherwise the members are collected first, then read the same way.
struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = AgUiEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AG-UI event object with a \"type\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AgUiEvent, A::Error> {
        let Some(Key(first)) = map.next_key_seed(KeySeed)? else {
            return Err(de::Error::missing_field("type"));
        };
        if first == "type" {
            let tag = map.next_value_seed(TagSeed)?;
            return AgUiEvent::read_tagged(&tag, map);
        }
        let mut members = Map::new();
        members.insert(first.into_owned(), map.next_value()?);
        let mut tag = None;
        while let Some(Key(key)) = map.next_key_seed(KeySeed)? {
            if key == "type" {
                if tag.is_some() {
                    return Err(de::Error::duplicate_field("type"));
                }
                tag = Some(map.next_value_seed(TagSeed)?.into_owned());
            } else {
                let value = map.next_value()?;
                members.insert(key.into_owned(), value);
            }
        }
        let tag = tag.ok_or_else(|| de::Error::missing_field("type"))?;
        let rest = de::value::MapDeserializer::<_, serde_json::Error>::new(members.into_iter());
        AgUiEvent::read_tagged(&tag, rest).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for AgUiEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}
