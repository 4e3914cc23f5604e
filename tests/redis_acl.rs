//! A Redis user scoped by ACL (its pub/sub channels listed) that refuses a node's `SUBSCRIBE`
//! to one user's feed: that user's streams are served degraded, saying so in-band, and the
//! node's health reports it; the node's link stays up, and its other users get every event of
//! the other node, once, in order, after a reconnect too; the refused user is asked again with
//! backoff, and served once Redis accepts; a publish to that user from that node stores
//! nothing. Real `redis-server` (7.0 or later: it refuses a
//! `SUBSCRIBE` of several channels as a whole), real SSE clients on loopback, every wait
//! bounded. Skips (printing so) without `redis-server`, except under `CI=true`.
#![cfg(feature = "redis")]

use std::time::Duration;

use sse_hub::{Config, UserId};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;
#[path = "support/split_proxy.rs"]
mod split_proxy;

use split_proxy::{hold_next, node_behind_split_proxy, wait_sent};
use support::{EsClient, Node, RedisServer, Seen, WAIT, redis_available, settings};

/// The longest `retry:` the test clients wait before they reconnect.
const RETRY: Duration = Duration::from_millis(100);

/// The feed (pub/sub channel) of `user` on the test nodes' `events` channel.
fn feed(user: &str) -> String {
    format!("sse-hub:live:events:{user}")
}

/// Lets the Redis user `node` (password `secret`) use every key and command, and, of the
/// pub/sub channels, the generation marker's and the feeds of `users` only.
async fn scope_node_user(redis: &RedisServer, users: &[&str]) {
    let mut admin = redis.connection().await;
    let mut acl = redis::cmd("ACL");
    acl.arg(&["SETUSER", "node", "on", ">secret", "~*", "+@all"])
        .arg("resetchannels")
        .arg("&sse-hub:generation");
    for user in users {
        acl.arg(format!("&{}", feed(user)));
    }
    acl.query_async::<()>(&mut admin)
        .await
        .expect("ACL SETUSER");
}

/// `url` (a `redis://host:port/` URL) as the Redis user `node`.
fn as_node_user(url: &str) -> String {
    url.replacen("redis://", "redis://node:secret@", 1)
}

/// How many `SUBSCRIBE`s Redis refused so far (`INFO commandstats`).
async fn subscribes_refused(redis: &RedisServer) -> u64 {
    let mut admin = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_subscribe:"))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|field| field.strip_prefix("rejected_calls="))
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until `ready` holds of `node`'s health; fails with `what` and the health.
async fn wait_health(
    node: &Node,
    what: &str,
    ready: impl Fn(&sse_hub::backplane::BackplaneHealth) -> bool,
) {
    let waited = timeout(WAIT, async {
        while !ready(&node.backplane.health()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: {:?}", node.backplane.health());
}

/// Whether `seen` holds no loss signalled and no event without an id.
fn no_loss(seen: &[Seen]) -> bool {
    !seen.iter().any(|s| {
        matches!(
            s,
            Seen::Reset(_) | Seen::Lagged(_) | Seen::Event { id: None, .. }
        )
    })
}

/// Node B's Redis user may listen to alice and bob, not to mallory. B's `SUBSCRIBE` to bob's
/// and mallory's feeds goes in one batch (both users connect while the one for alice waits),
/// which Redis refuses as a whole; then B's pub/sub connection is cut, and its reconnect
/// subscribes all three at once. Every time, alice and bob must be served, and get every event
/// node A publishes, once, in order, with no loss signalled; mallory's stream opens degraded
/// (primed `0-0`: it came without an id), gets no event with an id, and stays open; B stays
/// connected and reports mallory refused. Once the ACL grants mallory's feed, B's next attempt
/// is accepted: mallory's stream ends, and her client resumes, told of what it missed with a
/// `reset`, then gets the new events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_user_redis_refuses_leaves_the_others_served_and_is_told_in_band() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    scope_node_user(&redis, &["alice", "bob"]).await;
    let a = Node::start(settings(redis.url()), Config::default()).await;
    // A serves every user, so that each event is stored whoever else listens.
    let mut on_a = Vec::new();
    for user in ["alice", "bob", "mallory"] {
        on_a.push(
            a.hub
                .subscribe_async(&UserId::from(user), None)
                .await
                .unwrap(),
        );
    }
    let (proxy, b) = node_behind_split_proxy(
        &redis,
        |url| settings(as_node_user(&url)),
        Config::default(),
    )
    .await;
    let b = b.serve().await;

    // Alice's SUBSCRIBE waits, so that bob's and mallory's go together after it.
    let before = hold_next(&proxy, 1);
    let alice = EsClient::spawn(b.url("alice"), None, RETRY);
    wait_sent(&proxy, 1, before).await;
    let bob = EsClient::spawn(b.url("bob"), None, RETRY);
    let mallory = EsClient::spawn(b.url("mallory"), None, RETRY);
    wait_health(&b, "B does not serve the three users", |h| h.serving == 3).await;
    proxy.pass(1);

    for client in [&alice, &bob] {
        assert!(client.wait_primed(WAIT).await, "{:?}", client.seen());
        assert_ne!(
            client.last_id().as_deref(),
            Some("0-0"),
            "{:?}",
            client.seen()
        );
    }
    assert!(
        mallory
            .wait_for(WAIT, |_| mallory.last_id().as_deref() == Some("0-0"))
            .await,
        "mallory's stream does not open degraded: {:?}",
        mallory.seen()
    );
    let health = b.backplane.health();
    assert!(
        health.connected
            && health.serving == 3
            && health.listening == 2
            && health.refused == 1
            && health.reconnects == 0,
        "{health:?}"
    );
    let error = health.last_error.as_deref().unwrap_or_default();
    assert!(
        error.to_ascii_lowercase().contains("noperm") && error.contains(&feed("mallory")),
        "{health:?}"
    );

    // Mallory's event goes first each time: had B dispatched it, it would be before the others.
    for n in 1..=3 {
        for user in ["mallory", "alice", "bob"] {
            a.publish_stored(user, n).await;
        }
    }
    for client in [&alice, &bob] {
        assert!(client.wait_for_event(WAIT, 3).await, "{:?}", client.seen());
    }

    // B's pub/sub connection is cut: its reconnect subscribes the three users in one batch.
    proxy.cut(1);
    a.publish_stored("alice", 4).await;
    b.wait_reconnected().await;
    wait_health(&b, "B's reconnect does not serve alice and bob", |h| {
        h.connected && h.listening == 2 && h.refused == 1
    })
    .await;
    for n in 4..=5 {
        for user in ["mallory", "alice", "bob"] {
            if (user, n) != ("alice", 4) {
                a.publish_stored(user, n).await;
            }
        }
    }
    for client in [&alice, &bob] {
        assert!(client.wait_for_event(WAIT, 5).await, "{:?}", client.seen());
        assert_eq!(client.numbers(), [1, 2, 3, 4, 5], "{:?}", client.seen());
        assert!(no_loss(&client.seen()), "{:?}", client.seen());
    }
    let seen = mallory.seen();
    assert!(
        seen.iter()
            .all(|s| matches!(s, Seen::Opened { .. } | Seen::Ended { .. })),
        "mallory's degraded stream got an event: {seen:?}"
    );

    // The ACL now grants mallory's feed: B's next attempt goes through.
    scope_node_user(&redis, &["alice", "bob", "mallory"]).await;
    wait_health(&b, "B does not listen to mallory", |h| {
        h.refused == 0 && h.listening == 3
    })
    .await;
    assert!(
        mallory
            .wait_for(WAIT, |seen| seen
                .iter()
                .any(|s| matches!(s, Seen::Reset(reason) if reason == "expired")))
            .await,
        "mallory's client is not told what it missed: {:?}",
        mallory.seen()
    );
    assert!(mallory.wait_primed(WAIT).await);
    a.publish_stored("mallory", 6).await;
    assert!(
        mallory.wait_for_event(WAIT, 6).await,
        "{:?}",
        mallory.seen()
    );
    assert_eq!(mallory.numbers(), [6], "{:?}", mallory.seen());
    assert!(
        mallory
            .seen()
            .iter()
            .all(|s| !matches!(s, Seen::Event { id: None, .. })),
        "{:?}",
        mallory.seen()
    );
}

/// Redis refuses the node's `SUBSCRIBE` to alice's feed (its Redis user may listen to the
/// generation marker's channel only). The node's link must stay up, and the node must ask
/// again with backoff, not in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_refused_subscribe_is_asked_again_with_backoff_on_a_link_that_stays_up() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    scope_node_user(&redis, &[]).await;
    let a = Node::start(settings(as_node_user(&redis.url())), Config::default()).await;
    let _tab = a.hub.subscribe(&UserId::from("alice"));
    wait_health(&a, "the SUBSCRIBE is not refused", |h| h.refused == 1).await;
    let refused = subscribes_refused(&redis).await;

    // Backoff from 20 ms, doubling up to 200 ms, at the link checks (every 100 ms): under ten
    // more attempts in a second.
    let window = Duration::from_secs(1);
    tokio::time::sleep(window).await;
    let attempts = subscribes_refused(&redis).await - refused;
    let health = a.backplane.health();
    assert!(
        (1..=15).contains(&attempts),
        "{attempts} SUBSCRIBEs refused in {window:?}: {health:?}"
    );
    assert!(
        health.connected && health.reconnects == 0 && health.refused == 1,
        "{health:?}"
    );
}

/// Node B's Redis user may not use mallory's feed, so B's publish to mallory cannot go
/// through: B's caller is told it failed (and B's own streams get the event without an id,
/// as for any publish that surely did not reach Redis). Then it must not be in mallory's
/// history either: a client of node A's (whose Redis user may) that resumes from before it
/// must not get it, with an id, from the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_publish_redis_refuses_to_announce_is_not_stored() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    scope_node_user(&redis, &["alice"]).await;
    let a = Node::start(settings(redis.url()), Config::default())
        .await
        .serve()
        .await;
    let b = Node::start(settings(as_node_user(&redis.url())), Config::default()).await;
    let first = EsClient::spawn(a.url("mallory"), None, RETRY);
    assert!(first.wait_primed(WAIT).await, "{:?}", first.seen());
    let start = first.last_id().expect("primed");

    let refused = b.publish("mallory", 1).await;
    assert!(
        matches!(refused, Err(sse_hub::PublishError::Backplane(_))),
        "{refused:?}"
    );
    a.publish_stored("mallory", 2).await;
    assert!(first.wait_for_event(WAIT, 2).await, "{:?}", first.seen());
    let resumed = EsClient::spawn(a.url("mallory"), Some(start), RETRY);
    assert!(
        resumed.wait_for_event(WAIT, 2).await,
        "{:?}",
        resumed.seen()
    );
    assert_eq!(
        resumed.numbers(),
        [2],
        "a publish its caller was told failed is in the history: {:?}",
        resumed.seen()
    );
    assert_eq!(first.numbers(), [2], "{:?}", first.seen());
}
