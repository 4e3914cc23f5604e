//! The AG-UI 1.0 model (`sse_hub::models::agui`): lossless by construction, strict where the
//! protocol is strict. The official schemas' verdicts on the same fixtures are checked in
//! `agui_conformance.rs`.

use futures_util::FutureExt;
use serde_json::{Map, Value, json};
use sse_hub::models::agui::{self, AgUiEvent, InvalidEvent, Role};
use sse_hub::models::{
    ContextEvent, a2a::A2AEvent, analytics::AnalyticsEvent, system::SystemEvent,
};
use sse_hub::{EventRouter, PublishError, UserId};
use tokio_stream::StreamExt;

const AGUI_1_0_ALL: &str = include_str!("fixtures/agui_1_0_all.json");
const AGUI_1_0_INVALID: &str = include_str!("fixtures/agui_1_0_invalid.json");
const FIXTURES: &[(&str, &str)] = &[
    ("agui_1_0_all", AGUI_1_0_ALL),
    ("agui_all", include_str!("fixtures/agui_all.json")),
];

fn docs(text: &str) -> Vec<Value> {
    serde_json::from_str(text).expect("a JSON array")
}

fn round_trip(doc: &Value) -> Value {
    let text = doc.to_string();
    let event: AgUiEvent =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} refused: {e}"));
    serde_json::to_value(&event).expect("serialises")
}

/// The same members with `type` last, so that the reader cannot take its fast path.
fn type_last(doc: &Value) -> String {
    let object = doc.as_object().unwrap();
    let mut members: Vec<String> = object
        .iter()
        .filter(|(k, _)| *k != "type")
        .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
        .collect();
    members.push(format!("\"type\":{}", object["type"]));
    format!("{{{}}}", members.join(","))
}

/// Members a later protocol version might add, at the top level of an event.
fn unknown_members() -> Map<String, Value> {
    json!({
        "x-future": {"nested": [1, 2.5, null, "s", true]},
        "priority": 3,
        "nothing": null,
        "tags": ["a", "b"],
    })
    .as_object()
    .unwrap()
    .clone()
}

#[test]
fn every_fixture_round_trips_to_equal_json() {
    for (name, text) in FIXTURES {
        for doc in docs(text) {
            assert_eq!(round_trip(&doc), doc, "{name}");
            // `type` anywhere: the buffered path gives the same.
            let event: AgUiEvent = serde_json::from_str(&type_last(&doc)).unwrap();
            assert_eq!(
                serde_json::to_value(&event).unwrap(),
                doc,
                "{name}, type last"
            );
            // Through `serde_json::Value` too (keys in another order).
            let event: AgUiEvent = serde_json::from_value(doc.clone()).unwrap();
            assert_eq!(
                serde_json::to_value(&event).unwrap(),
                doc,
                "{name}, from a Value"
            );
        }
    }
}

#[test]
fn unknown_members_are_kept_on_every_type() {
    for doc in docs(AGUI_1_0_ALL) {
        let mut extended = doc.clone();
        extended.as_object_mut().unwrap().extend(unknown_members());
        assert_eq!(round_trip(&extended), extended);
        let event: AgUiEvent = serde_json::from_value(extended.clone()).unwrap();
        assert_eq!(event.extra(), &unknown_members(), "{doc}");
        assert_eq!(event.validate(), Ok(()));
        // Wrapped for the context channel, unchanged too.
        let wrapped = json!({"protocol": "agui", "event": extended});
        let context: ContextEvent = serde_json::from_str(&wrapped.to_string()).unwrap();
        assert_eq!(serde_json::to_value(&context).unwrap(), wrapped);
    }
}

#[test]
fn unknown_types_are_carried_as_they_came() {
    for doc in [
        json!({"type": "HOLOGRAM_STARTED", "beamId": "b-1", "intensity": 0.5, "timestamp": 17}),
        json!({"type": "THINKING_TEXT_MESSAGE_CONTENT", "delta": "hm", "rawEvent": null}),
        json!({"type": "text_message_content", "messageId": "m", "delta": "lowercase"}),
        json!({"type": ""}),
    ] {
        assert_eq!(round_trip(&doc), doc);
        let event: AgUiEvent = serde_json::from_str(&type_last(&doc)).unwrap();
        assert!(matches!(&event, AgUiEvent::Unknown(_)), "{event:?}");
        assert_eq!(Some(event.event_type()), doc["type"].as_str());
        assert_eq!(event.timestamp(), doc["timestamp"].as_i64());
        assert_eq!(serde_json::to_value(&event).unwrap(), doc);
        assert_eq!(event.validate(), Ok(()));
    }
}

#[test]
fn the_replaced_crates_custom_payloads_pass_through() {
    for doc in [
        json!({"type": "CUSTOM", "name": "artifact", "value": {"artifactId": "a-1", "name": "report.md", "parts": [{"kind": "text", "text": "# Report"}]}}),
        json!({"type": "CUSTOM", "name": "execution_step", "value": {"stepId": "s-1", "status": "completed", "durationMs": 1200}}),
        json!({"type": "CUSTOM", "name": "skill_loaded", "value": {"skill": "web-search", "version": "1.2.0"}, "timestamp": 1780000000000_i64}),
        json!({"type": "CUSTOM", "name": "confetti", "value": null}),
        json!({"type": "CUSTOM", "name": "counter", "value": 42}),
    ] {
        assert_eq!(round_trip(&doc), doc);
        let event: AgUiEvent = serde_json::from_value(doc.clone()).unwrap();
        let AgUiEvent::Custom(custom) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(custom.name, doc["name"]);
        assert_eq!(custom.value, doc["value"]);
    }
}

#[test]
fn optional_nulls_are_read_and_written_as_absent() {
    let doc = json!({
        "type": "RUN_FINISHED", "threadId": "t", "runId": "r",
        "result": null, "rawEvent": null, "outcome": null, "usage": null,
        "metadata": null, "timestamp": null,
    });
    assert_eq!(
        round_trip(&doc),
        json!({"type": "RUN_FINISHED", "threadId": "t", "runId": "r"})
    );
    // Built in Rust with `Some(Value::Null)`: still written as absent.
    let event = AgUiEvent::from(agui::RunFinished {
        thread_id: "t".into(),
        run_id: "r".into(),
        result: Some(Value::Null),
        raw_event: Some(Value::Null),
        ..Default::default()
    });
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({"type": "RUN_FINISHED", "threadId": "t", "runId": "r"})
    );
    // Where null is the value itself, it stays.
    let doc = json!({"type": "STATE_SNAPSHOT", "snapshot": null});
    assert_eq!(round_trip(&doc), doc);
}

#[test]
fn invalid_events_are_refused_naming_the_member() {
    for case in docs(AGUI_1_0_INVALID) {
        let (name, member, event) = (&case["case"], &case["member"], &case["event"]);
        let member = member.as_str().unwrap();
        for text in [event.to_string(), type_last(event)] {
            let error = match serde_json::from_str::<AgUiEvent>(&text) {
                Ok(parsed) => panic!("{name}: accepted as {parsed:?}"),
                Err(error) => error.to_string(),
            };
            assert!(
                error.contains(&format!("`{member}`")),
                "{name}: the error should name `{member}`: {error}"
            );
        }
    }
}

#[test]
fn validate_refuses_events_built_in_rust() {
    let cases: Vec<(AgUiEvent, &str)> = vec![
        (
            agui::TextMessageStart {
                message_id: "m".into(),
                role: Some(Role::Tool),
                ..Default::default()
            }
            .into(),
            "role",
        ),
        (
            agui::ToolCallResult {
                message_id: "m".into(),
                tool_call_id: "tc".into(),
                content: "ok".into(),
                role: Some(Role::User),
                ..Default::default()
            }
            .into(),
            "role",
        ),
        (
            agui::TextMessageEnd {
                message_id: "m".into(),
                timestamp: Some(1 << 53),
                ..Default::default()
            }
            .into(),
            "timestamp",
        ),
        (
            agui::StateDelta {
                delta: vec![json!({"op": "add", "path": "no-slash", "value": 1})],
                ..Default::default()
            }
            .into(),
            "delta[0]",
        ),
        (
            agui::MessagesSnapshot {
                messages: vec![json!({"role": "user", "content": "hi"})],
                ..Default::default()
            }
            .into(),
            "messages[0].id",
        ),
        (
            agui::TextMessageContent {
                message_id: "m".into(),
                delta: "d".into(),
                extra: [("messageId".to_owned(), json!("other"))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }
            .into(),
            "messageId",
        ),
        (
            AgUiEvent::Unknown(agui::UnknownEvent {
                event_type: "TEXT_MESSAGE_CONTENT".into(),
                members: Map::new(),
            }),
            "type",
        ),
    ];
    for (event, member) in cases {
        let error = event.validate().expect_err("invalid");
        assert_eq!(error.member, member, "{event:?}: {error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("invalid `{member}`: "))
        );
    }
}

#[tokio::test]
async fn the_router_refuses_an_invalid_event_and_publishes_nothing() {
    let router = EventRouter::default();
    let user = UserId::from("alice");
    let mut agui = router.agui().subscribe(&user).unwrap();
    let mut context = router.context().subscribe(&user).unwrap();
    let before = router.stats();

    let invalid = AgUiEvent::from(agui::TextMessageStart {
        message_id: "m".into(),
        role: Some(Role::Tool),
        ..Default::default()
    });
    for result in [
        router.route_agui(&user, &invalid),
        router.route_async(&user, &invalid).await,
    ] {
        match result {
            Err(PublishError::InvalidEvent(InvalidEvent { member, .. })) => {
                assert_eq!(member, "role")
            }
            other => panic!("expected InvalidEvent, got {other:?}"),
        }
    }
    assert_eq!(router.stats(), before, "nothing was published");
    assert!(agui.next().now_or_never().is_none());
    assert!(context.next().now_or_never().is_none());

    // Over HTTP it is 400 invalid_event.
    let error = router.route_agui(&user, &invalid).unwrap_err();
    let response = axum::response::IntoResponse::into_response(error);
    assert_eq!(response.status(), 400);

    // A valid one goes through.
    let valid: AgUiEvent =
        serde_json::from_str(r#"{"type":"TEXT_MESSAGE_START","messageId":"m","role":"user"}"#)
            .unwrap();
    router.route_agui(&user, &valid).unwrap();
    assert!(agui.next().now_or_never().flatten().is_some());
}

#[test]
fn other_channels_keep_unknown_members() {
    let a2a = json!({"type": "TASK_SUBMITTED", "taskId": "t", "contextId": "c", "x-new": {"a": 1}});
    let event: A2AEvent = serde_json::from_value(a2a.clone()).unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), a2a);
    let system = json!({"type": "CONTEXT_CREATED", "contextId": "c", "owner": "u-1"});
    let event: SystemEvent = serde_json::from_value(system.clone()).unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), system);
    let analytics = json!({"type": "REAL_TIME_STATS", "extra": {"a": 1}, "p99_ms": 12});
    let event: AnalyticsEvent = serde_json::from_value(analytics.clone()).unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), analytics);
}
