//! Reasoning: REASONING_*.

use super::*;

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
