//! The AG-UI model as it was before AG-UI 1.0 (sse-hub at be3a07c, `src/models/agui.rs`),
//! kept here unchanged but for its docs and helper impls, so that `benches/router.rs` measures
//! the typed round trip of today's model and of the one it replaced side by side, in one run.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An AG-UI protocol event, tagged by `"type"` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgUiEvent {
    /// `RUN_STARTED`: an agent run has begun.
    RunStarted(RunStarted),
    /// `RUN_FINISHED`: an agent run has completed successfully.
    RunFinished(RunFinished),
    /// `RUN_ERROR`: an agent run has failed.
    RunError(RunError),
    /// `STEP_STARTED`: a named step within a run has begun.
    StepStarted(StepStarted),
    /// `STEP_FINISHED`: a named step within a run has completed.
    StepFinished(StepFinished),
    /// `TEXT_MESSAGE_START`: a streamed text message begins.
    TextMessageStart(TextMessageStart),
    /// `TEXT_MESSAGE_CONTENT`: a chunk of a streamed text message.
    TextMessageContent(TextMessageContent),
    /// `TEXT_MESSAGE_END`: a streamed text message is complete.
    TextMessageEnd(TextMessageEnd),
    /// `TOOL_CALL_START`: a streamed tool call begins.
    ToolCallStart(ToolCallStart),
    /// `TOOL_CALL_ARGS`: a chunk of a tool call's JSON arguments.
    ToolCallArgs(ToolCallArgs),
    /// `TOOL_CALL_END`: a streamed tool call is complete.
    ToolCallEnd(ToolCallEnd),
    /// `TOOL_CALL_RESULT`: the result of executing a tool call.
    ToolCallResult(ToolCallResult),
    /// `STATE_SNAPSHOT`: the complete agent state.
    StateSnapshot(StateSnapshot),
    /// `STATE_DELTA`: an incremental state change as JSON Patch operations.
    StateDelta(StateDelta),
    /// `MESSAGES_SNAPSHOT`: the complete conversation history.
    MessagesSnapshot(MessagesSnapshot),
    /// `CUSTOM`: an application-defined event.
    Custom(Custom),
    /// `RAW`: an event passed through from an external system.
    Raw(Raw),
}

/// The role of a message's author, serialised in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `"developer"`: developer/system-prompt author.
    Developer,
    /// `"system"`: system message.
    System,
    /// `"assistant"`: the agent (the default).
    #[default]
    Assistant,
    /// `"user"`: the end user.
    User,
    /// `"tool"`: a tool result.
    Tool,
}

/// Payload of `RUN_STARTED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStarted {
    /// `threadId`: the conversation thread the run belongs to.
    pub thread_id: String,
    /// `runId`: unique id of this run.
    pub run_id: String,
    /// `parentRunId`: the run that spawned this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// `input`: the run's input (an AG-UI `RunAgentInput`), if echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `RUN_FINISHED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFinished {
    /// `threadId`: the conversation thread the run belongs to.
    pub thread_id: String,
    /// `runId`: id of the finished run.
    pub run_id: String,
    /// `result`: the run's result, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `RUN_ERROR`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunError {
    /// `message`: human-readable error description.
    pub message: String,
    /// `code`: machine-readable error code, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `STEP_STARTED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStarted {
    /// `stepName`: name of the step.
    pub step_name: String,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `STEP_FINISHED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepFinished {
    /// `stepName`: name of the step.
    pub step_name: String,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `TEXT_MESSAGE_START`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextMessageStart {
    /// `messageId`: id of the message being streamed.
    pub message_id: String,
    /// `role`: author of the message; `"assistant"` when absent in input.
    /// Always written on output.
    #[serde(default)]
    pub role: Role,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `TEXT_MESSAGE_CONTENT`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextMessageContent {
    /// `messageId`: id of the message being streamed.
    pub message_id: String,
    /// `delta`: the next chunk of text.
    pub delta: String,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `TEXT_MESSAGE_END`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextMessageEnd {
    /// `messageId`: id of the completed message.
    pub message_id: String,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `TOOL_CALL_START`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallStart {
    /// `toolCallId`: id of the tool call.
    pub tool_call_id: String,
    /// `toolCallName`: name of the tool being called.
    pub tool_call_name: String,
    /// `parentMessageId`: the message this tool call belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_message_id: Option<String>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `TOOL_CALL_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallArgs {
    /// `toolCallId`: id of the tool call.
    pub tool_call_id: String,
    /// `delta`: the next chunk of the JSON-encoded arguments.
    pub delta: String,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `TOOL_CALL_END`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallEnd {
    /// `toolCallId`: id of the completed tool call.
    pub tool_call_id: String,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `TOOL_CALL_RESULT`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallResult {
    /// `messageId`: id of the conversation message holding the result.
    pub message_id: String,
    /// `toolCallId`: id of the tool call this result answers.
    pub tool_call_id: String,
    /// `content`: the tool's output.
    pub content: String,
    /// `role`: author role of the result message (normally `"tool"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `STATE_SNAPSHOT`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateSnapshot {
    /// `snapshot`: the complete agent state.
    pub snapshot: Value,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `STATE_DELTA`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDelta {
    /// `delta`: JSON Patch (RFC 6902) operations to apply to the state.
    pub delta: Vec<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `MESSAGES_SNAPSHOT`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesSnapshot {
    /// `messages`: the complete list of AG-UI messages.
    pub messages: Vec<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `CUSTOM`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Custom {
    /// `name`: application-defined event name.
    pub name: String,
    /// `value`: application-defined payload.
    pub value: Value,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}

/// Payload of `RAW`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Raw {
    /// `event`: the external event, unchanged.
    pub event: Value,
    /// `source`: name of the external system, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `rawEvent`: the original upstream event, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_event: Option<Value>,
}
