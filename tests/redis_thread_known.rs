//! What a node knew of a thread, against a real `redis-server`, with the faults injected (a
//! node's live feed cut, then held in a proxy while its commands flow; the thread's keys
//! evicted, so that Redis numbers its next event 1 again):
//!
//! * a node whose read ran ahead of its feed (a tab's sync) holds what Redis numbers anew:
//!   the older frames its feed still brings (of the thread before Redis started it over) are
//!   covered by that read, and are not folded on top of it, whatever their ordinal.
//!
//! Every test starts its own `redis-server` on a loopback port and its own nodes. Skips
//! (printing so) without `redis-server`, except under `CI=true`, as the other Redis tests do.
#![cfg(feature = "redis")]

#[path = "support/backplane.rs"]
mod support;
#[path = "support/split_proxy.rs"]
mod split_proxy;
#[path = "support/thread_runs.rs"]
mod thread_runs;
#[path = "support/numbers_tabs.rs"]
mod numbers_tabs;

use numbers_tabs::{
    follow, knows_thread_inexactly, lagging_settings, open_tab, publish, publisher_config,
    wait_opens,
};
use split_proxy::SplitProxy;
use support::{Node, RedisServer, redis_available, settings};
use thread_runs::{alice, evict_thread_keys, numbers_config, thread_field, wait_received};

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
