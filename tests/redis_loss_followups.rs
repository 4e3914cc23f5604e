//! Follow-ups of the Redis data-loss work, against a real `redis-server`, with the faults
//! injected (a `FLUSHALL`, a restart without persistence, thread keys evicted, a node's live
//! feed held in a proxy while its commands flow):
//!
//! * a plain SSE client that resumes with `Last-Event-ID` across a loss, on the node that saw
//!   it, on a node whose feed was behind, on a node started after it, and reading its own
//!   stream too slowly to keep up, receives every event once and in order, or is told in-band
//!   (`reset`, `lagged`) before the first one after a gap: never a silent gap;
//! * a node that reads back a thread whose keys Redis evicted, before any node put it back,
//!   rebuilds the run whole from the history, and does not count it unknown; but once an event
//!   was published into it again (numbered 1), a node that folded the run before and lost its
//!   exact state reads back only the thread since then, and counts it unknown, until a node
//!   that held the run puts it back;
//! * a tab that opens on a node whose feed announces Redis' new generation marker late (its
//!   thread reads are refused meanwhile) opens with the whole run once the feed caught up, and
//!   follows it with every event once.
//!
//! Every test starts its own `redis-server` on a loopback port and its own nodes. Skips
//! (printing so) without `redis-server`, except under `CI=true`, as the other Redis tests do.
#![cfg(feature = "redis")]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use sse_hub::{Config, FrameKind, Subscription};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/split_proxy.rs"]
mod split_proxy;
#[path = "support/thread_runs.rs"]
mod thread_runs;
#[path = "support/numbers_tabs.rs"]
mod numbers_tabs;

use numbers_tabs::{
    break_then_hold_feed, follow, knows_thread_inexactly, lagging_settings, numbers, open_tab,
    publish, publisher_config, wait_opens, wait_until,
};
use split_proxy::SplitProxy;
use support::{EsClient, Node, RedisServer, Seen, WAIT, redis_available, settings};
use thread_runs::{alice, evict_thread_keys, flushall, numbers_config, thread, thread_field};

// ---------------------------------------------------------------------------------------------
// 1. Plain resumes across a loss.

/// What a user relies on from what `client` saw, first expecting the event `first`: every
/// event once, in order, and a gap only right after a `reset` or `lagged`.
fn assert_no_silent_gap(name: &str, seen: &[Seen], first: u64) {
    let mut next = first;
    let mut told = false;
    for item in seen {
        match item {
            Seen::Reset(_) | Seen::Lagged(_) => told = true,
            Seen::Event { n, .. } => {
                assert!(*n >= next, "{name}: {n} twice or out of order: {seen:?}");
                assert!(
                    *n == next || told,
                    "{name}: missed {next}..{n} silently: {seen:?}"
                );
                next = n + 1;
                told = false;
            }
            _ => {}
        }
    }
}

/// What a subscription delivers, as a client would see it, until its stream ends or, with
/// `last`, until it delivered the event numbered `last`.
async fn read_until(sub: &mut Subscription<Value>, last: Option<u64>) -> Vec<Seen> {
    let mut seen = Vec::new();
    let read = timeout(WAIT, async {
        while let Some(frame) = sub.next().await {
            let n = numbers(frame.bytes()).first().copied();
            seen.push(match (frame.kind(), n) {
                (FrameKind::Reset(reason), _) => Seen::Reset(reason.as_str().to_owned()),
                (FrameKind::Lagged { missed }, _) => Seen::Lagged(missed),
                (FrameKind::Event(id), Some(n)) => Seen::Event {
                    id: Some(id.to_string()),
                    n,
                },
                _ => continue,
            });
            if last.is_some() && n == last {
                return;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "read in time: {seen:?}");
    seen
}

fn client(node: &Node, last_event_id: Option<String>) -> EsClient {
    EsClient::spawn(node.url("alice"), last_event_id, Duration::from_millis(100))
}

/// The id of the event numbered `n` in what `client` saw.
fn id_of(client: &EsClient, n: u64) -> String {
    client
        .seen()
        .into_iter()
        .find_map(|s| match s {
            Seen::Event { id, n: got } if got == n => id,
            _ => None,
        })
        .unwrap_or_else(|| panic!("event {n} with an id: {:?}", client.seen()))
}

/// Alice's clients across a loss: one on A, which finds it at once; one on B, whose feed is
/// held from event 4 (so it is behind when Redis loses its data, and B finds the loss only
/// when its feed catches up); and, after the loss, one that resumes on A from event 3 (it
/// missed 4 and 5, which Redis lost) and one that resumes from it on a node started after
/// the loss; and a reader on A that reads nothing of its stream until the end, then resumes
/// from its last id. `lose` makes Redis lose its data; then events 6 to 12 are published
/// through A.
async fn plain_resumes_across(lose: impl AsyncFnOnce(&mut RedisServer)) {
    let mut redis = RedisServer::start().await;
    let proxy = SplitProxy::start(redis.addr()).await;
    let a = Node::start(settings(redis.url()), Config::default())
        .await
        .serve()
        .await;
    let b = Node::start(lagging_settings(proxy.url()), Config::default())
        .await
        .serve()
        .await;
    assert_eq!(proxy.accepted(), 2, "B: a command and a pub/sub connection");
    let (on_a, on_b) = (client(&a, None), client(&b, None));
    for c in [&on_a, &on_b] {
        assert!(c.wait_primed(WAIT).await, "{:?}", c.seen());
    }
    wait_until("both nodes listen to alice", async || {
        redis.listeners("alice").await == 2
    })
    .await;
    // A reader that falls behind on A: nothing of its stream is read until the end.
    let mut slow = a.hub.subscribe_async(&alice(), None).await.unwrap();
    for n in 1..=3 {
        a.publish_stored("alice", n).await;
    }
    for c in [&on_a, &on_b] {
        assert!(c.wait_for_event(WAIT, 3).await, "{:?}", c.seen());
    }
    let third = id_of(&on_a, 3);

    proxy.hold_receive(1);
    for n in 4..=5 {
        a.publish_stored("alice", n).await;
    }
    assert!(on_a.wait_for_event(WAIT, 5).await);
    lose(&mut redis).await;
    // A published nothing since: it finds the loss by its link check, or a reconnect.
    wait_until("A found the loss", async || {
        a.backplane.health().data_losses == 1 && a.backplane.is_connected()
    })
    .await;
    let behind = client(&a, Some(third.clone()));
    let c = Node::start(settings(redis.url()), Config::default())
        .await
        .serve()
        .await;
    let on_c = client(&c, Some(third));
    for n in 6..=8 {
        a.publish_stored("alice", n).await;
    }
    proxy.pass(1);
    wait_until("B found the loss", async || {
        b.backplane.health().data_losses == 1 && b.backplane.is_connected()
    })
    .await;
    // Every stream resumed after the loss, and listens: the rest reaches each once.
    for k in [&on_a, &on_b, &behind, &on_c] {
        assert!(
            k.wait_for(WAIT, |seen| seen
                .iter()
                .any(|s| matches!(s, Seen::Reset(_))))
                .await,
            "told of the loss: {:?}",
            k.seen()
        );
    }
    for n in 9..=12 {
        a.publish_stored("alice", n).await;
    }
    for (name, k, first) in [
        ("on A", on_a, 1),
        ("on B, behind", on_b, 1),
        ("resumed on A from 3", behind, 4),
        ("resumed on C from 3", on_c, 4),
    ] {
        assert!(k.wait_for_event(WAIT, 12).await, "{name}: {:?}", k.seen());
        assert_no_silent_gap(name, &k.stop().await, first);
    }
    // The reader behind gets what its stream still held (its ring, 8 events, was overwritten
    // meanwhile), then the end; it resumes from its last id (the priming one if it got none).
    let mut seen = read_until(&mut slow, None).await;
    let last = seen
        .iter()
        .rev()
        .find_map(|s| match s {
            Seen::Event { id, .. } => id.clone(),
            _ => None,
        })
        .unwrap_or_else(|| slow.start_id().to_string());
    let mut resumed = a.hub.subscribe_async(&alice(), Some(&last)).await.unwrap();
    // Its resume starts after the last event (a `reset`): the next one reaches it.
    a.publish_stored("alice", 13).await;
    seen.extend(read_until(&mut resumed, Some(13)).await);
    assert_no_silent_gap("behind on A, resumed", &seen, 1);
    assert_eq!(c.backplane.health().data_losses, 0, "C started after it");
    for node in [&a, &b, &c] {
        node.backplane.close().await;
    }
}

/// Redis is flushed with every connection up, while B's feed still holds events 4 and 5 for
/// its client: no client misses an event without being told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn plain_resumes_across_a_flushall_miss_nothing_silently() {
    if !redis_available() {
        return;
    }
    plain_resumes_across(async |redis| flushall(redis).await).await;
}

/// Redis restarts without persistence while B's feed still holds events 4 and 5 for its
/// client: no client misses an event without being told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn plain_resumes_across_a_restart_miss_nothing_silently() {
    if !redis_available() {
        return;
    }
    plain_resumes_across(async |redis| redis.restart().await).await;
}

// ---------------------------------------------------------------------------------------------
// 2. An evicted thread read back before any node put it back.

/// Redis evicts alice's thread keys (its count, snapshot and recency: an `allkeys-*` or
/// `volatile-*` policy), the history keeping every event of the run. Before any node puts the
/// run back (nothing was published since), a node that never held the thread opens a tab on
/// it: it reads the thread back from the history, which holds the run from its first event, so
/// its tab opens with the whole run, and follows it; that is no state it cannot rebuild, and
/// is not counted in `thread_states_unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn an_evicted_thread_read_back_whole_is_not_counted_unknown() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Node::start(settings(redis.url()), numbers_config()).await;
    publish(&a, 1..13).await;
    evict_thread_keys(&redis).await;

    let c = Node::start(settings(redis.url()), numbers_config()).await;
    let (opened, mut tab) = open_tab(&c).await;
    assert_eq!(opened, (1..13).collect::<Vec<_>>(), "the whole run");
    assert_eq!(
        c.hub.stats().thread_states_unknown,
        0,
        "rebuilt whole: nothing unknown"
    );
    publish(&a, 13..16).await;
    assert_eq!(follow(&mut tab, 15).await, vec![13, 14, 15], "each once");
    let (opened, _) = open_tab(&c).await;
    assert_eq!(opened, (1..16).collect::<Vec<_>>());
    for node in [&a, &c] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0, "nothing lost");
    }
    a.backplane.close().await;
    c.backplane.close().await;
}

/// The same, but the run is longer than the history (32 events): the history no longer holds
/// the thread's first event, so the node that reads it back cannot rebuild the run whole. It
/// opens with what the history holds, and counts that state unknown, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn an_evicted_thread_whose_start_was_trimmed_is_counted_unknown() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Node::start(settings(redis.url()), numbers_config()).await;
    publish(&a, 1..61).await;
    evict_thread_keys(&redis).await;

    let c = Node::start(settings(redis.url()), numbers_config()).await;
    let (opened, _) = open_tab(&c).await;
    assert!(
        !opened.is_empty() && opened[0] > 1 && opened.ends_with(&[59, 60]),
        "what the history holds, not the run's start: {opened:?}"
    );
    assert_eq!(c.hub.stats().thread_states_unknown, 1, "counted, once");
    a.backplane.close().await;
    c.backplane.close().await;
}

/// Node B folded alice's thread, then lost its exact state (its feed broke, and is held while
/// the run goes on: 13 to 16). Redis evicts the thread's keys, and the run's next event (17)
/// is numbered 1 again; no node holds the run to put it back. Once B's feed catches up, B
/// cannot rebuild the run (Redis holds only the thread since it started over): its tab opens
/// with event 17 alone, and that state is counted in `thread_states_unknown`, once, rather
/// than taken for the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_renumbered_thread_read_back_without_its_run_is_counted_unknown() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let proxy = SplitProxy::start(redis.addr()).await;
    // A only publishes, and folds no thread state (a node that publishes folds the thread
    // too, and would put the run back).
    let a = Node::start(settings(redis.url()), publisher_config()).await;
    let b = Node::start(lagging_settings(proxy.url()), numbers_config()).await;
    let _plain = b.hub.subscribe(&alice()).unwrap();
    knows_thread_inexactly(&a, &b, &proxy).await;
    publish(&a, 13..17).await;
    evict_thread_keys(&redis).await;
    publish(&a, 17..18).await;
    assert_eq!(
        thread_field(&redis, "n:thread-1").await.as_deref(),
        Some("1")
    );
    proxy.pass(3);

    // Its feed delivered 13 to 17 (a publish reaches the feeds a moment after it returns).
    wait_opens(&b, 17..18).await;
    assert_eq!(
        b.hub.stats().thread_states_unknown,
        1,
        "B opens with the thread since Redis started it over, which lacks 1 to 16: counted"
    );
    let (opened, mut tab) = open_tab(&b).await;
    assert_eq!(opened, vec![17]);
    publish(&a, 18..21).await;
    assert_eq!(follow(&mut tab, 20).await, vec![18, 19, 20], "each once");
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "once");
    assert_eq!(a.hub.stats().thread_states_unknown, 0);
    a.backplane.close().await;
    b.backplane.close().await;
}

/// The same, but node A folds the run exactly: it takes event 17, numbered 1 again, for the
/// thread started over, goes on from its state and puts the whole run back in Redis. Its
/// command connection is held meanwhile (its read and its put-back wait), so B reads the
/// thread back first: B opens with event 17 alone, counted unknown once. Once A's put-back
/// lands, B's next snapshot is refused for it (at most `replay_events / 2` events later), B
/// reads the run back, and opens with the whole run; A counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_renumbered_thread_read_before_the_put_back_is_counted_then_read_whole() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let proxy_a = SplitProxy::start(redis.addr()).await;
    let proxy_b = SplitProxy::start(redis.addr()).await;
    // P only publishes, folding nothing; A and B serve alice.
    let p = Node::start(settings(redis.url()), publisher_config()).await;
    let a = Node::start(lagging_settings(proxy_a.url()), numbers_config()).await;
    let b = Node::start(lagging_settings(proxy_b.url()), numbers_config()).await;
    let _on_a = a.hub.subscribe(&alice()).unwrap();
    let _on_b = b.hub.subscribe(&alice()).unwrap();
    wait_until("A listens to alice", async || {
        a.backplane.health().listening >= 1
    })
    .await;
    knows_thread_inexactly(&p, &b, &proxy_b).await;
    publish(&p, 13..17).await;
    wait_opens(&a, 1..17).await;

    // A's command connection (its first) is held: its read back and put-back wait.
    proxy_a.hold_send(0);
    evict_thread_keys(&redis).await;
    publish(&p, 17..18).await;
    proxy_b.pass(3);
    wait_opens(&b, 17..18).await;
    assert_eq!(
        b.hub.stats().thread_states_unknown,
        1,
        "B read the thread before A put it back: counted"
    );
    assert_eq!(
        thread_field(&redis, "r:thread-1").await,
        None,
        "not put back"
    );

    proxy_a.pass(0);
    wait_until("A put the whole run back", async || {
        thread_field(&redis, "r:thread-1").await.is_some()
    })
    .await;
    publish(&p, 18..40).await;
    wait_opens(&a, 1..40).await;
    wait_opens(&b, 1..40).await;
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "once");
    assert_eq!(a.hub.stats().thread_states_unknown, 0, "A held the run");
    for node in [&p, &a, &b] {
        node.backplane.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A new generation marker announced slowly.

/// Node B serves alice (so it folds her thread) through a [`SplitProxy`]; its feed breaks
/// once, so that it knows the thread without its exact state. Then its new feed is held while
/// the run goes on (events 13 to 16), Redis is flushed, and the run goes on through A (17 to
/// 20), which held the run whole and puts it back in Redis. A tab opening on B meanwhile
/// reads the thread under a marker B's feed has not announced: refused, again and again, and
/// the tab ends to come back. Once B's feed catches up (the events from before the loss, the
/// announcement, the events after), a tab on B opens with the whole run, and follows it to its
/// end with every event once; no node counts a state unknown, and the loss counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_tab_on_a_node_told_of_a_loss_late_opens_whole_once_its_feed_catches_up() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let proxy = SplitProxy::start(redis.addr()).await;
    let a = Node::start(settings(redis.url()), numbers_config()).await;
    let b = Node::start(lagging_settings(proxy.url()), numbers_config()).await;
    let _plain = b.hub.subscribe(&alice()).unwrap();
    wait_until("B listens to alice", async || {
        b.backplane.health().listening >= 1
    })
    .await;
    publish(&a, 1..13).await;
    wait_opens(&a, 1..13).await;

    // B's feed breaks: it reconnects without the exact state, and its new feed is held.
    break_then_hold_feed(&b, &proxy).await;
    publish(&a, 13..17).await;
    flushall(&redis).await;
    publish(&a, 17..21).await;
    wait_until("A put the whole run back", async || {
        thread_field(&redis, "r:thread-1").await.is_some()
    })
    .await;
    // A tab on B now: its reads run under a marker B's feed has not announced.
    let mut early = b
        .hub
        .subscribe_in_thread(&alice(), &thread(), None)
        .unwrap();
    let first = timeout(WAIT, early.next()).await.expect("answered in time");
    assert!(
        first.is_none(),
        "B cannot vouch for the thread yet: the tab ends, to come back, rather than open with {:?}",
        first.map(|f| numbers(f.bytes()))
    );
    assert_eq!(
        b.backplane.health().data_losses,
        0,
        "B's feed has not told it"
    );
    proxy.pass(3);
    wait_until("B found the loss", async || {
        b.backplane.health().data_losses == 1
    })
    .await;

    let (opened, mut tab) = open_tab(&b).await;
    assert_eq!(opened, (1..21).collect::<Vec<_>>(), "the whole run, once");
    publish(&a, 21..31).await;
    assert_eq!(follow(&mut tab, 30).await, (21..31).collect::<Vec<_>>());
    for node in [&a, &b] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0, "nothing lost");
        assert_eq!(node.backplane.health().data_losses, 1, "one loss");
    }
    a.backplane.close().await;
    b.backplane.close().await;
}
