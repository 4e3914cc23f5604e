//! What a node knew of a thread, against a real `redis-server`, with the faults injected (a
//! node's live feed cut, then held in a proxy while its commands flow; the thread's keys
//! evicted, so that Redis numbers its next event 1 again):
//!
//! * a node that read a thread back while it had no event yet (a tab opened before the run),
//!   then lost its feed, knew nothing of the run: it takes the run's first event, numbered 1,
//!   for the thread's start, folds the run its feed brings, and when Redis starts the thread
//!   over, goes on from it and puts it back whole, counting nothing;
//! * a node that counted a thread's state unknown when it read it back (Redis had lost the run)
//!   meets that loss again at the thread's next event, and does not count it twice;
//! * a node whose read ran ahead of its feed (a tab's sync) holds what Redis numbers anew:
//!   the older frames its feed still brings (of the thread before Redis started it over) are
//!   covered by that read, and are not folded on top of it, whatever their ordinal.
//!
//! Every test starts its own `redis-server` on a loopback port and its own nodes. Skips
//! (printing so) without `redis-server`, except under `CI=true`, as the other Redis tests do.
#![cfg(feature = "redis")]

use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use sse_hub::Subscription;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/split_proxy.rs"]
mod split_proxy;
#[path = "support/thread_runs.rs"]
mod thread_runs;
#[path = "support/numbers_tabs.rs"]
mod numbers_tabs;

use numbers_tabs::{
    break_then_hold_feed, follow, knows_thread_inexactly, lagging_settings, open_tab, publish,
    publisher_config, wait_opens, wait_until,
};
use serde_json::json;
use split_proxy::SplitProxy;
use support::{Node, RedisServer, redis_available, settings};
use thread_runs::{
    MidRun, alice, break_link_through, close, evict_thread_keys, numbers_config, opening_on,
    thread, thread_field, wait_counted_unknown, wait_received, wait_whole_snapshot,
};

/// Node P only publishes (it folds no thread state); node B serves alice through a
/// [`SplitProxy`] (so it folds her thread: its plain stream, returned, keeps it listening),
/// and a tab on B opens her thread before anything was published into it, after a plain
/// event: B's read of the thread holds no event, and covers that event's id. The tab closes;
/// B's feed then breaks, and its new feed is held. (Not every run gets there: in about one run
/// in four, B's state of the thread covers no id when its feed brings the run's first event,
/// for a reason not yet found; B then knew nothing of the thread either way, and the tests
/// still check what it must do, but do not tell the two notions of "knew" apart.)
async fn synced_before_the_run() -> (RedisServer, SplitProxy, Node, Node, Subscription<Value>) {
    let redis = RedisServer::start().await;
    let proxy = SplitProxy::start(redis.addr()).await;
    let p = Node::start(settings(redis.url()), publisher_config()).await;
    let b = Node::start(lagging_settings(proxy.url()), numbers_config()).await;
    let stream = b.hub.subscribe(&alice()).unwrap();
    wait_until("B listens to alice", async || {
        b.backplane.health().listening >= 1
    })
    .await;
    let before = b.backplane.health().received;
    let plain = p.publish_stored("alice", 0).await;
    wait_received(&b, before, 1, "B's feed brought the plain event").await;
    // A thread with no event opens with no frame: the tab opened once it starts from there.
    let mut tab = b
        .hub
        .subscribe_in_thread(&alice(), &thread(), None)
        .unwrap();
    wait_until("the tab opened", async || {
        assert!(tab.next().now_or_never().is_none(), "no run yet: no frame");
        tab.start_id() == plain
    })
    .await;
    drop(tab);
    break_then_hold_feed(&b, &proxy).await;
    (redis, proxy, p, b, stream)
}

/// B read alice's thread back before its run (a read with no event), then lost its feed,
/// which is held while the run is published (1 to 16); Redis evicts the thread's keys, and the
/// run's next event (17) is numbered 1 again. B's feed then brings it all: the run's first
/// event, numbered 1, is the thread's start to B, which folded none of the thread before (it
/// is no thread started over that B must read back: a read now would hold only what Redis
/// numbers anew, event 17, the run from 1 to 16 lost). B folds 1 to 16, takes 17 for the
/// thread started over, goes on from what it holds and puts the whole run back in Redis. A
/// tab on B, and one on a node started afterwards, open with the whole run; nothing is
/// counted unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_node_that_read_a_thread_before_its_run_folds_the_run_its_feed_brings_whole() {
    if !redis_available() {
        return;
    }
    let (redis, proxy, p, b, _plain) = synced_before_the_run().await;
    publish(&p, 1..17).await;
    evict_thread_keys(&redis).await;
    publish(&p, 17..18).await;
    assert_eq!(
        thread_field(&redis, "n:thread-1").await.as_deref(),
        Some("1")
    );
    let before = b.backplane.health().received;
    proxy.pass(3);
    // B folds its feed first: a tab opening before would read the thread ahead of it.
    wait_received(&b, before, 17, "B's feed brought 1 to 17").await;
    wait_opens(&b, 1..18).await;
    wait_whole_snapshot(&redis).await;
    let c = Node::start(settings(redis.url()), numbers_config()).await;
    let (opened, _) = open_tab(&c).await;
    assert_eq!(opened, (1..18).collect::<Vec<_>>(), "B put the run back");
    let (_, mut tab) = open_tab(&b).await;
    publish(&p, 18..21).await;
    assert_eq!(follow(&mut tab, 20).await, vec![18, 19, 20], "each once");
    for node in [&b, &c] {
        assert_eq!(node.hub.stats().thread_states_unknown, 0, "nothing lost");
    }
    for node in [&p, &b, &c] {
        node.backplane.close().await;
    }
}

/// B folded alice's run (1 to 12) and lost its exact state (its feed broke, and is held while
/// the run goes on: 13 to 16). Redis evicts the thread's keys, and the run goes on numbered
/// from 1 again: 17 to 29, ordinals 1 to 13. A tab opening on B meanwhile reads the thread
/// back (only 17 to 29, counted unknown: B lacks the run before). Then B's feed brings what it
/// held: 13 to 16, numbered 13 to 16 before Redis started the thread over, each older than
/// what that read covers. None is folded on top of it (14 follows the read's count, 13, yet is
/// no event after it), and 17, numbered 1 again, is no thread started over either: B's tab
/// opens with 17 to 29 as read, follows the run with every event once, and B's snapshot holds
/// that, not a run it put together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn frames_older_than_a_read_ahead_of_the_feed_are_not_folded_on_top_of_it() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let proxy = SplitProxy::start(redis.addr()).await;
    let p = Node::start(settings(redis.url()), publisher_config()).await;
    let b = Node::start(lagging_settings(proxy.url()), numbers_config()).await;
    let _plain = b.hub.subscribe(&alice()).unwrap();
    knows_thread_inexactly(&p, &b, &proxy).await;
    publish(&p, 13..17).await;
    evict_thread_keys(&redis).await;
    publish(&p, 17..30).await;
    assert_eq!(
        thread_field(&redis, "n:thread-1").await.as_deref(),
        Some("13")
    );
    let (opened, mut tab) = open_tab(&b).await;
    assert_eq!(opened, (17..30).collect::<Vec<_>>(), "what Redis holds");
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "B lacks 1 to 16");

    let before = b.backplane.health().received;
    proxy.pass(3);
    // The held feed: 13 to 29.
    wait_received(&b, before, 17, "B's feed brought what it held").await;
    publish(&p, 30..33).await;
    assert_eq!(follow(&mut tab, 32).await, vec![30, 31, 32], "each once");
    wait_opens(&b, 17..33).await;
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "once");
    assert_eq!(
        thread_field(&redis, "r:thread-1").await,
        None,
        "B put back no run of its own making"
    );
    p.backplane.close().await;
    b.backplane.close().await;
}

/// Alice's AG-UI run, 12 events in, held exactly by A and by B, whose feed breaks (so that B
/// knows the thread without its exact state) before Redis restarts without persistence. A tab
/// on B reads the thread back while Redis holds nothing of it: B cannot rebuild the run, and
/// counts it unknown. B's feed breaks again; then the run goes on through A. Its next event is
/// the thread's first in Redis (numbered 1), of the run whose start B lacks: that is the loss
/// B counted, met again at the first event it folds, and is not counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_state_counted_unknown_is_not_counted_again_at_the_threads_next_event() {
    if !redis_available() {
        return;
    }
    let mut scene = MidRun::start().await;
    scene.published.wait_folded_on(&[&scene.a, &scene.b]).await;
    scene.b_loses_the_exact_state_then_redis_its_data().await;
    let MidRun {
        proxy,
        a,
        b,
        published,
        ..
    } = &scene;
    let mut tab = b
        .hub
        .subscribe_in_thread(&alice(), &thread(), None)
        .unwrap();
    wait_counted_unknown(b, &mut tab).await;
    drop(tab);
    break_link_through(proxy, b).await;

    let before = b.backplane.health().received;
    published.publish(a, 12..13).await;
    wait_received(b, before, 1, "B's feed brought the run's next event").await;
    // The tab opens once B folded it: with the run B cannot rebuild.
    let opened = opening_on(
        b,
        &alice(),
        &[json!({"type": "RUN_ERROR",
        "message": "this run began before what the server holds of the thread (it was \
            forgotten, or its start never reached the server): it cannot be rebuilt; the \
            thread's next run opens whole",
        "code": "run_unknown"})],
    )
    .await;
    assert_eq!(opened[0]["code"], "run_unknown");
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "once");
    assert_eq!(a.hub.stats().thread_states_unknown, 0, "A held the run");
    close(&[a, b]).await;
}
