//! Each counter counts exactly what its doc says in the edge cases a user alerts on: a stream
//! dropped while its body held a frame back, a thread stream's opening, a thread subscription
//! that lagged. Delivery counters are checked through a real server on 127.0.0.1:0 and a real
//! HTTP client; the metrics through a `metrics_util` debugging recorder installed around the
//! broadcaster's creation (its handles then count from any thread).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::seen::SeenStates;
use common::{Served, SseClient, TestServer, WAIT, count, http_client, wait_until};
use futures_util::{FutureExt, StreamExt};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};
use sse_hub::metrics::{
    EVENTS_MISSED, FRAMES_DELIVERED, LAG_EVENTS, RESETS, SUBSCRIBES_REJECTED, THREAD_STATE_BYTES,
    THREAD_STATES_TRIMMED, THREAD_STATES_UNKNOWN, THREADS_EVICTED,
};
use sse_hub::{
    Broadcaster, Config, Frame, FrameKind, LagPolicy, LastEventId, SseResponse, Subscription,
    ThreadId, UserId,
};
use tokio::task::unconstrained;

type Hub = Broadcaster<Value>;

/// Counters summed across the debugging recorder's snapshots (each snapshot resets them).
struct Counters {
    snapshotter: Snapshotter,
    totals: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
}

impl Counters {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            totals: BTreeMap::new(),
            gauges: BTreeMap::new(),
        }
    }

    /// A counter's total so far, for the one broadcaster each test creates.
    fn get(&mut self, name: &str) -> u64 {
        self.get_with(name, None)
    }

    /// A gauge's value: sse-hub moves gauges by deltas and each snapshot resets them, so the
    /// snapshots add up.
    fn gauge(&mut self, name: &str) -> f64 {
        self.get(name);
        self.gauges.get(name).copied().unwrap_or(0.0)
    }

    /// A counter's total so far, for one `reason` label when given.
    fn get_with(&mut self, name: &str, reason: Option<&str>) -> u64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            if let DebugValue::Gauge(v) = value {
                *self.gauges.entry(key.key().name().to_owned()).or_default() += v.into_inner();
                continue;
            }
            if let DebugValue::Counter(n) = value {
                let key = key.key();
                let series = match key.labels().find(|l| l.key() == "reason") {
                    Some(label) => format!("{}|{}", key.name(), label.value()),
                    None => key.name().to_owned(),
                };
                *self.totals.entry(series).or_default() += n;
            }
        }
        let series = match reason {
            Some(reason) => format!("{name}|{reason}"),
            None => name.to_owned(),
        };
        self.totals.get(&series).copied().unwrap_or(0)
    }
}

/// A broadcaster created under `recorder`, so that its metrics count there.
fn hub_under(recorder: &DebuggingRecorder, config: Config) -> Hub {
    metrics::with_local_recorder(recorder, || Hub::new(config))
}

/// Marks every published event's data, so that a chunk's events can be counted in its bytes.
const MARK: &[u8] = b"\"mark\"";

/// `GET /events/{user}` serving the broadcaster's own SSE body, with every chunk the body hands
/// to the HTTP server counted (by its events) on the way: what "handed to the connection" is.
async fn counted_events(
    State((hub, handed)): State<(Hub, Arc<AtomicU64>)>,
    Path(user): Path<String>,
    last_event_id: LastEventId,
) -> Response {
    let subscription = match hub.subscribe_from(&UserId::from(user), last_event_id.as_deref()) {
        Ok(subscription) => subscription,
        Err(error) => return error.into_response(),
    };
    let body = SseResponse::new(subscription, hub.config().sse.clone())
        .into_stream()
        .inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                handed.fetch_add(count(chunk, MARK) as u64, Ordering::Relaxed);
            }
        });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

/// A client that resumes into a backlog far larger than the socket buffers hold, reads a little
/// and goes away: the server's body is dropped mid-backlog, when it holds the frame that did
/// not fit in its last chunk (every chunk is two frames of 6 KiB, `MAX_CHUNK` being 16 KiB).
/// `frames_delivered` must count the frames the body handed to the server, not that one.
async fn a_stream_dropped_mid_backlog_counts_what_its_body_handed_over(lean: Option<bool>) {
    const BACKLOG: usize = 2_000;
    let recorder = DebuggingRecorder::new();
    let mut counters = Counters::new(&recorder);
    let mut config = Config::named("dropped");
    config.retention = Duration::from_secs(3600);
    config.replay_events = BACKLOG;
    config.replay_bytes = 64 << 20;
    let hub = hub_under(&recorder, config);
    let alice = UserId::from("alice");
    let start = hub.subscribe(&alice).unwrap().start_id().to_string();
    let pad = "x".repeat(6 * 1024);
    for n in 0..BACKLOG {
        hub.broadcast(&alice, &json!({ "mark": n, "pad": pad }))
            .unwrap();
    }
    let handed = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/events/{user}", get(counted_events))
        .with_state((hub.clone(), handed.clone()));
    let (url, _server) = match lean {
        None => {
            let server = TestServer::start(app).await;
            (server.events_url("alice"), Err(server))
        }
        Some(lean) => {
            let served = Served::start(app, lean, || {}).await;
            (served.events_url("alice"), Ok(served))
        }
    };

    let client = http_client();
    let mut tab = SseClient::resume(&client, &url, &start).await;
    tab.read_raw_until(WAIT, |raw| count(raw, MARK) >= 10).await;
    let received = count(tab.raw(), MARK) as u64;
    drop(tab);
    wait_until("the server to drop the stream", WAIT, || {
        hub.stats().connections == 0
    })
    .await;

    let handed = handed.load(Ordering::Relaxed);
    assert!(
        handed < BACKLOG as u64,
        "the body was dropped mid-backlog ({handed} of {BACKLOG} handed over)"
    );
    assert!(received <= handed);
    assert_eq!(
        counters.get(FRAMES_DELIVERED),
        handed,
        "frames_delivered counts the frames handed to the server, not one held back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_delivered_counts_what_a_dropped_body_handed_to_axum_serve() {
    a_stream_dropped_mid_backlog_counts_what_its_body_handed_over(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_delivered_counts_what_a_dropped_body_handed_to_the_lean_http1_path() {
    a_stream_dropped_mid_backlog_counts_what_its_body_handed_over(Some(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_delivered_counts_what_a_dropped_body_handed_to_hyper_under_sse_hub_serve() {
    a_stream_dropped_mid_backlog_counts_what_its_body_handed_over(Some(false)).await;
}

/// `GET /events/{user}?thread=T`: the thread's stream, as an application serves it.
async fn thread_events(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    sse_hub::ThreadQuery(thread): sse_hub::ThreadQuery,
    last_event_id: LastEventId,
) -> Response {
    let thread = thread.expect("the tests name a thread");
    hub.sse_response_in_thread(&UserId::from(user), &thread, &last_event_id)
        .into_response()
}

/// A thread stream's opening is the thread's state, not a published event: the documented
/// count leaves it out, and counts the events that follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_streams_opening_is_not_counted_delivered_and_its_events_are() {
    let recorder = DebuggingRecorder::new();
    let mut counters = Counters::new(&recorder);
    let mut config = Config::named("opening");
    config.threads.state = Some(Arc::new(SeenStates));
    let hub = hub_under(&recorder, config);
    let alice = UserId::from("alice");
    let run = ThreadId::new("run").unwrap();
    for n in 0..3 {
        hub.broadcast_in_thread(&alice, &run, &json!({ "n": n }))
            .unwrap();
    }
    let app = Router::new()
        .route("/events/{user}", get(thread_events))
        .with_state(hub.clone());
    let server = TestServer::start(app).await;
    let client = http_client();
    let url = format!("{}?thread=run", server.events_url("alice"));
    let mut tab = SseClient::open(&client, &url, None).await;
    let opening = tab.expect_event().await;
    assert_eq!(opening.data, r#"{"seen":[0,1,2]}"#);
    for n in 3..5 {
        hub.broadcast_in_thread(&alice, &run, &json!({ "n": n }))
            .unwrap();
        let event = tab.expect_event().await;
        assert_eq!(event.data, format!(r#"{{"n":{n}}}"#));
    }
    drop(tab);
    wait_until("the server to drop the stream", WAIT, || {
        hub.stats().connections == 0
    })
    .await;
    assert_eq!(
        counters.get(FRAMES_DELIVERED),
        2,
        "the two events, not the opening"
    );
}

/// Everything a subscription yields right now, without waiting.
fn drain(sub: &mut Subscription<Value>) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(Some(frame)) = unconstrained(sub.next()).now_or_never() {
        frames.push(frame);
    }
    frames
}

/// A thread subscription that lags reports (in `lagged`, `Stats::events_missed` and the metric)
/// its own events the window still held but its policy skipped, plus every event the window
/// dropped from the gap, whichever thread it was of: the window no longer knows. Under
/// `Recover` only the latter, since it delivers the former. Either way at least its own losses.
#[tokio::test]
async fn a_lagging_thread_subscription_counts_its_skipped_events_and_every_dropped_one() {
    for policy in [LagPolicy::Notify, LagPolicy::Recover] {
        let recorder = DebuggingRecorder::new();
        let mut counters = Counters::new(&recorder);
        let mut config = Config::named("missed");
        config.capacity = 8;
        config.replay_events = 12;
        let hub = hub_under(&recorder, config);
        let alice = UserId::from("alice");
        let (a, b) = (ThreadId::new("a").unwrap(), ThreadId::new("b").unwrap());
        let mut tab = hub
            .subscribe_in_thread(&alice, &a, None)
            .unwrap()
            .with_lag_policy(policy);
        // Events 1..=20, odd ones of `a`. The ring keeps 13..=20 and the window 9..=20: the gap
        // is 1..=12, of which the window dropped 1..=8 (4 of them `a`'s) and holds 9 and 11.
        for n in 1..=20u64 {
            let thread = if n % 2 == 1 { &a } else { &b };
            hub.broadcast_in_thread(&alice, thread, &json!({ "n": n }))
                .unwrap();
        }
        let frames = drain(&mut tab);
        let missed: Vec<u64> = frames
            .iter()
            .filter_map(|f| match f.kind() {
                FrameKind::Lagged { missed } => Some(missed),
                _ => None,
            })
            .collect();
        let seqs: Vec<u64> = frames
            .iter()
            .filter_map(|f| f.id())
            .map(|id| id.seq())
            .collect();
        let (expected_missed, expected_seqs) = match policy {
            LagPolicy::Notify => (2 + 8, vec![13, 15, 17, 19]),
            _ => (8, vec![9, 11, 13, 15, 17, 19]),
        };
        assert_eq!(missed, vec![expected_missed], "{policy:?}");
        assert_eq!(seqs, expected_seqs, "{policy:?}");
        let stats = hub.stats();
        assert_eq!(stats.events_missed, expected_missed, "{policy:?}");
        assert_eq!(stats.lag_events, 1, "{policy:?}");
        assert_eq!(counters.get(EVENTS_MISSED), expected_missed, "{policy:?}");
        assert_eq!(counters.get(LAG_EVENTS), 1, "{policy:?}");
        // Its own losses: 1, 3, 5, 7, and under `Notify` 9 and 11 too.
        let own_lost = 4 + if policy == LagPolicy::Notify { 2 } else { 0 };
        assert!(expected_missed >= own_lost);
    }
}

/// Over HTTP, a reset resume, a refused subscribe, a replay and a shutdown: `frames_delivered`
/// counts the replayed and live events each stream got, never the `reset`; each refusal is
/// counted once by reason, and opens no connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_a_refusal_a_replay_and_a_shutdown_count_what_their_docs_say() {
    let recorder = DebuggingRecorder::new();
    let mut counters = Counters::new(&recorder);
    let mut config = Config::named("edges");
    config.retention = Duration::from_secs(3600);
    config.max_connections_per_user = 1;
    let hub = hub_under(&recorder, config);
    let alice = UserId::from("alice");
    let server = TestServer::start(common::router(hub.clone())).await;
    let client = http_client();
    let url = server.events_url("alice");

    // A reset: a control frame, not a delivered event.
    let mut reset = SseClient::resume(&client, &url, "garbage").await;
    let first = reset.expect_event().await;
    assert_eq!(first.event, "reset");
    let start = hub.subscribe(&alice);
    assert!(start.is_err(), "one connection per user");
    drop(reset);
    wait_until("the reset stream to close", WAIT, || {
        hub.stats().connections == 0
    })
    .await;
    let start = hub.subscribe(&alice).unwrap().start_id().to_string();
    for n in 0..5 {
        hub.broadcast(&alice, &json!({ "mark": n })).unwrap();
    }

    // A replay of 5, a refusal, 2 live events, then the shutdown ends the stream.
    let mut tab = SseClient::resume(&client, &url, &start).await;
    for _ in 0..5 {
        tab.expect_event().await;
    }
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "too_many_connections");
    for n in 5..7 {
        hub.broadcast(&alice, &json!({ "mark": n })).unwrap();
        tab.expect_event().await;
    }
    hub.shutdown();
    assert!(tab.read_to_end(WAIT).await.is_empty());
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    wait_until("the stream to close", WAIT, || hub.stats().connections == 0).await;

    assert_eq!(counters.get(FRAMES_DELIVERED), 7, "5 replayed and 2 live");
    assert_eq!(counters.get_with(RESETS, Some("malformed")), 1);
    assert_eq!(hub.stats().resets, 1);
    // The in-process subscribe refused above, and the HTTP one.
    assert_eq!(
        counters.get_with(SUBSCRIBES_REJECTED, Some("too_many_connections")),
        2
    );
    assert_eq!(
        counters.get_with(SUBSCRIBES_REJECTED, Some("shutting_down")),
        1
    );
}

/// The thread-state counters count events, once each, as their docs say: `unknown` and
/// `trimmed` per event whose fold said so (not per thread), `evicted` per thread forgotten at
/// the cap; the bytes gauge follows the states, and falls by an evicted thread's bytes.
#[test]
fn thread_state_counters_count_each_event_and_eviction_once() {
    let recorder = DebuggingRecorder::new();
    let mut counters = Counters::new(&recorder);
    let mut config = Config::named("states");
    config.threads.state = Some(Arc::new(SeenStates));
    config.threads.max_threads_per_user = 2;
    let hub = hub_under(&recorder, config);
    let alice = UserId::from("alice");
    let (a, b, c) = (
        ThreadId::new("a").unwrap(),
        ThreadId::new("b").unwrap(),
        ThreadId::new("c").unwrap(),
    );
    let publish = |thread: &ThreadId, event: Value| {
        hub.broadcast_in_thread(&alice, thread, &event).unwrap();
    };
    for event in [
        json!({"n": 1}),
        json!({"fail": true}),
        json!({"fail": true}),
        json!({"n": 2}),
        json!({"trim": true}),
        json!({"n": 3}),
        json!({"trim": true}),
    ] {
        publish(&a, event);
    }
    for n in 0..4 {
        publish(&b, json!({ "n": n }));
    }
    let stats = hub.stats();
    assert_eq!(
        (stats.thread_states_unknown, stats.thread_states_trimmed),
        (2, 2)
    );
    assert_eq!(counters.get(THREAD_STATES_UNKNOWN), 2);
    assert_eq!(counters.get(THREAD_STATES_TRIMMED), 2);
    // `a` holds nothing (trimmed last), `b` four numbers of 8 bytes.
    assert_eq!(stats.thread_state_bytes, 32);
    assert_eq!(counters.gauge(THREAD_STATE_BYTES), 32.0);
    assert_eq!(counters.get(THREADS_EVICTED), 0);

    // A third thread at a cap of two forgets `a`, published to least recently.
    publish(&c, json!({"n": 9}));
    let stats = hub.stats();
    assert_eq!(stats.threads_evicted, 1);
    assert_eq!(counters.get(THREADS_EVICTED), 1);
    assert_eq!(stats.thread_state_bytes, 40);
    assert_eq!(counters.gauge(THREAD_STATE_BYTES), 40.0);
    // Evicting `b` next gives its 32 bytes back.
    publish(&a, json!({"n": 10}));
    assert_eq!(counters.get(THREADS_EVICTED), 2);
    assert_eq!(hub.stats().thread_state_bytes, 16);
    assert_eq!(counters.gauge(THREAD_STATE_BYTES), 16.0);
}
