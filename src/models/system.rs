//! System events.
//!
//! [`SystemEvent`]s are emitted by sse-hub itself rather than by an agent:
//! context (conversation/workspace) lifecycle, the initial `CONNECTED`
//! greeting and keep-alive heartbeats.
//!
//! JSON uses a `"type"` tag in `SCREAMING_SNAKE_CASE`, `camelCase` members
//! and an optional `timestamp` (milliseconds) on every event.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An sse-hub system event, tagged by `"type"` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SystemEvent {
    /// `CONTEXT_CREATED`: a context was created.
    ContextCreated(ContextCreated),
    /// `CONTEXT_UPDATED`: a context was changed.
    ContextUpdated(ContextUpdated),
    /// `CONTEXT_DELETED`: a context was deleted.
    ContextDeleted(ContextDeleted),
    /// `CONTEXTS_SNAPSHOT`: the complete list of contexts.
    ContextsSnapshot(ContextsSnapshot),
    /// `CONNECTED`: the SSE connection is established.
    Connected(Connected),
    /// `HEARTBEAT`: keep-alive.
    Heartbeat(Heartbeat),
}

event_enum!(SystemEvent {
    ContextCreated => "CONTEXT_CREATED",
    ContextUpdated => "CONTEXT_UPDATED",
    ContextDeleted => "CONTEXT_DELETED",
    ContextsSnapshot => "CONTEXTS_SNAPSHOT",
    Connected => "CONNECTED",
    Heartbeat => "HEARTBEAT",
});

unknown_members!(extra: ContextCreated, ContextUpdated, ContextDeleted, ContextsSnapshot, Connected, Heartbeat);

/// Payload of `CONTEXT_CREATED`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextCreated {
    /// `contextId`: id of the new context.
    pub context_id: String,
    /// `name`: display name of the context, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `CONTEXT_UPDATED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextUpdated {
    /// `contextId`: id of the changed context.
    pub context_id: String,
    /// `name`: the context's (new) display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `changes`: free-form description of what changed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `CONTEXT_DELETED`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextDeleted {
    /// `contextId`: id of the deleted context.
    pub context_id: String,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `CONTEXTS_SNAPSHOT`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextsSnapshot {
    /// `contexts`: every context, as free-form objects.
    pub contexts: Vec<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `CONNECTED`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    /// `connectionId`: id the hub assigned to this SSE connection, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `HEARTBEAT`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
