//! HTTP/2 behind a real h2-speaking proxy (issue 13): HAProxy between the clients and a server
//! run with `sse_hub::serve`, speaking HTTP/2 to it (`server ... proto h2`), as a load balancer
//! with an HTTP/2 backend protocol does.
//!
//! Clients reach HAProxy over HTTP/1.1 and over h2c with prior knowledge (`bind ... proto h2`);
//! they are reqwest with the independent `eventsource-stream` parser (`common::SseClient`).
//! The backend records the HTTP version of every request it serves, and counts the connections
//! it accepts, so a proxy that fell back to HTTP/1.1 would fail the tests.
//!
//! Needs `haproxy` 2.x (Debian: `apt-get install haproxy`, installed in `/usr/sbin`). Without it
//! the tests are compiled as ignored (see `build.rs`); under `CI=true` they run and a missing
//! program fails them. `HAPROXY` names another binary. Everything is on loopback, every wait is
//! bounded, and HAProxy is killed when its guard is dropped.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Version;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{End, Served, SseClient, TempDir, WAIT, bounded, free_port, wait_until};
use eventsource_stream::Event;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sse_hub::{Broadcaster, Config, Heartbeat, LastEventId, UserId};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// The backend: `sse_hub::serve` on 127.0.0.1:0

/// What the backend's handlers share: the hubs, and the version of every stream request.
#[derive(Clone)]
struct App {
    /// Served at `/events/{user}`.
    hub: Broadcaster<Value>,
    /// Served at `/quiet/{user}`: the same, without heartbeats.
    quiet: Broadcaster<Value>,
    versions: Arc<Mutex<Vec<Version>>>,
}

/// `GET /events/{user}` (with heartbeats) and `GET /quiet/{user}` (without).
async fn events(
    State(app): State<App>,
    version: Version,
    Path((stream, user)): Path<(String, String)>,
    last_event_id: LastEventId,
) -> Response {
    app.versions.lock().unwrap().push(version);
    let hub = if stream == "quiet" {
        &app.quiet
    } else {
        &app.hub
    };
    hub.sse_response(&UserId::from(user), &last_event_id)
        .into_response()
}

/// `GET /version`: the HTTP version the request reached the server with.
async fn version(version: Version) -> String {
    format!("{version:?}")
}

struct Backend {
    addr: SocketAddr,
    hub: Broadcaster<Value>,
    /// The version of every stream request served so far.
    versions: Arc<Mutex<Vec<Version>>>,
    served: Served,
}

impl Backend {
    /// Serves the hubs with `config` (the quiet one without heartbeats); a graceful shutdown
    /// ends their streams first, as an application does.
    async fn start(config: Config) -> Self {
        let hub: Broadcaster<Value> = Broadcaster::new(config.clone());
        let mut quiet_config = config;
        quiet_config.sse.heartbeat = Heartbeat::Off;
        let quiet: Broadcaster<Value> = Broadcaster::new(quiet_config);
        let versions = Arc::new(Mutex::new(Vec::new()));
        let app = App {
            hub: hub.clone(),
            quiet: quiet.clone(),
            versions: versions.clone(),
        };
        let router = Router::new()
            .route("/{stream}/{user}", get(events))
            .route("/version", get(version))
            .with_state(app);
        let ending = hub.clone();
        let served = Served::start(router, true, move || {
            ending.shutdown();
            quiet.shutdown();
        })
        .await;
        Self {
            addr: served.addr,
            hub,
            versions,
            served,
        }
    }

    fn accepted(&self) -> usize {
        self.served.accepted()
    }

    fn versions(&self) -> Vec<Version> {
        self.versions.lock().unwrap().clone()
    }

    /// Panics unless the server served streams, and all over HTTP/2.
    #[track_caller]
    fn assert_streams_came_over_http2(&self) {
        let versions = self.versions();
        assert!(
            !versions.is_empty() && versions.iter().all(|v| *v == Version::HTTP_2),
            "every stream reaches the server over HTTP/2: {versions:?}"
        );
    }

    /// Signals the graceful shutdown and waits (bounded) for `serve` to return: every
    /// connection, HAProxy's included, must have closed.
    async fn shut_down(self) {
        self.served.shut_down().await;
    }
}

/// Publishes `{"user", "n"}` to `user`; returns the event's id.
fn publish(hub: &Broadcaster<Value>, user: &str, n: u64) -> String {
    hub.broadcast(&UserId::from(user), &json!({"user": user, "n": n}))
        .expect("publish")
        .id
        .expect("the user has a channel")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// HAProxy

/// The program `haproxy`: `HAPROXY` if set, else Debian's `/usr/sbin/haproxy` (or
/// `/usr/bin`), else the `PATH`'s. The same lookup as `build.rs`.
fn haproxy_program() -> PathBuf {
    let found = if let Some(path) = std::env::var_os("HAPROXY") {
        let path = PathBuf::from(path);
        path.is_file().then_some(path)
    } else {
        ["/usr/bin", "/usr/sbin"]
            .iter()
            .map(|dir| PathBuf::from(dir).join("haproxy"))
            .find(|path| path.is_file())
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH")?)
                    .map(|dir| dir.join("haproxy"))
                    .find(|path| path.is_file())
            })
    };
    found.expect("haproxy not found (apt-get install haproxy, or set HAPROXY)")
}

/// HAProxy's inactivity timeouts (`timeout client`, `timeout server`).
const PROXY_TIMEOUT: Duration = Duration::from_secs(30);

/// The configuration: two frontends, HTTP/1.1 and h2c with prior knowledge, and one backend
/// reached over HTTP/2 without TLS (`proto h2`). Two lines matter for SSE, and the tests fail
/// without them:
/// - `http-reuse always`: streams of different clients share a backend connection, as HTTP/2
///   allows; with the default (`safe`), each HTTP/1.1 client's first request gets its own.
/// - `option abortonclose`, in `defaults` so that the frontends have it (HAProxy 2.6 ignores it
///   in a `frontend` section, and in the `backend` alone it has no effect here): an HTTP/1.1
///   client that goes away ends its backend stream at once (an HTTP/2 client resets its stream,
///   which HAProxy passes on in any case). Without it HAProxy notices only when it next writes
///   to the client (the next heartbeat), and the stream holds its slot at the server until
///   then.
///
/// `timeout client` and `timeout server` must be longer than the heartbeat interval: a stream
/// idle for longer is cut (`timeout tunnel` does not apply: an SSE response is no tunnel).
fn config(h1: u16, h2: u16, backend: SocketAddr, timeout: Duration) -> String {
    let timeout = timeout.as_millis();
    format!(
        "global
    maxconn 1000
    log stderr format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout http-request 10s
    timeout client {timeout}ms
    timeout server {timeout}ms
    option abortonclose

frontend http1
    bind 127.0.0.1:{h1}
    default_backend app

frontend h2c
    bind 127.0.0.1:{h2} proto h2
    default_backend app

backend app
    http-reuse always
    server app {backend} proto h2
"
    )
}

/// `haproxy -f cfg -db` in front of a backend, killed on drop. Its log (on stderr) is kept and
/// printed when a test fails.
struct Haproxy {
    child: Child,
    http1: SocketAddr,
    h2c: SocketAddr,
    log: Arc<Mutex<String>>,
    /// The thread copying HAProxy's stderr into `log`; it ends when HAProxy exits.
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl Haproxy {
    async fn start(backend: SocketAddr) -> Self {
        Self::start_with(backend, PROXY_TIMEOUT).await
    }

    /// Starts HAProxy with `timeout` as its client and server inactivity timeouts, on two free
    /// loopback ports, and waits until both accept. A port taken between the choice and the
    /// bind is chosen again.
    async fn start_with(backend: SocketAddr, timeout: Duration) -> Self {
        let program = haproxy_program();
        for _attempt in 0..5 {
            let dir = TempDir::new("sse-hub-haproxy");
            let (h1, h2) = (free_port(), free_port());
            let cfg = dir.0.join("haproxy.cfg");
            std::fs::write(&cfg, config(h1, h2, backend, timeout))
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", cfg.display()));
            let mut child = Command::new(&program)
                .arg("-f")
                .arg(&cfg)
                .arg("-db")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            let stderr = child.stderr.take().expect("piped stderr");
            let log = Arc::new(Mutex::new(String::new()));
            let written = log.clone();
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = written.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
            let mut proxy = Self {
                child,
                http1: SocketAddr::from(([127, 0, 0, 1], h1)),
                h2c: SocketAddr::from(([127, 0, 0, 1], h2)),
                log,
                reader: Some(reader),
                _dir: dir,
            };
            if proxy.wait_ready().await {
                return proxy;
            }
            let log = proxy.log();
            drop(proxy);
            assert!(
                log.contains("cannot bind") || log.contains("Address already in use"),
                "haproxy exited at start:\n{log}"
            );
        }
        panic!("haproxy could not bind free loopback ports in 5 attempts");
    }

    /// Waits until both frontends accept: `true`, or `false` if HAProxy exited first.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        for addr in [self.http1, self.h2c] {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                if let Some(status) = self.child.try_wait().expect("haproxy's status") {
                    // Its stderr is closed: the reader has all it printed, or soon will.
                    if let Some(reader) = self.reader.take() {
                        let _ = reader.join();
                    }
                    eprintln!("haproxy exited at start ({status})");
                    return false;
                }
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not accept on {addr} within {WAIT:?}:\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        true
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn url(&self, front: Front, path: &str) -> String {
        let addr = match front {
            Front::Http1 => self.http1,
            Front::H2c => self.h2c,
        };
        format!("http://{addr}{path}")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("haproxy's log:\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// How a client speaks to HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    Http1,
    H2c,
}

const FRONTS: [Front; 2] = [Front::Http1, Front::H2c];

impl Front {
    fn client(self) -> reqwest::Client {
        let builder = reqwest::Client::builder().no_proxy().connect_timeout(WAIT);
        match self {
            Front::Http1 => builder.http1_only(),
            Front::H2c => builder.http2_prior_knowledge(),
        }
        .build()
        .expect("client")
    }

    fn version(self) -> Version {
        match self {
            Front::Http1 => Version::HTTP_11,
            Front::H2c => Version::HTTP_2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Front::Http1 => "h1",
            Front::H2c => "h2c",
        }
    }
}

/// Opens `path` through the proxy and reads the stream's opening (`retry:` and priming id).
async fn open(
    proxy: &Haproxy,
    client: &reqwest::Client,
    front: Front,
    path: &str,
    last_event_id: Option<&str>,
) -> SseClient {
    let url = proxy.url(front, path);
    let mut stream = match last_event_id {
        Some(id) => SseClient::resume(client, &url, id).await,
        None => SseClient::open(client, &url, None).await,
    };
    assert_eq!(stream.status, StatusCode::OK, "GET {url} ({front:?})");
    assert_eq!(
        stream.headers["content-type"], "text/event-stream",
        "GET {url} ({front:?})"
    );
    stream.read_opening().await;
    stream
}

/// The next event that is not a heartbeat.
async fn next_message(stream: &mut SseClient) -> Event {
    loop {
        let event = stream.expect_event().await;
        if event.event != "heartbeat" {
            return event;
        }
    }
}

/// The next event, which must be the published event `n` of `user` with id `id`.
async fn expect_published(stream: &mut SseClient, user: &str, n: u64, id: &str) {
    let event = next_message(stream).await;
    assert_eq!(event.event, "message", "a published event: {event:?}");
    let data: Value = serde_json::from_str(&event.data).expect("JSON data");
    assert_eq!(
        (data["user"].as_str(), data["n"].as_u64(), event.id.as_str()),
        (Some(user), Some(n), id),
        "event {n} of {user}: {event:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_haproxy, ignore = "haproxy not installed")]
async fn haproxy_reaches_the_backend_over_http2_whatever_the_client_speaks() {
    let backend = Backend::start(Config::default()).await;
    let proxy = Haproxy::start(backend.addr).await;
    for front in FRONTS {
        let client = front.client();
        let reply = bounded(
            "GET /version through the proxy",
            WAIT,
            client.get(proxy.url(front, "/version")).send(),
        )
        .await
        .expect("GET /version");
        assert_eq!(reply.version(), front.version(), "client to proxy");
        assert_eq!(reply.status(), StatusCode::OK);
        let seen = bounded("the body", WAIT, reply.text()).await.expect("body");
        assert_eq!(seen, "HTTP/2.0", "proxy to server, client on {front:?}");

        let stream = open(&proxy, &client, front, "/events/ada", None).await;
        if front == Front::H2c {
            assert!(
                stream.headers.get("transfer-encoding").is_none(),
                "no chunked coding over HTTP/2"
            );
        }
    }
    assert_eq!(
        backend.versions(),
        [Version::HTTP_2, Version::HTTP_2],
        "both streams reached the server over HTTP/2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_haproxy, ignore = "haproxy not installed")]
async fn every_event_arrives_through_the_proxy_in_order_with_its_id() {
    const EVENTS: u64 = 200;
    let backend = Backend::start(Config::default()).await;
    let proxy = Haproxy::start(backend.addr).await;
    for front in FRONTS {
        let client = front.client();
        let user = format!("order-{}", front.name());
        let mut stream = open(&proxy, &client, front, &format!("/events/{user}"), None).await;
        let ids: Vec<String> = (1..=EVENTS)
            .map(|n| publish(&backend.hub, &user, n))
            .collect();
        for (n, id) in (1..=EVENTS).zip(&ids) {
            expect_published(&mut stream, &user, n, id).await;
        }
    }
    backend.assert_streams_came_over_http2();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_haproxy, ignore = "haproxy not installed")]
async fn heartbeats_pass_unbuffered_and_keep_a_stream_open_past_the_proxy_timeouts() {
    // HAProxy closes a stream idle for 1.5 s; the server sends a heartbeat every 250 ms.
    const TIMEOUT: Duration = Duration::from_millis(1500);
    const HEARTBEAT: Duration = Duration::from_millis(250);
    let mut config = Config::default();
    config.sse.heartbeat_interval = HEARTBEAT;
    let backend = Backend::start(config).await;
    let proxy = Haproxy::start_with(backend.addr, TIMEOUT).await;

    // The control: a stream without heartbeats is cut by the proxy's timeout (read_to_end
    // panics if it is not), so the streams below stay open because of their heartbeats, not
    // because nothing times out.
    let quiet = join_all(FRONTS.map(|front| {
        let proxy = &proxy;
        async move {
            let client = front.client();
            let mut stream = open(proxy, &client, front, "/quiet/silent", None).await;
            let events = stream.read_to_end(WAIT).await;
            assert!(events.is_empty(), "{front:?}: {events:?}");
        }
    }));

    let live = join_all(FRONTS.map(|front| {
        let (proxy, hub) = (&proxy, &backend.hub);
        async move {
            let client = front.client();
            let user = format!("beat-{}", front.name());
            let mut stream = open(proxy, &client, front, &format!("/events/{user}"), None).await;
            // Heartbeats for twice the proxy's timeout, each within it: the proxy holds
            // nothing back, and the stream outlives its idle timeout.
            let opened = Instant::now();
            let mut beats = 0;
            while opened.elapsed() < 2 * TIMEOUT {
                let event = stream
                    .next_event(TIMEOUT)
                    .await
                    .unwrap_or_else(|| panic!("{front:?}: the stream ended after {beats} beats"));
                assert_eq!(event.event, "heartbeat", "{front:?}: {event:?}");
                beats += 1;
            }
            assert!(
                beats >= 4,
                "{front:?}: {beats} heartbeats in {:?}",
                2 * TIMEOUT
            );
            // A frame published on the open stream comes promptly, not when some buffer fills
            // or the stream ends.
            let published = Instant::now();
            let id = publish(hub, &user, 1);
            expect_published(&mut stream, &user, 1, &id).await;
            let took = published.elapsed();
            assert!(
                took < TIMEOUT,
                "{front:?}: an event took {took:?} through the proxy"
            );
        }
    }));
    tokio::join!(quiet, live);
    backend.assert_streams_came_over_http2();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_haproxy, ignore = "haproxy not installed")]
async fn last_event_id_resumes_through_the_proxy_with_no_duplicate_and_no_gap() {
    let backend = Backend::start(Config::default()).await;
    let proxy = Haproxy::start(backend.addr).await;
    for front in FRONTS {
        let client = front.client();
        let user = format!("resume-{}", front.name());
        let path = format!("/events/{user}");
        let mut ids = vec![String::new()]; // ids[n] is event n's
        let mut stream = open(&proxy, &client, front, &path, None).await;
        for n in 1..=5 {
            ids.push(publish(&backend.hub, &user, n));
            expect_published(&mut stream, &user, n, &ids[n as usize]).await;
        }

        // The client goes away: the proxy ends the backend stream too.
        drop(stream);
        let what = format!("the proxy ends the backend stream of a client gone ({front:?})");
        wait_until(&what, WAIT, || {
            backend.hub.connection_count(&UserId::from(user.as_str())) == 0
        })
        .await;
        for n in 6..=10 {
            ids.push(publish(&backend.hub, &user, n));
        }

        // Back with the last id it saw: exactly what it missed, then live events.
        let mut stream = open(&proxy, &client, front, &path, Some(&ids[5])).await;
        for n in 6..=10 {
            expect_published(&mut stream, &user, n, &ids[n as usize]).await;
        }
        ids.push(publish(&backend.hub, &user, 11));
        expect_published(&mut stream, &user, 11, &ids[11]).await;
        drop(stream);

        // A resume from further back, while the other connection may still be closing.
        let mut stream = open(&proxy, &client, front, &path, Some(&ids[7])).await;
        for n in 8..=11 {
            expect_published(&mut stream, &user, n, &ids[n as usize]).await;
        }
        ids.push(publish(&backend.hub, &user, 12));
        expect_published(&mut stream, &user, 12, &ids[12]).await;
    }
    backend.assert_streams_came_over_http2();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_haproxy, ignore = "haproxy not installed")]
async fn fifty_streams_are_multiplexed_to_the_backend_and_each_gets_its_event() {
    const STREAMS: usize = 50;
    let backend = Backend::start(Config::default()).await;
    let proxy = Haproxy::start(backend.addr).await;
    for front in FRONTS {
        let client = front.client();
        let accepted_before = backend.accepted();
        let users: Vec<String> = (0..STREAMS)
            .map(|i| format!("many-{}-{i}", front.name()))
            .collect();
        let mut streams = join_all(users.iter().map(|user| {
            let (proxy, client) = (&proxy, &client);
            async move { open(proxy, client, front, &format!("/events/{user}"), None).await }
        }))
        .await;
        wait_until(
            &format!("{STREAMS} streams reach the server ({front:?})"),
            WAIT,
            || backend.hub.total_connections() == STREAMS,
        )
        .await;
        // Over HTTP/1.1 the proxy would need a connection per open stream.
        let connections = backend.accepted() - accepted_before;
        assert!(
            connections < STREAMS / 5,
            "{front:?}: {STREAMS} streams took {connections} backend connections"
        );

        let ids: Vec<String> = users
            .iter()
            .map(|user| publish(&backend.hub, user, 1))
            .collect();
        join_all(
            streams
                .iter_mut()
                .zip(&users)
                .zip(&ids)
                .map(|((stream, user), id)| expect_published(stream, user, 1, id)),
        )
        .await;
        drop(streams);
        wait_until(&format!("the streams end ({front:?})"), WAIT, || {
            backend.hub.total_connections() == 0
        })
        .await;
    }
    let versions = backend.versions();
    assert_eq!(versions.len(), 2 * STREAMS);
    assert!(versions.iter().all(|v| *v == Version::HTTP_2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_haproxy, ignore = "haproxy not installed")]
async fn a_graceful_shutdown_of_the_server_ends_the_streams_behind_the_proxy() {
    const PER_FRONT: usize = 5;
    let backend = Backend::start(Config::default()).await;
    let proxy = Haproxy::start(backend.addr).await;
    let mut streams = Vec::new();
    for front in FRONTS {
        let client = front.client();
        for i in 0..PER_FRONT {
            let user = format!("bye-{}-{i}", front.name());
            let stream = open(&proxy, &client, front, &format!("/events/{user}"), None).await;
            streams.push((front, user, stream));
        }
    }
    wait_until("every stream reaches the server", WAIT, || {
        backend.hub.total_connections() == 2 * PER_FRONT
    })
    .await;
    for (_, user, _) in &streams {
        publish(&backend.hub, user, 1);
    }

    backend.assert_streams_came_over_http2();

    // `serve` returns only once every connection, the proxy's, is closed.
    backend.shut_down().await;
    for (front, user, mut stream) in streams {
        let events = stream.read_to_end(WAIT).await;
        assert_eq!(events.len(), 1, "{front:?} {user}: {events:?}");
        assert_eq!(
            stream.end(),
            Some(&End::Complete),
            "{front:?} {user}: a clean end, not a reset"
        );
        let raw = stream.raw_text();
        let last = raw.rsplit("\n\n").nth(1).unwrap_or_default();
        assert!(
            last.starts_with("retry: "),
            "{front:?} {user}: the stream ends with a jittered retry: {raw:?}"
        );
    }
}
