//! Threads across nodes when a node's live feed lags its commands, against a real
//! `redis-server`: node B reaches Redis through a [`SplitProxy`] that holds what Redis sends on
//! B's pub/sub connection (or what B sends on its command connection) while Redis loses its
//! data or evicts a thread's keys, so that B's reads show a Redis its feed has not caught up
//! with. B must take what its feed brings in order: each loss counted once, the run kept whole,
//! no event folded twice, every tab on every node opening with the whole run.
//!
//! Every test starts its own `redis-server` on a free loopback port and its own nodes (hubs with
//! their own backplane connections), with the runs of `support/thread_runs.rs`. Skips
//! (printing so) without `redis-server`, except under `CI=true`, as the other Redis tests do.
#![cfg(feature = "redis")]

use std::time::Duration;

use serde_json::Value;
use sse_hub::backplane::Backplane;
use sse_hub::{Subscription, ThreadId};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/thread_runs.rs"]
mod thread_runs;
#[path = "support/split_proxy.rs"]
mod split_proxy;

use split_proxy::{SplitProxy, node_behind_split_proxy, wait_sent};
use support::{Node, RedisServer, WAIT, quick_settings, redis_available};
use thread_runs::{
    Published, alice, close, config, datas, evict_thread_keys, flushall, full_text, next, node,
    run, serve, snapshot_count, tabs_caught_up, text_of, until_end, wait_received,
    wait_reconnected_after, wait_whole_snapshot,
};

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
        let a = node(redis.url()).await;
        let (proxy, b) = node_behind_split_proxy(
            &redis,
            |url| {
                let mut settings = quick_settings(url);
                settings.command_timeout = Duration::from_secs(8);
                settings.ping_interval = Duration::from_secs(60);
                settings
            },
            config(),
        )
        .await;
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
        let mid = from.max(30);
        published.publish(&a, from..mid).await;
        let c = node(redis.url()).await;
        published
            .goes_on_whole_in_tabs_on(&a, &[("B", &b), ("A", &a), ("C", &c)], mid)
            .await;
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
    wait_received(b, received, 3, "B's feed brought the run's new events").await;
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
