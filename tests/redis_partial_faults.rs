//! The Redis backplane when Redis fails only in part, against real `redis-server` processes on
//! loopback, each fault injected: one of the node's two connections silently dead (packets
//! dropped, no RST) while the other lives; a Redis restored without the tail of its history (an
//! RDB snapshot after a crash, a failover to a lagging replica); and more than 64 node
//! processes, or more publishes than any window the backplane keeps, going through while a
//! node's publish waits to be retried; and one connection slow to carry the node's commands
//! (a `PING`, a `SUBSCRIBE` held on the way) while the live feed flows, which must not hold back
//! the live events of the users the node listens to. Every wait is bounded. Skips (printing
//! so) without `redis-server`, except under `CI=true`.
#![cfg(feature = "redis")]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_hub::{
    Config, EventId, Frame, FrameKind, PublishError, Published, ResetReason, Subscription, UserId,
};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/split_proxy.rs"]
mod split_proxy;

use split_proxy::{SplitProxy, hold_next, node_behind_split_proxy, wait_sent};
use sse_hub::backplane::RedisConfig;
use support::{Fault, FaultProxy, Node, RedisServer, WAIT, redis_available, settings};

/// A node of the Redis at `url`, with the test settings.
async fn node(url: String) -> Node {
    Node::start(settings(url), Config::default()).await
}

/// A node whose connection to Redis goes through `proxy`, slow to come back and patient with
/// its retries, so that a test can hold it away from Redis before it retries a publish.
async fn patient_node(proxy: &FaultProxy) -> Node {
    let mut settings = settings(proxy.url());
    settings.reconnect_min = Duration::from_millis(500);
    settings.reconnect_max = Duration::from_secs(1);
    settings.publish_retry = Duration::from_secs(60);
    Node::start(settings, Config::default()).await
}

/// A Redis, a proxy to it, node A through the proxy ([`patient_node`]) and node B straight to
/// Redis.
async fn patient_and_direct_nodes() -> (RedisServer, FaultProxy, Node, Node) {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = patient_node(&proxy).await;
    let b = node(redis.url()).await;
    (redis, proxy, a, b)
}

/// Publishes `{"n": 1}` to alice on `node` with the reply cut after Redis ran it: the node will
/// send it again.
fn publish_with_reply_cut(
    proxy: &FaultProxy,
    node: &Node,
) -> tokio::task::JoinHandle<Result<Published, PublishError>> {
    proxy.cut_mid_reply();
    let hub = node.hub.clone();
    tokio::spawn(async move {
        hub.broadcast_async(&UserId::from("alice"), &json!({"n": 1}))
            .await
    })
}

/// The `n` of an event frame.
fn n_of(frame: &Frame) -> Option<u64> {
    let text = std::str::from_utf8(frame.bytes()).ok()?;
    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str::<Value>(data).ok()?["n"].as_u64()
}

/// What a subscription yields within `within`: (kind, n).
async fn drain<E>(sub: &mut Subscription<E>, within: Duration) -> Vec<(FrameKind, Option<u64>)> {
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + within;
    while let Ok(Some(frame)) = tokio::time::timeout_at(until, sub.next()).await {
        out.push((frame.kind(), n_of(&frame)));
    }
    out
}

/// Redis restarts from a snapshot older than the last events (RDB persistence, Redis's default,
/// after a crash; or a failover to a replica that lagged): the history comes back *without its
/// tail*. A client whose last id is inside the lost tail resumes, after new publishes, with a
/// `reset` (`expired`: its id is missing from the span the history must hold whole), never a
/// silent skip of the confirmed events lost after its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_history_restored_without_its_tail_resumes_a_lost_id_as_expired() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start_persistent().await;
    let a = node(redis.url()).await;
    let b = node(redis.url()).await;
    let alice = UserId::from("alice");
    // B serves alice (a tab), so that A's publishes are stored.
    let mut tab = b.hub.subscribe_async(&alice, None).await.unwrap();

    let _id1 = a.publish_stored("alice", 1).await;
    redis.save().await; // the last snapshot holds event 1 only
    let id2 = a.publish_stored("alice", 2).await;
    let id3 = a.publish_stored("alice", 3).await;
    let got = drain(&mut tab, Duration::from_millis(500)).await;
    assert_eq!(
        got.iter().filter_map(|(_, n)| *n).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // The client saw 2, then its connection dropped (it will resume with id2); 3 was
    // confirmed to the publisher with an id.
    drop(tab);
    assert!(id3 > id2);

    redis.restart().await; // a crash (SIGKILL), and a restart from the snapshot
    a.wait_reconnected().await;
    b.wait_reconnected().await;
    // Publishing goes on after the restart.
    let id4 = a.publish_stored("alice", 4).await;
    assert!(id4 > id3, "ids still grow: {id4} > {id3}");

    // The client resumes with its last id, on either node.
    let mut resumed = b
        .hub
        .subscribe_async(&alice, Some(&id2.to_string()))
        .await
        .unwrap();
    let got = drain(&mut resumed, Duration::from_millis(500)).await;
    let told = got
        .iter()
        .any(|(kind, _)| matches!(kind, FrameKind::Reset(_) | FrameKind::Lagged { .. }));
    let numbers: Vec<u64> = got.iter().filter_map(|(_, n)| *n).collect();
    assert!(
        told || numbers == [3, 4],
        "event 3 (confirmed as {id3}) was skipped silently: the resume from {id2} yielded {got:?}"
    );
    assert!(
        matches!(
            got.first(),
            Some((FrameKind::Reset(ResetReason::Expired), _))
        ),
        "the lost id resumes as expired: {got:?}"
    );
    assert_eq!(resumed.start_id(), id4, "restarts at the history's last id");

    // An id ahead of everything the restored history issued is `unknown`, on any node.
    let ahead = EventId::new(id4.epoch() + 60_000, 0);
    for node in [&a, &b] {
        let mut sub = node
            .hub
            .subscribe_async(&alice, Some(&ahead.to_string()))
            .await
            .unwrap();
        let got = drain(&mut sub, Duration::from_millis(200)).await;
        assert!(
            matches!(
                got.first(),
                Some((FrameKind::Reset(ResetReason::Unknown), _))
            ),
            "an id ahead of the history resumed silently: {got:?}"
        );
    }
}

/// The scene of the tests of a publish retried after a while: [`patient_and_direct_nodes`], a
/// tab of alice's on B that got her event 0 (published through A), and A's publish of
/// `{"n": 1}` to her with its reply cut after Redis ran it: the tab got it once, live, and A
/// will send it again. A is then kept away from Redis (its connection cut, the next ones held:
/// a partition) until [`heal`](Self::heal).
struct RetriedPublish {
    redis: RedisServer,
    proxy: FaultProxy,
    /// Node A, kept alive: its publish waits to be retried.
    _a: Node,
    b: Node,
    alice: UserId,
    tab: Subscription<Value>,
    /// The id of alice's event 0: a client resuming from it must get event 1 once.
    id0: EventId,
    publishing: tokio::task::JoinHandle<Result<Published, PublishError>>,
    /// Event 1 as the tab got it.
    live: Frame,
}

impl RetriedPublish {
    async fn start() -> Self {
        let (redis, proxy, a, b) = patient_and_direct_nodes().await;
        let alice = UserId::from("alice");
        let mut tab = b.hub.subscribe_async(&alice, None).await.unwrap();
        let id0 = a.publish_stored("alice", 0).await;
        assert_eq!(drain(&mut tab, Duration::from_millis(300)).await.len(), 1);

        let publishing = publish_with_reply_cut(&proxy, &a);
        let live = timeout(WAIT, tab.next()).await.unwrap().unwrap();
        assert_eq!(n_of(&live), Some(1), "the publish ran once");
        proxy.set(Fault::Hold);
        proxy.cut();
        Self {
            redis,
            proxy,
            _a: a,
            b,
            alice,
            tab,
            id0,
            publishing,
            live,
        }
    }

    /// The partition heals: A sends its publish of 1 again. Its answer.
    async fn heal(&mut self) -> Result<Published, PublishError> {
        self.proxy.set(Fault::None);
        timeout(Duration::from_secs(30), &mut self.publishing)
            .await
            .expect("the retried publish is answered")
            .unwrap()
    }

    /// What a client of alice's that resumes on B from event 0 (a reload, another tab, a node
    /// change) gets within 500 ms, and how many times event 1 is among it.
    async fn resumed_from_event_0(&self) -> (Vec<(FrameKind, Option<u64>)>, usize) {
        let mut resumed = self
            .b
            .hub
            .subscribe_async(&self.alice, Some(&self.id0.to_string()))
            .await
            .unwrap();
        let got = drain(&mut resumed, Duration::from_millis(500)).await;
        let ones = got.iter().filter(|(_, n)| *n == Some(1)).count();
        (got, ones)
    }
}

/// A publish whose reply was lost is retried after Redis evicted the user's publish marks (an
/// evicting `maxmemory-policy`: every key of the backplane has a time to live), so no mark
/// says the publish ran. The retry finds the event in the history by its token instead, and
/// does not store it again: a client resuming from before it receives it once, as the live tab
/// did, and the publish is answered with the event's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_retried_publish_whose_mark_redis_evicted_runs_once() {
    if !redis_available() {
        return;
    }
    let mut scene = RetriedPublish::start().await;
    // While A is kept away from Redis, Redis evicts alice's publish marks.
    let mut connection = scene.redis.connection().await;
    let marks: Vec<String> = redis::cmd("KEYS")
        .arg("sse-hub:marks:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    let deleted: i64 = redis::cmd("DEL")
        .arg(&marks)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "alice's publish marks: {marks:?}");

    let answered = scene
        .heal()
        .await
        .expect("the retried publish is confirmed");
    assert_eq!(
        answered.id,
        scene.live.id(),
        "the retry answers the event's id"
    );

    let (got, ones) = scene.resumed_from_event_0().await;
    assert_eq!(
        ones, 1,
        "event 1 published once was replayed {ones} times: {got:?}"
    );
    let rest = drain(&mut scene.tab, Duration::from_millis(300)).await;
    assert!(
        rest.iter().all(|(_, n)| *n != Some(1)),
        "the live tab got event 1 again: {rest:?}"
    );
}

/// A publish whose reply was lost is retried with its token, and the publish marks make it run
/// once. Node ids are random per process, so restarts and autoscaling add marks: here more
/// than 64 node processes publish to the user while a node's retry is held back by a
/// partition. The marks hash stays bounded by dropping only *expired* marks, so the retry
/// still finds its own and does not run the publish again: a client resuming from before the
/// event receives it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_retried_publish_runs_once_however_many_nodes_published_to_the_user() {
    if !redis_available() {
        return;
    }
    // A network partition keeps A away from Redis for a while.
    let mut scene = RetriedPublish::start().await;

    // Meanwhile 70 other node processes (restarts, autoscaling, short-lived publishers)
    // publish to alice: each has its own random node id.
    for i in 0..70 {
        let other = node(scene.redis.url()).await;
        other.publish_stored("alice", 100 + i).await;
        other.backplane.close().await;
    }

    // The partition heals: A retries its publish of 1.
    let answered = scene.heal().await;
    eprintln!(
        "A's publish of 1 answered {answered:?}; live copy {:?}",
        scene.live.id()
    );

    // A client that resumes from before event 1.
    let (got, ones) = scene.resumed_from_event_0().await;
    assert_eq!(
        ones,
        1,
        "event 1 published once was replayed {ones} times: {:?}",
        got.iter()
            .map(|(k, n)| (*k, *n))
            .filter(|(_, n)| *n < Some(100))
            .collect::<Vec<_>>()
    );
}

/// Publishes that go through while a publish of another node waits for its retry: more than
/// the publish tokens a node remembers having dispatched (8192)…
const MEANWHILE: u64 = 9_000;
/// …one in 20 to the same user: 450, more than her history keeps (256 and a slack of 32).
const SAME_USER_EVERY: u64 = 20;
/// The `n` of the event that closes a stream's check: a user's events arrive in order, so
/// a late copy of anything would come before it.
const MARKER: u64 = 999_999;

/// A publish whose reply was lost is retried long after it ran, with far more publishes in
/// between than any window the backplane keeps: more than the 8192 publish tokens the
/// receiving node remembers having dispatched, and more of the same user than the history
/// holds (so the retry cannot even find the entry it made). The retry must still not run the
/// publish again: the publish marks compare counters, they do not look the token up in a
/// window. The client on the other node receives the event once, live, with every other event
/// once; the node never had to drop a copy (no second copy was ever sent); and the history
/// holds it at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_retried_publish_runs_once_however_many_publishes_went_through_meanwhile() {
    if !redis_available() {
        return;
    }
    let (redis, proxy, a, b) = patient_and_direct_nodes().await;
    let alice = UserId::from("alice");
    let bob = UserId::from("bob");
    let mut tab = b.hub.subscribe_async(&alice, None).await.unwrap();
    // B serves bob too: every publish to bob is dispatched on B, and remembered there.
    let mut bobs_tab = b.hub.subscribe_async(&bob, None).await.unwrap();
    let bobs_reader = tokio::spawn(async move { while bobs_tab.next().await.is_some() {} });

    let publishing = publish_with_reply_cut(&proxy, &a);
    let live = timeout(WAIT, tab.next()).await.unwrap().unwrap();
    assert_eq!(n_of(&live), Some(1), "the publish ran");
    // A partition keeps A away from Redis: its retry waits.
    proxy.set(Fault::Hold);
    proxy.cut();

    // The tab reads on while B publishes, up to the marker.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            match timeout(WAIT, tab.next()).await {
                Ok(Some(frame)) => {
                    let n = n_of(&frame);
                    got.push((frame.kind(), n));
                    if n == Some(MARKER) {
                        return got;
                    }
                }
                Ok(None) => panic!("alice's stream ended after {got:?}"),
                Err(_) => panic!("alice's stream stalled after {got:?}"),
            }
        }
    });
    let received_before = b.backplane.health().received;
    let mut n = 1000;
    let mut to_alice = 0;
    while n < 1000 + MEANWHILE {
        // Concurrent, so that B's publisher pipelines them; alice's in small groups, so that
        // her tab keeps up (its ring holds 256 frames).
        let mut group = Vec::new();
        for _ in 0..500 {
            let user = if n % SAME_USER_EVERY == 0 {
                to_alice += 1;
                &alice
            } else {
                &bob
            };
            let hub = &b.hub;
            group.push(async move { hub.broadcast_async(user, &json!({ "n": n })).await });
            n += 1;
        }
        for published in futures_util::future::join_all(group).await {
            published.expect("B publishes");
        }
    }
    let dispatched = b.backplane.health().received - received_before;
    assert!(
        dispatched > 8192,
        "B dispatched only {dispatched} publishes meanwhile"
    );

    // The partition heals: A sends its publish of 1 again.
    proxy.set(Fault::None);
    let answered = timeout(Duration::from_secs(30), publishing)
        .await
        .expect("the retried publish is answered")
        .unwrap()
        .expect("the retry is confirmed");
    assert!(a.backplane.health().publish_retries >= 1);
    // The retry answers the id the first run gave, or none: the history no longer holds it.
    assert!(
        answered.id.is_none() || answered.id == live.id(),
        "the retry was answered {answered:?}; the publish ran as {:?}",
        live.id()
    );
    a.publish_stored("alice", MARKER).await;

    let got = timeout(WAIT * 3, reader).await.unwrap().unwrap();
    let mut seen = vec![1];
    for (kind, n) in &got {
        assert!(
            matches!(kind, FrameKind::Event(_)),
            "alice's tab was told of a loss: {kind:?} (after {} frames)",
            seen.len()
        );
        seen.push(n.expect("a numbered event"));
    }
    let ones = seen.iter().filter(|&&n| n == 1).count();
    assert_eq!(ones, 1, "event 1 reached alice's tab {ones} times");
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "an event twice on alice's tab");
    assert_eq!(seen.len(), 2 + to_alice, "alice's tab: {seen:?}");
    // No second copy was ever sent, so none had to be dropped by B's window.
    assert_eq!(b.backplane.health().duplicates_dropped, 0);
    assert_eq!(a.backplane.health().duplicates_dropped, 0);

    // The history holds event 1 at most once (it was trimmed since: a second run would be
    // its newest entries).
    let mut connection = redis.connection().await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("sse-hub:events:alice")
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .expect("XRANGE");
    let ones = entries
        .iter()
        .filter(|(_, fields)| {
            fields.iter().any(|(field, head)| {
                field == "f"
                    && head
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .any(|data| data == r#"{"n":1}"#)
            })
        })
        .count();
    assert!(ones <= 1, "event 1 is {ones} times in the history");
    bobs_reader.abort();
}

/// The command connection goes silently dead (its packets dropped, no RST) while the pub/sub
/// connection stays up, so the pub/sub PINGs keep passing and every command just times out.
/// The node must notice (its probe of the command connection goes unanswered), reconnect, say
/// so in its health, and publish again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_silently_dead_command_connection_is_replaced() {
    if !redis_available() {
        return;
    }
    // Connection 0 is A's command connection.
    let (_redis, proxy, a, b) = a_behind_a_split_proxy(|settings| {
        settings.command_timeout = Duration::from_millis(300);
        settings.publish_retry = Duration::from_secs(1);
    })
    .await;
    let alice = UserId::from("alice");
    let mut tab = b.hub.subscribe_async(&alice, None).await.unwrap();
    a.publish_stored("alice", 1).await;
    assert_eq!(drain(&mut tab, Duration::from_millis(300)).await.len(), 1);
    proxy.black_hole(0);

    // For 12 s (a dozen publish_retry, forty command timeouts), publish once in a while.
    let until = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut outcomes = Vec::new();
    let mut ok = false;
    while tokio::time::Instant::now() < until {
        let outcome = a
            .hub
            .broadcast_async(&alice, &json!({"n": 2}))
            .await
            .map(|p| p.id);
        ok = matches!(outcome, Ok(Some(_)));
        outcomes.push(outcome);
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = a.backplane.health();
    assert!(
        ok,
        "no publish went through in 12 s ({} tries, last {:?}); the node says connected={} \
         reconnects={} unknown={} connections accepted={}",
        outcomes.len(),
        outcomes.last(),
        health.connected,
        health.reconnects,
        health.publish_unknown,
        proxy.accepted()
    );
    // The health says what happened: a reconnect, because of the command connection.
    assert!(health.connected && health.reconnects >= 1, "{health:?}");
    let error = health.last_error.unwrap_or_default();
    assert!(error.contains("command connection"), "last error: {error}");
}

/// A history read still in flight on the node's *old* command connection when the node has
/// reconnected fails when that old connection finally breaks. That is no news about the new
/// link, which is healthy: the node must not tear it down again (a second reconnect, and every
/// stream of the node ended once more, needlessly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_read_failing_on_an_old_connection_leaves_the_new_link_alone() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let (proxy, a) = node_behind_split_proxy(
        &redis,
        |url| {
            let mut a_settings = settings(url);
            // The read waits on the silent connection for longer than the test needs, and no
            // idle check runs: the faults are the test's.
            a_settings.command_timeout = Duration::from_secs(5);
            a_settings.ping_interval = Duration::from_secs(60);
            a_settings
        },
        Config::default(),
    )
    .await;
    let (alice, bob, carol) = (
        UserId::from("alice"),
        UserId::from("bob"),
        UserId::from("carol"),
    );
    // A tab of alice's: her feed is listened to on the first link.
    let mut tab = a.hub.subscribe_async(&alice, None).await.unwrap();
    let id1 = a.publish_stored("alice", 1).await;
    assert_eq!(drain(&mut tab, Duration::from_millis(200)).await.len(), 1);

    // The command connection goes silent; a second tab resumes: its history read is sent on
    // it, and waits.
    proxy.black_hole(0);
    let before = proxy.sent(0);
    let resuming = {
        let hub = a.hub.clone();
        let alice = alice.clone();
        tokio::spawn(async move { hub.subscribe_async(&alice, Some(&id1.to_string())).await })
    };
    wait_sent(&proxy, 0, before).await;
    // The pub/sub connection breaks: the node reconnects on fresh connections.
    proxy.cut(1);
    a.wait_reconnected().await;
    assert_eq!(proxy.accepted(), 4);
    // A stream opened on the new link.
    let mut carols = a.hub.subscribe_async(&carol, None).await.unwrap();

    // The old command connection breaks at last: the read on it fails.
    proxy.cut(0);
    let resumed = timeout(WAIT, resuming).await.unwrap().unwrap().unwrap();
    drop(resumed);
    // A subscribe of a new user needs the connection task to confirm its feed: by then it has
    // seen whatever the failed read told it.
    let _bobs = a.hub.subscribe_async(&bob, None).await.unwrap();
    let health = a.backplane.health();
    assert_eq!(
        health.reconnects, 1,
        "the new link was torn down for a failure of the old one: {health:?}"
    );
    // Carol's stream, on the new link, is still open.
    a.publish_stored("carol", 7).await;
    let next = timeout(WAIT, carols.next()).await.unwrap();
    assert_eq!(
        next.as_ref().and_then(n_of),
        Some(7),
        "carol's stream ended: {:?}",
        a.backplane.health()
    );
}

// ---------------------------------------------------------------------------------------------
// Live delivery while the node waits for one of its own round trips.

/// How long a live event may take from its publish on B to a tab on A, on loopback, while A
/// waits for a round trip on one of its connections. Far below the round trip, which lasts
/// until the test has checked the deliveries (so at most `3 * DELIVERY`) and is below A's
/// command timeout ([`SLOW_LINK_TIMEOUT`]): nothing is lost meanwhile, nothing times out.
const DELIVERY: Duration = Duration::from_secs(2);

/// A's command (and `SUBSCRIBE`) timeout in these tests: longer than any stall they inject.
const SLOW_LINK_TIMEOUT: Duration = Duration::from_secs(8);

/// Publishes `numbers` to `user` through `b`, each of which `tab` (a stream of `user`'s on
/// another node) must get within [`DELIVERY`] of its publish, in order; `what` says what the
/// node of the tab was waiting for.
async fn each_delivered_at_once<E>(
    b: &Node,
    user: &str,
    numbers: std::ops::RangeInclusive<u64>,
    tab: &mut Subscription<E>,
    what: &str,
) {
    for n in numbers {
        b.publish_stored(user, n).await;
        let next = timeout(DELIVERY, tab.next()).await.unwrap_or_else(|_| {
            panic!("event {n} was not delivered within {DELIVERY:?}: the node waited for {what}")
        });
        assert_eq!(
            next.as_ref().and_then(n_of),
            Some(n),
            "event {n}: got {next:?}"
        );
    }
}

/// A Redis, node A reaching it through a [`SplitProxy`] (its command connection first, then
/// its pub/sub one), with the slow link's command timeout and `tune`'s settings, and node B
/// reaching it directly.
async fn a_behind_a_split_proxy(
    tune: impl FnOnce(&mut RedisConfig),
) -> (RedisServer, SplitProxy, Node, Node) {
    let redis = RedisServer::start().await;
    let (proxy, a) = node_behind_split_proxy(
        &redis,
        |url| {
            let mut a_settings = settings(url);
            a_settings.command_timeout = SLOW_LINK_TIMEOUT;
            tune(&mut a_settings);
            a_settings
        },
        Config::default(),
    )
    .await;
    let b = node(redis.url()).await;
    (redis, proxy, a, b)
}

/// The rest of `tab` after `last` is published through `b`: every event before it was
/// delivered once, in order, with nothing in between (no gap, no duplicate, no loss signalled).
async fn rest_in_order<E>(b: &Node, user: &str, tab: &mut Subscription<E>, last: u64) {
    b.publish_stored(user, last).await;
    let rest = drain(tab, Duration::from_millis(300)).await;
    assert_eq!(
        rest.iter()
            .map(|(kind, n)| (matches!(kind, FrameKind::Event(_)), *n))
            .collect::<Vec<_>>(),
        vec![(true, Some(last))],
        "after the stall, {user}'s tab got {rest:?}"
    );
}

/// A's command connection answers slowly (its `PING` held for longer than the link between
/// Redis and A's pub/sub connection takes to carry several events, though within the command
/// timeout): a live event must not wait for that `PING`. Events published through node B while
/// it is outstanding reach A's tab at once, each once and in order, and the late answer does
/// not make A reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_live_event_does_not_wait_for_a_slow_ping() {
    if !redis_available() {
        return;
    }
    let (_redis, proxy, a, b) = a_behind_a_split_proxy(|settings| {
        settings.ping_interval = Duration::from_millis(50);
    })
    .await;
    let alice = UserId::from("alice");
    let mut tab = a.hub.subscribe_async(&alice, None).await.unwrap();

    // The next PING on the command connection waits for its answer until the test is done.
    let before = hold_next(&proxy, 0);
    wait_sent(&proxy, 0, before).await;
    each_delivered_at_once(&b, "alice", 1..=3, &mut tab, "a PING's answer").await;
    proxy.pass(0);

    rest_in_order(&b, "alice", &mut tab, 4).await;
    let health = a.backplane.health();
    assert!(
        health.connected && health.reconnects == 0,
        "a PING answered within the command timeout made A reconnect: {health:?}"
    );
}

/// A new user's feed is subscribed through a slow link (A's `SUBSCRIBE` held for longer than
/// the link from Redis takes to carry several events, though within the timeouts): the users A
/// already listens to must not wait for it. Their events, published through node B meanwhile,
/// reach A's tab at once, each once and in order; the new user's subscribe completes once the
/// `SUBSCRIBE` is answered, and A does not reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_live_event_does_not_wait_for_another_feeds_slow_subscribe() {
    if !redis_available() {
        return;
    }
    let (_redis, proxy, a, b) = a_behind_a_split_proxy(|settings| {
        settings.subscribe_timeout = SLOW_LINK_TIMEOUT;
        // No PING while the SUBSCRIBE waits: the round trip is the SUBSCRIBE's alone.
        settings.ping_interval = Duration::from_secs(60);
    })
    .await;
    let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));
    let mut alices = a.hub.subscribe_async(&alice, None).await.unwrap();

    // Bob connects: A sends the SUBSCRIBE to his feed on its pub/sub connection, which holds it.
    let before = hold_next(&proxy, 1);
    let bob_joins = {
        let hub = a.hub.clone();
        tokio::spawn(async move { hub.subscribe_async(&bob, None).await })
    };
    wait_sent(&proxy, 1, before).await;
    each_delivered_at_once(&b, "alice", 1..=3, &mut alices, "another feed's SUBSCRIBE").await;
    assert!(
        !bob_joins.is_finished(),
        "bob's subscribe did not wait for its SUBSCRIBE"
    );
    proxy.pass(1);

    let mut bobs = timeout(WAIT, bob_joins)
        .await
        .expect("bob's subscribe completes once the SUBSCRIBE is answered")
        .unwrap()
        .expect("bob subscribes");
    rest_in_order(&b, "alice", &mut alices, 4).await;
    rest_in_order(&b, "bob", &mut bobs, 1).await;
    let health = a.backplane.health();
    assert!(
        health.connected && health.reconnects == 0 && health.listening == 2,
        "{health:?}"
    );
}

/// `backplane_failures` counts every publish a dropped backplane abandoned, as its docs say,
/// including one Redis had already run: its answer was on the way back when the backplane went,
/// so node A cannot know, and counts it, while node B delivered it. The docs bound the count so
/// (it is no proof of a loss for such a publish).
#[test]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
fn a_publish_abandoned_after_redis_ran_it_is_counted_though_another_node_delivered_it() {
    use sse_hub::Broadcaster;
    use sse_hub::backplane::RedisBackplane;
    use std::sync::Arc;
    if !redis_available() {
        return;
    }
    let runtime = |workers| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap()
    };
    let (main, a_runtime) = (runtime(2), runtime(1));
    let alice = UserId::from("alice");
    let (redis, proxy, b, mut tab) = main.block_on(async {
        let redis = RedisServer::start().await;
        let proxy = SplitProxy::start(redis.addr()).await;
        let b = node(redis.url()).await;
        let tab = b.hub.subscribe_async(&alice, None).await.unwrap();
        (redis, proxy, b, tab)
    });
    // A's tasks run on their own runtime, so that dropping it drops them as a process exit does.
    let a: support::Hub = a_runtime.block_on(async {
        let backplane = RedisBackplane::new(settings(proxy.url())).unwrap();
        assert!(backplane.wait_connected(WAIT).await);
        Broadcaster::with_backplane(Config::default(), Arc::new(backplane))
    });
    assert_eq!(
        proxy.accepted(),
        2,
        "one command and one pub/sub connection"
    );
    // Redis's answers on A's command connection are held: A's publish runs, A never hears.
    proxy.hold_receive(0);
    a.broadcast(&alice, &json!({ "n": 1 })).unwrap();
    let delivered = main.block_on(async { timeout(WAIT, tab.next()).await });
    let frame = delivered.expect("B delivers the event").expect("a frame");
    assert_eq!(n_of(&frame), Some(1));
    drop(a_runtime);
    assert_eq!(
        a.stats().backplane_failures,
        1,
        "the abandoned publish is counted, though Redis ran it"
    );
    main.block_on(async move {
        drop((tab, b, proxy, redis));
    });
}
