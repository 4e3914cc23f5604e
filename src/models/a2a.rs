//! A2A (Agent2Agent) protocol events.
//!
//! [A2A](https://a2a-protocol.org) is the open protocol agents use to
//! delegate work to each other as *tasks* within a *context*. [`A2AEvent`]
//! carries task lifecycle changes, artifacts, agent messages and raw
//! JSON-RPC responses to the browser so it can follow that exchange.
//!
//! JSON uses a `"type"` tag in `SCREAMING_SNAKE_CASE`, `camelCase` members
//! (`taskId`, `contextId`, `lastChunk`, ...) and an optional `timestamp`
//! (milliseconds) on every event. A2A objects (`Task`, `Message`,
//! `Artifact`, JSON-RPC ids, results and errors) are carried as free-form
//! [`serde_json::Value`]s. Task states use the A2A protocol's kebab-case
//! names (see [`TaskState`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An A2A protocol event, tagged by `"type"` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum A2AEvent {
    /// `TASK_SUBMITTED`: a task has been created.
    TaskSubmitted(TaskSubmitted),
    /// `TASK_STATUS_UPDATE`: a task's state has changed.
    TaskStatusUpdate(TaskStatusUpdate),
    /// `ARTIFACT_CREATED`: a task produced a new artifact.
    ArtifactCreated(ArtifactCreated),
    /// `ARTIFACT_UPDATED`: an existing artifact was extended or replaced.
    ArtifactUpdated(ArtifactUpdated),
    /// `AGENT_MESSAGE`: an agent sent a message.
    AgentMessage(AgentMessage),
    /// `INPUT_REQUIRED`: a task is waiting for user input.
    InputRequired(InputRequired),
    /// `AUTH_REQUIRED`: a task is waiting for authentication.
    AuthRequired(AuthRequired),
    /// `JSON_RPC_RESPONSE`: a successful JSON-RPC response.
    JsonRpcResponse(JsonRpcResponse),
    /// `JSON_RPC_ERROR`: a JSON-RPC error response.
    JsonRpcError(JsonRpcError),
}

event_enum!(A2AEvent {
    TaskSubmitted => "TASK_SUBMITTED",
    TaskStatusUpdate => "TASK_STATUS_UPDATE",
    ArtifactCreated => "ARTIFACT_CREATED",
    ArtifactUpdated => "ARTIFACT_UPDATED",
    AgentMessage => "AGENT_MESSAGE",
    InputRequired => "INPUT_REQUIRED",
    AuthRequired => "AUTH_REQUIRED",
    JsonRpcResponse => "JSON_RPC_RESPONSE",
    JsonRpcError => "JSON_RPC_ERROR",
});

unknown_members!(extra: TaskSubmitted, TaskStatusUpdate, ArtifactCreated, ArtifactUpdated, AgentMessage, InputRequired, AuthRequired, JsonRpcResponse, JsonRpcError);

/// The lifecycle state of an A2A task, serialised in kebab-case as in the
/// A2A protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// `"submitted"`: received but not yet started.
    Submitted,
    /// `"working"`: in progress.
    Working,
    /// `"input-required"`: paused, waiting for user input.
    InputRequired,
    /// `"completed"`: finished successfully (terminal).
    Completed,
    /// `"canceled"`: canceled (terminal).
    Canceled,
    /// `"failed"`: finished with an error (terminal).
    Failed,
    /// `"rejected"`: refused by the agent (terminal).
    Rejected,
    /// `"auth-required"`: paused, waiting for authentication.
    AuthRequired,
    /// `"unknown"`: state cannot be determined.
    Unknown,
}

/// Payload of `TASK_SUBMITTED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSubmitted {
    /// `taskId`: id of the task.
    pub task_id: String,
    /// `contextId`: id of the context the task belongs to.
    pub context_id: String,
    /// `task`: the full A2A `Task` object, if available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `TASK_STATUS_UPDATE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatusUpdate {
    /// `taskId`: id of the task.
    pub task_id: String,
    /// `contextId`: id of the context the task belongs to.
    pub context_id: String,
    /// `state`: the task's new state.
    pub state: TaskState,
    /// `message`: an A2A `Message` accompanying the status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Value>,
    /// `final`: whether this is the last event for the task.
    #[serde(rename = "final", default, skip_serializing_if = "Option::is_none")]
    pub is_final: Option<bool>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `ARTIFACT_CREATED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactCreated {
    /// `taskId`: id of the task that produced the artifact.
    pub task_id: String,
    /// `contextId`: id of the context the task belongs to.
    pub context_id: String,
    /// `artifact`: the A2A `Artifact` object.
    pub artifact: Value,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `ARTIFACT_UPDATED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactUpdated {
    /// `taskId`: id of the task that produced the artifact.
    pub task_id: String,
    /// `contextId`: id of the context the task belongs to.
    pub context_id: String,
    /// `artifact`: the A2A `Artifact` object (or chunk of it).
    pub artifact: Value,
    /// `append`: whether to append to the previously sent artifact rather
    /// than replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<bool>,
    /// `lastChunk`: whether this is the artifact's final chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_chunk: Option<bool>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `AGENT_MESSAGE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentMessage {
    /// `contextId`: id of the context the message belongs to.
    pub context_id: String,
    /// `taskId`: id of the task the message relates to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// `message`: the A2A `Message` object.
    pub message: Value,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `INPUT_REQUIRED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputRequired {
    /// `taskId`: id of the waiting task.
    pub task_id: String,
    /// `contextId`: id of the context the task belongs to.
    pub context_id: String,
    /// `message`: an A2A `Message` describing the input needed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `AUTH_REQUIRED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRequired {
    /// `taskId`: id of the waiting task.
    pub task_id: String,
    /// `contextId`: id of the context the task belongs to.
    pub context_id: String,
    /// `message`: an A2A `Message` describing the authentication needed,
    /// if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `JSON_RPC_RESPONSE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonRpcResponse {
    /// `id`: the JSON-RPC request id (string, number or null).
    pub id: Value,
    /// `result`: the JSON-RPC result.
    pub result: Value,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `JSON_RPC_ERROR`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonRpcError {
    /// `id`: the JSON-RPC request id (string, number or null).
    pub id: Value,
    /// `error`: the JSON-RPC error object (`code`, `message`, `data?`).
    pub error: Value,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
