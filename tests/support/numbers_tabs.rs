//! Tabs on alice's thread of `{"n": …}` events ([`numbers_config`]), as the Redis follow-up
//! tests open and follow them (`redis_loss_followups`, `redis_thread_known`): publishing the
//! numbers, a tab's opening as its numbers, the waits on it, and the scene of a node that knows
//! the thread without its exact state, its feed held in a [`SplitProxy`].

#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_hub::{Config, FrameKind, Subscription};
use tokio::time::timeout;

use crate::split_proxy::SplitProxy;
use crate::support::{Node, WAIT, settings};
use crate::thread_runs::{alice, numbers_config, thread};

/// Settings of a node whose feed the test holds in a [`SplitProxy`]: it checks its link only
/// every minute (a check's `PING` on the held feed would time out and reconnect, which is not
/// the fault under test), with a long command timeout.
pub fn lagging_settings(url: String) -> sse_hub::backplane::RedisConfig {
    let mut settings = settings(url);
    settings.command_timeout = Duration::from_secs(8);
    settings.ping_interval = Duration::from_secs(60);
    settings
}

pub async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let waited = timeout(WAIT, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}");
}

/// The numbers of the `{"n": …}` data lines of a frame.
pub fn numbers(bytes: &[u8]) -> Vec<u64> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok()?["n"].as_u64())
        .collect()
}

pub async fn publish(node: &Node, range: std::ops::Range<u64>) {
    for n in range {
        node.publish_in_thread(&alice(), &thread(), &json!({ "n": n }))
            .await;
    }
}

/// A tab on alice's thread on `node`, as a client that comes back when its stream ends before
/// it opened: its opening (the numbers) once one is taken, and the tab.
pub async fn open_tab(node: &Node) -> (Vec<u64>, Subscription<Value>) {
    timeout(WAIT, async {
        loop {
            let mut tab = node
                .hub
                .subscribe_in_thread(&alice(), &thread(), None)
                .unwrap();
            match tab.next().await {
                Some(frame) if frame.kind() == FrameKind::Opening => {
                    return (numbers(frame.bytes()), tab);
                }
                Some(frame) => panic!("a thread stream opens: {frame:?}"),
                // Ended before it opened (its syncs failed): the client comes back.
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("a tab opens")
}

/// Waits until a tab on `node` opens with the numbers `expected` (its feed delivered every
/// event published: a publish returns when Redis ran it, and reaches the feeds a moment later).
pub async fn wait_opens(node: &Node, expected: std::ops::Range<u64>) {
    let expected: Vec<u64> = expected.collect();
    let mut last = Vec::new();
    let opened = timeout(WAIT, async {
        loop {
            last = open_tab(node).await.0;
            if last == expected {
                break;
            }
            // A tab opens at once when the state is exact: poll, yielding to the timeout.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(opened.is_ok(), "opens with {expected:?}, not {last:?}");
}

/// Reads `tab` until it delivered `last`: the numbers it delivered.
pub async fn follow(tab: &mut Subscription<Value>, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        let frame = timeout(WAIT, tab.next())
            .await
            .expect("a frame in time")
            .expect("the stream goes on");
        seen.extend(numbers(frame.bytes()));
    }
    seen
}

/// A node of the same channel that folds no thread state: it only publishes.
pub fn publisher_config() -> Config {
    let mut config = numbers_config();
    config.threads.state = None;
    config
}

/// Node `b`'s feed through `proxy` (its connection 1) breaks once: it reconnects (command
/// connection 2, pub/sub 3) without an exact state of alice's thread, and its new feed is then
/// held.
pub async fn break_then_hold_feed(b: &Node, proxy: &SplitProxy) {
    let before = b.backplane.health().reconnects;
    proxy.cut(1);
    wait_until("B reconnected", async || {
        b.backplane.health().reconnects > before && b.backplane.is_connected()
    })
    .await;
    assert_eq!(proxy.accepted(), 4, "B's second link");
    proxy.hold_receive(3);
}

/// Node `b` serves alice through `proxy` (so it folds her thread), and folds the run 1 to 12
/// published through `publisher`; then its feed breaks once, so that it knows the thread
/// without its exact state, and its new feed (connection 3) is held.
pub async fn knows_thread_inexactly(publisher: &Node, b: &Node, proxy: &SplitProxy) {
    wait_until("B listens to alice", async || {
        b.backplane.health().listening >= 1
    })
    .await;
    publish(publisher, 1..13).await;
    wait_opens(b, 1..13).await;
    break_then_hold_feed(b, proxy).await;
}
