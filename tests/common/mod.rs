//! Helpers shared by the integration tests that go over the wire: a real axum server bound on
//! loopback, a real HTTP client (reqwest), and an independent SSE parser (`eventsource-stream`)
//! fed with the bytes the client receives. Nothing here uses sse-hub's own encoder to read a
//! stream.
//!
//! Every wait is bounded: a helper that waits takes a `within` and panics, saying what it waited
//! for, when it runs out.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

pub mod raw;
pub mod seen;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use eventsource_stream::{Event, EventStream};
use futures_util::{FutureExt, Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use sse_hub::{Broadcaster, LastEventId, UserId};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// The default bound of a single wait on the network: generous, since CI machines are small
/// and run tests in parallel, yet short enough that a hang fails the test rather than CI.
pub const WAIT: Duration = Duration::from_secs(5);

/// `GET /events/{user}`: the handler every wire test serves, as an application would write it.
async fn events<E: 'static>(
    State(hub): State<Broadcaster<E>>,
    Path(user): Path<String>,
    last_event_id: LastEventId,
) -> Response {
    hub.sse_response(&UserId::from(user), &last_event_id)
        .into_response()
}

/// A router serving `hub` at `GET /events/{user}`.
pub fn router<E: 'static>(hub: Broadcaster<E>) -> Router {
    Router::new()
        .route("/events/{user}", get(events::<E>))
        .with_state(hub)
}

/// An axum server on `127.0.0.1:0`, run with graceful shutdown.
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Binds a loopback listener on a free port and serves `app` on it.
    pub async fn start(app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The URL of `user`'s event stream.
    pub fn events_url(&self, user: &str) -> String {
        self.url(&format!("/events/{user}"))
    }

    /// Resolves the graceful-shutdown future and waits (bounded by `within`) for `axum::serve`
    /// to return; returns how long that took. Panics if it takes longer than `within` or if
    /// the server failed.
    pub async fn shut_down(mut self, within: Duration) -> Duration {
        let task = self.task.take().expect("server task");
        let started = Instant::now();
        let _ = self.stop.take().expect("stop signal").send(());
        match timeout(within, task).await {
            Ok(Ok(Ok(()))) => started.elapsed(),
            Ok(Ok(Err(error))) => panic!("axum::serve failed: {error}"),
            Ok(Err(error)) => panic!("server task failed: {error}"),
            Err(_) => panic!("axum::serve did not return within {within:?} of the shutdown signal"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A plain HTTP client for loopback; no proxy, whatever the environment says.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// Polls `condition` every 10 ms until it holds; panics, naming `what`, if it does not within
/// `within`. For state the server changes asynchronously (it notices a TCP close when it next
/// reads or writes the socket), where there is no event to await.
pub async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let waited = timeout(within, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if waited.is_err() {
        panic!("timed out after {within:?} waiting until {what}");
    }
}

/// Awaits `future`, panicking with `what` if it takes longer than `within`.
pub async fn bounded<T>(what: &str, within: Duration, future: impl Future<Output = T>) -> T {
    match timeout(within, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {within:?} waiting for {what}"),
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;
type Parser = EventStream<Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>>;

/// The parser's input: the chunks received and not parsed yet, and whether the body ended.
///
/// A plain queue rather than a tokio channel: a tokio receiver answers `Pending` once the task
/// has spent its cooperative budget, even with chunks queued, which would make the parser look
/// starved (and, after the end of the body, spin). The parser is only ever polled with
/// `now_or_never` while the input is open, so its input needs no waker.
#[derive(Default)]
struct Input {
    chunks: VecDeque<Bytes>,
    closed: bool,
}

type Feed = Arc<Mutex<Input>>;

/// How a response body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The body completed: the server ended the stream.
    Complete,
    /// The transport failed (connection reset, truncated chunked body...).
    Error(String),
}

/// One SSE connection seen from the client: the response head, every raw byte received, and
/// the events `eventsource-stream` decodes from those bytes.
///
/// The raw bytes are kept because some things are invisible to a conforming parser: comment
/// lines, and frames without data (a priming `id:`, a `retry:` hint) that dispatch nothing.
pub struct SseClient {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: ByteStream,
    raw: Vec<u8>,
    feed: Feed,
    parser: Parser,
    end: Option<End>,
}

impl SseClient {
    /// `GET url`, with `Last-Event-ID: last_event_id` when given. Returns once the response
    /// head arrived, whatever its status.
    pub async fn open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<HeaderValue>,
    ) -> Self {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = bounded("the response head", WAIT, request.send())
            .await
            .unwrap_or_else(|error| panic!("GET {url}: {error}"));
        Self::from_response(response)
    }

    /// `GET url` with `Last-Event-ID: id`.
    pub async fn resume(client: &reqwest::Client, url: &str, id: &str) -> Self {
        let id = HeaderValue::from_str(id).expect("an id is a valid header value");
        Self::open(client, url, Some(id)).await
    }

    fn from_response(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let feed = Feed::default();
        let fed = feed.clone();
        let input: Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>> =
            Box::pin(futures_util::stream::poll_fn(move |_| {
                let mut input = fed.lock().unwrap();
                match input.chunks.pop_front() {
                    Some(chunk) => Poll::Ready(Some(Ok(chunk))),
                    None if input.closed => Poll::Ready(None),
                    None => Poll::Pending,
                }
            }));
        Self {
            status,
            headers,
            body: Box::pin(response.bytes_stream()),
            raw: Vec::new(),
            feed,
            parser: EventStream::new(input),
            end: None,
        }
    }

    /// Every byte received so far.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Every byte received so far, as text.
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// How the body ended, once it has.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// The parser's last event id: set from the `id` of the last *dispatched* event (this
    /// parser, unlike a browser, does not expose an id that arrived in a frame without data
    /// until the next event is dispatched).
    pub fn parser_last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// Reads one chunk of the body, records it and feeds it to the parser. Returns `false` once
    /// the body has ended.
    async fn pump(&mut self) -> bool {
        if self.end.is_some() {
            return false;
        }
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.raw.extend_from_slice(&chunk);
                self.feed.lock().unwrap().chunks.push_back(chunk);
                true
            }
            Some(Err(error)) => {
                self.end = Some(End::Error(error.to_string()));
                self.feed.lock().unwrap().closed = true;
                false
            }
            None => {
                self.end = Some(End::Complete);
                self.feed.lock().unwrap().closed = true;
                false
            }
        }
    }

    async fn next_event_unbounded(&mut self) -> Option<Event> {
        loop {
            // The parser waits on nothing but its input, which only `pump` provides: `Pending`
            // means it has parsed everything it was fed, so read more. Once the body has ended
            // its input is closed, and the parser ends too: this never spins.
            if let Some(item) = self.parser.next().now_or_never() {
                return match item {
                    Some(Ok(event)) => Some(event),
                    Some(Err(error)) => panic!("the SSE parser rejected the stream: {error}"),
                    None => None,
                };
            }
            self.pump().await;
        }
    }

    /// The next event the parser dispatches, or `None` when the stream ended first. Panics if
    /// neither happens within `within`.
    pub async fn next_event(&mut self, within: Duration) -> Option<Event> {
        let raw = self.raw_text();
        match timeout(within, self.next_event_unbounded()).await {
            Ok(event) => event,
            Err(_) => panic!("no event and no end within {within:?}; bytes so far: {raw:?}"),
        }
    }

    /// The next event, which must come within [`WAIT`].
    pub async fn expect_event(&mut self) -> Event {
        match self.next_event(WAIT).await {
            Some(event) => event,
            None => panic!(
                "the stream ended ({:?}) where an event was expected; bytes: {:?}",
                self.end,
                self.raw_text()
            ),
        }
    }

    /// `Ok(Some(event))`, `Ok(None)` at the end of the stream, or `Err(())` if nothing came
    /// within `within`: for asserting that nothing is dispatched during a window.
    pub async fn event_within(&mut self, within: Duration) -> Result<Option<Event>, ()> {
        timeout(within, self.next_event_unbounded())
            .await
            .map_err(|_| ())
    }

    /// Reads until `condition` holds for the raw bytes received so far. Panics if the body
    /// ends first or if it does not hold within `within`.
    pub async fn read_raw_until(&mut self, within: Duration, condition: impl Fn(&[u8]) -> bool) {
        let read = timeout(within, async {
            while !condition(&self.raw) {
                if !self.pump().await {
                    return false;
                }
            }
            true
        })
        .await;
        match read {
            Ok(true) => {}
            Ok(false) => panic!(
                "the body ended ({:?}) before the expected bytes; got {:?}",
                self.end,
                self.raw_text()
            ),
            Err(_) => panic!(
                "the expected bytes did not arrive within {within:?}; got {:?}",
                self.raw_text()
            ),
        }
    }

    /// Reads until the first frame (up to its blank line) has arrived.
    pub async fn read_opening(&mut self) {
        self.read_raw_until(WAIT, |raw| find(raw, b"\n\n").is_some())
            .await;
    }

    /// Reads to the end of the body, returning the events dispatched on the way. Panics if the
    /// body does not end within `within`.
    pub async fn read_to_end(&mut self, within: Duration) -> Vec<Event> {
        let raw = self.raw_text();
        let read = timeout(within, async {
            let mut events = Vec::new();
            while let Some(event) = self.next_event_unbounded().await {
                events.push(event);
            }
            events
        })
        .await;
        match read {
            Ok(events) => events,
            Err(_) => panic!("the stream did not end within {within:?}; bytes so far: {raw:?}"),
        }
    }
}

/// The position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// How many times `needle` occurs in `haystack`.
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

/// A fresh directory under the system's temp dir, removed on drop: configs and profiles of the
/// external programs a test starts.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port, for a program that takes its port on the command line.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `sse_hub::serve` on `127.0.0.1:0`, shut down gracefully by [`Served::shut_down`]:
/// `on_shutdown` runs first (it ends the hubs' streams, as an application does). Counts the
/// connections it accepts; aborted if dropped without a shutdown.
pub struct Served {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Served {
    pub async fn start(
        router: Router,
        lean_http1: bool,
        on_shutdown: impl FnOnce() + Send + 'static,
    ) -> Self {
        use axum::serve::ListenerExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = sse_hub::serve(listener, router)
            .lean_http1(lean_http1)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
                on_shutdown();
            });
        Self {
            addr,
            accepted,
            stop: Some(stop),
            task: Some(tokio::spawn(server.into_future())),
        }
    }

    /// The URL of `user`'s stream at `/events/{user}`.
    pub fn events_url(&self, user: &str) -> String {
        format!("http://{}/events/{user}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Signals the graceful shutdown and waits (bounded) for `serve` to return: every
    /// connection must have closed.
    pub async fn shut_down(mut self) {
        let _ = self.stop.take().expect("once").send(());
        let task = self.task.take().expect("once");
        bounded("serve to return after the shutdown signal", WAIT, task)
            .await
            .expect("the server task")
            .expect("serve");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
