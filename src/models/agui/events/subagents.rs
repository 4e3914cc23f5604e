//! Sub-agents: SUBAGENT_*.

use super::*;

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
