//! Threads across nodes when Redis starts a thread over without a node losing anything,
//! against a real `redis-server`: the generation marker gone while Redis keeps its data (no
//! loss, and no event folded twice), a thread's keys evicted mid-run (its events numbered from
//! 1 again), and, after a loss, the partial snapshot of a node that folded the thread only
//! from where Redis started it over: the whole run wins wherever a node held it, and a node
//! that knew the thread had more, and cannot join what it kept, counts it.
//!
//! Every test starts its own `redis-server` on a free loopback port and its own nodes (hubs with
//! their own backplane connections), with the runs of `support/thread_runs.rs`. Skips
//! (printing so) without `redis-server`, except under `CI=true`, as the other Redis tests do.
#![cfg(feature = "redis")]

use std::ops::Range;
use std::time::Duration;

use serde_json::{Value, json};
use sse_hub::Subscription;
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/thread_runs.rs"]
mod thread_runs;

use support::{FaultProxy, Node, RedisServer, WAIT, quick_settings, redis_available};
use thread_runs::{
    MidRun, Published, alice, break_feeds, break_link_through, close, config, datas,
    evict_thread_keys, full_text, next, node, numbers_config, opening, opening_on, run, serve,
    snapshot_count, tabs_caught_up, text_of, thread, thread_field, wait_received,
    wait_reconnected_after, wait_whole_snapshot,
};

/// A node of `redis` with [`numbers_config`].
async fn node_numbers(redis: &RedisServer) -> Node {
    Node::start(quick_settings(redis.url()), numbers_config()).await
}

/// `command` (`GET`, `DEL`) on the generation marker, `sse-hub:generation`: the value Redis
/// answers.
async fn on_generation_marker<T: redis::FromRedisValue>(
    connection: &mut redis::aio::MultiplexedConnection,
    command: &str,
) -> T {
    redis::cmd(command)
        .arg("sse-hub:generation")
        .query_async(connection)
        .await
        .unwrap()
}

/// The start of the tests in which a thread Redis started over meets a node that knew it: a
/// Redis, node A on it, node B on it through a fault proxy serving alice a plain stream (so
/// that B folds her thread from its first event), both with [`numbers_config`], and alice's
/// numbers 0 to 4 published through A.
async fn numbers_on_a_and_b_behind_a_proxy()
-> (RedisServer, FaultProxy, Node, Node, Subscription<Value>) {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = node_numbers(&redis).await;
    let b = Node::start(quick_settings(proxy.url()), numbers_config()).await;
    let plain = serve(&b, &alice()).await;
    for n in 0..5 {
        a.publish_in_thread(&alice(), &thread(), &json!({ "n": n }))
            .await;
    }
    (redis, proxy, a, b, plain)
}

/// Node `a` goes (no node keeps what it held), then Redis restarts without persistence; waits
/// until `b` reconnected to the new one, having found the loss.
async fn a_goes_then_redis_loses_its_data(a: Node, redis: &mut RedisServer, b: &Node) {
    a.backplane.close().await;
    drop(a);
    let before = b.backplane.health().reconnects;
    redis.restart().await;
    wait_reconnected_after(b, before).await;
    assert_eq!(b.backplane.health().data_losses, 1);
}

/// B's link through `proxy` pauses, and the thread goes on from P, a node started now, with
/// alice's `numbers`: returns P.
async fn p_goes_on_while_b_is_held(
    redis: &RedisServer,
    proxy: &FaultProxy,
    numbers: Range<u64>,
) -> Node {
    proxy.set(support::Fault::Hold);
    let p = node_numbers(redis).await;
    for n in numbers {
        p.publish_in_thread(&alice(), &thread(), &json!({ "n": n }))
            .await;
    }
    p
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
    let a = node_numbers(&redis).await;
    let b = node_numbers(&redis).await;
    // B serves alice, so it folds the thread from its first event.
    let _plain = serve(&b, &alice()).await;
    // Fewer events than a snapshot is written after.
    let expected: Vec<Value> = (0..5).map(|n| json!({ "n": n })).collect();
    for event in &expected {
        a.publish_in_thread(&alice(), &thread(), event).await;
    }
    opening_on(&b, &alice(), &expected).await;

    let mut connection = redis.connection().await;
    let _: () = on_generation_marker(&mut connection, "DEL").await;
    break_feeds(&redis, &[&b]).await;

    let opened = opening_on(&b, &alice(), &expected).await;
    assert_eq!(opened, expected, "each event once");
    for node in [&a, &b] {
        assert_eq!(node.backplane.health().data_losses, 0, "no loss");
    }
    close(&[&a, &b]).await;
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
    let deleted: i64 = on_generation_marker(&mut connection, "DEL").await;
    assert_eq!(deleted, 1);
    let back = timeout(WAIT, async {
        loop {
            let marker: Option<String> = on_generation_marker(&mut connection, "GET").await;
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
    close(&[&a, &b, &c]).await;
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
    let alice = alice();
    let published = Published::new(run(DELTAS));
    let events = &published.events;
    published.publish(&a, 0..20).await;
    let expected = published.expected().await;
    opening_on(&a, &alice, &expected).await;

    redis.restart().await;
    a.wait_reconnected().await;
    assert_eq!(a.backplane.health().data_losses, 1);
    proxy.set(support::Fault::Latency(Duration::from_millis(300)));
    let b = node(redis.url()).await;
    published.publish(&b, 20..30).await;
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

    published.publish(&b, 30..events.len()).await;
    let expected = published.expected().await;
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
    close(&[&a, &b, &d]).await;
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
    let (mut redis, proxy, a, b, _plain) = numbers_on_a_and_b_behind_a_proxy().await;
    let alice = alice();
    // B's feed breaks (Redis keeps its data): B no longer holds the thread's exact state.
    break_link_through(&proxy, &b).await;
    // A goes; then Redis loses everything.
    a_goes_then_redis_loses_its_data(a, &mut redis, &b).await;

    // The thread goes on from P, long enough for P to store a snapshot of what it folded,
    // while B's link is held (a pause, shorter than its timeouts): B meets the thread again
    // only then.
    let p = p_goes_on_while_b_is_held(&redis, &proxy, 5..25).await;
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
    close(&[&b, &p]).await;
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
        wait_received(node, before, 2, "the node dispatched the copy").await;
    }

    published.assert_opens_whole_on(&a, events.len()).await;
    published.assert_opens_whole_on(&b, events.len()).await;
    wait_whole_snapshot(&redis).await;
    let c = node(redis.url()).await;
    published.assert_opens_whole_on(&c, events.len()).await;
    for node in [&a, &b, &c] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0, "nothing lost");
        assert_eq!(node.backplane.health().data_losses, 0, "no data loss");
    }
    close(&[&a, &b, &c]).await;
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
    // B's link pauses until A, which folded the run, put it back in Redis: B then meets the
    // thread's new events with the whole run there to read.
    let received = b.backplane.health().received;
    proxy.set(support::Fault::Hold);
    published.publish(a, 12..16).await;
    wait_whole_snapshot(redis).await;
    proxy.set(support::Fault::None);
    wait_received(b, received, 4, "B's feed brought the run's new events").await;
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
    published
        .goes_on_whole_in_tabs_on(a, &[("B", b), ("C", &c), ("A", a)], 16)
        .await;
    for node in [a, b, &c] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0, "nothing lost");
        assert_eq!(node.backplane.health().data_losses, 0, "no data loss");
    }
    close(&[a, b, &c]).await;
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
    let (mut redis, proxy, a, b, _plain) = numbers_on_a_and_b_behind_a_proxy().await;
    let alice = alice();
    let numbers = |range: Range<u64>| -> Vec<Value> { range.map(|n| json!({ "n": n })).collect() };
    opening_on(&b, &alice, &numbers(0..5)).await;
    a_goes_then_redis_loses_its_data(a, &mut redis, &b).await;

    // B's link pauses; the thread goes on from P past what the history holds.
    let p = p_goes_on_while_b_is_held(&redis, &proxy, 5..50).await;
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
    close(&[&b, &p, &d]).await;
}
