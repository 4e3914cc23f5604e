//! One struct per AG-UI 1.0 event type, each with every member of `@ag-ui/core` 1.0.0.
//!
//! Every struct also has the members all events share (`timestamp`, `rawEvent`, `metadata`)
//! and `extra`, the members this version of the model does not know, kept as they came.

use std::marker::PhantomData;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::checks::{self, Path};
use super::members::{Key, KeySeed, Member, check_safe_integer};
use super::{EncryptedValueSubtype, InvalidEvent, ReasoningRole, Role, ToolCallResultContent};

/// What every event struct can do with its members, for [`AgUiEvent`](super::AgUiEvent)'s
/// reading and writing.
pub(crate) trait Members: Sized {
    /// Reads the members that follow (or surround) the `type` tag. `tagged`: the tag was read
    /// already, so another `type` is a duplicate.
    fn read_members<'de, A: MapAccess<'de>>(map: A, tagged: bool) -> Result<Self, A::Error>;
    /// Writes every member but `type`.
    fn write_members<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error>;
}

/// Reads a member, refusing a second occurrence.
fn read_once<'de, A: MapAccess<'de>, T: Member>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(T::read(map, name)?);
    Ok(())
}

/// A member's value, or its value when missing, or the "missing field" error if required.
fn present<T: Member, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    match slot {
        Some(value) => Ok(value),
        None => T::missing().ok_or_else(|| E::missing_field(name)),
    }
}

/// Deserialises an event struct on its own (without the enum), via [`Members`].
struct MembersVisitor<T>(PhantomData<T>);

impl<'de, T: Members> Visitor<'de> for MembersVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an AG-UI event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::read_members(map, false)
    }
}

macro_rules! agui_event {
    (@check $self:ident) => { Ok(()) };
    (@check $self:ident, $this:ident, $check:block) => {{
        let $this = $self;
        $check
    }};
    (
        $(#[$meta:meta])*
        $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident: $ty:ty = $wire:literal,
            )*
        }
        $(check($this:ident) $check:block)?
    ) => {
        $(#[$meta])*
        ///
        /// Also carries the members every event has (`timestamp`, `rawEvent`, `metadata`) and
        /// `extra`, the members this model does not know, written back as they came.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
            /// `timestamp`: when the event was created, in milliseconds since the Unix epoch;
            /// an integer within ±(2^53 − 1).
            pub timestamp: Option<i64>,
            /// `rawEvent`: the original upstream event, for debugging. Never `null` on the wire:
            /// `Some(Value::Null)` is written as absent.
            pub raw_event: Option<Value>,
            /// `metadata`: extra information attached to the event, open by key (the key
            /// `ag-ui` is reserved for the protocol).
            pub metadata: Option<Map<String, Value>>,
            /// Members this version of the model does not know (a newer protocol's additions),
            /// kept as they came and written back after the known ones. A key the model knows
            /// (or `type`) here is refused by `validate`.
            pub extra: Map<String, Value>,
        }

        impl $name {
            /// The wire names of the members the model knows, `type` aside.
            pub const MEMBERS: &'static [&'static str] =
                &[$($wire,)* "timestamp", "rawEvent", "metadata"];

            /// Checks the event against the AG-UI 1.0 schema: the error names the member.
            /// Events read from JSON were checked already.
            pub fn validate(&self) -> Result<(), InvalidEvent> {
                if let Some(timestamp) = self.timestamp {
                    check_safe_integer("timestamp", timestamp)?;
                }
                if let Some(key) = self
                    .extra
                    .keys()
                    .find(|key| *key == "type" || Self::MEMBERS.contains(&key.as_str()))
                {
                    return Err(InvalidEvent::new(
                        key.as_str(),
                        "is a member the model knows: set its field rather than `extra`",
                    ));
                }
                self.check_members()
            }

            /// The checks beyond the members' types.
            fn check_members(&self) -> Result<(), InvalidEvent> {
                agui_event!(@check self $(, $this, $check)?)
            }
        }

        impl Members for $name {
            fn read_members<'de, A: MapAccess<'de>>(
                mut map: A,
                tagged: bool,
            ) -> Result<Self, A::Error> {
                $( let mut $field: Option<$ty> = None; )*
                let mut timestamp: Option<Option<i64>> = None;
                let mut raw_event: Option<Option<Value>> = None;
                let mut metadata: Option<Option<Map<String, Value>>> = None;
                let mut extra = Map::new();
                while let Some(Key(key)) = map.next_key_seed(KeySeed)? {
                    match &*key {
                        $( $wire => read_once(&mut map, &mut $field, $wire)?, )*
                        "timestamp" => read_once(&mut map, &mut timestamp, "timestamp")?,
                        "rawEvent" => read_once(&mut map, &mut raw_event, "rawEvent")?,
                        "metadata" => read_once(&mut map, &mut metadata, "metadata")?,
                        "type" if tagged => return Err(de::Error::duplicate_field("type")),
                        "type" => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                        _ => {
                            let value = map.next_value()?;
                            extra.insert(key.into_owned(), value);
                        }
                    }
                }
                let event = Self {
                    $( $field: present($field, $wire)?, )*
                    timestamp: timestamp.flatten(),
                    raw_event: raw_event.flatten(),
                    metadata: metadata.flatten(),
                    extra,
                };
                event.check_members().map_err(de::Error::custom)?;
                Ok(event)
            }

            fn write_members<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                $(
                    if !<$ty as Member>::is_absent(&self.$field) {
                        map.serialize_entry($wire, &self.$field)?;
                    }
                )*
                if let Some(timestamp) = &self.timestamp {
                    map.serialize_entry("timestamp", timestamp)?;
                }
                if let Some(raw) = self.raw_event.as_ref().filter(|raw| !raw.is_null()) {
                    map.serialize_entry("rawEvent", raw)?;
                }
                if let Some(metadata) = &self.metadata {
                    map.serialize_entry("metadata", metadata)?;
                }
                for (key, value) in &self.extra {
                    if key != "type" && !Self::MEMBERS.contains(&key.as_str()) {
                        map.serialize_entry(key, value)?;
                    }
                }
                Ok(())
            }
        }

        /// The members without the `type` tag (that is [`AgUiEvent`](super::AgUiEvent)'s).
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                self.write_members(&mut map)?;
                map.end()
            }
        }

        /// Reads the members, checked; a `type` member is ignored (it is the enum's).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(MembersVisitor::<Self>(PhantomData))
            }
        }
    };
}

/// A text message's role must be one of developer, system, assistant, user.
fn text_role(role: Option<Role>) -> Result<(), InvalidEvent> {
    match role {
        None | Some(Role::Developer | Role::System | Role::Assistant | Role::User) => Ok(()),
        Some(other) => Err(InvalidEvent::new(
            "role",
            format!(
                "must be one of developer, system, assistant, user, got {:?}",
                other.as_str()
            ),
        )),
    }
}

// ------------------------------------------------------------------------------------------
// Lifecycle

agui_event! {
    /// Payload of `RUN_STARTED`: a run begins. Run-scoped, so it has no `subagentRunId`.
    RunStarted {
        /// `threadId`: the conversation thread the run belongs to.
        thread_id: String = "threadId",
        /// `runId`: id of this run.
        run_id: String = "runId",
        /// `protocolVersion`: the AG-UI version the producer speaks (`"1.0"`).
        protocol_version: Option<String> = "protocolVersion",
        /// `parentRunId`: the run that spawned this one, if any.
        parent_run_id: Option<String> = "parentRunId",
        /// `input`: the run's input echoed back, a full `RunAgentInput` (`threadId`, `runId`,
        /// `messages`, ...), checked against its schema.
        input: Option<Value> = "input",
    }
    check(e) {
        match &e.input {
            Some(input) if !input.is_null() => checks::run_input(input, "input"),
            _ => Ok(()),
        }
    }
}

agui_event! {
    /// Payload of `RUN_FINISHED`: a run ended without failing.
    RunFinished {
        /// `threadId`: the conversation thread the run belongs to.
        thread_id: String = "threadId",
        /// `runId`: id of the finished run.
        run_id: String = "runId",
        /// `result`: the run's result, any JSON value but `null`.
        result: Option<Value> = "result",
        /// `outcome`: why the run ended: `{"type":"success"}` (with optional
        /// `pendingToolCallIds`), `{"type":"interrupt","interrupts":[...]}` or
        /// `{"type":"cancelled"}`; absent means success.
        outcome: Option<Value> = "outcome",
        /// `usage`: token counts, one entry per provider and model (`provider`, `model`,
        /// `inputTokens`, `outputTokens`, `totalTokens`, `reasoningTokens`,
        /// `cachedInputTokens`, `cacheWriteInputTokens`).
        usage: Option<Vec<Value>> = "usage",
    }
    check(e) {
        if let Some(outcome) = e.outcome.as_ref().filter(|o| !o.is_null()) {
            checks::run_outcome(outcome, "outcome")?;
        }
        match &e.usage {
            Some(usage) => checks::usage(usage, "usage"),
            None => Ok(()),
        }
    }
}

agui_event! {
    /// Payload of `RUN_ERROR`: a run failed.
    RunError {
        /// `message`: what went wrong.
        message: String = "message",
        /// `code`: a machine-readable error code, if any.
        code: Option<String> = "code",
        /// `usage`: token counts spent before the failure (as in [`RunFinished::usage`]).
        usage: Option<Vec<Value>> = "usage",
    }
    check(e) {
        match &e.usage {
            Some(usage) => checks::usage(usage, "usage"),
            None => Ok(()),
        }
    }
}

agui_event! {
    /// Payload of `STEP_STARTED`: a named step of a run begins.
    StepStarted {
        /// `stepName`: name of the step.
        step_name: String = "stepName",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `STEP_FINISHED`: a named step of a run ends.
    StepFinished {
        /// `stepName`: name of the step.
        step_name: String = "stepName",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

// ------------------------------------------------------------------------------------------
// Text messages

agui_event! {
    /// Payload of `TEXT_MESSAGE_START`: a streamed text message begins.
    TextMessageStart {
        /// `messageId`: id of the message.
        message_id: String = "messageId",
        /// `role`: its author, one of developer, system, assistant, user (a tool's output is
        /// `TOOL_CALL_RESULT`); absent means assistant. Written only when set.
        role: Option<Role> = "role",
        /// `name`: the author's name, if any.
        name: Option<String> = "name",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
    check(e) { text_role(e.role) }
}

agui_event! {
    /// Payload of `TEXT_MESSAGE_CONTENT`: the next fragment of a streamed text message.
    TextMessageContent {
        /// `messageId`: id of the message.
        message_id: String = "messageId",
        /// `delta`: the fragment.
        delta: String = "delta",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `TEXT_MESSAGE_END`: a streamed text message is complete.
    TextMessageEnd {
        /// `messageId`: id of the message.
        message_id: String = "messageId",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `TEXT_MESSAGE_CHUNK`: shorthand for a start, content and end; every member
    /// is optional, since a continuation chunk leaves out what has not changed.
    TextMessageChunk {
        /// `messageId`: id of the message.
        message_id: Option<String> = "messageId",
        /// `role`: its author, one of developer, system, assistant, user.
        role: Option<Role> = "role",
        /// `delta`: the next fragment.
        delta: Option<String> = "delta",
        /// `name`: the author's name.
        name: Option<String> = "name",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
    check(e) { text_role(e.role) }
}

// ------------------------------------------------------------------------------------------
// Tool calls

agui_event! {
    /// Payload of `TOOL_CALL_START`: a tool call begins.
    ToolCallStart {
        /// `toolCallId`: id of the call.
        tool_call_id: String = "toolCallId",
        /// `toolCallName`: the tool called.
        tool_call_name: String = "toolCallName",
        /// `parentMessageId`: the message the call belongs to, if any.
        parent_message_id: Option<String> = "parentMessageId",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `TOOL_CALL_ARGS`: the next fragment of a tool call's JSON arguments.
    ToolCallArgs {
        /// `toolCallId`: id of the call.
        tool_call_id: String = "toolCallId",
        /// `delta`: the fragment.
        delta: String = "delta",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `TOOL_CALL_END`: a tool call's arguments are complete.
    ToolCallEnd {
        /// `toolCallId`: id of the call.
        tool_call_id: String = "toolCallId",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `TOOL_CALL_CHUNK`: shorthand for a tool call's start, args and end; every
    /// member is optional.
    ToolCallChunk {
        /// `toolCallId`: id of the call.
        tool_call_id: Option<String> = "toolCallId",
        /// `toolCallName`: the tool called.
        tool_call_name: Option<String> = "toolCallName",
        /// `parentMessageId`: the message the call belongs to.
        parent_message_id: Option<String> = "parentMessageId",
        /// `delta`: the next fragment of the arguments.
        delta: Option<String> = "delta",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `TOOL_CALL_RESULT`: what a tool returned, as a new tool message.
    ToolCallResult {
        /// `messageId`: id of the tool message it creates.
        message_id: String = "messageId",
        /// `toolCallId`: the call it answers.
        tool_call_id: String = "toolCallId",
        /// `content`: the tool's output, a string or an array of content parts.
        content: ToolCallResultContent = "content",
        /// `role`: `"tool"` when present; any other role is refused.
        role: Option<Role> = "role",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
    check(e) {
        if let Some(role) = e.role.filter(|role| *role != Role::Tool) {
            return Err(InvalidEvent::new(
                "role",
                format!("must be \"tool\", got {:?}", role.as_str()),
            ));
        }
        match &e.content {
            ToolCallResultContent::Text(_) => Ok(()),
            ToolCallResultContent::Parts(parts) => {
                checks::content_parts(parts, &Path::Member("content"))
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// State, messages, activities

agui_event! {
    /// Payload of `STATE_SNAPSHOT`: the whole agent state.
    StateSnapshot {
        /// `snapshot`: the state, any JSON value (`null` included).
        snapshot: Value = "snapshot",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `STATE_DELTA`: an incremental state change.
    StateDelta {
        /// `delta`: JSON Patch (RFC 6902) operations, checked with the `json-patch` crate.
        delta: Vec<Value> = "delta",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
    check(e) { checks::json_patch(&e.delta, "delta") }
}

agui_event! {
    /// Payload of `MESSAGES_SNAPSHOT`: every message of the conversation. Conversation-wide,
    /// so it has no `subagentRunId`.
    MessagesSnapshot {
        /// `messages`: the messages, each checked against its role's schema (every message
        /// has an `id` and a `role`).
        messages: Vec<Value> = "messages",
    }
    check(e) { checks::messages(&e.messages, &Path::Member("messages")) }
}

agui_event! {
    /// Payload of `ACTIVITY_SNAPSHOT`: structured progress that is not conversation content.
    ActivitySnapshot {
        /// `messageId`: id of the activity message.
        message_id: String = "messageId",
        /// `activityType`: the kind of activity.
        activity_type: String = "activityType",
        /// `content`: the activity's content, an object.
        content: Map<String, Value> = "content",
        /// `replace`: whether it replaces the message's content.
        replace: Option<bool> = "replace",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `ACTIVITY_DELTA`: an incremental change to an activity's content.
    ActivityDelta {
        /// `messageId`: id of the activity message.
        message_id: String = "messageId",
        /// `activityType`: the kind of activity.
        activity_type: String = "activityType",
        /// `patch`: JSON Patch (RFC 6902) operations, checked with the `json-patch` crate.
        patch: Vec<Value> = "patch",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
    check(e) { checks::json_patch(&e.patch, "patch") }
}

// ------------------------------------------------------------------------------------------
// Reasoning

agui_event! {
    /// Payload of `REASONING_START`: a span of reasoning begins.
    ReasoningStart {
        /// `messageId`: id of the span.
        message_id: String = "messageId",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `REASONING_MESSAGE_START`: a streamed reasoning message begins.
    ReasoningMessageStart {
        /// `messageId`: id of the message.
        message_id: String = "messageId",
        /// `role`: always `"reasoning"`.
        role: ReasoningRole = "role",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `REASONING_MESSAGE_CONTENT`: the next fragment of a reasoning message.
    ReasoningMessageContent {
        /// `messageId`: id of the message.
        message_id: String = "messageId",
        /// `delta`: the fragment.
        delta: String = "delta",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `REASONING_MESSAGE_END`: a reasoning message is complete.
    ReasoningMessageEnd {
        /// `messageId`: id of the message.
        message_id: String = "messageId",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `REASONING_MESSAGE_CHUNK`: shorthand for a reasoning message's start,
    /// content and end; every member is optional.
    ReasoningMessageChunk {
        /// `messageId`: id of the message.
        message_id: Option<String> = "messageId",
        /// `delta`: the next fragment.
        delta: Option<String> = "delta",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `REASONING_END`: a span of reasoning ends.
    ReasoningEnd {
        /// `messageId`: id of the span.
        message_id: String = "messageId",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `REASONING_ENCRYPTED_VALUE`: a provider's opaque, encrypted reasoning
    /// artefact, stored and returned on a later turn.
    ReasoningEncryptedValue {
        /// `subtype`: whether it belongs to a message or a tool call.
        subtype: EncryptedValueSubtype = "subtype",
        /// `entityId`: id of the message or tool call.
        entity_id: String = "entityId",
        /// `encryptedValue`: the artefact.
        encrypted_value: String = "encryptedValue",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

// ------------------------------------------------------------------------------------------
// Subagents

agui_event! {
    /// Payload of `SUBAGENT_STARTED`: a subagent invocation begins.
    SubagentStarted {
        /// `subagentRunId`: the invocation's id (required here: it names the invocation).
        subagent_run_id: String = "subagentRunId",
        /// `name`: the subagent's name.
        name: String = "name",
        /// `description`: what the subagent does.
        description: Option<String> = "description",
        /// `parentSubagentRunId`: the enclosing subagent invocation, if any.
        parent_subagent_run_id: Option<String> = "parentSubagentRunId",
        /// `parentToolCallId`: the tool call that started it, if any.
        parent_tool_call_id: Option<String> = "parentToolCallId",
        /// `parentMessageId`: the message that started it, if any.
        parent_message_id: Option<String> = "parentMessageId",
    }
}

agui_event! {
    /// Payload of `SUBAGENT_FINISHED`: a subagent invocation's segment of the run ends.
    SubagentFinished {
        /// `subagentRunId`: the invocation's id.
        subagent_run_id: String = "subagentRunId",
        /// `result`: its result, any JSON value but `null`.
        result: Option<Value> = "result",
        /// `outcome`: `{"type":"success"}` or `{"type":"suspended","interruptIds":[...]}`.
        outcome: Option<Value> = "outcome",
    }
    check(e) {
        match e.outcome.as_ref().filter(|o| !o.is_null()) {
            Some(outcome) => checks::subagent_outcome(outcome, "outcome"),
            None => Ok(()),
        }
    }
}

agui_event! {
    /// Payload of `SUBAGENT_ERROR`: a subagent invocation failed (the run may go on).
    SubagentError {
        /// `subagentRunId`: the invocation's id.
        subagent_run_id: String = "subagentRunId",
        /// `message`: what went wrong.
        message: String = "message",
        /// `code`: a machine-readable error code, if any.
        code: Option<String> = "code",
    }
}

// ------------------------------------------------------------------------------------------
// Extension points

agui_event! {
    /// Payload of `RAW`: a provider-native event passed through untranslated.
    Raw {
        /// `event`: the external event, any JSON value.
        event: Value = "event",
        /// `source`: the external system, if known.
        source: Option<String> = "source",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}

agui_event! {
    /// Payload of `CUSTOM`: an application's own event, `{name, value}`. The payloads of the
    /// crate sse-hub replaces travel here unchanged (`artifact`, `execution_step`,
    /// `skill_loaded`, ...).
    Custom {
        /// `name`: the application's event name.
        name: String = "name",
        /// `value`: its payload, any JSON value (`null` included).
        value: Value = "value",
        /// `subagentRunId`: the subagent invocation this belongs to, if any.
        subagent_run_id: Option<String> = "subagentRunId",
    }
}
