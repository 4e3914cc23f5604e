//! The AG-UI opening of a thread that Redis evicted and numbered from 1 again mid-run, read
//! back before any node put the run back, judged by the official client
//! (`tests/agui/judge.mjs`): what Redis holds then starts in the middle of the run, so a tab
//! opens with a `RUN_ERROR` (`code` `run_unknown`), and the client must accept the stream the
//! tab receives from there: not the rest of that run, which it would refuse after that
//! `RUN_ERROR`, but the thread's next run, whole.
//!
//! Needs `redis-server`, node and `tests/agui/node_modules`; skips with a message without
//! them, except under `CI=true`, where that is a failure. Waits are bounded.
#![cfg(feature = "redis")]

#[path = "support/backplane.rs"]
mod support;
#[path = "support/split_proxy.rs"]
mod split_proxy;
#[path = "support/thread_runs.rs"]
mod thread_runs;
#[path = "support/numbers_tabs.rs"]
mod numbers_tabs;
#[path = "support_agui/mod.rs"]
mod support_agui;

use serde_json::{Value, json};
use sse_hub::{FrameKind, Subscription};
use tokio::time::timeout;

use futures_util::StreamExt;
use numbers_tabs::{break_then_hold_feed, lagging_settings, publisher_config};
use split_proxy::SplitProxy;
use support::{Node, RedisServer, WAIT, redis_available, settings};
use support_agui::{Case, Run, check, frames, judge_available, token};
use thread_runs::{
    Published, alice, config, datas, evict_thread_keys, serve, thread, wait_received,
};

/// Alice's two runs in `thread-1`: the first streams an answer of 20 tokens (the thread's keys
/// are evicted at its 10th, `"evicted"`), the second's input holds the thread's messages.
fn two_runs() -> Run {
    let mut r = Run::new("thread-1");
    r.run_started("run-1", &[("u1", "What's the weather in Paris?")]);
    r.push(json!({"type": "STEP_STARTED", "stepName": "answer"}));
    r.text("a1", 20, &[(6, "feed held"), (10, "evicted")]);
    r.push(json!({"type": "STEP_FINISHED", "stepName": "answer"}));
    r.run_finished("run-1");
    r.cut("second run");
    let answer: String = (0..20).map(token).collect();
    r.push(
        json!({"type": "RUN_STARTED", "threadId": "thread-1", "runId": "run-2", "input": {
        "threadId": "thread-1", "runId": "run-2", "tools": [], "context": [], "state": {},
        "forwardedProps": {}, "messages": [
            {"id": "u1", "role": "user", "content": "What's the weather in Paris?"},
            {"id": "a1", "role": "assistant", "content": answer},
            {"id": "u2", "role": "user", "content": "And tomorrow?"}]}}),
    );
    r.text("a2", 6, &[]);
    r.run_finished("run-2");
    r
}

/// A tab on alice's thread on `node`: its first frame must be its opening, which is returned
/// with the tab.
async fn open_tab(node: &Node) -> (String, Subscription<Value>) {
    let mut tab = node
        .hub
        .subscribe_in_thread(&alice(), &thread(), None)
        .unwrap();
    let frame = timeout(WAIT, tab.next())
        .await
        .expect("opened in time")
        .expect("the stream opens");
    assert_eq!(frame.kind(), FrameKind::Opening, "a thread stream opens");
    (String::from_utf8(frame.bytes().to_vec()).unwrap(), tab)
}

/// What `tab` receives after `opening` until the second run finished: the connection's text.
async fn until_second_run_finished(
    name: &str,
    opening: String,
    mut tab: Subscription<Value>,
) -> String {
    let mut text = opening;
    loop {
        let frame = timeout(WAIT, tab.next())
            .await
            .unwrap_or_else(|_| panic!("the tab on {name}: no frame in time after {text}"))
            .unwrap_or_else(|| panic!("the tab on {name} ended after {text}"));
        text.push_str(std::str::from_utf8(frame.bytes()).unwrap());
        let second_finished = datas(&frame)
            .iter()
            .any(|e| e["type"] == "RUN_FINISHED" && e["runId"] == "run-2");
        if second_finished {
            return text;
        }
    }
}

/// The first event of a connection's text.
fn first_event(text: &str) -> Value {
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("an event");
    serde_json::from_str(data).unwrap()
}

/// Node P only publishes (it folds no thread state, so no node holds the run to put it back).
/// Node B serves alice, folds the first run up to its 6th token, then loses its exact state
/// (its feed breaks, and its new one is held). Redis evicts the thread's keys at the 10th
/// token, which is numbered 1 again; C is a node started after that. B's feed then brings what
/// it held, and a tab opens on each of B and C: each reads back what Redis holds, which starts
/// in the middle of the first run, so each opens with a `RUN_ERROR` `run_unknown`. B, which
/// folded the run before, counts that state unknown; C, which only read it back, does not.
/// Then the first run goes on to its end and
/// the second runs whole. The official client must accept both tabs' streams as they are, with
/// no error and no warning, and end with the messages of a client that saw both runs whole (the
/// second run's input holds the thread's messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn a_renumbered_thread_opens_with_run_unknown_and_the_client_accepts_what_follows() {
    if !redis_available() || !judge_available() {
        return;
    }
    let run = two_runs();
    let events: Vec<Value> = run
        .events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (held, evicted) = (run.at("feed held"), run.at("evicted"));
    let redis = RedisServer::start().await;
    let proxy = SplitProxy::start(redis.addr()).await;
    let p = Node::start(settings(redis.url()), publisher_config()).await;
    let b = Node::start(lagging_settings(proxy.url()), config()).await;
    let _plain = serve(&b, &alice()).await;
    let published = Published::new(events);
    published.publish(&p, 0..held).await;
    published.wait_folded_on(&[&b]).await;
    break_then_hold_feed(&b, &proxy).await;
    published.publish(&p, held..evicted).await;
    evict_thread_keys(&redis).await;
    published.publish(&p, evicted..evicted + 1).await;

    let c = Node::start(settings(redis.url()), config()).await;
    let before = b.backplane.health().received;
    proxy.pass(3);
    wait_received(
        &b,
        before,
        (evicted + 1 - held) as u64,
        "B's feed caught up",
    )
    .await;
    let mut tabs = Vec::new();
    for (name, node) in [("B", &b), ("C", &c)] {
        let (opening, tab) = open_tab(node).await;
        let first = first_event(&opening);
        assert_eq!(
            (first["type"].as_str(), first["code"].as_str()),
            (Some("RUN_ERROR"), Some("run_unknown")),
            "the tab on {name} is told the run cannot be rebuilt: {opening}"
        );
        tabs.push((name, opening, tab));
    }
    assert_eq!(
        b.hub.stats().thread_states_unknown,
        1,
        "B folded the run before: counted"
    );
    published
        .publish(&p, evicted + 1..published.events.len())
        .await;

    let mut cases = Vec::new();
    for (name, opening, tab) in tabs {
        cases.push(Case {
            name: format!("tab opened on {name} after the thread was renumbered"),
            connections: vec![until_second_run_finished(name, opening, tab).await],
            reference: 0,
        });
    }
    check(vec![vec![frames(&run.events)]], &cases);
    assert_eq!(b.hub.stats().thread_states_unknown, 1, "once");
    assert_eq!(
        c.hub.stats().thread_states_unknown,
        0,
        "C read the thread back: counted by a node that folds the run's event from its feed"
    );
    for node in [&p, &b, &c] {
        node.backplane.close().await;
    }
}
