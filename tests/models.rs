//! Serialisation tests for `sse_hub::models`, driven by the JSON fixtures in
//! `tests/fixtures/`.

use std::fmt::Debug;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sse_hub::models::a2a::{self, A2AEvent, TaskState};
use sse_hub::models::agui::{self, AgUiEvent, Role};
use sse_hub::models::analytics::{self, AnalyticsEvent};
use sse_hub::models::context::{ContextEvent, Protocol};
use sse_hub::models::system::{self, SystemEvent};

const AGUI_TEXT_MESSAGE_CONTENT: &str = include_str!("fixtures/agui_text_message_content.json");
const AGUI_RUN_STARTED: &str = include_str!("fixtures/agui_run_started.json");
const AGUI_ALL: &str = include_str!("fixtures/agui_all.json");
const AGUI_1_0_ALL: &str = include_str!("fixtures/agui_1_0_all.json");
const A2A_TASK_STATUS_UPDATE: &str = include_str!("fixtures/a2a_task_status_update.json");
const A2A_ALL: &str = include_str!("fixtures/a2a_all.json");
const SYSTEM_CONTEXT_CREATED: &str = include_str!("fixtures/system_context_created.json");
const SYSTEM_ALL: &str = include_str!("fixtures/system_all.json");
const ANALYTICS_PAGE_VIEW: &str = include_str!("fixtures/analytics_page_view.json");
const ANALYTICS_ALL: &str = include_str!("fixtures/analytics_all.json");
const CONTEXT_AGUI: &str = include_str!("fixtures/context_agui.json");
const CONTEXT_ALL: &str = include_str!("fixtures/context_all.json");

/// Every AG-UI 1.0 `type` with its required members (as `@ag-ui/core` 1.0.0
/// defines them); all other members of the maximal fixture are optional.
const AGUI_REQUIRED: &[(&str, &[&str])] = &[
    ("RUN_STARTED", &["threadId", "runId"]),
    ("RUN_FINISHED", &["threadId", "runId"]),
    ("RUN_ERROR", &["message"]),
    ("STEP_STARTED", &["stepName"]),
    ("STEP_FINISHED", &["stepName"]),
    ("TEXT_MESSAGE_START", &["messageId"]),
    ("TEXT_MESSAGE_CONTENT", &["messageId", "delta"]),
    ("TEXT_MESSAGE_END", &["messageId"]),
    ("TEXT_MESSAGE_CHUNK", &[]),
    ("TOOL_CALL_START", &["toolCallId", "toolCallName"]),
    ("TOOL_CALL_ARGS", &["toolCallId", "delta"]),
    ("TOOL_CALL_END", &["toolCallId"]),
    ("TOOL_CALL_CHUNK", &[]),
    ("TOOL_CALL_RESULT", &["messageId", "toolCallId", "content"]),
    ("STATE_SNAPSHOT", &["snapshot"]),
    ("STATE_DELTA", &["delta"]),
    ("MESSAGES_SNAPSHOT", &["messages"]),
    (
        "ACTIVITY_SNAPSHOT",
        &["messageId", "activityType", "content"],
    ),
    ("ACTIVITY_DELTA", &["messageId", "activityType", "patch"]),
    ("REASONING_START", &["messageId"]),
    ("REASONING_MESSAGE_START", &["messageId", "role"]),
    ("REASONING_MESSAGE_CONTENT", &["messageId", "delta"]),
    ("REASONING_MESSAGE_END", &["messageId"]),
    ("REASONING_MESSAGE_CHUNK", &[]),
    ("REASONING_END", &["messageId"]),
    (
        "REASONING_ENCRYPTED_VALUE",
        &["subtype", "entityId", "encryptedValue"],
    ),
    ("SUBAGENT_STARTED", &["subagentRunId", "name"]),
    ("SUBAGENT_FINISHED", &["subagentRunId"]),
    ("SUBAGENT_ERROR", &["subagentRunId", "message"]),
    ("RAW", &["event"]),
    ("CUSTOM", &["name", "value"]),
];

/// Every A2A `type` with its required members.
const A2A_REQUIRED: &[(&str, &[&str])] = &[
    ("TASK_SUBMITTED", &["taskId", "contextId"]),
    ("TASK_STATUS_UPDATE", &["taskId", "contextId", "state"]),
    ("ARTIFACT_CREATED", &["taskId", "contextId", "artifact"]),
    ("ARTIFACT_UPDATED", &["taskId", "contextId", "artifact"]),
    ("AGENT_MESSAGE", &["contextId", "message"]),
    ("INPUT_REQUIRED", &["taskId", "contextId"]),
    ("AUTH_REQUIRED", &["taskId", "contextId"]),
    ("JSON_RPC_RESPONSE", &["id", "result"]),
    ("JSON_RPC_ERROR", &["id", "error"]),
];

/// Every system `type` with its required members.
const SYSTEM_REQUIRED: &[(&str, &[&str])] = &[
    ("CONTEXT_CREATED", &["contextId"]),
    ("CONTEXT_UPDATED", &["contextId"]),
    ("CONTEXT_DELETED", &["contextId"]),
    ("CONTEXTS_SNAPSHOT", &["contexts"]),
    ("CONNECTED", &[]),
    ("HEARTBEAT", &[]),
];

/// Every analytics `type` with its required members (snake_case).
const ANALYTICS_REQUIRED: &[(&str, &[&str])] = &[
    ("SESSION_STARTED", &["session_id"]),
    ("SESSION_ENDED", &["session_id"]),
    ("PAGE_VIEW", &["session_id", "page"]),
    ("ENGAGEMENT_UPDATE", &["session_id"]),
    ("REAL_TIME_STATS", &[]),
    ("HEARTBEAT", &[]),
];

fn types_of(table: &[(&'static str, &[&str])]) -> Vec<&'static str> {
    table.iter().map(|(t, _)| *t).collect()
}

// ---------------------------------------------------------------------------
// helpers

fn value_of(doc: &str) -> Value {
    serde_json::from_str(doc).expect("fixture is valid JSON")
}

fn to_value<T: Serialize>(event: &T) -> Value {
    serde_json::to_value(event).expect("event serialises")
}

/// Parses a single-document fixture, checks it equals `expected`, and checks
/// that it re-serialises to exactly the fixture's JSON.
fn assert_minimal<T>(doc: &str, expected: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let parsed: T = serde_json::from_str(doc).expect("fixture deserialises");
    assert_eq!(&parsed, expected);
    assert_eq!(to_value(&parsed), value_of(doc), "round trip of {doc}");
    assert_eq!(
        to_value(expected),
        value_of(doc),
        "serialisation of {expected:?}"
    );
}

/// Parses an array fixture element by element and checks, for every
/// element:
///
/// * it round-trips to identical JSON (so every member name is known to the
///   model) and `event_type` agrees with the `"type"` tag;
/// * an unknown extra member is kept: it is written back as it came;
/// * removing a required member (per `required`) is an error naming it, and
///   removing any other member is accepted and omitted on output
///   (`default_of` gives the value written for members with a default).
///
/// Also checks that the fixture covers every type in `required` exactly once.
fn assert_rich<T>(
    doc: &str,
    required: &[(&'static str, &[&str])],
    event_type: fn(&T) -> &str,
    default_of: fn(&str, &str) -> Option<Value>,
) -> Vec<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let docs: Vec<Value> = serde_json::from_str(doc).expect("fixture is a JSON array");
    let mut events = Vec::new();
    for element in &docs {
        let text = element.to_string();
        let event: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&to_value(&event), element, "round trip of {text}");
        let tag = event_type(&event);
        assert_eq!(Some(tag), element["type"].as_str(), "event_type of {text}");
        let again: T = serde_json::from_value(to_value(&event)).expect("re-deserialises");
        assert_eq!(again, event);

        let mut extra = element.clone();
        extra["x-unknown-member"] = json!({"kept": [1, null, "x"]});
        let parsed: T = serde_json::from_str(&extra.to_string())
            .unwrap_or_else(|e| panic!("extra member rejected in {text}: {e}"));
        assert_eq!(to_value(&parsed), extra, "extra member lost in {text}");

        let (_, required_keys) = required
            .iter()
            .find(|(t, _)| *t == tag)
            .unwrap_or_else(|| panic!("{tag} missing from the required-members table"));
        let members = element.as_object().unwrap();
        for key in *required_keys {
            assert!(
                members.contains_key(*key),
                "fixture lacks required `{key}`: {text}"
            );
        }
        for key in members.keys().filter(|k| *k != "type") {
            let mut without = element.clone();
            without.as_object_mut().unwrap().remove(key);
            if required_keys.contains(&key.as_str()) {
                assert_missing_field::<T>(without, key);
            } else {
                let parsed: T = serde_json::from_value(without.clone()).unwrap_or_else(|e| {
                    panic!("optional `{key}` treated as required in {text}: {e}")
                });
                if let Some(default) = default_of(tag, key) {
                    without[key.as_str()] = default;
                }
                assert_eq!(to_value(&parsed), without, "without `{key}` in {text}");
            }
        }
        events.push(event);
    }
    let mut seen: Vec<String> = events.iter().map(|e| event_type(e).to_owned()).collect();
    let mut expected = types_of(required);
    seen.sort_unstable();
    expected.sort_unstable();
    assert_eq!(
        seen, expected,
        "fixture must cover every variant exactly once"
    );
    events
}

fn no_defaults(_: &str, _: &str) -> Option<Value> {
    None
}

fn error_of<T: DeserializeOwned + Debug>(doc: Value) -> String {
    match serde_json::from_value::<T>(doc.clone()) {
        Ok(v) => panic!("expected an error for {doc}, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Also goes through the string parser, which reports errors differently
/// from `from_value`.
fn str_error_of<T: DeserializeOwned + Debug>(doc: Value) -> String {
    let text = doc.to_string();
    match serde_json::from_str::<T>(&text) {
        Ok(v) => panic!("expected an error for {text}, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_missing_field<T: DeserializeOwned + Debug>(doc: Value, field: &str) {
    for err in [error_of::<T>(doc.clone()), str_error_of::<T>(doc.clone())] {
        assert!(
            err.contains(&format!("missing field `{field}`")),
            "error for {doc} should name `{field}`: {err}"
        );
    }
}

fn assert_wrong_type<T: DeserializeOwned + Debug>(doc: Value) {
    for err in [error_of::<T>(doc.clone()), str_error_of::<T>(doc.clone())] {
        assert!(
            err.contains("invalid type")
                || err.contains("invalid value")
                || err.contains("unknown variant")
                || err.contains("invalid `"),
            "unexpected error kind for {doc}: {err}"
        );
    }
}

fn assert_unknown_type<T: DeserializeOwned + Debug>(doc: Value) {
    for err in [error_of::<T>(doc.clone()), str_error_of::<T>(doc.clone())] {
        assert!(err.contains("unknown variant"), "error for {doc}: {err}");
    }
}

// ---------------------------------------------------------------------------
// minimal fixtures: exact values and exact round trips

#[test]
fn agui_text_message_content_minimal() {
    let expected = AgUiEvent::TextMessageContent(agui::TextMessageContent {
        message_id: "m-1".into(),
        delta: "Hello".into(),
        timestamp: None,
        raw_event: None,
        ..Default::default()
    });
    assert_minimal(AGUI_TEXT_MESSAGE_CONTENT, &expected);
    assert_eq!(expected.event_type(), "TEXT_MESSAGE_CONTENT");
    assert_eq!(expected.timestamp(), None);
    assert_eq!(expected.raw_event(), None);
}

#[test]
fn agui_run_started_minimal() {
    let expected = AgUiEvent::RunStarted(agui::RunStarted {
        thread_id: "t-1".into(),
        run_id: "r-1".into(),
        parent_run_id: None,
        input: None,
        timestamp: None,
        raw_event: None,
        ..Default::default()
    });
    assert_minimal(AGUI_RUN_STARTED, &expected);
    assert_eq!(expected.event_type(), "RUN_STARTED");
}

#[test]
fn a2a_task_status_update_minimal() {
    let expected = A2AEvent::TaskStatusUpdate(a2a::TaskStatusUpdate {
        task_id: "t-1".into(),
        context_id: "c-1".into(),
        state: TaskState::Working,
        message: None,
        is_final: None,
        timestamp: None,
        extra: Default::default(),
    });
    assert_minimal(A2A_TASK_STATUS_UPDATE, &expected);
    assert_eq!(expected.event_type(), "TASK_STATUS_UPDATE");
}

#[test]
fn system_context_created_minimal() {
    let expected = SystemEvent::ContextCreated(system::ContextCreated {
        context_id: "c-1".into(),
        name: Some("Demo".into()),
        timestamp: None,
        extra: Default::default(),
    });
    assert_minimal(SYSTEM_CONTEXT_CREATED, &expected);
    assert_eq!(expected.event_type(), "CONTEXT_CREATED");
}

#[test]
fn analytics_page_view_minimal() {
    let expected = AnalyticsEvent::PageView(analytics::PageView {
        session_id: "s-1".into(),
        page: "/home".into(),
        title: None,
        referrer: None,
        timestamp: None,
        extra: Default::default(),
    });
    assert_minimal(ANALYTICS_PAGE_VIEW, &expected);
    assert_eq!(expected.event_type(), "PAGE_VIEW");
}

// ---------------------------------------------------------------------------
// rich fixtures: every variant, optional fields filled

#[test]
fn agui_1_0_all_variants_round_trip() {
    let docs: Vec<Value> = serde_json::from_str(AGUI_1_0_ALL).unwrap();
    let events = assert_rich(
        AGUI_1_0_ALL,
        AGUI_REQUIRED,
        AgUiEvent::event_type,
        no_defaults,
    );
    for (event, doc) in events.iter().zip(&docs) {
        // Every element fills the AG-UI base members; the accessors must see them.
        assert!(
            doc["timestamp"].is_i64() && doc.get("rawEvent").is_some(),
            "{doc}"
        );
        assert_eq!(event.timestamp(), doc["timestamp"].as_i64(), "{doc}");
        assert_eq!(event.raw_event(), doc.get("rawEvent"), "{doc}");
        assert_eq!(event.metadata(), doc["metadata"].as_object(), "{doc}");
        assert!(event.extra().is_empty(), "every member is known: {doc}");
        assert_eq!(event.validate(), Ok(()), "{doc}");
    }
    let types: Vec<&str> = events.iter().map(AgUiEvent::event_type).collect();
    assert_eq!(
        types,
        AgUiEvent::TYPES,
        "the fixture follows the model's order"
    );
}

#[test]
fn agui_all_pre_1_0_fixture_still_round_trips() {
    let docs: Vec<Value> = serde_json::from_str(AGUI_ALL).unwrap();
    for doc in &docs {
        let event: AgUiEvent = serde_json::from_str(&doc.to_string()).unwrap();
        assert!(!matches!(event, AgUiEvent::Unknown(_)), "{doc}");
        assert_eq!(&to_value(&event), doc);
    }
}

#[test]
fn agui_all_spot_checks() {
    let events: Vec<AgUiEvent> = serde_json::from_str(AGUI_ALL).unwrap();
    let start = events
        .iter()
        .find_map(|e| match e {
            AgUiEvent::RunStarted(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(start.parent_run_id.as_deref(), Some("r-1"));
    assert_eq!(start.input.as_ref().unwrap()["threadId"], "t-1");

    let result = events
        .iter()
        .find_map(|e| match e {
            AgUiEvent::ToolCallResult(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(result.role, Some(Role::Tool));
    assert_eq!(result.content, "{\"tempC\":21}".into());

    let delta = events
        .iter()
        .find_map(|e| match e {
            AgUiEvent::StateDelta(d) => Some(d),
            _ => None,
        })
        .unwrap();
    assert_eq!(delta.delta.len(), 2);
    assert_eq!(delta.delta[0]["op"], "replace");
}

#[test]
fn a2a_all_variants_round_trip() {
    let docs: Vec<Value> = serde_json::from_str(A2A_ALL).unwrap();
    let events = assert_rich(A2A_ALL, A2A_REQUIRED, A2AEvent::event_type, no_defaults);
    for (event, doc) in events.iter().zip(&docs) {
        assert!(doc["timestamp"].is_i64(), "{doc}");
        assert_eq!(event.timestamp(), doc["timestamp"].as_i64(), "{doc}");
    }
    let update = events
        .iter()
        .find_map(|e| match e {
            A2AEvent::TaskStatusUpdate(u) => Some(u),
            _ => None,
        })
        .unwrap();
    assert_eq!(update.state, TaskState::Completed);
    assert_eq!(update.is_final, Some(true));
    let artifact = events
        .iter()
        .find_map(|e| match e {
            A2AEvent::ArtifactUpdated(a) => Some(a),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (artifact.append, artifact.last_chunk),
        (Some(true), Some(false))
    );
}

#[test]
fn system_all_variants_round_trip() {
    let docs: Vec<Value> = serde_json::from_str(SYSTEM_ALL).unwrap();
    let events = assert_rich(
        SYSTEM_ALL,
        SYSTEM_REQUIRED,
        SystemEvent::event_type,
        no_defaults,
    );
    for (event, doc) in events.iter().zip(&docs) {
        assert!(doc["timestamp"].is_i64(), "{doc}");
        assert_eq!(event.timestamp(), doc["timestamp"].as_i64(), "{doc}");
    }
}

#[test]
fn analytics_all_variants_round_trip() {
    let docs: Vec<Value> = serde_json::from_str(ANALYTICS_ALL).unwrap();
    let events = assert_rich(
        ANALYTICS_ALL,
        ANALYTICS_REQUIRED,
        AnalyticsEvent::event_type,
        no_defaults,
    );
    for (event, doc) in events.iter().zip(&docs) {
        assert!(doc["timestamp"].is_i64(), "{doc}");
        assert_eq!(event.timestamp(), doc["timestamp"].as_i64(), "{doc}");
    }
    let engagement = events
        .iter()
        .find_map(|e| match e {
            AnalyticsEvent::EngagementUpdate(u) => Some(u),
            _ => None,
        })
        .unwrap();
    assert_eq!(engagement.scroll_depth, Some(72.5));
    assert_eq!(engagement.clicks, Some(4));
}

// ---------------------------------------------------------------------------
// event_type() agrees with serde's tag for every variant, independent of the
// fixtures

fn assert_tag_matches<T: Serialize>(event: &T, event_type: &str) {
    assert_eq!(to_value(event)["type"], event_type);
}

#[test]
fn agui_event_type_matches_serde_tag() {
    let events: Vec<AgUiEvent> = vec![
        agui::RunStarted::default().into(),
        agui::RunFinished::default().into(),
        agui::RunError::default().into(),
        agui::StepStarted::default().into(),
        agui::StepFinished::default().into(),
        agui::TextMessageStart::default().into(),
        agui::TextMessageContent::default().into(),
        agui::TextMessageEnd::default().into(),
        agui::ToolCallStart::default().into(),
        agui::ToolCallArgs::default().into(),
        agui::ToolCallEnd::default().into(),
        agui::ToolCallResult::default().into(),
        agui::StateSnapshot::default().into(),
        agui::StateDelta::default().into(),
        agui::MessagesSnapshot::default().into(),
        agui::Custom::default().into(),
        agui::Raw::default().into(),
        agui::TextMessageChunk::default().into(),
        agui::ToolCallChunk::default().into(),
        agui::ActivitySnapshot::default().into(),
        agui::ActivityDelta::default().into(),
        agui::ReasoningStart::default().into(),
        agui::ReasoningMessageStart::default().into(),
        agui::ReasoningMessageContent::default().into(),
        agui::ReasoningMessageEnd::default().into(),
        agui::ReasoningMessageChunk::default().into(),
        agui::ReasoningEnd::default().into(),
        agui::ReasoningEncryptedValue::default().into(),
        agui::SubagentStarted::default().into(),
        agui::SubagentFinished::default().into(),
        agui::SubagentError::default().into(),
    ];
    let mut types: Vec<&str> = events.iter().map(AgUiEvent::event_type).collect();
    let mut expected = types_of(AGUI_REQUIRED);
    types.sort_unstable();
    expected.sort_unstable();
    assert_eq!(types, expected);
    for event in &events {
        assert_tag_matches(event, event.event_type());
    }
}

#[test]
fn a2a_event_type_matches_serde_tag() {
    let status = a2a::TaskStatusUpdate {
        task_id: "t".into(),
        context_id: "c".into(),
        state: TaskState::Unknown,
        message: None,
        is_final: None,
        timestamp: None,
        extra: Default::default(),
    };
    let events: Vec<A2AEvent> = vec![
        a2a::TaskSubmitted::default().into(),
        status.into(),
        a2a::ArtifactCreated::default().into(),
        a2a::ArtifactUpdated::default().into(),
        a2a::AgentMessage::default().into(),
        a2a::InputRequired::default().into(),
        a2a::AuthRequired::default().into(),
        a2a::JsonRpcResponse::default().into(),
        a2a::JsonRpcError::default().into(),
    ];
    let types: Vec<&str> = events.iter().map(A2AEvent::event_type).collect();
    assert_eq!(types, types_of(A2A_REQUIRED));
    for event in &events {
        assert_tag_matches(event, event.event_type());
    }
}

#[test]
fn system_event_type_matches_serde_tag() {
    let events: Vec<SystemEvent> = vec![
        system::ContextCreated::default().into(),
        system::ContextUpdated::default().into(),
        system::ContextDeleted::default().into(),
        system::ContextsSnapshot::default().into(),
        system::Connected::default().into(),
        system::Heartbeat::default().into(),
    ];
    let types: Vec<&str> = events.iter().map(SystemEvent::event_type).collect();
    assert_eq!(types, types_of(SYSTEM_REQUIRED));
    for event in &events {
        assert_tag_matches(event, event.event_type());
    }
}

#[test]
fn analytics_event_type_matches_serde_tag() {
    let events: Vec<AnalyticsEvent> = vec![
        analytics::SessionStarted::default().into(),
        analytics::SessionEnded::default().into(),
        analytics::PageView::default().into(),
        analytics::EngagementUpdate::default().into(),
        analytics::RealTimeStats::default().into(),
        analytics::Heartbeat::default().into(),
    ];
    let types: Vec<&str> = events.iter().map(AnalyticsEvent::event_type).collect();
    assert_eq!(types, types_of(ANALYTICS_REQUIRED));
    for event in &events {
        assert_tag_matches(event, event.event_type());
    }
}

#[test]
fn from_impls_pick_the_matching_variant() {
    let content = agui::TextMessageContent {
        message_id: "m-1".into(),
        delta: "Hi".into(),
        timestamp: Some(5),
        raw_event: None,
        ..Default::default()
    };
    let event = AgUiEvent::from(content.clone());
    assert!(matches!(&event, AgUiEvent::TextMessageContent(c) if *c == content));
    assert_eq!(event.timestamp(), Some(5));

    let deleted = system::ContextDeleted {
        context_id: "c-9".into(),
        timestamp: None,
        extra: Default::default(),
    };
    assert!(
        matches!(SystemEvent::from(deleted), SystemEvent::ContextDeleted(d) if d.context_id == "c-9")
    );

    let ended = analytics::SessionEnded {
        session_id: "s-9".into(),
        duration_ms: Some(10),
        timestamp: None,
        extra: Default::default(),
    };
    assert!(
        matches!(AnalyticsEvent::from(ended), AnalyticsEvent::SessionEnded(e) if e.duration_ms == Some(10))
    );
}

// ---------------------------------------------------------------------------
// field naming and optional-field handling

#[test]
fn optional_fields_are_omitted_and_renamed_fields_use_wire_names() {
    let update = A2AEvent::from(a2a::TaskStatusUpdate {
        task_id: "t-1".into(),
        context_id: "c-1".into(),
        state: TaskState::InputRequired,
        message: None,
        is_final: Some(true),
        timestamp: Some(1),
        extra: Default::default(),
    });
    assert_eq!(
        to_value(&update),
        json!({"type":"TASK_STATUS_UPDATE","taskId":"t-1","contextId":"c-1","state":"input-required","final":true,"timestamp":1})
    );

    let artifact = A2AEvent::from(a2a::ArtifactUpdated {
        task_id: "t-1".into(),
        context_id: "c-1".into(),
        artifact: json!({"artifactId":"a"}),
        append: None,
        last_chunk: Some(true),
        timestamp: None,
        extra: Default::default(),
    });
    assert_eq!(
        to_value(&artifact),
        json!({"type":"ARTIFACT_UPDATED","taskId":"t-1","contextId":"c-1","artifact":{"artifactId":"a"},"lastChunk":true})
    );

    let tool = AgUiEvent::from(agui::ToolCallStart {
        tool_call_id: "tc".into(),
        tool_call_name: "search".into(),
        parent_message_id: None,
        timestamp: None,
        raw_event: Some(json!({"x":1})),
        ..Default::default()
    });
    assert_eq!(
        to_value(&tool),
        json!({"type":"TOOL_CALL_START","toolCallId":"tc","toolCallName":"search","rawEvent":{"x":1}})
    );

    let engagement = AnalyticsEvent::from(analytics::EngagementUpdate {
        session_id: "s-1".into(),
        time_on_page_ms: Some(1500),
        ..Default::default()
    });
    assert_eq!(
        to_value(&engagement),
        json!({"type":"ENGAGEMENT_UPDATE","session_id":"s-1","time_on_page_ms":1500})
    );

    assert_eq!(
        to_value(&SystemEvent::from(system::Heartbeat::default())),
        json!({"type":"HEARTBEAT"})
    );
}

#[test]
fn explicit_null_optional_is_read_as_absent() {
    let event: AgUiEvent = serde_json::from_value(
        json!({"type":"RUN_STARTED","threadId":"t","runId":"r","parentRunId":null,"rawEvent":null}),
    )
    .unwrap();
    assert_eq!(
        to_value(&event),
        json!({"type":"RUN_STARTED","threadId":"t","runId":"r"})
    );
}

#[test]
fn text_message_start_role_is_written_only_when_set() {
    let event: AgUiEvent =
        serde_json::from_str(r#"{"type":"TEXT_MESSAGE_START","messageId":"m-1"}"#).unwrap();
    assert_eq!(
        event,
        AgUiEvent::TextMessageStart(agui::TextMessageStart {
            message_id: "m-1".into(),
            ..Default::default()
        })
    );
    // Absent means assistant to AG-UI clients; it stays absent, as it came.
    assert_eq!(
        to_value(&event),
        json!({"type":"TEXT_MESSAGE_START","messageId":"m-1"})
    );

    let user: AgUiEvent =
        serde_json::from_str(r#"{"type":"TEXT_MESSAGE_START","messageId":"m-2","role":"user"}"#)
            .unwrap();
    assert!(matches!(user, AgUiEvent::TextMessageStart(s) if s.role == Some(Role::User)));
}

#[test]
fn role_wire_names() {
    let pairs = [
        (Role::Developer, "developer"),
        (Role::System, "system"),
        (Role::Assistant, "assistant"),
        (Role::User, "user"),
        (Role::Tool, "tool"),
        (Role::Activity, "activity"),
        (Role::Reasoning, "reasoning"),
    ];
    for (role, name) in pairs {
        assert_eq!(to_value(&role), json!(name));
        assert_eq!(serde_json::from_value::<Role>(json!(name)).unwrap(), role);
    }
    assert_eq!(Role::default(), Role::Assistant);
    assert!(serde_json::from_value::<Role>(json!("Assistant")).is_err());
}

#[test]
fn task_state_wire_names() {
    let pairs = [
        (TaskState::Submitted, "submitted"),
        (TaskState::Working, "working"),
        (TaskState::InputRequired, "input-required"),
        (TaskState::Completed, "completed"),
        (TaskState::Canceled, "canceled"),
        (TaskState::Failed, "failed"),
        (TaskState::Rejected, "rejected"),
        (TaskState::AuthRequired, "auth-required"),
        (TaskState::Unknown, "unknown"),
    ];
    for (state, name) in pairs {
        assert_eq!(to_value(&state), json!(name));
        assert_eq!(
            serde_json::from_value::<TaskState>(json!(name)).unwrap(),
            state
        );
    }
    assert!(serde_json::from_value::<TaskState>(json!("input_required")).is_err());
    assert!(serde_json::from_value::<TaskState>(json!("cancelled")).is_err());
}

#[test]
fn unknown_fields_are_kept() {
    let text = r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hello","extra":{"a":1},"threadId":"x"}"#;
    let event: AgUiEvent = serde_json::from_str(text).unwrap();
    assert_eq!(to_value(&event), value_of(text));
    assert_eq!(event.extra().len(), 2);

    let event: AnalyticsEvent =
        serde_json::from_str(r#"{"type":"HEARTBEAT","uptime":12,"timestamp":3}"#).unwrap();
    assert_eq!(
        event,
        AnalyticsEvent::Heartbeat(analytics::Heartbeat {
            timestamp: Some(3),
            extra: [("uptime".to_owned(), json!(12))].into_iter().collect(),
        })
    );

    let event: ContextEvent =
        serde_json::from_str(r#"{"protocol":"system","event":{"type":"HEARTBEAT"},"seq":7}"#)
            .unwrap();
    assert_eq!(
        event,
        ContextEvent::System(SystemEvent::Heartbeat(system::Heartbeat::default()))
    );
}

// ---------------------------------------------------------------------------
// errors

#[test]
fn unknown_type_is_an_error_except_for_agui() {
    // AG-UI carries an unknown type as it came.
    for doc in [
        json!({"type":"text_message_content","messageId":"m-1","delta":"x"}),
        json!({"type":"THINKING_START","title":null}),
    ] {
        let event: AgUiEvent = serde_json::from_value(doc.clone()).unwrap();
        assert!(matches!(event, AgUiEvent::Unknown(_)), "{event:?}");
        assert_eq!(Some(event.event_type()), doc["type"].as_str());
        assert_eq!(to_value(&event), doc);
    }
    assert_unknown_type::<A2AEvent>(json!({"type":"TASK_CANCELED","taskId":"t","contextId":"c"}));
    assert_unknown_type::<SystemEvent>(json!({"type":"PAGE_VIEW","session_id":"s","page":"/"}));
    assert_unknown_type::<AnalyticsEvent>(json!({"type":"CONNECTED"}));
    assert_unknown_type::<ContextEvent>(json!({"protocol":"mcp","event":{"type":"HEARTBEAT"}}));
}

#[test]
fn missing_type_is_an_error() {
    for err in [
        error_of::<AgUiEvent>(json!({"messageId":"m-1","delta":"x"})),
        error_of::<A2AEvent>(json!({"taskId":"t","contextId":"c","state":"working"})),
        error_of::<SystemEvent>(json!({"contextId":"c"})),
        error_of::<AnalyticsEvent>(json!({"session_id":"s","page":"/"})),
    ] {
        assert!(err.contains("missing field `type`"), "{err}");
    }
}

#[test]
fn missing_required_field_names_the_field() {
    assert_missing_field::<AgUiEvent>(
        json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1"}),
        "delta",
    );
    assert_missing_field::<AgUiEvent>(json!({"type":"RUN_STARTED","threadId":"t-1"}), "runId");
    assert_missing_field::<AgUiEvent>(
        json!({"type":"RUN_STARTED","threadId":"t-1","run_id":"r-1"}),
        "runId",
    );
    assert_missing_field::<AgUiEvent>(json!({"type":"STATE_SNAPSHOT"}), "snapshot");
    assert_missing_field::<AgUiEvent>(json!({"type":"CUSTOM","name":"n"}), "value");
    assert_missing_field::<AgUiEvent>(json!({"type":"RAW","source":"s"}), "event");
    assert_missing_field::<AgUiEvent>(
        json!({"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"tc"}),
        "content",
    );
    assert_missing_field::<A2AEvent>(
        json!({"type":"TASK_STATUS_UPDATE","taskId":"t","contextId":"c"}),
        "state",
    );
    assert_missing_field::<A2AEvent>(json!({"type":"TASK_SUBMITTED","taskId":"t"}), "contextId");
    assert_missing_field::<A2AEvent>(json!({"type":"AGENT_MESSAGE","contextId":"c"}), "message");
    assert_missing_field::<A2AEvent>(json!({"type":"JSON_RPC_RESPONSE","id":1}), "result");
    assert_missing_field::<A2AEvent>(json!({"type":"JSON_RPC_ERROR","error":{}}), "id");
    assert_missing_field::<SystemEvent>(json!({"type":"CONTEXT_DELETED"}), "contextId");
    assert_missing_field::<SystemEvent>(json!({"type":"CONTEXTS_SNAPSHOT"}), "contexts");
    assert_missing_field::<AnalyticsEvent>(json!({"type":"PAGE_VIEW","session_id":"s-1"}), "page");
    // Analytics uses snake_case: a camelCase key does not satisfy it.
    assert_missing_field::<AnalyticsEvent>(
        json!({"type":"SESSION_STARTED","sessionId":"s-1"}),
        "session_id",
    );
    assert_missing_field::<ContextEvent>(json!({"protocol":"agui"}), "event");
}

#[test]
fn wrong_field_type_is_an_error() {
    assert_wrong_type::<AgUiEvent>(
        json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":5}),
    );
    assert_wrong_type::<AgUiEvent>(
        json!({"type":"TEXT_MESSAGE_END","messageId":"m-1","timestamp":"soon"}),
    );
    assert_wrong_type::<AgUiEvent>(
        json!({"type":"TEXT_MESSAGE_START","messageId":"m-1","role":"robot"}),
    );
    assert_wrong_type::<AgUiEvent>(json!({"type":"STATE_DELTA","delta":{"op":"add"}}));
    assert_wrong_type::<AgUiEvent>(json!({"type":"MESSAGES_SNAPSHOT","messages":"none"}));
    assert_wrong_type::<A2AEvent>(
        json!({"type":"TASK_STATUS_UPDATE","taskId":"t","contextId":"c","state":"bogus"}),
    );
    assert_wrong_type::<A2AEvent>(
        json!({"type":"TASK_STATUS_UPDATE","taskId":"t","contextId":"c","state":"working","final":"yes"}),
    );
    assert_wrong_type::<A2AEvent>(json!({"type":"TASK_SUBMITTED","taskId":7,"contextId":"c"}));
    assert_wrong_type::<SystemEvent>(json!({"type":"CONTEXTS_SNAPSHOT","contexts":{}}));
    assert_wrong_type::<SystemEvent>(json!({"type":"CONNECTED","connectionId":1}));
    assert_wrong_type::<AnalyticsEvent>(
        json!({"type":"ENGAGEMENT_UPDATE","session_id":"s","scroll_depth":"deep"}),
    );
    assert_wrong_type::<AnalyticsEvent>(
        json!({"type":"ENGAGEMENT_UPDATE","session_id":"s","clicks":-1}),
    );
    assert_wrong_type::<AnalyticsEvent>(
        json!({"type":"SESSION_ENDED","session_id":"s","duration_ms":1.5}),
    );
}

#[test]
fn type_tag_must_be_a_string() {
    assert!(serde_json::from_value::<AgUiEvent>(json!({"type":1,"messageId":"m"})).is_err());
    assert!(serde_json::from_value::<AgUiEvent>(json!("TEXT_MESSAGE_END")).is_err());
}

// ---------------------------------------------------------------------------
// ContextEvent envelope

#[test]
fn context_agui_fixture() {
    let expected = ContextEvent::AgUi(AgUiEvent::TextMessageContent(agui::TextMessageContent {
        message_id: "m-1".into(),
        delta: "Hello".into(),
        timestamp: Some(1_700_000_000_000),
        raw_event: None,
        ..Default::default()
    }));
    assert_minimal(CONTEXT_AGUI, &expected);
    assert_eq!(expected.protocol(), Protocol::AgUi);
    assert_eq!(expected.event_type(), "TEXT_MESSAGE_CONTENT");
    assert_eq!(expected.timestamp(), Some(1_700_000_000_000));
}

#[test]
fn context_event_wraps_exactly() {
    let inner = A2AEvent::TaskStatusUpdate(a2a::TaskStatusUpdate {
        task_id: "t-1".into(),
        context_id: "c-1".into(),
        state: TaskState::Failed,
        message: None,
        is_final: Some(true),
        timestamp: None,
        extra: Default::default(),
    });
    let wrapped = ContextEvent::from(inner.clone());
    assert_eq!(wrapped.protocol(), Protocol::A2A);
    assert_eq!(
        to_value(&wrapped),
        json!({
            "protocol": "a2a",
            "event": {"type":"TASK_STATUS_UPDATE","taskId":"t-1","contextId":"c-1","state":"failed","final":true}
        })
    );
    assert_eq!(to_value(&wrapped)["event"], to_value(&inner));

    let system = ContextEvent::from(SystemEvent::from(system::Connected {
        connection_id: Some("conn-1".into()),
        timestamp: None,
        extra: Default::default(),
    }));
    assert_eq!(
        to_value(&system),
        json!({"protocol":"system","event":{"type":"CONNECTED","connectionId":"conn-1"}})
    );

    let agui = ContextEvent::from(AgUiEvent::from(agui::StepStarted {
        step_name: "plan".into(),
        timestamp: None,
        raw_event: None,
        ..Default::default()
    }));
    assert_eq!(
        to_value(&agui),
        json!({"protocol":"agui","event":{"type":"STEP_STARTED","stepName":"plan"}})
    );
}

#[test]
fn context_all_round_trips() {
    let docs: Vec<Value> = serde_json::from_str(CONTEXT_ALL).unwrap();
    let mut protocols = Vec::new();
    for doc in &docs {
        let event: ContextEvent = serde_json::from_str(&doc.to_string()).unwrap();
        assert_eq!(&to_value(&event), doc);
        assert_eq!(Some(event.protocol().as_str()), doc["protocol"].as_str());
        assert_eq!(Some(event.event_type()), doc["event"]["type"].as_str());
        assert_eq!(event.timestamp(), doc["event"]["timestamp"].as_i64());
        let inner = match &event {
            ContextEvent::AgUi(e) => to_value(e),
            ContextEvent::A2A(e) => to_value(e),
            ContextEvent::System(e) => to_value(e),
        };
        assert_eq!(inner, doc["event"]);
        protocols.push(event.protocol());
    }
    assert_eq!(protocols, [Protocol::AgUi, Protocol::A2A, Protocol::System]);
}

#[test]
fn context_event_errors() {
    // The inner event must belong to the named protocol.
    assert_unknown_type::<ContextEvent>(
        json!({"protocol":"system","event":{"type":"TEXT_MESSAGE_END","messageId":"m"}}),
    );
    // Inner errors propagate.
    assert_missing_field::<ContextEvent>(
        json!({"protocol":"agui","event":{"type":"TEXT_MESSAGE_END"}}),
        "messageId",
    );
    // The bare inner event is not a ContextEvent.
    assert!(serde_json::from_str::<ContextEvent>(AGUI_TEXT_MESSAGE_CONTENT).is_err());
}

#[test]
fn protocol_names() {
    let pairs = [
        (Protocol::AgUi, "agui"),
        (Protocol::A2A, "a2a"),
        (Protocol::System, "system"),
    ];
    for (protocol, name) in pairs {
        assert_eq!(protocol.as_str(), name);
        assert_eq!(protocol.to_string(), name);
        assert_eq!(to_value(&protocol), json!(name));
        assert_eq!(
            serde_json::from_value::<Protocol>(json!(name)).unwrap(),
            protocol
        );
    }
    assert!(serde_json::from_value::<Protocol>(json!("AgUi")).is_err());
}
