//! Publish to one of 100 000 users while another thread subscribes and drops connections as
//! fast as it can: publishes per second (criterion), and the latency of each publish on the
//! publishing thread (p50, p99, p99.9 printed as `LATENCY` lines).
//!
//! Every user has one connection. Connections are not read during a timed chunk of
//! [`CHUNK`] publishes, so what is measured is the publish path alone, without the wake-ups of
//! readers; the replaced design's unbounded queues are emptied between chunks, outside the
//! timing. The churn thread picks random users among the same 100 000 and opens and closes a
//! second connection on them, as tabs do.
//!
//! Contenders: `sse-hub` (`Broadcaster::broadcast`, default config, from a fresh start: the
//! windows fill while the bench runs), `sse-hub-steady` (the same with windows of
//! [`STEADY_WINDOW`] events, every one filled before timing: the steady state of a server that
//! has run for a while), `bare-broadcast` (a `DashMap<UserId, broadcast::Sender<Bytes>>` of
//! capacity 16, sending a pre-encoded frame), and `replaced` (see `common::replaced`).

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;
use sse_hub::models::AgUiEvent;
use sse_hub::{Broadcaster, Config, UserId};
use tokio::sync::broadcast;

use common::replaced;

const USERS: usize = 100_000;
/// Publishes timed back to back before the replaced design's queues are emptied.
const CHUNK: u64 = 20_000;
/// Per-publish latencies kept per contender.
const MAX_SAMPLES: usize = 4 << 20;

/// The publisher's user sequences: `one-user` publishes to one user of the 100 000 (hot in
/// cache, as when one agent streams to one user), `random-user` to a uniformly random one
/// (every publish touches cold memory); fixed seed.
fn picks() -> [(&'static str, Vec<u32>); 2] {
    let mut rng = fastrand::Rng::with_seed(7);
    [
        ("one-user", vec![42]),
        (
            "random-user",
            (0..1 << 20).map(|_| rng.u32(0..USERS as u32)).collect(),
        ),
    ]
}

/// Per-publish latencies, in nanoseconds.
struct Latencies(Vec<u64>);

impl Latencies {
    fn new() -> Self {
        Self(Vec::with_capacity(MAX_SAMPLES))
    }

    fn record(&mut self, took: Duration) {
        if self.0.len() < MAX_SAMPLES {
            self.0.push(took.as_nanos() as u64);
        }
    }

    fn report(&mut self, contender: &str, churned: u64, churn_time: Duration) {
        self.0.sort_unstable();
        let s = &self.0;
        println!(
            "LATENCY churn/{contender}: samples={} p50_ns={} p99_ns={} p999_ns={} max_ns={} churn_ops_per_sec={:.0}",
            s.len(),
            common::percentile(s, 50.0),
            common::percentile(s, 99.0),
            common::percentile(s, 99.9),
            s.last().copied().unwrap_or(0),
            churned as f64 / churn_time.as_secs_f64(),
        );
    }
}

/// Runs `churn_once` in a loop on its own thread until the returned guard is stopped.
struct Churn {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    started: Instant,
    thread: Option<thread::JoinHandle<()>>,
}

impl Churn {
    fn start(mut churn_once: impl FnMut(u32) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = stop.clone();
            let ops = ops.clone();
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(11);
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    churn_once(rng.u32(0..USERS as u32));
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Self {
            stop,
            ops,
            started: Instant::now(),
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("churn thread");
        }
        (self.ops.load(Ordering::Relaxed), self.started.elapsed())
    }
}

/// The window of the steady-state contender: short, so that filling the windows of all
/// 100 000 users before timing takes seconds and about 0.5 GB, not minutes and the 8 GB that
/// 256-event windows would hold.
const STEADY_WINDOW: usize = 16;

/// The default config but for a window of [`STEADY_WINDOW`] events.
fn steady_config() -> Config {
    let mut config = Config::named("churn-steady");
    config.replay_events = STEADY_WINDOW;
    config
}

/// Times `publish` to the users of each sequence, one by one, while `churn` runs; then stops
/// the churn and prints the latencies of contender `name`.
fn measure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    sequences: &[(&'static str, Vec<u32>)],
    users: &[UserId],
    churn: Churn,
    mut publish: impl FnMut(&UserId),
) {
    let mut measured = Vec::new();
    for (label, picks) in sequences {
        let mut latencies = Latencies::new();
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new(name, label), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let user = &users[picks[next % picks.len()] as usize];
                    next += 1;
                    let t0 = Instant::now();
                    publish(user);
                    latencies.record(t0.elapsed());
                }
                start.elapsed()
            })
        });
        measured.push((*label, latencies));
    }
    let (ops, took) = churn.stop();
    for (label, mut latencies) in measured {
        latencies.report(&format!("{name}/{label}"), ops, took);
    }
}

/// sse-hub's contender `name`: every user subscribed once, `warm` events published to each
/// before timing, then the sequences published under churn.
///
/// From a fresh start (`warm` = 0) the windows are still filling while the bench runs, so the
/// heap grows, and about one publish in ten writes its frame on a page never touched before:
/// a page fault, the slowest part of a publish on a VM. A server that has run for a while has
/// full windows, each publish frees the frame its window lets go, and the heap stays the same
/// size: that is the steady state.
fn sse_hub(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    sequences: &[(&'static str, Vec<u32>)],
    names: &[String],
    name: &str,
    config: Config,
    warm: usize,
) {
    let event = common::text_event(1);
    let hub: Broadcaster<AgUiEvent> = Broadcaster::new(config);
    let users: Arc<Vec<UserId>> = Arc::new(names.iter().map(UserId::from).collect());
    let _guard = rt.enter();
    let connections: Vec<_> = users
        .iter()
        .map(|u| hub.subscribe(u).expect("subscribe"))
        .collect();
    for _ in 0..warm {
        for user in users.iter() {
            hub.broadcast(user, &event).expect("warm up");
        }
    }
    let churn = {
        let hub = hub.clone();
        let users = users.clone();
        Churn::start(move |i| drop(hub.subscribe(&users[i as usize]).expect("churn")))
    };
    measure(group, name, sequences, &users, churn, |user| {
        black_box(hub.broadcast(user, &event).expect("publish"));
    });
    drop(connections);
}

fn churn(c: &mut Criterion) {
    let rt = common::runtime();
    let event = common::text_event(1);
    let frame = common::text_frame();
    let sequences = picks();
    let names: Vec<String> = (0..USERS).map(|i| format!("user-{i:06}")).collect();
    let mut group = c.benchmark_group("churn");
    group.throughput(Throughput::Elements(1));

    // sse-hub, from a fresh start: the windows fill as the bench runs
    sse_hub(
        &mut group,
        &rt,
        &sequences,
        &names,
        "sse-hub",
        Config::named("churn"),
        0,
    );
    // sse-hub in its steady state: every window already full, so each publish lets one frame go
    sse_hub(
        &mut group,
        &rt,
        &sequences,
        &names,
        "sse-hub-steady",
        steady_config(),
        STEADY_WINDOW,
    );

    // bare tokio broadcast of pre-encoded Bytes, in a sharded map
    {
        let map: Arc<DashMap<UserId, broadcast::Sender<Bytes>>> = Arc::new(DashMap::new());
        let users: Arc<Vec<UserId>> = Arc::new(names.iter().map(UserId::from).collect());
        let connections: Vec<_> = users
            .iter()
            .map(|u| {
                let (tx, rx) = broadcast::channel(16);
                map.insert(u.clone(), tx);
                rx
            })
            .collect();
        let churn = {
            let map = map.clone();
            let users = users.clone();
            Churn::start(move |i| {
                let rx = map.get(&users[i as usize]).map(|tx| tx.subscribe());
                drop(rx);
            })
        };
        measure(
            &mut group,
            "bare-broadcast",
            &sequences,
            &users,
            churn,
            |user| {
                if let Some(tx) = map.get(user) {
                    black_box(tx.send(frame.clone()).ok());
                }
            },
        );
        drop(connections);
    }

    // the replaced design
    {
        let broadcaster = replaced::GenericBroadcaster::default();
        let names = Arc::new(names.clone());
        let mut connections: Vec<_> = names
            .iter()
            .map(|u| rt.block_on(broadcaster.connect(u)).1)
            .collect();
        let churn = {
            let broadcaster = broadcaster.clone();
            let names = names.clone();
            let local = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            Churn::start(move |i| {
                let user = &names[i as usize];
                local.block_on(async {
                    let (conn, rx) = broadcaster.connect(user).await;
                    // As the original's guard: the stream (receiver) goes first, then the
                    // connection is unregistered.
                    drop(rx);
                    broadcaster.unregister(user, &conn).await;
                });
            })
        };
        let local = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut measured = Vec::new();
        for (label, picks) in &sequences {
            let mut latencies = Latencies::new();
            let mut next = 0usize;
            group.bench_function(BenchmarkId::new("replaced", label), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(CHUNK);
                        left -= n;
                        total += local.block_on(async {
                            let start = Instant::now();
                            for _ in 0..n {
                                let user = &names[picks[next % picks.len()] as usize];
                                next += 1;
                                let t0 = Instant::now();
                                black_box(broadcaster.broadcast(user, &event).await);
                                latencies.record(t0.elapsed());
                            }
                            start.elapsed()
                        });
                        for rx in &mut connections {
                            while rx.try_recv().is_ok() {}
                        }
                    }
                    total
                })
            });
            measured.push((*label, latencies));
        }
        let (ops, took) = churn.stop();
        for (label, mut latencies) in measured {
            latencies.report(&format!("replaced/{label}"), ops, took);
        }
        drop(connections);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = churn
}
criterion_main!(benches);
