//! Unit tests of the fold: what it builds, the state becoming unknown, the caps, garbage.

use serde_json::{Value, json};

use super::{Ignored, ThreadRun};

/// Folds `v`, and checks that the messages' byte count, kept up to date change by change, is
/// what measuring every message gives.
fn fold(t: &mut ThreadRun, v: Value) -> super::FoldOutcome {
    let outcome = t.fold(v.to_string().as_bytes());
    let measured: usize = t.messages.iter().map(super::message::Message::bytes).sum();
    assert_eq!(t.messages_bytes, measured, "after {v}");
    outcome
}

fn started(t: &mut ThreadRun) {
    let o = fold(
        t,
        json!({"type":"RUN_STARTED","threadId":"t","runId":"r","input":{"threadId":"t","runId":"r",
            "messages":[{"id":"u1","role":"user","content":"hi"}],"tools":[],"context":[],"state":{},"forwardedProps":{}}}),
    );
    assert!(o.folded());
}

fn opening_json(t: &ThreadRun) -> Vec<Value> {
    t.opening()
        .events()
        .map(|e| serde_json::from_slice(e).expect("opening events are JSON"))
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[test]
fn folds_text_into_the_snapshot_and_reopens_it() {
    let mut t = ThreadRun::default();
    started(&mut t);
    fold(
        &mut t,
        json!({"type":"TEXT_MESSAGE_START","messageId":"a1","role":"assistant"}),
    );
    for d in ["Hel", "lo \"", "é\n"] {
        assert!(
            fold(
                &mut t,
                json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"a1","delta":d})
            )
            .folded()
        );
    }
    // The slow path (metadata) ends in the same message.
    assert!(
        fold(
            &mut t,
            json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"a1","delta":"!","metadata":{"k":1}})
        )
        .folded()
    );
    let o = opening_json(&t);
    assert_eq!(
        types(&o),
        ["RUN_STARTED", "MESSAGES_SNAPSHOT", "TEXT_MESSAGE_START"]
    );
    assert_eq!(
        o[1]["messages"],
        json!([{"id":"u1","role":"user","content":"hi"},
               {"id":"a1","role":"assistant","content":"Hello \"é\n!","metadata":{"k":1}}])
    );
    assert!(t.run_open());
}

#[test]
fn a_finished_run_opens_with_its_end() {
    let mut t = ThreadRun::default();
    started(&mut t);
    fold(&mut t, json!({"type":"STATE_SNAPSHOT","snapshot":{"a":1}}));
    fold(
        &mut t,
        json!({"type":"RUN_FINISHED","threadId":"t","runId":"r"}),
    );
    assert!(!t.run_open());
    let o = opening_json(&t);
    assert_eq!(
        types(&o),
        [
            "RUN_STARTED",
            "MESSAGES_SNAPSHOT",
            "STATE_SNAPSHOT",
            "RUN_FINISHED"
        ]
    );
    assert_eq!(o[2]["snapshot"], json!({"a":1}));
}

#[test]
fn a_delta_that_does_not_apply_makes_the_state_unknown_until_a_snapshot() {
    let mut t = ThreadRun::default();
    started(&mut t);
    fold(&mut t, json!({"type":"STATE_SNAPSHOT","snapshot":{"a":1}}));
    let ok = fold(
        &mut t,
        json!({"type":"STATE_DELTA","delta":[{"op":"replace","path":"/a","value":2}]}),
    );
    assert!(ok.folded() && !ok.state_unknown);
    let bad = fold(
        &mut t,
        json!({"type":"STATE_DELTA","delta":[{"op":"remove","path":"/missing"}]}),
    );
    assert!(bad.state_unknown);
    assert!(t.state_unknown());
    assert!(!types(&opening_json(&t)).contains(&"STATE_SNAPSHOT"));
    let next = fold(
        &mut t,
        json!({"type":"STATE_DELTA","delta":[{"op":"add","path":"/b","value":1}]}),
    );
    assert_eq!(next.ignored, Some(Ignored::StateUnknown));
    // Not a patch at all: unknown too.
    fold(&mut t, json!({"type":"STATE_SNAPSHOT","snapshot":{"a":3}}));
    assert!(!t.state_unknown());
    assert!(fold(&mut t, json!({"type":"STATE_DELTA","delta":{"op":"nope"}})).state_unknown);
    fold(&mut t, json!({"type":"STATE_SNAPSHOT","snapshot":{"a":4}}));
    let o = opening_json(&t);
    assert_eq!(o[2], json!({"type":"STATE_SNAPSHOT","snapshot":{"a":4}}));
}

#[test]
fn untouched_state_is_not_invented_and_a_delta_applies_to_an_empty_object() {
    let mut t = ThreadRun::default();
    started(&mut t);
    assert!(!types(&opening_json(&t)).contains(&"STATE_SNAPSHOT"));
    fold(
        &mut t,
        json!({"type":"STATE_DELTA","delta":[{"op":"add","path":"/x","value":[1]}]}),
    );
    assert_eq!(opening_json(&t)[2]["snapshot"], json!({"x":[1]}));
}

#[test]
fn tool_calls_results_and_chunks_land_where_the_client_puts_them() {
    let mut t = ThreadRun::default();
    started(&mut t);
    fold(
        &mut t,
        json!({"type":"TEXT_MESSAGE_START","messageId":"a1","role":"assistant"}),
    );
    fold(&mut t, json!({"type":"TEXT_MESSAGE_END","messageId":"a1"}));
    fold(
        &mut t,
        json!({"type":"TOOL_CALL_START","toolCallId":"c1","toolCallName":"f","parentMessageId":"a1"}),
    );
    fold(
        &mut t,
        json!({"type":"TOOL_CALL_ARGS","toolCallId":"c1","delta":"{\"x\":"}),
    );
    fold(
        &mut t,
        json!({"type":"TOOL_CALL_CHUNK","toolCallId":"c2","toolCallName":"g","delta":"{}"}),
    );
    fold(
        &mut t,
        json!({"type":"TOOL_CALL_RESULT","messageId":"r1","toolCallId":"c1","content":"ok"}),
    );
    let o = opening_json(&t);
    assert_eq!(
        o[1]["messages"],
        json!([
            {"id":"u1","role":"user","content":"hi"},
            {"id":"a1","role":"assistant","content":"","toolCalls":[
                {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":"}}]},
            {"id":"r1","toolCallId":"c1","role":"tool","content":"ok"},
            {"id":"c2","role":"assistant","toolCalls":[
                {"id":"c2","type":"function","function":{"name":"g","arguments":"{}"}}]}
        ])
    );
    // c1 is still open (START re-sent); the result closed the chunk stream of c2.
    assert_eq!(
        types(&o),
        ["RUN_STARTED", "MESSAGES_SNAPSHOT", "TOOL_CALL_START"]
    );
    fold(
        &mut t,
        json!({"type":"TEXT_MESSAGE_CHUNK","messageId":"a2","delta":"x"}),
    );
    let o = opening_json(&t);
    assert_eq!(
        o.last().unwrap(),
        &json!({"type":"TEXT_MESSAGE_CHUNK","messageId":"a2","role":"assistant"})
    );
}

#[test]
fn garbage_is_ignored_and_reported() {
    let mut t = ThreadRun::default();
    let cases: [(&[u8], Ignored); 9] = [
        (b"", Ignored::NotJson),
        (b"\xff\xfe", Ignored::NotJson),
        (b"{\"type\":", Ignored::NotJson),
        (b"[1,2]", Ignored::NotAnEvent),
        (b"{\"type\":1}", Ignored::NotAnEvent),
        (b"{\"type\":\"THINKING_START\"}", Ignored::UnknownType),
        (
            b"{\"type\":\"TEXT_MESSAGE_CONTENT\",\"delta\":\"x\"}",
            Ignored::Malformed,
        ),
        // Events of a run, with no run: last, since they make the run unknown.
        (
            b"{\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"nope\",\"delta\":\"x\"}",
            Ignored::NoTarget,
        ),
        (b"{\"type\":\"RUN_FINISHED\"}", Ignored::NoTarget),
    ];
    for (i, (input, reason)) in cases.into_iter().enumerate() {
        if i == 7 {
            assert!(t.opening().is_empty(), "garbage shows nothing");
        }
        assert_eq!(
            t.fold(input).ignored,
            Some(reason),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    // An event of a run with no run: the run began before what the thread holds.
    assert!(t.run_unknown());
    let o = opening_json(&t);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0]["type"], "RUN_ERROR");
    assert_eq!(o[0]["code"], super::RUN_UNKNOWN_CODE);
    // Arbitrary bytes never panic, whatever the state.
    started(&mut t);
    let mut seed = 7u64;
    for _ in 0..2_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (seed >> 58) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 7 * 8)) as u8).collect();
        let _ = t.fold(&bytes);
        let _ = t.fold(
            format!(
                "{{\"type\":\"TEXT_MESSAGE_CHUNK\",\"delta\":\"{}\"}}",
                seed % 97
            )
            .as_bytes(),
        );
    }
    for e in t.opening().events() {
        serde_json::from_slice::<Value>(e).expect("still valid JSON");
    }
}

#[test]
fn the_byte_cap_drops_completed_messages_first_then_old_text() {
    let mut t = ThreadRun::new(4_000);
    started(&mut t);
    let mut trimmed = 0;
    for m in 0..30 {
        let id = format!("m{m}");
        trimmed += fold(
            &mut t,
            json!({"type":"TEXT_MESSAGE_START","messageId":id,"role":"assistant"}),
        )
        .trimmed_bytes;
        for _ in 0..20 {
            trimmed += fold(
                &mut t,
                json!({"type":"TEXT_MESSAGE_CONTENT","messageId":id,"delta":"0123456789"}),
            )
            .trimmed_bytes;
        }
        trimmed += fold(&mut t, json!({"type":"TEXT_MESSAGE_END","messageId":id})).trimmed_bytes;
    }
    assert!(trimmed > 0, "{} bytes held", t.bytes());
    assert!(t.bytes() <= 4_000);
    let o = opening_json(&t);
    let ids: Vec<&str> = o[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.last(), Some(&"m29"), "the newest stays: {ids:?}");
    assert!(!ids.contains(&"m0"), "the oldest went: {ids:?}");

    // One open message bigger than the cap: its oldest text goes, the rest stays valid.
    fold(
        &mut t,
        json!({"type":"TEXT_MESSAGE_START","messageId":"big","role":"assistant"}),
    );
    for _ in 0..1_000 {
        fold(
            &mut t,
            json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"big","delta":"é\"\\u"}),
        );
    }
    assert!(t.bytes() <= 4_000);
    let o = opening_json(&t);
    let big = o[1]["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(big.ends_with("é\"\\u") && big.len() > 1_000, "{big}");
    assert_eq!(types(&o).last(), Some(&"TEXT_MESSAGE_START"));
}

/// A run input's messages are sent once, in the snapshot (in the client's order): the opening's
/// `RUN_STARTED` keeps the rest of its input.
#[test]
fn a_second_runs_input_messages_are_left_to_the_snapshot() {
    let mut t = ThreadRun::default();
    started(&mut t);
    fold(
        &mut t,
        json!({"type":"RUN_FINISHED","threadId":"t","runId":"r"}),
    );
    fold(
        &mut t,
        json!({"type":"RUN_STARTED","threadId":"t","runId":"r2","input":{"threadId":"t","runId":"r2",
        "messages":[{"id":"u2","role":"user","content":"again"}],"tools":[],"context":[],"state":{},"forwardedProps":{}}}),
    );
    let o = opening_json(&t);
    assert_eq!(o[0]["input"]["messages"], json!([]));
    assert_eq!(o[0]["input"]["runId"], "r2");
    assert_eq!(o[0]["runId"], "r2");
    let ids: Vec<&str> = o[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["u1", "u2"]);
}

/// Running subagents are re-opened after `RUN_STARTED`, parents first; a child whose parent
/// ended loses the parent; an end without a start, a second start and one start too many are
/// reported; the run's end closes them all.
#[test]
fn running_subagents_are_reopened_parents_first() {
    let mut t = ThreadRun::default();
    started(&mut t);
    let sub = |id: &str, parent: Option<&str>| {
        let mut e = json!({"type":"SUBAGENT_STARTED","subagentRunId":id,"name":"helper"});
        if let Some(p) = parent {
            e["parentSubagentRunId"] = json!(p);
        }
        e
    };
    for e in [sub("p", None), sub("c", Some("p")), sub("d", Some("p"))] {
        assert!(fold(&mut t, e).folded());
    }
    let opening = opening_json(&t);
    assert_eq!(
        types(&opening)[..4],
        [
            "RUN_STARTED",
            "SUBAGENT_STARTED",
            "SUBAGENT_STARTED",
            "SUBAGENT_STARTED"
        ]
    );
    assert_eq!(opening[1]["subagentRunId"], "p");
    assert_eq!(opening[2]["parentSubagentRunId"], "p");

    assert_eq!(
        fold(&mut t, sub("c", None)).ignored,
        Some(Ignored::Malformed)
    );
    let finished = |id: &str| json!({"type":"SUBAGENT_FINISHED","subagentRunId":id});
    assert!(fold(&mut t, finished("c")).folded());
    assert_eq!(fold(&mut t, finished("c")).ignored, Some(Ignored::NoTarget));
    assert!(fold(&mut t, finished("p")).folded());
    let opening = opening_json(&t);
    let subagents: Vec<&Value> = opening
        .iter()
        .filter(|e| e["type"] == "SUBAGENT_STARTED")
        .collect();
    assert_eq!(subagents.len(), 1);
    assert_eq!(subagents[0]["subagentRunId"], "d");
    assert!(subagents[0].get("parentSubagentRunId").is_none());

    for i in 1..64 {
        assert!(fold(&mut t, sub(&format!("s{i}"), None)).folded());
    }
    assert_eq!(
        fold(&mut t, sub("one-too-many", None)).ignored,
        Some(Ignored::TooManyOpen)
    );
    fold(
        &mut t,
        json!({"type":"RUN_FINISHED","threadId":"t","runId":"r"}),
    );
    assert!(!types(&opening_json(&t)).contains(&"SUBAGENT_STARTED"));
}

/// The byte cap counts a run input's messages once, as the opening sends them: a long message
/// well under the cap is kept (and sent), and the thread holds about its size once.
#[test]
fn the_byte_cap_counts_a_run_inputs_messages_once() {
    let document = "x".repeat(40 * 1024);
    let mut t = ThreadRun::new(64 * 1024);
    let o = fold(
        &mut t,
        json!({"type":"RUN_STARTED","threadId":"t","runId":"r","input":{"threadId":"t","runId":"r",
            "messages":[{"id":"u1","role":"user","content":document}],"tools":[],"context":[],
            "state":{},"forwardedProps":{}}}),
    );
    assert_eq!(o.trimmed_bytes, 0);
    assert!(t.bytes() < 41 * 1024, "{}", t.bytes());
    let opening = t.opening();
    assert!(opening.as_bytes().len() < 41 * 1024);
    assert!(t.bytes() + 512 >= opening.as_bytes().len());
    let o = opening_json(&t);
    assert_eq!(
        o[1]["messages"][0]["content"].as_str().map(str::len),
        Some(40 * 1024)
    );
}
