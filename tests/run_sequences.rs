//! Runs as users meet them, judged by the official AG-UI client at every cut: several runs one
//! after another in a thread, a run that ends in `RUN_ERROR` then the next, `MESSAGES_SNAPSHOT`
//! mid-run, `CUSTOM` / `RAW` events, reasoning as chunks, activities; and over HTTP, a thread
//! that the user's channel forgot mid-run (it held its maximum of threads).

mod common;
mod support_agui;

use serde_json::{Value, json};
use sse_hub::models::AgUiEvent;
use sse_hub::run_state::ThreadRun;
use sse_hub::{Channel, Config, EventRouter, LastEventId, ThreadId, ThreadQuery, UserId};
use support_agui::{Case, Conn, Run, check, frames};

fn joined_at(events: &[String], cut: usize) -> String {
    let mut t = ThreadRun::default();
    for e in &events[..cut] {
        let outcome = t.fold(e.as_bytes());
        assert!(outcome.folded(), "{outcome:?} for {e}");
    }
    String::from_utf8(t.opening().to_sse()).unwrap() + &frames(&events[cut..])
}

fn every_cut(name: &str, run: &Run) {
    let cases: Vec<Case> = (0..=run.events.len())
        .map(|cut| Case {
            name: format!(
                "{name}: cut {cut} (before {})",
                run.events.get(cut).map_or("end", |e| &e[..e.len().min(60)])
            ),
            connections: vec![joined_at(&run.events, cut)],
            reference: 0,
        })
        .collect();
    check(vec![vec![frames(&run.events)]], &cases);
}

#[test]
fn runs_one_after_another_one_ending_in_run_error_rebuild_at_every_cut() {
    let mut r = Run::new("t");
    r.run_started("run-1", &[("u1", "Hi")]);
    r.push(json!({"type":"STEP_STARTED","stepName":"s"}));
    r.push(json!({"type":"TEXT_MESSAGE_START","messageId":"a1","role":"assistant"}));
    r.push(json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"a1","delta":"Hel"}));
    r.push(json!({"type":"RUN_ERROR","message":"boom","code":"E"}));
    r.run_started("run-2", &[("u1", "Hi"), ("u2", "Again")]);
    r.text("a2", 5, &[]);
    r.run_finished("run-2");
    r.run_started("run-3", &[("u3", "Third")]);
    r.text("a3", 3, &[]);
    r.run_finished("run-3");
    every_cut("error then next", &r);
}

#[test]
fn messages_snapshots_mid_run_rebuild_at_every_cut() {
    let mut r = Run::new("t");
    r.run_started("run-1", &[("u1", "Hi")]);
    r.text("a1", 3, &[]);
    r.push(json!({"type":"MESSAGES_SNAPSHOT","messages":[
        {"id":"u0","role":"user","content":"earlier"},
        {"id":"u1","role":"user","content":"Hi"},
        {"id":"a1","role":"assistant","content":"The weather"}]}));
    r.push(json!({"type":"TEXT_MESSAGE_START","messageId":"a2","role":"assistant"}));
    r.push(json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"a2","delta":"x"}));
    r.push(json!({"type":"MESSAGES_SNAPSHOT","messages":[
        {"id":"u1","role":"user","content":"Hi"},
        {"id":"a2","role":"assistant","content":"xy"}]}));
    r.push(json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"a2","delta":"z"}));
    r.push(json!({"type":"TEXT_MESSAGE_END","messageId":"a2"}));
    r.run_finished("run-1");
    every_cut("messages snapshot", &r);
}

#[test]
fn custom_raw_reasoning_chunks_and_activities_rebuild_at_every_cut() {
    let mut r = Run::new("t");
    r.run_started("run-1", &[("u1", "Hi")]);
    r.push(json!({"type":"CUSTOM","name":"x","value":{"a":1}}));
    r.push(json!({"type":"RAW","event":{"k":"v"},"source":"s"}));
    r.push(json!({"type":"REASONING_START","messageId":"r1"}));
    r.push(json!({"type":"REASONING_MESSAGE_CHUNK","messageId":"rm1","delta":"thin"}));
    r.push(json!({"type":"REASONING_MESSAGE_CHUNK","delta":"king"}));
    r.push(json!({"type":"REASONING_END","messageId":"r1"}));
    r.push(json!({"type":"REASONING_START","messageId":"r2"}));
    r.push(json!({"type":"REASONING_MESSAGE_START","messageId":"rm2","role":"reasoning"}));
    r.push(json!({"type":"REASONING_MESSAGE_CONTENT","messageId":"rm2","delta":"more"}));
    r.push(json!({"type":"REASONING_ENCRYPTED_VALUE","subtype":"message","entityId":"rm2","encryptedValue":"enc"}));
    r.push(json!({"type":"REASONING_MESSAGE_END","messageId":"rm2"}));
    r.push(json!({"type":"REASONING_END","messageId":"r2"}));
    r.push(json!({"type":"ACTIVITY_SNAPSHOT","messageId":"act","activityType":"plan","content":{"steps":[]}}));
    r.push(json!({"type":"ACTIVITY_DELTA","messageId":"act","activityType":"plan","patch":[{"op":"add","path":"/steps/-","value":"a"}]}));
    r.push(json!({"type":"TOOL_CALL_START","toolCallId":"tc","toolCallName":"f"}));
    r.push(json!({"type":"TOOL_CALL_ARGS","toolCallId":"tc","delta":"{\"a\""}));
    r.push(json!({"type":"REASONING_ENCRYPTED_VALUE","subtype":"tool-call","entityId":"tc","encryptedValue":"e2"}));
    r.push(json!({"type":"TOOL_CALL_ARGS","toolCallId":"tc","delta":":1}"}));
    r.push(json!({"type":"TOOL_CALL_END","toolCallId":"tc"}));
    r.push(json!({"type":"STATE_SNAPSHOT","snapshot":{"a":[1]}}));
    r.push(json!({"type":"STATE_DELTA","delta":[{"op":"add","path":"/a/-","value":2}]}));
    r.push(json!({"type":"CUSTOM","name":"y","value":null}));
    r.push(json!({"type":"STATE_DELTA","delta":[{"op":"add","path":"/b","value":{}}]}));
    r.run_finished("run-1");
    every_cut("custom raw reasoning", &r);
}

/// `GET /events/agui/{user}?thread=`, as an application serves it.
async fn stream(
    axum::extract::State(router): axum::extract::State<EventRouter>,
    axum::extract::Path(user): axum::extract::Path<String>,
    ThreadQuery(thread): ThreadQuery,
    last_event_id: LastEventId,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let thread = thread.expect("a thread stream");
    router
        .channel_response_in_thread(Channel::AgUi, &UserId::from(user), &thread, &last_event_id)
        .into_response()
}

/// An application serving `GET /events/agui/{user}?thread=` from one router, on a loopback
/// port: the tests publish into mia's threads and open tabs of her thread `t1`.
struct App {
    router: EventRouter,
    server: common::TestServer,
    client: reqwest::Client,
}

impl App {
    async fn start(config: Config) -> Self {
        let router = EventRouter::new(config);
        let app = axum::Router::new()
            .route("/events/agui/{user}", axum::routing::get(stream))
            .with_state(router.clone());
        Self {
            router,
            server: common::TestServer::start(app).await,
            client: common::http_client(),
        }
    }

    /// A tab of mia's thread `t1`, opened now.
    async fn open_tab(&self) -> Conn {
        let url = self.server.url("/events/agui/mia?thread=t1");
        Conn::open(&self.client, &url, None).await
    }

    /// Publishes `event` (AG-UI JSON) into mia's `thread`.
    fn publish(&self, thread: &str, event: &str) {
        let event: AgUiEvent = serde_json::from_str(event).unwrap();
        let thread = ThreadId::new(thread).unwrap();
        self.router
            .route_agui_in_thread(&UserId::from("mia"), &thread, &event)
            .unwrap();
    }
}

/// The official client ends a tab that joined (`joined`: its one connection, which `name`
/// describes) with what the tab present from the start (`present`) ends with.
fn assert_ends_as_present(present: String, name: &str, joined: String) {
    check(
        vec![vec![present]],
        &[Case {
            name: name.into(),
            connections: vec![joined],
            reference: 0,
        }],
    );
}

/// The `data:` of each frame of a connection's text.
fn datas(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// A user with one thread allowed: thread `t1` is forgotten mid-answer when `t2` is published
/// to, and its run goes on. A tab that joins `t1` then cannot be given the run (its start is
/// gone): its stream must say so in-band, as an AG-UI event the official client understands,
/// and the loss is counted. It had opened with nothing, and the client refused the next token
/// ("First event must be 'RUN_STARTED'") with nothing said; then, told, it was sent the rest of
/// the run, which the client refuses after a `RUN_ERROR` (so it never took the next run). The
/// thread's next run opens whole (its input carries the thread's messages, as the client sends
/// them): the tab that joined the forgotten run, and one joining the next, end with what a tab
/// present from the start ends with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_forgotten_mid_run_says_so_in_band_and_its_next_run_opens_whole() {
    let mut config = Config::default();
    config.threads.max_threads_per_user = 1;
    let app = App::start(config).await;

    let mut run = Run::new("t1");
    run.run_started("run-1", &[("u1", "Hi")]);
    run.text("a1", 20, &[(10, "forgotten"), (13, "joined")]);
    run.run_finished("run-1");
    let answer: String = (0..20).map(support_agui::token).collect();
    run.push(
        json!({"type": "RUN_STARTED", "threadId": "t1", "runId": "run-2", "input": {
        "threadId": "t1", "runId": "run-2", "tools": [], "context": [], "state": {},
        "forwardedProps": {}, "messages": [
            {"id": "u1", "role": "user", "content": "Hi"},
            {"id": "a1", "role": "assistant", "content": answer},
            {"id": "u2", "role": "user", "content": "More?"}]}}),
    );
    run.text("a2", 6, &[(3, "second run")]);
    run.push(
        json!({"type": "RUN_FINISHED", "threadId": "t1", "runId": "run-2", "result": "done-2"}),
    );
    let (forgotten, joined_at, second_at) =
        (run.at("forgotten"), run.at("joined"), run.at("second run"));

    let mut present = app.open_tab().await;
    for e in &run.events[..forgotten] {
        app.publish("t1", e);
    }
    app.publish(
        "t2",
        r#"{"type":"RUN_STARTED","threadId":"t2","runId":"other"}"#,
    );
    assert_eq!(app.router.agui().stats().threads_evicted, 1);
    for e in &run.events[forgotten..joined_at] {
        app.publish("t1", e);
    }
    let mut joined = app.open_tab().await;
    for e in &run.events[joined_at..second_at] {
        app.publish("t1", e);
    }
    let mut later = app.open_tab().await;
    for e in &run.events[second_at..] {
        app.publish("t1", e);
    }
    for conn in [&mut present, &mut joined, &mut later] {
        conn.wait_for("done-2").await;
    }
    let (present, joined, later) = (present.close(), joined.close(), later.close());

    let first = datas(&joined).into_iter().next();
    assert!(
        first.as_ref().is_some_and(
            |e| e["type"] == "RUN_ERROR" && e["code"] == sse_hub::run_state::RUN_UNKNOWN_CODE
        ),
        "a tab joining the forgotten run is not told that it cannot be rebuilt: it opens with \
         {first:?}"
    );
    assert!(
        app.router.agui().stats().thread_states_unknown >= 1,
        "the run that cannot be rebuilt is not counted: {:?}",
        app.router.agui().stats()
    );
    // Told, then not sent the rest of the run it cannot be shown (the client refuses anything
    // but a `RUN_STARTED` after a `RUN_ERROR`): the client accepts the stream, the next run
    // whole.
    assert_ends_as_present(present.clone(), "joined the forgotten run", joined);
    assert_ends_as_present(present, "joined the run after the forgotten one", later);
}

/// A run that cannot be rebuilt folds back from its opening (a backplane's snapshot is the
/// opening) to the same state, and the thread's next `RUN_STARTED` starts afresh: what the
/// thread folded of the unknown run (a message started after the thread was forgotten) is not
/// put before the next run's messages, which come from its input.
#[test]
fn a_run_that_cannot_be_rebuilt_folds_back_from_its_opening_and_the_next_run_starts_afresh() {
    let mut t = ThreadRun::default();
    for e in [
        json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"a1","delta":"lo"}),
        json!({"type":"TEXT_MESSAGE_END","messageId":"a1"}),
        json!({"type":"TEXT_MESSAGE_START","messageId":"a2","role":"assistant"}),
        json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"a2","delta":"part"}),
    ] {
        t.fold(e.to_string().as_bytes());
    }
    assert!(t.run_unknown());
    let opening = t.opening();
    let mut back = ThreadRun::default();
    for e in opening.events() {
        back.fold(e);
    }
    assert!(back.run_unknown());
    assert_eq!(back.opening(), opening);

    let next = json!({"type":"RUN_STARTED","threadId":"t","runId":"r2","input":{
        "threadId":"t","runId":"r2","tools":[],"context":[],"state":{},"forwardedProps":{},
        "messages":[{"id":"u1","role":"user","content":"Hi"},
                    {"id":"a2","role":"assistant","content":"partial and more"},
                    {"id":"u2","role":"user","content":"Next"}]}});
    for t in [&mut t, &mut back] {
        assert!(t.fold(next.to_string().as_bytes()).folded());
        assert!(!t.run_unknown());
        let o: Vec<Value> = t
            .opening()
            .events()
            .map(|e| serde_json::from_slice(e).unwrap())
            .collect();
        assert_eq!(o[0]["type"], "RUN_STARTED");
        assert_eq!(
            o[1]["messages"], next["input"]["messages"],
            "the next run opens as its input has it"
        );
    }
}

/// An agent that fails before its run starts sends a `RUN_ERROR` alone, which the official
/// client accepts as a stream's first event: a whole (failed) run, not the rest of a run whose
/// start the thread lost. It was taken for one: a tab that joined got a `RUN_ERROR`
/// `run_unknown` ("this run began before what the server holds...") in place of the agent's
/// own error, which the tab present got, and the thread was counted unknown (and logged at
/// `warn`) though nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_before_it_starts_is_not_taken_for_a_run_the_thread_lost() {
    let app = App::start(Config::default()).await;

    let mut present = app.open_tab().await;
    app.publish(
        "t1",
        r#"{"type":"RUN_ERROR","message":"quota exceeded","code":"rate_limited"}"#,
    );
    present.wait_for("rate_limited").await;
    let mut joined = app.open_tab().await;
    let mut run = Run::new("t1");
    run.run_started("run-1", &[("u1", "Hi")]);
    run.text("a1", 3, &[]);
    run.run_finished("run-1");
    for e in &run.events {
        app.publish("t1", e);
    }
    for conn in [&mut present, &mut joined] {
        conn.wait_for("RUN_FINISHED").await;
    }
    let (present, joined) = (present.close(), joined.close());

    let unknown: Vec<Value> = datas(&joined)
        .into_iter()
        .filter(|e| e["code"] == sse_hub::run_state::RUN_UNKNOWN_CODE)
        .collect();
    assert!(
        unknown.is_empty(),
        "a tab that joined after the agent's own RUN_ERROR is told the run cannot be rebuilt: \
         {unknown:?}"
    );
    assert_eq!(
        app.router.agui().stats().thread_states_unknown,
        0,
        "nothing was lost, yet the thread is counted unknown"
    );
    assert_ends_as_present(
        present,
        "joined after a run that failed before it started",
        joined,
    );
}
