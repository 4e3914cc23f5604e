//! The AG-UI run state: the cost of folding a token, and of building a long answer's opening.
//!
//! * `fold/text_message_content`: `ThreadRun::fold` of one `TEXT_MESSAGE_CONTENT` (its JSON,
//!   as published) into a thread whose answer is being streamed;
//! * `fold/token_with_metadata_after_5000_messages`: the same token carrying `metadata`, into a
//!   thread that already holds 5 000 messages (a long conversation): what it costs does not
//!   grow with the thread (it measured every message until the seventh session);
//! * `fold/publish_reference`: for scale, `AgUiBroadcaster::broadcast` of the same event, typed,
//!   to a user with one connection (serialise once, frame, send);
//! * `opening/50k_tokens`: `ThreadRun::opening` of a thread whose open answer holds 50 000
//!   tokens (about 200 KB of text). Its memory is printed once: heap bytes of the opening
//!   against the bytes of the answer's text.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sse_hub::models::AgUiEvent;
use sse_hub::run_state::ThreadRun;
use sse_hub::{AgUiBroadcaster, Config, UserId};

fn thread_with_open_answer(tokens: usize) -> ThreadRun {
    let mut t = ThreadRun::new(usize::MAX);
    for start in [common::run_started("t"), common::text_start()] {
        assert!(t.fold(start.to_string().as_bytes()).folded());
    }
    for i in 0..tokens {
        let e = content(common::word(i));
        t.fold(e.as_bytes());
    }
    t
}

/// A thread whose run's input brought `messages` earlier messages, with an answer being
/// streamed.
fn thread_with_messages_and_open_answer(messages: usize) -> ThreadRun {
    let mut t = ThreadRun::new(usize::MAX);
    let mut started = common::run_started("t");
    started["input"]["messages"] = (0..messages)
        .map(|i| serde_json::json!({"id": format!("u{i}"), "role": "user", "content": "Weather?"}))
        .collect();
    for start in [started, common::text_start()] {
        assert!(t.fold(start.to_string().as_bytes()).folded());
    }
    t
}

/// A token's event as published: its JSON text.
fn content(delta: &str) -> String {
    common::content(delta).to_string()
}

fn fold(c: &mut Criterion) {
    let mut g = c.benchmark_group("fold");
    let event = content(" weather");
    g.bench_function("text_message_content", |b| {
        b.iter_custom(|iters| {
            common::chunked(
                iters,
                || thread_with_open_answer(0),
                |t| {
                    black_box(t.fold(black_box(event.as_bytes())));
                },
            )
        })
    });
    let mut with_metadata = common::content(" weather");
    with_metadata["metadata"] = serde_json::json!({"model": "m-1"});
    let with_metadata = with_metadata.to_string();
    g.bench_function("token_with_metadata_after_5000_messages", |b| {
        b.iter_custom(|iters| {
            common::chunked(
                iters,
                || thread_with_messages_and_open_answer(5_000),
                |t| {
                    black_box(t.fold(black_box(with_metadata.as_bytes())));
                },
            )
        })
    });
    let typed: AgUiEvent = serde_json::from_str(&event).unwrap();
    let broadcaster = AgUiBroadcaster::new(Config::default());
    let alice = UserId::from("alice");
    let _tab = broadcaster.subscribe(&alice).unwrap();
    g.bench_function("publish_reference", |b| {
        b.iter(|| black_box(broadcaster.broadcast(&alice, black_box(&typed)).unwrap()))
    });
    g.finish();
}

fn opening(c: &mut Criterion) {
    let t = thread_with_open_answer(50_000);
    let o = t.opening();
    let text: usize = (0..50_000)
        .map(|i| serde_json::to_string(common::word(i)).unwrap().len() - 2)
        .sum();
    eprintln!(
        "opening of a 50 000-token answer: {} events, {} B of JSON, {} B of heap, answer text {} B (heap - text = {} B)",
        o.len(),
        o.as_bytes().len(),
        o.heap_bytes(),
        text,
        o.heap_bytes() as i64 - text as i64
    );
    let mut g = c.benchmark_group("opening");
    g.bench_function("50k_tokens", |b| b.iter(|| black_box(t.opening())));
    g.finish();
}

criterion_group!(benches, fold, opening);
criterion_main!(benches);
