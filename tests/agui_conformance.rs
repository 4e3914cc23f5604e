//! Conformance with AG-UI 1.0 as the official package defines it: the schemas of
//! `@ag-ui/core` 1.0.0 (pinned in `tests/agui/package.json`) judge sse-hub's events, through
//! `tests/agui/validate.mjs`.
//!
//! * The maximal fixture (`fixtures/agui_1_0_all.json`: one event per 1.0 type, every optional
//!   member filled) is valid, and so is what the model writes back.
//! * Every case of `fixtures/agui_1_0_invalid.json`, which the model refuses, the schemas
//!   refuse too.
//! * Each fixture goes through the real demo server (POST, then its SSE stream read with the
//!   independent `eventsource-stream` parser) and comes out deep-equal and still valid.
//! * Case by case (a table of edge cases, and every member of the maximal fixture removed or
//!   replaced by each kind of JSON value), the model and the schemas agree, and what the model
//!   writes back is what a JavaScript client would have read from the published text
//!   (`tests/agui/agree.mjs`).
//!
//! Needs `node` and `tests/agui/node_modules` (`npm ci --prefix tests/agui`; `scripts/test`
//! runs it). Without node the tests are compiled as ignored (see `build.rs`), except under `CI=true`, where they
//! fail.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sse_hub::models::AgUiEvent;
use support::{DemoServer, SseStream, client, publish};

const AGUI_1_0_ALL: &str = include_str!("fixtures/agui_1_0_all.json");
const AGUI_1_0_INVALID: &str = include_str!("fixtures/agui_1_0_invalid.json");

fn agui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("agui")
}

/// Whether node and the pinned packages are there; prints the skip, or panics under `CI=true`.
fn node_available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    let packages = agui_dir()
        .join("node_modules/@ag-ui/core/package.json")
        .is_file();
    if node && packages {
        return true;
    }
    let missing = if node {
        "tests/agui/node_modules (run `npm ci --prefix tests/agui`)"
    } else {
        "node (apt-get install nodejs npm)"
    };
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{missing} is missing, and CI=true: the AG-UI conformance tests cannot run");
    }
    eprintln!("SKIPPED: the AG-UI conformance tests need {missing}");
    false
}

/// The official schemas' verdict on each event: `Ok` or the issues zod reported.
fn validate(events: &[Value]) -> Vec<Result<(), Value>> {
    let mut child = Command::new("node")
        .arg(agui_dir().join("validate.mjs"))
        .current_dir(agui_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let input = serde_json::to_vec(events).expect("serialisable");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("the events reach node");
    let output = child.wait_with_output().expect("node ends");
    assert!(
        output.status.success(),
        "validate.mjs failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["protocolVersion"], "1.0", "{report}");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), events.len());
    results
        .iter()
        .map(|r| {
            if r["valid"] == true {
                Ok(())
            } else {
                Err(r["errors"].clone())
            }
        })
        .collect()
}

fn assert_all_valid(events: &[Value], what: &str) {
    for (event, verdict) in events.iter().zip(validate(events)) {
        if let Err(errors) = verdict {
            panic!("{what}: @ag-ui/core 1.0.0 rejects {event}: {errors}");
        }
    }
}

fn fixtures() -> Vec<Value> {
    serde_json::from_str(AGUI_1_0_ALL).expect("a JSON array")
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn the_maximal_fixture_covers_every_1_0_type_and_is_valid() {
    let events = fixtures();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, AgUiEvent::TYPES, "one event per 1.0 type");
    if !node_available() {
        return;
    }
    assert_all_valid(&events, "the maximal fixture");
    // What the model writes back is still valid (and equal: see agui_model.rs).
    let written: Vec<Value> = events
        .iter()
        .map(|e| {
            let event: AgUiEvent = serde_json::from_value(e.clone()).unwrap();
            serde_json::to_value(&event).unwrap()
        })
        .collect();
    assert_eq!(written, events);
    assert_all_valid(&written, "the model's output");
    // Unknown members are kept, and 1.0 accepts them (its objects are open).
    let extended: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e["x-future"] = json!({"kept": true});
            let event: AgUiEvent = serde_json::from_value(e).unwrap();
            serde_json::to_value(&event).unwrap()
        })
        .collect();
    assert!(extended.iter().all(|e| e["x-future"]["kept"] == true));
    assert_all_valid(&extended, "events with unknown members");
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn what_the_model_refuses_the_official_schemas_refuse() {
    if !node_available() {
        return;
    }
    let cases: Vec<Value> = serde_json::from_str(AGUI_1_0_INVALID).expect("a JSON array");
    let events: Vec<Value> = cases.iter().map(|c| c["event"].clone()).collect();
    for (case, verdict) in cases.iter().zip(validate(&events)) {
        assert!(
            verdict.is_err(),
            "{}: @ag-ui/core 1.0.0 accepts {}, which the model refuses",
            case["case"],
            case["event"]
        );
        assert!(
            serde_json::from_value::<AgUiEvent>(case["event"].clone()).is_err(),
            "{}",
            case["case"]
        );
    }
}

#[tokio::test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
async fn every_fixture_comes_out_of_the_demo_server_deep_equal_and_valid() {
    let node = node_available();
    let server = DemoServer::start();
    let client = client();
    let url = server.url("/events/agui/conformance");
    let context_url = server.url("/events/context/conformance");
    let mut stream = SseStream::connect(&client, &url).await;
    let mut context = SseStream::connect(&client, &context_url).await;

    let events = fixtures();
    let mut received = Vec::new();
    for event in &events {
        let id = publish(&client, &url, event).await;
        let (got_id, data) = stream.next_message().await;
        assert_eq!(got_id, id);
        assert_eq!(&data, event, "through the demo server");
        // The context channel keeps the replaced crate's wrapper.
        let (_, wrapped) = context.next_message().await;
        assert_eq!(wrapped, json!({"protocol": "agui", "event": event}));
        received.push(data);
    }
    if node {
        assert_all_valid(&received, "events out of the demo server");
    }
}

#[tokio::test]
async fn the_demo_server_answers_400_invalid_event_naming_the_member_and_publishes_nothing() {
    let server = DemoServer::start();
    let client = client();
    let url = server.url("/events/agui/strict");
    let mut stream = SseStream::connect(&client, &url).await;
    let before = support::stats(&client, &server.base).await;
    let cases: Vec<Value> = serde_json::from_str(AGUI_1_0_INVALID).expect("a JSON array");
    for case in &cases {
        let reply = support::post(&client, &url, case["event"].to_string()).await;
        let message = reply.assert_error(reqwest::StatusCode::BAD_REQUEST, "invalid_event");
        let member = case["member"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{member}`")),
            "{}: the message should name `{member}`: {message}",
            case["case"]
        );
    }
    assert_eq!(support::stats(&client, &server.base).await, before);
    // The stream's next event is the next good one.
    let event = json!({"type": "TEXT_MESSAGE_CHUNK", "messageId": "m", "delta": "ok"});
    let id = publish(&client, &url, &event).await;
    assert_eq!(stream.next_message().await, (id, event));
}

/// The demo page's AG-UI examples (`EXAMPLES.agui` in `examples/server/page.html`).
fn page_examples() -> Vec<Value> {
    let page = include_str!("../examples/server/page.html");
    let start = page.find("agui: [").expect("the page has AG-UI examples") + "agui: ".len();
    serde_json::Deserializer::from_str(&page[start..])
        .into_iter::<Vec<Value>>()
        .next()
        .expect("a JSON array")
        .expect("the examples are JSON")
}

#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn the_demo_page_offers_every_1_0_type_and_each_is_valid() {
    let examples = page_examples();
    let mut types: Vec<&str> = examples
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    let mut expected = AgUiEvent::TYPES.to_vec();
    expected.sort_unstable();
    assert_eq!(types, expected, "one example per 1.0 type");
    for example in &examples {
        let event: AgUiEvent = serde_json::from_value(example.clone())
            .unwrap_or_else(|e| panic!("the model refuses {example}: {e}"));
        assert_eq!(&serde_json::to_value(&event).unwrap(), example);
    }
    if node_available() {
        assert_all_valid(&examples, "the demo page's examples");
    }
}

/// Edge cases of AG-UI 1.0, as the JSON text a producer publishes, for
/// [`the_model_agrees_with_the_official_schemas_case_by_case`]: numbers as JavaScript and other
/// producers write them, member order inside free-form values, strings, roles, JSON Patch,
/// messages, run input, outcomes and token usage, unknown and retired types.
const TABLE: &[&str] = &[
    // Numbers a producer wrote with their shortest digits (JavaScript, Python and Rust write
    // floats so) must reach a client as the same numbers, in every free-form member.
    r#"{"type":"STATE_SNAPSHOT","snapshot":1848.6618961806582}"#,
    r#"{"type":"STATE_SNAPSHOT","snapshot":{"lat":48.85884430000001,"lng":2.2943506,"score":0.30000000000000004}}"#,
    r#"{"type":"STATE_SNAPSHOT","snapshot":[940921927.1491903,7.406314525215744e-8,1.2949993227701215e-13]}"#,
    r#"{"type":"STATE_SNAPSHOT","snapshot":[1,2.5,-0,1e21,1.7976931348623157e308,5e-324,123456789012345678901234]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"replace","path":"/price","value":1848.6618961806582}]}"#,
    r#"{"type":"ACTIVITY_SNAPSHOT","messageId":"a","activityType":"progress","content":{"done":0.8287941555972633}}"#,
    r#"{"type":"ACTIVITY_DELTA","messageId":"a","activityType":"progress","patch":[{"op":"add","path":"/done","value":5.144805207729076e-8}]}"#,
    r#"{"type":"CUSTOM","name":"gauge","value":940921927.1491903}"#,
    r#"{"type":"RAW","event":{"logprob":-1.764570476888827e-6},"source":"openai"}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","result":{"confidence":1848.6618961806582}}"#,
    r#"{"type":"SUBAGENT_FINISHED","subagentRunId":"s","result":0.30000000000000004}"#,
    r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x","rawEvent":{"p":940921927.1491903},"metadata":{"latencyMs":1848.6618961806582}}"#,
    r#"{"type":"RUN_STARTED","threadId":"t","runId":"r","input":{"threadId":"t","runId":"r","messages":[],"state":{"t":1848.6618961806582},"forwardedProps":{"temperature":0.30000000000000004}}}"#,
    r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x","x-future":{"weight":940921927.1491903}}"#,
    // Timestamps and token counts: integers by value, within ±(2^53 − 1), however written.
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":1780000000000}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":1.78E12}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":1780000000000.0}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":-0}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":9007199254740991}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":9007199254740991.4}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":9007199254740992}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":-9007199254740991}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":1780000000000.5}"#,
    r#"{"type":"TEXT_MESSAGE_END","messageId":"m","timestamp":"1780000000000"}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","usage":[{"inputTokens":5.0,"outputTokens":1e2,"totalTokens":-0}]}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","usage":[{"inputTokens":9007199254740991.4}]}"#,
    r#"{"type":"RUN_ERROR","message":"m","usage":[{"inputTokens":-1}]}"#,
    r#"{"type":"RUN_ERROR","message":"m","usage":[{"outputTokens":2.5}]}"#,
    r#"{"type":"RUN_ERROR","message":"m","usage":[{"model":"m","provider":null}]}"#,
    // Strings: empty, escaped, beyond the BMP.
    r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"","delta":""}"#,
    r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"\u0000\u001f\"\\\/\u2028\ud83d\ude00é"}"#,
    r#"{"type":"TEXT_M\u0045SSAGE_CONTENT","message\u0049d":"m","delta":"x"}"#,
    // Members the model does not know, and members in any order (`type` last included).
    r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x","zeta":1,"alpha":{"z":null,"a":[]}}"#,
    r#"{"messageId":"m","delta":"x","type":"TEXT_MESSAGE_CONTENT","timestamp":1.0}"#,
    r#"{"type":"RUN_STARTED","threadId":"t","runId":"r","subagentRunId":5}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[],"subagentRunId":null}"#,
    // `null`: required free-form members take it; optional members are written as absent.
    r#"{"type":"STATE_SNAPSHOT","snapshot":null}"#,
    r#"{"type":"RAW","event":null}"#,
    r#"{"type":"CUSTOM","name":"n","value":null}"#,
    r#"{"type":"STATE_SNAPSHOT"}"#,
    r#"{"type":"CUSTOM","name":"n"}"#,
    r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x","timestamp":null,"rawEvent":null,"metadata":null}"#,
    r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x","metadata":{"a":null}}"#,
    r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x","metadata":[]}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","result":false}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","result":null,"outcome":null}"#,
    // Roles.
    r#"{"type":"TEXT_MESSAGE_START","messageId":"m"}"#,
    r#"{"type":"TEXT_MESSAGE_START","messageId":"m","role":"developer","name":"n"}"#,
    r#"{"type":"TEXT_MESSAGE_START","messageId":"m","role":"tool"}"#,
    r#"{"type":"TEXT_MESSAGE_START","messageId":"m","role":"reasoning"}"#,
    r#"{"type":"TEXT_MESSAGE_START","messageId":"m","role":"Assistant"}"#,
    r#"{"type":"TEXT_MESSAGE_CHUNK"}"#,
    r#"{"type":"TEXT_MESSAGE_CHUNK","role":"activity"}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":"x","role":"tool"}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":"x","role":"assistant"}"#,
    r#"{"type":"REASONING_MESSAGE_START","messageId":"m"}"#,
    r#"{"type":"REASONING_MESSAGE_START","messageId":"m","role":"assistant"}"#,
    r#"{"type":"REASONING_ENCRYPTED_VALUE","subtype":"toolCall","entityId":"e","encryptedValue":"v"}"#,
    // Tool results and content parts.
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":[]}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":[{"type":"text","text":"x","metadata":"any"}]}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":[{"type":"text","text":"x","metadata":null}]}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":[{"type":"image","source":{"type":"data","value":"x"}}]}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":[{"type":"image","source":{"type":"url","value":"x"}}]}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":[{"type":"binary","mimeType":"x","data":"y"}]}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t","content":{"type":"text","text":"x"}}"#,
    r#"{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"t"}"#,
    // JSON Patch.
    r#"{"type":"STATE_DELTA","delta":[]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"add","path":"","value":{"b":1,"a":2}}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"add","path":"/","value":1},{"op":"add","path":"/a~01/-","value":null}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"add","path":"/a~","value":1}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"add","path":"/a~2","value":1}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"add","path":"a","value":1}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"add","path":"/a"}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"remove","path":"/a","value":null,"from":5}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"move","path":"/a"}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"copy","path":"/a","from":"x"}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"test","path":"/a"}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"op":"ADD","path":"/a","value":1}]}"#,
    r#"{"type":"STATE_DELTA","delta":[{"path":"/a","value":1}]}"#,
    r#"{"type":"STATE_DELTA","delta":[null]}"#,
    // Messages.
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"assistant"},{"id":"b","role":"assistant","toolCalls":[]}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"assistant","content":null}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"user","content":[]}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"tool","content":"x","toolCallId":"t","name":"n"}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"tool","content":"x"}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"activity","activityType":"x","content":{},"name":5}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"activity","activityType":"x","content":[]}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"reasoning","content":"x","name":5}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"developer","content":[]}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"Assistant"}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"role":"assistant"}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"assistant","toolCalls":[{"id":"c","type":"function","function":{"name":"n","arguments":{}}}]}]}"#,
    r#"{"type":"MESSAGES_SNAPSHOT","messages":[{"id":"a","role":"assistant","toolCalls":[{"id":"c","function":{"name":"n","arguments":"{}"}}]}]}"#,
    // Run input, outcomes.
    r#"{"type":"RUN_STARTED","threadId":"t","runId":"r","input":{"threadId":"t","runId":"r","messages":[],"state":null}}"#,
    r#"{"type":"RUN_STARTED","threadId":"t","runId":"r","input":{"threadId":"t","runId":"r","messages":[],"tools":null}}"#,
    r#"{"type":"RUN_STARTED","threadId":"t","runId":"r","input":{"threadId":"t","runId":"r"}}"#,
    r#"{"type":"RUN_STARTED","threadId":"t","runId":"r","input":{"threadId":"t","runId":"r","messages":[],"tools":[{"name":"n","description":"d","parameters":{"type":"object","properties":{"name":{"type":"string"},"email":{"type":"string"},"age":{"type":"integer"}}}}]}}"#,
    r#"{"type":"RUN_STARTED","threadId":"t","runId":"r","input":{"threadId":"t","runId":"r","messages":[],"resume":[{"interruptId":"i","status":"approved"}]}}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","outcome":{"type":"success","pendingToolCallIds":[]}}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","outcome":{"type":"interrupt","interrupts":[]}}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","outcome":{"type":"interrupt","interrupts":[{"id":"i","reason":"approval","responseSchema":{"type":"object","properties":{"name":{"type":"string"},"email":{"type":"string"},"age":{"type":"integer"}},"required":["name"]}}]}}"#,
    r#"{"type":"RUN_FINISHED","threadId":"t","runId":"r","outcome":{"type":"interrupt","interrupts":[{"id":"i","reason":"r","responseSchema":[]}]}}"#,
    r#"{"type":"SUBAGENT_FINISHED","subagentRunId":"s","outcome":{"type":"suspended"}}"#,
    r#"{"type":"SUBAGENT_FINISHED","subagentRunId":"s","outcome":{"type":"interrupt"}}"#,
    // Every member optional, or required ones missing.
    r#"{"type":"TOOL_CALL_CHUNK"}"#,
    r#"{"type":"REASONING_MESSAGE_CHUNK"}"#,
    r#"{"type":"SUBAGENT_STARTED","name":"n"}"#,
    r#"{"type":"SUBAGENT_STARTED","subagentRunId":"","name":""}"#,
    // Types 1.0 does not have: carried as they came.
    r#"{"type":"THINKING_START"}"#,
    r#"{"type":"HOLOGRAM","beam":{"z":1,"a":0.30000000000000004,"b":1848.6618961806582}}"#,
];

/// Runs `tests/agui/agree.mjs` on `(input, output)` pairs.
fn agree(cases: &[(String, Option<String>)]) -> Vec<Value> {
    let input: Vec<Value> = cases
        .iter()
        .map(|(input, output)| json!({"input": input, "output": output}))
        .collect();
    let mut child = Command::new("node")
        .arg(agui_dir().join("agree.mjs"))
        .current_dir(agui_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let input = serde_json::to_vec(&input).expect("serialisable");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("the cases reach node");
    let output = child.wait_with_output().expect("node ends");
    assert!(
        output.status.success(),
        "agree.mjs failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(results.len(), cases.len());
    results
}

/// The maximal fixture with each member, at every depth, removed or replaced by a value of
/// each JSON kind.
fn mutations() -> Vec<String> {
    fn walk(root: &Value, at: &mut Vec<Value>, out: &mut Vec<String>) {
        let node = at.iter().fold(root, |v, step| match step {
            Value::String(key) => &v[key.as_str()],
            index => &v[index.as_u64().unwrap() as usize],
        });
        let steps: Vec<Value> = match node {
            Value::Object(members) => members.keys().map(|k| json!(k)).collect(),
            Value::Array(items) => (0..items.len()).map(|i| json!(i)).collect(),
            _ => return,
        };
        for step in steps {
            if at.is_empty() && step == "type" {
                continue;
            }
            at.push(step);
            let replacements = [json!(null), json!(""), json!("s"), json!(0), json!(-1)];
            let more = [json!(1.5), json!(true), json!([]), json!({})];
            for replacement in replacements.into_iter().chain(more).map(Some).chain([None]) {
                let mut event = root.clone();
                let (last, parents) = at.split_last().unwrap();
                let parent = parents.iter().fold(&mut event, |v, step| match step {
                    Value::String(key) => &mut v[key.as_str()],
                    index => &mut v[index.as_u64().unwrap() as usize],
                });
                match (parent, last, replacement) {
                    (parent, Value::String(key), Some(value)) => parent[key.as_str()] = value,
                    (parent, index, Some(value)) => {
                        parent[index.as_u64().unwrap() as usize] = value
                    }
                    (Value::Object(members), Value::String(key), None) => {
                        members.remove(key);
                    }
                    (Value::Array(items), index, None) => {
                        items.remove(index.as_u64().unwrap() as usize);
                    }
                    _ => unreachable!(),
                }
                out.push(event.to_string());
            }
            walk(root, at, out);
            at.pop();
        }
    }
    let mut out = Vec::new();
    for event in fixtures() {
        out.push(event.to_string());
        walk(&event, &mut Vec::new(), &mut out);
    }
    out
}

/// Every case of [`TABLE`], and every mutation of the maximal fixture, read by the model and by
/// `@ag-ui/core` 1.0.0's `EventSchemas` (one node process for all of them):
/// * what the official schemas accept, the model accepts, and writes back as the same value
///   to a JavaScript client (every number the same) and valid;
/// * what they refuse, the model refuses, except what its docs say it carries: an optional
///   member set to `null`, written as absent (and the result valid), and an event of a type 1.0
///   does not have, written back unchanged.
#[test]
#[cfg_attr(missing_node, ignore = "node not found (see build.rs)")]
fn the_model_agrees_with_the_official_schemas_case_by_case() {
    if !node_available() {
        return;
    }
    let inputs: Vec<String> = TABLE
        .iter()
        .map(|case| (*case).to_owned())
        .chain(mutations())
        .collect();
    let cases: Vec<(String, Option<String>)> = inputs
        .into_iter()
        .map(|input| {
            let output = serde_json::from_str::<AgUiEvent>(&input)
                .ok()
                .filter(|event| event.validate().is_ok())
                .map(|event| serde_json::to_string(&event).expect("serialises"));
            (input, output)
        })
        .collect();
    let mut disagreements = Vec::new();
    for ((input, output), result) in cases.iter().zip(agree(&cases)) {
        let official = &result["input"];
        let written_valid = result["output"]["valid"] == true;
        let problem = match output {
            None if official["valid"] == true => Some("the model refuses it"),
            None => None,
            Some(_) if official["valid"] == true => {
                if result["equal"] != true {
                    Some("the model writes back another value")
                } else if !written_valid {
                    Some("the model writes back an invalid event")
                } else {
                    None
                }
            }
            Some(_) => {
                let event: Value = serde_json::from_str(input).unwrap();
                let has_null = event
                    .as_object()
                    .is_some_and(|members| members.values().any(Value::is_null));
                let unknown_type = event["type"]
                    .as_str()
                    .is_some_and(|t| !AgUiEvent::TYPES.contains(&t));
                // The two documented exceptions: an unknown type passed on unchanged, and an
                // optional member set to `null` written as absent.
                let passed_on = unknown_type && result["equal"] == true;
                let null_as_absent = has_null
                    && !unknown_type
                    && result["equalWithoutNulls"] == true
                    && written_valid;
                (!passed_on && !null_as_absent)
                    .then_some("the model accepts what the schemas refuse")
            }
        };
        if let Some(problem) = problem {
            disagreements.push(format!(
                "{problem}: {input}\n  official: {official}\n  written: {output:?}"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}

/// Events written as the model writes them (its member order, compact), with floats as
/// producers write them (shortest digits): what a client reads must be the published bytes.
const AS_PUBLISHED: &[&str] = &[
    r#"{"type":"STATE_SNAPSHOT","snapshot":{"price":1848.6618961806582,"ratio":0.30000000000000004,"tiny":7.406314525215744e-8}}"#,
    r#"{"type":"CUSTOM","name":"gauge","value":[940921927.1491903,1.2949993227701215e-13]}"#,
];

/// Through the demo server (POST, then the raw `data` of the user's stream, of the context
/// stream's wrapper, and of a thread stream's opening, read by the independent
/// `eventsource-stream` parser), an event comes out as the bytes that were published: every
/// number the same, not a neighbour of it.
#[tokio::test]
async fn numbers_reach_a_client_as_published() {
    let server = DemoServer::start();
    let client = client();
    let url = server.url("/events/agui/numbers");
    let context_url = server.url("/events/context/numbers");
    let mut stream = SseStream::connect(&client, &url).await;
    let mut context = SseStream::connect(&client, &context_url).await;
    for text in AS_PUBLISHED {
        let reply = support::post(&client, &url, *text).await;
        assert_eq!(
            reply.status,
            reqwest::StatusCode::ACCEPTED,
            "{}",
            reply.text()
        );
        assert_eq!(stream.next_event().await.data, *text, "the AG-UI stream");
        let wrapped = format!(r#"{{"protocol":"agui","event":{text}}}"#);
        assert_eq!(
            context.next_event().await.data,
            wrapped,
            "the context stream"
        );
    }
    // A thread's opening is rebuilt from its folded state.
    let thread_url = server.url("/events/agui/numbers?thread=t-1");
    let started = r#"{"type":"RUN_STARTED","threadId":"t-1","runId":"r-1"}"#;
    for text in [started, AS_PUBLISHED[0]] {
        let reply = support::post(&client, &thread_url, text).await;
        assert_eq!(
            reply.status,
            reqwest::StatusCode::ACCEPTED,
            "{}",
            reply.text()
        );
    }
    let mut opening = SseStream::connect(&client, &thread_url).await;
    loop {
        let event = opening.next_event().await;
        if event.data.contains("STATE_SNAPSHOT") {
            assert_eq!(event.data, AS_PUBLISHED[0], "a thread's opening");
            break;
        }
    }
}
