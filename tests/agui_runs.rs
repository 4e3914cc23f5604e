//! AG-UI runs through the real demo server, judged by the official client.
//!
//! The demo server (`examples/server.rs`) runs as a subprocess on a free loopback port. Generated
//! runs (a user message in the `RUN_STARTED` input, reasoning, a text message token by token, a
//! tool call in pieces and as chunks, results, a state snapshot and deltas, a second text
//! message, the end) are published event by event with `POST /events/agui/{user}?thread=`.
//! Real `GET …?thread=` connections, opened and closed at chosen points of the run, are captured
//! byte for byte, and `tests/agui/judge.mjs` feeds those bytes to `@ag-ui/client` 1.0.0 and
//! 0.0.59: one agent per simulated client, one `connectAgent()` per connection. Each client must
//! end with the `messages` and `state` of a reference client that received the whole run in
//! one connection, with no error and no warning.
//!
//! Waits are bounded and never sleeps: a connection is read until it holds the number of `data:`
//! frames expected (its opening, known from folding the same events with
//! [`ThreadRun`], plus the tail).
//!
//! Needs node and `tests/agui/node_modules` (`cd tests/agui && npm ci`); the judging is skipped
//! with a message without them, except under `CI=true`, where that is a failure.

mod support;
mod support_agui;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sse_hub::run_state::ThreadRun;
use support::{DemoServer, client, post, send, stats};
use support_agui::{Case, Conn, Run, check, frames, full_run, interleave, other_thread_run};

// ----- the server ------------------------------------------------------------------------------

/// The demo server (started by the suite's shared helper, killed on drop) and a client.
struct Server {
    demo: DemoServer,
    client: reqwest::Client,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Self {
        Self {
            demo: DemoServer::start_with_env(env),
            client: client(),
        }
    }

    fn url(&self, user: &str, thread: &str) -> String {
        format!("{}/events/agui/{user}?thread={thread}", self.demo.base)
    }

    /// Publishes one event into `thread` of `user`; it must be accepted.
    async fn publish(&self, user: &str, thread: &str, event: &str) {
        let url = self.url(user, thread);
        let reply = post(&self.client, &url, event.as_bytes().to_vec()).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "POST {url} {event}: {}",
            reply.text()
        );
    }

    /// Publishes `event` into `thread` of each of `users`.
    async fn publish_to(&self, users: &[&str], thread: &str, event: &str) {
        for user in users {
            self.publish(user, thread, event).await;
        }
    }

    async fn connect(&self, user: &str, thread: &str) -> Conn {
        Conn::open(&self.client, &self.url(user, thread), None).await
    }
}

/// The number of events the opening of a connection made before `events[cut]` holds: the fold
/// of the same events by the library, used only to know how many frames to wait for.
fn opening_len(events: &[String], cut: usize) -> usize {
    let mut t = ThreadRun::default();
    for e in &events[..cut] {
        assert!(t.fold(e.as_bytes()).folded(), "{e}");
    }
    t.opening().len()
}

/// A connection that stays until the end of the run: what it must receive in all.
struct Joined {
    name: String,
    conn: Conn,
    expected: usize,
}

impl Joined {
    async fn finish(mut self) -> (String, String) {
        self.conn.wait_data_frames(self.expected).await;
        (self.name, self.conn.close())
    }
}

// ----- the run, joined everywhere ---------------------------------------------------------------

/// Cases 1–6: a full run with an 800-token answer. Connections join before the run, right after
/// it started, and at every named cut (mid reasoning, mid message, mid tool call, between state
/// deltas, mid chunks, after the end…); two connections made before the run drop after 50
/// tokens and reconnect with their `Last-Event-ID`, one 20 tokens later (the replay window
/// still holds what it missed), one 600 tokens later (beyond the 256-event window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_joined_anywhere_rebuilds_the_same_messages_and_state() {
    let server = Server::start(&[]);
    let thread = "thread-a";
    let run = full_run(thread, 800);
    let n = run.events.len();
    // A user may hold 16 connections on a channel: the same run goes to three users, and the
    // connections are spread among them.
    let users = ["alice", "bob", "carol"];
    let mut next_user = 0;
    let mut user = || {
        next_user += 1;
        users[next_user % users.len()]
    };

    let first_token = run.position("\"TEXT_MESSAGE_CONTENT\"");
    let dropped = first_token + 50;
    let mut reconnects: Vec<Reconnect> = [20, 600]
        .into_iter()
        .map(|missed| Reconnect {
            name: format!(
                "dropped after 50 tokens, reconnected with Last-Event-ID after {missed} more"
            ),
            user: user(),
            reconnect_at: dropped + missed,
            first: None,
            first_text: None,
            last_id: None,
            second: None,
        })
        .collect();

    let mut joined: Vec<Joined> = Vec::new();
    for i in 0..=n {
        for &(name, cut) in &run.cuts {
            if cut == i {
                let conn = server.connect(user(), thread).await;
                joined.push(Joined {
                    name: format!("joined {name}"),
                    conn,
                    expected: opening_len(&run.events, cut) + (n - cut),
                });
            }
        }
        for r in &mut reconnects {
            if i == 0 {
                r.first = Some(server.connect(r.user, thread).await);
            }
            if i == dropped {
                // It has seen the run up to the 50th token (an empty opening, then every
                // event): it drops.
                let mut conn = r.first.take().unwrap();
                conn.wait_data_frames(dropped).await;
                r.last_id = conn.last_id();
                r.first_text = Some(conn.close());
            }
            if i == r.reconnect_at {
                let last_id = r.last_id.as_deref().expect("the stream gave an id");
                let url = server.url(r.user, thread);
                r.second = Some(Joined {
                    name: r.name.clone(),
                    conn: Conn::open(&server.client, &url, Some(last_id)).await,
                    expected: opening_len(&run.events, i) + (n - i),
                });
            }
        }
        if i < n {
            server.publish_to(&users, thread, &run.events[i]).await;
        }
    }

    let mut cases = Vec::new();
    for j in joined {
        let (name, text) = j.finish().await;
        cases.push(Case {
            name,
            connections: vec![text],
            reference: 0,
        });
    }
    // The judge is not fooled: the dropped connection alone, or its bytes followed by the
    // reconnect's tail without its opening, is not the run.
    let dropped_alone = reconnects[0].first_text.clone().expect("dropped");
    let reconnects_tail_only = frames(&run.events[reconnects[0].reconnect_at..]);
    negative_controls(
        &frames(&run.events),
        vec![
            vec![dropped_alone.clone()],
            vec![dropped_alone, reconnects_tail_only],
        ],
    );
    for r in reconnects {
        let (name, text) = r.second.expect("reconnected").finish().await;
        cases.push(Case {
            name,
            connections: vec![r.first_text.expect("dropped"), text],
            reference: 0,
        });
    }
    check(vec![vec![frames(&run.events)]], &cases);
}

/// Each of `clients` must end with an error or with other messages than `reference`.
fn negative_controls(reference: &str, clients: Vec<Vec<String>>) {
    if !support_agui::judge_available() {
        return;
    }
    let mut all = vec![vec![reference.to_owned()]];
    all.extend(clients);
    for version in support_agui::VERSIONS {
        let r = support_agui::judge(version, &all);
        assert_eq!(r[0]["errors"], json!([]), "{}", r[0]);
        for (i, got) in r.iter().enumerate().skip(1) {
            assert!(
                got["errors"] != json!([]) || got["messages"] != r[0]["messages"],
                "client {version}: negative control {i} was judged equal to the reference"
            );
        }
    }
}

/// A client that drops and reconnects.
struct Reconnect {
    name: String,
    user: &'static str,
    reconnect_at: usize,
    first: Option<Conn>,
    first_text: Option<String>,
    last_id: Option<String>,
    second: Option<Joined>,
}

/// Publishes `run.events[from..to]` into `thread` of `user`.
async fn publish_range(server: &Server, user: &str, run: &Run, from: usize, to: usize) {
    for event in &run.events[from..to] {
        server.publish(user, run.thread, event).await;
    }
}

/// Case 7: a 5 000-token answer joined halfway (and by a connection made before the run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_token_answer_joined_halfway() {
    let server = Server::start(&[]);
    let mut run = Run::new("thread-long");
    run.run_started("run-long", &[("u1", "Write a long essay.")]);
    run.text("a1", 5_000, &[(2_500, "halfway")]);
    run.run_finished("run-long");
    let (n, half) = (run.events.len(), run.at("halfway"));

    let before = server.connect("erin", run.thread).await;
    publish_range(&server, "erin", &run, 0, half).await;
    let halfway = server.connect("erin", run.thread).await;
    publish_range(&server, "erin", &run, half, n).await;

    let cases = vec![
        Case {
            name: "joined before a 5 000-token answer".into(),
            connections: vec![finish(before, n).await],
            reference: 0,
        },
        Case {
            name: "joined a 5 000-token answer halfway".into(),
            connections: vec![finish(halfway, opening_len(&run.events, half) + n - half).await],
            reference: 0,
        },
    ];
    // Halfway in, the opening is the run start, the snapshot with the 2 500 tokens so far and
    // the message re-opened: three frames, not 2 500.
    assert_eq!(opening_len(&run.events, half), 3);
    check(vec![vec![frames(&run.events)]], &cases);
}

/// Reads `conn` until it holds `frames` data frames, and closes it.
async fn finish(mut conn: Conn, frames: usize) -> String {
    conn.wait_data_frames(frames).await;
    conn.close()
}

/// Case 8: connections that stay idle past heartbeats (before the run, and mid-message): the
/// heartbeats are SSE comments, and the client ends as one that saw no heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_heartbeats_are_unharmed() {
    let server = Server::start(&[("HEARTBEAT_MS", "100")]);
    let run = full_run("thread-idle", 60);
    let (n, mid) = (run.events.len(), run.at("mid message"));

    let mut before = server.connect("frank", run.thread).await;
    before.wait_comments(2).await;
    publish_range(&server, "frank", &run, 0, mid).await;
    let mut joined = server.connect("frank", run.thread).await;
    joined.wait_comments(2).await;
    // Idle mid-message too: two more heartbeats after the first half of the run. Waited for,
    // not counted at a moment: each connection's heartbeat is due an interval after its own
    // last write, so the two connections' beats fall at the same instants and race.
    before.wait_comments(4).await;
    publish_range(&server, "frank", &run, mid, n).await;

    let mut cases = Vec::new();
    for (name, conn, frames) in [
        ("idle before the run, past heartbeats", before, n),
        (
            "joined mid-message, idle past heartbeats",
            joined,
            opening_len(&run.events, mid) + n - mid,
        ),
    ] {
        let text = finish(conn, frames).await;
        assert!(
            text.contains("\n\n: heartbeat\n\n"),
            "heartbeats are comments"
        );
        for line in text.lines() {
            assert!(
                line.is_empty()
                    || line.starts_with("data: ")
                    || line.starts_with(':')
                    || line.starts_with("id: ")
                    || line.starts_with("retry: "),
                "only data, comments, the priming id and retry on a thread stream: {line:?}"
            );
        }
        cases.push(Case {
            name: name.into(),
            connections: vec![text],
            reference: 0,
        });
    }
    check(vec![vec![frames(&run.events)]], &cases);
}

/// Case 9: two runs at once on two threads of one user, published interleaved; each thread's
/// clients (joined before, a third in and two thirds in) are judged against their own run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_on_two_threads_of_one_user() {
    let server = Server::start(&[]);
    let user = "grace";
    let mut a = full_run("thread-a", 200);
    a.cuts.clear();
    let b = other_thread_run();
    let interleaved = interleave(&a, &b);
    let runs = [&a, &b];
    let joins = [0, interleaved.len() / 3, 2 * interleaved.len() / 3];
    // Per thread: (connection, frames expected).
    let mut conns: Vec<(usize, usize, Conn, usize)> = Vec::new();
    let mut published = [0usize; 2];
    for (k, &(r, e)) in interleaved.iter().enumerate() {
        if let Some(at) = joins.iter().position(|&j| j == k) {
            for (which, run) in runs.iter().enumerate() {
                let cut = published[which];
                let expected = opening_len(&run.events, cut) + run.events.len() - cut;
                let conn = server.connect(user, run.thread).await;
                conns.push((which, at, conn, expected));
            }
        }
        server
            .publish(user, runs[r].thread, &runs[r].events[e])
            .await;
        published[r] += 1;
    }
    let mut cases = Vec::new();
    for (which, at, conn, expected) in conns {
        cases.push(Case {
            name: format!(
                "{} joined {}",
                runs[which].thread,
                ["before the runs", "a third in", "two thirds in"][at]
            ),
            connections: vec![finish(conn, expected).await],
            reference: which,
        });
    }
    check(
        vec![vec![frames(&a.events)], vec![frames(&b.events)]],
        &cases,
    );
}

/// A run published while nobody is connected is rebuilt by a late connection: one made when
/// the run is over, one made mid-message (published before anyone connected, then live).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_published_before_anyone_connects_is_rebuilt_late() {
    let server = Server::start(&[]);
    let done = full_run("thread-done", 60);
    let open = full_run("thread-open", 60);
    let mid = open.at("mid message");
    publish_range(&server, "heidi", &done, 0, done.events.len()).await;
    publish_range(&server, "heidi", &open, 0, mid).await;
    // Nobody has ever connected.
    let body = stats(&server.client, &server.demo.base).await;
    assert_eq!(body["agui"]["connections"], 0, "{body}");

    let late_done = server.connect("heidi", done.thread).await;
    let late_open = server.connect("heidi", open.thread).await;
    publish_range(&server, "heidi", &open, mid, open.events.len()).await;
    let cases = vec![
        Case {
            name: "connected after a whole run published to nobody".into(),
            connections: vec![
                finish(late_done, opening_len(&done.events, done.events.len())).await,
            ],
            reference: 0,
        },
        Case {
            name: "connected mid-message to a run published to nobody so far".into(),
            connections: vec![
                finish(
                    late_open,
                    opening_len(&open.events, mid) + open.events.len() - mid,
                )
                .await,
            ],
            reference: 1,
        },
    ];
    check(
        vec![vec![frames(&done.events)], vec![frames(&open.events)]],
        &cases,
    );
}

/// A thread name over 256 bytes, not UTF-8, or empty is `400 invalid_thread` on GET and POST,
/// and nothing is published or opened; 256 bytes is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_thread_names_are_400_and_publish_nothing() {
    let server = Server::start(&[]);
    let client = &server.client;
    let event = json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "x"}).to_string();
    // Someone is connected, so that a publish would have receivers.
    let mut watcher = Conn::open(
        client,
        &format!("{}/events/agui/ivan", server.demo.base),
        None,
    )
    .await;
    let before = stats(client, &server.demo.base).await;
    let too_long = "t".repeat(257);
    for thread in [too_long.as_str(), "%FF", "caf%C3", ""] {
        let url = server.url("ivan", thread);
        for method in [Method::GET, Method::POST] {
            let body = (method == Method::POST).then(|| event.clone().into_bytes());
            let reply = send(client, method.clone(), &url, body).await;
            let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid_thread");
            eprintln!("{method} ?thread={:.20}: 400 {message}", thread);
        }
    }
    let after = stats(client, &server.demo.base).await;
    assert_eq!(after, before, "nothing was published or opened");
    assert_eq!(watcher.data_frames(), 0);

    // The longest valid name works both ways.
    let longest = "t".repeat(256);
    let mut conn = server.connect("ivan", &longest).await;
    server.publish("ivan", &longest, &event).await;
    conn.wait_data_frames(1).await;
    watcher.wait_data_frames(1).await;
    let text = conn.close();
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data, vec![serde_json::from_str::<Value>(&event).unwrap()]);
}

/// In-process, with paused time: a run that keeps streaming into a thread while nobody is
/// connected, for longer than the retention, is still rebuilt by a late connection. (Each
/// publish into a thread keeps the channel, and so the thread's run, for the retention.)
#[tokio::test(start_paused = true)]
async fn a_run_streaming_to_nobody_past_the_retention_is_kept() {
    use futures_util::FutureExt;
    use sse_hub::{Config, EventRouter, ThreadId, UserId};
    use tokio_stream::StreamExt;

    let mut config = Config::default();
    config.retention = Duration::from_secs(1);
    let router = EventRouter::new(config);
    let user = UserId::from("judy");
    let thread = ThreadId::new("thread-slow").unwrap();
    let mut run = Run::new("thread-slow");
    run.run_started("run-slow", &[("u1", "Take your time.")]);
    run.text("a1", 40, &[]);
    let events: Vec<sse_hub::models::AgUiEvent> = run
        .events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // 40 tokens, one every 100 ms: 4 s of streaming, four times the retention.
    let cut = run.events.len() - 1;
    for event in &events[..cut] {
        router
            .route_agui_in_thread(&user, &thread, event)
            .expect("published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sub = router
        .agui()
        .subscribe_in_thread(&user, &thread, None)
        .expect("subscribed");
    let opening = tokio::task::unconstrained(sub.next())
        .now_or_never()
        .flatten()
        .expect("an opening is ready");
    let data: Vec<Value> = std::str::from_utf8(opening.bytes())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let types: Vec<&str> = data.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["RUN_STARTED", "MESSAGES_SNAPSHOT", "TEXT_MESSAGE_START"],
        "{data:?}"
    );
    let text: String = (0..40).map(support_agui::token).collect();
    assert_eq!(data[1]["messages"][1]["content"], text.as_str());
}

/// `DELETE /events/agui/{user}` (`disconnect_user`) ends the user's streams, and "clients
/// reconnect by themselves with their `Last-Event-ID` and lose nothing": a thread stream's
/// reconnect opens from the thread's run, which must still be there. On one node the run is
/// the only copy (there is nothing to read it back from), so the disconnect keeps it, and the
/// events after it are still folded into it: the reconnected tab and a tab opened later both
/// open with the run so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_stream_reconnecting_after_a_disconnect_opens_with_the_run_so_far() {
    let server = Server::start(&[]);
    let mut run = Run::new("thread-kept");
    run.run_started("run-1", &[("u1", "Still there?")]);
    run.text("a1", 8, &[]);
    let end = run.events.len() - 1; // TEXT_MESSAGE_END
    for event in &run.events[..4] {
        server.publish("kim", run.thread, event).await;
    }
    let mut tab = server.connect("kim", run.thread).await;
    tab.wait_data_frames(opening_len(&run.events, 4)).await;
    let last_id = tab.last_id().expect("the stream primed an id");

    let url = format!("{}/events/agui/kim", server.demo.base);
    let reply = send(&server.client, Method::DELETE, &url, None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    drop(tab.close());
    for event in &run.events[4..end] {
        server.publish("kim", run.thread, event).await;
    }
    let back = Conn::open(
        &server.client,
        &server.url("kim", run.thread),
        Some(&last_id),
    )
    .await;
    let late = server.connect("kim", run.thread).await;
    server.publish("kim", run.thread, &run.events[end]).await;

    let text: String = (0..8).map(support_agui::token).collect();
    for (name, mut conn) in [("the reconnected tab", back), ("a later tab", late)] {
        conn.wait_for("TEXT_MESSAGE_END").await;
        let data: Vec<Value> = conn
            .close()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let types: Vec<&str> = data.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "RUN_STARTED",
                "MESSAGES_SNAPSHOT",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_END"
            ],
            "{name} did not open with the run so far after disconnect_user: {data:?}"
        );
        assert_eq!(data[1]["messages"][1]["content"], text.as_str(), "{name}");
    }
}

/// A `?thread=` given twice names two threads at once: which one the request meant is not
/// known, so it is `400 invalid_thread` on GET and POST, as a bad name is, and nothing is
/// published or opened. (The first one was taken silently: a publish could land in the wrong
/// thread and a tab open the wrong run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_thread_parameter_is_400_and_publishes_nothing() {
    let server = Server::start(&[]);
    let client = &server.client;
    let event = json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "x"}).to_string();
    let mut watcher = Conn::open(
        client,
        &format!("{}/events/agui/lena", server.demo.base),
        None,
    )
    .await;
    let before = stats(client, &server.demo.base).await;
    for query in [
        "thread=a&thread=b",
        "thread=a&thread=a",
        "thread=a&x=1&thread=",
    ] {
        let url = format!("{}/events/agui/lena?{query}", server.demo.base);
        for method in [Method::GET, Method::POST] {
            let body = (method == Method::POST).then(|| event.clone().into_bytes());
            let reply = send(client, method.clone(), &url, body).await;
            let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid_thread");
            eprintln!("{method} ?{query}: 400 {message}");
        }
    }
    let after = stats(client, &server.demo.base).await;
    assert_eq!(after, before, "nothing was published or opened");
    assert_eq!(watcher.data_frames(), 0);
    // One `thread` among other parameters is fine.
    let url = format!("{}/events/agui/lena?x=1&thread=a", server.demo.base);
    let reply = post(client, &url, event.clone().into_bytes()).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    watcher.wait_data_frames(1).await;
}
