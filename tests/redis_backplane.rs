//! The Redis backplane against real `redis-server` processes: every test starts its own server
//! on a free loopback port (so that it can kill and restart it) and at least two nodes, each a
//! separate hub with its own backplane connections and its own axum server on `127.0.0.1:0`.
//! Clients are real HTTP clients (reqwest) whose bytes are decoded by an independent SSE parser
//! (`eventsource-stream`), and every remote path is checked on a node other than the publisher.
//!
//! Without `redis-server` on the `PATH` the tests print `SKIPPED` and pass, except under
//! `CI=true`, where a missing server is a failure. Every wait is bounded.
#![cfg(feature = "redis")]

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use sse_hub::backplane::{RedisBackplane, RedisConfig};
use sse_hub::{Broadcaster, Config, LastEventId, PublishError, UserId};
use tokio::time::{Instant, timeout};

/// The bound of one wait.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// redis-server

/// A `redis-server` child process on a loopback port, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// Whether `redis-server` can run here; prints the skip, or panics under `CI=true`.
fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!(
                "redis-server is missing, and CI=true: install it (apt-get install redis-server)"
            );
        }
        eprintln!(
            "SKIPPED: the Redis backplane tests need redis-server (apt-get install redis-server)"
        );
    }
    found
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

impl RedisServer {
    async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.launch().await;
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = timeout(WAIT, async {
            while TcpStream::connect(addr).is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            up.is_ok(),
            "redis-server did not listen on {addr} within {WAIT:?}"
        );
    }

    /// Kills the server and waits until it is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new server on the same port, with no data (no persistence).
    async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// `PUBSUB NUMSUB` of `user`'s live channel on the `events` channel.
    async fn listeners(&self, user: &str) -> i64 {
        let mut connection = self.connection().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("sse-hub:live:events:{user}"))
            .query_async(&mut connection)
            .await
            .expect("PUBSUB NUMSUB");
        n
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// nodes

type Hub = Broadcaster<Value>;

/// One node: a hub with its own backplane, served by its own axum server.
struct Node {
    hub: Hub,
    backplane: RedisBackplane,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

async fn events(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    last_event_id: LastEventId,
) -> Response {
    hub.sse_response(&UserId::from(user), &last_event_id)
        .into_response()
}

impl Node {
    async fn start(redis: &RedisServer, config: Config) -> Self {
        let mut settings = RedisConfig::new(redis.url());
        settings.reconnect_min = Duration::from_millis(20);
        settings.reconnect_max = Duration::from_millis(200);
        settings.command_timeout = Duration::from_secs(1);
        // Every test runs through the idle connection checks too.
        settings.ping_interval = Duration::from_millis(100);
        let backplane = RedisBackplane::new(settings).expect("backplane");
        assert!(
            backplane.wait_connected(WAIT).await,
            "the backplane did not connect: {:?}",
            backplane.health()
        );
        let hub = Broadcaster::with_backplane(config, Arc::new(backplane.clone()));
        let app = Router::new()
            .route("/events/{user}", get(events))
            .with_state(hub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            hub,
            backplane,
            addr,
            server,
        }
    }

    fn url(&self, user: &str) -> String {
        format!("http://{}/events/{user}", self.addr)
    }

    async fn publish(&self, user: &str, n: u64) -> Result<sse_hub::Published, PublishError> {
        self.hub
            .broadcast_async(&UserId::from(user), &json!({ "n": n }))
            .await
    }

    async fn wait_connected(&self, connected: bool) {
        let waited = timeout(WAIT, async {
            while self.backplane.is_connected() != connected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "the backplane did not become connected={connected}: {:?}",
            self.backplane.health()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn hub_config() -> Config {
    Config::default()
}

// ---------------------------------------------------------------------------------------------
// clients

type Events = Pin<Box<dyn Stream<Item = Option<Event>> + Send>>;

/// An SSE connection seen from the client.
struct Client {
    /// The raw bytes of the opening frame (the priming `id:` and `retry:`).
    opening: String,
    events: Events,
}

impl Client {
    /// `GET url` (with `Last-Event-ID`), and waits for the opening frame: the subscription is
    /// then caught up and live.
    async fn open(url: &str, last_event_id: Option<&str>) -> Self {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut request = http.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = timeout(WAIT, request.send())
            .await
            .expect("response head in time")
            .expect("GET");
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut opening = Vec::new();
        let read = timeout(WAIT, async {
            while !opening.windows(2).any(|w| w == b"\n\n") {
                match body.next().await {
                    Some(Ok(chunk)) => opening.extend_from_slice(&chunk),
                    other => panic!("the stream ended before its opening frame: {other:?}"),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "no opening frame within {WAIT:?}");
        let opening_text = String::from_utf8_lossy(&opening).into_owned();
        let first = futures_util::stream::iter([Ok::<Bytes, reqwest::Error>(Bytes::from(opening))]);
        // `None` marks the end of the body, so that a test can tell an end from a stall.
        let events = first
            .chain(body)
            .eventsource()
            .map(|item| Some(item.expect("a well-formed SSE stream")))
            .chain(futures_util::stream::iter([None]));
        Self {
            opening: opening_text,
            events: Box::pin(events),
        }
    }

    /// The next event, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        match timeout(WAIT, self.events.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => None,
            Err(_) => panic!("no event and no end within {WAIT:?}"),
        }
    }

    /// The next `count` events, which must come.
    async fn take(&mut self, count: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next().await {
                Some(event) => events.push(event),
                None => panic!("the stream ended after {events:?}"),
            }
        }
        events
    }

    /// Asserts that nothing is dispatched for a while.
    async fn assert_quiet(&mut self) {
        if let Ok(Some(Some(event))) = timeout(QUIET, self.events.next()).await {
            panic!("unexpected event {event:?}");
        }
    }

    /// Reads to the end of the stream; returns what came before it.
    async fn read_to_end(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// The `n` of an event's data.
fn n(event: &Event) -> u64 {
    let data: Value = serde_json::from_str(&event.data).expect("JSON data");
    data["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("no n in {event:?}"))
}

fn numbers(events: &[Event]) -> Vec<u64> {
    events.iter().map(n).collect()
}

/// A Redis stream id, `ms-seq`, as a comparable pair.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("not an id: {id:?}"));
    (ms.parse().unwrap(), seq.parse().unwrap())
}

fn assert_increasing_ids(events: &[Event]) {
    for pair in events.windows(2) {
        assert!(
            id_key(&pair[0].id) < id_key(&pair[1].id),
            "ids out of order: {:?} then {:?}",
            pair[0].id,
            pair[1].id
        );
    }
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_reaches_every_node_once_in_order() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Node::start(&redis, hub_config()).await;
    let b = Node::start(&redis, hub_config()).await;
    let mut on_a = Client::open(&a.url("alice"), None).await;
    let mut on_b = Client::open(&b.url("alice"), None).await;
    let mut bob = Client::open(&b.url("bob"), None).await;

    let mut ids = Vec::new();
    for i in 1..=20 {
        let published = a.publish("alice", i).await.expect("publish on A");
        assert_eq!(published.nodes(), Some(2), "both nodes serve alice");
        ids.push(published.id.expect("an id").to_string());
    }
    for i in 21..=25 {
        b.publish("alice", i).await.expect("publish on B");
    }

    for client in [&mut on_a, &mut on_b] {
        let events = client.take(25).await;
        assert_eq!(numbers(&events), (1..=25).collect::<Vec<_>>());
        let got: Vec<&str> = events[..20].iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            got, ids,
            "the event ids are the backplane's, the same on every node"
        );
        assert_increasing_ids(&events);
        client.assert_quiet().await;
    }
    bob.assert_quiet().await;
    assert_eq!(a.hub.stats().backplane_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moves_to_another_node_with_its_last_event_id_and_misses_nothing() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Node::start(&redis, hub_config()).await;
    let b = Node::start(&redis, hub_config()).await;

    let mut client = Client::open(&a.url("alice"), None).await;
    for i in 1..=5 {
        a.publish("alice", i).await.unwrap();
    }
    let first = client.take(5).await;
    assert_eq!(numbers(&first), [1, 2, 3, 4, 5]);
    let last_id = first[4].id.clone();
    drop(client);

    // While the client is away (A retains the user's channel), and while it resumes on B,
    // events keep coming from A: the seam between B's replay and B's live feed must have no
    // gap and no duplicate.
    for i in 6..=10 {
        a.publish("alice", i).await.unwrap();
    }
    let publisher = {
        let hub = a.hub.clone();
        tokio::spawn(async move {
            for i in 11..=200 {
                hub.broadcast_async(&UserId::from("alice"), &json!({ "n": i }))
                    .await
                    .unwrap();
            }
        })
    };
    let mut moved = Client::open(&b.url("alice"), Some(&last_id)).await;
    assert!(
        moved.opening.contains(&format!("id: {last_id}\n")),
        "the stream primes with the client's own position: {:?}",
        moved.opening
    );
    timeout(WAIT, publisher).await.unwrap().unwrap();
    let events = moved.take(195).await;
    assert_eq!(numbers(&events), (6..=200).collect::<Vec<_>>());
    assert_increasing_ids(&events);
    moved.assert_quiet().await;

    // And back to A from the last id B gave.
    let back_from = events.last().unwrap().id.clone();
    drop(moved);
    b.publish("alice", 201).await.unwrap();
    let mut back = Client::open(&a.url("alice"), Some(&back_from)).await;
    assert_eq!(numbers(&back.take(1).await), [201]);
    back.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_cannot_be_resumed_give_a_reset_on_any_node() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let mut config = hub_config();
    config.replay_events = 4;
    let a = Node::start(&redis, config.clone()).await;
    let b = Node::start(&redis, config).await;

    let mut client = Client::open(&a.url("alice"), None).await;
    for i in 1..=30 {
        a.publish("alice", i).await.unwrap();
    }
    let events = client.take(30).await;
    let oldest = events[0].id.clone();
    let recent = events[27].id.clone();

    // Older than the history (4 events, trimmed in batches): `expired`, then live.
    let mut expired = Client::open(&b.url("alice"), Some(&oldest)).await;
    let reset = expired.next().await.unwrap();
    assert_eq!(reset.event, "reset");
    assert_eq!(
        serde_json::from_str::<Value>(&reset.data).unwrap()["reason"],
        "expired"
    );
    // Within the history: a plain replay.
    let mut recent_client = Client::open(&b.url("alice"), Some(&recent)).await;
    assert_eq!(numbers(&recent_client.take(2).await), [29, 30]);

    for (id, reason) in [("garbage", "malformed"), ("99999999999999-0", "unknown")] {
        let mut client = Client::open(&b.url("alice"), Some(id)).await;
        let reset = client.next().await.unwrap();
        assert_eq!(reset.event, "reset", "for {id}");
        assert_eq!(
            serde_json::from_str::<Value>(&reset.data).unwrap()["reason"],
            reason,
            "for {id}"
        );
    }

    a.publish("alice", 31).await.unwrap();
    assert_eq!(numbers(&expired.take(1).await), [31]);
    assert_eq!(numbers(&recent_client.take(1).await), [31]);
    assert!(b.hub.stats().resets >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let a = Node::start(&redis, hub_config()).await;
    let b = Node::start(&redis, hub_config()).await;
    let mut on_a = Client::open(&a.url("alice"), None).await;
    let mut on_b = Client::open(&b.url("alice"), None).await;
    for i in 1..=3 {
        a.publish("alice", i).await.unwrap();
    }
    let before_a = on_a.take(3).await;
    let before_b = on_b.take(3).await;
    let last_id = before_a[2].id.clone();
    assert_eq!(before_b[2].id, last_id);

    // Redis dies: publishing fails with a typed error, the publishing node's clients still get
    // the event (without an id: their last id stays valid), the other node's do not.
    redis.kill();
    a.wait_connected(false).await;
    b.wait_connected(false).await;
    assert!(!a.backplane.health().connected);
    let error = a.publish("alice", 4).await.expect_err("Redis is down");
    assert!(matches!(error, PublishError::Backplane(_)), "{error:?}");
    let local = on_a.next().await.unwrap();
    assert_eq!(n(&local), 4);
    assert_eq!(local.id, last_id, "an event delivered without an id");
    on_b.assert_quiet().await;
    assert_eq!(a.hub.stats().backplane_failures, 1);
    assert_eq!(a.backplane.health().publish_failures, 1);

    // A subscribe while Redis is down is served, degraded, with no priming id.
    let mut degraded = Client::open(&a.url("carol"), None).await;
    assert!(!degraded.opening.contains("id:"), "{:?}", degraded.opening);

    // Redis comes back (empty: no persistence). Both nodes reconnect and end their streams, so
    // that clients resume from the history.
    redis.restart().await;
    a.wait_connected(true).await;
    b.wait_connected(true).await;
    assert_eq!(numbers(&on_a.read_to_end().await), Vec::<u64>::new());
    assert_eq!(numbers(&on_b.read_to_end().await), Vec::<u64>::new());
    assert!(degraded.read_to_end().await.is_empty());
    assert!(a.backplane.health().reconnects >= 1);

    // The clients reconnect with their last ids: the restarted Redis lost the history, which is
    // signalled, never skipped silently; then delivery resumes, once per client.
    let mut again_a = Client::open(&b.url("alice"), Some(&last_id)).await;
    let mut again_b = Client::open(&a.url("alice"), Some(&last_id)).await;
    for client in [&mut again_a, &mut again_b] {
        let reset = client.next().await.unwrap();
        assert_eq!(reset.event, "reset");
        assert_eq!(
            serde_json::from_str::<Value>(&reset.data).unwrap()["reason"],
            "expired"
        );
    }
    for i in 5..=8 {
        a.publish("alice", i)
            .await
            .expect("publish after the restart");
    }
    for client in [&mut again_a, &mut again_b] {
        let events = client.take(4).await;
        assert_eq!(numbers(&events), [5, 6, 7, 8]);
        assert_increasing_ids(&events);
        client.assert_quiet().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_live_feed_resumes_from_the_history_without_a_gap() {
    if !redis_available() {
        return;
    }
    // The live feed of node B breaks while Redis stays up (its client connection is killed):
    // events published meanwhile are in the history, and B's clients get them on resume.
    let redis = RedisServer::start().await;
    let a = Node::start(&redis, hub_config()).await;
    let b = Node::start(&redis, hub_config()).await;
    let mut on_b = Client::open(&b.url("alice"), None).await;
    a.publish("alice", 1).await.unwrap();
    let last_id = on_b.take(1).await[0].id.clone();

    let mut admin = redis.connection().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1, "B's pub/sub connection, the only one subscribed");
    // Published while B may not be listening: only the history has them for sure.
    a.publish("alice", 2).await.unwrap();
    a.publish("alice", 3).await.unwrap();
    let seen = numbers(&on_b.read_to_end().await);
    b.wait_connected(true).await;
    let mut resumed = Client::open(&b.url("alice"), Some(&last_id)).await;
    a.publish("alice", 4).await.unwrap();
    let events = resumed.take(3).await;
    assert_eq!(
        numbers(&events),
        [2, 3, 4],
        "(the old stream had seen {seen:?})"
    );
    resumed.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_only_receives_traffic_for_the_users_it_serves() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let mut config = hub_config();
    config.retention = Duration::from_millis(200);
    let a = Node::start(&redis, config.clone()).await;
    let b = Node::start(&redis, config).await;
    let alice = Client::open(&a.url("alice"), None).await;
    let mut bob = Client::open(&b.url("bob"), None).await;
    assert_eq!(redis.listeners("alice").await, 1);
    assert_eq!(redis.listeners("bob").await, 1);

    let received_b = b.backplane.health().received;
    for i in 1..=10 {
        let published = b.publish("alice", i).await.unwrap();
        assert_eq!(published.nodes(), Some(1), "only A serves alice");
    }
    b.publish("bob", 11).await.unwrap();
    assert_eq!(numbers(&bob.take(1).await), [11]);
    assert_eq!(
        b.backplane.health().received,
        received_b + 1,
        "B received bob's event only"
    );

    // Once alice's last connection is gone and the retention passed, A stops listening. Her
    // history stays (for its TTL), so a publish is still stored for her return; a user with
    // no history and no node gets nothing stored, as a single node does for a user without a
    // channel.
    drop(alice);
    let deadline = Instant::now() + WAIT;
    while redis.listeners("alice").await != 0 {
        assert!(Instant::now() < deadline, "A still listens to alice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.backplane.health().serving, 0);
    let published = a.publish("alice", 12).await.unwrap();
    assert!(published.id.is_some());
    assert_eq!(published.nodes(), Some(0));
    let published = a.publish("nobody", 13).await.unwrap();
    assert_eq!(published.id, None);
    assert_eq!(published.nodes(), Some(0));
}
