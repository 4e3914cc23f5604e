//! A new user's application, written from the README and the crate docs alone: an AI-agent
//! platform's axum app with bearer-token authentication, one SSE route per standard channel,
//! an agent that POSTs its AG-UI run into a thread token by token, a second tab joining
//! mid-answer, `Last-Event-ID` resume, metrics, and graceful shutdown with `sse_hub::serve`.
//! Each test walks one thing such a user does (or gets wrong) and checks what they rely on.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{Served, SseClient, WAIT, bounded};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sse_hub::models::AgUiEvent;
use sse_hub::sse::error_response;
use sse_hub::{Channel, Config, EventBody, EventRouter, LastEventId, ThreadQuery, UserId};

/// The signed-in user: `Authorization: Bearer user:{id}`, the id percent-encoded (a real app
/// checks a token).
struct CurrentUser(UserId);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let unauthorized =
            |why: &str| error_response(StatusCode::UNAUTHORIZED, "unauthorized", why);
        let header = parts
            .headers
            .get("authorization")
            .ok_or_else(|| unauthorized("no Authorization header"))?;
        let token = header
            .to_str()
            .map_err(|_| unauthorized("the token is not ASCII"))?
            .strip_prefix("Bearer user:")
            .ok_or_else(|| unauthorized("not a bearer token of ours"))?;
        let subject = percent_encoding::percent_decode_str(token)
            .decode_utf8()
            .map_err(|_| unauthorized("the token is not UTF-8"))?;
        Ok(CurrentUser(UserId::from(subject.as_ref())))
    }
}

/// `GET /events/{channel}[?thread=]`.
async fn events(
    State(router): State<EventRouter>,
    Path(channel): Path<String>,
    CurrentUser(user): CurrentUser,
    ThreadQuery(thread): ThreadQuery,
    last_event_id: LastEventId,
) -> Response {
    let Ok(channel) = channel.parse::<Channel>() else {
        return error_response(StatusCode::NOT_FOUND, "unknown_channel", channel);
    };
    match thread {
        None => router.channel_response(channel, &user, &last_event_id),
        Some(thread) => router.channel_response_in_thread(channel, &user, &thread, &last_event_id),
    }
    .into_response()
}

/// `POST /agent/{thread}`: the agent publishes one AG-UI event into the user's thread.
async fn agent_event(
    State(router): State<EventRouter>,
    CurrentUser(user): CurrentUser,
    Path(thread): Path<String>,
    EventBody(event): EventBody<AgUiEvent>,
) -> Response {
    let thread = match sse_hub::ThreadId::new(&thread) {
        Ok(thread) => thread,
        Err(error) => return error.into_response(),
    };
    match router.route_agui_in_thread(&user, &thread, &event) {
        Ok(routed) => (StatusCode::ACCEPTED, axum::Json(routed)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /whoami`: reads the peer, as a rate limiter or an audit log would.
async fn whoami(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    CurrentUser(user): CurrentUser,
) -> Response {
    axum::Json(json!({"user": user.as_str(), "peer": peer.to_string()})).into_response()
}

/// `GET /audited/agui`: the AG-UI stream, opened only once the peer is known (an audit log).
async fn audited_events(
    State(router): State<EventRouter>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    CurrentUser(user): CurrentUser,
    last_event_id: LastEventId,
) -> Response {
    assert!(peer.ip().is_loopback());
    router
        .agui()
        .sse_response(&user, &last_event_id)
        .into_response()
}

fn app(router: EventRouter) -> Router {
    Router::new()
        .route("/events/{channel}", get(events))
        .route("/agent/{thread}", post(agent_event))
        .route("/whoami", get(whoami))
        .route("/audited/agui", get(audited_events))
        .with_state(router)
}

struct App {
    served: Served,
    router: EventRouter,
    http: reqwest::Client,
    metrics: metrics_util::debugging::Snapshotter,
}

impl App {
    async fn start(config: Config) -> Self {
        Self::start_with(config, app).await
    }

    async fn start_with(config: Config, build: impl FnOnce(EventRouter) -> Router) -> Self {
        // The recorder must be there when the broadcasters are built: they register their
        // handles then. (An application installs its exporter globally, first thing.)
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let metrics = recorder.snapshotter();
        let router = metrics::with_local_recorder(&recorder, || EventRouter::new(config));
        let ending = router.clone();
        let served = Served::start(build(router.clone()), true, move || ending.shutdown()).await;
        Self {
            served,
            router,
            http: common::http_client(),
            metrics,
        }
    }

    /// The counter `name` of the AG-UI channel, as the metrics exporter reads it.
    fn agui_counter(&self, name: &str) -> u64 {
        use metrics_util::debugging::DebugValue;
        let snapshot = self.metrics.snapshot().into_vec();
        let found = snapshot.into_iter().find(|(key, _, _, _)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "channel" && l.value() == "agui")
        });
        match found {
            Some((_, _, _, DebugValue::Counter(n))) => n,
            other => panic!("no agui counter {name}: {other:?}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.served.addr)
    }

    /// A browser tab of `user`: a client that sends the user's token on every request.
    async fn tab(&self, user: &str, path: &str, last_event_id: Option<&str>) -> SseClient {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer user:{}", token(user))).expect("token"),
        );
        headers.insert("accept", HeaderValue::from_static("text/event-stream"));
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .build()
            .expect("client");
        let id = last_event_id.map(|id| HeaderValue::from_str(id).expect("id"));
        SseClient::open(&client, &self.url(path), id).await
    }

    async fn post(&self, user: &str, thread: &str, event: Value) -> (StatusCode, Value) {
        let response = bounded(
            "the POST",
            WAIT,
            self.http
                .post(self.url(&format!("/agent/{thread}")))
                .header("authorization", format!("Bearer user:{}", token(user)))
                .header("content-type", "application/json")
                .body(event.to_string())
                .send(),
        )
        .await
        .expect("POST");
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("a {status} answer whose body is not JSON: {text:?}"));
        (status, body)
    }

    async fn shut_down(self) {
        self.served.shut_down().await;
    }
}

fn token(user: &str) -> String {
    percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn data(event: &eventsource_stream::Event) -> Value {
    serde_json::from_str(&event.data).expect("JSON data")
}

fn started(thread: &str, run: &str) -> Value {
    json!({"type": "RUN_STARTED", "threadId": thread, "runId": run, "input": {
        "threadId": thread, "runId": run, "tools": [], "context": [], "state": {},
        "forwardedProps": {},
        "messages": [{"id": format!("u-{run}"), "role": "user", "content": "hi"}],
    }})
}

fn content(delta: &str) -> Value {
    json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m-1", "delta": delta})
}

/// The whole documented flow: tokens, a tab that joins mid-answer, a run that errors, the
/// thread reused for a second run, an unthreaded tab that resumes by id; for users whose ids
/// have spaces, non-ASCII, nothing at all, or 4 000 bytes.
#[tokio::test]
async fn an_agent_run_reaches_every_tab_of_the_signed_in_user_whatever_their_id() {
    let app = App::start(Config::default()).await;
    let anonymous = bounded(
        "the anonymous GET",
        WAIT,
        app.http
            .get(app.url("/events/agui"))
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("GET");
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = serde_json::from_str(&anonymous.text().await.expect("body")).expect("JSON");
    assert_eq!(body["error"], "unauthorized");

    let long = "x".repeat(4000);
    for user in ["alice smith", "Ünïcødé 🙂", "", long.as_str()] {
        let mut first = app.tab(user, "/events/agui?thread=t-1", None).await;
        let mut plain = app.tab(user, "/events/agui", None).await;
        assert_eq!(first.status.as_u16(), 200, "user {user:?}");
        // Someone else's tab sees nothing of it.
        let mut other = app.tab("mallory", "/events/agui", None).await;
        for event in [
            started("t-1", "r-1"),
            json!({"type": "TEXT_MESSAGE_START", "messageId": "m-1", "role": "assistant"}),
            content("Hel"),
            content("lo "),
        ] {
            let (status, body) = app.post(user, "t-1", event).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
        let mut second = app.tab(user, "/events/agui?thread=t-1", None).await;
        let mut opening = Vec::new();
        for _ in 0..3 {
            opening.push(data(&second.expect_event().await));
        }
        assert_eq!(opening[0]["type"], "RUN_STARTED");
        assert_eq!(opening[1]["messages"][1]["content"], "Hello ");
        assert_eq!(opening[2]["type"], "TEXT_MESSAGE_START");
        for event in [
            content("world"),
            json!({"type": "TEXT_MESSAGE_END", "messageId": "m-1"}),
            json!({"type": "RUN_ERROR", "message": "the model timed out", "code": "timeout"}),
            started("t-1", "r-2"),
        ] {
            assert_eq!(app.post(user, "t-1", event).await.0, StatusCode::ACCEPTED);
        }
        let mut types = Vec::new();
        for _ in 0..8 {
            types.push(
                data(&first.expect_event().await)["type"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(types.last().unwrap(), "RUN_STARTED");
        assert_eq!(data(&second.expect_event().await)["delta"], "world");
        // A third tab opens on the second run, with the whole conversation.
        let mut third = app.tab(user, "/events/agui?thread=t-1", None).await;
        let run = data(&third.expect_event().await);
        assert_eq!(run["runId"], "r-2");
        let messages = data(&third.expect_event().await)["messages"].clone();
        let ids: Vec<&str> = messages
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["u-r-1", "m-1", "u-r-2"]);
        // The unthreaded tab drops after three events and resumes with the fourth.
        let mut last = String::new();
        for _ in 0..3 {
            last = plain.expect_event().await.id;
        }
        drop(plain);
        let mut resumed = app.tab(user, "/events/agui", Some(&last)).await;
        assert_eq!(data(&resumed.expect_event().await)["delta"], "lo ");
        // Someone else's tab got none of it: the first event it gets is its own.
        assert_eq!(
            app.post("mallory", "own", started("own", "r-m")).await.0,
            StatusCode::ACCEPTED
        );
        assert_eq!(data(&other.expect_event().await)["threadId"], "own");
    }
    // Every accepted event was counted: 8 per user, and mallory's own.
    let published = app.agui_counter(sse_hub::metrics::EVENTS_PUBLISHED);
    assert_eq!(published, 4 * 8 + 4, "{published}");
    app.shut_down().await;
}

/// `sse_hub::serve` takes a `Router`, so an application cannot make it a service "with connect
/// info" as it would for `axum::serve`: the peer must come with every request, on the lean
/// HTTP/1.1 path (an `EventSource` GET), on hyper's HTTP/1.1 and over h2c.
#[tokio::test]
async fn handlers_get_the_peer_address_on_every_path() {
    let app = App::start(Config::default()).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    for (client, path) in [(&app.http, "hyper's HTTP/1.1"), (&h2, "h2c")] {
        let response = bounded(
            "GET /whoami",
            WAIT,
            client
                .get(app.url("/whoami"))
                .header("authorization", "Bearer user:alice")
                .send(),
        )
        .await
        .expect("GET");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        assert_eq!(status, 200, "over {path}: {text}");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        let peer: SocketAddr = body["peer"].as_str().unwrap().parse().expect("an address");
        assert!(peer.ip().is_loopback(), "{peer}");
    }
    // The lean path: a GET that can only be an SSE stream.
    let mut tab = app.tab("alice", "/audited/agui", None).await;
    assert_eq!(tab.status.as_u16(), 200, "{}", tab.raw_text());
    let event = json!({"type": "CUSTOM", "name": "ping", "value": 1});
    let event: AgUiEvent = serde_json::from_value(event).expect("event");
    app.router
        .route_agui(&UserId::from("alice"), &event)
        .expect("publish");
    assert_eq!(data(&tab.expect_event().await)["name"], "ping");
    app.shut_down().await;
}

/// A body that is not an event is refused with a JSON error, as every other refusal is, and
/// nothing is published. (With `axum::Json`, as the README's quickstart had it, a missing
/// member was a `422` with a plain-text body.)
#[tokio::test]
async fn a_body_that_is_not_an_event_is_a_json_error_and_publishes_nothing() {
    let app = App::start(Config::default()).await;
    let mut tab = app.tab("alice", "/events/agui", None).await;
    let post = |body: String, content_type: Option<&'static str>| {
        let mut request = app
            .http
            .post(app.url("/agent/t-1"))
            .header("authorization", "Bearer user:alice")
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = bounded("the POST", WAIT, request.send())
                .await
                .expect("POST");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("a {status} whose body is not JSON: {text:?}"));
            (status, body)
        }
    };
    let json = Some("application/json");
    let (status, body) = post(r#"{"type":"TEXT_MESSAGE_CONTENT"}"#.into(), json).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_event")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("messageId"),
        "{body}"
    );
    let (status, body) = post("{not json".into(), json).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );
    let (status, body) = post(String::new(), json).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );
    let (status, body) = post(format!("\"{}\"", "x".repeat(3 << 20)), json).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("body_too_large")),
        "{body}"
    );
    // Past the body, the library's own refusals: a member the schemas reject, a frame too large.
    let (status, body) = post(
        json!({"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "robot"}).to_string(),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_event")),
        "{body}"
    );
    let (status, body) = post(content(&"x".repeat(70 * 1024)).to_string(), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("frame_too_large")),
        "{body}"
    );
    // An agent that sends no Content-Type is served all the same.
    let (status, body) = post(started("t-1", "r-1").to_string(), None).await;
    assert_eq!(status, 202, "{body}");
    // The first event the tab gets is the one accepted.
    assert_eq!(data(&tab.expect_event().await)["type"], "RUN_STARTED");
    app.shut_down().await;
}

/// The tower-http layers applications stack on every route: compression, a request timeout, a
/// response-body timeout, CORS and tracing. The stream is not compressed (it would be buffered),
/// outlives both timeouts while heartbeats flow, and carries the CORS headers.
#[tokio::test]
async fn the_stream_survives_the_tower_http_layers_commonly_stacked() {
    use tower_http::compression::CompressionLayer;
    use tower_http::cors::CorsLayer;
    use tower_http::timeout::{ResponseBodyTimeoutLayer, TimeoutLayer};
    use tower_http::trace::TraceLayer;

    let heartbeat = Duration::from_millis(100);
    let mut config = Config::default();
    config.sse.heartbeat_interval = heartbeat;
    let app = App::start_with(config, |router| {
        app(router)
            .layer(CompressionLayer::new())
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                heartbeat / 2,
            ))
            // Longer than the heartbeat interval, as the module docs of `sse` ask.
            .layer(ResponseBodyTimeoutLayer::new(4 * heartbeat))
            .layer(CorsLayer::permissive())
            .layer(TraceLayer::new_for_http())
    })
    .await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer user:alice"),
    );
    headers.insert("accept", HeaderValue::from_static("text/event-stream"));
    headers.insert("accept-encoding", HeaderValue::from_static("gzip"));
    headers.insert("origin", HeaderValue::from_static("https://app.example"));
    let client = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .expect("client");
    let mut tab = SseClient::open(&client, &app.url("/events/agui?thread=t-1"), None).await;
    assert_eq!(tab.status.as_u16(), 200, "{}", tab.raw_text());
    assert_eq!(tab.headers.get("content-encoding"), None);
    assert_eq!(
        tab.headers
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"*"[..])
    );
    assert_eq!(
        app.post("alice", "t-1", started("t-1", "r-1")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(data(&tab.expect_event().await)["type"], "RUN_STARTED");
    // Past both timeouts several times over, the stream is still open and live.
    tab.read_raw_until(WAIT, |raw| common::count(raw, b": heartbeat") >= 8)
        .await;
    assert!(tab.end().is_none(), "the stream ended: {:?}", tab.end());
    app.post(
        "alice",
        "t-1",
        json!({"type": "TEXT_MESSAGE_START", "messageId": "m-1", "role": "assistant"}),
    )
    .await;
    assert_eq!(
        data(&tab.expect_event().await)["type"],
        "TEXT_MESSAGE_START"
    );
    // Shutdown mid-run, through the layers: `serve` returns (within `WAIT`), and the stream
    // ends with a jittered `retry:`.
    app.shut_down().await;
    tab.read_to_end(WAIT).await;
    assert!(
        matches!(tab.end(), Some(common::End::Complete)),
        "{:?}",
        tab.end()
    );
    let raw = tab.raw_text();
    let last = raw.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("retry: "), "{raw:?}");
}

/// The process-wide statics are used from each `#[tokio::test]`'s own runtime, one after the
/// other and at once: each runtime's subscriptions get their events.
#[test]
fn the_statics_serve_several_runtimes() {
    use sse_hub::AGUI_BROADCASTER;
    use tokio_stream::StreamExt;

    let round = |user: UserId, n: usize| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut tab = AGUI_BROADCASTER.subscribe(&user).expect("subscribe");
            let event = json!({"type": "CUSTOM", "name": "n", "value": n});
            let event: AgUiEvent = serde_json::from_value(event).expect("event");
            let published = AGUI_BROADCASTER.broadcast(&user, &event).expect("publish");
            let frame = bounded("the event", WAIT, tab.next())
                .await
                .expect("a frame");
            assert_eq!(frame.id(), published.id);
        });
    };
    for n in 0..3 {
        round(UserId::from("static-user"), n);
    }
    let threads: Vec<_> = (0..4)
        .map(|n| std::thread::spawn(move || round(UserId::from(format!("static-{n}")), n)))
        .collect();
    for thread in threads {
        thread.join().expect("a runtime's round");
    }
}
