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
