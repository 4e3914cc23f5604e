//! Threads across nodes when Redis loses its data, against a real `redis-server`: a restart
//! without persistence or a `FLUSHALL` in the middle of a run. A node that held a run's exact
//! state keeps it, counts the loss once, ends its streams and puts the whole run back in Redis,
//! so that every tab, on every node, opens with the whole run and follows it with every delta
//! once; a node that knew the thread without its exact state counts the thread's state
//! unknown, once, rather than open silently from a thread started over.
//!
//! Every test starts its own `redis-server` on a free loopback port and its own nodes (hubs with
//! their own backplane connections), with the runs of `support/thread_runs.rs`. Skips
//! (printing so) without `redis-server`, except under `CI=true`, as the other Redis tests do.
#![cfg(feature = "redis")]

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/thread_runs.rs"]
mod thread_runs;

use support::{FaultProxy, RedisServer, WAIT, redis_available};
use thread_runs::{
    MidRun, Published, alice, assert_kept_through_one_loss, break_feeds, break_link_through, close,
    datas, flushall, full_text, lose_redis_data, next, node, opening, opening_on, run, serve,
    tabs_caught_up, text_of, thread, until_end, until_finished, wait_counted_unknown,
    wait_snapshot,
};

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
        let seen = until_finished(&mut tab).await;
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

/// `ACL SETUSER default <rule>` on `redis`: a test's way to have Redis refuse a node's
/// `SUBSCRIBE`s to the users' feeds (`resetchannels &sse-hub:generation`), after it connected
/// and read the generation marker (the marker's own channel stays allowed).
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

/// Redis loses its data, and the first reconnect of a node that finds it out has its
/// `SUBSCRIBE`s refused after it read the generation marker (the node serves, its users
/// refused, until Redis takes them). The node must still keep its exact state of the thread:
/// only that reconnect reads the new marker as new, and a tab that opens on it once Redis takes
/// the user's `SUBSCRIBE` must show the whole run, not a thread started over from nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_loss_found_by_a_reconnect_whose_subscribes_are_refused_still_keeps_the_thread() {
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
    // Its reconnect serves, the user refused, until Redis takes `SUBSCRIBE` again.
    let refused = timeout(WAIT, async {
        while b.backplane.health().refused == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "{:?}", b.backplane.health());
    acl_default(&redis, "allchannels").await;
    let listening = timeout(WAIT, async {
        loop {
            let health = b.backplane.health();
            if health.connected && health.refused == 0 && health.listening == health.serving {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(listening.is_ok(), "{:?}", b.backplane.health());
    assert_eq!(b.backplane.health().data_losses, 1);

    let opened = opening_on(&b, &alice(), &expected).await;
    assert_eq!(opened[0]["type"], "RUN_STARTED");
    assert_eq!(b.hub.stats().thread_states_unknown, 0);
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
        let seen = until_finished(&mut tab).await;
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
    close(&[&a, &b, &c]).await;
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
    let alice = alice();
    let _plain = serve(&b, &alice).await;
    let published = Published::new(run(20));
    published.publish(&a, 0..12).await;
    // B's feed breaks (Redis keeps its data): B no longer holds the thread's exact state.
    break_link_through(&proxy, &b).await;

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
    published.publish(&a, 12..14).await;
    let expected = published.expected().await;
    let c = node(redis.url()).await;
    let opened = opening_on(&c, &alice, &expected).await;
    assert_eq!(opened[0]["type"], "RUN_STARTED");
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "once");
    for node in [&a, &b] {
        assert_eq!(node.backplane.health().data_losses, 1);
    }
    close(&[&a, &b, &c]).await;
}
