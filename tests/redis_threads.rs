//! Threads across nodes, against a real `redis-server`: a run published on one node, partly
//! before anyone connects anywhere, opens on any other node exactly as it opens on a single
//! node (the same AG-UI events), and the live tail follows the opening with no gap and no
//! duplicate, even while the run is being published; a node's snapshots keep up with what it
//! folds, on a slow Redis, for a slow run, and for a node that read the thread back.
//!
//! The history is kept short (`replay_events`), so that a late join can only rebuild the run
//! from the thread's snapshot in Redis. What happens to a thread when Redis loses or evicts its
//! keys is in `redis_thread_data_loss.rs`, `redis_thread_started_over.rs` and
//! `redis_lagging_feed.rs`.
//!
//! Every test starts its own `redis-server` on a free loopback port and its own nodes (hubs with
//! their own backplane connections), with the runs of `support/thread_runs.rs`. Skips
//! (printing so) without `redis-server`, except under `CI=true`, as the other Redis tests do.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sse_hub::run_state::ThreadRun;
use sse_hub::{Broadcaster, Config, FrameKind, ThreadId, UserId};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/thread_runs.rs"]
mod thread_runs;

use support::{FaultProxy, Hub, Node, RedisServer, WAIT, quick_settings, redis_available};
use thread_runs::{
    Published, close, config, datas, full_text, next, node, node_with, opening, run, single,
    single_opening, snapshot_stored, text_of, thread, wait_snapshot,
};

/// The command timeout of a node on a Redis that the test slows down (300 ms each way): far
/// above its round trips, on a loaded machine too.
const SLOW_LINK_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The same on a node that only receives the run: alice's channel on node B, held by nothing
/// but the thread's events its feed brings from node A, is not swept while the run streams
/// (each event restarts the retention wherever it was published), so B keeps counting it among
/// its retained channels, keeps listening, and opens the run whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_run_streaming_from_another_node_keeps_the_receiving_nodes_channel() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = node(redis.url()).await;
    let mut config = config();
    config.retention = Duration::from_millis(600);
    let mut settings = quick_settings(redis.url());
    settings.command_timeout = Duration::from_secs(2);
    let b = Node::start(settings, config).await;
    // A tab on B opens and leaves: B holds alice's channel, retained, listening to her feed.
    drop(
        b.hub
            .subscribe_async(&UserId::from("alice"), None)
            .await
            .unwrap(),
    );
    let published = Published::new(run(30));
    // An event every 50 ms from A: about two seconds, three of B's retentions.
    for i in 0..published.events.len() {
        published.publish(&a, i..i + 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.hub.sweep();
        assert_eq!(
            b.hub.stats().retained_channels,
            1,
            "B dropped alice's channel mid-run, after event {i}"
        );
    }
    assert_eq!(unsubscribes(&redis).await, 0, "B stopped listening mid-run");
    published
        .assert_opens_whole_on(&b, published.events.len())
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
    close(&[&a, &b]).await;
}

/// Joins on both nodes while the run is being published: each client's opening plus its live
/// tail rebuild the whole answer, with no delta missing and none twice, and every client sees
/// the run end.
///
/// The clients read as fast as they can, but a loaded machine may leave their tasks unscheduled
/// while a node's feed delivers dozens of events: a stream opened from the thread's state that
/// falls further behind than the window (32 events here) ends (`EndReason::Lagged`, by design:
/// its client reconnects and opens from the state), which is not the seam this test checks.
/// So the nodes' rings hold the whole run, and no client can lag, however it is scheduled.
///
/// Ignored for now (run it with `--ignored`): on 2026-12-03 it failed once in a clean-clone CI
/// run, in a way not seen before and not reproduced since (about 60 runs, loaded and not):
/// every one of the eight readers, on both nodes, waited 10 s for a frame after the publisher
/// had finished. Not explained yet; one candidate is a tab opened on a run its node could not
/// rebuild (held back until a next `RUN_STARTED` that this run never sends), another the link's
/// `SUBSCRIBE` and `PING` now in flight together on the pub/sub connection. Open in the notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a rare stall of every reader, seen once, under investigation (see the doc)"]
async fn joins_during_concurrent_publishing_have_no_gap_and_no_duplicate_at_the_seam() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    const DELTAS: usize = 400;
    let events = run(DELTAS);
    let mut roomy = config();
    roomy.capacity = events.len();
    let (a, b) = (
        node_with(redis.url(), roomy.clone()).await,
        node_with(redis.url(), roomy).await,
    );
    let alice = UserId::from("alice");
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
    close(&[&a, &b]).await;
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
    close(&[&a, &b]).await;
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
    close(&[&a, &b]).await;
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
    close(&[&a, &b]).await;
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
    close(&[&a, &b, &c]).await;
}

/// Many runs end at once while Redis is slow (a latency spike): more snapshot writes than a
/// node keeps in flight. The run's end is its last snapshot (nothing follows to replace it),
/// so it must still be stored: otherwise the history later trims what followed the stored
/// one, and the run opens without its end on a node that reads it back.
///
/// Slow, not dead: A's command timeout is far above the spike's round trips, however long a
/// loaded machine adds to them (with 2 s, a link check queued behind the publishes could miss
/// it: A then took its link for dead, and its publishes failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn the_snapshots_of_runs_ending_together_on_a_slow_redis_are_all_stored() {
    if !redis_available() {
        return;
    }
    const USERS: usize = 150;
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let mut settings = quick_settings(proxy.url());
    settings.command_timeout = SLOW_LINK_TIMEOUT;
    let a = Node::start(settings, config()).await;
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
        assert!(
            snapshot_stored(&mut connection, &format!("u{i}"), 1).await,
            "the start of u{i}'s run is snapshotted"
        );
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
        assert!(
            snapshot_stored(&mut connection, &format!("u{i}"), ends).await,
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
    close(&[&a, &b]).await;
}
