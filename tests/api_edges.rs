//! Edges of the public API a user meets: numbers in float form the AG-UI schemas accept, the
//! router's all-or-none contract at `max_channels` for a thread publish, unknown members that
//! would repeat a known one, the demo's 404 for an unknown channel on every method, and the
//! expiry of channels a publish made before anyone subscribed. Servers bind loopback only;
//! every wait is bounded.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use support::{DemoServer, client, send};

use serde_json::json;
use sse_hub::models::AgUiEvent;
use sse_hub::{Config, EventRouter, PublishError, ThreadId, UserId};
use tokio_stream::StreamExt;

/// Events the official `@ag-ui/core` 1.0.0 schemas accept (checked with
/// `tests/agui/validate.mjs`: `z.int()` takes any JSON number whose value is an integer): the
/// model must read them too. A Java producer with a `double` writes `1.7E12`, Python's float
/// `1700000000000.0`; `-0` is an integer literal in JSON.
#[test]
fn integer_valued_numbers_in_float_form_are_valid_agui() {
    let valid = [
        r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":1.7E12}"#,
        r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":1700000000000.0}"#,
        r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":-0}"#,
        r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","usage":[{"inputTokens":5.0}]}"#,
    ];
    let mut refused = Vec::new();
    for event in valid {
        // Through the text, as the demo server and any HTTP handler read it.
        if let Err(error) = serde_json::from_str::<AgUiEvent>(event) {
            refused.push(format!("{event}: {error}"));
        }
    }
    assert!(
        refused.is_empty(),
        "valid AG-UI 1.0 events refused:\n{}",
        refused.join("\n")
    );
}

/// The router's contract: "an event goes to all its targets or to none". A publish into a
/// thread creates the user's channel on both targets; when the context channel is at its
/// `max_channels` but the AG-UI one is not, the route fails with `AtCapacity` (503 in the
/// demo) and nothing is published or folded anywhere, so that the caller's retry does not
/// put the event into the thread twice.
#[tokio::test]
async fn a_thread_publish_refused_at_capacity_on_context_is_not_published_to_agui() {
    let mut config = Config::default();
    config.max_channels = 1;
    let router = EventRouter::new(config);
    // Another user's tab holds the context channel's only slot.
    let _tab = router.context().subscribe(&UserId::from("other")).unwrap();

    let bob = UserId::from("bob");
    let thread = ThreadId::new("t-1").unwrap();
    let event: AgUiEvent =
        serde_json::from_value(json!({"type": "RUN_STARTED", "threadId": "t-1", "runId": "r-1"}))
            .unwrap();
    let result = router.route_agui_in_thread(&bob, &thread, &event);
    assert!(
        matches!(result, Err(PublishError::AtCapacity { .. })),
        "{result:?}"
    );

    // Refused, so published nowhere: not on agui either.
    let agui = router.stats().agui;
    let mut view = router
        .agui()
        .subscribe_in_thread(&bob, &thread, None)
        .unwrap();
    let opened = tokio::time::timeout(Duration::from_millis(200), view.next()).await;
    let opened = opened
        .ok()
        .flatten()
        .map(|frame| String::from_utf8_lossy(frame.bytes()).into_owned());
    assert_eq!(
        (agui.published, opened),
        (0, None),
        "a route reported as refused published the event to the AG-UI thread"
    );
}

/// A2A, system and analytics events keep unknown members in `extra` and write them back after
/// the known ones. One that is `type` or a member the model writes would go out twice (a
/// browser's `JSON.parse` keeps the last, so the client would see another `type` and `state`
/// than the event's): the router refuses it as `InvalidEvent`, and publishes unknown members
/// that repeat nothing.
#[tokio::test]
async fn an_a2a_event_never_goes_out_with_a_member_twice() {
    let router = EventRouter::default();
    let alice = UserId::from("alice");
    let mut tab = router.a2a().subscribe(&alice).unwrap();
    let mut event: sse_hub::models::A2AEvent = serde_json::from_value(json!({
        "type": "TASK_STATUS_UPDATE", "taskId": "t-1", "contextId": "c-1", "state": "working"
    }))
    .unwrap();
    let sse_hub::models::A2AEvent::TaskStatusUpdate(update) = &mut event else {
        unreachable!()
    };
    // E.g. the members of an upstream object forwarded as they came.
    update.extra.insert("type".into(), json!("status-update"));
    update.extra.insert("state".into(), json!("failed"));

    let refused = router.route_a2a(&alice, &event);
    assert!(
        matches!(&refused, Err(PublishError::InvalidEvent(e))
            if ["type", "state"].iter().any(|m| e.to_string().contains(m))),
        "{refused:?}"
    );

    // Unknown members that repeat nothing go out once, after the known ones; an unknown
    // `timestamp` beside no `timestamp` field is written once too.
    let sse_hub::models::A2AEvent::TaskStatusUpdate(update) = &mut event else {
        unreachable!()
    };
    update.extra.clear();
    update.extra.insert("vendorTrace".into(), json!("x-1"));
    update.extra.insert("timestamp".into(), json!(5));
    router.route_a2a(&alice, &event).expect("published");
    let frame = tokio::time::timeout(Duration::from_secs(1), tab.next())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(frame.bytes()).into_owned();
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap()
        .to_owned();
    let read_back: sse_hub::models::A2AEvent = serde_json::from_str(&data).expect(&data);
    assert_eq!(read_back.event_type(), "TASK_STATUS_UPDATE");
    assert_eq!(data.matches("\"type\"").count(), 1, "{data}");
    assert_eq!(data.matches("\"timestamp\"").count(), 1, "{data}");
    assert!(data.contains("\"vendorTrace\":\"x-1\""), "{data}");
}

/// README, "Bad input": an unknown channel is "404 `unknown_channel` with a JSON body, on
/// every method", those the route does not serve included.
#[tokio::test]
async fn an_unknown_channel_is_404_on_every_method() {
    let server = DemoServer::start();
    let client = client();
    for method in [Method::PUT, Method::PATCH] {
        let reply = send(&client, method.clone(), &server.url("/events/nope/u"), None).await;
        reply.assert_error(StatusCode::NOT_FOUND, "unknown_channel");
    }
}

/// Channels are "kept for the retention, then one sweeper removes it" (README, "How it
/// works"). A publish into a thread creates the user's channels (the AG-UI one with the
/// thread's run state) even when nobody is connected: the sweeper runs for them too, on a
/// router nobody subscribed to yet.
#[tokio::test(start_paused = true)]
async fn channels_made_by_a_thread_publish_expire_after_the_retention() {
    let mut config = Config::default();
    config.retention = Duration::from_millis(100);
    let router = EventRouter::new(config);
    let bob = UserId::from("bob");
    let thread = ThreadId::new("t-1").unwrap();
    let event: AgUiEvent =
        serde_json::from_value(json!({"type": "RUN_STARTED", "threadId": "t-1", "runId": "r-1"}))
            .unwrap();
    router.route_agui_in_thread(&bob, &thread, &event).unwrap();
    assert_eq!(router.stats().agui.retained_channels, 1);

    // Fifty retentions later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = router.stats();
    assert_eq!(
        (
            stats.agui.retained_channels,
            stats.agui.thread_state_bytes,
            stats.context.retained_channels
        ),
        (0, 0, 0),
        "{stats:?}"
    );
}
