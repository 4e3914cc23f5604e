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

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sse_hub::run_state::ThreadRun;
use support::{client, post, send, server_binary, stats};
use support_agui::{Case, Conn, Run, check, frames, full_run};

// ----- the server ------------------------------------------------------------------------------

/// The demo server as a subprocess, with extra environment; killed on drop.
struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Self {
        let binary = server_binary();
        let mut command = Command::new(binary);
        command
            .env("ADDR", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Self {
            child,
            base: String::new(),
            client: client(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo server prints its address within 30 s")
            .expect("the demo server's stdout");
        let addr = line
            .trim_end()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        server.base = format!("http://{addr}");
        server
    }

    fn url(&self, user: &str, thread: &str) -> String {
        format!("{}/events/agui/{user}?thread={thread}", self.base)
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
