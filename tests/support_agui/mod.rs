//! What the AG-UI judge tests share (`tests/run_state.rs`, which folds the runs in-process, and
//! `tests/agui_runs.rs`, which streams them through the demo server): the official-client judge
//! (`tests/agui/judge.mjs`, run with node), the generator of realistic runs, and, for the tests
//! over HTTP, raw SSE connections captured byte for byte.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The client versions every stream is judged with.
pub const VERSIONS: [&str; 2] = ["1.0.0", "0.0.59"];

pub fn agui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agui")
}

/// Whether the judge can run; panics under CI when it cannot.
pub fn judge_available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let modules = agui_dir().join("node_modules/@ag-ui/client").exists()
        && agui_dir().join("node_modules/ag-ui-client-0059").exists();
    if node && modules {
        return true;
    }
    let why = if node {
        "tests/agui/node_modules is missing (cd tests/agui && npm ci)"
    } else {
        "node is not installed"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the AG-UI judge cannot run under CI: {why}");
    }
    eprintln!("SKIPPED: the AG-UI judge cannot run: {why}");
    false
}

/// Runs the judge: one result (`messages`, `state`, `errors`, `warnings`) per client, each
/// client a list of connections (one agent per client, one `connectAgent()` per connection).
pub fn judge(version: &str, clients: &[Vec<String>]) -> Vec<Value> {
    let mut child = Command::new("node")
        .arg(agui_dir().join("judge.mjs"))
        .arg("--client")
        .arg(version)
        .current_dir(agui_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let input = serde_json::to_vec(&json!({ "clients": clients })).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("judge ends");
    writer.join().unwrap().expect("judge reads its input");
    assert!(
        out.status.success(),
        "judge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("judge prints JSON");
    parsed["results"].as_array().expect("results").clone()
}

/// One simulated client: the bytes of each of its connections, in order, and the reference
/// client it must end equal to.
pub struct Case {
    pub name: String,
    pub connections: Vec<String>,
    /// Index of the reference client this case must equal.
    pub reference: usize,
}

/// Judges `cases` against `references` (clients that saw each run whole, in one connection)
/// with both client versions. Every client must end with no error and no warning, and each case
/// with the `messages` and `state` of its reference. Prints one line per case and version;
/// panics with every failure at the end.
pub fn check(references: Vec<Vec<String>>, cases: &[Case]) {
    if !judge_available() {
        return;
    }
    let mut clients = references.clone();
    clients.extend(cases.iter().map(|c| c.connections.clone()));
    let mut failures = Vec::new();
    for version in VERSIONS {
        let results = judge(version, &clients);
        assert_eq!(results.len(), clients.len());
        for (i, r) in results[..references.len()].iter().enumerate() {
            if r["errors"] != json!([]) || r["warnings"] != json!([]) {
                failures.push(format!(
                    "client {version}, reference {i}: errors {} warnings {}",
                    r["errors"], r["warnings"]
                ));
            }
        }
        for (case, got) in cases.iter().zip(&results[references.len()..]) {
            let want = &results[case.reference];
            let mut wrong = Vec::new();
            if got["errors"] != json!([]) || got["warnings"] != json!([]) {
                wrong.push(format!(
                    "errors {} warnings {}",
                    got["errors"], got["warnings"]
                ));
            }
            if got["messages"] != want["messages"] {
                wrong.push(format!(
                    "messages differ\n  got  {}\n  want {}",
                    got["messages"], want["messages"]
                ));
            }
            if got["state"] != want["state"] {
                wrong.push(format!(
                    "state differs: got {} want {}",
                    got["state"], want["state"]
                ));
            }
            if wrong.is_empty() {
                eprintln!(
                    "PASS client {version}: {} ({} connection(s), {} messages)",
                    case.name,
                    case.connections.len(),
                    got["messages"].as_array().map_or(0, Vec::len)
                );
            } else {
                eprintln!("FAIL client {version}: {}", case.name);
                failures.push(format!(
                    "client {version}, {}: {}",
                    case.name,
                    wrong.join("; ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ----- runs ------------------------------------------------------------------------------------

const TOKENS: &[&str] = &[
    "The",
    " weather",
    " in",
    " Paris",
    " is",
    " \"mild\"",
    ",",
    " about",
    " 18",
    "°C",
    ".\n",
    "- ",
    "Sun",
    " ☀️",
    " then",
    " clouds",
    " 🌤",
    "; ",
    "take",
    " a",
    " light",
    " jacket",
    " (",
    "or",
    " not",
    ")",
    "\\",
    "\t",
    " Café",
    " ☕",
];

pub fn token(i: usize) -> &'static str {
    TOKENS[i % TOKENS.len()]
}

/// A generated run: its events as JSON text, in publish order, and named places to join it.
pub struct Run {
    pub thread: &'static str,
    pub events: Vec<String>,
    /// Named indices into `events`, where a connection joins (before the event at the index).
    pub cuts: Vec<(&'static str, usize)>,
}

impl Run {
    pub fn new(thread: &'static str) -> Self {
        Self {
            thread,
            events: Vec::new(),
            cuts: Vec::new(),
        }
    }
    pub fn push(&mut self, event: Value) {
        self.events.push(event.to_string());
    }
    pub fn cut(&mut self, name: &'static str) {
        self.cuts.push((name, self.events.len()));
    }
    /// The index of the cut named `name`.
    pub fn at(&self, name: &str) -> usize {
        self.cuts
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no cut named {name:?}"))
            .1
    }
    pub fn run_started(&mut self, run: &str, user: &[(&str, &str)]) {
        let messages: Vec<Value> = user
            .iter()
            .map(|(id, text)| json!({"id": id, "role": "user", "content": text}))
            .collect();
        let thread = self.thread;
        self.push(
            json!({"type": "RUN_STARTED", "threadId": thread, "runId": run, "input": {
            "threadId": thread, "runId": run, "messages": messages, "tools": [], "context": [],
            "state": {}, "forwardedProps": {}}}),
        );
    }
    pub fn run_finished(&mut self, run: &str) {
        let thread = self.thread;
        self.push(json!({"type": "RUN_FINISHED", "threadId": thread, "runId": run}));
    }
    pub fn text(&mut self, id: &str, tokens: usize, cut_at: &[(usize, &'static str)]) {
        self.push(json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"}));
        for i in 0..tokens {
            if let Some((_, name)) = cut_at.iter().find(|(at, _)| *at == i) {
                self.cut(name);
            }
            self.push(json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": token(i)}));
        }
        self.push(json!({"type": "TEXT_MESSAGE_END", "messageId": id}));
    }
    /// Index of the first event whose JSON contains `needle`.
    pub fn position(&self, needle: &str) -> usize {
        self.events
            .iter()
            .position(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("no event contains {needle:?}"))
    }
}

/// A full run: a user message in the input, a step, reasoning, state, a text message streamed
/// token by token with state deltas, a tool call in pieces and its result, a tool call and a
/// second text message as chunks, more deltas, the end.
pub fn full_run(thread: &'static str, tokens: usize) -> Run {
    let mut r = Run::new(thread);
    r.cut("before the run");
    r.run_started("run-1", &[("u1", "What's the weather in Paris?")]);
    r.cut("after RUN_STARTED");
    r.push(json!({"type": "STEP_STARTED", "stepName": "answer"}));
    r.cut("step open");
    r.push(json!({"type": "REASONING_START", "messageId": "rs1"}));
    r.push(json!({"type": "REASONING_MESSAGE_START", "messageId": "rs1", "role": "reasoning"}));
    for (i, t) in ["The user", " wants", " the weather", "."]
        .iter()
        .enumerate()
    {
        if i == 2 {
            r.cut("mid reasoning");
        }
        r.push(json!({"type": "REASONING_MESSAGE_CONTENT", "messageId": "rs1", "delta": t}));
    }
    r.push(json!({"type": "REASONING_MESSAGE_END", "messageId": "rs1"}));
    r.cut("reasoning span open");
    r.push(json!({"type": "REASONING_END", "messageId": "rs1"}));
    r.push(json!({"type": "STATE_SNAPSHOT", "snapshot": {"status": "thinking", "sources": [], "progress": 0}}));
    r.text(
        "a1",
        tokens,
        &[
            (0, "text opened, no content"),
            (tokens / 2, "mid message"),
            (tokens - 1, "last token"),
        ],
    );
    r.push(json!({"type": "STATE_DELTA", "delta": [{"op": "replace", "path": "/status", "value": "calling"}]}));
    r.cut("between messages");
    r.push(json!({"type": "TOOL_CALL_START", "toolCallId": "tc1", "toolCallName": "get_weather", "parentMessageId": "a1"}));
    for (i, piece) in ["{\"city\":", "\"Paris\",", "\"unit\":\"celsius\"", "}"]
        .iter()
        .enumerate()
    {
        if i == 2 {
            r.cut("mid tool call");
        }
        r.push(json!({"type": "TOOL_CALL_ARGS", "toolCallId": "tc1", "delta": piece}));
    }
    r.push(json!({"type": "TOOL_CALL_END", "toolCallId": "tc1"}));
    r.cut("before tool result");
    r.push(json!({"type": "TOOL_CALL_RESULT", "messageId": "tr1", "toolCallId": "tc1", "role": "tool", "content": "{\"temp\":18,\"sky\":\"sunny\"}"}));
    r.push(json!({"type": "STATE_DELTA", "delta": [{"op": "add", "path": "/sources/-", "value": {"name": "meteo", "ok": true}}]}));
    r.cut("between state deltas");
    r.push(json!({"type": "STATE_DELTA", "delta": [{"op": "replace", "path": "/progress", "value": 0.5}, {"op": "add", "path": "/note", "value": "é \"q\""}]}));
    r.push(json!({"type": "TOOL_CALL_CHUNK", "toolCallId": "tc2", "toolCallName": "search", "delta": "{\"q\":"}));
    r.cut("mid tool chunk");
    r.push(json!({"type": "TOOL_CALL_CHUNK", "delta": "\"umbrella\"}"}));
    r.push(json!({"type": "TOOL_CALL_RESULT", "messageId": "tr2", "toolCallId": "tc2", "role": "tool", "content": "no umbrella"}));
    r.push(json!({"type": "TEXT_MESSAGE_CHUNK", "messageId": "a2", "role": "assistant", "delta": "So"}));
    for i in 0..40 {
        if i == 20 {
            r.cut("mid text chunk");
        }
        r.push(json!({"type": "TEXT_MESSAGE_CHUNK", "delta": token(i + 3)}));
    }
    r.push(json!({"type": "STEP_FINISHED", "stepName": "answer"}));
    r.cut("after the chunks closed");
    r.push(json!({"type": "STATE_DELTA", "delta": [{"op": "replace", "path": "/status", "value": "done"}, {"op": "remove", "path": "/note"}]}));
    r.run_finished("run-1");
    r.cut("run finished");
    r
}

/// The other thread's run in the concurrent-runs cases: a state snapshot, a 150-token answer,
/// a state delta.
pub fn other_thread_run() -> Run {
    let mut b = Run::new("thread-b");
    b.run_started("run-b", &[("ub", "Question B")]);
    b.push(json!({"type": "STATE_SNAPSHOT", "snapshot": {"n": 0}}));
    b.text("mb", 150, &[]);
    b.push(json!({"type": "STATE_DELTA", "delta": [{"op": "replace", "path": "/n", "value": 1}]}));
    b.run_finished("run-b");
    b
}

/// Two concurrent runs of one user as published: two of `a`'s events, then one of `b`'s, until
/// both are out. Each entry is the run (0 for `a`, 1 for `b`) and the index of its event.
pub fn interleave(a: &Run, b: &Run) -> Vec<(usize, usize)> {
    let mut interleaved = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.events.len() || j < b.events.len() {
        for _ in 0..2 {
            if i < a.events.len() {
                interleaved.push((0, i));
                i += 1;
            }
        }
        if j < b.events.len() {
            interleaved.push((1, j));
            j += 1;
        }
    }
    interleaved
}

/// The events as one connection that saw them all receives them: `data:` frames.
pub fn frames<S: AsRef<str>>(events: &[S]) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str("data: ");
        out.push_str(e.as_ref());
        out.push_str("\n\n");
    }
    out
}

// ----- connections over HTTP --------------------------------------------------------------------

/// What a connection has received so far.
#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    /// Where the next frame starts (everything before was scanned).
    scanned: usize,
    /// Complete frames with a `data:` line.
    data_frames: usize,
    /// Complete frames made only of comment lines.
    comment_frames: usize,
    /// The value of the last `id:` line of a complete frame.
    last_id: Option<String>,
    /// The stream ended (cleanly or not), with why.
    ended: Option<String>,
}

impl Received {
    fn scan(&mut self) {
        while let Some(end) = find(&self.bytes[self.scanned..], b"\n\n") {
            let frame = &self.bytes[self.scanned..self.scanned + end];
            let mut data = false;
            let mut other = false;
            for line in frame.split(|&b| b == b'\n') {
                if line.starts_with(b"data:") {
                    data = true;
                } else if let Some(id) = line.strip_prefix(b"id:") {
                    let id = String::from_utf8_lossy(id);
                    self.last_id = Some(id.strip_prefix(' ').unwrap_or(&id).to_owned());
                    other = true;
                } else if !line.starts_with(b":") {
                    other = true;
                }
            }
            if data {
                self.data_frames += 1;
            } else if !other {
                self.comment_frames += 1;
            }
            self.scanned += end + 2;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A real `GET` stream whose raw bytes are captured as they arrive, by a task that keeps
/// reading (so the server never sees a slow reader). Dropping it closes the connection.
pub struct Conn {
    url: String,
    received: Arc<Mutex<Received>>,
    changed: watch::Receiver<()>,
    task: JoinHandle<()>,
}

/// The bound of one wait on a connection.
pub const WAIT: Duration = Duration::from_secs(20);

impl Conn {
    /// Opens `url` (with `Last-Event-ID` if given) and checks that it is an SSE stream. When
    /// this returns, the server has answered, so the connection has joined: what is published
    /// next reaches it live.
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("GET {url}: no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if status != reqwest::StatusCode::OK || content_type != "text/event-stream" {
            let body = tokio::time::timeout(WAIT, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            panic!("GET {url}: {status} {content_type} {body:?}");
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let (tell, changed) = watch::channel(());
        let task = {
            let received = received.clone();
            let mut body = response.bytes_stream();
            tokio::spawn(async move {
                let why = loop {
                    match body.next().await {
                        Some(Ok(chunk)) => {
                            let mut r = received.lock().unwrap();
                            r.bytes.extend_from_slice(&chunk);
                            r.scan();
                        }
                        Some(Err(e)) => break format!("error: {e}"),
                        None => break "end of stream".to_owned(),
                    }
                    tell.send_replace(());
                };
                received.lock().unwrap().ended = Some(why);
                tell.send_replace(());
            })
        };
        Self {
            url: url.to_owned(),
            received,
            changed,
            task,
        }
    }

    /// Complete `data:` frames received so far.
    pub fn data_frames(&self) -> usize {
        self.received.lock().unwrap().data_frames
    }

    /// Complete comment-only frames (heartbeats) received so far.
    pub fn comment_frames(&self) -> usize {
        self.received.lock().unwrap().comment_frames
    }

    /// Whether the stream ended (cleanly or not).
    pub fn ended(&self) -> bool {
        self.received.lock().unwrap().ended.is_some()
    }

    /// The last `id:` the stream gave, as a browser would send it back in `Last-Event-ID`.
    pub fn last_id(&self) -> Option<String> {
        self.received.lock().unwrap().last_id.clone()
    }

    /// Waits until `done` holds of what was received; panics, saying what was received, when
    /// the stream ends first or [`WAIT`] runs out.
    async fn wait(&mut self, what: &str, done: impl Fn(&Received) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            {
                let r = self.received.lock().unwrap();
                if done(&r) {
                    return;
                }
                if let Some(why) = &r.ended {
                    panic!(
                        "GET {}: the stream ended ({why}) before {what}: {} data frames, last \
                         bytes {:?}",
                        self.url,
                        r.data_frames,
                        tail(&r.bytes)
                    );
                }
            }
            if tokio::time::timeout_at(deadline, self.changed.changed())
                .await
                .is_err()
            {
                let r = self.received.lock().unwrap();
                panic!(
                    "GET {}: no {what} within {WAIT:?}: {} data frames, last bytes {:?}",
                    self.url,
                    r.data_frames,
                    tail(&r.bytes)
                );
            }
        }
    }

    /// Waits until `n` complete `data:` frames have arrived.
    pub async fn wait_data_frames(&mut self, n: usize) {
        self.wait(&format!("{n} data frames"), |r| r.data_frames >= n)
            .await;
    }

    /// Waits until the bytes received hold `needle`.
    pub async fn wait_for(&mut self, needle: &str) {
        self.wait(&format!("{needle:?}"), |r| {
            find(&r.bytes, needle.as_bytes()).is_some()
        })
        .await;
    }

    /// Waits until `n` heartbeat comments have arrived.
    pub async fn wait_comments(&mut self, n: usize) {
        self.wait(&format!("{n} heartbeat comments"), |r| {
            r.comment_frames >= n
        })
        .await;
    }

    /// Everything received so far, as text (lossy while a character is cut in two).
    pub fn snapshot(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap().bytes).into_owned()
    }

    /// Closes the connection and returns everything it received, as text.
    pub fn close(self) -> String {
        self.task.abort();
        let r = self.received.lock().unwrap();
        String::from_utf8(r.bytes.clone()).expect("an SSE stream is UTF-8")
    }
}

fn tail(bytes: &[u8]) -> String {
    let from = bytes.len().saturating_sub(300);
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}
