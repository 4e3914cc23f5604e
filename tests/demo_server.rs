//! The demo server's contract (`examples/server.rs`), which other tools depend on, checked over
//! HTTP against the real binary: started as a subprocess on a free loopback port, driven with
//! reqwest, its streams read with the independent `eventsource-stream` parser.
//!
//! Each test starts its own server, so tests never see each other's events or counters.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    DemoServer, SseStream, WAIT, client, delete, get, post, publish, run_demo, send, send_raw,
    stats, wait_connections,
};

fn text_message(delta: &str) -> Value {
    json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m-1", "delta": delta})
}

/// An id as the server issues them: `{epoch}-{seq}`, both decimal.
fn assert_event_id(id: &str) {
    let well_formed = id.split_once('-').is_some_and(|(epoch, seq)| {
        [epoch, seq]
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    assert!(well_formed, "an event id looks like 123-4, got {id:?}");
}

#[tokio::test]
async fn serves_a_self_contained_page() {
    let server = DemoServer::start();
    let client = client();
    let page = get(&client, &server.url("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.content_type.starts_with("text/html"),
        "the page is HTML: {:?}",
        page.content_type
    );
    let html = page.text();
    for needed in [
        "new EventSource(",
        "addEventListener(\"lagged\"",
        "addEventListener(\"reset\"",
        "<textarea",
        "method: \"POST\"",
    ] {
        assert!(html.contains(needed), "the page should contain {needed:?}");
    }
    for external in ["http://", "https://", "<script src", "<link"] {
        assert!(
            !html.contains(external),
            "the page must load nothing from elsewhere, but contains {external:?}"
        );
    }
}

#[tokio::test]
async fn agui_and_a2a_events_reach_their_channel_and_context() {
    let server = DemoServer::start();
    let client = client();
    let mut agui = SseStream::connect(&client, &server.url("/events/agui/u")).await;
    let mut a2a = SseStream::connect(&client, &server.url("/events/a2a/u")).await;
    let mut context = SseStream::connect(&client, &server.url("/events/context/u")).await;

    let event = text_message("Hello");
    let reply = post(&client, &server.url("/events/agui/u"), event.to_string()).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let body = reply.json();
    let id = body["id"].as_str().expect("an id on agui").to_owned();
    assert_event_id(&id);
    assert_eq!(body["receivers"], 1, "{body}");
    assert_eq!(body["routed"]["agui"]["id"], id.as_str(), "{body}");
    assert_eq!(body["routed"]["context"]["receivers"], 1, "{body}");
    let context_id = body["routed"]["context"]["id"]
        .as_str()
        .expect("an id on context")
        .to_owned();

    assert_eq!(agui.next_message().await, (id, event.clone()));
    assert_eq!(
        context.next_message().await,
        (context_id, json!({"protocol": "agui", "event": event}))
    );

    let task = json!({"type": "TASK_STATUS_UPDATE", "taskId": "t-1", "contextId": "c-1", "state": "working"});
    let id = publish(&client, &server.url("/events/a2a/u"), &task).await;
    assert_eq!(a2a.next_message().await, (id, task.clone()));
    let (_, wrapped) = context.next_message().await;
    assert_eq!(wrapped, json!({"protocol": "a2a", "event": task}));
}

#[tokio::test]
async fn system_events_are_posted_to_context() {
    let server = DemoServer::start();
    let client = client();
    let mut context = SseStream::connect(&client, &server.url("/events/context/u")).await;
    let event = json!({"type": "CONTEXT_CREATED", "contextId": "c-1", "name": "Demo"});
    let id = publish(&client, &server.url("/events/context/u"), &event).await;
    assert_eq!(
        context.next_message().await,
        (id, json!({"protocol": "system", "event": event}))
    );
}

#[tokio::test]
async fn analytics_events_reach_analytics() {
    let server = DemoServer::start();
    let client = client();
    let mut analytics = SseStream::connect(&client, &server.url("/events/analytics/u")).await;
    let event = json!({"type": "PAGE_VIEW", "session_id": "s-1", "page": "/pricing"});
    let id = publish(&client, &server.url("/events/analytics/u"), &event).await;
    assert_eq!(analytics.next_message().await, (id, event));
}

#[tokio::test]
async fn publishing_to_a_user_without_a_channel_gives_a_null_id() {
    let server = DemoServer::start();
    let client = client();
    let reply = post(
        &client,
        &server.url("/events/agui/nobody"),
        text_message("lost").to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["id"], Value::Null, "{body}");
    assert_eq!(body["receivers"], 0, "{body}");
}

#[tokio::test]
async fn delete_ends_the_users_streams_on_that_channel_only() {
    let server = DemoServer::start();
    let client = client();
    let url = server.url("/events/agui/u");
    let mut tab1 = SseStream::connect(&client, &url).await;
    let mut tab2 = SseStream::connect(&client, &url).await;
    let mut context = SseStream::connect(&client, &server.url("/events/context/u")).await;
    let mut other = SseStream::connect(&client, &server.url("/events/agui/other")).await;

    let reply = delete(&client, &url).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert!(reply.body.is_empty(), "204 has no body: {:?}", reply.text());
    tab1.assert_ends().await;
    tab2.assert_ends().await;
    wait_connections(&client, &server.base, "agui", 1).await;

    // The user's other channel and the other user are untouched.
    let event = json!({"type": "CONTEXT_DELETED", "contextId": "c-1"});
    let id = publish(&client, &server.url("/events/context/u"), &event).await;
    assert_eq!(
        context.next_message().await,
        (id, json!({"protocol": "system", "event": event}))
    );
    let id = publish(
        &client,
        &server.url("/events/agui/other"),
        &text_message("hi"),
    )
    .await;
    assert_eq!(other.next_message().await, (id, text_message("hi")));

    // Nobody connected: still 204.
    let reply = delete(&client, &server.url("/events/analytics/nobody")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn reconnecting_with_last_event_id_loses_nothing() {
    let server = DemoServer::start();
    let client = client();
    let url = server.url("/events/agui/u");

    let mut stream = SseStream::connect(&client, &url).await;
    let mut last = String::new();
    for i in 1..=3 {
        let event = text_message(&format!("live {i}"));
        let id = publish(&client, &url, &event).await;
        assert_eq!(stream.next_message().await, (id.clone(), event));
        last = id;
    }
    drop(stream);
    wait_connections(&client, &server.base, "agui", 0).await;

    // Published while nobody is connected: kept in the channel's replay window.
    let mut missed = Vec::new();
    for i in 1..=3 {
        let event = text_message(&format!("missed {i}"));
        let reply = post(&client, &url, event.to_string()).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["receivers"], 0, "nobody is connected: {body}");
        let id = body["id"].as_str().expect("the retained channel gives ids");
        missed.push((id.to_owned(), event));
    }

    // Resume with the Last-Event-ID header: the missed events, once each, in order, then live.
    let mut stream = match SseStream::open(&client, &url, Some(&last)).await {
        Ok(stream) => stream,
        Err(reply) => panic!("resume refused: {} {}", reply.status, reply.text()),
    };
    for expected in &missed {
        assert_eq!(&stream.next_message().await, expected);
    }
    let event = text_message("after the resume");
    let id = publish(&client, &url, &event).await;
    assert_eq!(stream.next_message().await, (id.clone(), event));
    drop(stream);
    wait_connections(&client, &server.base, "agui", 0).await;

    // The same with the last_event_id query parameter, as a browser's first request does.
    let event = text_message("missed again");
    let missed_id = publish(&client, &url, &event).await;
    let mut stream = SseStream::connect(&client, &format!("{url}?last_event_id={id}")).await;
    assert_eq!(stream.next_message().await, (missed_id, event));

    // An id that cannot be resumed starts the stream with a `reset`, never an error.
    let mut stream = match SseStream::open(&client, &url, Some("garbage")).await {
        Ok(stream) => stream,
        Err(reply) => panic!(
            "a garbage id is not an error: {} {}",
            reply.status,
            reply.text()
        ),
    };
    let reset = stream.next_event().await;
    assert_eq!(reset.event, "reset", "{reset:?}");
    let data: Value = serde_json::from_str(&reset.data).expect("reset data is JSON");
    assert_eq!(data, json!({"type": "reset", "reason": "malformed"}));
    assert_eq!(stats(&client, &server.base).await["agui"]["resets"], 1);
}

#[tokio::test]
async fn bad_input_is_a_clear_json_error_and_changes_nothing() {
    let server = DemoServer::start();
    let client = client();
    let url = server.url("/events/agui/u");
    let mut stream = SseStream::connect(&client, &url).await;
    let before = stats(&client, &server.base).await;

    // Unknown channel: 404 on every method.
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let body = (method == Method::POST).then(|| text_message("x").to_string().into_bytes());
        let reply = send(&client, method.clone(), &server.url("/events/nope/u"), body).await;
        let message = reply.assert_error(StatusCode::NOT_FOUND, "unknown_channel");
        assert!(message.contains("nope"), "{method}: {message}");
    }

    // Not JSON.
    let reply = post(&client, &url, r#"{"type":"#).await;
    let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(message.contains("not JSON"), "{message}");
    let reply = post(&client, &url, "").await;
    let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(message.contains("empty"), "{message}");

    // JSON, but not an event of the channel's type: serde says what is wrong. (An AG-UI event
    // of a type the model does not know is carried, not refused: see agui_model.rs.)
    let page_view = json!({"type": "PAGE_VIEW", "session_id": "s-1", "page": "/"});
    let reply = post(&client, &server.url("/events/a2a/u"), page_view.to_string()).await;
    let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid_event");
    assert!(message.contains("unknown variant `PAGE_VIEW`"), "{message}");
    let reply = post(
        &client,
        &url,
        r#"{"type":"TEXT_MESSAGE_START","messageId":"m","role":"tool"}"#,
    )
    .await;
    let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid_event");
    assert!(message.contains("invalid `role`"), "{message}");
    let reply = post(&client, &url, r#"{"type":"TEXT_MESSAGE_CONTENT"}"#).await;
    let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid_event");
    assert!(message.contains("missing field `messageId`"), "{message}");
    let reply = post(&client, &url, "[1, 2]").await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_event");
    // AG-UI events are not posted to context: it takes system events.
    let reply = post(
        &client,
        &server.url("/events/context/u"),
        text_message("x").to_string(),
    )
    .await;
    let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid_event");
    assert!(message.contains("system event"), "{message}");

    // Over the body limit.
    let huge = text_message(&"x".repeat(100 * 1024)).to_string();
    let reply = post(&client, &url, huge).await;
    let message = reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert!(message.contains("65536"), "{message}");

    // Nothing was published: the counters are unchanged, and the stream's next event is the
    // next good one.
    assert_eq!(stats(&client, &server.base).await, before);
    let event = text_message("good");
    let id = publish(&client, &url, &event).await;
    assert_eq!(stream.next_message().await, (id, event));

    // Routes that do not exist are JSON errors too.
    get(&client, &server.url("/nope"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    send(&client, Method::PUT, &url, None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

/// Every error the demo answers is the JSON error, those no handler of the demo writes
/// included: the extractors' rejections (axum answers them in plain text unless the handler
/// maps them) and the request heads `sse_hub::serve` refuses before any handler runs (hyper
/// answers them with an empty body).
#[tokio::test]
async fn every_error_is_a_json_error() {
    let server = DemoServer::start();
    let client = client();
    for (method, path, status, code) in [
        // Not UTF-8 once percent-decoded: the path extractor refuses it.
        (
            Method::GET,
            "/events/agui/%FF",
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            Method::POST,
            "/events/agui/%FF",
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            Method::DELETE,
            "/events/agui/%FF",
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            Method::GET,
            "/events/agui/u?thread=a&thread=b",
            StatusCode::BAD_REQUEST,
            "invalid_thread",
        ),
        (
            Method::POST,
            "/events/agui/u?thread=",
            StatusCode::BAD_REQUEST,
            "invalid_thread",
        ),
        (
            Method::POST,
            "/events/a2a/u?thread=t",
            StatusCode::BAD_REQUEST,
            "invalid_thread",
        ),
        (
            Method::OPTIONS,
            "/events/agui/u",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/events/agui",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let body = (method == Method::POST).then(|| text_message("x").to_string().into_bytes());
        let reply = send(&client, method.clone(), &server.url(path), body).await;
        let message = reply.assert_error(status, code);
        println!("{method} {path}: {status} {message}");
    }

    let cookie = "c".repeat(65 * 1024);
    for (request, status, code) in [
        // A chunked body that is not: the body extractor fails to read it.
        (
            "POST /events/agui/u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\nzz\r\n"
                .to_owned(),
            StatusCode::BAD_REQUEST,
            "unreadable_body",
        ),
        (
            format!("GET /events/agui/u HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\n\r\n"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_head_too_large",
        ),
        (
            "GET /events/agui/u HTTP/1.1\r\nHost t\r\n\r\n".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
    ] {
        let reply = send_raw(server.addr, request.as_bytes()).await;
        let message = reply.assert_error(status, code);
        println!("{}: {status} {message}", request.lines().next().unwrap());
    }
}

#[tokio::test]
async fn the_17th_connection_of_a_user_is_429() {
    let server = DemoServer::start();
    let client = client();
    let url = server.url("/events/agui/u");
    let mut open = Vec::new();
    for _ in 0..16 {
        open.push(SseStream::connect(&client, &url).await);
    }
    let refused = match SseStream::open(&client, &url, None).await {
        Ok(_) => panic!("the 17th connection should be refused"),
        Err(reply) => reply,
    };
    let message = refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "too_many_connections");
    assert!(message.contains("16"), "{message}");

    // Other users and the user's other channels are not affected.
    SseStream::connect(&client, &server.url("/events/agui/someone-else")).await;
    SseStream::connect(&client, &server.url("/events/context/u")).await;

    // A connection that closes frees its place.
    open.pop();
    wait_connections(&client, &server.base, "agui", 16 - 1).await;
    let mut again = SseStream::connect(&client, &url).await;
    let event = text_message("to all 16");
    let reply = post(&client, &url, event.to_string()).await;
    assert_eq!(reply.json()["receivers"], 16);
    let (_, data) = again.next_message().await;
    assert_eq!(data, event);
}

#[tokio::test]
async fn stats_and_metrics_respond() {
    let server = DemoServer::start();
    let client = client();
    let url = server.url("/events/agui/u");
    let mut stream = SseStream::connect(&client, &url).await;
    let event = text_message("counted");
    let id = publish(&client, &url, &event).await;
    assert_eq!(stream.next_message().await, (id, event));

    let stats = stats(&client, &server.base).await;
    for channel in ["agui", "a2a", "context", "analytics"] {
        assert!(stats[channel].is_object(), "stats of {channel}: {stats}");
    }
    assert_eq!(stats["agui"]["connections"], 1, "{stats}");
    assert_eq!(stats["agui"]["published"], 1, "{stats}");

    let metrics = get(&client, &server.url("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.content_type.starts_with("text/plain"),
        "{:?}",
        metrics.content_type
    );
    let text = metrics.text();
    for line in [
        "sse_hub_events_published_total{channel=\"agui\"} 1",
        "sse_hub_connections{channel=\"agui\"} 1",
        "sse_hub_connections{channel=\"context\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "/metrics should have {line:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn sigterm_with_clients_connected_exits_cleanly_and_promptly() {
    let mut server = DemoServer::start();
    let client = client();
    let mut streams = Vec::new();
    for path in [
        "/events/agui/u",
        "/events/agui/u",
        "/events/context/u",
        "/events/analytics/v",
    ] {
        streams.push(SseStream::connect(&client, &server.url(path)).await);
    }
    wait_connections(&client, &server.base, "agui", 2).await;

    server.terminate();
    let status = server.wait_exit(Duration::from_secs(2));
    let status = status.expect("the server should exit within 2 s of SIGTERM");
    assert!(
        status.success(),
        "a clean shutdown exits with success: {status}"
    );
    for stream in &mut streams {
        stream.assert_ends().await;
    }
    // Nothing listens any more.
    let refused = client.get(server.url("/stats")).timeout(WAIT).send().await;
    assert!(refused.is_err(), "the server should be gone: {refused:?}");
}

/// The demo takes its settings from the environment. `--help` says so and starts nothing; an
/// argument it does not know is refused, so that `--port 8080` is not silently ignored while the
/// server listens on 3000.
#[test]
fn help_names_the_settings_and_unknown_arguments_are_refused() {
    for flag in ["--help", "-h"] {
        let (code, stdout, _) = run_demo(&[flag], &[]);
        assert_eq!(code, Some(0), "{flag}");
        for setting in ["ADDR", "HEARTBEAT_MS", "REDIS_URL", "REDIS_CA", "RUST_LOG"] {
            assert!(
                stdout.contains(setting),
                "{flag} does not name {setting}: {stdout}"
            );
        }
    }
    let (code, stdout, stderr) = run_demo(&["--port", "8080"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--port") && stderr.contains("ADDR"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "it started: {stdout}");
}
