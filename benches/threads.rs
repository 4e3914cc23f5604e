//! Threads and run state: what a thread costs a publish, a fan-out and a join.
//!
//! Contenders, side by side in one run (each pair in one group):
//!
//! * `thread_publish` — one AG-UI `TEXT_MESSAGE_CONTENT` (typed, as the demo's `POST` has it)
//!   published to a user with one connection, on the AG-UI broadcaster of an `EventRouter`
//!   (which folds every thread's run, `RunStates` with its 1 MiB cap):
//!   * `in_thread`: `broadcast_in_thread` into a thread whose answer is open (the fold appends
//!     the token to the answer), the connection subscribed to that thread;
//!   * `plain`: `broadcast` of the same event without a thread, the connection unfiltered;
//!   * `route_in_thread` / `route_plain`: the same through the router
//!     (`route_agui_in_thread` / `route_agui`), which also wraps the event to the context
//!     channel (both users hold a context connection too).
//!
//!   A thread's answer is restarted every 20 000 tokens (outside the timing), so that the fold
//!   works on an answer-sized text. Connections are not read (a publish does not wait for them).
//! * `thread_fanout` — 1 000 connections of one user, each drained by its own task on a
//!   2-worker runtime; one iteration is one round after which every connection has received
//!   64 events (64 000 deliveries in both):
//!   * `unfiltered`: 1 000 plain subscriptions; a round publishes 64 events;
//!   * `filtered`: 100 subscriptions on each of 10 threads; a round publishes 64 events into
//!     each thread (640 publishes), so each connection receives its 64 and skips the other 576.
//!
//!   * `unfiltered_same_publishes`: 1 000 plain subscriptions; a round publishes what
//!     `filtered` publishes (640 events), all of which every connection receives.
//!
//!   `filtered` against `unfiltered` compares deliveries per second (ten threads of 100
//!   viewers against one stream of 1 000 viewers, same deliveries); `filtered` against
//!   `unfiltered_same_publishes` compares the cost of fanning out one published event with and
//!   without thread filters (same publishes: the filter must not make fan-out slower). The ring
//!   has 1 024 slots, so nobody lags; no thread state (the filter alone).
//! * `thread_opening` — `subscribe_in_thread` on the router's AG-UI broadcaster to a thread
//!   whose open answer holds 50 000 tokens (about 260 KB of text), then drop: the join, which
//!   builds the snapshot opening under the channel lock, and the leave.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use sse_hub::models::AgUiEvent;
use sse_hub::{Broadcaster, Config, EventRouter, ThreadId, UserId};
use tokio::sync::Notify;
use tokio_stream::StreamExt;

fn content(delta: &str) -> AgUiEvent {
    common::agui(common::content(delta))
}

/// Starts a run with an open answer in `thread`.
fn open_answer(router: &EventRouter, user: &UserId, thread: &ThreadId) {
    let hub = router.agui();
    for event in [common::run_started(thread.as_str()), common::text_start()] {
        hub.broadcast_in_thread(user, thread, &common::agui(event))
            .expect("publish");
    }
}

fn thread_publish(c: &mut Criterion) {
    let router = EventRouter::new(Config::default());
    let alice = UserId::from("alice");
    let bob = UserId::from("bob");
    let token = content(" weather");
    let mut g = c.benchmark_group("thread_publish");
    g.throughput(Throughput::Elements(1));

    // One connection each: alice's on her current thread, bob's unfiltered.
    let mut n = 0u64;
    let mut tab = None;
    let _bob_tab = router.agui().subscribe(&bob).expect("subscribe");
    // And one on the context channel each, where the router wraps the event to.
    let _contexts = [&alice, &bob].map(|user| router.context().subscribe(user).expect("subscribe"));

    // Alice's next thread, its answer open and her connection on it (the last one dropped).
    let mut fresh_thread = || {
        n += 1;
        let thread = ThreadId::new(&format!("thread-{n}")).unwrap();
        open_answer(&router, &alice, &thread);
        tab = Some(
            router
                .agui()
                .subscribe_in_thread(&alice, &thread, None)
                .expect("subscribe"),
        );
        thread
    };

    g.bench_function("in_thread", |b| {
        b.iter_custom(|iters| {
            common::chunked(iters, &mut fresh_thread, |thread| {
                black_box(
                    router
                        .agui()
                        .broadcast_in_thread(&alice, thread, black_box(&token))
                        .unwrap(),
                );
            })
        })
    });
    g.bench_function("plain", |b| {
        b.iter(|| black_box(router.agui().broadcast(&bob, black_box(&token)).unwrap()))
    });
    g.bench_function("route_in_thread", |b| {
        b.iter_custom(|iters| {
            common::chunked(iters, &mut fresh_thread, |thread| {
                black_box(
                    router
                        .route_agui_in_thread(&alice, thread, black_box(&token))
                        .unwrap(),
                );
            })
        })
    });
    g.bench_function("route_plain", |b| {
        b.iter(|| black_box(router.route_agui(&bob, black_box(&token)).unwrap()))
    });
    g.finish();
    drop(tab);
}

/// Events each connection receives per round.
const BATCH: usize = 64;
const CONNECTIONS: usize = 1_000;
const THREADS: usize = 10;

/// Counts the connections that have received the whole round.
struct Round {
    done: AtomicUsize,
    notify: Notify,
}

impl Round {
    fn received(&self) {
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == CONNECTIONS {
            self.notify.notify_one();
        }
    }
}

fn thread_fanout(c: &mut Criterion) {
    let rt = common::runtime();
    let event = Arc::new(common::text_event(1));
    let mut g = c.benchmark_group("thread_fanout");
    g.sampling_mode(SamplingMode::Flat);
    let threads: Vec<ThreadId> = (0..THREADS)
        .map(|i| ThreadId::new(&format!("thread-{i}")).unwrap())
        .collect();

    // (filtered, events each connection receives per round): "filtered" and "unfiltered"
    // deliver the same BATCH per connection (so the filtered round publishes THREADS times
    // more events); "unfiltered_same_publishes" publishes what "filtered" publishes, so the
    // pair compares the cost of one published event fanned out with and without filters.
    for (filtered, per_round) in [(false, BATCH), (true, BATCH), (false, BATCH * THREADS)] {
        let mut config = Config::named("thread-fanout");
        config.capacity = 1_024;
        config.max_connections_per_user = 1 << 20;
        let hub: Broadcaster<AgUiEvent> = Broadcaster::new(config);
        let user = UserId::from("alice");
        let round = Arc::new(Round {
            done: AtomicUsize::new(0),
            notify: Notify::new(),
        });
        let mut tasks = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            let mut subscription = if filtered {
                hub.subscribe_in_thread(&user, &threads[i % THREADS], None)
            } else {
                hub.subscribe(&user)
            }
            .expect("subscribe");
            let round = round.clone();
            tasks.push(rt.spawn(async move {
                let mut count = 0usize;
                while let Some(frame) = subscription.next().await {
                    black_box(&frame);
                    count += 1;
                    if count.is_multiple_of(per_round) {
                        round.received();
                    }
                }
            }));
        }
        let name = match (filtered, per_round == BATCH) {
            (true, _) => "filtered",
            (false, true) => "unfiltered",
            (false, false) => "unfiltered_same_publishes",
        };
        g.throughput(Throughput::Elements((CONNECTIONS * per_round) as u64));
        g.bench_function(BenchmarkId::new(name, CONNECTIONS), |b| {
            b.iter_custom(|iters| {
                let hub = hub.clone();
                let user = user.clone();
                let event = event.clone();
                let threads = threads.clone();
                let round = round.clone();
                rt.block_on(async move {
                    tokio::spawn(async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            round.done.store(0, Ordering::Release);
                            for _ in 0..BATCH {
                                if filtered || per_round > BATCH {
                                    for thread in &threads {
                                        black_box(
                                            if filtered {
                                                hub.broadcast_in_thread(&user, thread, &event)
                                            } else {
                                                hub.broadcast(&user, &event)
                                            }
                                            .expect("publish"),
                                        );
                                    }
                                } else {
                                    black_box(hub.broadcast(&user, &event).expect("publish"));
                                }
                            }
                            round.notify.notified().await;
                        }
                        start.elapsed()
                    })
                    .await
                    .expect("publisher")
                })
            })
        });
        let stats = hub.stats();
        assert_eq!(stats.lag_events, 0, "nobody lags: {stats:?}");
        hub.shutdown();
        rt.block_on(async {
            for task in tasks {
                task.await.expect("receiver");
            }
        });
    }
    g.finish();
}

fn thread_opening(c: &mut Criterion) {
    let router = EventRouter::new(Config::default());
    let user = UserId::from("alice");
    let thread = ThreadId::new("thread-long").unwrap();
    open_answer(&router, &user, &thread);
    for i in 0..50_000 {
        router
            .agui()
            .broadcast_in_thread(&user, &thread, &content(common::word(i)))
            .expect("publish");
    }
    // One connection stays, so the channel is active as when a second tab opens.
    let _first = router
        .agui()
        .subscribe_in_thread(&user, &thread, None)
        .expect("subscribe");
    let stats = router.agui().stats();
    eprintln!(
        "thread_opening: the thread's state holds {} B",
        stats.thread_state_bytes
    );
    let mut g = c.benchmark_group("thread_opening");
    g.bench_function("join_50k_tokens", |b| {
        b.iter(|| {
            let sub = router
                .agui()
                .subscribe_in_thread(&user, &thread, None)
                .expect("subscribe");
            black_box(sub)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = thread_publish, thread_fanout, thread_opening
}
criterion_main!(benches);
