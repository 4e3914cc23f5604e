//! Extension points: RAW and CUSTOM.

use super::*;

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
