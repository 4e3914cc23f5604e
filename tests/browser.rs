//! A real browser against the demo server: headless Chromium's own `EventSource`, on the demo
//! page, driven through chromedriver with fantoccini.
//!
//! The page receives the events the test publishes; when the server ends the stream
//! (`DELETE /events/agui/{user}`), the browser reconnects by itself with its `Last-Event-ID` and
//! receives the events published while it was away: every event once, in order.
//!
//! The page's "agent run" plays an AG-UI run into a thread, token by token, and shows the
//! thread as chat views; a second view opened mid-answer opens with the run so far and ends
//! showing exactly what the first shows: the full answer once, the tool call, the same state.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`).
//! Without them the test is compiled as ignored (see `build.rs`), so the summary counts it; under
//! `CI=true` it runs and a missing program fails it.
//! `CHROMIUM` and `CHROMEDRIVER` name other binaries than `/usr/bin`'s or the `PATH`'s.
//! Set `SSE_HUB_SCREENSHOT=/path/to/file.png` (`SSE_HUB_AGENT_SCREENSHOT` for the chat views) to
//! save a screenshot of the page.

mod common;
mod support;

use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TempDir, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{DemoServer, WAIT, client, delete, post, publish, stats, wait_connections};

const SKIPPED: &str = "SKIPPED: browser test needs chromium and chromedriver \
                       (apt-get install chromium chromium-driver)";

/// How long the browser may take to start and open a session.
const BROWSER_START: Duration = Duration::from_secs(60);

/// The user whose events the page shows.
const USER: &str = "browser-user";

/// The program `name`: the path in the environment variable `var` if set, else `name` as found
/// in `/usr/bin` or on the `PATH`.
fn find_program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let debian = PathBuf::from("/usr/bin").join(name);
    if debian.is_file() {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Writes straight to the process's stderr, past the test harness's capture, so that a skip
/// is visible in a passing run.
fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// A process killed (SIGKILL) and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `future`, or a panic saying what did not finish within `within`.
async fn bounded<T>(what: &str, within: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
}

/// Starts chromedriver on a free port and waits until it answers.
async fn start_chromedriver(chromedriver: &PathBuf) -> (KillOnDrop, String) {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let guard = KillOnDrop(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = client();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = http
            .get(format!("{url}/status"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ready {
            return (guard, url);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not answer on {url} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `script` in the page and returns its result.
async fn js(browser: &Client, script: &str) -> Value {
    bounded(script, WAIT, browser.execute(script, Vec::new()))
        .await
        .unwrap_or_else(|e| panic!("running {script:?} in the page failed: {e}"))
}

/// What the page's `EventSource` received: its `window.sseLog`, entries `{type, id, data}`.
async fn received(browser: &Client) -> Vec<Value> {
    match js(browser, "return window.sseLog || [];").await {
        Value::Array(entries) => entries,
        other => panic!("window.sseLog should be an array, got {other}"),
    }
}

/// Waits until the page received at least `count` entries, and returns them all.
async fn wait_received(browser: &Client, count: usize, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let log = received(browser).await;
        if log.len() >= count {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the browser should have received {count} events within {within:?}, it has {}: \
             {log:#?}",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The entries the page should have recorded for `published` `(id, event)` pairs.
fn as_log(published: &[(String, Value)]) -> Vec<Value> {
    published
        .iter()
        .map(|(id, event)| json!({"type": "message", "id": id, "data": event}))
        .collect()
}

/// The page's log with each entry's `data` parsed, to compare JSON values, not strings.
fn parsed(log: Vec<Value>) -> Vec<Value> {
    log.into_iter()
        .map(|mut entry| {
            if let Some(data) = entry["data"].as_str() {
                entry["data"] = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {entry}"));
            }
            entry
        })
        .collect()
}

fn text_message(n: usize) -> Value {
    json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m-1", "delta": format!("chunk {n}")})
}

/// A browser session on the demo page's server: the server, chromedriver, the browser profile.
struct Session {
    browser: Client,
    server: DemoServer,
    _chromedriver: KillOnDrop,
    _profile: TempDir,
}

impl Session {
    /// Starts the demo server, chromedriver and headless Chromium; `None` when the programs are
    /// missing (outside CI: the test then passes, saying it skipped; under `CI=true` it fails).
    async fn start() -> Option<Self> {
        let (Some(chromium), Some(chromedriver)) = (
            find_program("CHROMIUM", "chromium"),
            find_program("CHROMEDRIVER", "chromedriver"),
        ) else {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{SKIPPED}");
            }
            say(SKIPPED);
            return None;
        };

        let server = DemoServer::start();
        let (chromedriver, webdriver) = start_chromedriver(&chromedriver).await;
        let profile = TempDir::new("sse-hub-browser-test");

        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            }),
        );
        let browser = bounded(
            "opening a chromedriver session",
            BROWSER_START,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&webdriver),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot open a browser session through {webdriver}: {e}"));
        Some(Self {
            browser,
            server,
            _chromedriver: chromedriver,
            _profile: profile,
        })
    }

    /// Runs `scenario`; whatever happens in it, closes the session, which ends the browser,
    /// before the guards kill chromedriver and the server.
    async fn run(&self, scenario: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(scenario).catch_unwind().await;
        let _ = bounded("closing the browser", WAIT, self.browser.clone().close()).await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_chromium, ignore = "chromium or chromedriver not found")]
async fn browser_receives_events_and_resumes_after_the_server_ends_the_stream() {
    let Some(session) = Session::start().await else {
        return;
    };
    session
        .run(scenario(&session.browser, &session.server))
        .await;
}

async fn scenario(browser: &Client, server: &DemoServer) {
    let http = client();
    let stream = server.url(&format!("/events/agui/{USER}"));

    // The page connects by itself to the user and channel in its query.
    let page = server.url(&format!("/?user={USER}&channel=agui"));
    bounded("loading the demo page", WAIT, browser.goto(&page))
        .await
        .unwrap_or_else(|e| panic!("cannot load {page}: {e}"));
    wait_connections(&http, &server.base, "agui", 1).await;

    // Live events.
    let mut published = Vec::new();
    for n in 1..=3 {
        let event = text_message(n);
        published.push((publish(&http, &stream, &event).await, event));
    }
    let log = wait_received(browser, published.len(), WAIT).await;
    assert_eq!(parsed(log), as_log(&published), "live events, in order");

    // The server ends the user's stream; while the browser is away, more events are published.
    let reply = delete(&http, &stream).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    wait_connections(&http, &server.base, "agui", 0).await;
    for n in 4..=6 {
        let event = text_message(n);
        let reply = post(&http, &stream, event.to_string()).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        let body = reply.json();
        if n == 4 {
            // The browser waits the server's `retry:` (1 s) before it reconnects: only a resume
            // from its Last-Event-ID can bring it this event.
            assert_eq!(body["receivers"], 0, "the browser is disconnected: {body}");
        }
        let id = body["id"].as_str().expect("an event id").to_owned();
        published.push((id, event));
    }

    // It reconnects by itself and gets what it missed.
    let log = wait_received(browser, published.len(), Duration::from_secs(20)).await;
    assert_eq!(
        parsed(log),
        as_log(&published),
        "after the reconnect: every event once, in order"
    );
    wait_connections(&http, &server.base, "agui", 1).await;

    // And it is live again; nothing arrived twice meanwhile.
    let event = text_message(7);
    published.push((publish(&http, &stream, &event).await, event));
    let log = wait_received(browser, published.len(), WAIT).await;
    assert_eq!(parsed(log), as_log(&published), "live after the resume");

    let stats = stats(&http, &server.base).await;
    assert_eq!(
        stats["agui"]["resets"], 0,
        "the browser's Last-Event-ID resumed cleanly: {stats}"
    );

    // The page shows them: one row per event, with its id.
    let shown = js(
        browser,
        "return Array.from(document.querySelectorAll('#events li .id'), e => e.textContent);",
    )
    .await;
    let ids: Vec<Value> = published.iter().map(|(id, _)| json!(id)).collect();
    assert_eq!(shown, Value::Array(ids), "the ids on the page");
    let status = js(
        browser,
        "return document.getElementById('status').textContent;",
    )
    .await;
    assert!(
        status.as_str().is_some_and(|s| s.starts_with("connected")),
        "the page says it is connected: {status}"
    );

    // Leave the page, publish while it is gone, come back: the page resumes from the last id
    // it saw (kept in sessionStorage, sent as `last_event_id`), so a reload loses nothing.
    bounded("leaving the page", WAIT, browser.goto("about:blank"))
        .await
        .expect("about:blank");
    let event = text_message(8);
    let missed = (publish(&http, &stream, &event).await, event);
    bounded("reloading the demo page", WAIT, browser.goto(&page))
        .await
        .unwrap_or_else(|e| panic!("cannot load {page}: {e}"));
    let log = wait_received(browser, 1, WAIT).await;
    assert_eq!(
        parsed(log),
        as_log(std::slice::from_ref(&missed)),
        "after a reload, the event published meanwhile and nothing else"
    );
    published.push(missed);
    let shown = js(
        browser,
        "return Array.from(document.querySelectorAll('#events li .id'), e => e.textContent);",
    )
    .await;
    let ids: Vec<Value> = published.iter().map(|(id, _)| json!(id)).collect();
    assert_eq!(
        shown,
        Value::Array(ids),
        "the page shows every event across the reload"
    );

    if let Some(path) = std::env::var_os("SSE_HUB_SCREENSHOT") {
        let png = bounded("taking a screenshot", WAIT, browser.screenshot())
            .await
            .expect("a screenshot");
        std::fs::write(&path, png).expect("writing the screenshot");
        say(&format!(
            "screenshot of the demo page: {}",
            path.to_string_lossy()
        ));
    }

    // An id the server cannot resume from: the stream starts with `reset`, the page says so.
    js(
        browser,
        "sessionStorage.setItem('sse-hub-demo:agui:someone-else', \
         JSON.stringify({lastId: 'not-an-id', events: []})); return null;",
    )
    .await;
    let other = server.url("/?user=someone-else&channel=agui");
    bounded("loading the demo page", WAIT, browser.goto(&other))
        .await
        .unwrap_or_else(|e| panic!("cannot load {other}: {e}"));
    let log = wait_received(browser, 1, WAIT).await;
    assert_eq!(log[0]["type"], "reset", "{log:?}");
    let notice = js(
        browser,
        "const n = document.getElementById('notice'); \
         return getComputedStyle(n).display === 'none' ? '' : n.textContent;",
    )
    .await;
    assert!(
        notice
            .as_str()
            .is_some_and(|n| n.contains("Could not resume") && n.contains("malformed")),
        "the page shows a visible notice on reset: {notice}"
    );
}

/// The page's chat views as rendered (read from the DOM), how each opened, and the run's
/// expected texts (constants of the page).
const VIEWS_JS: &str = r"
const views = window.agentViews || [];
return {
  error: window.agentRunError || null,
  done: window.agentRunDone === true,
  answer: window.AGENT_ANSWER,
  final: window.AGENT_FINAL_TEXT,
  toolArgs: window.AGENT_TOOL_ARGS,
  tokens: window.AGENT_TOKENS,
  views: Array.from(document.querySelectorAll('#views .chat-view'), (root, i) => ({
    id: root.id,
    run: root.dataset.run,
    assistant: Array.from(root.querySelectorAll('.msg[data-role=assistant] > .text'), e => e.textContent),
    messages: Array.from(root.querySelectorAll('.msg'), e => ({role: e.dataset.role, text: e.textContent})),
    toolArgs: Array.from(root.querySelectorAll('.tool-call .args'), e => e.textContent),
    state: root.querySelector('.state').textContent,
    joined: views[i] ? views[i].joined : null,
    first: views[i] ? views[i].types : [],
    errors: views[i] ? views[i].errors : [],
    connections: views[i] ? views[i].connections : 0,
  })),
};
";

/// Polls the page's views every 50 ms until `done` holds, and returns them; fails at once if
/// the page's agent run failed (a refused POST), or after `within`.
async fn wait_views(
    browser: &Client,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let page = js(browser, VIEWS_JS).await;
        if let Some(error) = page["error"].as_str() {
            panic!("the page's agent run failed: {error}");
        }
        if done(&page) {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}; the page: {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A name of this test run's own, so runs never share a user or thread.
fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_chromium, ignore = "chromium or chromedriver not found")]
async fn a_second_chat_view_opened_mid_answer_converges_with_the_first() {
    let Some(session) = Session::start().await else {
        return;
    };
    session
        .run(agent_run_scenario(&session.browser, &session.server))
        .await;
}

/// The page plays an agent run into a thread, token by token; a second view opens on the same
/// thread mid-answer, starts from the run so far, and ends showing what the first shows.
async fn agent_run_scenario(browser: &Client, server: &DemoServer) {
    let user = unique_name("agent-user");
    let thread = unique_name("thread");
    let page = server.url(&format!("/?user={user}&channel=agui&thread={thread}"));
    bounded("loading the demo page", WAIT, browser.goto(&page))
        .await
        .unwrap_or_else(|e| panic!("cannot load {page}: {e}"));
    let click = |id: &'static str| async move {
        let button = bounded("finding a button", WAIT, browser.find(Locator::Id(id)))
            .await
            .unwrap_or_else(|e| panic!("no #{id} on the page: {e}"));
        bounded("clicking a button", WAIT, button.click())
            .await
            .unwrap_or_else(|e| panic!("cannot click #{id}: {e}"));
    };

    click("agent-run").await;
    // Some of the answer, not all of it: the moment to open the second view.
    let page = wait_views(
        browser,
        "the first view should show the answer growing",
        Duration::from_secs(30),
        |page| {
            page["views"][0]["assistant"][0]
                .as_str()
                .is_some_and(|text| text.len() >= 40)
        },
    )
    .await;
    let answer = page["answer"].as_str().expect("the page's AGENT_ANSWER");
    let shown = page["views"][0]["assistant"][0].as_str().unwrap_or("");
    assert!(
        answer.starts_with(shown) && shown.len() < answer.len(),
        "when the second view opens, the first shows part of the answer ({} of {} bytes): \
         {shown:?}",
        shown.len(),
        answer.len()
    );
    click("second-view").await;

    let page = wait_views(
        browser,
        "the run should finish in both views",
        Duration::from_secs(60),
        |page| {
            page["done"] == true
                && page["views"].as_array().is_some_and(|views| {
                    views.len() == 2 && views.iter().all(|v| v["run"] == "finished")
                })
        },
    )
    .await;
    let (first, second) = (&page["views"][0], &page["views"][1]);
    let expected_texts = json!([page["answer"], page["final"]]);

    // The second view joined mid-answer: its stream opened with the run so far, the partial
    // answer in the messages snapshot, and the open message re-opened.
    let joined = &second["joined"];
    let partial = joined["assistantTexts"][0].as_str().unwrap_or("");
    assert!(
        !partial.is_empty() && partial.len() < answer.len() && answer.starts_with(partial),
        "the second view's opening should hold part of the answer, it held: {joined}"
    );
    let opening: Vec<&str> = second["first"]
        .as_array()
        .expect("the second view's first event types")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        opening.get(..3),
        Some(&["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT"][..]),
        "the second view's stream opens with the run so far: {opening:?}"
    );
    assert!(
        opening.contains(&"TEXT_MESSAGE_START"),
        "the open answer is re-opened: {opening:?}"
    );
    assert_eq!(
        first["first"][0], "RUN_STARTED",
        "the first view followed the run from its start: {first}"
    );

    // Both end with the same chat: the full answer once (not doubled by the re-opening), the
    // tool call with its arguments and result, the final text, and the same state.
    for view in [first, second] {
        assert_eq!(view["errors"], json!([]), "no fold errors: {view:#}");
        assert_eq!(
            view["connections"], 1,
            "one connection each, no reconnect: {view:#}"
        );
        assert_eq!(
            view["assistant"], expected_texts,
            "{}: the assistant's rendered text is the full answer, then the final text",
            view["id"]
        );
        assert_eq!(
            view["toolArgs"],
            json!([page["toolArgs"]]),
            "{}: the tool call's arguments",
            view["id"]
        );
        let roles: Vec<&Value> = view["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| &m["role"])
            .collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "assistant"]
                .map(Value::from)
                .iter()
                .collect::<Vec<_>>(),
            "{}: the chat's messages",
            view["id"]
        );
    }
    assert_eq!(
        first["messages"], second["messages"],
        "both views render the same chat"
    );
    assert_eq!(
        first["state"], second["state"],
        "both views show the same state"
    );
    let state: Value = serde_json::from_str(first["state"].as_str().expect("the state's text"))
        .unwrap_or_else(|e| panic!("the rendered state is not JSON ({e}): {}", first["state"]));
    assert_eq!(state["status"], "done", "the final state: {state}");
    assert_eq!(state["tokens"], page["tokens"], "the final state: {state}");
    assert_eq!(
        state["notes"].as_array().map(Vec::len),
        Some(1),
        "the final state: {state}"
    );
    assert!(
        state.get("step").is_none(),
        "`remove /step` applied: {state}"
    );

    if let Some(path) = std::env::var_os("SSE_HUB_AGENT_SCREENSHOT") {
        js(
            browser,
            "document.getElementById('agent-title').scrollIntoView(); return null;",
        )
        .await;
        let png = bounded("taking a screenshot", WAIT, browser.screenshot())
            .await
            .expect("a screenshot");
        std::fs::write(&path, png).expect("writing the screenshot");
        say(&format!(
            "screenshot of the agent run: {}",
            path.to_string_lossy()
        ));
    }
}
