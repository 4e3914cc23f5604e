//! State, messages and activities: snapshots and JSON Patch deltas.

use super::*;

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
