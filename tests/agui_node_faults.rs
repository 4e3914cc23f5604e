//! The backplane fault paths of AG-UI runs that `tests/agui_nodes.rs` does not reach, judged by
//! the official client (`tests/agui/judge.mjs`, as there):
//!
//! * a thread rebuild that fails: a node reads a thread back (`Backplane::catch_up_thread`)
//!   while its link to Redis is paused, cut or too slow, or while a burst of events outruns
//!   its window; the stream must end with a `retry:` before any event is delivered, and the
//!   tab's reconnect must open the whole run;
//! * Redis paused (`SIGSTOP`) past the nodes' ping interval and command timeout: every stream
//!   ends with `retry:`, every tab that comes back opens the whole run, and the plain events
//!   arrive with no duplicate and no silent gap, whatever was published during the pause;
//! * publishing through a node whose link is down: refused (`PublishError::Backplane`, HTTP
//!   `503` with a JSON body through the demo) and delivered to that node's own tabs only,
//!   without an id, and not folded into the thread (see *Local only* in the backplane docs).
//!
//! The nodes are in-process `EventRouter`s with small `RedisConfig` timeouts (the demo server
//! takes none), served over HTTP as the demo serves them; the demo itself is used for its
//! `POST` answer. Needs `redis-server`, node and `tests/agui/node_modules`; skips with a
//! message without them, except under `CI=true`, where that is a failure. Waits are bounded,
//! and poll conditions with deadlines.
#![cfg(feature = "redis")]

mod support;
mod support_agui;

#[path = "support/backplane.rs"]
mod backplane;

#[path = "support_agui/nodes.rs"]
mod across_nodes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use across_nodes::{ProxiedPair, WAIT, available};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backplane::{Fault, FaultProxy, RedisServer};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sse_hub::backplane::{BackplaneError, RedisBackplane, RedisConfig};
use sse_hub::models::AgUiEvent;
use sse_hub::{
    Channel, Config, EventRouter, LastEventId, PublishError, ThreadId, ThreadQuery, UserId,
};
use support::{client, post};
use support_agui::{Case, Conn, check, frames, full_run};
use tokio::time::Instant;

/// Small timeouts, so that faults are noticed within a fraction of a second: a 300 ms command
/// and subscribe timeout, connections checked every 100 ms, quick reconnects, and publishes
/// retried for 1 s at most.
fn settings(url: String) -> RedisConfig {
    let mut s = RedisConfig::new(url);
    s.command_timeout = Duration::from_millis(300);
    s.subscribe_timeout = Duration::from_millis(300);
    s.ping_interval = Duration::from_millis(100);
    s.reconnect_min = Duration::from_millis(20);
    s.reconnect_max = Duration::from_millis(200);
    s.publish_retry = Duration::from_secs(1);
    s
}

/// Whether a publish was refused because the backplane is unreachable: it surely did not
/// reach Redis (not `Unknown`), so it went to the publishing node's tabs only.
fn refused<T>(result: &Result<T, PublishError>) -> bool {
    matches!(result, Err(PublishError::Backplane(e)) if *e != BackplaneError::Unknown)
}

/// Polls `done` every 5 ms until it holds or [`WAIT`] passed; returns whether it held.
async fn until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

// ----- in-process nodes -------------------------------------------------------------------------

/// A node: an `EventRouter` with its own Redis backplane, serving `GET /events/agui/{user}`
/// (with `?thread=`) as the demo does. Its server is aborted on drop.
struct AgNode {
    name: &'static str,
    router: EventRouter,
    backplane: RedisBackplane,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

async fn stream(
    State(router): State<EventRouter>,
    Path(user): Path<String>,
    ThreadQuery(thread): ThreadQuery,
    last_event_id: LastEventId,
) -> Response {
    let user = UserId::from(user);
    match thread {
        Some(thread) => {
            router.channel_response_in_thread(Channel::AgUi, &user, &thread, &last_event_id)
        }
        None => router.channel_response(Channel::AgUi, &user, &last_event_id),
    }
    .unwrap_or_else(IntoResponse::into_response)
}

impl AgNode {
    async fn start(name: &'static str, settings: RedisConfig) -> Self {
        Self::start_with(name, settings, Config::default()).await
    }

    async fn start_with(name: &'static str, settings: RedisConfig, config: Config) -> Self {
        let backplane = RedisBackplane::new(settings).expect("backplane");
        assert!(backplane.wait_connected(WAIT).await, "{name} connects");
        let router = EventRouter::with_backplane(config, Arc::new(backplane.clone()));
        let app = Router::new()
            .route("/events/agui/{user}", get(stream))
            .with_state(router.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            name,
            router,
            backplane,
            base,
            server,
        }
    }

    fn thread_url(&self, user: &str, thread: &str) -> String {
        format!("{}/events/agui/{user}?thread={thread}", self.base)
    }

    fn plain_url(&self, user: &str) -> String {
        format!("{}/events/agui/{user}", self.base)
    }

    /// A tab of `user`'s `thread` and one of their plain stream, opened now, each named after
    /// the node and `when`, and tagged with the node.
    async fn open_tabs(&self, user: &str, thread: &str, when: &str) -> [Tab; 2] {
        let name = format!("thread tab on {}{when}", self.name);
        let mut thread_tab = Tab::open(name, self.thread_url(user, thread), None).await;
        thread_tab.tag = self.name;
        let name = format!("plain tab on {}{when}", self.name);
        let mut plain_tab = Tab::open(name, self.plain_url(user), None).await;
        plain_tab.tag = self.name;
        [thread_tab, plain_tab]
    }

    /// Waits (bounded) until the node's backplane is connected again.
    async fn wait_reconnected(&self) {
        assert!(
            self.backplane.wait_connected(WAIT).await,
            "{} reconnects: {:?}",
            self.name,
            self.backplane.health()
        );
    }

    /// Publishes `event` (AG-UI JSON) into `thread` of `user`: the result of the library call.
    async fn publish_in_thread(
        &self,
        user: &str,
        thread: &str,
        event: &str,
    ) -> Result<String, PublishError> {
        let event: AgUiEvent = serde_json::from_str(event).expect("an AG-UI event");
        let thread = ThreadId::new(thread).unwrap();
        let routed = self
            .router
            .route_agui_in_thread_async(&UserId::from(user), &thread, &event)
            .await?;
        Ok(routed
            .get("agui")
            .and_then(|p| p.id)
            .expect("a thread's event is stored: an id")
            .to_string())
    }

    /// [`publish_in_thread`](Self::publish_in_thread), which must go through: its id.
    async fn publish_ok(&self, user: &str, thread: &str, event: &str) -> String {
        self.publish_in_thread(user, thread, event)
            .await
            .unwrap_or_else(|e| panic!("{}: publish {event}: {e}", self.name))
    }

    /// Publishes the plain (unthreaded) event `{"type":"CUSTOM","name":"n","value":n}`.
    async fn publish_plain(&self, user: &str, n: u64) -> Result<Option<String>, PublishError> {
        let event: AgUiEvent =
            serde_json::from_value(json!({"type": "CUSTOM", "name": "n", "value": n})).unwrap();
        let routed = self.router.route_async(&UserId::from(user), &event).await?;
        Ok(routed
            .get("agui")
            .and_then(|p| p.id)
            .map(|id| id.to_string()))
    }
}

impl ProxiedPair<AgNode> {
    /// The nodes as in-process routers, with the [`settings`] of these tests.
    async fn routers() -> Self {
        Self::start(async |name, url| AgNode::start(name, settings(url)).await).await
    }
}

impl Drop for AgNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ----- what a connection received ----------------------------------------------------------------

/// The frames of a captured stream, each as its lines.
fn frames_of(raw: &str) -> Vec<Vec<&str>> {
    raw.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| f.lines().collect())
        .collect()
}

/// The `data:` payloads of a captured stream, as JSON, each with its frame's `id:` if any.
fn datas(raw: &str) -> Vec<(Value, Option<String>)> {
    frames_of(raw)
        .into_iter()
        .filter_map(|lines| {
            let data = lines.iter().find_map(|l| l.strip_prefix("data: "))?;
            let id = lines
                .iter()
                .find_map(|l| l.strip_prefix("id: "))
                .map(str::to_owned);
            Some((serde_json::from_str(data).expect("JSON data"), id))
        })
        .collect()
}

/// Whether the stream's last frame is a `retry:` hint (the jittered one a node sends when it
/// ends a stream so that the client comes back).
fn ends_with_retry(raw: &str) -> bool {
    frames_of(raw)
        .last()
        .is_some_and(|f| f.len() == 1 && f[0].starts_with("retry: "))
}

/// Asserts that the stream `raw` (`name`) ended with a `retry:` before it delivered any event:
/// what a node that cannot rebuild a thread must do.
fn assert_ended_before_any_event(raw: &str, name: &str) {
    assert!(
        datas(raw).is_empty(),
        "{name}: events delivered before the end: {raw:?}"
    );
    assert!(
        ends_with_retry(raw),
        "{name}: no retry: at the end: {raw:?}"
    );
}

/// Waits until `conn` ended; returns its bytes.
async fn ended(conn: Conn, what: &str) -> String {
    let done = until(|| conn.ended()).await;
    let raw = conn.close();
    assert!(done, "{what}: the stream did not end; it received {raw:?}");
    raw
}

/// A tab as `EventSource` keeps it: its connections so far, the open one, and its URL (and a
/// tag: its user, or its node).
struct Tab {
    name: String,
    tag: &'static str,
    url: String,
    /// The last id it was given (or came with): its next `Last-Event-ID`.
    last_id: Option<String>,
    done: Vec<String>,
    open: Option<Conn>,
}

impl Tab {
    async fn open(name: String, url: String, last_event_id: Option<&str>) -> Self {
        let conn = Conn::open(&client(), &url, last_event_id).await;
        Self {
            name,
            tag: "",
            url,
            last_id: last_event_id.map(str::to_owned),
            done: Vec::new(),
            open: Some(conn),
        }
    }

    /// A tab whose connection is not open yet ([`reconnect`](Self::reconnect) opens it).
    fn open_later(name: String, url: String, last_id: Option<String>) -> Self {
        Self {
            name,
            tag: "",
            url,
            last_id,
            done: Vec::new(),
            open: None,
        }
    }

    /// A tab whose first connection ended (`raw`): it comes back, once
    /// [`reconnect`](Self::reconnect)ed, with the last id that connection gave.
    fn after_ended(name: String, url: String, raw: String) -> Self {
        let mut tab = Self::open_later(name, url, last_id_of(&raw));
        tab.done.push(raw);
        tab
    }

    /// Opens a connection with the last id the tab was given.
    async fn reconnect(&mut self) {
        self.open = Some(Conn::open(&client(), &self.url, self.last_id.as_deref()).await);
    }

    /// If the open connection ended, reconnects with the last id the tab was given, as
    /// `EventSource` does.
    async fn reconnect_if_ended(&mut self) {
        if !self.open.as_ref().is_some_and(Conn::ended) {
            return;
        }
        let conn = self.open.take().expect("open");
        if let Some(id) = conn.last_id() {
            self.last_id = Some(id);
        }
        self.done.push(conn.close());
        self.reconnect().await;
    }

    /// Waits (bounded) until the open connection ended, as a node ends its streams `when` its
    /// feed is back, then reconnects with the last id the tab was given.
    async fn reconnect_when_ended(&mut self, when: &str) {
        let conn = self.open.as_ref().expect("open");
        assert!(
            until(|| conn.ended()).await,
            "{}: not ended {when}",
            self.name
        );
        self.reconnect_if_ended().await;
        self.name.push_str(&format!(", ended {when}, reconnected"));
    }

    /// Follows the tab until it got an id at or after `id` (the last event published),
    /// reconnecting when a connection ends; then closes it: its case.
    async fn finish(mut self, id: &str, reference: usize) -> Case {
        let want = backplane::id_key(id);
        let deadline = Instant::now() + WAIT;
        loop {
            self.reconnect_if_ended().await;
            let conn = self.open.as_ref().expect("open");
            if conn
                .last_id()
                .is_some_and(|got| backplane::id_key(&got) >= want)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no id at or after {id} within {WAIT:?}; last {:?}",
                self.name,
                conn.last_id()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.done.push(self.open.take().expect("open").close());
        Case {
            name: self.name,
            connections: self.done,
            reference,
        }
    }
}

/// The last `id:` a captured stream gave.
fn last_id_of(raw: &str) -> Option<String> {
    frames_of(raw)
        .iter()
        .flatten()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .map(str::to_owned)
}

// ----- 1. a thread rebuild that fails -----------------------------------------------------------

/// Node B reads a thread back from Redis (its user's tab is the first B serves) while B's
/// link is paused, then cut and held, then slower than its timeouts (a user for each, at three
/// points of the run): every read fails, so the stream must end
/// with a `retry:` before it delivers anything (no opening that is not the thread's). The
/// tab comes back with the id it was given, once B's link is back, and must open the run
/// whole, then follow it to its end. Node A publishes throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn a_thread_rebuild_that_fails_ends_with_retry_and_the_tab_reopens_whole() {
    if !available() {
        return;
    }
    let nodes = ProxiedPair::routers().await;
    let ProxiedPair { proxy, a, b, .. } = &nodes;
    let thread = "thread-rebuild";
    let run = full_run(thread, 80);
    let n = run.events.len();
    let http = client();
    let mut cases = Vec::new();
    let mut last: HashMap<&str, String> = HashMap::new();
    let faults = [
        (run.at("mid reasoning"), "paused", "rita"),
        (run.at("mid message"), "cut and held", "rory"),
        (
            run.at("mid tool call"),
            "slow (latency over the timeouts)",
            "ruth",
        ),
    ];
    let users: Vec<&str> = faults.iter().map(|f| f.2).collect();
    let mut open: Vec<Tab> = Vec::new();
    for (i, event) in run.events.iter().enumerate() {
        if let Some(&(_, how, user)) = faults.iter().find(|f| f.0 == i) {
            match how {
                "paused" => proxy.set(Fault::Hold),
                "cut and held" => {
                    proxy.set(Fault::Hold);
                    proxy.cut();
                }
                _ => proxy.set(Fault::Latency(Duration::from_millis(400))),
            }
            let name = format!("{user}: opened on B at {i} while B's link was {how}");
            let conn = Conn::open(&http, &b.thread_url(user, thread), None).await;
            let raw = ended(conn, &name).await;
            proxy.set(Fault::None);
            assert_ended_before_any_event(&raw, &name);
            b.wait_reconnected().await;
            // The tabs B ended when its link came back come back too.
            for tab in &mut open {
                tab.reconnect_if_ended().await;
            }
            let url = b.thread_url(user, thread);
            let mut tab = Tab::after_ended(format!("{name}, reconnected on B"), url, raw);
            tab.reconnect().await;
            tab.tag = user;
            open.push(tab);
        }
        for user in &users {
            last.insert(user, a.publish_ok(user, thread, event).await);
        }
        if i + 1 == n {
            break;
        }
    }
    for tab in open {
        let last = last[tab.tag].clone();
        cases.push(tab.finish(&last, 0).await);
    }
    check(vec![vec![frames(&run.events)]], &cases);
}

/// Node B keeps a window of 2 events, and its link to Redis is slow (30 ms each way, within
/// its timeouts), while A publishes a run as fast as Redis takes it: B's read-back of the
/// thread takes longer than its window lasts, so a sync fails (the frames delivered meanwhile
/// are no longer all in the window). After its bounded attempts the stream ends with a
/// `retry:` before it delivers anything; the tab comes back with the id it was given and
/// opens the run whole. A sync that does get through (no frame came during its read) opens
/// the run whole at once, which is right too: the case is then tried again with another user,
/// up to three times, and one of them must end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn a_thread_rebuild_outrun_by_its_window_ends_with_retry_and_the_tab_reopens_whole() {
    if !available() {
        return;
    }
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = AgNode::start("A", settings(redis.url())).await;
    let mut small = Config::default();
    small.replay_events = 2;
    // Pings every second only: a ping holds B's feed for its round trip, and a read that
    // falls in that hold sees no frame arrive.
    let mut slow = settings(proxy.url());
    slow.ping_interval = Duration::from_secs(1);
    let b = AgNode::start_with("B", slow, small).await;
    proxy.set(Fault::Latency(Duration::from_millis(30)));
    let thread = "thread-window";
    let run = full_run(thread, 250);
    let burst_from = run.at("text opened, no content");
    let mut cases = Vec::new();
    let mut ended_once = false;
    for user in ["wes", "wyn", "wil"] {
        for event in &run.events[..burst_from] {
            a.publish_ok(user, thread, event).await;
        }
        let burst = async {
            let mut last = String::new();
            for event in &run.events[burst_from..] {
                last = a.publish_ok(user, thread, event).await;
            }
            last
        };
        let opened = async {
            let conn = Conn::open(&client(), &b.thread_url(user, thread), None).await;
            // Ended, or opened (its first event came).
            assert!(
                until(|| conn.ended() || conn.data_frames() > 0).await,
                "{user}: the stream neither ended nor opened"
            );
            conn
        };
        let (last, conn) = tokio::join!(burst, opened);
        let url = b.thread_url(user, thread);
        let tab = if conn.ended() {
            let raw = conn.close();
            assert_ended_before_any_event(&raw, user);
            let name =
                format!("{user}: opened on B during a burst, outrun by its window, reconnected");
            let mut tab = Tab::after_ended(name, url, raw);
            tab.reconnect().await;
            tab
        } else {
            let name = format!("{user}: opened on B during a burst, its read-back not outrun");
            Tab {
                name,
                tag: user,
                url,
                last_id: None,
                done: Vec::new(),
                open: Some(conn),
            }
        };
        let was_ended = tab.done.len() == 1;
        cases.push(tab.finish(&last, 0).await);
        if was_ended {
            ended_once = true;
            break;
        }
    }
    check(vec![vec![frames(&run.events)]], &cases);
    assert!(
        ended_once,
        "no read-back was outrun by the window in three tries"
    );
}

// ----- 2. Redis paused past the ping interval and the command timeout ---------------------------

/// What became of the plain event `n`'s publish, and through which node.
struct PlainPublish {
    n: u64,
    node: &'static str,
    result: Result<Option<String>, PublishError>,
}

/// The plain events (`CUSTOM` `n`) a tab received over all its connections, in order, each
/// with its id if it had one.
fn plain_events(case: &Case) -> Vec<(u64, Option<String>)> {
    case.connections
        .iter()
        .flat_map(|raw| plain_events_of(raw))
        .collect()
}

/// [`plain_events`] of one connection.
fn plain_events_of(raw: &str) -> Vec<(u64, Option<String>)> {
    datas(raw)
        .into_iter()
        .filter(|(data, _)| data["type"] == "CUSTOM" && data["name"] == "n")
        .map(|(data, id)| (data["value"].as_u64().expect("n"), id))
        .collect()
}

/// Checks a plain tab of `node` against what the publishes said: no event twice, the ids in
/// order, every confirmed event received with its id, an unconfirmed one (`Unknown`) at most
/// once, and one refused because the backplane was unreachable received only by the tabs of
/// the node that published it, without an id, and never by another node's.
fn check_plain(case: &Case, node: &str, published: &[PlainPublish]) -> Vec<String> {
    let got = plain_events(case);
    eprintln!("{}: plain events {got:?}", case.name);
    let mut wrong = Vec::new();
    let mut seen = HashMap::new();
    for (n, id) in &got {
        if seen.insert(*n, id.clone()).is_some() {
            wrong.push(format!("{}: event {n} received twice", case.name));
        }
    }
    let ids: Vec<(u64, u64)> = case
        .connections
        .iter()
        .flat_map(|raw| datas(raw))
        .filter_map(|(_, id)| id.as_deref().map(backplane::id_key))
        .collect();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        wrong.push(format!(
            "{}: ids out of order or repeated: {ids:?}",
            case.name
        ));
    }
    for p in published {
        let got = seen.get(&p.n);
        match &p.result {
            Ok(Some(id)) if got != Some(&Some(id.clone())) => wrong.push(format!(
                "{}: event {} was confirmed as {id} (through {}) but received as {got:?}",
                case.name, p.n, p.node
            )),
            Ok(None) => wrong.push(format!("event {}: confirmed without an id", p.n)),
            Err(PublishError::Backplane(e)) if *e != BackplaneError::Unknown => {
                let want = (p.node == node).then_some(None);
                if got.cloned() != want {
                    wrong.push(format!(
                        "{}: event {} refused through {} ({e}) and received as {got:?}: only \
                         the tabs of that node get it, without an id",
                        case.name, p.n, p.node
                    ));
                }
            }
            _ => {}
        }
    }
    wrong
}

/// Redis stops answering (`SIGSTOP`) for longer than the nodes' ping interval plus their
/// command timeout, in the middle of a run and while plain events are being published through
/// both nodes. The nodes notice, end every stream with a `retry:` once they are connected
/// again, and the tabs come back with their `Last-Event-ID`: every thread tab must open the
/// whole run (official client judge), and every plain tab must have each confirmed event once,
/// in order, each publish made during the pause must have been refused (delivered to the
/// publishing node's tabs only, without an id) or confirmed, or be unconfirmed and received
/// at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn a_redis_pause_past_the_timeouts_ends_streams_and_loses_nothing_silently() {
    if !available() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = AgNode::start("A", settings(redis.url())).await;
    let mut patient = settings(redis.url());
    patient.publish_retry = Duration::from_secs(5);
    let b = AgNode::start("B", patient).await;
    let nodes = [&a, &b];
    let (user, thread) = ("pat", "thread-pause");
    let run = full_run(thread, 60);
    let pause_at = run.at("mid message");
    // A user only A serves until a tab of theirs joins B during the pause.
    let other = "pia";
    let mut thread_tabs = Vec::new();
    let mut plain_tabs = Vec::new();
    for node in nodes {
        let [thread_tab, plain_tab] = node.open_tabs(user, thread, " from the start").await;
        thread_tabs.push(thread_tab);
        plain_tabs.push(plain_tab);
    }
    let mut plain: Vec<PlainPublish> = Vec::new();
    let mut n = 0;
    let (mut last, mut last_thread, mut last_other) = (String::new(), String::new(), String::new());
    let (mut resuming, mut fresh, mut pia) = (None, None, None);
    let mut before_pause = 0;
    for (i, event) in run.events.iter().enumerate() {
        if i == pause_at {
            before_pause = plain.len();
            redis.stop();
            // Two publishes through each node before the nodes notice (sent, unanswered). A
            // gives up after its `publish_retry` (1 s, Redis still stopped): `Unknown`. B
            // retries for 5 s, so its publishes are confirmed once Redis is back.
            let early_a = join_all((0..2).map(|k| a.publish_plain(user, 1000 + k)));
            let early_b = join_all((0..2).map(|k| b.publish_plain(user, 1010 + k)));
            // The run's next event too, through B into both users' thread: confirmed once
            // Redis is back, it is in the run exactly once.
            let early_thread = async {
                (
                    b.publish_in_thread(user, thread, event).await,
                    b.publish_in_thread(other, thread, event).await,
                )
            };
            let pause = async {
                assert!(
                    until(|| !a.backplane.is_connected() && !b.backplane.is_connected()).await,
                    "the nodes noticed the pause"
                );
                // Tabs join while the nodes are cut off: a plain one on B resuming with the id of
                // B's plain tab (served degraded: this node's refused events only, no id), a
                // fresh plain one on B (primed `0-0`, so that its reconnect opens with a
                // `reset`), a thread one on A (from A's state as the pause found it), and a
                // thread one on B for a user B never served (its read-back fails: it ends).
                let resume = plain_tabs[1].open.as_ref().expect("open").last_id();
                let name = "plain tab on B, joined during the pause with its id".to_owned();
                let mut tab = Tab::open(name, b.plain_url(user), resume.as_deref()).await;
                tab.tag = "B";
                resuming = Some(tab);
                let name = "plain tab on B, joined during the pause without an id".to_owned();
                fresh = Some(Tab::open(name, b.plain_url(user), None).await);
                let name = "thread tab on A, joined during the pause".to_owned();
                thread_tabs.push(Tab::open(name, a.thread_url(user, thread), None).await);
                let conn = Conn::open(&client(), &b.thread_url(other, thread), None).await;
                let name = "pia's thread tab on B, joined during the pause".to_owned();
                let raw = ended(conn, &name).await;
                assert_ended_before_any_event(&raw, &name);
                pia = Some(Tab::after_ended(name, b.thread_url(other, thread), raw));
                // Through A once it noticed (after its unanswered batch, which they queue behind):
                // refused, and delivered to A's tabs only, without an id.
                for n in [2000, 2001] {
                    let result = a.publish_plain(user, n).await;
                    assert!(
                        refused(&result),
                        "a publish through A while its link is down is refused: {result:?}"
                    );
                    plain.push(PlainPublish {
                        n,
                        node: "A",
                        result,
                    });
                }
                redis.cont();
                for node in nodes {
                    node.wait_reconnected().await;
                }
                // Every stream open through the pause ends with a retry: hint.
                let joined = resuming.iter_mut().chain(fresh.as_mut());
                for tab in thread_tabs
                    .iter_mut()
                    .chain(plain_tabs.iter_mut())
                    .chain(joined)
                {
                    tab.reconnect_when_ended("by the pause").await;
                    let raw = tab.done.last().expect("the ended connection");
                    assert!(
                        ends_with_retry(raw),
                        "{}: no retry: at its end: {raw:?}",
                        tab.name
                    );
                }
            };
            let (early_a, early_b, early_thread, ()) =
                tokio::join!(early_a, early_b, early_thread, pause);
            match early_thread {
                (Ok(id), Ok(other_id)) => {
                    last_thread = id;
                    last_other = other_id;
                }
                unconfirmed => panic!("B's thread publishes are not confirmed: {unconfirmed:?}"),
            }
            for (node, early, from) in [("A", early_a, 1000), ("B", early_b, 1010)] {
                for (k, result) in early.into_iter().enumerate() {
                    plain.push(PlainPublish {
                        n: from + k as u64,
                        node,
                        result,
                    });
                }
            }
            assert!(
                plain[plain.len() - 2..].iter().all(|p| p.result.is_ok()),
                "B's publishes made before it noticed are confirmed once Redis is back"
            );
        } else {
            last_thread = a.publish_ok(user, thread, event).await;
            last_other = a.publish_ok(other, thread, event).await;
        }
        if last.is_empty() || backplane::id_key(&last_thread) > backplane::id_key(&last) {
            last.clone_from(&last_thread);
        }
        if i % 5 == 0 {
            let node = nodes[(i / 5) % 2];
            let result = node.publish_plain(user, n).await;
            assert!(
                result.is_ok(),
                "plain publish {n} through {}: {result:?}",
                node.name
            );
            if let Ok(Some(id)) = &result {
                last = id.clone();
            }
            plain.push(PlainPublish {
                n,
                node: node.name,
                result,
            });
            n += 1;
        }
    }
    for p in &plain {
        eprintln!("plain event {} through {}: {:?}", p.n, p.node, p.result);
    }
    let mut wrong = Vec::new();
    for tab in plain_tabs {
        let node = tab.tag;
        let case = tab.finish(&last, 0).await;
        wrong.extend(check_plain(&case, node, &plain));
    }
    // It resumed from the id B's plain tab had when Redis stopped.
    let case = resuming.expect("joined").finish(&last, 0).await;
    wrong.extend(check_plain(&case, "B", &plain[before_pause..]));
    let case = fresh.expect("joined").finish(&last, 0).await;
    wrong.extend(check_plain(&case, "B", &[]));
    let first = datas(&case.connections[1])
        .into_iter()
        .next()
        .map(|(data, _)| data);
    if first != Some(json!({"type": "reset", "reason": "expired"})) {
        wrong.push(format!(
            "{}: its reconnect does not open with a reset: {:?}",
            case.name, case.connections[1]
        ));
    }
    let mut cases = Vec::new();
    for tab in thread_tabs {
        cases.push(tab.finish(&last_thread, 0).await);
    }
    let mut pia = pia.expect("joined");
    pia.reconnect().await;
    cases.push(pia.finish(&last_other, 0).await);
    check(vec![vec![frames(&run.events)]], &cases);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ----- 3. publishing through a node whose link is down ------------------------------------------

/// The `CUSTOM` event published through the node whose link is down, in the thread.
fn local_event(value: &str) -> String {
    json!({"type": "CUSTOM", "name": "local", "value": value}).to_string()
}

/// Whether a captured stream holds the `CUSTOM` `local` event `value`, and with which id.
fn local_received(raw: &str, value: &str) -> Option<Option<String>> {
    datas(raw)
        .into_iter()
        .find(|(data, _)| data["name"] == "local" && data["value"] == value)
        .map(|(_, id)| id)
}

/// Node B's link to Redis is cut and held mid-run. A publish through B, plain or into the
/// thread, is refused (`PublishError::Backplane`, not `Unknown`) and reaches B's own tabs of
/// the user only, without an id (the thread's tab on B included: *Local only*); A's tabs never
/// get it, and A publishes on. Once B's link is back its tabs end and reconnect, and every
/// thread tab opens the whole run, without the refused event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn a_publish_through_a_node_whose_link_is_down_is_refused_and_stays_local() {
    if !available() {
        return;
    }
    let nodes = ProxiedPair::routers().await;
    let ProxiedPair { proxy, a, b, .. } = &nodes;
    let (user, thread) = ("lou", "thread-local");
    let run = full_run(thread, 40);
    let cut_at = run.at("mid message");
    // A token of the message open at the cut, published through B while its link is down.
    let local_delta =
        json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "a1", "delta": "LOCAL-B"}).to_string();
    let mut tabs = Vec::new();
    for node in [&a, &b] {
        tabs.extend(node.open_tabs(user, thread, "").await);
    }
    let mut last = String::new();
    for (i, event) in run.events.iter().enumerate() {
        if i == cut_at {
            proxy.set(Fault::Hold);
            proxy.cut();
            assert!(
                until(|| !b.backplane.is_connected()).await,
                "B notices its link is down"
            );
            let result = b.publish_plain(user, 1).await;
            assert!(
                refused(&result),
                "a plain publish through B is refused: {result:?}"
            );
            for event in [local_event("B"), local_delta.clone()] {
                let result = b.publish_in_thread(user, thread, &event).await;
                assert!(
                    refused(&result),
                    "a thread publish through B is refused: {result:?}"
                );
            }
            // A publishes on meanwhile.
            a.publish_ok(user, thread, &local_event("A")).await;
            for tab in &tabs {
                let conn = tab.open.as_ref().expect("open");
                let want = if tab.tag == "B" { "B" } else { "A" };
                assert!(
                    until(|| local_received(&conn.snapshot(), want).is_some()).await,
                    "{}: the local event {want} never came",
                    tab.name
                );
            }
            // B's state of the thread, which its link's cut left as it was, did not fold the
            // refused events: a tab opened on B now opens from it without them.
            let name = "thread tab on B, opened while its link was down".to_owned();
            let mut tab = Tab::open(name, b.thread_url(user, thread), None).await;
            let conn = tab.open.as_ref().expect("open");
            assert!(
                until(|| conn.data_frames() >= 3 || conn.ended()).await,
                "the tab opened while B's link was down neither opened nor ended"
            );
            let opening = conn.snapshot();
            assert!(
                !opening.contains("LOCAL-B"),
                "B folded an event it could not publish: {opening:?}"
            );
            tab.tag = "B";
            tabs.push(tab);
            proxy.set(Fault::None);
            b.wait_reconnected().await;
            for tab in tabs.iter_mut().filter(|t| t.tag == "B") {
                tab.reconnect_when_ended("when its link was back").await;
            }
            let name = "thread tab on B, opened once its link was back".to_owned();
            let mut tab = Tab::open(name, b.thread_url(user, thread), None).await;
            tab.tag = "B";
            tabs.push(tab);
        }
        last = a.publish_ok(user, thread, event).await;
    }
    let mut cases = Vec::new();
    let mut wrong = Vec::new();
    for tab in tabs {
        let (node, thread_tab) = (tab.tag, tab.url.contains("thread="));
        let case = tab.finish(&last, 0).await;
        let mut plain = Vec::new();
        for (k, raw) in case.connections.iter().enumerate() {
            // B's refused events reach B's tabs open through the cut, without an id, and no
            // other; A's event reaches every tab, with its id (a thread tab opened after it
            // has it in its opening).
            let through_the_cut = node == "B" && k == 0 && !case.name.contains("opened");
            let delta = datas(raw)
                .into_iter()
                .find(|(data, _)| data["delta"] == "LOCAL-B")
                .map(|(_, id)| id);
            if delta != through_the_cut.then_some(None) {
                wrong.push(format!(
                    "{}, connection {k}: the token refused through B received as {delta:?}",
                    case.name
                ));
            }
            for value in ["B", "A"] {
                let got = local_received(raw, value);
                let want = match value {
                    "B" if through_the_cut => Some(None),
                    "B" => None,
                    _ => got.clone().filter(|id| id.is_some()),
                };
                if got != want {
                    wrong.push(format!(
                        "{}, connection {k}: the event published through {value} received as {got:?}",
                        case.name
                    ));
                }
            }
            plain.extend(plain_events_of(raw));
        }
        if !thread_tab {
            let want: Vec<(u64, Option<String>)> =
                if node == "B" { vec![(1, None)] } else { vec![] };
            if plain != want {
                wrong.push(format!(
                    "{}: plain events {plain:?}, want {want:?}",
                    case.name
                ));
            }
        }
        if thread_tab {
            cases.push(case);
        }
    }
    // The reference has A's CUSTOM event too (it changes no message and no state).
    let mut reference = run.events.clone();
    reference.insert(cut_at, local_event("A"));
    check(vec![vec![frames(&reference)]], &cases);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The same through the demo server's `POST`: B's link to Redis cut and held, a publish
/// through B is `503` with `{"error": "backplane_unavailable", "message": …}`, plain or into
/// the thread, and reaches B's tab of the thread only, without an id; A's tab never gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(missing_redis, missing_node),
    ignore = "redis-server or node not found (see build.rs)"
)]
async fn the_demo_refuses_a_publish_through_a_server_whose_link_is_down_with_503() {
    if !available() {
        return;
    }
    let nodes = ProxiedPair::demo_servers().await;
    let ProxiedPair { proxy, a, b, .. } = &nodes;
    let http = client();
    let (user, thread) = ("mia", "thread-demo");
    let connected = async |base: &str| {
        let metrics = support::get(&http, &format!("{base}/metrics")).await.text();
        metrics
            .lines()
            .find(|l| l.starts_with("sse_hub_backplane_connected"))
            .map(|l| l.ends_with(" 1"))
    };
    // Both servers connected before anything is published.
    for base in [&a.demo.base, &b.demo.base] {
        let deadline = Instant::now() + WAIT;
        while connected(base).await != Some(true) {
            assert!(Instant::now() < deadline, "{base} never connected to Redis");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let run = full_run(thread, 10);
    let started = &run.events[..3];
    for event in started {
        let reply = post(&http, &a.url(user, thread), event.clone().into_bytes()).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    }
    let on_a = Conn::open(&http, &a.url(user, thread), None).await;
    let on_b = Conn::open(&http, &b.url(user, thread), None).await;
    for conn in [&on_a, &on_b] {
        assert!(until(|| conn.data_frames() >= 3).await, "the tab opened");
    }
    proxy.set(Fault::Hold);
    proxy.cut();
    let deadline = Instant::now() + WAIT;
    while connected(&b.demo.base).await != Some(false) {
        assert!(
            Instant::now() < deadline,
            "B never noticed its link was cut"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let plain = json!({"type": "CUSTOM", "name": "n", "value": 1}).to_string();
    for (url, body) in [
        (b.plain_url(user), plain),
        (b.url(user, thread), local_event("B")),
    ] {
        let reply = post(&http, &url, body.into_bytes()).await;
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "backplane_unavailable");
    }
    assert!(
        until(|| local_received(&on_b.snapshot(), "B").is_some()).await,
        "B's tab of the thread gets the refused event"
    );
    // A publishes on, and A's tab gets that but never B's event.
    let reply = post(
        &http,
        &a.url(user, thread),
        run.events[3].clone().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let id = reply.json()["id"].as_str().expect("an id").to_owned();
    assert!(until(|| on_a.last_id().as_deref() == Some(id.as_str())).await);
    proxy.set(Fault::None);
    let (on_a, on_b) = (on_a.close(), on_b.close());
    assert_eq!(local_received(&on_b, "B"), Some(None), "B's tab: {on_b:?}");
    assert_eq!(local_received(&on_a, "B"), None, "A's tab: {on_a:?}");
}
