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
//! The loop is closed, as the independent harness of issue 13 was: one iteration publishes a
//! round of [`BATCH`] events from a task on the runtime (as an HTTP handler would), and the
//! publisher runs at most [`depth`] rounds ahead of the slowest connection. A server's
//! publisher does not wait for its readers, so the default depth is 2: publishing and
//! delivering overlap on the two cores, and a reader that is woken late finds more frames
//! ready, as it would in a server. `FANOUT_DEPTH=1` runs the same rounds lock-step (publish a
//! round, wait until every connection has it; the first runs did that with rounds of 64 on
//! rings of 64). A measurement runs at least [`MIN_ROUNDS`] rounds. Both broadcast rings have
//! [`CAPACITY`] = `MAX_DEPTH` × [`BATCH`] slots, so no receiver ever lags in any contender, and
//! sse-hub's replay window holds twice that, so that it outlasts the ring as with the defaults.

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
const BATCH: usize = 256;
/// The deepest pipeline [`depth`] allows.
const MAX_DEPTH: usize = 2;
/// Slots of both broadcast rings: the rounds in flight never overrun them, so nobody lags.
const CAPACITY: usize = MAX_DEPTH * BATCH;
/// Connection counts.
const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];
/// Completion counters kept: one per round that can be in flight, and a spare.
const SLOTS: usize = MAX_DEPTH + 2;
/// The fewest rounds one measurement runs, so that rounds are in flight for every contender.
const MIN_ROUNDS: u64 = 4;

/// How many rounds the publisher may run ahead of the slowest connection: `FANOUT_DEPTH`,
/// 1 or 2, default 2.
fn depth() -> usize {
    match std::env::var("FANOUT_DEPTH") {
        Err(_) => MAX_DEPTH,
        Ok(depth) => match depth.parse() {
            Ok(depth @ 1..=MAX_DEPTH) => depth,
            _ => panic!("FANOUT_DEPTH must be 1 or {MAX_DEPTH}, not {depth:?}"),
        },
    }
}

/// Counts, per round in flight, the connections that have received the whole round.
struct Round {
    done: [AtomicUsize; SLOTS],
    connections: usize,
    notify: Notify,
    /// The next round the publisher sends; rounds are numbered across iterations, as every
    /// connection counts its rounds from its first event.
    next: AtomicUsize,
}

impl Round {
    fn new(connections: usize) -> Arc<Self> {
        Arc::new(Self {
            done: std::array::from_fn(|_| AtomicUsize::new(0)),
            connections,
            notify: Notify::new(),
            next: AtomicUsize::new(0),
        })
    }

    /// Called by a connection when it has received the whole of round `round`.
    fn received(&self, round: usize) {
        if self.done[round % SLOTS].fetch_add(1, Ordering::AcqRel) + 1 == self.connections {
            self.notify.notify_one();
        }
    }

    /// Waits until every connection has received round `round`, and frees its counter for
    /// round `round + SLOTS`.
    async fn completed(&self, round: usize) {
        // One waiter: a `notify_one` between the check and the wait leaves a permit.
        while self.done[round % SLOTS].load(Ordering::Acquire) < self.connections {
            self.notify.notified().await;
        }
        self.done[round % SLOTS].store(0, Ordering::Release);
    }
}

/// Counts a connection's events, and tells `round` at the end of each of its rounds.
struct Counter {
    events: usize,
    round: Arc<Round>,
}

impl Counter {
    fn new(round: Arc<Round>) -> Self {
        Self { events: 0, round }
    }

    fn add(&mut self, events: usize) {
        let before = self.events / BATCH;
        self.events += events;
        for finished in before..self.events / BATCH {
            self.round.received(finished);
        }
    }
}

/// Runs `iters` rounds on a runtime task: `publish` sends one round once the connections have
/// received all but `depth() - 1` of the earlier ones. The time ends when every connection has
/// received every round.
///
/// Criterion asks a slow contender for one iteration per sample, and one round on its own is
/// lock-step whatever the depth. So at least [`MIN_ROUNDS`] rounds run, and the time is scaled
/// to the `iters` asked for: every contender is measured with rounds in flight.
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
    let depth = depth();
    let runs = iters.max(MIN_ROUNDS);
    let took = rt.block_on(async move {
        tokio::spawn(async move {
            let first = round.next.load(Ordering::Relaxed);
            let end = first + runs as usize;
            let start = Instant::now();
            for k in first..end {
                if k >= first + depth {
                    round.completed(k - depth).await;
                }
                publish().await;
            }
            for k in end.saturating_sub(depth).max(first)..end {
                round.completed(k).await;
            }
            round.next.store(end, Ordering::Relaxed);
            start.elapsed()
        })
        .await
        .expect("publisher")
    });
    took.mul_f64(iters as f64 / runs as f64)
}

/// Drains `body` as a server would, counting the events in its chunks (each frame ends with a
/// blank line; `skip` frames, the opening, are not events), and tells `round` at every
/// [`BATCH`] events.
async fn drain_body(mut body: axum::body::Body, skip: usize, round: Arc<Round>) {
    use http_body::Body as _;
    let mut skip = skip;
    let mut counter = Counter::new(round);
    while let Some(Ok(frame)) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let frames = memchr::memmem::find_iter(&chunk, b"\n\n").count();
        let skipped = frames.min(skip);
        skip -= skipped;
        counter.add(frames - skipped);
        black_box(&chunk);
    }
}

fn hub_config() -> Config {
    let mut config = Config::named("fanout");
    config.capacity = CAPACITY;
    config.max_connections_per_user = 1 << 20;
    // The replay window outlasts the ring, as with the defaults (256 events against 8 slots): a
    // frame's last reference is then the window's, dropped by the publisher. With a window
    // shorter than the ring, a reader behind by more than the window would free each frame
    // itself, across threads, which no default configuration does.
    config.replay_events = 2 * CAPACITY;
    config.replay_bytes = 2 * CAPACITY * 1024;
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
                    let mut counter = Counter::new(round);
                    while let Some(frame) = subscription.next().await {
                        black_box(&frame);
                        counter.add(1);
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
                    let mut counter = Counter::new(round);
                    while let Ok(frame) = rx.recv().await {
                        black_box(&frame);
                        counter.add(1);
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
                    let mut counter = Counter::new(round);
                    while let Some(event) = rx.recv().await {
                        black_box(&event);
                        drop(event);
                        counter.add(1);
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
