//! The runs of the Redis thread tests (`redis_threads`, `redis_thread_data_loss`,
//! `redis_thread_started_over`, `redis_lagging_feed`): alice's AG-UI run, the nodes that publish
//! and fold it, the single-node reference each node must open her thread as, and the faults
//! and waits those tests share. A node here folds runs per thread with a short history (32
//! events), so that a late join can only rebuild a run from the thread's snapshot in Redis.

#![allow(dead_code)]

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_hub::run_state::RunStates;
use sse_hub::{Broadcaster, Config, Frame, FrameKind, Subscription, ThreadId, UserId};
use tokio::time::timeout;

use crate::support::{self, FaultProxy, Hub, Node, RedisServer, WAIT, quick_settings};

/// A config that folds AG-UI runs per thread, with a short history: 32 events.
pub fn config() -> Config {
    let mut config = Config::named("agui");
    config.replay_events = 32;
    config.threads.state = Some(Arc::new(RunStates::default()));
    config
}

/// A node of the Redis at `url`: quick reconnects, a 2 s command timeout.
pub async fn node(url: String) -> Node {
    node_with(url, config()).await
}

/// [`node`] with `config`.
pub async fn node_with(url: String, config: Config) -> Node {
    let mut settings = quick_settings(url);
    settings.command_timeout = Duration::from_secs(2);
    Node::start(settings, config).await
}

/// The single-node reference: the same events, folded by a hub without a backplane.
pub fn single() -> Hub {
    Broadcaster::new(config())
}

pub fn thread() -> ThreadId {
    ThreadId::new("thread-1").unwrap()
}

pub fn alice() -> UserId {
    UserId::from("alice")
}

pub fn run_started() -> Value {
    json!({"type": "RUN_STARTED", "threadId": "thread-1", "runId": "run-1",
           "input": {"threadId": "thread-1", "runId": "run-1", "state": {},
                     "messages": [{"id": "u1", "role": "user", "content": "hello"}],
                     "tools": [], "context": [], "forwardedProps": {}}})
}

pub fn delta(n: usize) -> Value {
    json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": format!("{n},")})
}

/// The events of a run: a start, a step, some state, a message of `deltas` deltas (the
/// `n`-th is `"{n},"`), then its end and the run's end.
pub fn run(deltas: usize) -> Vec<Value> {
    let mut events = vec![
        run_started(),
        json!({"type": "STEP_STARTED", "stepName": "answer"}),
        json!({"type": "STATE_SNAPSHOT", "snapshot": {"progress": 0}}),
        json!({"type": "TEXT_MESSAGE_START", "messageId": "m1", "role": "assistant"}),
    ];
    for n in 0..deltas {
        events.push(delta(n));
        if n % 25 == 24 {
            events.push(json!({"type": "STATE_DELTA",
                "delta": [{"op": "replace", "path": "/progress", "value": n}]}));
        }
    }
    events.push(json!({"type": "TEXT_MESSAGE_END", "messageId": "m1"}));
    events.push(json!({"type": "STEP_FINISHED", "stepName": "answer"}));
    events.push(json!({"type": "RUN_FINISHED", "threadId": "thread-1", "runId": "run-1"}));
    events
}

/// The JSON of every `data:` line of a frame (an opening holds several).
pub fn datas(frame: &Frame) -> Vec<Value> {
    std::str::from_utf8(frame.bytes())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

pub async fn next<E>(sub: &mut Subscription<E>) -> Frame {
    timeout(WAIT, sub.next())
        .await
        .expect("a frame in time")
        .expect("the stream goes on")
}

/// A thread subscription's opening: its first frame.
pub async fn opening<E>(sub: &mut Subscription<E>) -> Vec<Value> {
    let frame = next(sub).await;
    assert_eq!(frame.kind(), FrameKind::Opening, "a thread stream opens");
    datas(&frame)
}

/// A single node's opening now.
pub async fn single_opening(hub: &Hub, user: &UserId) -> Vec<Value> {
    let mut sub = hub.subscribe_in_thread(user, &thread(), None).unwrap();
    opening(&mut sub).await
}

/// The text of `m1` a client holds after `events`: the opening's snapshot, then the deltas.
pub fn text_of(events: &[Value]) -> String {
    let mut text = String::new();
    for event in events {
        match event["type"].as_str().unwrap() {
            "MESSAGES_SNAPSHOT" => {
                if let Some(m) = event["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["id"] == "m1")
                {
                    text = m["content"].as_str().unwrap_or_default().to_owned();
                }
            }
            "TEXT_MESSAGE_CONTENT" => text.push_str(event["delta"].as_str().unwrap()),
            _ => {}
        }
    }
    text
}

pub fn full_text(deltas: usize) -> String {
    (0..deltas).map(|n| format!("{n},")).collect()
}

/// Alice's run, and a single-node reference fed every event of it published so far: what a
/// node must open her thread with is the reference's opening.
pub struct Published {
    pub events: Vec<Value>,
    pub reference: Hub,
}

impl Published {
    pub fn new(events: Vec<Value>) -> Self {
        Self {
            events,
            reference: single(),
        }
    }

    /// Publishes `events[range]` through `node` (each confirmed before the next), and into the
    /// reference.
    pub async fn publish(&self, node: &Node, range: Range<usize>) {
        for event in &self.events[range] {
            node.publish_in_thread(&alice(), &thread(), event).await;
            self.reference
                .broadcast_in_thread(&alice(), &thread(), event)
                .unwrap();
        }
    }

    /// The reference's opening now: a single node's.
    pub async fn expected(&self) -> Vec<Value> {
        single_opening(&self.reference, &alice()).await
    }

    /// Waits until each of `nodes` opens the thread as the reference does (its feed delivered
    /// everything published); returns that opening.
    pub async fn wait_folded_on(&self, nodes: &[&Node]) -> Vec<Value> {
        let expected = self.expected().await;
        for node in nodes {
            opening_on(node, &alice(), &expected).await;
        }
        expected
    }

    /// A tab opening on `node` now opens as the reference, with the run's start and the text of
    /// the first `published` events, each delta once.
    pub async fn assert_opens_whole_on(&self, node: &Node, published: usize) {
        let opened = opening_on(node, &alice(), &self.expected().await).await;
        assert_eq!(opened[0]["type"], "RUN_STARTED");
        assert_eq!(
            text_of(&opened),
            text_of(&self.events[..published]),
            "the answer so far, each delta once"
        );
    }

    /// A tab opens on each of `nodes` (named) as the reference does, with the run's start and
    /// the text of the first `from` events; then the rest of the run is published through `a`,
    /// and each tab follows it to its end, from the run's start, with every delta once.
    pub async fn goes_on_whole_in_tabs_on(&self, a: &Node, nodes: &[(&str, &Node)], from: usize) {
        let mut tabs = Vec::new();
        for (name, node) in nodes {
            self.assert_opens_whole_on(node, from).await;
            let tab = node
                .hub
                .subscribe_in_thread(&alice(), &thread(), None)
                .unwrap();
            tabs.push((name, tab));
        }
        self.publish(a, from..self.events.len()).await;
        for (name, mut tab) in tabs {
            let seen = until_finished(&mut tab).await;
            assert_eq!(seen[0]["type"], "RUN_STARTED", "tab on {name}");
            assert_eq!(
                text_of(&seen),
                text_of(&self.events),
                "tab on {name}: every delta, once"
            );
        }
    }
}

/// Waits until `node` has written a snapshot of the thread covering its `ordinal`-th event.
pub async fn wait_snapshot(redis: &RedisServer, user: &str, ordinal: u64) {
    let mut connection = redis.connection().await;
    assert!(
        snapshot_stored(&mut connection, user, ordinal).await,
        "no snapshot covering event {ordinal}"
    );
}

/// Whether Redis holds, within [`WAIT`], a snapshot of `user`'s thread covering its
/// `ordinal`-th event.
pub async fn snapshot_stored(
    connection: &mut redis::aio::MultiplexedConnection,
    user: &str,
    ordinal: u64,
) -> bool {
    timeout(WAIT, async {
        while snapshot_count(connection, user).await < ordinal {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

/// The count of the thread snapshot stored for `user` (0 if none).
pub async fn snapshot_count(connection: &mut redis::aio::MultiplexedConnection, user: &str) -> u64 {
    let snapshot: Option<String> = redis::cmd("HGET")
        .arg(format!("sse-hub:threads:agui:{user}"))
        .arg("s:thread-1")
        .query_async(connection)
        .await
        .unwrap();
    snapshot
        .as_deref()
        .and_then(|s| s.lines().next())
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Reads `sub` until its stream ends (within [`WAIT`]): the events it delivered meanwhile.
pub async fn until_end<E>(sub: &mut Subscription<E>) -> Vec<Value> {
    let mut seen = Vec::new();
    let ended = timeout(WAIT, async {
        while let Some(frame) = sub.next().await {
            seen.extend(datas(&frame));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends");
    seen
}

/// A node's opening of the thread once its feed delivered everything published (a publish is
/// confirmed when Redis ran it, and reaches the feeds a moment later): polled until it is
/// `expected`, or as long (an opening taken before the last event is shorter).
pub async fn opening_on(node: &Node, user: &UserId, expected: &[Value]) -> Vec<Value> {
    let mut last = Vec::new();
    let matched = timeout(WAIT, async {
        loop {
            let mut sub = node.hub.subscribe_in_thread(user, &thread(), None).unwrap();
            // A thread with nothing to show opens with no frame at all.
            last = match timeout(Duration::from_millis(200), sub.next()).await {
                Ok(Some(frame)) => {
                    assert_eq!(frame.kind(), FrameKind::Opening, "a thread stream opens");
                    datas(&frame)
                }
                _ => Vec::new(),
            };
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if matched.is_err() {
        assert_eq!(
            last, expected,
            "the node's opening never matched a single node's"
        );
    }
    last
}

/// `user`'s plain stream on `node`, once the node listens to the user: from then on the node
/// folds the user's threads from their first event, so it holds their exact states.
pub async fn serve(node: &Node, user: &UserId) -> Subscription<Value> {
    let plain = node.hub.subscribe(user).unwrap();
    let listening = timeout(WAIT, async {
        while node.backplane.health().listening < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(listening.is_ok(), "the node listens to {user}");
    plain
}

/// Waits until `node` reconnected once more than `before` reconnects, and is connected.
pub async fn wait_reconnected_after(node: &Node, before: u64) {
    let waited = timeout(WAIT, async {
        while node.backplane.health().reconnects <= before || !node.backplane.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "reconnects: {:?}", node.backplane.health());
}

/// Redis restarts without persistence: every key is gone, the generation marker included.
/// Waits until each of `nodes` reconnected to the new one.
pub async fn lose_redis_data(redis: &mut RedisServer, nodes: &[&Node]) {
    let before: Vec<u64> = nodes
        .iter()
        .map(|node| node.backplane.health().reconnects)
        .collect();
    redis.restart().await;
    for (node, before) in nodes.iter().zip(before) {
        wait_reconnected_after(node, before).await;
    }
}

/// Every node's feed on `redis` breaks (`CLIENT KILL TYPE pubsub`), Redis keeping its data;
/// waits until each of `nodes` reconnected.
pub async fn break_feeds(redis: &RedisServer, nodes: &[&Node]) {
    let before: Vec<u64> = nodes
        .iter()
        .map(|node| node.backplane.health().reconnects)
        .collect();
    assert!(redis.kill_pubsub_clients().await >= nodes.len() as i64);
    for (node, before) in nodes.iter().zip(before) {
        wait_reconnected_after(node, before).await;
    }
}

/// Polls `tab` (a thread subscription reads its thread back as it is polled) until `node`
/// counted a thread's state unknown.
pub async fn wait_counted_unknown(node: &Node, tab: &mut Subscription<Value>) {
    let counted = timeout(WAIT, async {
        while node.hub.stats().thread_states_unknown == 0 {
            // An ended stream answers at once: wait rather than spin.
            if let Ok(None) = timeout(Duration::from_millis(10), tab.next()).await {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
    .await;
    assert!(counted.is_ok(), "B cannot rebuild the thread: counted");
}

/// Every thread's exact state was kept through Redis losing its data: no node counted one
/// unknown, and each of `found` found the loss, once.
pub fn assert_kept_through_one_loss(nodes: &[&Node], found: &[&Node]) {
    for node in nodes {
        assert_eq!(
            node.hub.stats().thread_states_unknown,
            0,
            "nothing was lost"
        );
    }
    for node in found {
        assert_eq!(
            node.backplane.health().data_losses,
            1,
            "Redis lost its data once"
        );
    }
}

pub async fn close(nodes: &[&Node]) {
    for node in nodes {
        node.backplane.close().await;
    }
}

/// The scene of the tests in which a node loses a thread's exact state: node A on a Redis,
/// node B on it through a fault proxy (so that B's feed alone can break) serving alice a plain
/// stream (so that B folds her thread from its first event), and 12 events of her run (a
/// 20-delta answer) published through A.
pub struct MidRun {
    pub redis: RedisServer,
    pub proxy: FaultProxy,
    pub a: Node,
    pub b: Node,
    pub plain: Subscription<Value>,
    pub published: Published,
}

impl MidRun {
    pub async fn start() -> Self {
        let redis = RedisServer::start().await;
        let proxy = FaultProxy::start(redis.addr()).await;
        let a = node(redis.url()).await;
        let b = node(proxy.url()).await;
        let plain = serve(&b, &alice()).await;
        let published = Published::new(run(20));
        published.publish(&a, 0..12).await;
        Self {
            redis,
            proxy,
            a,
            b,
            plain,
            published,
        }
    }

    /// B's feed breaks while Redis keeps its data, so B no longer trusts its state of the
    /// thread; then Redis loses everything, and both nodes reconnect to the new one, B having
    /// found the loss.
    pub async fn b_loses_the_exact_state_then_redis_its_data(&mut self) {
        self.b_loses_the_exact_state().await;
        lose_redis_data(&mut self.redis, &[&self.a, &self.b]).await;
        assert_eq!(self.b.backplane.health().data_losses, 1);
    }

    /// B's feed breaks while Redis keeps its data, so B no longer trusts its state of the
    /// thread; B reconnects.
    pub async fn b_loses_the_exact_state(&self) {
        break_link_through(&self.proxy, &self.b).await;
    }
}

/// Redis drops alice's thread keys alone (its count, snapshot and recency), as an eviction
/// does, the generation marker and the history staying.
pub async fn evict_thread_keys(redis: &RedisServer) {
    let mut connection = redis.connection().await;
    let deleted: i64 = redis::cmd("DEL")
        .arg("sse-hub:threads:agui:alice")
        .arg("sse-hub:thread-age:agui:alice")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(deleted, 2, "the thread's count, snapshot and recency");
}

/// A tab on the thread on each of `nodes`, read until it holds the text of `published` (a
/// node's feed may deliver the last events a moment after their publish returned): each tab
/// with what it got.
pub async fn tabs_caught_up(
    nodes: &[&Node],
    published: &[Value],
) -> Vec<(Subscription<Value>, Vec<Value>)> {
    let mut tabs = Vec::new();
    for node in nodes {
        let mut tab = node
            .hub
            .subscribe_in_thread(&alice(), &thread(), None)
            .unwrap();
        let mut seen = opening(&mut tab).await;
        while text_of(&seen) != text_of(published) {
            seen.extend(datas(&next(&mut tab).await));
        }
        tabs.push((tab, seen));
    }
    tabs
}

/// `FLUSHALL` on `redis`: it loses every key while every connection stays up.
pub async fn flushall(redis: &RedisServer) {
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// The value of `field` in alice's thread snapshots hash, if any.
pub async fn thread_field(redis: &RedisServer, field: &str) -> Option<String> {
    let mut connection = redis.connection().await;
    redis::cmd("HGET")
        .arg("sse-hub:threads:agui:alice")
        .arg(field)
        .query_async(&mut connection)
        .await
        .unwrap()
}

/// Waits until Redis holds a snapshot of alice's thread that folds events from before it
/// started the thread over (a node put the whole run back).
pub async fn wait_whole_snapshot(redis: &RedisServer) {
    let back = timeout(WAIT, async {
        while thread_field(redis, "r:thread-1").await.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the whole run is back in Redis");
}

/// Reads `tab` until it delivered the run's end: the events it delivered meanwhile.
pub async fn until_finished<E>(tab: &mut Subscription<E>) -> Vec<Value> {
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &Value| e["type"] == "RUN_FINISHED") {
        seen.extend(datas(&next(tab).await));
    }
    seen
}

/// `node`'s link through `proxy` breaks while Redis keeps its data, so the node no longer
/// trusts its states of the threads it folded; waits until it reconnected.
pub async fn break_link_through(proxy: &FaultProxy, node: &Node) {
    let before = node.backplane.health().reconnects;
    proxy.set(support::Fault::Hold);
    proxy.cut();
    proxy.set(support::Fault::None);
    wait_reconnected_after(node, before).await;
}

/// Waits until `node`'s feed brought `more` messages past the `before` it had received;
/// `what` says what they are.
pub async fn wait_received(node: &Node, before: u64, more: u64, what: &str) {
    let dispatched = timeout(WAIT, async {
        while node.backplane.health().received < before + more {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(dispatched.is_ok(), "{what}");
}

/// A thread state: the numbers `n` of `{"n": n}` events folded, in order; its opening is one
/// `{"n":…}` frame per number, so it folds back into the same state. Its checkpoint never changes (the trait's default), so a node
/// writes its snapshot only every `replay_events / 2` events.
#[derive(Debug, Default)]
pub struct Numbers(Vec<u64>);

impl sse_hub::ThreadState for Numbers {
    fn fold(&mut self, data: &[u8]) -> sse_hub::Folded {
        let value: Value = serde_json::from_slice(data).unwrap();
        match value["n"].as_u64() {
            Some(n) => {
                self.0.push(n);
                sse_hub::Folded::Applied
            }
            None => sse_hub::Folded::Ignored,
        }
    }

    fn write_opening(&self, out: &mut Vec<u8>) {
        for n in &self.0 {
            out.extend_from_slice(format!("data: {{\"n\":{n}}}\n\n").as_bytes());
        }
    }

    fn bytes(&self) -> usize {
        self.0.len() * 8
    }
}

#[derive(Debug)]
pub struct NumbersStates;

/// [`config`], folding threads of `{"n": n}` events into the list of their numbers.
pub fn numbers_config() -> Config {
    let mut config = config();
    config.threads.state = Some(Arc::new(NumbersStates));
    config
}

impl sse_hub::ThreadStates for NumbersStates {
    fn create(&self, _: &ThreadId) -> Box<dyn sse_hub::ThreadState> {
        Box::new(Numbers::default())
    }
}
