//! The Redis backplane's connection task dispatches the live feed while one of its own round
//! trips is in flight (a `SUBSCRIBE` of users who just connected, a link check), and the node's
//! streams catch up concurrently: checked here with real SSE clients, against a real
//! `redis-server` on loopback, each fault injected by a proxy that holds, slows or black-holes
//! one of the node's two connections. Every client must get each event once, in order, from
//! its start on; and no stream of users who keep connecting may keep the node from checking
//! its link or from serving again after a reconnect, nor may a link check waiting on the
//! command connection hold off a new user's `SUBSCRIBE` on the pub/sub one. Every wait is
//! bounded. Skips (printing so) without `redis-server`, except under `CI=true`.
#![cfg(feature = "redis")]

use std::time::Duration;

use sse_hub::backplane::{Backplane, RedisConfig};
use sse_hub::{Config, UserId};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/split_proxy.rs"]
mod split_proxy;

use split_proxy::{SLOW, SplitProxy, hold_next, node_behind_split_proxy, wait_sent};
use support::{
    EsClient, Node, RedisServer, Seen, WAIT, listening_client, redis_available, settings,
};

/// The longest `retry:` the test clients wait before they reconnect.
const RETRY: Duration = Duration::from_millis(100);

/// A Redis; node A reaching it through a [`SplitProxy`] (its command connection first, then its
/// pub/sub one), with `tune`'s settings, serving SSE; node B reaching it directly.
async fn a_behind_a_split_proxy(
    tune: impl FnOnce(&mut RedisConfig),
) -> (RedisServer, SplitProxy, Node, Node) {
    let redis = RedisServer::start().await;
    let (proxy, a) = node_behind_split_proxy(
        &redis,
        |url| {
            let mut a_settings = settings(url);
            tune(&mut a_settings);
            a_settings
        },
        Config::default(),
    )
    .await;
    let a = a.serve().await;
    let b = Node::start(settings(redis.url()), Config::default()).await;
    (redis, proxy, a, b)
}

/// Round trips that wait on a held connection for as long as a test holds them (up to 8 s)
/// rather than fail, and no link check: the round trips on A's connections are the test's.
fn held_round_trips(settings: &mut RedisConfig) {
    settings.command_timeout = Duration::from_secs(8);
    settings.subscribe_timeout = Duration::from_secs(8);
    settings.ping_interval = Duration::from_secs(60);
}

/// Waits (bounded) until `node` holds `n` open streams.
async fn wait_connections(node: &Node, n: usize) {
    let joined = timeout(WAIT, async {
        while node.hub.stats().connections != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(joined.is_ok(), "{:?}", node.hub.stats());
}

/// The numbers of the events `client` saw, on one stream: each with an id, and no loss
/// signalled, no end, no reconnect.
fn events(client: &EsClient) -> Vec<u64> {
    let seen = client.seen();
    assert!(
        seen[1..]
            .iter()
            .all(|s| matches!(s, Seen::Event { id: Some(_), .. })),
        "a loss, an end or an event without an id: {seen:?}"
    );
    client.numbers()
}

/// New users connecting to `node`, one every 2 ms (several per round trip of a [`SLOW`]
/// link), until the task is aborted.
fn keep_users_connecting(node: &Node) -> tokio::task::JoinHandle<()> {
    let hub = node.hub.clone();
    tokio::spawn(async move {
        let mut streams = Vec::new();
        for i in 0.. {
            streams.push(hub.subscribe(&UserId::from(format!("user-{i}"))));
            tokio::time::sleep(SLOW / 12).await;
        }
    })
}

/// Events published while a stream's catch-up read waits for its answer are dispatched live,
/// to the user's channel, before that read runs: the stream must take each of them once,
/// from the read or from the feed, never both, never neither. A's command connection holds
/// the reads of two new streams of alice's (one resuming from event 1, one fresh) while B
/// publishes events 3 to 5, which alice's first stream gets at once; then the reads run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_live_event_that_comes_while_its_users_catch_up_read_waits_reaches_each_stream_once() {
    if !redis_available() {
        return;
    }
    let (redis, proxy, a, b) = a_behind_a_split_proxy(held_round_trips).await;
    let first = listening_client(&redis, &a, "alice").await;
    let id1 = b.publish_stored("alice", 1).await;
    b.publish_stored("alice", 2).await;
    assert!(first.wait_for_event(WAIT, 2).await, "{:?}", first.seen());

    // The next catch-up reads wait for their answers until the test lets them through.
    let before = hold_next(&proxy, 0);
    let resuming = EsClient::spawn(a.url("alice"), Some(id1.to_string()), RETRY);
    wait_sent(&proxy, 0, before).await;
    let fresh = EsClient::spawn(a.url("alice"), None, RETRY);
    wait_connections(&a, 3).await;

    let mut last = id1;
    for n in 3..=5 {
        last = b.publish_stored("alice", n).await;
    }
    assert!(
        first.wait_for_event(WAIT, 5).await,
        "alice's events waited for another stream's read: {:?}",
        first.seen()
    );
    assert!(resuming.numbers().is_empty() && fresh.last_id().is_none());
    proxy.pass(0);

    assert!(fresh.wait_primed(WAIT).await, "{:?}", fresh.seen());
    assert_eq!(
        fresh.last_id(),
        Some(last.to_string()),
        "the fresh stream starts where its read found the history"
    );
    b.publish_stored("alice", 6).await;
    for client in [&first, &resuming, &fresh] {
        assert!(client.wait_for_event(WAIT, 6).await, "{:?}", client.seen());
    }
    assert_eq!(events(&first), [1, 2, 3, 4, 5, 6]);
    assert_eq!(events(&resuming), [2, 3, 4, 5, 6], "resumed from event 1");
    assert_eq!(events(&fresh), [6], "fresh, after event 5");
}

/// A user's channel goes and comes back while the node's `SUBSCRIBE` to the user's feed waits
/// for its answer (the user's last tab closed, the channel's retention ran out, a tab came
/// back). The round trip's answer must leave the node listening to the user, and saying so,
/// and the user's stream must get every event published once it is primed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_user_who_leaves_and_comes_back_while_the_subscribe_waits_is_listened_to() {
    if !redis_available() {
        return;
    }
    let (_redis, proxy, a, b) = a_behind_a_split_proxy(held_round_trips).await;
    let bob = UserId::from("bob");
    // B serves bob too, so that his history exists whoever listens.
    let _on_b = b.hub.subscribe_async(&bob, None).await.unwrap();

    let before = hold_next(&proxy, 1);
    let client = EsClient::spawn(a.url("bob"), None, RETRY);
    wait_sent(&proxy, 1, before).await;
    // What A's broadcaster tells its backplane when bob's channel is removed, then created
    // again, here while the SUBSCRIBE waits.
    let backplane: &dyn Backplane = &a.backplane;
    backplane.channel_removed("events", &bob);
    backplane.channel_created("events", &bob);
    proxy.pass(1);

    assert!(client.wait_primed(WAIT).await, "{:?}", client.seen());
    for n in 1..=3 {
        b.publish_stored("bob", n).await;
    }
    assert!(client.wait_for_event(WAIT, 3).await, "{:?}", client.seen());
    assert_eq!(events(&client), [1, 2, 3]);
    let health = a.backplane.health();
    assert!(
        health.connected && health.listening == health.serving && health.reconnects == 0,
        "{health:?}"
    );
}

/// Node A's pub/sub connection breaks while its `SUBSCRIBE` to a new user's feed (bob's) waits
/// for its answer: the round trip dies with the connection, and A reconnects. Alice's stream,
/// live all along, ends and resumes; bob's, still catching up, completes on the new link. Each
/// gets every event from its start on, once, in order, those published while A did not listen
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_reconnect_while_a_subscribe_waits_leaves_no_gap_and_no_duplicate() {
    if !redis_available() {
        return;
    }
    let (redis, proxy, a, b) = a_behind_a_split_proxy(held_round_trips).await;
    let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));
    // B serves both, so that every event is stored whoever listens.
    let _alice_on_b = b.hub.subscribe_async(&alice, None).await.unwrap();
    let _bob_on_b = b.hub.subscribe_async(&bob, None).await.unwrap();
    let alices = listening_client(&redis, &a, "alice").await;
    b.publish_stored("alice", 1).await;
    assert!(alices.wait_for_event(WAIT, 1).await, "{:?}", alices.seen());

    let before = hold_next(&proxy, 1);
    let bobs = EsClient::spawn(a.url("bob"), None, RETRY);
    wait_sent(&proxy, 1, before).await;
    b.publish_stored("alice", 2).await;
    b.publish_stored("bob", 1).await;
    assert!(alices.wait_for_event(WAIT, 2).await, "{:?}", alices.seen());
    proxy.cut(1);
    b.publish_stored("alice", 3).await;
    b.publish_stored("bob", 2).await;
    a.wait_reconnected().await;

    assert!(bobs.wait_primed(WAIT).await, "{:?}", bobs.seen());
    b.publish_stored("alice", 4).await;
    b.publish_stored("bob", 3).await;
    assert!(alices.wait_for_event(WAIT, 4).await, "{:?}", alices.seen());
    assert!(bobs.wait_for_event(WAIT, 3).await, "{:?}", bobs.seen());
    assert_eq!(alices.numbers(), [1, 2, 3, 4], "{:?}", alices.seen());
    // Bob's stream starts where its read found his history, on the old link or the new one:
    // from there on, every event, once.
    let bobs_numbers = bobs.numbers();
    assert!(
        [&[1, 2, 3][..], &[2, 3], &[3]].contains(&bobs_numbers.as_slice()),
        "{:?}",
        bobs.seen()
    );
    for client in [&alices, &bobs] {
        assert!(
            !client
                .seen()
                .iter()
                .any(|s| matches!(s, Seen::Reset(_) | Seen::Lagged(_))),
            "{:?}",
            client.seen()
        );
    }
    assert_eq!(a.backplane.health().reconnects, 1);
}

/// Users keep connecting to node A (several per `SUBSCRIBE` round trip of its slow pub/sub
/// link) when its command connection goes silently dead. Its link checks must still run: the
/// node replaces the dead connection within about `ping_interval + command_timeout`, not once
/// users stop connecting. Meanwhile, and after, alice's stream gets every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_dead_command_connection_is_replaced_while_users_keep_connecting() {
    if !redis_available() {
        return;
    }
    let (redis, proxy, a, b) = a_behind_a_split_proxy(|settings| {
        settings.command_timeout = Duration::from_millis(300);
        settings.ping_interval = Duration::from_millis(100);
    })
    .await;
    let alice = listening_client(&redis, &a, "alice").await;
    b.publish_stored("alice", 1).await;

    // Every SUBSCRIBE takes SLOW at least, and new users connect meanwhile.
    proxy.slow(1);
    let churn = keep_users_connecting(&a);
    // Let the users' SUBSCRIBEs follow each other, then the command connection dies.
    tokio::time::sleep(SLOW * 4).await;
    proxy.black_hole(0);
    b.publish_stored("alice", 2).await;

    let replaced = timeout(WAIT, async {
        while a.backplane.health().reconnects == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let health = a.backplane.health();
    churn.abort();
    assert!(
        replaced.is_ok(),
        "the dead command connection was not replaced within {WAIT:?} while users kept \
         connecting (ping_interval 100 ms, command_timeout 300 ms): {health:?}"
    );
    a.wait_connected(true).await;
    for n in 3..=4 {
        a.publish_stored("alice", n).await;
    }
    assert!(alice.wait_for_event(WAIT, 4).await, "{:?}", alice.seen());
    let numbers = alice.numbers();
    assert_eq!(numbers, [1, 2, 3, 4], "{:?}", alice.seen());
}

/// Node A's pub/sub connection breaks while users keep connecting, and the new connections are
/// slow: after a reconnect, A subscribes again to the users it served, and holds the live
/// feed back meanwhile (its streams, which missed what was published while A did not listen,
/// must end before any newer event reaches them). That must end once those users are
/// subscribed, not once users stop connecting: else A stays disconnected, with every new
/// stream degraded and the feed's messages piling up, unbounded, in the connection's buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_reconnect_subscribes_again_while_users_keep_connecting() {
    if !redis_available() {
        return;
    }
    let (redis, proxy, a, b) = a_behind_a_split_proxy(|_| {}).await;
    let alice = listening_client(&redis, &a, "alice").await;
    b.publish_stored("alice", 1).await;
    assert!(alice.wait_for_event(WAIT, 1).await, "{:?}", alice.seen());

    let churn = keep_users_connecting(&a);
    tokio::time::sleep(SLOW * 4).await;
    proxy.slow_new();
    proxy.cut(1);
    let reconnected = timeout(WAIT, async {
        let health = || a.backplane.health();
        while health().reconnects == 0 || !health().connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let health = a.backplane.health();
    churn.abort();
    assert!(
        reconnected.is_ok(),
        "A did not serve within {WAIT:?} of its reconnect while users kept connecting: {health:?}"
    );
    for n in 2..=3 {
        b.publish_stored("alice", n).await;
    }
    assert!(alice.wait_for_event(WAIT, 3).await, "{:?}", alice.seen());
    assert_eq!(alice.numbers(), [1, 2, 3], "{:?}", alice.seen());
}

/// A user connects to node A while a link check waits for its answer on A's command
/// connection, which Redis is slow to give (held longer than the subscribe timeout, within the
/// command timeout). The user's `SUBSCRIBE` goes on the pub/sub connection, which is fine: it
/// must not wait for the check. The stream's catch-up read then waits on the command
/// connection, within its timeout, and the stream opens as documented for a subscribe that
/// caught up: primed with the history's last id, then every event, not degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_new_users_subscribe_does_not_wait_for_a_link_check_on_the_command_connection() {
    if !redis_available() {
        return;
    }
    let (_redis, proxy, a, b) = a_behind_a_split_proxy(|settings| {
        settings.subscribe_timeout = Duration::from_millis(500);
        settings.command_timeout = Duration::from_secs(5);
        settings.ping_interval = Duration::from_millis(100);
    })
    .await;
    let bob = UserId::from("bob");
    // B serves bob too, so that his history exists whoever listens.
    let _on_b = b.hub.subscribe_async(&bob, None).await.unwrap();
    let last = b.publish_stored("bob", 1).await;

    // Redis's answers on A's command connection are held from now on. A link check is sent
    // every 100 ms, one at a time, so after three intervals one waits for its answer (sent
    // before the hold and not answered yet, or sent since).
    proxy.hold_receive(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = EsClient::spawn(a.url("bob"), None, RETRY);
    // Longer than the subscribe timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.pass(0);

    assert!(client.wait_primed(WAIT).await, "{:?}", client.seen());
    assert_eq!(
        client.last_id(),
        Some(last.to_string()),
        "the stream is not primed with the history's last id (0-0: served degraded): {:?}",
        client.seen()
    );
    b.publish_stored("bob", 2).await;
    assert!(client.wait_for_event(WAIT, 2).await, "{:?}", client.seen());
    assert_eq!(events(&client), [2], "{:?}", client.seen());
    let health = a.backplane.health();
    assert!(
        health.connected && health.reconnects == 0 && health.listening == health.serving,
        "{health:?}"
    );
}
