//! The chain links by which a lagging thread subscription tells its own losses from other
//! threads' frames (see `src/channel/chain.rs`), where a chain can break: threads the channel
//! forgot, and a fold that panics. Each case must be reported (a `lagged`, or the end of a
//! stream opened from state), never skipped silently. In-process, bounded.

use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::{Value, json};
use sse_hub::{
    Broadcaster, Config, EndReason, Folded, FrameKind, ThreadId, ThreadState, ThreadStates, UserId,
};
use tokio::task::unconstrained;
use tokio_stream::StreamExt;

type Hub = Broadcaster<Value>;

fn thread(name: &str) -> ThreadId {
    ThreadId::new(name).unwrap()
}

fn ready<E>(sub: &mut sse_hub::Subscription<E>) -> Vec<sse_hub::Frame> {
    let mut frames = Vec::new();
    while let Some(Some(frame)) = unconstrained(sub.next()).now_or_never() {
        frames.push(frame);
    }
    frames
}

/// The channel keeps only the largest last event of the threads it forgot, so the walk from it
/// would follow that one thread's chain, past the events of another forgotten thread: a
/// subscription to that thread that lagged over one of its events must still be told.
#[tokio::test]
async fn a_forgotten_threads_event_dropped_from_the_window_is_counted_lost() {
    let mut config = Config::default();
    config.capacity = 2;
    config.replay_events = 3;
    config.threads.max_threads_per_user = 2;
    let hub = Hub::new(config);
    let alice = UserId::from("alice");
    let (x, z, w, v) = (thread("x"), thread("z"), thread("w"), thread("v"));
    hub.broadcast_in_thread(&alice, &z, &json!({"n": 1}))
        .unwrap(); // seq 1
    let mut only_x = hub.subscribe_in_thread(&alice, &x, None).unwrap(); // at 1
    hub.broadcast_in_thread(&alice, &x, &json!({"n": 2}))
        .unwrap(); // seq 2: x's event
    hub.broadcast_in_thread(&alice, &z, &json!({"n": 3}))
        .unwrap(); // seq 3, z links to 1
    hub.broadcast_in_thread(&alice, &w, &json!({"n": 4}))
        .unwrap(); // x forgotten (2)
    hub.broadcast_in_thread(&alice, &v, &json!({"n": 5}))
        .unwrap(); // z forgotten (3)
    // The window holds 3, 4, 5; the ring 4, 5: x's event 2 is gone.
    let frames = ready(&mut only_x);
    let kinds: Vec<FrameKind> = frames.iter().map(|f| f.kind()).collect();
    assert!(
        kinds.iter().any(|k| matches!(k, FrameKind::Lagged { .. }))
            || only_x.end_reason().is_some(),
        "x's event 2 was dropped unseen, yet the stream says nothing: {kinds:?}, stats {:?}",
        hub.stats()
    );
}

/// The data lines' `n`s of the frames.
fn ns(frames: &[sse_hub::Frame]) -> Vec<u64> {
    frames
        .iter()
        .flat_map(|f| {
            std::str::from_utf8(f.bytes())
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).unwrap()["n"].as_u64())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A state that folds nothing, and panics on `{"panic":true}` (a caller's state with a bug).
#[derive(Debug, Default)]
struct Panicky;

impl ThreadState for Panicky {
    fn fold(&mut self, data: &[u8]) -> Folded {
        let value: Value = serde_json::from_slice(data).unwrap();
        assert!(value["panic"] != true, "the state panics");
        Folded::Ignored
    }
    fn write_opening(&self, _out: &mut Vec<u8>) {}
    fn bytes(&self) -> usize {
        0
    }
}

#[derive(Debug)]
struct PanickyStates;

impl ThreadStates for PanickyStates {
    fn create(&self, _thread: &ThreadId) -> Box<dyn ThreadState> {
        Box::new(Panicky)
    }
}

/// A fold that panics takes no sequence number, so the next publish (of another thread here)
/// takes it: the thread's chain head must not have moved to it, or the thread's next event
/// would link into the other thread's chain, past its own earlier events, and a thread stream
/// that lagged over one of them would miss it silently.
#[tokio::test]
async fn a_panicking_fold_does_not_cut_the_threads_chain() {
    let mut config = Config::default();
    config.capacity = 2;
    config.replay_events = 2;
    config.threads.state = Some(Arc::new(PanickyStates));
    let hub = Hub::new(config);
    let alice = UserId::from("alice");
    let (x, y) = (thread("x"), thread("y"));
    let mut only_x = hub.subscribe_in_thread(&alice, &x, None).unwrap(); // at 0
    hub.broadcast_in_thread(&alice, &x, &json!({"n": 1}))
        .unwrap(); // seq 1
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hub.broadcast_in_thread(&alice, &x, &json!({"panic": true}))
    }));
    assert!(panicked.is_err());
    hub.broadcast_in_thread(&alice, &y, &json!({"n": 100}))
        .unwrap(); // seq 2
    hub.broadcast_in_thread(&alice, &x, &json!({"n": 3}))
        .unwrap(); // seq 3
    // The window holds 2, 3 and the ring 2, 3: x's event 1 is gone before the stream read it.
    let got = ns(&ready(&mut only_x));
    assert!(
        got.contains(&1) || only_x.end_reason() == Some(EndReason::Lagged),
        "x's event 1 was lost, yet the stream goes on without it: got {got:?}, end {:?}, stats {:?}",
        only_x.end_reason(),
        hub.stats()
    );
}
