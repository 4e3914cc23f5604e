//! The router's AG-UI publish (two channels), and resume of 1 000 missed events.
//!
//! `router_agui`: one AG-UI event for a user with one connection on the AG-UI channel and one
//! on the context channel, which gets it wrapped as `{"protocol":"agui","event":{...}}`.
//! Connections are not read while timed (the publish path alone); the replaced design's
//! unbounded queues are emptied between chunks of [`CHUNK`] publishes, outside the timing.
//! * `sse-hub`: `EventRouter::route_agui` (serialise once, two frames, two channels);
//! * `bare-broadcast`: two `broadcast::<Bytes>` sends of pre-encoded frames, capacity 16;
//! * `replaced`: the original `EventRouter::route_agui` (see `common::replaced`), which
//!   serialises the event once per broadcaster.
//!
//! `agui_typed_round_trip`: an AG-UI event's JSON bytes, as a backend receives them, read into
//! the typed model and published through the router (to agui and, wrapped, to context), with a
//! connection on each. Side by side, in one run, for each event (`text`: a streamed
//! TEXT_MESSAGE_CONTENT, the hot path; `state_delta`: a STATE_DELTA of 3 JSON Patch operations):
//! * `old-model`: the model before AG-UI 1.0 (`common/old_agui.rs`, a copy of it), then the
//!   steps of `route_agui` through the public API (serialise once, two payloads, two
//!   broadcasts);
//! * `new-model`: today's model (checked while read, lossless), `validate`, then the same steps;
//!   `new-model / old-model` is the cost of the new model (the budget is 1.2x);
//! * `new-route_agui`: today's model, then `EventRouter::route_agui` itself;
//! * `value`: the bytes read as a `serde_json::Value` and broadcast: the untyped fast path.
//!
//! `resume`: a client reconnects with a `Last-Event-ID` 1 000 events back and reads them all.
//! * `sse-hub`: `subscribe_from` with the id, then the 1 000 replayed frames read from the
//!   subscription (replay window configured to hold them: `replay_events = 1024`);
//! * `bare-broadcast`: reading 1 000 frames a receiver has waiting on a ring of 1 024 (tokio
//!   cannot place a new receiver in the past, so this is the floor of reading them at all).
//!
//! The replaced design has no event ids and no replay: the 1 000 events are lost to the
//! reconnecting client, so it has no entry in `resume`.

mod common;
#[path = "common/old_agui.rs"]
mod old_agui;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{FutureExt, StreamExt};
use sse_hub::models::AgUiEvent;
use sse_hub::{Broadcaster, Config, EventRouter, Payload, UserId};
use tokio::sync::broadcast;

use common::replaced;

/// Publishes timed back to back before the replaced design's queues are emptied.
const CHUNK: u64 = 20_000;
/// Events a resuming client missed.
const MISSED: usize = 1_000;

fn router_agui(c: &mut Criterion) {
    let event = common::text_event(1);
    let mut group = c.benchmark_group("router_agui");
    group.throughput(Throughput::Elements(1));

    // sse-hub
    {
        let router = EventRouter::default();
        let user = UserId::from("alice");
        let _agui = router.agui().subscribe(&user).expect("subscribe");
        let _context = router.context().subscribe(&user).expect("subscribe");
        group.bench_function(BenchmarkId::new("sse-hub", "agui+context"), |b| {
            b.iter(|| black_box(router.route_agui(&user, &event).expect("route")))
        });
    }

    // bare tokio broadcast of pre-encoded Bytes
    {
        let direct = common::text_frame();
        let json = serde_json::to_string(&event).expect("serialisable");
        let wrapped = Bytes::from(format!(
            "data: {{\"protocol\":\"agui\",\"event\":{json}}}\nid: 12345678901234567890-1234\n\n"
        ));
        let (agui, _agui_rx) = broadcast::channel::<Bytes>(16);
        let (context, _context_rx) = broadcast::channel::<Bytes>(16);
        group.bench_function(BenchmarkId::new("bare-broadcast", "agui+context"), |b| {
            b.iter(|| {
                black_box(agui.send(direct.clone()).ok());
                black_box(context.send(wrapped.clone()).ok());
            })
        });
    }

    // the replaced design
    {
        let local = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let router = replaced::EventRouter::default();
        let (_, mut agui_rx) = local.block_on(router.agui.connect("alice"));
        let (_, mut context_rx) = local.block_on(router.context.connect("alice"));
        group.bench_function(BenchmarkId::new("replaced", "agui+context"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    left -= n;
                    total += local.block_on(async {
                        let start = Instant::now();
                        for _ in 0..n {
                            black_box(router.route_agui("alice", &event).await);
                        }
                        start.elapsed()
                    });
                    while agui_rx.try_recv().is_ok() {}
                    while context_rx.try_recv().is_ok() {}
                }
                total
            })
        });
    }
    group.finish();
}

/// The steps of `EventRouter::route_agui` through the public API, for any serde event: one
/// serialisation, the direct and the wrapped payload, both broadcast.
fn publish_like_route_agui<E: serde::Serialize>(router: &EventRouter, user: &UserId, event: &E) {
    let json = serde_json::to_string(event).expect("serialisable");
    let direct = Payload::from_text(None, &json).expect("payload");
    let mut wrapped = String::with_capacity(json.len() + 30);
    wrapped.push_str("{\"protocol\":\"agui\",\"event\":");
    wrapped.push_str(&json);
    wrapped.push('}');
    let wrapped = Payload::from_text(None, &wrapped).expect("payload");
    black_box(
        router
            .agui()
            .broadcast_payload(user, direct)
            .expect("publish"),
    );
    black_box(
        router
            .context()
            .broadcast_payload(user, wrapped)
            .expect("publish"),
    );
}

fn agui_typed_round_trip(c: &mut Criterion) {
    let text = serde_json::to_vec(&common::text_event(1)).expect("serialisable");
    let state_delta = serde_json::to_vec(&serde_json::json!({
        "type": "STATE_DELTA",
        "delta": [
            {"op": "replace", "path": "/counter", "value": 2},
            {"op": "add", "path": "/items/-", "value": {"id": 7, "label": "seventh"}},
            {"op": "remove", "path": "/draft"}
        ],
        "timestamp": 1_780_000_000_000_i64
    }))
    .expect("serialisable");
    let mut group = c.benchmark_group("agui_typed_round_trip");
    group.throughput(Throughput::Elements(1));
    let router = EventRouter::default();
    let user = UserId::from("alice");
    let _agui = router.agui().subscribe(&user).expect("subscribe");
    let _context = router.context().subscribe(&user).expect("subscribe");
    for (name, bytes) in [("text", &text), ("state_delta", &state_delta)] {
        group.bench_function(BenchmarkId::new("old-model", name), |b| {
            b.iter(|| {
                let event: old_agui::AgUiEvent =
                    serde_json::from_slice(black_box(bytes)).expect("event");
                publish_like_route_agui(&router, &user, &event);
            })
        });
        group.bench_function(BenchmarkId::new("new-model", name), |b| {
            b.iter(|| {
                let event: AgUiEvent = serde_json::from_slice(black_box(bytes)).expect("event");
                event.validate().expect("valid");
                publish_like_route_agui(&router, &user, &event);
            })
        });
        group.bench_function(BenchmarkId::new("new-route_agui", name), |b| {
            b.iter(|| {
                let event: AgUiEvent = serde_json::from_slice(black_box(bytes)).expect("event");
                black_box(router.route_agui(&user, &event).expect("route"));
            })
        });
        group.bench_function(BenchmarkId::new("value", name), |b| {
            b.iter(|| {
                let event: serde_json::Value =
                    serde_json::from_slice(black_box(bytes)).expect("event");
                black_box(
                    router
                        .agui()
                        .broadcast_payload(&user, Payload::encode(&event).expect("payload")),
                )
                .expect("publish");
            })
        });
    }
    group.finish();
}

fn resume(c: &mut Criterion) {
    let mut group = c.benchmark_group("resume");
    group.throughput(Throughput::Elements(MISSED as u64));

    // sse-hub
    {
        let mut config = Config::named("resume");
        config.replay_events = 1024;
        config.replay_bytes = 1 << 20;
        config.replay_age = Duration::from_secs(3600);
        config.retention = Duration::from_secs(3600);
        let hub: Broadcaster<AgUiEvent> = Broadcaster::new(config);
        let user = UserId::from("alice");
        let first = hub.subscribe(&user).expect("subscribe");
        let last_seen = first.start_id().to_string();
        for n in 0..MISSED {
            hub.broadcast(&user, &common::text_event(n as u64))
                .expect("publish");
        }
        group.bench_function(BenchmarkId::new("sse-hub", MISSED), |b| {
            b.iter(|| {
                let mut resumed = hub.subscribe_from(&user, Some(&last_seen)).expect("resume");
                for _ in 0..MISSED {
                    let frame = resumed.next().now_or_never().flatten().expect("replayed");
                    black_box(&frame);
                }
                resumed
            })
        });
        drop(first);
    }

    // bare tokio broadcast of pre-encoded Bytes
    {
        let frame = common::text_frame();
        group.bench_function(BenchmarkId::new("bare-broadcast", MISSED), |b| {
            b.iter_batched(
                || {
                    let (tx, rx) = broadcast::channel::<Bytes>(1024);
                    for _ in 0..MISSED {
                        tx.send(frame.clone()).expect("send");
                    }
                    (tx, rx)
                },
                |(tx, mut rx)| {
                    for _ in 0..MISSED {
                        black_box(rx.try_recv().expect("waiting"));
                    }
                    (tx, rx)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = router_agui, agui_typed_round_trip, resume
}
criterion_main!(benches);
