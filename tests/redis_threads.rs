//! Threads across nodes, against a real `redis-server`: a run published on one node, partly
//! before anyone connects anywhere, opens on any other node exactly as it opens on a single
//! node (the same AG-UI events), and the live tail follows the opening with no gap and no
//! duplicate, even while the run is being published.
//!
//! Every test starts its own `redis-server` on a free loopback port and its own nodes (hubs with
//! their own backplane connections). The history is kept short (`replay_events`), so that a late
//! join can only rebuild the run from the thread's snapshot in Redis. Skips (printing so)
//! without `redis-server`, except under `CI=true`, as the other Redis tests do.
#![cfg(feature = "redis")]

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_hub::run_state::{RunStates, ThreadRun};
use sse_hub::{Broadcaster, Config, Frame, FrameKind, Subscription, ThreadId, UserId};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/split_proxy.rs"]
mod split_proxy;

use split_proxy::{SplitProxy, wait_sent};
use sse_hub::backplane::Backplane;
use support::{FaultProxy, Hub, Node, RedisServer, WAIT, quick_settings, redis_available};

/// A config that folds AG-UI runs per thread, with a short history: 32 events.
fn config() -> Config {
    let mut config = Config::named("agui");
    config.replay_events = 32;
    config.threads.state = Some(Arc::new(RunStates::default()));
    config
}

/// A node of the Redis at `url`: quick reconnects, a 2 s command timeout.
async fn node(url: String) -> Node {
    let mut settings = quick_settings(url);
    settings.command_timeout = Duration::from_secs(2);
    Node::start(settings, config()).await
}

/// The single-node reference: the same events, folded by a hub without a backplane.
fn single() -> Hub {
    Broadcaster::new(config())
}

fn thread() -> ThreadId {
    ThreadId::new("thread-1").unwrap()
}

fn alice() -> UserId {
    UserId::from("alice")
}

fn run_started() -> Value {
    json!({"type": "RUN_STARTED", "threadId": "thread-1", "runId": "run-1",
           "input": {"threadId": "thread-1", "runId": "run-1", "state": {},
                     "messages": [{"id": "u1", "role": "user", "content": "hello"}],
                     "tools": [], "context": [], "forwardedProps": {}}})
}

fn delta(n: usize) -> Value {
    json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": format!("{n},")})
}

/// The events of a run: a start, a step, some state, a message of `deltas` deltas (the
/// `n`-th is `"{n},"`), then its end and the run's end.
fn run(deltas: usize) -> Vec<Value> {
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
fn datas(frame: &Frame) -> Vec<Value> {
    std::str::from_utf8(frame.bytes())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

async fn next<E>(sub: &mut Subscription<E>) -> Frame {
    timeout(WAIT, sub.next())
        .await
        .expect("a frame in time")
        .expect("the stream goes on")
}

/// A thread subscription's opening: its first frame.
async fn opening<E>(sub: &mut Subscription<E>) -> Vec<Value> {
    let frame = next(sub).await;
    assert_eq!(frame.kind(), FrameKind::Opening, "a thread stream opens");
    datas(&frame)
}

/// A single node's opening now.
async fn single_opening(hub: &Hub, user: &UserId) -> Vec<Value> {
    let mut sub = hub.subscribe_in_thread(user, &thread(), None).unwrap();
    opening(&mut sub).await
}

/// The text of `m1` a client holds after `events`: the opening's snapshot, then the deltas.
fn text_of(events: &[Value]) -> String {
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

fn full_text(deltas: usize) -> String {
    (0..deltas).map(|n| format!("{n},")).collect()
}

/// Alice's run, and a single-node reference fed every event of it published so far: what a
/// node must open her thread with is the reference's opening.
struct Published {
    events: Vec<Value>,
    reference: Hub,
}

impl Published {
    fn new(events: Vec<Value>) -> Self {
        Self {
            events,
            reference: single(),
        }
    }

    /// Publishes `events[range]` through `node` (each confirmed before the next), and into the
    /// reference.
    async fn publish(&self, node: &Node, range: Range<usize>) {
        for event in &self.events[range] {
            node.publish_in_thread(&alice(), &thread(), event).await;
            self.reference
                .broadcast_in_thread(&alice(), &thread(), event)
                .unwrap();
        }
    }

    /// The reference's opening now: a single node's.
    async fn expected(&self) -> Vec<Value> {
        single_opening(&self.reference, &alice()).await
    }

    /// Waits until each of `nodes` opens the thread as the reference does (its feed delivered
    /// everything published); returns that opening.
    async fn wait_folded_on(&self, nodes: &[&Node]) -> Vec<Value> {
        let expected = self.expected().await;
        for node in nodes {
            opening_on(node, &alice(), &expected).await;
        }
        expected
    }

    /// A tab opening on `node` now opens as the reference, with the run's start and the text of
    /// the first `published` events, each delta once.
    async fn assert_opens_whole_on(&self, node: &Node, published: usize) {
        let opened = opening_on(node, &alice(), &self.expected().await).await;
        assert_eq!(opened[0]["type"], "RUN_STARTED");
        assert_eq!(
            text_of(&opened),
            text_of(&self.events[..published]),
            "the answer so far, each delta once"
        );
    }
}

/// Waits until `node` has written a snapshot of the thread covering its `ordinal`-th event.
async fn wait_snapshot(redis: &RedisServer, user: &str, ordinal: u64) {
    let mut connection = redis.connection().await;
    let key = format!("sse-hub:threads:agui:{user}");
    let waited = timeout(WAIT, async {
        loop {
            let snapshot: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg("s:thread-1")
                .query_async(&mut connection)
                .await
                .unwrap();
            let count = snapshot
                .as_deref()
                .and_then(|s| s.lines().next())
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            if count >= ordinal {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no snapshot covering event {ordinal}");
}

/// The opening a snapshot holds folds back into the same state: what a node that reads the
/// thread back from Redis relies on. Checked at every point of a run with every kind of open
/// entity.
#[test]
fn an_opening_folds_back_into_the_same_state() {
    let mut events = run(60);
    // A tool call and reasoning open in the middle, closed before the end.
    events.splice(
        10..10,
        [
            json!({"type": "REASONING_START", "messageId": "r1"}),
            json!({"type": "REASONING_MESSAGE_START", "messageId": "r1", "role": "reasoning"}),
            json!({"type": "REASONING_MESSAGE_CONTENT", "messageId": "r1", "delta": "hmm"}),
            json!({"type": "TOOL_CALL_START", "toolCallId": "c1", "toolCallName": "search",
                   "parentMessageId": "m1"}),
            json!({"type": "TOOL_CALL_ARGS", "toolCallId": "c1", "delta": "{\"q\":"}),
        ],
    );
    events.splice(
        30..30,
        [
            json!({"type": "TOOL_CALL_ARGS", "toolCallId": "c1", "delta": "\"x\"}"}),
            json!({"type": "TOOL_CALL_END", "toolCallId": "c1"}),
            json!({"type": "REASONING_MESSAGE_END", "messageId": "r1"}),
            json!({"type": "REASONING_END", "messageId": "r1"}),
        ],
    );
    let mut original = ThreadRun::default();
    for (i, event) in events.iter().enumerate() {
        assert!(
            original.fold(event.to_string().as_bytes()).folded(),
            "{event}"
        );
        let opening = original.opening();
        let mut refolded = ThreadRun::default();
        for data in opening.events() {
            refolded.fold(data);
        }
        assert_eq!(refolded.opening(), opening, "after event {i}");
        // And the rest of the run folds the same into both.
        let (mut a, mut b) = (original.clone(), refolded);
        for later in &events[i + 1..] {
            a.fold(later.to_string().as_bytes());
            b.fold(later.to_string().as_bytes());
        }
        assert_eq!(
            a.opening(),
            b.opening(),
            "the rest of the run after event {i}"
        );
    }
}

/// A run streaming through a node to nobody, for longer than the retention, keeps the node
/// listening to the user and folding the thread, as a single node keeps it
/// (`agui_runs::a_run_streaming_to_nobody_past_the_retention_is_kept`): each of the thread's
/// events restarts the retention. Before, the node dropped the user's channel a retention after
/// the run's first event, mid-run, and made it again at the next: an `UNSUBSCRIBE`, a
/// `SUBSCRIBE` and a read-back of the thread from Redis every retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_run_streaming_to_nobody_past_the_retention_keeps_its_node_listening() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let mut config = config();
    config.retention = Duration::from_millis(300);
    let mut settings = quick_settings(redis.url());
    settings.command_timeout = Duration::from_secs(2);
    let a = Node::start(settings, config).await;
    let published = Published::new(run(30));
    // An event every 50 ms: about two seconds of streaming, six retentions.
    for i in 0..published.events.len() {
        published.publish(&a, i..i + 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        unsubscribes(&redis).await,
        0,
        "the node stopped listening to the user mid-run"
    );
    published
        .assert_opens_whole_on(&a, published.events.len())
        .await;
}

/// How many `UNSUBSCRIBE`s Redis has run (`INFO commandstats`).
async fn unsubscribes(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis.connection().await)
        .await
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_unsubscribe:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

/// A run published on node A before anyone connects anywhere, longer than the history: a late
/// join on node B mid-answer opens exactly as on a single node, then gets the live tail; the
/// client then moves back to node A and opens the same there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_late_join_on_another_node_opens_as_on_a_single_node() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let alice = UserId::from("alice");
    let published = Published::new(run(150));
    let (before, after) = published.events.split_at(120);
    published.publish(&a, 0..120).await;
    // Far more than the history holds: only a snapshot can rebuild the run.
    wait_snapshot(&redis, "alice", 90).await;

    let mut on_b = b.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
    let opened = opening(&mut on_b).await;
    assert_eq!(opened, published.expected().await);
    assert_eq!(opened[0]["type"], "RUN_STARTED");
    assert_eq!(text_of(&opened), text_of(before), "the answer so far");

    published.publish(&a, 120..130).await;
    let mut tail = Vec::new();
    for _ in 0..10 {
        tail.extend(datas(&next(&mut on_b).await));
    }
    assert_eq!(
        tail,
        after[..10].to_vec(),
        "the live tail, no gap, no duplicate"
    );
    drop(on_b);

    // The client moves to node A (and again to B): the same opening as a single node's, once
    // the node's feed delivered the last event (a publish is confirmed when Redis ran it, and
    // reaches the nodes' feeds a moment later; an opening taken before is followed by it).
    let expected = published.expected().await;
    for node in [&a, &b] {
        let moved = timeout(WAIT, async {
            loop {
                let mut moved = node
                    .hub
                    .subscribe_in_thread(&alice, &thread(), None)
                    .unwrap();
                let opened = opening(&mut moved).await;
                if opened == expected {
                    return;
                }
                assert_eq!(opened.len(), expected.len(), "{opened:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            moved.is_ok(),
            "the node's opening never matched a single node's"
        );
    }
    for node in [&a, &b] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0);
    }
    a.backplane.close().await;
    b.backplane.close().await;
}

/// Joins on both nodes while the run is being published: each client's opening plus its live
/// tail rebuild the whole answer, with no delta missing and none twice, and every client sees
/// the run end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn joins_during_concurrent_publishing_have_no_gap_and_no_duplicate_at_the_seam() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let alice = UserId::from("alice");
    const DELTAS: usize = 400;
    let events = run(DELTAS);
    let publisher = {
        let hub = a.hub.clone();
        let alice = alice.clone();
        let events = events.clone();
        tokio::spawn(async move {
            for (i, event) in events.iter().enumerate() {
                hub.broadcast_in_thread_async(&alice, &thread(), event)
                    .await
                    .expect("publish");
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Clients join on either node, at different points of the run.
    let mut readers = Vec::new();
    for k in 0..8 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let hub = if k % 2 == 0 {
            b.hub.clone()
        } else {
            a.hub.clone()
        };
        let alice = alice.clone();
        readers.push(tokio::spawn(async move {
            let mut sub = hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
            let mut seen = Vec::new();
            loop {
                let frame = next(&mut sub).await;
                assert!(
                    matches!(frame.kind(), FrameKind::Opening | FrameKind::Event(_)),
                    "only the opening and events: {frame:?}"
                );
                let events = datas(&frame);
                let done = events.iter().any(|e| e["type"] == "RUN_FINISHED");
                seen.extend(events);
                if done {
                    return seen;
                }
            }
        }));
    }
    publisher.await.unwrap();
    for (k, reader) in readers.into_iter().enumerate() {
        let seen = timeout(WAIT, reader)
            .await
            .expect("the reader ends")
            .unwrap();
        assert_eq!(seen[0]["type"], "RUN_STARTED", "client {k}");
        assert_eq!(text_of(&seen), full_text(DELTAS), "client {k}");
        let ends = seen.iter().filter(|e| e["type"] == "RUN_FINISHED").count();
        assert_eq!(ends, 1, "client {k}");
    }
    for node in [&a, &b] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0);
    }
    a.backplane.close().await;
    b.backplane.close().await;
}

/// A publish into a thread is kept even when no node serves the user, and a thread
/// subscription without a state resumes by id on another node, replaying only its thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_thread_publish_with_a_backplane_is_kept_and_its_id_resumes_on_any_node() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let bob = UserId::from("bob");
    // Without a thread state, a thread subscription resumes by id, replaying only its thread.
    let mut plain = Config::named("plain");
    plain.replay_events = 64;
    let plain_a: Hub = Broadcaster::with_backplane(plain.clone(), Arc::new(a.backplane.clone()));
    let plain_b: Hub = Broadcaster::with_backplane(plain, Arc::new(b.backplane.clone()));
    let (t1, t2) = (ThreadId::new("t1").unwrap(), ThreadId::new("t2").unwrap());
    let first = plain_a
        .broadcast_in_thread_async(&bob, &t1, &json!({"n": 0}))
        .await
        .unwrap()
        .id
        .expect("kept with nobody connected");
    for n in 1..20 {
        let t = if n % 2 == 0 { &t1 } else { &t2 };
        plain_a
            .broadcast_in_thread_async(&bob, t, &json!({ "n": n }))
            .await
            .unwrap();
    }
    let mut resumed = plain_b
        .subscribe_in_thread(&bob, &t1, Some(&first.to_string()))
        .unwrap();
    let mut replayed = Vec::new();
    for _ in 0..9 {
        replayed.push(datas(&next(&mut resumed).await)[0]["n"].as_u64().unwrap());
    }
    assert_eq!(replayed, (2..20).step_by(2).collect::<Vec<u64>>());
    plain_a
        .broadcast_in_thread_async(&bob, &t2, &json!({"n": 20}))
        .await
        .unwrap();
    plain_a
        .broadcast_in_thread_async(&bob, &t1, &json!({"n": 21}))
        .await
        .unwrap();
    assert_eq!(
        datas(&next(&mut resumed).await)[0]["n"],
        21,
        "live, t1 only"
    );
    a.backplane.close().await;
    b.backplane.close().await;
}

/// A node whose feed was interrupted missed events: it must not open from the state it had.
/// Its thread streams end, and the next connection reads the thread back: the same opening as
/// a single node's, with nothing published after the reconnect to reveal the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_node_whose_feed_broke_reads_the_thread_back() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = node(redis.url()).await;
    let b = node(proxy.url()).await;
    let alice = UserId::from("alice");
    let published = Published::new(run(100));
    published.publish(&a, 0..40).await;
    let mut on_b = b.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
    let mut seen = opening(&mut on_b).await;
    published.publish(&a, 40..50).await;
    while text_of(&seen) != text_of(&published.events[..50]) {
        seen.extend(datas(&next(&mut on_b).await));
    }
    // B loses its connections, and cannot reconnect until A published the rest.
    proxy.set(support::Fault::Hold);
    proxy.cut();
    published.publish(&a, 50..80).await;
    proxy.set(support::Fault::None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(b.backplane.wait_connected(WAIT).await, "B reconnects");
    // B's thread stream ends (what it missed is only in Redis)...
    let ended = timeout(WAIT, async {
        loop {
            match on_b.next().await {
                None => return,
                Some(frame) => assert!(
                    !datas(&frame)
                        .iter()
                        .any(|e| e["delta"].as_str().is_some_and(|d| d.starts_with("46,"))),
                    "nothing is delivered twice"
                ),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the thread stream ends after the reconnect");
    // ...and a new connection opens with the run as a single node has it.
    let expected = published.expected().await;
    let mut again = b.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
    assert_eq!(opening(&mut again).await, expected);
    assert_eq!(b.hub.stats().thread_states_unknown, 0);
    assert_eq!(b.backplane.health().data_losses, 0, "Redis kept its data");
    a.backplane.close().await;
    b.backplane.close().await;
}

/// A run slower than the history's age bound (an agent waiting on a tool, say): its events
/// after the thread's last snapshot are older than `replay_age` when the next one is published.
/// A node that reads the thread back then must still find them in the history: a tab opening
/// on node B opens exactly as on a single node (the open message included, which the official
/// client needs before the next delta), not from the run's start alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_slow_run_opens_whole_on_another_node_after_its_events_aged() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let age = Duration::from_secs(1);
    let aged = || {
        let mut config = config();
        config.replay_age = age;
        config
    };
    let node = |config: Config| {
        let mut settings = quick_settings(redis.url());
        settings.command_timeout = Duration::from_secs(2);
        Node::start(settings, config)
    };
    let (a, b) = (node(aged()).await, node(aged()).await);
    let reference: Hub = Broadcaster::new(aged());
    let alice = UserId::from("alice");
    let events = run(20);
    // The run's start is snapshotted (a checkpoint); the message after it is not yet (fewer
    // than `replay_events / 2` events).
    for event in &events[..10] {
        a.publish_in_thread(&alice, &thread(), event).await;
        reference
            .broadcast_in_thread(&alice, &thread(), event)
            .unwrap();
    }
    wait_snapshot(&redis, "alice", 1).await;
    // The agent waits longer than the history's age bound, then goes on.
    tokio::time::sleep(age + Duration::from_millis(200)).await;
    a.publish_in_thread(&alice, &thread(), &events[10]).await;
    reference
        .broadcast_in_thread(&alice, &thread(), &events[10])
        .unwrap();

    let mut on_b = b.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
    let opened = opening(&mut on_b).await;
    assert_eq!(opened, single_opening(&reference, &alice).await);
    assert_eq!(
        text_of(&opened),
        text_of(&events[..11]),
        "the answer so far"
    );
    assert_eq!(b.hub.stats().thread_states_unknown, 0);
    a.backplane.close().await;
    b.backplane.close().await;
}

/// The node holding a thread's newest state goes (a crash, a deploy) before its next snapshot
/// was due, so the snapshot in Redis lags the history. Another node reads the thread back
/// (a tab opens there): it then holds the exact state, and must leave a snapshot that covers
/// it, or the history trimming the lagging events (the user's other events go on) leaves every
/// later reader with a partial run, although a node held the exact state all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_node_that_reads_a_thread_back_leaves_a_snapshot_covering_it() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let alice = UserId::from("alice");
    let published = Published::new(run(20));
    // The run's start is snapshotted (a checkpoint); the 7 events after it are not yet due.
    published.publish(&a, 0..8).await;
    wait_snapshot(&redis, "alice", 1).await;
    drop(a);
    let expected = published.expected().await;
    let mut on_b = b.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
    assert_eq!(opening(&mut on_b).await, expected);
    drop(on_b);
    // B holds the thread's exact state while the user's other events fill the history (32
    // events) past the thread's.
    let a = node(redis.url()).await;
    for n in 0..40 {
        a.publish_stored("alice", n).await;
    }
    assert_eq!(
        b.hub.stats().thread_states_unknown,
        0,
        "B's state stayed exact"
    );
    // A node that reads the thread back now opens as a single node does.
    let c = node(redis.url()).await;
    let mut on_c = c.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
    assert_eq!(opening(&mut on_c).await, expected);
    assert_eq!(c.hub.stats().thread_states_unknown, 0);
    for node in [&a, &b, &c] {
        node.backplane.close().await;
    }
}

/// The count of the thread snapshot stored for `user` (0 if none).
async fn snapshot_count(connection: &mut redis::aio::MultiplexedConnection, user: &str) -> u64 {
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

/// Many runs end at once while Redis is slow (a latency spike): more snapshot writes than a
/// node keeps in flight. The run's end is its last snapshot (nothing follows to replace it),
/// so it must still be stored: otherwise the history later trims what followed the stored
/// one, and the run opens without its end on a node that reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn the_snapshots_of_runs_ending_together_on_a_slow_redis_are_all_stored() {
    if !redis_available() {
        return;
    }
    const USERS: usize = 150;
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = node(proxy.url()).await;
    let reference = single();
    let users: Vec<UserId> = (0..USERS).map(|i| UserId::from(format!("u{i}"))).collect();
    let events = run(2);
    // A serves the users (so that it folds their runs from the first event), every run starts
    // (snapshotted), then Redis slows down while they all go on and end.
    for user in &users {
        drop(a.hub.subscribe(user).unwrap());
    }
    let listening = timeout(WAIT, async {
        while a.backplane.health().listening < USERS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(listening.is_ok(), "A listens to every user");
    for user in &users {
        a.publish_in_thread(user, &thread(), &events[0]).await;
    }
    let mut connection = redis.connection().await;
    for (i, _) in users.iter().enumerate() {
        let stored = timeout(WAIT, async {
            while snapshot_count(&mut connection, &format!("u{i}")).await < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(stored.is_ok(), "the start of u{i}'s run is snapshotted");
    }
    for event in &events {
        reference
            .broadcast_in_thread(&users[0], &thread(), event)
            .unwrap();
    }
    proxy.set(support::Fault::Latency(Duration::from_millis(300)));
    let thread = thread();
    let mut outcomes = Vec::new();
    for event in &events[1..] {
        for user in &users {
            outcomes.push(a.hub.broadcast_in_thread_async(user, &thread, event));
        }
    }
    for outcome in futures_util::future::join_all(outcomes).await {
        outcome.expect("publish");
    }
    proxy.set(support::Fault::None);
    let ends = events.len() as u64;
    for (i, _) in users.iter().enumerate() {
        let stored = timeout(WAIT, async {
            while snapshot_count(&mut connection, &format!("u{i}")).await < ends {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            stored.is_ok(),
            "u{i}'s snapshot never covered its run's end"
        );
    }
    // What the user does next pushes the run out of the history; a node that reads the
    // thread back still opens it whole.
    for n in 0..40 {
        a.publish_stored("u0", n).await;
    }
    let b = node(redis.url()).await;
    let mut on_b = b.hub.subscribe_in_thread(&users[0], &thread, None).unwrap();
    assert_eq!(
        opening(&mut on_b).await,
        single_opening(&reference, &users[0]).await
    );
    a.backplane.close().await;
    b.backplane.close().await;
}

/// Reads `sub` until its stream ends (within [`WAIT`]): the events it delivered meanwhile.
async fn until_end<E>(sub: &mut Subscription<E>) -> Vec<Value> {
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
async fn opening_on(node: &Node, user: &UserId, expected: &[Value]) -> Vec<Value> {
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
async fn serve(node: &Node, user: &UserId) -> Subscription<Value> {
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
async fn wait_reconnected_after(node: &Node, before: u64) {
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
async fn lose_redis_data(redis: &mut RedisServer, nodes: &[&Node]) {
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
async fn break_feeds(redis: &RedisServer, nodes: &[&Node]) {
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
async fn wait_counted_unknown(node: &Node, tab: &mut Subscription<Value>) {
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
fn assert_kept_through_one_loss(nodes: &[&Node], found: &[&Node]) {
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

async fn close(nodes: &[&Node]) {
    for node in nodes {
        node.backplane.close().await;
    }
}

/// The scene of the tests in which a node loses a thread's exact state: node A on a Redis,
/// node B on it through a fault proxy (so that B's feed alone can break) serving alice a plain
/// stream (so that B folds her thread from its first event), and 12 events of her run (a
/// 20-delta answer) published through A.
struct MidRun {
    redis: RedisServer,
    proxy: FaultProxy,
    a: Node,
    b: Node,
    plain: Subscription<Value>,
    published: Published,
}

impl MidRun {
    async fn start() -> Self {
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
    async fn b_loses_the_exact_state_then_redis_its_data(&mut self) {
        self.b_loses_the_exact_state().await;
        lose_redis_data(&mut self.redis, &[&self.a, &self.b]).await;
        assert_eq!(self.b.backplane.health().data_losses, 1);
    }

    /// B's feed breaks while Redis keeps its data, so B no longer trusts its state of the
    /// thread; B reconnects.
    async fn b_loses_the_exact_state(&self) {
        let before = self.b.backplane.health().reconnects;
        self.proxy.set(support::Fault::Hold);
        self.proxy.cut();
        self.proxy.set(support::Fault::None);
        wait_reconnected_after(&self.b, before).await;
    }
}

/// Redis drops alice's thread keys alone (its count, snapshot and recency), as an eviction
/// does, the generation marker and the history staying.
async fn evict_thread_keys(redis: &RedisServer) {
    let mut connection = redis.connection().await;
    let deleted: i64 = redis::cmd("DEL")
        .arg("sse-hub:threads:agui:alice")
        .arg("sse-hub:thread-age:agui:alice")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(deleted, 2, "the thread's count, snapshot and recency");
}

/// Redis restarts without persistence in the middle of a run: every key is gone, the thread's
/// count and snapshot included, and the run goes on (its next event is the thread's first in
/// the new Redis). The nodes held the run's exact state, so nothing of it is lost: a tab that
/// opens on either node, before or after the run goes on, and on a node that never held the
/// thread, opens with the whole run (its start, all the text so far), as a single node would,
/// and its live tail then rebuilds the whole answer, with no delta missing and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_run_survives_redis_losing_its_data_mid_run() {
    if !redis_available() {
        return;
    }
    const DELTAS: usize = 60;
    let mut redis = RedisServer::start().await;
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let published = Published::new(run(DELTAS));
    let events = &published.events;
    // The run is under way, a tab open on each node.
    published.publish(&a, 0..10).await;
    let mut tabs = Vec::new();
    for node in [&a, &b] {
        let mut tab = node
            .hub
            .subscribe_in_thread(&alice(), &thread(), None)
            .unwrap();
        let seen = opening(&mut tab).await;
        tabs.push((tab, seen));
    }
    published.publish(&a, 10..30).await;
    // Until each node's feed delivered the last of them: an event Redis confirmed and then
    // lost before any feed delivered it is not one the nodes can keep (a known limit).
    for (tab, seen) in &mut tabs {
        while seen.last() != Some(&events[29]) {
            seen.extend(datas(&next(tab).await));
        }
    }

    // Redis loses everything. Both nodes reconnect, and end their streams (they cannot know
    // what they missed); what a tab got before its stream ended is the run so far, once.
    lose_redis_data(&mut redis, &[&a, &b]).await;
    for (mut tab, mut seen) in tabs {
        seen.extend(until_end(&mut tab).await);
        assert_eq!(seen[0]["type"], "RUN_STARTED");
        assert_eq!(
            text_of(&seen),
            text_of(&events[..30]),
            "no delta lost or twice"
        );
    }

    // A tab opening on the node that did not publish before the run goes on: the whole run.
    published.assert_opens_whole_on(&b, 30).await;

    // The run goes on; then tabs open on both nodes, and on a node that never held the thread
    // (it reads it back from Redis, which must hold the whole run again).
    published.publish(&a, 30..45).await;
    let c = node(redis.url()).await;
    let mut tabs = Vec::new();
    for node in [&b, &a, &c] {
        published.assert_opens_whole_on(node, 45).await;
        let tab = node
            .hub
            .subscribe_in_thread(&alice(), &thread(), None)
            .unwrap();
        tabs.push(tab);
    }
    published.publish(&a, 45..events.len()).await;
    for (k, mut tab) in tabs.into_iter().enumerate() {
        let mut seen = Vec::new();
        while !seen.iter().any(|e: &Value| e["type"] == "RUN_FINISHED") {
            seen.extend(datas(&next(&mut tab).await));
        }
        assert_eq!(seen[0]["type"], "RUN_STARTED", "tab {k}");
        let starts = seen.iter().filter(|e| e["type"] == "RUN_STARTED").count();
        assert_eq!(starts, 1, "tab {k}");
        assert_eq!(
            text_of(&seen),
            full_text(DELTAS),
            "tab {k}: every delta, once"
        );
    }
    assert_kept_through_one_loss(&[&a, &b, &c], &[&a, &b]);
    assert_eq!(c.backplane.health().data_losses, 0);
    close(&[&a, &b, &c]).await;
}

/// Redis loses its data while a node knows the thread without holding its exact state (its
/// feed broke before, and nothing made it read the thread back since): that node cannot tell
/// what the thread held, so a connection to the thread there counts its state unknown (and
/// logs it), rather than open silently from a thread started over; the node that held the
/// exact state still opens with the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_node_without_the_exact_state_counts_a_thread_redis_lost() {
    if !redis_available() {
        return;
    }
    let mut scene = MidRun::start().await;
    // Both nodes hold the run's exact state.
    let expected = scene.published.wait_folded_on(&[&scene.a, &scene.b]).await;
    scene.b_loses_the_exact_state_then_redis_its_data().await;
    let MidRun { a, b, plain, .. } = scene;
    drop(plain);

    // A tab opens on B: B reads the thread back, and finds nothing it can vouch for.
    let mut on_b = b
        .hub
        .subscribe_in_thread(&alice(), &thread(), None)
        .unwrap();
    wait_counted_unknown(&b, &mut on_b).await;
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "once");
    let opened = opening_on(&a, &alice(), &expected).await;
    assert_eq!(opened[0]["type"], "RUN_STARTED");
    assert_eq!(
        a.hub.stats().thread_states_unknown,
        0,
        "A kept the exact state"
    );
    close(&[&a, &b]).await;
}

/// After Redis lost its data, the nodes went on from their kept states, but the snapshot that
/// puts the whole run back in Redis did not get there (a write is best effort: it is dropped
/// when the link changes first); then the feeds break again, with Redis keeping its data. A
/// node must not forget the only whole copy of the run: it keeps it again, and joins it to
/// Redis' events without folding twice those it holds already, so a tab still opens with the
/// whole run, on it and on a node that reads the thread back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_run_rejoined_after_a_loss_survives_its_snapshot_not_reaching_redis() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let published = Published::new(run(40));
    published.publish(&a, 0..20).await;
    published.wait_folded_on(&[&a, &b]).await;
    lose_redis_data(&mut redis, &[&a, &b]).await;
    published.publish(&a, 20..30).await;
    published.wait_folded_on(&[&a, &b]).await;
    // Every snapshot write of the nodes is done (a later command on the same connection is
    // answered after it); then the re-seeded snapshot is taken back, as if it never came.
    wait_snapshot(&redis, "alice", 1).await;
    a.publish_stored("alice", 1).await;
    b.publish_stored("alice", 2).await;
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("HSET")
        .arg("sse-hub:threads:agui:alice")
        .arg("s:thread-1")
        .arg("0-1 0\n")
        .query_async(&mut connection)
        .await
        .unwrap();
    // The feeds break; Redis keeps its data.
    break_feeds(&redis, &[&a, &b]).await;

    let c = node(redis.url()).await;
    for node in [&b, &a, &c] {
        published.assert_opens_whole_on(node, 30).await;
    }
    assert_kept_through_one_loss(&[&a, &b, &c], &[&a, &b]);
    close(&[&a, &b, &c]).await;
}

/// `ACL SETUSER default <rule>` on `redis`: a test's way to make a node's reconnect fail at a
/// given step (`resetchannels &sse-hub:generation`: its `SUBSCRIBE`s to the users' feeds,
/// after it connected and read the generation marker; the marker's own channel stays
/// allowed).
async fn acl_default(redis: &RedisServer, rule: &str) {
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg(rule)
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// Redis loses its data, and the first reconnect of a node that finds it out fails after it
/// read the generation marker (its `SUBSCRIBE`s are refused). The node must still keep its
/// exact state of the thread: its next reconnect reads the new marker as the one it saw, so
/// only the first could tell its channels, and a tab that opens on it must show the whole run,
/// not a thread started over from nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_loss_found_by_a_reconnect_that_then_fails_still_keeps_the_thread() {
    if !redis_available() {
        return;
    }
    let MidRun {
        mut redis,
        proxy,
        a,
        b,
        plain: _plain,
        published,
    } = MidRun::start().await;
    let expected = published.wait_folded_on(&[&b]).await;

    // Redis loses everything while B cannot reach it; the new Redis refuses `SUBSCRIBE` to
    // the feeds.
    proxy.set(support::Fault::Hold);
    lose_redis_data(&mut redis, &[&a]).await;
    acl_default(&redis, "resetchannels").await;
    acl_default(&redis, "&sse-hub:generation").await;
    proxy.cut();
    proxy.set(support::Fault::None);
    let found = timeout(WAIT, async {
        while b.backplane.health().data_losses == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "B finds the loss: {:?}",
        b.backplane.health()
    );
    // Its reconnect fails, and the next ones too, until Redis takes `SUBSCRIBE` again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.backplane.is_connected());
    let before = b.backplane.health().reconnects;
    acl_default(&redis, "allchannels").await;
    wait_reconnected_after(&b, before).await;
    assert_eq!(b.backplane.health().data_losses, 1);

    let opened = opening_on(&b, &alice(), &expected).await;
    assert_eq!(opened[0]["type"], "RUN_STARTED");
    assert_eq!(b.hub.stats().thread_states_unknown, 0);
    close(&[&a, &b]).await;
}

/// A thread state for [`a_marker_gone_without_the_data_does_not_fold_a_thread_twice`]: the
/// numbers `n` folded, in order; its opening is one `{"n":…}` frame per number, so it folds
/// back into the same state. Its checkpoint never changes (the trait's default), so a node
/// writes its snapshot only every `replay_events / 2` events.
#[derive(Debug, Default)]
struct Numbers(Vec<u64>);

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
struct NumbersStates;

/// [`config`], folding threads of `{"n": n}` events into the list of their numbers.
fn numbers_config() -> Config {
    let mut config = config();
    config.threads.state = Some(Arc::new(NumbersStates));
    config
}

/// A node of `redis` with [`numbers_config`].
async fn node_numbers(redis: &RedisServer) -> Node {
    Node::start(quick_settings(redis.url()), numbers_config()).await
}

impl sse_hub::ThreadStates for NumbersStates {
    fn create(&self, _: &ThreadId) -> Box<dyn sse_hub::ThreadState> {
        Box::new(Numbers::default())
    }
}

/// Redis keeps its data but its generation marker goes (an `allkeys-*` eviction policy evicts
/// it, or someone deletes it), then a node's feed breaks: the node that reconnects sets the
/// marker again, and finds the data kept, so that is no loss. It reads the thread back as
/// after any interruption; Redis holds the thread from its first event, with no snapshot but
/// the empty one its first event stored, and the node folds each event once. (Where a node
/// does take such a marker for a loss, its search for the data giving up first, its kept
/// state is joined only to the events after the last one it holds: see `sync_base`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_marker_gone_without_the_data_does_not_fold_a_thread_twice() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let mut config = config();
    config.threads.state = Some(Arc::new(NumbersStates));
    let a = Node::start(quick_settings(redis.url()), config.clone()).await;
    let b = Node::start(quick_settings(redis.url()), config).await;
    // B serves alice, so it folds the thread from its first event.
    let _plain = serve(&b, &alice()).await;
    // Fewer events than a snapshot is written after.
    let expected: Vec<Value> = (0..5).map(|n| json!({ "n": n })).collect();
    for event in &expected {
        a.publish_in_thread(&alice(), &thread(), event).await;
    }
    opening_on(&b, &alice(), &expected).await;

    let mut connection = redis.connection().await;
    let _: () = redis::cmd("DEL")
        .arg("sse-hub:generation")
        .query_async(&mut connection)
        .await
        .unwrap();
    break_feeds(&redis, &[&b]).await;

    let opened = opening_on(&b, &alice(), &expected).await;
    assert_eq!(opened, expected, "each event once");
    for node in [&a, &b] {
        assert_eq!(node.backplane.health().data_losses, 0, "no loss");
    }
    close(&[&a, &b]).await;
}

/// Redis loses its data while a node knows the thread without its exact state; a tab opens on
/// that node before the run goes on (it reads the thread back: nothing yet, counted unknown),
/// then the run goes on, with an event of a run whose start the node's state lacks. That is
/// the same loss of the same thread: counted once, not again by the run state's fold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_thread_lost_without_its_exact_state_is_counted_once() {
    if !redis_available() {
        return;
    }
    let mut scene = MidRun::start().await;
    scene.b_loses_the_exact_state_then_redis_its_data().await;
    let MidRun {
        a, b, published, ..
    } = &scene;

    // A tab on B reads the thread back: nothing B can vouch for, counted.
    let mut tab = b
        .hub
        .subscribe_in_thread(&alice(), &thread(), None)
        .unwrap();
    wait_counted_unknown(b, &mut tab).await;
    // The run goes on; the tab gets its events.
    published.publish(a, 12..14).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = next(&mut tab).await;
        seen.extend(datas(&frame));
    }
    assert_eq!(
        b.hub.stats().thread_states_unknown,
        1,
        "one loss, counted once"
    );
    close(&[a, b]).await;
}

/// A tab on the thread on each of `nodes`, read until it holds the text of `published` (a
/// node's feed may deliver the last events a moment after their publish returned): each tab
/// with what it got.
async fn tabs_caught_up(
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
async fn flushall(redis: &RedisServer) {
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// Redis loses its data in the middle of a run *without cutting a connection* (a `FLUSHALL`),
/// and the run goes on at once: its next events are the thread's first in Redis. No reconnect
/// tells the nodes, yet they must do what they do when a reconnect finds the loss: count it
/// once, end their streams (their clients come back), keep the run's exact state and put it
/// back in Redis. So a tab open before the loss ends having received the run so far, once, and
/// a tab that opens afterwards on any node (one that never held the thread included) opens
/// with the whole run, then follows it to its end with no delta missing and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_run_survives_a_flushall_that_cuts_no_connection() {
    if !redis_available() {
        return;
    }
    const DELTAS: usize = 60;
    let redis = RedisServer::start().await;
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let alice = alice();
    let published = Published::new(run(DELTAS));
    let events = &published.events;
    published.publish(&a, 0..30).await;
    let tabs = tabs_caught_up(&[&a, &b], &events[..30]).await;

    // Redis loses everything, the nodes' connections stay up, and the run goes on at once.
    flushall(&redis).await;
    published.publish(&a, 30..45).await;
    for (k, (mut tab, mut seen)) in tabs.into_iter().enumerate() {
        seen.extend(until_end(&mut tab).await);
        assert_eq!(seen[0]["type"], "RUN_STARTED", "tab {k}");
        let text = text_of(&seen);
        assert!(
            full_text(DELTAS).starts_with(&text) && text.len() >= text_of(&events[..30]).len(),
            "tab {k}: the run so far, once: {text:?}"
        );
    }
    let expected = published.expected().await;
    let c = node(redis.url()).await;
    let mut tabs = Vec::new();
    for node in [&b, &a, &c] {
        let opened = opening_on(node, &alice, &expected).await;
        assert_eq!(opened[0]["type"], "RUN_STARTED");
        let tab = node
            .hub
            .subscribe_in_thread(&alice, &thread(), None)
            .unwrap();
        tabs.push(tab);
    }
    published.publish(&a, 45..events.len()).await;
    for (k, mut tab) in tabs.into_iter().enumerate() {
        let mut seen = Vec::new();
        while !seen.iter().any(|e: &Value| e["type"] == "RUN_FINISHED") {
            seen.extend(datas(&next(&mut tab).await));
        }
        assert_eq!(seen[0]["type"], "RUN_STARTED", "tab {k}");
        assert_eq!(
            text_of(&seen),
            full_text(DELTAS),
            "tab {k}: every delta, once"
        );
    }
    for node in [&a, &b, &c] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0);
    }
    for node in [&a, &b] {
        let health = node.backplane.health();
        assert_eq!(health.data_losses, 1, "{health:?}");
        assert_eq!(health.reconnects, 0, "no connection was cut");
    }
    assert_eq!(c.backplane.health().data_losses, 0);
    for node in [&a, &b, &c] {
        node.backplane.close().await;
    }
}

/// Redis loses its data without cutting a connection (a `FLUSHALL`) while node B knows the
/// thread without its exact state, and the first thing after is a tab opening on B: its read
/// of the thread is what puts a new generation marker in Redis. B must take that read for one
/// of the new Redis, not for the state it held before (it held none): it counts the thread's
/// state unknown, once, and does not pass off what it read as the whole thread (the node that
/// held the exact state re-seeds Redis, and a node that reads the thread back gets the run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_thread_read_that_finds_a_flushall_is_not_taken_for_the_state_before_it() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = node(redis.url()).await;
    let b = node(proxy.url()).await;
    let reference = single();
    let alice = UserId::from("alice");
    let _plain = b.hub.subscribe(&alice).unwrap();
    let listening = timeout(WAIT, async {
        while b.backplane.health().listening < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(listening.is_ok(), "B listens to alice");
    let events = run(20);
    for event in &events[..12] {
        a.publish_in_thread(&alice, &thread(), event).await;
        reference
            .broadcast_in_thread(&alice, &thread(), event)
            .unwrap();
    }
    // B's feed breaks (Redis keeps its data): B no longer holds the thread's exact state.
    let before = b.backplane.health().reconnects;
    proxy.set(support::Fault::Hold);
    proxy.cut();
    proxy.set(support::Fault::None);
    wait_reconnected_after(&b, before).await;

    flushall(&redis).await;
    let mut tab = b.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
    let counted = timeout(WAIT, async {
        while b.hub.stats().thread_states_unknown == 0 {
            // Polled: the subscription runs the sync; a tab whose syncs failed ends, and the
            // client opens another.
            if let Ok(None) = timeout(Duration::from_millis(10), tab.next()).await {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tab = b.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
            }
        }
    })
    .await;
    assert!(counted.is_ok(), "B cannot rebuild the thread: counted");
    for event in &events[12..14] {
        a.publish_in_thread(&alice, &thread(), event).await;
        reference
            .broadcast_in_thread(&alice, &thread(), event)
            .unwrap();
    }
    let expected = single_opening(&reference, &alice).await;
    let c = node(redis.url()).await;
    let opened = opening_on(&c, &alice, &expected).await;
    assert_eq!(opened[0]["type"], "RUN_STARTED");
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "once");
    for node in [&a, &b] {
        assert_eq!(node.backplane.health().data_losses, 1);
    }
    for node in [&a, &b, &c] {
        node.backplane.close().await;
    }
}

/// The generation marker is deleted (or evicted alone) while Redis keeps its data: the nodes
/// set it again, and must not take that for a loss. Nothing is counted, no stream ends, the
/// run goes on in every tab, and a node that reads the thread back gets the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_marker_deleted_while_redis_keeps_its_data_is_no_loss() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    // Link checks every 100 ms: one of them finds the marker gone.
    let (a, b) = (
        Node::start(support::settings(redis.url()), config()).await,
        Node::start(support::settings(redis.url()), config()).await,
    );
    let alice = alice();
    let published = Published::new(run(20));
    let events = &published.events;
    published.publish(&a, 0..12).await;
    let tabs = tabs_caught_up(&[&a, &b], &events[..12]).await;

    let mut connection = redis.connection().await;
    let deleted: i64 = redis::cmd("DEL")
        .arg("sse-hub:generation")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let back = timeout(WAIT, async {
        loop {
            let marker: Option<String> = redis::cmd("GET")
                .arg("sse-hub:generation")
                .query_async(&mut connection)
                .await
                .unwrap();
            if marker.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "a node sets the marker again");
    // Published after the marker was set again: every node hears of the marker first.
    published.publish(&a, 12..events.len()).await;
    for (k, (mut tab, mut seen)) in tabs.into_iter().enumerate() {
        while !seen.iter().any(|e| e["type"] == "RUN_FINISHED") {
            seen.extend(datas(&next(&mut tab).await));
        }
        assert_eq!(text_of(&seen), full_text(20), "tab {k}: every delta, once");
    }
    for node in [&a, &b] {
        let health = node.backplane.health();
        assert_eq!(health.data_losses, 0, "{health:?}");
        assert_eq!(node.hub.stats().thread_states_unknown, 0);
    }
    let expected = published.expected().await;
    let c = node(redis.url()).await;
    let opened = opening_on(&c, &alice, &expected).await;
    assert_eq!(opened[0]["type"], "RUN_STARTED");
    for node in [&a, &b, &c] {
        node.backplane.close().await;
    }
}

/// The value of `field` in alice's thread snapshots hash, if any.
async fn thread_field(redis: &RedisServer, field: &str) -> Option<String> {
    let mut connection = redis.connection().await;
    redis::cmd("HGET")
        .arg("sse-hub:threads:agui:alice")
        .arg(field)
        .query_async(&mut connection)
        .await
        .unwrap()
}

/// Redis loses its data mid-run. Node A held the run's exact state, but its link to Redis is
/// slow (300 ms each way); the run goes on from node B, started after the loss, which never
/// held the thread: B folds the run from its first event in the new Redis, and stores a
/// snapshot of that partial state before A's whole one arrives. The whole run must win
/// wherever it is read: a tab that opens on A at once (A reads the thread back, and finds B's
/// snapshot there) opens with the whole run, Redis ends up holding the whole run, B reads it
/// back (its next snapshot is refused), and a node that reads the thread back afterwards (D)
/// opens with it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_partial_snapshot_of_a_node_that_never_held_the_thread_does_not_win() {
    if !redis_available() {
        return;
    }
    const DELTAS: usize = 60;
    let mut redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = node(proxy.url()).await;
    let reference = single();
    let alice = UserId::from("alice");
    let events = run(DELTAS);
    for event in &events[..20] {
        a.publish_in_thread(&alice, &thread(), event).await;
        reference
            .broadcast_in_thread(&alice, &thread(), event)
            .unwrap();
    }
    let expected = single_opening(&reference, &alice).await;
    opening_on(&a, &alice, &expected).await;

    redis.restart().await;
    a.wait_reconnected().await;
    assert_eq!(a.backplane.health().data_losses, 1);
    proxy.set(support::Fault::Latency(Duration::from_millis(300)));
    let b = node(redis.url()).await;
    let publish_on_b = |range: std::ops::Range<usize>| {
        let (b, reference, alice, events) = (&b, &reference, &alice, &events);
        async move {
            for event in &events[range] {
                b.publish_in_thread(alice, &thread(), event).await;
                reference
                    .broadcast_in_thread(alice, &thread(), event)
                    .unwrap();
            }
        }
    };
    publish_on_b(20..30).await;
    // Before A's feed brings the run's new events, a tab opens there: A reads the thread back,
    // and its read gets to Redis after B stored its snapshot.
    let mut tab = a.hub.subscribe_in_thread(&alice, &thread(), None).unwrap();
    let opened = opening(&mut tab).await;
    assert_eq!(opened[0]["type"], "RUN_STARTED", "A kept the whole run");
    assert_eq!(text_of(&opened), text_of(&events[..30]));
    assert!(
        thread_field(&redis, "s:thread-1")
            .await
            .is_some_and(|s| !s.contains("RUN_STARTED")),
        "B's snapshot, without the run's start, is stored"
    );
    let whole = timeout(WAIT, async {
        while !thread_field(&redis, "s:thread-1")
            .await
            .is_some_and(|s| s.contains("RUN_STARTED"))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(whole.is_ok(), "Redis holds the whole run again");

    publish_on_b(30..events.len()).await;
    let expected = single_opening(&reference, &alice).await;
    opening_on(&a, &alice, &expected).await;
    proxy.set(support::Fault::None);
    // Everything A sent before is answered before this publish is.
    a.publish_stored("alice", 1).await;
    let d = node(redis.url()).await;
    for (name, node) in [("D", &d), ("B", &b)] {
        let opened = opening_on(node, &alice, &expected).await;
        assert_eq!(opened[0]["type"], "RUN_STARTED", "{name}");
    }
    assert_eq!(a.hub.stats().thread_states_unknown, 0);
    for node in [&a, &b, &d] {
        node.backplane.close().await;
    }
}

/// Redis loses its data while node B knows a thread without its exact state, and no node
/// kept it (the node that held it is gone); the thread goes on from a node started after the
/// loss, P, which folds it from where it started over and stores that as its snapshot before B
/// meets the thread again. B reads the thread back: what it finds lacks the thread's start,
/// which B knows it had, so B counts the state unknown rather than take it silently for the
/// thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_thread_found_started_over_by_a_node_that_knew_it_is_counted() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let mut config = config();
    config.threads.state = Some(Arc::new(NumbersStates));
    let a = Node::start(quick_settings(redis.url()), config.clone()).await;
    let b = Node::start(quick_settings(proxy.url()), config.clone()).await;
    let alice = UserId::from("alice");
    let _plain = b.hub.subscribe(&alice).unwrap();
    let listening = timeout(WAIT, async {
        while b.backplane.health().listening < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(listening.is_ok(), "B listens to alice");
    for n in 0..5 {
        a.publish_in_thread(&alice, &thread(), &json!({ "n": n }))
            .await;
    }
    // B's feed breaks (Redis keeps its data): B no longer holds the thread's exact state.
    let before = b.backplane.health().reconnects;
    proxy.set(support::Fault::Hold);
    proxy.cut();
    proxy.set(support::Fault::None);
    wait_reconnected_after(&b, before).await;
    // A goes; then Redis loses everything.
    a.backplane.close().await;
    drop(a);
    let before = b.backplane.health().reconnects;
    redis.restart().await;
    wait_reconnected_after(&b, before).await;
    assert_eq!(b.backplane.health().data_losses, 1);

    // The thread goes on from P, long enough for P to store a snapshot of what it folded,
    // while B's link is held (a pause, shorter than its timeouts): B meets the thread again
    // only then.
    proxy.set(support::Fault::Hold);
    let p = Node::start(quick_settings(redis.url()), config).await;
    for n in 5..25 {
        p.publish_in_thread(&alice, &thread(), &json!({ "n": n }))
            .await;
    }
    let stored = timeout(WAIT, async {
        while snapshot_count(&mut redis.connection().await, "alice").await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(stored.is_ok(), "P stores a snapshot");
    proxy.set(support::Fault::None);

    let expected: Vec<Value> = (5..25).map(|n| json!({ "n": n })).collect();
    opening_on(&b, &alice, &expected).await;
    assert_eq!(
        b.hub.stats().thread_states_unknown,
        1,
        "B knew the thread had more"
    );
    for node in [&b, &p] {
        node.backplane.close().await;
    }
}

/// Redis drops alice's thread keys mid-run, the generation marker staying: an eviction under
/// an `allkeys-*` or `volatile-*` policy (every key of the backplane has a time to live), or
/// someone deleting them. The thread's count goes with them, so Redis numbers its next event
/// 1 again, with a newer id, while the nodes have folded 12 already. That is no duplicate: the
/// nodes, which hold the run's exact state, go on from it, and put it back in Redis. So a tab
/// that opens later on the publishing node, on a node that served alice throughout, and on a
/// node that reads the thread back opens with the whole run; nothing is counted lost, since
/// nothing is. A genuine duplicate (a copy of the run's first event, its old id and ordinal 1,
/// on the feed) is still dropped, not folded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_thread_whose_keys_redis_evicted_mid_run_goes_on_whole() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let _plain = serve(&b, &alice()).await;
    let published = Published::new(run(40));
    let events = &published.events;
    published.publish(&a, 0..12).await;
    published.wait_folded_on(&[&a, &b]).await;

    let mut connection = redis.connection().await;
    // The run's first event, for a copy of it (below).
    let first: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("sse-hub:agui:alice")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut connection)
        .await
        .unwrap();
    let (first_id, fields) = &first[0];
    let head = &fields.iter().find(|(k, _)| k == "f").unwrap().1;
    assert!(head.contains("RUN_STARTED"));
    evict_thread_keys(&redis).await;
    published.publish(&a, 12..events.len()).await;

    // Then a copy of the run's first event, under another token (so that the feed's window of
    // tokens does not drop it): the nodes hold it already. A node dispatches its feed's
    // messages one after the other: once it takes the message after the copy, it is done with
    // the copy.
    let received = [&a, &b].map(|node| node.backplane.health().received);
    let copy = format!("copy:1 1 8\nthread-1{head}id: {first_id}\n\n");
    let reached: i64 = redis::cmd("PUBLISH")
        .arg("sse-hub:live:agui:alice")
        .arg(copy)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(reached, 2, "both nodes hear the copy");
    a.publish_stored("alice", 0).await;
    for (node, before) in [&a, &b].into_iter().zip(received) {
        let dispatched = timeout(WAIT, async {
            while node.backplane.health().received < before + 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(dispatched.is_ok(), "the node dispatched the copy");
    }

    published.assert_opens_whole_on(&a, events.len()).await;
    published.assert_opens_whole_on(&b, events.len()).await;
    let back = timeout(WAIT, async {
        while thread_field(&redis, "r:thread-1").await.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the whole run is back in Redis");
    let c = node(redis.url()).await;
    published.assert_opens_whole_on(&c, events.len()).await;
    for node in [&a, &b, &c] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0, "nothing lost");
        assert_eq!(node.backplane.health().data_losses, 0, "no data loss");
    }
    close(&[&a, &b, &c]).await;
}

// ---------------------------------------------------------------------------------------------
// Losses found while a node's live feed lags its commands.

/// The scene of the tests in which node B's live feed lags its commands: a Redis, node A on
/// it, node B on it through a [`SplitProxy`] (its command connection first, then its pub/sub
/// one) serving alice a plain stream (so that B folds her thread from its first event), and a
/// tab on the thread on each node, caught up with the first 12 events of her run (a 40-delta
/// answer) published through A. B checks its link only every minute: a check's `PING` on the
/// held feed would wait, and the test's reads are the only round trips B makes.
struct LaggingFeed {
    redis: RedisServer,
    proxy: SplitProxy,
    a: Node,
    b: Node,
    _plain: Subscription<Value>,
    tabs: Vec<(Subscription<Value>, Vec<Value>)>,
    published: Published,
}

impl LaggingFeed {
    async fn start() -> Self {
        let redis = RedisServer::start().await;
        let proxy = SplitProxy::start(redis.addr()).await;
        let a = node(redis.url()).await;
        let mut settings = quick_settings(proxy.url());
        settings.command_timeout = Duration::from_secs(8);
        settings.ping_interval = Duration::from_secs(60);
        let b = Node::start(settings, config()).await;
        assert_eq!(
            proxy.accepted(),
            2,
            "one command and one pub/sub connection"
        );
        let plain = serve(&b, &alice()).await;
        let published = Published::new(run(40));
        published.publish(&a, 0..12).await;
        let tabs = tabs_caught_up(&[&a, &b], &published.events[..12]).await;
        Self {
            redis,
            proxy,
            a,
            b,
            _plain: plain,
            tabs,
            published,
        }
    }

    /// From now on, what Redis sends on B's pub/sub connection waits in the proxy, in order.
    fn hold_b_feed(&self) {
        self.proxy.hold_receive(1);
    }

    /// B's feed carries what it held, then the rest.
    fn release_b_feed(&self) {
        self.proxy.pass(1);
    }

    /// B reads a thread it does not hold on its command connection, as a tab opening on it
    /// does; whether B took the read.
    async fn b_reads_another_thread(&self) -> bool {
        let other = ThreadId::new("thread-2").unwrap();
        let read = self
            .b
            .backplane
            .catch_up_thread("agui", &alice(), &other, false);
        timeout(WAIT, read)
            .await
            .expect("the read is answered")
            .is_ok()
    }

    /// Waits until B found `losses` losses of Redis' data.
    async fn wait_b_found(&self, losses: u64) {
        let found = timeout(WAIT, async {
            while self.b.backplane.health().data_losses < losses {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "B found the loss: {:?}",
            self.b.backplane.health()
        );
    }

    /// The tabs opened before the losses end, each having received the run so far, in order
    /// and once, at least the first `before` events' text.
    async fn tabs_end_with_the_run_so_far(&mut self, before: usize) {
        for (k, (mut tab, mut seen)) in std::mem::take(&mut self.tabs).into_iter().enumerate() {
            seen.extend(until_end(&mut tab).await);
            assert_eq!(seen[0]["type"], "RUN_STARTED", "tab {k}");
            let text = text_of(&seen);
            assert!(
                full_text(40).starts_with(&text)
                    && text.len() >= text_of(&self.published.events[..before]).len(),
                "tab {k}: the run so far, once: {text:?}"
            );
        }
    }

    /// From now on, what B sends on its command connection waits in the proxy, in order (its
    /// snapshot writes among it); returns how much it had sent.
    fn hold_b_commands(&self) -> u64 {
        self.proxy.hold_send(0);
        self.proxy.sent(0)
    }

    /// The run goes on through A from event `from` (at least to its 30th): tabs that open on
    /// A, on B and on a node that never held the thread open with the whole run (a single
    /// node's opening), then follow it to its end with every delta once; no node counted a
    /// state unknown, and A and B each found `losses` losses.
    async fn run_goes_on_whole_everywhere(self, from: usize, losses: u64) {
        let Self {
            redis,
            a,
            b,
            published,
            ..
        } = self;
        let events = &published.events;
        let mid = from.max(30);
        published.publish(&a, from..mid).await;
        let c = node(redis.url()).await;
        let mut tabs = Vec::new();
        for (name, node) in [("B", &b), ("A", &a), ("C", &c)] {
            published.assert_opens_whole_on(node, mid).await;
            let tab = node
                .hub
                .subscribe_in_thread(&alice(), &thread(), None)
                .unwrap();
            tabs.push((name, tab));
        }
        published.publish(&a, mid..events.len()).await;
        for (name, mut tab) in tabs {
            let mut seen = Vec::new();
            while !seen.iter().any(|e: &Value| e["type"] == "RUN_FINISHED") {
                seen.extend(datas(&next(&mut tab).await));
            }
            assert_eq!(seen[0]["type"], "RUN_STARTED", "tab on {name}");
            assert_eq!(
                text_of(&seen),
                full_text(40),
                "tab on {name}: every delta, once"
            );
        }
        for node in [&a, &b, &c] {
            assert_eq!(
                node.hub.stats().thread_states_unknown,
                0,
                "nothing was lost"
            );
        }
        for (name, node) in [("A", &a), ("B", &b)] {
            let health = node.backplane.health();
            assert_eq!(health.data_losses, losses, "{name}: {health:?}");
        }
        close(&[&a, &b, &c]).await;
    }
}

/// Waits until Redis holds a snapshot of alice's thread that folds events from before it
/// started the thread over (a node put the whole run back).
async fn wait_whole_snapshot(redis: &RedisServer) {
    let back = timeout(WAIT, async {
        while thread_field(redis, "r:thread-1").await.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the whole run is back in Redis");
}

/// B's feed lags while the run goes on (4 events confirmed by Redis wait on B's pub/sub
/// connection), then Redis loses its data (a `FLUSHALL`), and B's read of another thread on its
/// command connection is what finds the new generation marker. The events from before the loss
/// still reach B's feed, after the read: B must keep its state of the run with them (as A does,
/// whose feed did not lag), not as it was when the read came back. Every tab, on every node,
/// then opens with the whole run, and follows it with every delta once; the loss counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_loss_read_before_the_feed_brings_the_events_before_it_keeps_them() {
    if !redis_available() {
        return;
    }
    let mut scene = LaggingFeed::start().await;
    scene.hold_b_feed();
    scene.published.publish(&scene.a, 12..16).await;
    flushall(&scene.redis).await;
    // Whatever B makes of the read (it ran under a marker its feed has not announced yet), the
    // events it holds come first.
    scene.b_reads_another_thread().await;
    scene.release_b_feed();
    scene.wait_b_found(1).await;
    scene.tabs_end_with_the_run_so_far(12).await;
    scene.run_goes_on_whole_everywhere(16, 1).await;
}

/// Redis loses its data twice in quick succession while B's feed lags: events from before the
/// first loss, the first new marker's announcement, events of the thread started over, the
/// second announcement and the thread started over again all wait on B's pub/sub connection
/// when B's read on its command connection shows the second marker. B must take the losses in
/// the order its feed brings them: each counted once, the run kept whole across both (A, whose
/// feed did not lag, holds it so and put it back in Redis), and no event folded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn two_losses_read_before_the_feed_brings_the_first_count_and_fold_once() {
    if !redis_available() {
        return;
    }
    let mut scene = LaggingFeed::start().await;
    scene.hold_b_feed();
    scene.published.publish(&scene.a, 12..14).await;
    flushall(&scene.redis).await;
    scene.published.publish(&scene.a, 14..17).await;
    // A put the whole run back in the Redis of the first loss; then the second.
    wait_whole_snapshot(&scene.redis).await;
    flushall(&scene.redis).await;
    scene.published.publish(&scene.a, 17..20).await;
    wait_whole_snapshot(&scene.redis).await;
    scene.b_reads_another_thread().await;
    scene.release_b_feed();
    scene.wait_b_found(2).await;
    scene.tabs_end_with_the_run_so_far(12).await;
    scene.run_goes_on_whole_everywhere(20, 2).await;
}

/// Redis evicts alice's thread keys mid-run while node B knows the thread without its exact
/// state (its feed broke, and nothing made it read the thread back since), and the run goes on
/// from A, which held it and puts the whole run back. B meets the thread again at its first
/// event numbered from 1: it must not take that for the thread's start. Tabs that open on B,
/// and on a node started after the eviction (C), open with the whole run, and follow it to its
/// end with every delta once; nothing is counted lost, since nothing is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_thread_evicted_while_a_node_knew_it_inexactly_opens_whole_there() {
    if !redis_available() {
        return;
    }
    let scene = MidRun::start().await;
    scene.b_loses_the_exact_state().await;
    evict_thread_keys(&scene.redis).await;
    let MidRun {
        redis,
        proxy,
        a,
        b,
        published,
        ..
    } = &scene;
    let events = &published.events;
    // B's link pauses until A, which folded the run, put it back in Redis: B then meets the
    // thread's new events with the whole run there to read.
    let received = b.backplane.health().received;
    proxy.set(support::Fault::Hold);
    published.publish(a, 12..16).await;
    wait_whole_snapshot(redis).await;
    proxy.set(support::Fault::None);
    let dispatched = timeout(WAIT, async {
        while b.backplane.health().received < received + 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(dispatched.is_ok(), "B's feed brought the run's new events");
    // B's feed brought them: a tab opening on B now opens with the whole run, at once.
    let mut tab = b
        .hub
        .subscribe_in_thread(&alice(), &thread(), None)
        .unwrap();
    assert_eq!(
        opening(&mut tab).await,
        published.expected().await,
        "B's first opening"
    );
    let c = node(redis.url()).await;
    let mut tabs = Vec::new();
    for (name, node) in [("B", b), ("C", &c), ("A", a)] {
        published.assert_opens_whole_on(node, 16).await;
        let tab = node
            .hub
            .subscribe_in_thread(&alice(), &thread(), None)
            .unwrap();
        tabs.push((name, tab));
    }
    published.publish(a, 16..events.len()).await;
    for (name, mut tab) in tabs {
        let mut seen = Vec::new();
        while !seen.iter().any(|e: &Value| e["type"] == "RUN_FINISHED") {
            seen.extend(datas(&next(&mut tab).await));
        }
        assert_eq!(seen[0]["type"], "RUN_STARTED", "tab on {name}");
        assert_eq!(
            text_of(&seen),
            full_text(20),
            "tab on {name}: every delta, once"
        );
    }
    for node in [a, b, &c] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0, "nothing lost");
        assert_eq!(node.backplane.health().data_losses, 0, "no data loss");
    }
    close(&[a, b, &c]).await;
}

/// B's snapshot of the run, taken after a first loss of Redis' data (so it folds events from
/// before that loss, and outranks a snapshot that does not), waits on B's slow command
/// connection while Redis loses its data a second time and the run goes on. When it reaches
/// the new Redis, it must not pass for the new thread's: it covers nothing of what Redis holds
/// now. It does not: the new Redis refuses it until the thread's first event there, and any
/// snapshot of the thread since it started over covers a newer id, written before it (it is
/// refused) or after it (it replaces it), B's own put-back following it on the same
/// connection. Tabs on every node open with the whole run, then follow it with every delta
/// once; each loss counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_snapshot_written_late_across_a_second_loss_does_not_win() {
    if !redis_available() {
        return;
    }
    let mut scene = LaggingFeed::start().await;
    flushall(&scene.redis).await;
    scene.published.publish(&scene.a, 12..14).await;
    wait_whole_snapshot(&scene.redis).await;
    scene.wait_b_found(1).await;
    scene.tabs_end_with_the_run_so_far(12).await;
    // B's next snapshot (due `replay_events / 2` events after its put-back) waits on its way.
    let before = scene.hold_b_commands();
    scene.published.publish(&scene.a, 14..32).await;
    wait_sent(&scene.proxy, 0, before).await;
    flushall(&scene.redis).await;
    scene.published.publish(&scene.a, 32..34).await;
    wait_whole_snapshot(&scene.redis).await;
    scene.wait_b_found(2).await;
    scene.proxy.pass(0);
    // B's publish is answered after everything B sent before it.
    scene.b.publish_stored("alice", 0).await;
    let mut connection = scene.redis.connection().await;
    assert!(
        snapshot_count(&mut connection, "alice").await <= 2,
        "the late snapshot (numbered in the Redis before the second loss) is not the thread's"
    );
    scene.run_goes_on_whole_everywhere(34, 2).await;
}

/// Redis loses its data mid-thread. Node B kept the thread's exact state, but its link pauses,
/// then breaks, so that it misses what follows; the thread goes on from P, started after the
/// loss, which folds it from where Redis started it over and stores that (a partial snapshot),
/// for longer than the history holds (it trims the first events since the loss). B's kept state
/// can then not be joined (Redis no longer holds every event since the thread started over):
/// the most there is, is P's partial snapshot and the events after it. B opens with that, and
/// counts its own loss; it must not fold the trimmed history alone, nor store that over P's
/// snapshot: a node that reads the thread afterwards (D) opens with P's state too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_kept_state_that_cannot_be_joined_leaves_the_partial_snapshot_whole() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = node_numbers(&redis).await;
    let b = Node::start(quick_settings(proxy.url()), numbers_config()).await;
    let alice = alice();
    let _plain = serve(&b, &alice).await;
    let numbers = |range: Range<u64>| -> Vec<Value> { range.map(|n| json!({ "n": n })).collect() };
    for n in 0..5 {
        a.publish_in_thread(&alice, &thread(), &json!({ "n": n }))
            .await;
    }
    opening_on(&b, &alice, &numbers(0..5)).await;
    a.backplane.close().await;
    drop(a);
    let before = b.backplane.health().reconnects;
    redis.restart().await;
    wait_reconnected_after(&b, before).await;
    assert_eq!(b.backplane.health().data_losses, 1);

    // B's link pauses; the thread goes on from P past what the history holds.
    proxy.set(support::Fault::Hold);
    let p = node_numbers(&redis).await;
    for n in 5..50 {
        p.publish_in_thread(&alice, &thread(), &json!({ "n": n }))
            .await;
    }
    let stored = timeout(WAIT, async {
        while snapshot_count(&mut redis.connection().await, "alice").await < 32 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(stored.is_ok(), "P stores its snapshots");
    // B's link breaks, dropping what it held: B missed the thread's new events.
    let before = b.backplane.health().reconnects;
    proxy.cut();
    proxy.set(support::Fault::None);
    wait_reconnected_after(&b, before).await;

    let partial = numbers(5..50);
    opening_on(&p, &alice, &partial).await;
    opening_on(&b, &alice, &partial).await;
    assert_eq!(
        b.hub.stats().thread_states_unknown,
        1,
        "B knew the thread had more"
    );
    let d = node_numbers(&redis).await;
    opening_on(&d, &alice, &partial).await;
    for node in [&b, &p, &d] {
        node.backplane.close().await;
    }
}

/// How many times Redis ran `XINFO` (the catch-up scripts call it), from `INFO commandstats`.
async fn xinfo_calls(redis: &RedisServer) -> u64 {
    let mut connection = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    // `cmdstat_xinfo|stream:calls=N,...` (Redis 7 counts each subcommand).
    info.lines()
        .filter(|l| l.starts_with("cmdstat_xinfo"))
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Node B reads the run back (its feed broke) and Redis answers the read from before it
/// evicts the thread's keys; the answer reaches B only after B's feed brought the run's next
/// events, numbered from 1 again. B folds them after the read, as a sync does, so its state
/// numbers the thread further than Redis does: the event after them, numbered 4, is at or
/// below that, with a newer id, and B takes the thread for started over there, not at 1, and
/// reads it back with its state kept. Tabs on B and on a node that never held the thread then
/// open with the whole run and follow it with every delta once, and nothing is counted lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_thread_found_started_over_past_its_first_event_is_read_back_whole() {
    if !redis_available() {
        return;
    }
    let mut scene = LaggingFeed::start().await;
    // B's feed breaks: B reconnects (command connection 2, pub/sub 3) without the exact state.
    let before = scene.b.backplane.health().reconnects;
    scene.proxy.cut(1);
    wait_reconnected_after(&scene.b, before).await;
    assert_eq!(scene.proxy.accepted(), 4, "B's second link");
    // A's tab goes on; B's ends.
    scene.tabs.remove(0);
    scene.tabs_end_with_the_run_so_far(12).await;
    let (redis, a, b, published) = (&scene.redis, &scene.a, &scene.b, &scene.published);

    // The run's next event reaches B, which reads the thread back; Redis runs the read, its
    // answer held.
    scene.proxy.hold_receive(2);
    let reads = xinfo_calls(redis).await;
    published.publish(a, 12..13).await;
    let ran = timeout(WAIT, async {
        while xinfo_calls(redis).await <= reads {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ran.is_ok(), "Redis ran B's read");
    evict_thread_keys(redis).await;
    let received = b.backplane.health().received;
    published.publish(a, 13..16).await;
    let dispatched = timeout(WAIT, async {
        while b.backplane.health().received < received + 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(dispatched.is_ok(), "B's feed brought the run's new events");
    scene.proxy.pass(2);
    published.publish(a, 16..20).await;
    scene.run_goes_on_whole_everywhere(20, 0).await;
}

/// Redis evicts alice's thread keys while B's feed lags: B's exact state is behind A's when
/// the run goes on, numbered from 1 again, and B meets those events only after the last ones
/// from before. B, behind, takes the thread for started over as A, ahead, does: every node
/// (and a node that never held the thread) opens with the whole run, the tabs open before the
/// eviction follow it with every delta once, and nothing is counted lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_thread_evicted_while_a_node_lagged_behind_goes_on_whole_there() {
    if !redis_available() {
        return;
    }
    let mut scene = LaggingFeed::start().await;
    scene.hold_b_feed();
    scene.published.publish(&scene.a, 12..14).await;
    evict_thread_keys(&scene.redis).await;
    scene.published.publish(&scene.a, 14..17).await;
    scene.release_b_feed();
    let events = &scene.published.events;
    for (k, (tab, seen)) in scene.tabs.iter_mut().enumerate() {
        while text_of(seen) != text_of(&events[..17]) {
            seen.extend(datas(&next(tab).await));
        }
        assert_eq!(seen[0]["type"], "RUN_STARTED", "tab {k}");
    }
    scene.run_goes_on_whole_everywhere(17, 0).await;
}
