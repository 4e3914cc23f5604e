//! Text messages: TEXT_MESSAGE_*.

use super::*;

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
