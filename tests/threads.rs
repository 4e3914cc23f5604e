//! Threads, as a user of the library relies on them, without HTTP: a subscription to one thread
//! gets that thread's events and nothing else; a publish into a thread is kept even when nobody
//! is connected; with a per-thread state, a connection opens with the state's opening and
//! continues with the live tail, with no gap and no duplicate at the seam, even while
//! publishes race the join.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::seen::SeenStates;
use futures_util::FutureExt;
use serde_json::{Value, json};
use sse_hub::{
    Broadcaster, Config, EndReason, Folded, Frame, FrameKind, Subscription, ThreadId, ThreadState,
    ThreadStates, UserId,
};
use tokio::task::unconstrained;
use tokio_stream::StreamExt;

type Hub = Broadcaster<Value>;

fn thread(name: &str) -> ThreadId {
    ThreadId::new(name).unwrap()
}

/// The JSON data lines of a frame (an opening holds several frames).
fn datas(frame: &Frame) -> Vec<Value> {
    std::str::from_utf8(frame.bytes())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Every frame the subscription has ready now (polled outside tokio's coop budget, so that
/// `Pending` means nothing is there).
fn ready<E>(sub: &mut sse_hub::Subscription<E>) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(Some(frame)) = unconstrained(sub.next()).now_or_never() {
        frames.push(frame);
    }
    frames
}

fn folding(config: Config) -> Hub {
    let mut config = config;
    config.threads.state = Some(Arc::new(SeenStates));
    Broadcaster::new(config)
}

#[tokio::test]
async fn a_thread_subscription_receives_its_thread_only_and_nothing_is_counted_lost() {
    let hub = Hub::new(Config::default());
    let alice = UserId::from("alice");
    let (a, b) = (thread("a"), thread("b"));
    let mut all = hub.subscribe(&alice).unwrap();
    let mut only_a = hub.subscribe_in_thread(&alice, &a, None).unwrap();
    // More than the ring's 8 slots between two events of `a`: the filter must not mistake the
    // other threads' frames for a gap.
    for n in 0..40u64 {
        let event = json!({ "n": n });
        match n % 4 {
            0 => hub.broadcast_in_thread(&alice, &a, &event),
            1 => hub.broadcast_in_thread(&alice, &b, &event),
            _ => hub.broadcast(&alice, &event),
        }
        .unwrap();
        if n % 4 == 0 {
            let got = ready(&mut only_a);
            assert_eq!(got.len(), 1, "one event of a per round");
        }
    }
    let everything: Vec<u64> = ready(&mut all)
        .iter()
        .flat_map(datas)
        .map(|d| d["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        everything,
        (0..40).collect::<Vec<_>>(),
        "no thread: everything, in order"
    );
    // `all` read nothing until the end: it lagged, and recovered everything from the window.
    assert_eq!(hub.stats().events_missed, 0);
}

/// `Delivery::Connections` is the connections the event reached: a connection to another
/// thread skips it, so it is not one of them, and a publish that only such connections could
/// see reached nobody (0, not "someone").
#[tokio::test]
async fn a_publish_counts_only_the_connections_that_receive_it() {
    let hub = Hub::new(Config::default());
    let alice = UserId::from("alice");
    let (a, b) = (thread("a"), thread("b"));
    let mut only_a = hub.subscribe_in_thread(&alice, &a, None).unwrap();
    let reached = |published: sse_hub::Published| published.connections();
    assert_eq!(
        reached(
            hub.broadcast_in_thread(&alice, &b, &json!({"n": 1}))
                .unwrap()
        ),
        Some(0)
    );
    assert_eq!(
        reached(hub.broadcast(&alice, &json!({"n": 2})).unwrap()),
        Some(0)
    );
    assert_eq!(
        reached(
            hub.broadcast_in_thread(&alice, &a, &json!({"n": 3}))
                .unwrap()
        ),
        Some(1)
    );
    let mut all = hub.subscribe(&alice).unwrap();
    let only_b = hub.subscribe_in_thread(&alice, &b, None).unwrap();
    assert_eq!(
        reached(
            hub.broadcast_in_thread(&alice, &b, &json!({"n": 4}))
                .unwrap()
        ),
        Some(2)
    );
    assert_eq!(
        reached(hub.broadcast(&alice, &json!({"n": 5})).unwrap()),
        Some(1)
    );
    drop(only_b);
    assert_eq!(
        reached(
            hub.broadcast_in_thread(&alice, &a, &json!({"n": 6}))
                .unwrap()
        ),
        Some(2)
    );
    // What each got is what was counted.
    let n = |frames: Vec<Frame>| -> Vec<u64> {
        frames
            .iter()
            .flat_map(datas)
            .map(|d| d["n"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(n(ready(&mut only_a)), [3, 6]);
    assert_eq!(n(ready(&mut all)), [4, 5, 6]);
}

#[tokio::test]
async fn a_thread_subscription_resumes_with_only_its_threads_events() {
    let hub = Hub::new(Config::default());
    let alice = UserId::from("alice");
    let (a, b) = (thread("a"), thread("b"));
    let mut first = hub.subscribe_in_thread(&alice, &a, None).unwrap();
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 1}))
        .unwrap();
    let last = ready(&mut first)[0].id().unwrap().to_string();
    drop(first);
    for n in 2..=30 {
        let t = if n % 3 == 0 { &a } else { &b };
        hub.broadcast_in_thread(&alice, t, &json!({ "n": n }))
            .unwrap();
    }
    let mut resumed = hub.subscribe_in_thread(&alice, &a, Some(&last)).unwrap();
    let replayed: Vec<u64> = ready(&mut resumed)
        .iter()
        .flat_map(datas)
        .map(|d| d["n"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, (3..=30).step_by(3).collect::<Vec<_>>());
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 31}))
        .unwrap();
    hub.broadcast_in_thread(&alice, &b, &json!({"n": 32}))
        .unwrap();
    let live: Vec<u64> = ready(&mut resumed)
        .iter()
        .flat_map(datas)
        .map(|d| d["n"].as_u64().unwrap())
        .collect();
    assert_eq!(live, [31], "the resume continues live without a gap");
}

#[tokio::test]
async fn a_publish_into_a_thread_is_kept_when_nobody_is_connected() {
    let hub = folding(Config::default());
    let alice = UserId::from("alice");
    let a = thread("a");
    let plain = hub.broadcast(&alice, &json!({"n": 0})).unwrap();
    assert_eq!(
        plain.id, None,
        "without a thread: nobody to keep it for, as before"
    );
    for n in 1..=3 {
        let published = hub
            .broadcast_in_thread(&alice, &a, &json!({ "n": n }))
            .unwrap();
        assert!(published.id.is_some(), "a thread's event is kept");
        assert_eq!(published.connections(), Some(0));
    }
    let mut late = hub.subscribe_in_thread(&alice, &a, None).unwrap();
    let frames = ready(&mut late);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].kind(), FrameKind::Opening);
    assert_eq!(datas(&frames[0]), [json!({"seen": [1, 2, 3]})]);
    assert!(hub.stats().thread_state_bytes > 0);
}

/// `Broadcaster::sweep` docs: expired channels are removed "lazily on subscribes and publishes
/// once something is due, and in one sweeper task per broadcaster while a tokio runtime runs".
/// A channel made by a publish into a thread (an agent's run for a page not open yet), on a
/// broadcaster nobody ever subscribed to, must be swept too when nothing else happens: the
/// sweeper used to be started only by a subscribe, and such a channel, its window and its thread
/// state stayed (and were counted in `Stats` and the `retained_channels` gauge) for ever.
#[tokio::test(start_paused = true)]
async fn a_channel_made_by_a_thread_publish_expires_without_further_traffic() {
    let mut config = Config::default();
    config.retention = Duration::from_secs(1);
    let hub: Broadcaster<Value> = Broadcaster::new(config);
    let user = UserId::from("ada");
    hub.broadcast_in_thread(&user, &thread("run-1"), &json!({"type": "started"}))
        .expect("publish");
    assert_eq!(hub.stats().retained_channels, 1);
    assert!(hub.stats().buffered_bytes > 0);
    // Ten times the retention, with the runtime running (paused time auto-advances).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        (hub.stats().retained_channels, hub.stats().buffered_bytes),
        (0, 0),
        "the channel outlived its retention tenfold: no sweeper was started for it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opening_and_the_live_tail_meet_without_gap_or_duplicate_under_concurrent_publishing() {
    let hub = folding(Config::default());
    let alice = UserId::from("alice");
    let a = thread("a");
    const EVENTS: u64 = 20_000;
    let publisher = {
        let (hub, alice, a) = (hub.clone(), alice.clone(), a.clone());
        std::thread::spawn(move || {
            for n in 1..=EVENTS {
                hub.broadcast_in_thread(&alice, &a, &json!({ "n": n }))
                    .unwrap();
                // Another thread's events interleave, and must not disturb the seam.
                if n % 5 == 0 {
                    hub.broadcast_in_thread(&alice, &thread("other"), &json!({ "x": n }))
                        .unwrap();
                }
            }
        })
    };
    let (mut joins, mut mid_run) = (0, 0);
    loop {
        let done = publisher.is_finished();
        let mut sub = hub.subscribe_in_thread(&alice, &a, None).unwrap();
        joins += 1;
        // Every number from 1 on, exactly once: the opening's, then the live tail's.
        let mut seen: Vec<u64> = Vec::new();
        let mut opened_with = 0;
        while let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_millis(100), sub.next()).await
        {
            for data in datas(&frame) {
                if frame.kind() == FrameKind::Opening {
                    assert!(seen.is_empty(), "the opening comes first");
                    let numbers = data["seen"].as_array().unwrap();
                    seen.extend(numbers.iter().map(|n| n.as_u64().unwrap()));
                    opened_with = seen.len();
                } else {
                    assert!(data.get("x").is_none(), "another thread's event: {data}");
                    seen.push(data["n"].as_u64().unwrap());
                }
            }
            // Leave after some of the live tail, and join again.
            if !done && seen.len() > opened_with + 200 {
                break;
            }
        }
        let expected: Vec<u64> = (1..=seen.len() as u64).collect();
        assert!(
            seen == expected,
            "join {joins}: a gap or a duplicate at the seam"
        );
        if opened_with > 0 && seen.len() > opened_with {
            mid_run += 1;
        }
        if done {
            assert_eq!(seen.len() as u64, EVENTS, "the last join has everything");
            break;
        }
    }
    publisher.join().unwrap();
    assert!(
        mid_run > 0,
        "at least one join opened mid-run and then got live events"
    );
    // A join that reads slower than the publisher falls behind the window and ends (counted
    // as missed); it was exact up to its end, which is what is checked above.
}

/// A ring of 2 slots and a window of 4 events: a stream that does not read loses events to the
/// ring after 2 publishes and to the window after 4.
fn tiny() -> Config {
    let mut config = Config::default();
    config.capacity = 2;
    config.replay_events = 4;
    config
}

/// alice's stream of her thread `a` (and `b`, another of her threads), with the first event of
/// `a`, `{"n": 1}`, published to it and not read yet.
fn watching_a(hub: &Hub) -> (UserId, ThreadId, ThreadId, Subscription<Value>) {
    let alice = UserId::from("alice");
    let (a, b) = (thread("a"), thread("b"));
    let sub = hub.subscribe_in_thread(&alice, &a, None).unwrap();
    hub.broadcast_in_thread(&alice, &a, &json!({ "n": 1 }))
        .unwrap();
    (alice, a, b, sub)
}

#[tokio::test]
async fn a_thread_stream_that_loses_events_ends_instead_of_signalling_in_band() {
    let config = tiny();
    let hub = folding(config);
    let alice = UserId::from("alice");
    let a = thread("a");
    let mut sub = hub.subscribe_in_thread(&alice, &a, None).unwrap();
    for n in 1..=20 {
        hub.broadcast_in_thread(&alice, &a, &json!({ "n": n }))
            .unwrap();
    }
    let frames = ready(&mut sub);
    assert!(
        frames
            .iter()
            .all(|f| f.kind() != FrameKind::Lagged { missed: 16 }
                && !matches!(f.kind(), FrameKind::Lagged { .. } | FrameKind::Reset(_))),
        "no control frame on a thread stream: {frames:?}"
    );
    assert_eq!(sub.end_reason(), Some(EndReason::Lagged));
    let stats = hub.stats();
    assert!(
        stats.events_missed > 0 && stats.lag_events > 0,
        "the loss is counted: {stats:?}"
    );
    // The reconnect opens from the state, which has everything.
    let mut again = hub.subscribe_in_thread(&alice, &a, None).unwrap();
    let opening = ready(&mut again);
    assert_eq!(
        datas(&opening[0]),
        [json!({"seen": (1..=20).collect::<Vec<_>>()})]
    );
}

#[tokio::test]
async fn an_event_the_state_cannot_apply_is_delivered_and_counted() {
    let hub = folding(Config::default());
    let alice = UserId::from("alice");
    let a = thread("a");
    let mut sub = hub.subscribe_in_thread(&alice, &a, None).unwrap();
    hub.broadcast_in_thread(&alice, &a, &json!({"fail": true}))
        .unwrap();
    let frames = ready(&mut sub);
    assert_eq!(
        datas(&frames[0]),
        [json!({"fail": true})],
        "delivered as published"
    );
    assert_eq!(hub.stats().thread_states_unknown, 1);
}

/// A thread stream reads its thread only: when the ring and the window overflow, frames of the
/// user's other threads are no loss to it (it goes on, with every event of its own), but an
/// event of its own that the window dropped is (it ends, to reopen from the state).
#[tokio::test]
async fn a_thread_stream_counts_as_lost_only_the_events_it_would_have_delivered() {
    let hub = folding(tiny());
    let (alice, a, b, mut sub) = watching_a(&hub);
    let got: Vec<Value> = ready(&mut sub).iter().flat_map(datas).collect();
    assert_eq!(got, [json!({"n": 1})]);
    for n in 100..120 {
        hub.broadcast_in_thread(&alice, &b, &json!({ "n": n }))
            .unwrap();
    }
    hub.broadcast_in_thread(&alice, &a, &json!({ "n": 2 }))
        .unwrap();
    let got: Vec<Value> = ready(&mut sub).iter().flat_map(datas).collect();
    assert_eq!(got, [json!({"n": 2})]);
    assert_eq!(sub.end_reason(), None);
    assert_eq!(hub.stats().events_missed, 0);

    // An event of its own amid the other thread's burst: dropped from the window, it is lost.
    hub.broadcast_in_thread(&alice, &a, &json!({ "n": 3 }))
        .unwrap();
    for n in 200..220 {
        hub.broadcast_in_thread(&alice, &b, &json!({ "n": n }))
            .unwrap();
    }
    hub.broadcast_in_thread(&alice, &a, &json!({ "n": 4 }))
        .unwrap();
    let frames = ready(&mut sub);
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(sub.end_reason(), Some(EndReason::Lagged));
}

/// An unthreaded event is not for a thread stream (it receives only its thread's events), so
/// one that the window dropped while the stream lagged is no loss to it either: a stream opened
/// from the state goes on, and one that resumes by id says nothing of a `lagged`.
#[tokio::test]
async fn an_unthreaded_event_dropped_from_the_window_is_no_loss_to_a_thread_stream() {
    let config = tiny();
    for hub in [folding(config.clone()), Hub::new(config)] {
        let alice = UserId::from("alice");
        let (a, b) = (thread("a"), thread("b"));
        let mut sub = hub.subscribe_in_thread(&alice, &a, None).unwrap();
        hub.broadcast_in_thread(&alice, &a, &json!({ "n": 1 }))
            .unwrap();
        // Not delivered to the thread stream, lag or no lag.
        hub.broadcast(&alice, &json!({ "note": "for every tab" }))
            .unwrap();
        hub.broadcast_in_thread(&alice, &a, &json!({ "n": 2 }))
            .unwrap();
        let got: Vec<Value> = ready(&mut sub).iter().flat_map(datas).collect();
        assert_eq!(got, [json!({"n": 1}), json!({"n": 2})]);

        hub.broadcast(&alice, &json!({ "note": "for every tab" }))
            .unwrap();
        for n in 200..220 {
            hub.broadcast_in_thread(&alice, &b, &json!({ "n": n }))
                .unwrap();
        }
        hub.broadcast_in_thread(&alice, &a, &json!({ "n": 3 }))
            .unwrap();
        let frames = ready(&mut sub);
        let got: Vec<Value> = frames.iter().flat_map(datas).collect();
        assert_eq!(got, [json!({"n": 3})], "{frames:?}");
        assert_eq!(sub.end_reason(), None);
        assert_eq!(hub.stats().events_missed, 0);
    }
}

/// A thread stream opened from the state that lost an event of its own ends without the frames
/// the window still had: they were not recovered, and `events_recovered` does not count them.
#[tokio::test]
async fn a_thread_stream_ended_by_a_loss_counts_nothing_recovered() {
    let hub = folding(tiny());
    let (alice, a, b, mut sub) = watching_a(&hub);
    for n in 100..110 {
        hub.broadcast_in_thread(&alice, &b, &json!({ "n": n }))
            .unwrap();
    }
    // The window keeps 2..5 of a, the ring 4 and 5: 1 is lost, 2 and 3 are in the window.
    for n in 2..=5 {
        hub.broadcast_in_thread(&alice, &a, &json!({ "n": n }))
            .unwrap();
    }
    let frames = ready(&mut sub);
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(sub.end_reason(), Some(EndReason::Lagged));
    assert_eq!(hub.stats().events_recovered, 0, "{:?}", hub.stats());
}

/// A thread state that panics while folding makes that publish panic, and nothing else: the
/// sequence number is taken only after the fold, so the user's other streams see no gap and are
/// neither ended nor told of a loss.
#[tokio::test]
async fn a_fold_that_panics_leaves_no_gap_in_the_users_other_streams() {
    let hub = folding(Config::default());
    let alice = UserId::from("alice");
    let (a, b) = (thread("a"), thread("b"));
    let mut only_b = hub.subscribe_in_thread(&alice, &b, None).unwrap();
    let mut all = hub.subscribe(&alice).unwrap();
    hub.broadcast_in_thread(&alice, &b, &json!({"n": 1}))
        .unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hub.broadcast_in_thread(&alice, &a, &json!({"panic": true}))
    }));
    assert!(panicked.is_err());
    hub.broadcast_in_thread(&alice, &b, &json!({"n": 2}))
        .unwrap();
    let got: Vec<Value> = ready(&mut only_b).iter().flat_map(datas).collect();
    assert_eq!(got, [json!({"n": 1}), json!({"n": 2})]);
    assert_eq!(only_b.end_reason(), None);
    let frames = ready(&mut all);
    assert!(
        frames
            .iter()
            .all(|f| matches!(f.kind(), FrameKind::Event(_))),
        "no control frame: {frames:?}"
    );
    assert_eq!(frames.len(), 2);
    assert_eq!(hub.stats().events_missed, 0);
}

#[tokio::test]
async fn past_the_cap_the_thread_published_to_least_recently_is_forgotten() {
    let mut config = Config::default();
    config.threads.max_threads_per_user = 2;
    let hub = folding(config);
    let alice = UserId::from("alice");
    let (a, b, c) = (thread("a"), thread("b"), thread("c"));
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 1}))
        .unwrap();
    hub.broadcast_in_thread(&alice, &b, &json!({"n": 2}))
        .unwrap();
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 3}))
        .unwrap();
    hub.broadcast_in_thread(&alice, &c, &json!({"n": 4}))
        .unwrap();
    assert_eq!(hub.stats().threads_evicted, 1);
    let opening = |t: &ThreadId| {
        let mut sub = hub.subscribe_in_thread(&alice, t, None).unwrap();
        ready(&mut sub).iter().flat_map(datas).collect::<Vec<_>>()
    };
    assert_eq!(opening(&a), [json!({"seen": [1, 3]})]);
    assert_eq!(opening(&b), Vec::<Value>::new(), "b was forgotten");
    assert_eq!(opening(&c), [json!({"seen": [4]})]);
}

/// A thread stream's `GET /events/{user}?thread=`, as an application serves it.
async fn thread_events(
    axum::extract::State(hub): axum::extract::State<Hub>,
    axum::extract::Path(user): axum::extract::Path<String>,
    sse_hub::ThreadQuery(thread): sse_hub::ThreadQuery,
    last_event_id: sse_hub::LastEventId,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let user = UserId::from(user);
    match thread {
        Some(thread) => hub.sse_response_in_thread(&user, &thread, &last_event_id),
        None => hub.sse_response(&user, &last_event_id),
    }
    .into_response()
}

/// A thread stream that resumes by id (no thread state) counts as lost only its own thread's
/// events, as it does when it lags: a client of a quiet thread that comes back after the user's
/// other threads pushed its last event out of the window lost nothing, so it resumes (with the
/// event of its thread published meanwhile) rather than being told `expired`, which skips that
/// event and asks the client to reload. One of its own events that the window dropped is still
/// a `reset`.
#[tokio::test]
async fn a_thread_stream_resumes_past_other_threads_events_that_left_the_window() {
    use common::{SseClient, TestServer, http_client};
    let mut config = Config::default();
    config.replay_events = 8;
    let hub = Hub::new(config);
    let app = axum::Router::new()
        .route("/events/{user}", axum::routing::get(thread_events))
        .with_state(hub.clone());
    let server = TestServer::start(app).await;
    let client = http_client();
    let url = format!("{}?thread=a", server.events_url("alice"));
    let alice = UserId::from("alice");
    let (a, b) = (thread("a"), thread("b"));

    let mut tab = SseClient::open(&client, &url, None).await;
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 1}))
        .unwrap();
    let first = tab.expect_event().await;
    assert_eq!(first.data, r#"{"n":1}"#);
    drop(tab);
    // The user's other thread: more than the window holds.
    for n in 100..120 {
        hub.broadcast_in_thread(&alice, &b, &json!({ "n": n }))
            .unwrap();
    }
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 2}))
        .unwrap();
    let mut back = SseClient::resume(&client, &url, &first.id).await;
    let event = back.expect_event().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("message", r#"{"n":2}"#),
        "the thread lost nothing, yet its resume was not honoured"
    );
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 3}))
        .unwrap();
    assert_eq!(back.expect_event().await.data, r#"{"n":3}"#);
    let last = back.parser_last_event_id().to_owned();
    drop(back);

    // Now one of its own events leaves the window: that resume is a reset.
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 4}))
        .unwrap();
    for n in 200..220 {
        hub.broadcast_in_thread(&alice, &b, &json!({ "n": n }))
            .unwrap();
    }
    let mut again = SseClient::resume(&client, &url, &last).await;
    let event = again.expect_event().await;
    assert_eq!(event.event, "reset", "{event:?}");
    assert!(event.data.contains("expired"), "{event:?}");
    assert!(again.event_within(Duration::from_millis(50)).await.is_err());
}

/// A thread state whose opening panics once it folded `{"n":0}` (a caller's state with a bug).
#[derive(Debug, Default)]
struct OpeningPanics(bool);

impl ThreadState for OpeningPanics {
    fn fold(&mut self, data: &[u8]) -> Folded {
        self.0 |= serde_json::from_slice::<Value>(data).unwrap()["n"] == 0;
        Folded::Applied
    }

    fn write_opening(&self, _out: &mut Vec<u8>) {
        assert!(!self.0, "the opening panics");
    }

    fn bytes(&self) -> usize {
        0
    }
}

#[derive(Debug)]
struct OpeningPanicsStates;

impl ThreadStates for OpeningPanicsStates {
    fn create(&self, _thread: &ThreadId) -> Box<dyn ThreadState> {
        Box::new(OpeningPanics::default())
    }
}

/// A thread state whose opening panics makes that subscribe panic, and nothing else: the
/// connection it did not make is not counted anywhere. It was left counted among the thread's
/// connections (which no drop would take off), so every later publish that thread's connections
/// skip counted one connection fewer than it reached: `Connections(0)` for an event a
/// connection got.
#[tokio::test]
async fn an_opening_that_panics_leaves_the_publish_counts_exact() {
    let mut config = Config::default();
    config.threads.state = Some(Arc::new(OpeningPanicsStates));
    let hub = Hub::new(config);
    let alice = UserId::from("alice");
    let (a, b) = (thread("a"), thread("b"));
    hub.broadcast_in_thread(&alice, &a, &json!({"n": 0}))
        .unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hub.subscribe_in_thread(&alice, &a, None)
    }));
    assert!(panicked.is_err());
    assert_eq!(hub.connection_count(&alice), 0);
    let mut all = hub.subscribe(&alice).unwrap();
    let mut only_b = hub.subscribe_in_thread(&alice, &b, None).unwrap();
    let reached = |published: sse_hub::Published| published.connections();
    assert_eq!(
        reached(hub.broadcast(&alice, &json!({"n": 1})).unwrap()),
        Some(1)
    );
    assert_eq!(
        reached(
            hub.broadcast_in_thread(&alice, &b, &json!({"n": 2}))
                .unwrap()
        ),
        Some(2)
    );
    assert_eq!(ready(&mut all).len(), 2);
    assert_eq!(ready(&mut only_b).len(), 1);
}
