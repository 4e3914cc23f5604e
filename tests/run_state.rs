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

mod support_agui;

use serde_json::json;
use sse_hub::run_state::ThreadRun;
use support_agui::{
    Case, Run, VERSIONS, check, frames, full_run, interleave, judge, judge_available,
    other_thread_run, token,
};

/// The same thread as [`full_run`], a second run whose input holds only the new user message.
fn second_run() -> Run {
    let mut r = full_run("thread-a", 30);
    r.cuts.clear();
    r.cut("second run: before it");
    r.run_started("run-2", &[("u2", "And tomorrow?")]);
    r.cut("second run: after RUN_STARTED");
    r.text("a3", 30, &[(12, "second run: mid message")]);
    r.run_finished("run-2");
    r.cut("second run: finished");
    r
}

/// [`frames`] with a heartbeat comment before every seventh event, from the fourth.
fn frames_with_heartbeats<S: AsRef<str>>(events: &[S]) -> String {
    let mut out = String::new();
    for (i, e) in events.iter().enumerate() {
        if i % 7 == 3 {
            out.push_str(": heartbeat\n\n");
        }
        out.push_str(&frames(std::slice::from_ref(e)));
    }
    out
}

/// A thread that folded `events[..cut]`, each event folded whole.
fn fold_until(events: &[String], cut: usize) -> ThreadRun {
    let mut t = ThreadRun::default();
    for e in &events[..cut] {
        let outcome = t.fold(e.as_bytes());
        assert!(outcome.folded(), "{outcome:?} for {e}");
        assert_eq!(outcome.trimmed_bytes, 0);
    }
    t
}

/// The opening of a connection made at `cut`, as SSE.
fn opening_at(events: &[String], cut: usize) -> String {
    String::from_utf8(fold_until(events, cut).opening().to_sse()).unwrap()
}

/// A connection made at `cut`: the opening, then the tail.
fn joined_at(events: &[String], cut: usize) -> String {
    opening_at(events, cut) + &frames(&events[cut..])
}

/// [`joined_at`], with a heartbeat comment first and heartbeats between the tail's frames.
fn joined_with_heartbeats_at(events: &[String], cut: usize) -> String {
    ": heartbeat\n\n".to_owned()
        + &opening_at(events, cut)
        + &frames_with_heartbeats(&events[cut..])
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn openings_at_every_named_cut_rebuild_the_run() {
    let run = full_run("thread-a", 120);
    let second = second_run();
    let references = vec![vec![frames(&run.events)], vec![frames(&second.events)]];
    let mut cases = Vec::new();
    for (reference, r) in [(0, &run), (1, &second)] {
        for &(name, cut) in &r.cuts {
            cases.push(Case {
                name: name.to_owned(),
                connections: vec![joined_at(&r.events, cut)],
                reference,
            });
        }
    }
    // Heartbeat comments between frames change nothing.
    let mid = run.at("mid message");
    cases.push(Case {
        name: "mid message, heartbeats".into(),
        connections: vec![joined_with_heartbeats_at(&run.events, mid)],
        reference: 0,
    });
    check(references, &cases);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn openings_at_every_cut_rebuild_the_run() {
    // Every event boundary of a smaller run, for both clients.
    let run = full_run("thread-a", 12);
    let references = vec![vec![frames(&run.events)]];
    let cases: Vec<Case> = (0..=run.events.len())
        .map(|cut| Case {
            name: format!("cut {cut}"),
            connections: vec![joined_at(&run.events, cut)],
            reference: 0,
        })
        .collect();
    check(references, &cases);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn reconnects_rebuild_the_run() {
    // A tab saw the run from its start until 50 tokens into the answer, lost its connection,
    // and reconnected 20 tokens later, or 600 tokens later: each time with one agent, as the
    // client handles a reconnect.
    let run = full_run("thread-a", 800);
    let start = run.position("\"TEXT_MESSAGE_START\"");
    let first_token = start + 1;
    let dropped = first_token + 50;
    let mut cases = Vec::new();
    for (name, missed) in [
        ("reconnect after 20 more tokens", 20),
        ("reconnect after 600 more tokens", 600),
    ] {
        let first = frames(&run.events[..dropped]);
        let second = joined_at(&run.events, dropped + missed);
        cases.push(Case {
            name: name.into(),
            connections: vec![first, second],
            reference: 0,
        });
    }
    // Twice: a reconnect that drops again mid tool call.
    let tool = run.position("\"TOOL_CALL_ARGS\"") + 1;
    cases.push(Case {
        name: "reconnect twice".into(),
        connections: vec![
            frames(&run.events[..dropped]),
            opening_at(&run.events, dropped + 20) + &frames(&run.events[dropped + 20..tool]),
            joined_at(&run.events, tool + 1),
        ],
        reference: 0,
    });
    check(vec![vec![frames(&run.events)]], &cases);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn a_long_answer_joined_halfway() {
    let mut r = Run::new("thread-long");
    r.run_started("run-long", &[("u1", "Write a long essay.")]);
    r.text("a1", 5_000, &[(2_500, "halfway")]);
    r.run_finished("run-long");
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
        connections: vec![joined_with_heartbeats_at(&r.events, cut)],
        reference: 0,
    }];
    check(vec![vec![frames(&r.events)]], &cases);
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn two_concurrent_runs_on_two_threads() {
    // Two threads of one user, their events interleaved as published, folded by one store.
    let mut a = Run::new("thread-a");
    a.run_started("run-a", &[("ua", "Question A")]);
    a.text("ma", 200, &[]);
    a.run_finished("run-a");
    let b = other_thread_run();
    let runs = [&a, &b];
    let interleaved = interleave(&a, &b);
    let cut = interleaved.len() / 3;
    // One run state per thread, as a user channel keeps them.
    let mut store: std::collections::HashMap<&str, ThreadRun> = Default::default();
    for &(r, k) in &interleaved[..cut] {
        let run = store.entry(runs[r].thread).or_default();
        assert!(run.fold(runs[r].events[k].as_bytes()).folded());
    }
    assert_eq!(store.len(), 2);
    let mut cases = Vec::new();
    for (reference, r) in runs.into_iter().enumerate() {
        let tail: Vec<&String> = interleaved[cut..]
            .iter()
            .filter(|(which, _)| *which == reference)
            .map(|&(_, k)| &r.events[k])
            .collect();
        let opening = store[r.thread].opening();
        assert!(store[r.thread].run_open());
        let conn = String::from_utf8(opening.to_sse()).unwrap() + &frames(&tail);
        cases.push(Case {
            name: format!("{} joined mid-run", r.thread),
            connections: vec![conn],
            reference,
        });
    }
    check(
        vec![vec![frames(&a.events)], vec![frames(&b.events)]],
        &cases,
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
    let run = full_run("thread-a", 40);
    let mid = run.at("mid message");
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
    let tail = frames(&run.events[mid..]);
    let clients = vec![
        vec![frames(&run.events)],
        vec![tail.clone()],
        vec![frames(&without_reopen) + &tail],
        vec![frames(&without_snapshot) + &tail],
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
