//! Tool calls: TOOL_CALL_*.

use super::*;

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
