//! AG-UI runs across nodes, judged by the official client.
//!
//! Two or three demo servers (`examples/server.rs`, feature `redis`) share one `redis-server`
//! through `REDIS_URL`, as nodes behind a load balancer do. Generated runs (`support_agui`'s
//! [`full_run`], then a second run in the same thread) are published event by event through
//! node A (`POST /events/agui/{user}?thread=`), and thread connections (`GET …?thread=`) are
//! opened on node B and on node A at many cut points: before the run, mid reasoning, mid text
//! message, mid tool call, between state deltas, between the runs…, by users B already serves
//! (B folds the thread from its feed) and by users B has never served (B reads the thread back
//! from Redis: a *sync*). Tabs drop and reconnect on the other node with the `Last-Event-ID`
//! the first node gave. Then backplane faults the library claims to survive (see the
//! `sse_hub::backplane` docs, *Faults* and *Threads*): node B's link to Redis cut mid-run and
//! restored (its streams end and the tabs reconnect), tabs joining B while its link is down or
//! paused, every node's feed cut at once, a node that starts mid-run, a slow link, a
//! disconnect through another node, Redis paused past the nodes' command timeout.
//!
//! Each connection is captured byte for byte ([`Conn`]) until it has received the run's last
//! event (its `id:` is the id `POST` answered for that event: ids are the shared history's, the
//! same on every node), and `tests/agui/judge.mjs` feeds every simulated client's connections
//! to `@ag-ui/client` 1.0.0 and 0.0.59: each must end with the `messages` and `state` of a
//! reference client that received the whole run in one connection, with no error and no
//! warning.
//!
//! Needs `redis-server`, node and `tests/agui/node_modules` (`cd tests/agui && npm ci`); skips
//! with a message without them, except under `CI=true`, where that is a failure. Waits are
//! bounded, and poll conditions with deadlines.
#![cfg(feature = "redis")]

mod support;
mod support_agui;

#[path = "support/backplane.rs"]
mod backplane;

#[path = "support_agui/nodes.rs"]
mod across_nodes;

use std::collections::HashMap;
use std::time::Duration;

use across_nodes::{DemoNode, ProxiedPair, WAIT, available};
use backplane::{Fault, RedisServer, id_key};
use futures_util::future::join_all;
use reqwest::StatusCode;
use sse_hub::run_state::ThreadRun;
use support::{client, post};
use support_agui::{Case, Conn, Run, check, frames, full_run};

// ----- the nodes --------------------------------------------------------------------------------

/// Publishes through a node and remembers, per user, the id of the last event published.
struct Publisher {
    client: reqwest::Client,
    last: HashMap<(String, String), String>,
}

impl Publisher {
    fn new() -> Self {
        Self {
            client: client(),
            last: HashMap::new(),
        }
    }

    /// Publishes `event` into `thread` of each of `users` through `node`, concurrently across
    /// users (each user's events stay in order): every publish must be accepted with an id.
    async fn publish(&mut self, node: &DemoNode, users: &[String], thread: &str, event: &str) {
        let posts = users.iter().map(|user| {
            let url = node.url(user, thread);
            let client = &self.client;
            async move {
                let reply = post(client, &url, event.as_bytes().to_vec()).await;
                assert_eq!(
                    reply.status,
                    StatusCode::ACCEPTED,
                    "POST {url} {event}: {}",
                    reply.text()
                );
                let id = reply.json()["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("POST {url}: no id in {}", reply.text()))
                    .to_owned();
                ((user.clone(), thread.to_owned()), id)
            }
        });
        for (key, id) in join_all(posts).await {
            self.last.insert(key, id);
        }
    }

    /// The id of the last event published into `thread` of `user`.
    fn last(&self, user: &str, thread: &str) -> Option<&str> {
        self.last
            .get(&(user.to_owned(), thread.to_owned()))
            .map(String::as_str)
    }
}

/// Waits (bounded) until `conn` has been given an id at or after `id`: it has received every
/// event published up to that one (its opening, or the live tail). Returns whether it did;
/// the judge then says what is wrong with what it received.
async fn wait_id(conn: &Conn, id: Option<&str>) -> bool {
    wait_id_unless(conn, id, false).await
}

/// [`wait_id`] that also returns (`false`) as soon as the stream ends.
async fn wait_id_or_end(conn: &Conn, id: Option<&str>) -> bool {
    wait_id_unless(conn, id, true).await
}

async fn wait_id_unless(conn: &Conn, id: Option<&str>, stop_at_end: bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = conn.last_id();
        match (id, got.as_deref()) {
            (None, Some(_)) => return true,
            (Some(want), Some(got)) if id_key(got) >= id_key(want) => return true,
            _ => {}
        }
        if stop_at_end && conn.ended() {
            return false;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("no id at or after {id:?} within {WAIT:?}: last id {got:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The run of every test: [`full_run`] with a `tokens`-token answer, then a second run in the
/// same thread whose input holds only the new user message.
fn two_runs(thread: &'static str, tokens: usize) -> Run {
    let mut r = full_run(thread, tokens);
    r.cut("between the runs");
    r.run_started("run-2", &[("u2", "And tomorrow?")]);
    r.cut("second run: after RUN_STARTED");
    r.text("a3", 30, &[(12, "second run: mid message")]);
    r.run_finished("run-2");
    r.cut("second run: finished");
    r.cuts.retain(|(name, _)| *name != "run finished");
    r
}

/// A simulated client: its connections so far, the one open now, and the case it becomes.
struct Client {
    name: String,
    user: String,
    done: Vec<String>,
    open: Option<Conn>,
    /// The `Last-Event-ID` of the connection it dropped, to reconnect with.
    last_id: Option<String>,
    /// The reference client it must end equal to.
    reference: usize,
    thread: &'static str,
}

impl Client {
    async fn connect(name: String, user: &str, node: &DemoNode, thread: &'static str) -> Self {
        let client = client();
        Self {
            name,
            user: user.to_owned(),
            done: Vec::new(),
            open: Some(Conn::open(&client, &node.url(user, thread), None).await),
            last_id: None,
            reference: 0,
            thread,
        }
    }

    /// Drops the open connection once it has received everything published so far,
    /// remembering the last id it gave.
    async fn drop_connection(&mut self, published: &Publisher) {
        let conn = self.open.take().expect("a connection is open");
        wait_id(&conn, published.last(&self.user, self.thread)).await;
        self.last_id = conn.last_id();
        self.done.push(conn.close());
    }

    /// Opens a connection on `node` with the `Last-Event-ID` the dropped one gave, as
    /// `EventSource` does.
    async fn reconnect(&mut self, node: &DemoNode, thread: &str) {
        let client = client();
        let url = node.url(&self.user, thread);
        self.open = Some(Conn::open(&client, &url, self.last_id.as_deref()).await);
    }

    /// Waits (bounded) until the open connection ended, as a node ends its streams when its
    /// feed was interrupted; then reconnects on `node` with the last id it gave. Returns
    /// whether it ended.
    async fn reconnect_when_ended(&mut self, node: &DemoNode, thread: &str) -> bool {
        let conn = self.open.take().expect("a connection is open");
        let deadline = tokio::time::Instant::now() + WAIT;
        while !conn.ended() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ended = conn.ended();
        self.last_id = conn.last_id();
        self.done.push(conn.close());
        self.reconnect(node, thread).await;
        ended
    }

    /// Follows the open connection as `EventSource` does until it has received the last event
    /// published: when it ends first, reconnects on `node` with its last id (bounded).
    async fn follow(&mut self, published: &Publisher, node: &DemoNode, thread: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            let conn = self.open.as_ref().expect("a connection is open");
            if !conn.ended() {
                if wait_id_or_end(conn, published.last(&self.user, self.thread)).await {
                    return;
                }
                continue;
            }
            let conn = self.open.take().expect("open");
            if conn.last_id().is_some() {
                self.last_id = conn.last_id();
            }
            self.done.push(conn.close());
            self.reconnect(node, thread).await;
        }
    }

    /// Reads the open connection until it has received the last event published, and closes
    /// it: the client's case. A connection that never received it is pushed to `short` (the
    /// judge may not see it: a missing `RUN_FINISHED` changes no message).
    async fn finish(mut self, published: &Publisher, short: &mut Vec<String>) -> Case {
        if let Some(conn) = self.open.take() {
            if !wait_id(&conn, published.last(&self.user, self.thread)).await {
                short.push(self.name.clone());
            }
            self.done.push(conn.close());
        }
        Case {
            name: self.name,
            connections: self.done,
            reference: self.reference,
        }
    }
}

/// Finishes every client and judges them against `events` whole; also fails if a client's
/// last connection did not receive the last event.
async fn judge_all(clients: Vec<Client>, published: &Publisher, events: &[String]) {
    judge_against(clients, published, &[events]).await;
}

/// [`judge_all`] with a reference per run: each client against its own.
async fn judge_against(clients: Vec<Client>, published: &Publisher, runs: &[&[String]]) {
    let mut short = Vec::new();
    let mut cases = Vec::new();
    for client in clients {
        cases.push(client.finish(published, &mut short).await);
    }
    check(
        runs.iter().map(|events| vec![frames(events)]).collect(),
        &cases,
    );
    assert!(
        short.is_empty(),
        "these clients never received the run's last event: {short:?}"
    );
}

/// Whether `events[..cut]` fold without a fault: the generated run is a valid one.
fn folds(events: &[String], cut: usize) -> bool {
    let mut t = ThreadRun::default();
    events[..cut].iter().all(|e| t.fold(e.as_bytes()).folded())
}

// ----- runs joined on every node -----------------------------------------------------------------

/// Two runs in one thread, published through A. At every cut, tabs of users both nodes serve
/// join on A and on B (both fold the thread from their feed); at chosen cuts a tab of a user
/// B has never served joins on B (B reads the thread back from Redis, with a 300-token answer
/// longer than the 256-event history, so from the thread's snapshot). Tabs drop and reconnect
/// on the other node with their `Last-Event-ID`: 20 tokens later, 250 tokens later, and from
/// mid reasoning to mid tool call on a node that never served the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn runs_published_on_one_node_open_the_same_on_every_node() {
    if !available() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = DemoNode::start("A", &redis.url());
    let b = DemoNode::start("B", &redis.url());
    let thread = "thread-x";
    let run = two_runs(thread, 300);
    let n = run.events.len();
    assert!(folds(&run.events, n));

    let late_cuts = [
        "mid reasoning",
        "mid message",
        "mid tool call",
        "between state deltas",
        "mid text chunk",
        "between the runs",
        "second run: mid message",
    ];
    let mut users: Vec<String> = vec!["early-1".into(), "early-2".into(), "hop".into()];
    users.extend(
        late_cuts
            .iter()
            .map(|cut| format!("late-{}", cut.replace([' ', ':'], "-"))),
    );

    let first_token = run.position("\"TEXT_MESSAGE_CONTENT\"");
    let dropped = first_token + 50;
    // (client, when it drops, when it reconnects, where to): with the other node's id.
    let mut clients: Vec<Client> = Vec::new();
    let reconnects = [
        (0, dropped, dropped + 20, &b),
        (1, dropped, dropped + 250, &a),
        (2, run.at("mid reasoning"), run.at("mid tool call"), &b),
    ];
    for (name, user, node) in [
        (
            "on A from the start, reconnects on B 20 tokens later",
            "early-1",
            &a,
        ),
        (
            "on B from the start, reconnects on A 250 tokens later",
            "early-2",
            &b,
        ),
        (
            "on A from the start, drops mid reasoning, reconnects mid tool call on B, which \
             never served the user",
            "hop",
            &a,
        ),
    ] {
        clients.push(Client::connect(name.into(), user, node, thread).await);
    }

    let mut published = Publisher::new();
    for i in 0..=n {
        for (k, &(name, cut)) in run.cuts.iter().enumerate() {
            if cut != i {
                continue;
            }
            let user = ["early-1", "early-2"][k % 2];
            for node in [&a, &b] {
                let name = format!("{user} joined {name} on {}", node.name);
                clients.push(Client::connect(name, user, node, thread).await);
            }
            if late_cuts.contains(&name) {
                let user = format!("late-{}", name.replace([' ', ':'], "-"));
                let name = format!("{user} joined {name} on B, which never served the user");
                clients.push(Client::connect(name, &user, &b, thread).await);
            }
        }
        for &(c, drop_at, reconnect_at, node) in &reconnects {
            if drop_at == i {
                clients[c].drop_connection(&published).await;
            }
            if reconnect_at == i {
                clients[c].reconnect(node, thread).await;
            }
        }
        if i < n {
            published.publish(&a, &users, thread, &run.events[i]).await;
        }
    }
    judge_all(clients, &published, &run.events).await;
}

// ----- faults -----------------------------------------------------------------------------------

/// Node B's link to Redis is cut mid message and held until mid tool call (B's feed misses
/// those events; it reconnects once the link is back, and ends its streams): B's tabs end, and
/// reconnect with their `Last-Event-ID`, on B and on A. A tab opened on B while its link is down
/// (for a user B never served) either opens whole once B is back or ends, and reconnects. Then,
/// mid way through the second run, every node's feed breaks at once (`CLIENT KILL TYPE
/// pubsub`): every tab, on A and on B, ends and reconnects on the other node. Every client
/// ends with the run as the reference client has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn tabs_of_a_node_whose_feed_was_cut_reopen_the_run_whole() {
    if !available() {
        return;
    }
    let ProxiedPair { redis, proxy, a, b } = ProxiedPair::demo_servers().await;
    let thread = "thread-cut";
    let run = two_runs(thread, 120);
    let n = run.events.len();
    let users: Vec<String> = vec!["carl".into(), "dana".into()];
    let (cut_at, restore_at) = (run.at("mid message"), run.at("mid tool call"));
    let all_cut_at = run.at("second run: mid message");

    let mut published = Publisher::new();
    let mut failures: Vec<String> = Vec::new();
    // Each client with the node it reconnects to after B's cut and after the cut of every
    // feed.
    let mut clients: Vec<(Client, [&DemoNode; 2])> = Vec::new();
    for (name, node, then) in [
        ("carl on B from the start", &b, [&b, &a]),
        ("carl on A from the start", &a, [&a, &b]),
    ] {
        clients.push((
            Client::connect(name.into(), "carl", node, thread).await,
            then,
        ));
    }
    for i in 0..=n {
        if i == run.at("mid reasoning") {
            let name = "carl joined mid reasoning on B";
            clients.push((
                Client::connect(name.into(), "carl", &b, thread).await,
                [&a, &b],
            ));
        }
        if i == cut_at {
            proxy.set(Fault::Hold);
            proxy.cut();
        }
        if i == cut_at + 10 {
            let name = "dana joined on B while its link was down (B never served dana)";
            clients.push((
                Client::connect(name.into(), "dana", &b, thread).await,
                [&b, &a],
            ));
            let name = "carl joined on B while its link was down";
            clients.push((
                Client::connect(name.into(), "carl", &b, thread).await,
                [&b, &a],
            ));
        }
        if i == cut_at + 20 {
            // A tab of A moves to B while B's link is still down.
            let (client, then) = &mut clients[1];
            client.drop_connection(&published).await;
            client.reconnect(&b, thread).await;
            client.name.push_str(", moved to B while B's link was down");
            *then = [&b, &a];
        }
        if i == restore_at {
            proxy.set(Fault::None);
            // B's tabs that were open through the cut end, and reconnect.
            for (client, then) in &mut clients {
                if client.user == "carl" {
                    if !client.reconnect_when_ended(then[0], thread).await {
                        failures.push(format!(
                            "{}: not ended after B's feed was back",
                            client.name
                        ));
                    }
                    client.name.push_str(&format!(
                        ", its feed cut mid message, reconnected on {}",
                        then[0].name
                    ));
                }
            }
            let name = "dana joined on B once its link was back";
            clients.push((
                Client::connect(name.into(), "dana", &b, thread).await,
                [&b, &a],
            ));
        }
        if i == all_cut_at {
            // Every tab is at the run's present, then every node's feed breaks at once.
            for (client, then) in &mut clients {
                client.follow(&published, then[0], thread).await;
            }
            assert!(
                redis.kill_pubsub_clients().await >= 2,
                "both nodes' feeds are cut"
            );
            for (client, then) in &mut clients {
                if !client.reconnect_when_ended(then[1], thread).await {
                    failures.push(format!(
                        "{}: not ended after every feed was cut",
                        client.name
                    ));
                }
                client.name.push_str(&format!(
                    ", every feed cut mid second message, reconnected on {}",
                    then[1].name
                ));
            }
        }
        if i < n {
            published.publish(&a, &users, thread, &run.events[i]).await;
        }
    }
    let mut finished = Vec::new();
    for (mut client, then) in clients {
        client.follow(&published, then[1], thread).await;
        finished.push(client);
    }
    judge_all(finished, &published, &run.events).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Node C starts mid-run (after the history no longer holds the run's start: a 300-token
/// answer), and tabs open on it, one of them a tab of node A reconnecting with A's id; node B's
/// link to Redis turns slow (40 ms each way) from mid reasoning to the tool result, and again
/// over the second run, while tabs join on B (for a user B serves, and for one it never
/// served: a read-back over the slow link). Every client ends with the run as the reference
/// client has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn a_node_started_mid_run_and_a_slow_link_open_the_run_whole() {
    if !available() {
        return;
    }
    let ProxiedPair { redis, proxy, a, b } = ProxiedPair::demo_servers().await;
    let thread = "thread-late";
    let run = two_runs(thread, 300);
    let n = run.events.len();
    let users: Vec<String> = ["erin", "fay", "gus", "hugo", "ivy"]
        .map(String::from)
        .to_vec();
    let slow = Fault::Latency(Duration::from_millis(40));
    let c_starts = run.position("\"TEXT_MESSAGE_CONTENT\"") + 280;

    let mut published = Publisher::new();
    let mut clients: Vec<Client> = Vec::new();
    for (name, node) in [
        ("erin on A from the start", &a),
        ("erin on B from the start", &b),
    ] {
        clients.push(Client::connect(name.into(), "erin", node, thread).await);
    }
    let mut c: Option<DemoNode> = None;
    let mut plain: Option<Conn> = None;
    for i in 0..=n {
        if i == run.at("mid reasoning") || i == run.at("between the runs") {
            proxy.set(slow);
        }
        if i == run.at("mid message") || i == run.at("second run: after RUN_STARTED") {
            for (name, user) in [
                ("erin joined on B over a slow link", "erin"),
                (
                    "fay joined on B over a slow link (B never served fay)",
                    "fay",
                ),
            ] {
                let name = format!("{name}, at {i}");
                clients.push(Client::connect(name, user, &b, thread).await);
            }
        }
        if i == run.at("before tool result") || i == run.at("second run: finished") {
            proxy.set(Fault::None);
        }
        if i == c_starts {
            let started = DemoNode::start("C", &redis.url());
            for (name, user) in [
                ("erin joined on C, started late in the message", "erin"),
                ("gus joined on C, started late in the message", "gus"),
            ] {
                clients.push(Client::connect(name.into(), user, &started, thread).await);
            }
            // C listens to hugo's feed from here on (a plain stream): the thread's frames,
            // which do not follow from anything C folded, make C read the thread back.
            plain = Some(Conn::open(&client(), &started.plain_url("hugo"), None).await);
            clients[0].drop_connection(&published).await;
            clients[0].reconnect(&started, thread).await;
            clients[0]
                .name
                .push_str(", reconnected on C, started late in the message");
            c = Some(started);
        }
        if i == run.at("between state deltas") {
            // B's link pauses (shorter than its timeouts) while tabs join on B.
            proxy.set(Fault::Hold);
            for (name, user) in [
                ("erin joined on B while its link paused", "erin"),
                (
                    "ivy joined on B while its link paused (B never served ivy)",
                    "ivy",
                ),
            ] {
                clients.push(Client::connect(name.into(), user, &b, thread).await);
            }
        }
        if i == run.at("mid tool chunk") {
            proxy.set(Fault::None);
        }
        if i == c_starts + 5 {
            let c = c.as_ref().expect("C started");
            let name = "hugo joined on C, which listened to hugo's feed since it started";
            clients.push(Client::connect(name.into(), "hugo", c, thread).await);
        }
        if i == run.at("mid tool call") {
            let c = c.as_ref().expect("C started");
            clients.push(
                Client::connect("gus joined on C mid tool call".into(), "gus", c, thread).await,
            );
        }
        if i < n {
            published.publish(&a, &users, thread, &run.events[i]).await;
        }
    }
    drop(plain);
    judge_all(clients, &published, &run.events).await;
}

/// Two runs at once on two threads of one user, published interleaved through A with the
/// user's plain (unthreaded) events in between. A third of the way in, the user is
/// disconnected through A (`DELETE`: every node ends the user's streams) and each tab
/// reconnects on the other node; two thirds in, Redis stops answering for longer than the
/// nodes' command timeout (a publish in flight, confirmed once it is back), and whatever tabs
/// that ends come back. Tabs of a user B never served join on B at a third and at two thirds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn concurrent_threads_survive_a_disconnect_and_a_redis_pause() {
    if !available() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = DemoNode::start("A", &redis.url());
    let b = DemoNode::start("B", &redis.url());
    let mut x = full_run("thread-x", 150);
    x.cuts.clear();
    let y = support_agui::other_thread_run();
    let runs = [&x, &y];
    let interleaved = support_agui::interleave(&x, &y);
    let (third, two_thirds) = (interleaved.len() / 3, 2 * interleaved.len() / 3);
    let users: Vec<String> = vec!["hal".into(), "ida".into()];
    let http = client();

    let mut published = Publisher::new();
    let mut clients: Vec<(Client, &DemoNode)> = Vec::new();
    let tab = async |name: String, user: &'static str, node: &DemoNode, which: usize| {
        let mut client = Client::connect(name, user, node, runs[which].thread).await;
        client.reference = which;
        client
    };
    for (which, node, other) in [(0, &a, &b), (0, &b, &a), (1, &b, &a), (1, &a, &b)] {
        let name = format!(
            "hal, {} on {} from the start",
            runs[which].thread, node.name
        );
        clients.push((tab(name, "hal", node, which).await, other));
    }
    for (k, &(r, e)) in interleaved.iter().enumerate() {
        if k == third || k == two_thirds {
            for which in [0, 1] {
                let name = format!("ida, {} joined on B at {k}", runs[which].thread);
                clients.push((tab(name, "ida", &b, which).await, &a));
            }
        }
        if k == third {
            for (client, _) in &mut clients {
                if client.user == "hal" {
                    client.follow(&published, &a, client.thread).await;
                }
            }
            let url = a.plain_url("hal");
            let reply = support::send(&http, reqwest::Method::DELETE, &url, None).await;
            assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
            for (client, other) in &mut clients {
                if client.user == "hal" {
                    let ended = client.reconnect_when_ended(other, client.thread).await;
                    assert!(ended, "{}: not ended by the disconnect", client.name);
                    client.name.push_str(&format!(
                        ", disconnected at {k}, reconnected on {}",
                        other.name
                    ));
                }
            }
        }
        if k == two_thirds {
            redis.stop();
            let publish = published.publish(&a, &users, runs[r].thread, &runs[r].events[e]);
            let resume = async {
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                redis.cont();
            };
            tokio::join!(publish, resume);
        } else {
            published
                .publish(&a, &users, runs[r].thread, &runs[r].events[e])
                .await;
        }
        if k % 5 == 0 {
            let plain =
                serde_json::json!({"type": "CUSTOM", "name": "note", "value": k}).to_string();
            for user in &users {
                let reply = post(&http, &a.plain_url(user), plain.clone().into_bytes()).await;
                assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
            }
        }
    }
    let mut finished = Vec::new();
    for (mut client, other) in clients {
        client.follow(&published, other, client.thread).await;
        finished.push(client);
    }
    judge_against(finished, &published, &[&x.events, &y.events]).await;
}
