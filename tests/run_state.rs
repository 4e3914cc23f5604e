//! The snapshot opening judged by the official AG-UI client.
//!
//! Realistic runs are cut at many points. For each cut, a connection made there receives the
//! opening of a `ThreadRun` that folded everything before the cut, then the rest of the run
//! (SSE `data:` frames). `tests/agui/judge.mjs` feeds those bytes to `@ag-ui/client` 1.0.0 and
//! 0.0.59 (`connectAgent`, the client's own SSE parser, enforcement and apply), and the
//! resulting `messages` and `state` must deep-equal those of a client that saw the whole run,
//! with no error and no warning.
//!
//! Needs node and `tests/agui/node_modules` (`cd tests/agui && npm ci`); skipped with a message
//! without them, except under `CI=true`, where that is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sse_hub::run_state::ThreadRun;

const VERSIONS: [&str; 2] = ["1.0.0", "0.0.59"];

fn agui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agui")
}

/// Whether the judge can run; panics under CI when it cannot.
fn judge_available() -> bool {
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
/// client a list of connections.
fn judge(version: &str, clients: &[Vec<String>]) -> Vec<Value> {
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

fn token(i: usize) -> &'static str {
    TOKENS[i % TOKENS.len()]
}

struct Run {
    thread: &'static str,
    events: Vec<String>,
    /// Named indices into `events`, where a connection joins.
    cuts: Vec<(&'static str, usize)>,
}

impl Run {
    fn new(thread: &'static str) -> Self {
        Self {
            thread,
            events: Vec::new(),
            cuts: Vec::new(),
        }
    }
    fn push(&mut self, event: Value) {
        self.events.push(event.to_string());
    }
    fn cut(&mut self, name: &'static str) {
        self.cuts.push((name, self.events.len()));
    }
    fn run_started(&mut self, run: &str, user: &[(&str, &str)]) {
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
    fn text(&mut self, id: &str, tokens: usize, cut_at: &[(usize, &'static str)]) {
        self.push(json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"}));
        for i in 0..tokens {
            if let Some((_, name)) = cut_at.iter().find(|(at, _)| *at == i) {
                self.cut(name);
            }
            self.push(json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": token(i)}));
        }
        self.push(json!({"type": "TEXT_MESSAGE_END", "messageId": id}));
    }
}

/// A full run: a user message in the input, a step, reasoning, state, a text message streamed
/// token by token with state deltas, a tool call in pieces and its result, a tool call and a
/// second text message as chunks, more deltas, the end.
fn full_run(tokens: usize) -> Run {
    let mut r = Run::new("thread-a");
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
    r.push(json!({"type": "RUN_FINISHED", "threadId": "thread-a", "runId": "run-1"}));
    r.cut("run finished");
    r
}

/// The same thread, a second run whose input holds only the new user message.
fn second_run() -> Run {
    let mut r = full_run(30);
    r.cuts.clear();
    r.cut("second run: before it");
    r.run_started("run-2", &[("u2", "And tomorrow?")]);
    r.cut("second run: after RUN_STARTED");
    r.text("a3", 30, &[(12, "second run: mid message")]);
    r.push(json!({"type": "RUN_FINISHED", "threadId": "thread-a", "runId": "run-2"}));
    r.cut("second run: finished");
    r
}

fn frames<S: AsRef<str>>(events: &[S], heartbeat: bool) -> String {
    let mut out = String::new();
    for (i, e) in events.iter().enumerate() {
        if heartbeat && i % 7 == 3 {
            out.push_str(": heartbeat\n\n");
        }
        out.push_str("data: ");
        out.push_str(e.as_ref());
        out.push_str("\n\n");
    }
    out
}

fn fold_until(events: &[String], cut: usize) -> ThreadRun {
    let mut t = ThreadRun::default();
    for e in &events[..cut] {
        let outcome = t.fold(e.as_bytes());
        assert!(outcome.folded(), "{outcome:?} for {e}");
        assert_eq!(outcome.trimmed_bytes, 0);
    }
    t
}

/// A connection made at `cut`: the opening, then the tail.
fn joined_at(events: &[String], cut: usize, heartbeat: bool) -> String {
    let t = fold_until(events, cut);
    let mut s = String::from_utf8(t.opening().to_sse()).unwrap();
    if heartbeat {
        s.insert_str(0, ": heartbeat\n\n");
    }
    s + &frames(&events[cut..], heartbeat)
}

struct Case {
    name: String,
    connections: Vec<String>,
    /// Index of the reference client this case must equal.
    reference: usize,
}

fn check(references: Vec<Vec<String>>, cases: Vec<Case>) {
    if !judge_available() {
        return;
    }
    let mut clients = references.clone();
    clients.extend(cases.iter().map(|c| c.connections.clone()));
    for version in VERSIONS {
        let results = judge(version, &clients);
        assert_eq!(results.len(), clients.len());
        let mut failures = Vec::new();
        for (i, r) in results[..references.len()].iter().enumerate() {
            if r["errors"] != json!([]) || r["warnings"] != json!([]) {
                failures.push(format!("reference {i}: {} {}", r["errors"], r["warnings"]));
            }
        }
        for (case, got) in cases.iter().zip(&results[references.len()..]) {
            let want = &results[case.reference];
            if got["errors"] != json!([]) || got["warnings"] != json!([]) {
                failures.push(format!(
                    "{}: errors {} warnings {}",
                    case.name, got["errors"], got["warnings"]
                ));
            }
            if got["messages"] != want["messages"] {
                failures.push(format!(
                    "{}: messages differ\n  got  {}\n  want {}",
                    case.name, got["messages"], want["messages"]
                ));
            }
            if got["state"] != want["state"] {
                failures.push(format!(
                    "{}: state differs: got {} want {}",
                    case.name, got["state"], want["state"]
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "client {version}:\n{}",
            failures.join("\n")
        );
        eprintln!(
            "client {version}: {} connections judged equal to the reference",
            cases.len()
        );
    }
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn openings_at_every_named_cut_rebuild_the_run() {
    let run = full_run(120);
    let second = second_run();
    let references = vec![
        vec![frames(&run.events, false)],
        vec![frames(&second.events, false)],
    ];
    let mut cases = Vec::new();
    for (reference, r) in [(0, &run), (1, &second)] {
        for &(name, cut) in &r.cuts {
            cases.push(Case {
                name: name.to_owned(),
                connections: vec![joined_at(&r.events, cut, false)],
                reference,
            });
        }
    }
    // Heartbeat comments between frames change nothing.
    let mid = run
        .cuts
        .iter()
        .find(|(n, _)| *n == "mid message")
        .unwrap()
        .1;
    cases.push(Case {
        name: "mid message, heartbeats".into(),
        connections: vec![joined_at(&run.events, mid, true)],
        reference: 0,
    });
    check(references, cases);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn openings_at_every_cut_rebuild_the_run() {
    // Every event boundary of a smaller run, for both clients.
    let run = full_run(12);
    let references = vec![vec![frames(&run.events, false)]];
    let cases = (0..=run.events.len())
        .map(|cut| Case {
            name: format!("cut {cut}"),
            connections: vec![joined_at(&run.events, cut, false)],
            reference: 0,
        })
        .collect();
    check(references, cases);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn reconnects_rebuild_the_run() {
    // A tab saw the run from its start until 50 tokens into the answer, lost its connection,
    // and reconnected 20 tokens later, or 600 tokens later: each time with one agent, as the
    // client handles a reconnect.
    let run = full_run(800);
    let start = run
        .events
        .iter()
        .position(|e| e.contains("\"TEXT_MESSAGE_START\""))
        .unwrap();
    let first_token = start + 1;
    let dropped = first_token + 50;
    let mut cases = Vec::new();
    for (name, missed) in [
        ("reconnect after 20 more tokens", 20),
        ("reconnect after 600 more tokens", 600),
    ] {
        let first = frames(&run.events[..dropped], false);
        let second = joined_at(&run.events, dropped + missed, false);
        cases.push(Case {
            name: name.into(),
            connections: vec![first, second],
            reference: 0,
        });
    }
    // Twice: a reconnect that drops again mid tool call.
    let tool = run
        .events
        .iter()
        .position(|e| e.contains("\"TOOL_CALL_ARGS\""))
        .unwrap()
        + 1;
    cases.push(Case {
        name: "reconnect twice".into(),
        connections: vec![
            frames(&run.events[..dropped], false),
            {
                let t = fold_until(&run.events, dropped + 20);
                let head = String::from_utf8(t.opening().to_sse()).unwrap();
                head + &frames(&run.events[dropped + 20..tool], false)
            },
            joined_at(&run.events, tool + 1, false),
        ],
        reference: 0,
    });
    check(vec![vec![frames(&run.events, false)]], cases);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn a_long_answer_joined_halfway() {
    let mut r = Run::new("thread-long");
    r.run_started("run-long", &[("u1", "Write a long essay.")]);
    r.text("a1", 5_000, &[(2_500, "halfway")]);
    r.push(json!({"type": "RUN_FINISHED", "threadId": "thread-long", "runId": "run-long"}));
    let cut = r.cuts[0].1;
    let t = fold_until(&r.events, cut);
    assert!(t.run_open());
    let opening = t.opening();
    assert_eq!(
        opening.len(),
        3,
        "RUN_STARTED, MESSAGES_SNAPSHOT, TEXT_MESSAGE_START"
    );
    let cases = vec![Case {
        name: "5 000 tokens joined halfway".into(),
        connections: vec![joined_at(&r.events, cut, true)],
        reference: 0,
    }];
    check(vec![vec![frames(&r.events, false)]], cases);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn two_concurrent_runs_on_two_threads() {
    // Two threads of one user, their events interleaved as published, folded by one store.
    let mut a = Run::new("thread-a");
    a.run_started("run-a", &[("ua", "Question A")]);
    a.text("ma", 200, &[]);
    a.push(json!({"type": "RUN_FINISHED", "threadId": "thread-a", "runId": "run-a"}));
    let mut b = Run::new("thread-b");
    b.run_started("run-b", &[("ub", "Question B")]);
    b.push(json!({"type": "STATE_SNAPSHOT", "snapshot": {"n": 0}}));
    b.text("mb", 150, &[]);
    b.push(json!({"type": "STATE_DELTA", "delta": [{"op": "replace", "path": "/n", "value": 1}]}));
    b.push(json!({"type": "RUN_FINISHED", "threadId": "thread-b", "runId": "run-b"}));

    let mut interleaved = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.events.len() || j < b.events.len() {
        for _ in 0..2 {
            if i < a.events.len() {
                interleaved.push((a.thread, i));
                i += 1;
            }
        }
        if j < b.events.len() {
            interleaved.push((b.thread, j));
            j += 1;
        }
    }
    let cut = interleaved.len() / 3;
    // One run state per thread, as a user channel keeps them.
    let mut store: std::collections::HashMap<&str, ThreadRun> = Default::default();
    for &(thread, k) in &interleaved[..cut] {
        let events = if thread == a.thread {
            &a.events
        } else {
            &b.events
        };
        let run = store.entry(thread).or_default();
        assert!(run.fold(events[k].as_bytes()).folded());
    }
    assert_eq!(store.len(), 2);
    let mut cases = Vec::new();
    for (reference, r) in [(0, &a), (1, &b)] {
        let tail: Vec<&String> = interleaved[cut..]
            .iter()
            .filter(|(t, _)| *t == r.thread)
            .map(|&(_, k)| &r.events[k])
            .collect();
        let opening = store[r.thread].opening();
        assert!(store[r.thread].run_open());
        let conn = String::from_utf8(opening.to_sse()).unwrap() + &frames(&tail, false);
        cases.push(Case {
            name: format!("{} joined mid-run", r.thread),
            connections: vec![conn],
            reference,
        });
    }
    check(
        vec![
            vec![frames(&a.events, false)],
            vec![frames(&b.events, false)],
        ],
        cases,
    );
}

#[test]
fn an_empty_thread_opens_with_nothing() {
    let t = ThreadRun::default();
    assert!(t.opening().is_empty());
    assert!(!t.run_open());
}

#[test]
fn the_opening_of_a_long_answer_costs_its_text_plus_a_little() {
    let mut r = Run::new("thread-mem");
    r.run_started("run-mem", &[("u1", "Write.")]);
    r.text("a1", 50_000, &[]);
    let events = &r.events[..r.events.len() - 1];
    let t = fold_until(events, events.len());
    let text: usize = (0..50_000)
        .map(|i| serde_json::to_string(token(i)).unwrap().len() - 2)
        .sum();
    let opening = t.opening();
    eprintln!(
        "opening of a 50 000-token answer: {} events, {} B of JSON, {} B of heap for {} B of (escaped) text; thread holds {} B",
        opening.len(),
        opening.as_bytes().len(),
        opening.heap_bytes(),
        text,
        t.bytes()
    );
    assert!(
        opening.heap_bytes() <= text + 4096,
        "{} > {} + 4096",
        opening.heap_bytes(),
        text
    );
    assert!(t.bytes() <= text + 4096);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn the_judge_is_not_fooled() {
    // Negative controls: the judge must see what is wrong with a tail alone, a snapshot without
    // the re-opened message, and an opening that lost the partial text.
    if !judge_available() {
        return;
    }
    let run = full_run(40);
    let mid = run
        .cuts
        .iter()
        .find(|(n, _)| *n == "mid message")
        .unwrap()
        .1;
    let t = fold_until(&run.events, mid);
    let opening = t.opening();
    let events: Vec<String> = opening
        .events()
        .map(|e| String::from_utf8(e.to_vec()).unwrap())
        .collect();
    let without_reopen: Vec<&String> = events
        .iter()
        .filter(|e| !e.contains("TEXT_MESSAGE_START"))
        .collect();
    let without_snapshot: Vec<&String> = events
        .iter()
        .filter(|e| !e.contains("MESSAGES_SNAPSHOT"))
        .collect();
    let tail = frames(&run.events[mid..], false);
    let clients = vec![
        vec![frames(&run.events, false)],
        vec![tail.clone()],
        vec![frames(&without_reopen, false) + &tail],
        vec![frames(&without_snapshot, false) + &tail],
    ];
    for version in VERSIONS {
        let r = judge(version, &clients);
        assert_eq!(r[0]["errors"], json!([]));
        assert!(
            r[1]["errors"].to_string().contains("First event must be"),
            "{}",
            r[1]
        );
        assert!(
            r[2]["errors"]
                .to_string()
                .contains("No active text message"),
            "{}",
            r[2]
        );
        assert_ne!(r[3]["messages"], r[0]["messages"]);
    }
}
