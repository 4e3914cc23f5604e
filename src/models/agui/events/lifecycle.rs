//! Run lifecycle: RUN_*, STEP_*.

use super::*;

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
