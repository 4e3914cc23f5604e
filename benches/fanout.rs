//! Fan-out: one user with N connections, each drained by its own task; deliveries per second.
//!
//! Contenders, measured side by side in this one group:
//! * `sse-hub`: `Broadcaster::broadcast` (serialise once, id line, replay window, ring) and a
//!   `Subscription` stream per connection;
//! * `bare-broadcast`: the limit of the design, a `tokio::sync::broadcast::<Bytes>` of a
//!   pre-encoded frame of the same size and capacity, each receiver looping on `recv()`;
//! * `replaced`: the design sse-hub replaces (see `common::replaced`);
//! * `sse-hub-body` and `replaced-body`: the same, but each connection drains what a server
//!   writes, the HTTP response body (`Broadcaster::sse_response` for sse-hub, the replaced
//!   design's axum `Sse` with its keep-alive), counting the events in its chunks. This is what
//!   an HTTP server polls: the body layer (heartbeat timer, chunking, axum's `Sse` encoding in
//!   the replaced design) is part of the cost, and sse-hub's body joins frames that are ready
//!   together into one chunk.
//!
//! One iteration publishes a round of [`BATCH`] events from a task on the runtime (as an HTTP
//! handler would) and waits until every connection has received all of them. Both broadcast
//! rings have [`CAPACITY`] = [`BATCH`] slots, so no receiver ever lags in either contender.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use sse_hub::models::AgUiEvent;
use sse_hub::{Broadcaster, Config, UserId};
use tokio::sync::{Notify, broadcast};
use tokio_stream::StreamExt;

use common::replaced;

/// Events per round.
const BATCH: usize = 64;
/// Slots of both broadcast rings: a round never overruns them, so nobody lags.
const CAPACITY: usize = BATCH;
/// Connection counts.
const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];

/// Counts the connections that have received the whole round.
struct Round {
    done: AtomicUsize,
    connections: usize,
    notify: Notify,
}

impl Round {
    fn new(connections: usize) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicUsize::new(0),
            connections,
            notify: Notify::new(),
        })
    }

    /// Called by a receiver each time it has received [`BATCH`] more events.
    fn received(&self) {
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.connections {
            self.notify.notify_one();
        }
    }

    /// Starts a round.
    fn start(&self) {
        self.done.store(0, Ordering::Release);
    }
}

/// Runs `iters` rounds on a runtime task: `publish` sends one round, then it waits for every
/// connection to have received it.
fn rounds<P, F>(
    rt: &tokio::runtime::Runtime,
    round: &Arc<Round>,
    iters: u64,
    mut publish: P,
) -> Duration
where
    P: FnMut() -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let round = round.clone();
    rt.block_on(async move {
        tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..iters {
                round.start();
                publish().await;
                round.notify.notified().await;
            }
            start.elapsed()
        })
        .await
        .expect("publisher")
    })
}

/// Drains `body` as a server would, counting the events in its chunks (each frame ends with a
/// blank line; `skip` frames, the opening, are not events), and tells `round` at every
/// [`BATCH`] events.
async fn drain_body(mut body: axum::body::Body, skip: usize, round: Arc<Round>) {
    use http_body::Body as _;
    let mut frames = 0usize;
    while let Some(Ok(frame)) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let before = frames.saturating_sub(skip) / BATCH;
        frames += memchr::memmem::find_iter(&chunk, b"\n\n").count();
        for _ in before..frames.saturating_sub(skip) / BATCH {
            round.received();
        }
        black_box(&chunk);
    }
}

fn hub_config() -> Config {
    let mut config = Config::named("fanout");
    config.capacity = CAPACITY;
    config.max_connections_per_user = 1 << 20;
    config
}

fn fanout(c: &mut Criterion) {
    let rt = common::runtime();
    let event = Arc::new(common::text_event(1));
    let frame = common::text_frame();
    let mut group = c.benchmark_group("fanout");
    group.sampling_mode(SamplingMode::Flat);
    for &n in &SIZES {
        group.throughput(Throughput::Elements((n * BATCH) as u64));

        // sse-hub
        {
            let hub: Broadcaster<AgUiEvent> = Broadcaster::new(hub_config());
            let user = UserId::from("alice");
            let round = Round::new(n);
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                let mut subscription = hub.subscribe(&user).expect("subscribe");
                let round = round.clone();
                tasks.push(rt.spawn(async move {
                    let mut count = 0usize;
                    while let Some(frame) = subscription.next().await {
                        black_box(&frame);
                        count += 1;
                        if count.is_multiple_of(BATCH) {
                            round.received();
                        }
                    }
                }));
            }
            group.bench_function(BenchmarkId::new("sse-hub", n), |b| {
                b.iter_custom(|iters| {
                    let hub = hub.clone();
                    let user = user.clone();
                    let event = event.clone();
                    rounds(&rt, &round, iters, move || {
                        for _ in 0..BATCH {
                            black_box(hub.broadcast(&user, &event).expect("publish"));
                        }
                        std::future::ready(())
                    })
                })
            });
            hub.shutdown();
            rt.block_on(async {
                for task in tasks {
                    task.await.expect("receiver");
                }
            });
        }

        // sse-hub, drained through its HTTP response body
        {
            use axum::response::IntoResponse;
            let hub: Broadcaster<AgUiEvent> = Broadcaster::new(hub_config());
            let user = UserId::from("alice");
            let round = Round::new(n);
            let mut tasks = Vec::with_capacity(n);
            // The body's heartbeat timer is made on the runtime.
            let entered = rt.enter();
            for _ in 0..n {
                let response = hub
                    .sse_response(&user, &sse_hub::LastEventId::default())
                    .expect("subscribe")
                    .into_response();
                tasks.push(rt.spawn(drain_body(response.into_body(), 1, round.clone())));
            }
            drop(entered);
            group.bench_function(BenchmarkId::new("sse-hub-body", n), |b| {
                b.iter_custom(|iters| {
                    let hub = hub.clone();
                    let user = user.clone();
                    let event = event.clone();
                    rounds(&rt, &round, iters, move || {
                        for _ in 0..BATCH {
                            black_box(hub.broadcast(&user, &event).expect("publish"));
                        }
                        std::future::ready(())
                    })
                })
            });
            hub.shutdown();
            rt.block_on(async {
                for task in tasks {
                    task.await.expect("receiver");
                }
            });
        }

        // the replaced design, drained through its axum `Sse` body
        {
            use axum::response::IntoResponse;
            use axum::response::sse::{Event, KeepAlive, Sse};
            let broadcaster = replaced::GenericBroadcaster::default();
            let round = Round::new(n);
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                let (_, rx) = rt.block_on(broadcaster.connect("alice"));
                let keep_alive = KeepAlive::new()
                    .interval(sse_hub::HEARTBEAT_INTERVAL)
                    .event(
                        Event::default()
                            .event("heartbeat")
                            .data(sse_hub::HEARTBEAT_JSON),
                    );
                let response = rt.block_on(async {
                    Sse::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                        .keep_alive(keep_alive)
                        .into_response()
                });
                tasks.push(rt.spawn(drain_body(response.into_body(), 0, round.clone())));
            }
            group.bench_function(BenchmarkId::new("replaced-body", n), |b| {
                b.iter_custom(|iters| {
                    let broadcaster = broadcaster.clone();
                    let event = event.clone();
                    rounds(&rt, &round, iters, move || {
                        let broadcaster = broadcaster.clone();
                        let event = event.clone();
                        async move {
                            for _ in 0..BATCH {
                                black_box(broadcaster.broadcast("alice", &*event).await);
                            }
                        }
                    })
                })
            });
            drop(broadcaster);
            rt.block_on(async {
                for task in tasks {
                    task.await.expect("receiver");
                }
            });
        }

        // bare tokio broadcast of pre-encoded Bytes
        {
            let (tx, _) = broadcast::channel::<Bytes>(CAPACITY);
            let round = Round::new(n);
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                let mut rx = tx.subscribe();
                let round = round.clone();
                tasks.push(rt.spawn(async move {
                    let mut count = 0usize;
                    while let Ok(frame) = rx.recv().await {
                        black_box(&frame);
                        count += 1;
                        if count.is_multiple_of(BATCH) {
                            round.received();
                        }
                    }
                }));
            }
            group.bench_function(BenchmarkId::new("bare-broadcast", n), |b| {
                b.iter_custom(|iters| {
                    let tx = tx.clone();
                    let frame = frame.clone();
                    rounds(&rt, &round, iters, move || {
                        for _ in 0..BATCH {
                            black_box(tx.send(frame.clone()).expect("send"));
                        }
                        std::future::ready(())
                    })
                })
            });
            drop(tx);
            rt.block_on(async {
                for task in tasks {
                    task.await.expect("receiver");
                }
            });
        }

        // the replaced design
        {
            let broadcaster = replaced::GenericBroadcaster::default();
            let round = Round::new(n);
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                let (_, mut rx) = rt.block_on(broadcaster.connect("alice"));
                let round = round.clone();
                tasks.push(rt.spawn(async move {
                    let mut count = 0usize;
                    while let Some(event) = rx.recv().await {
                        black_box(&event);
                        drop(event);
                        count += 1;
                        if count.is_multiple_of(BATCH) {
                            round.received();
                        }
                    }
                }));
            }
            group.bench_function(BenchmarkId::new("replaced", n), |b| {
                b.iter_custom(|iters| {
                    let broadcaster = broadcaster.clone();
                    let event = event.clone();
                    rounds(&rt, &round, iters, move || {
                        let broadcaster = broadcaster.clone();
                        let event = event.clone();
                        async move {
                            for _ in 0..BATCH {
                                black_box(broadcaster.broadcast("alice", &*event).await);
                            }
                        }
                    })
                })
            });
            drop(broadcaster);
            rt.block_on(async {
                for task in tasks {
                    task.await.expect("receiver");
                }
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = fanout
}
criterion_main!(benches);
