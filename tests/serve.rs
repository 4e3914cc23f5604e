//! `sse_hub::serve` (issue 13): HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port,
//! many SSE streams multiplexed on one HTTP/2 connection, graceful shutdown; and the demo
//! server, which uses it, over HTTP/2.
//!
//! Clients are reqwest (hyper's client, HTTP/1.1 or `http2_prior_knowledge`) with the
//! independent `eventsource-stream` parser; nothing here uses sse-hub's encoder to read.

mod common;
mod support;

use std::time::Duration;

use common::raw::Raw;
use common::{Served, SseClient, WAIT, bounded, router};
use futures_util::StreamExt;
use futures_util::future::join_all;
use reqwest::{StatusCode, Version};
use serde_json::{Value, json};
use sse_hub::{Broadcaster, Config, UserId};
use tokio::net::TcpListener;

async fn start(hub: &Broadcaster<Value>) -> Served {
    start_with(hub, true).await
}

/// `sse_hub::serve` on `127.0.0.1:0` with the lean HTTP/1.1 path on or off; a graceful shutdown
/// ends the hub's streams first.
async fn start_with(hub: &Broadcaster<Value>, lean: bool) -> Served {
    let ending = hub.clone();
    Served::start(router(hub.clone()), lean, move || ending.shutdown()).await
}

fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client")
}

fn publish(hub: &Broadcaster<Value>, user: &str, n: u64) {
    hub.broadcast(&UserId::from(user), &json!({"type": "note", "n": n}))
        .expect("publish")
        .id
        .expect("the user has a channel");
}

fn number(event: &eventsource_stream::Event) -> u64 {
    let data: Value = serde_json::from_str(&event.data).expect("JSON data");
    data["n"].as_u64().expect("a note")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_1_and_h2c_with_prior_knowledge_share_the_port() {
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let server = start(&hub).await;

    let http1 = common::http_client();
    let mut tab1 = SseClient::open(&http1, &server.events_url("ada"), None).await;
    assert_eq!(tab1.status, StatusCode::OK);

    let h2 = h2_client();
    let response = bounded(
        "an HTTP/2 response head",
        WAIT,
        h2.get(server.events_url("ada")).send(),
    )
    .await
    .expect("GET over h2c");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "the same SSE headers over HTTP/2"
    );
    assert!(
        response.headers().get("transfer-encoding").is_none(),
        "no chunked coding over HTTP/2"
    );
    let mut tab2 = eventsource_stream::Eventsource::eventsource(response.bytes_stream());

    // Both connections count against the user, so both are subscribed once this holds.
    common::wait_until("both tabs are subscribed", WAIT, || {
        hub.connection_count(&UserId::from("ada")) == 2
    })
    .await;
    for n in 1..=20 {
        publish(&hub, "ada", n);
    }
    for n in 1..=20 {
        let event = tab1.expect_event().await;
        assert_eq!(number(&event), n, "HTTP/1.1");
        let event = bounded("an event over HTTP/2", WAIT, tab2.next())
            .await
            .expect("the stream goes on")
            .expect("the parser accepts it");
        assert_eq!(number(&event), n, "HTTP/2");
    }
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_streams_share_one_http2_connection_and_shutdown_ends_them_all() {
    const STREAMS: usize = 300;
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let server = start(&hub).await;
    let h2 = h2_client();

    // More than hyper's default of 200 concurrent streams per connection: the default of
    // `serve` is 1 000.
    let opened = join_all((0..STREAMS).map(|i| {
        let request = h2.get(server.events_url(&format!("u{i}")));
        async move {
            let response = bounded("an HTTP/2 response head", WAIT, request.send())
                .await
                .expect("GET over h2c");
            assert_eq!(response.version(), Version::HTTP_2);
            assert_eq!(response.status(), StatusCode::OK);
            eventsource_stream::Eventsource::eventsource(response.bytes_stream())
        }
    }))
    .await;
    common::wait_until("every stream is subscribed", WAIT, || {
        hub.total_connections() == STREAMS
    })
    .await;
    assert_eq!(server.accepted(), 1, "every stream on one connection");
    for i in 0..STREAMS {
        publish(&hub, &format!("u{i}"), 1);
    }
    let mut streams = Vec::new();
    for mut stream in opened {
        let event = bounded("the event", WAIT, stream.next())
            .await
            .expect("an event")
            .expect("parsed");
        assert_eq!(number(&event), 1);
        streams.push(stream);
    }

    // Shutdown: every stream ends (its body completes), and serve returns.
    server.shut_down().await;
    for mut stream in streams {
        let rest = bounded("the stream to end", WAIT, async {
            let mut rest = Vec::new();
            while let Some(item) = stream.next().await {
                rest.push(item);
            }
            rest
        })
        .await;
        assert!(
            rest.iter().all(|item| item.is_ok()),
            "a clean end, not a reset: {rest:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_server_serves_its_streams_over_h2c() {
    let demo = support::DemoServer::start();
    let h2 = h2_client();
    let response = bounded(
        "an HTTP/2 response head",
        WAIT,
        h2.get(demo.url("/events/agui/h2user")).send(),
    )
    .await
    .expect("GET over h2c");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());

    let event = json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m-1", "delta": "over h2"});
    let reply = bounded(
        "the POST over h2c",
        WAIT,
        h2.post(demo.url("/events/agui/h2user"))
            .header("content-type", "application/json")
            .body(event.to_string())
            .send(),
    )
    .await
    .expect("POST over h2c");
    assert_eq!(reply.version(), Version::HTTP_2);
    assert_eq!(reply.status(), StatusCode::ACCEPTED);

    let received = bounded("the event over h2c", WAIT, events.next())
        .await
        .expect("an event")
        .expect("parsed");
    let data: Value = serde_json::from_str(&received.data).expect("JSON");
    assert_eq!(data["delta"], "over h2");
}

// The lean HTTP/1.1 path: a `GET` with `Accept: text/event-stream` (what `EventSource` sends).

const SSE_GET: &str = "Accept: text/event-stream\r\n";

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n")
}

/// The response head with its `date` line taken out.
fn head_without_date(head: &[u8]) -> String {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_path_writes_what_hyper_writes() {
    let mut seen = Vec::new();
    for lean in [false, true] {
        let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
        let server = start_with(&hub, lean).await;
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&get("/events/ada", SSE_GET)).await;
        let head = raw.read_through(b"\r\n\r\n").await;
        let head_text = String::from_utf8_lossy(&head).into_owned();
        assert!(
            head_text.lines().any(|line| line.starts_with("date: ")),
            "{head_text}"
        );
        let opening = raw.read_through(b"\n\n\r\n").await;
        publish(&hub, "ada", 1);
        let event = raw.read_through(b"\n\n\r\n").await;
        // The ids carry the channel's random epoch: compare their shape only.
        let opening = String::from_utf8_lossy(&opening).into_owned();
        let event = String::from_utf8_lossy(&event).into_owned();
        let epoch = opening
            .split("id: ")
            .nth(1)
            .and_then(|rest| rest.split('-').next())
            .expect("a priming id")
            .to_owned();
        seen.push((
            head_without_date(&head),
            opening.replace(&epoch, "EPOCH"),
            event.replace(&epoch, "EPOCH"),
        ));
        server.shut_down().await;
    }
    assert_eq!(seen[0], seen[1], "hyper (left) and the lean path (right)");
    assert!(
        seen[1].0.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        seen[1].0
    );
    assert!(
        seen[1].0.contains("transfer-encoding: chunked"),
        "{}",
        seen[1].0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_connection_serves_again_after_its_stream_ends_and_hands_other_requests_to_hyper() {
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let server = start(&hub).await;
    let mut raw = Raw::connect(server.addr).await;

    // A stream, ended by the server: the last chunk comes, the connection stays open.
    raw.send(&get("/events/ada", SSE_GET)).await;
    raw.read_through(b"\n\n\r\n").await;
    publish(&hub, "ada", 1);
    raw.read_through(b"\"n\":1").await;
    assert_eq!(hub.disconnect_user(&UserId::from("ada")), 1);
    raw.read_through(b"\r\n0\r\n\r\n").await;

    // The same connection: another stream on the lean path...
    raw.send(&get("/events/ada", SSE_GET)).await;
    let head = raw.read_through(b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 200 OK"));
    raw.read_through(b"\n\n\r\n").await;
    publish(&hub, "ada", 2);
    raw.read_through(b"\"n\":2").await;

    // ...and, pipelined behind it, a request of another kind, which hyper answers once the
    // stream ends.
    raw.send(&get("/nothing-here", "")).await;
    assert_eq!(hub.disconnect_user(&UserId::from("ada")), 1);
    raw.read_through(b"\r\n0\r\n\r\n").await;
    let head = raw.read_through(b"\r\n\r\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 404 Not Found"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // From now on hyper serves the connection: a stream request still works.
    raw.send(&get("/events/ada", SSE_GET)).await;
    let head = raw.read_through(b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 200 OK"));
    raw.read_through(b"\n\n\r\n").await;
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_goes_out_without_content_length_or_body_on_both_paths() {
    // A 204 is how an SSE endpoint tells `EventSource` to stop reconnecting. RFC 9110 8.6: no
    // `Content-Length` on a 1xx or 204, and no body, so no last chunk either.
    let stop = || {
        axum::Router::new().route(
            "/events/{user}",
            axum::routing::get(|| async { StatusCode::NO_CONTENT }),
        )
    };
    for lean in [false, true] {
        let server = Served::start(stop(), lean, || {}).await;
        let mut raw = Raw::connect(server.addr).await;
        for _ in 0..2 {
            // The second answer on the same connection also shows that nothing followed the
            // first one's head.
            raw.send(&get("/events/ada", SSE_GET)).await;
            let head = raw.read_head_lowercase().await;
            let path = if lean { "lean" } else { "hyper" };
            assert!(
                head.starts_with("http/1.1 204 no content\r\n"),
                "{path}: {head}"
            );
            assert!(!head.contains("content-length"), "{path}: {head}");
            assert!(!head.contains("transfer-encoding"), "{path}: {head}");
        }
        server.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_says_connection_close_closes_the_connection_on_both_paths() {
    let closing = || {
        axum::Router::new().route(
            "/events/{user}",
            axum::routing::get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::CONNECTION, "close")],
                    "try elsewhere",
                )
            }),
        )
    };
    for lean in [false, true] {
        use tokio::io::AsyncReadExt;
        let server = Served::start(closing(), lean, || {}).await;
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&get("/events/ada", SSE_GET)).await;
        let head = raw.read_head_lowercase().await;
        assert_eq!(
            head.matches("connection: close").count(),
            1,
            "lean {lean}: {head}"
        );
        raw.read_through(b"try elsewhere").await;
        let mut rest = Vec::new();
        let read = bounded("the close", WAIT, raw.stream.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok() && rest.is_empty(),
            "lean {lean}: {read:?} {rest:?}"
        );
        server.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_whose_lines_end_in_a_bare_lf_is_served_on_both_paths() {
    // RFC 9112 2.2: a recipient may take a bare LF for a line's end; hyper does.
    for lean in [false, true] {
        let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
        let server = start_with(&hub, lean).await;
        let mut raw = Raw::connect(server.addr).await;
        raw.send("GET /events/ada HTTP/1.1\nHost: test\nAccept: text/event-stream\n\n")
            .await;
        let head = raw.read_through(b"\r\n\r\n").await;
        assert!(
            head.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "lean {lean}: {}",
            String::from_utf8_lossy(&head)
        );
        raw.read_through(b"\n\n\r\n").await;
        publish(&hub, "ada", 1);
        raw.read_through(b"\"n\":1").await;
        server.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_stream_whose_client_goes_away_is_dropped_at_once() {
    assert_dropped_when_the_client_goes_away(&[String::new()]).await;
}

/// Opens a lean stream for each of `extras` (bytes sent right after the request head), then
/// drops the client: the stream must be dropped well before a heartbeat (15 s apart) could
/// fail to go out, which only reading the socket can do.
async fn assert_dropped_when_the_client_goes_away(extras: &[String]) {
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let server = start(&hub).await;
    let user = UserId::from("ada");
    for extra in extras {
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&format!("{}{extra}", get("/events/ada", SSE_GET)))
            .await;
        raw.read_through(b"\n\n\r\n").await;
        assert_eq!(hub.connection_count(&user), 1);
        drop(raw);
        common::wait_until("the stream is dropped", WAIT, || {
            hub.connection_count(&user) == 0
        })
        .await;
    }
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_lean_streams_with_retry_and_the_last_chunk() {
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let server = start(&hub).await;
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&get(&format!("/events/u{i}"), SSE_GET)).await;
        raw.read_through(b"\n\n\r\n").await;
        streams.push(raw);
    }
    server.shut_down().await;
    for mut raw in streams {
        let rest = raw.read_through(b"\r\n0\r\n\r\n").await;
        assert!(
            String::from_utf8_lossy(&rest).contains("retry: "),
            "a jittered retry before the end"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_lean_request_gets_its_json_error() {
    let mut config = Config::default();
    config.max_connections_per_user = 1;
    let hub: Broadcaster<Value> = Broadcaster::new(config);
    let server = start(&hub).await;
    let mut first = Raw::connect(server.addr).await;
    first.send(&get("/events/ada", SSE_GET)).await;
    first.read_through(b"\n\n\r\n").await;
    let mut second = Raw::connect(server.addr).await;
    second.send(&get("/events/ada", SSE_GET)).await;
    let head = second.read_through(b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{head}"
    );
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("a length")
        .trim()
        .parse()
        .unwrap();
    let body = second.read_through(b"}").await;
    assert_eq!(body.len(), length);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error"], "too_many_connections");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_stream_whose_client_stops_reading_is_closed_by_the_stall_timeout() {
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(
        sse_hub::serve(listener, router(hub.clone()))
            .stall_timeout(Duration::from_millis(300))
            .into_future(),
    );
    // A small receive buffer, so that the socket fills after a few frames.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = bounded("connect", WAIT, socket.connect(addr))
        .await
        .expect("connect");
    let mut raw = Raw::from(stream);
    raw.send(&get("/events/ada", SSE_GET)).await;
    raw.read_through(b"\n\n\r\n").await;
    let user = UserId::from("ada");
    assert_eq!(hub.connection_count(&user), 1);

    // The client reads no more; frames of 32 KiB fill its socket, writes stall, and the
    // connection is closed, which drops the subscription.
    let big = "x".repeat(32 * 1024);
    bounded("the stalled connection to be closed", WAIT, async {
        while hub.connection_count(&user) > 0 {
            let _ = hub.broadcast(&user, &json!({"type": "note", "big": big}));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(raw);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_own_transfer_encoding_is_the_only_one_and_frames_the_body() {
    // A handler that says `transfer-encoding: chunked` itself (one that copies an upstream's
    // headers, say). hyper frames the body as chunked under that one header. A second
    // `transfer-encoding` line is refused by strict intermediaries (nginx answers 502,
    // "upstream sent duplicate header line"), and a `content-length` beside it contradicts
    // the framing.
    use axum::http::header::{CONTENT_TYPE, TRANSFER_ENCODING};
    let app = || {
        axum::Router::new()
            .route(
                "/stream",
                axum::routing::get(|| async {
                    let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                        bytes::Bytes::from_static(b"data: x\n\n"),
                    )]);
                    (
                        [
                            (TRANSFER_ENCODING, "chunked"),
                            (CONTENT_TYPE, "text/event-stream"),
                        ],
                        axum::body::Body::from_stream(frames),
                    )
                }),
            )
            .route(
                "/sized",
                axum::routing::get(|| async { ([(TRANSFER_ENCODING, "chunked")], "hello") }),
            )
    };
    for lean in [false, true] {
        let server = Served::start(app(), lean, || {}).await;
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&get("/stream", SSE_GET)).await;
        let head = raw.read_head_lowercase().await;
        assert_eq!(
            head.matches("transfer-encoding").count(),
            1,
            "lean {lean}: {head}"
        );
        raw.read_through(b"9\r\ndata: x\n\n\r\n0\r\n\r\n").await;
        server.shut_down().await;
    }

    // A body of known size under the handler's `transfer-encoding` (hyper refuses to send such
    // a response at all and closes the connection): chunked, so that a client reads it whole.
    let server = Served::start(app(), true, || {}).await;
    let response = bounded(
        "the response",
        WAIT,
        common::http_client()
            .get(format!("http://{}/sized", server.addr))
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("a response");
    assert!(
        response.headers().get("content-length").is_none(),
        "{:?}",
        response.headers()
    );
    let body = bounded("the body", WAIT, response.bytes()).await;
    assert_eq!(body.as_deref().ok(), Some(&b"hello"[..]), "{body:?}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_is_held_to_the_same_limit_over_http2_as_over_http_1_1() {
    // `max_buf_size` (64 KiB) bounds a request head. Over HTTP/2 hyper's own limit (16 KiB of
    // header list) applied instead: a request with large cookies, served over HTTP/1.1, was
    // refused with 431 when an h2-speaking proxy forwarded it, and one past 64 KiB made h2 send
    // GOAWAY, ending every stream on the connection (the proxy's other clients').
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let server = start(&hub).await;
    let http1 = common::http_client();
    let h2 = h2_client();
    let response = bounded(
        "an HTTP/2 response head",
        WAIT,
        h2.get(server.events_url("ada")).send(),
    )
    .await
    .expect("GET over h2c");
    let mut tab = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    common::wait_until("the tab is subscribed", WAIT, || {
        hub.connection_count(&UserId::from("ada")) == 1
    })
    .await;

    for (kib, status) in [
        (48, StatusCode::OK),
        (80, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    ] {
        let cookie = "c".repeat(kib * 1024);
        for (client, version) in [(&http1, Version::HTTP_11), (&h2, Version::HTTP_2)] {
            let response = bounded(
                "a response head",
                WAIT,
                client
                    .get(server.events_url(&format!("big{kib}")))
                    .header("accept", "text/event-stream")
                    .header("cookie", &cookie)
                    .send(),
            )
            .await
            .unwrap_or_else(|error| panic!("{kib} KiB of cookie over {version:?}: {error}"));
            assert_eq!(response.version(), version);
            assert_eq!(
                response.status(),
                status,
                "{kib} KiB of cookie over {version:?}"
            );
        }
    }

    // The refusal was the request's alone: the tab's stream goes on.
    publish(&hub, "ada", 1);
    let event = bounded("the tab's event", WAIT, tab.next())
        .await
        .expect("the stream goes on")
        .expect("the parser accepts it");
    assert_eq!(number(&event), 1);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_stream_whose_client_sent_more_than_its_head_is_still_dropped_when_it_goes_away() {
    // A request pipelined behind the stream, or a stray empty line after its head (RFC 9112
    // 2.2 lets a client send one): the socket must still be read, or a client that goes away
    // is only found by a heartbeat's failed write, 15 s or more later, and its stream keeps
    // its place in the user's connection cap until then.
    assert_dropped_when_the_client_goes_away(&[get("/nothing-here", ""), "\r\n".to_owned()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_fails_at_its_first_poll_gets_no_head_on_either_path() {
    // hyper writes a response head only once the body has a frame or is pending: a body that
    // fails at once closes the connection with nothing written, so that a proxy in front
    // answers 502 rather than forward a `200` that was never going to have a body.
    let app = || {
        axum::Router::new().route(
            "/events/{user}",
            axum::routing::get(|| async {
                let frames = futures_util::stream::iter([Err::<bytes::Bytes, _>(
                    std::io::Error::other("upstream gone"),
                )]);
                (
                    [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(frames),
                )
            }),
        )
    };
    for lean in [false, true] {
        use tokio::io::AsyncReadExt;
        let server = Served::start(app(), lean, || {}).await;
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&get("/events/ada", SSE_GET)).await;
        let mut rest = Vec::new();
        let read = bounded("the close", WAIT, raw.stream.read_to_end(&mut rest)).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "lean {lean}: {read:?} {:?}",
            String::from_utf8_lossy(&rest)
        );
        server.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_transfer_codings_go_out_on_one_line_ending_in_chunked_on_both_paths() {
    // A handler's `transfer-encoding` whose last coding is not `chunked` (`gzip`), or that is
    // split over several header lines: hyper writes all the codings on one line and adds
    // `chunked` to it. A second `transfer-encoding` line makes nginx answer 502 ("upstream
    // sent duplicate header line").
    use axum::http::HeaderMap;
    use axum::http::header::{CONTENT_TYPE, TRANSFER_ENCODING};
    fn stream(codings: &[&'static str]) -> impl axum::response::IntoResponse {
        let mut headers = HeaderMap::new();
        for coding in codings {
            headers.append(
                TRANSFER_ENCODING,
                axum::http::HeaderValue::from_static(coding),
            );
        }
        headers.insert(
            CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/event-stream"),
        );
        let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
            bytes::Bytes::from_static(b"data: x\n\n"),
        )]);
        (headers, axum::body::Body::from_stream(frames))
    }
    let app = || {
        axum::Router::new()
            .route("/gzip", axum::routing::get(|| async { stream(&["gzip"]) }))
            .route(
                "/two-lines",
                axum::routing::get(|| async { stream(&["gzip", "chunked"]) }),
            )
    };
    for lean in [false, true] {
        let server = Served::start(app(), lean, || {}).await;
        let mut raw = Raw::connect(server.addr).await;
        for path in ["/gzip", "/two-lines"] {
            raw.send(&get(path, SSE_GET)).await;
            let head = raw.read_head_lowercase().await;
            let codings: Vec<&str> = head
                .lines()
                .filter_map(|line| line.strip_prefix("transfer-encoding: "))
                .collect();
            assert_eq!(codings, ["gzip, chunked"], "lean {lean}, {path}: {head}");
            raw.read_through(b"9\r\ndata: x\n\n\r\n0\r\n\r\n").await;
        }
        server.shut_down().await;
    }
}
