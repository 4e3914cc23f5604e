//! `sse_hub::serve` (issue 13): HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port,
//! many SSE streams multiplexed on one HTTP/2 connection, graceful shutdown; and the demo
//! server, which uses it, over HTTP/2.
//!
//! Clients are reqwest (hyper's client, HTTP/1.1 or `http2_prior_knowledge`) with the
//! independent `eventsource-stream` parser; nothing here uses sse-hub's encoder to read.

mod common;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::serve::ListenerExt;

use common::{SseClient, WAIT, bounded, router};
use futures_util::StreamExt;
use futures_util::future::join_all;
use reqwest::{StatusCode, Version};
use serde_json::{Value, json};
use sse_hub::{Broadcaster, Config, UserId};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `sse_hub::serve` on `127.0.0.1:0`, shut down gracefully when `stop` fires: the hub's
/// streams are ended first, as an application does.
struct Served {
    addr: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(hub: &Broadcaster<Value>) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = listener.tap_io(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let ending = hub.clone();
    let server = sse_hub::serve(listener, router(hub.clone())).with_graceful_shutdown(async move {
        let _ = stopped.await;
        ending.shutdown();
    });
    Served {
        addr,
        accepted,
        stop: Some(stop),
        task: tokio::spawn(server.into_future()),
    }
}

impl Served {
    fn url(&self, user: &str) -> String {
        format!("http://{}/events/{user}", self.addr)
    }

    async fn shut_down(mut self) {
        let _ = self.stop.take().expect("once").send(());
        bounded("serve to return after the shutdown signal", WAIT, self.task)
            .await
            .expect("the server task")
            .expect("serve");
    }
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
    let mut tab1 = SseClient::open(&http1, &server.url("ada"), None).await;
    assert_eq!(tab1.status, StatusCode::OK);

    let h2 = h2_client();
    let response = bounded(
        "an HTTP/2 response head",
        WAIT,
        h2.get(server.url("ada")).send(),
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
        let request = h2.get(server.url(&format!("u{i}")));
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
    assert_eq!(
        server.accepted.load(Ordering::Relaxed),
        1,
        "every stream on one connection"
    );
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
