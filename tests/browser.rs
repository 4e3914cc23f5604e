//! A real browser against the demo server: headless Chromium's own `EventSource`, on the demo
//! page, driven through chromedriver with fantoccini.
//!
//! The page receives the events the test publishes; when the server ends the stream
//! (`DELETE /events/agui/{user}`), the browser reconnects by itself with its `Last-Event-ID` and
//! receives the events published while it was away: every event once, in order.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`).
//! Without them the test is compiled as ignored (see `build.rs`), so the summary counts it; under
//! `CI=true` it runs and a missing program fails it.
//! `CHROMIUM` and `CHROMEDRIVER` name other binaries than `/usr/bin`'s or the `PATH`'s.
//! Set `SSE_HUB_SCREENSHOT=/path/to/file.png` to save a screenshot of the page.

mod support;

use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
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

/// A fresh directory, removed on drop: the browser profile.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port, for chromedriver's `--port`.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_chromium, ignore = "chromium or chromedriver not found")]
async fn browser_receives_events_and_resumes_after_the_server_ends_the_stream() {
    let (Some(chromium), Some(chromedriver)) = (
        find_program("CHROMIUM", "chromium"),
        find_program("CHROMEDRIVER", "chromedriver"),
    ) else {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("{SKIPPED}");
        }
        say(SKIPPED);
        return;
    };

    let server = DemoServer::start();
    let (_chromedriver, webdriver) = start_chromedriver(&chromedriver).await;
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

    // Whatever happens in the scenario, close the session, which ends the browser, before the
    // guards kill chromedriver and the server.
    let outcome = AssertUnwindSafe(scenario(&browser, &server))
        .catch_unwind()
        .await;
    let _ = bounded("closing the browser", WAIT, browser.close()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
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
