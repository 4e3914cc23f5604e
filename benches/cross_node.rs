//! Cross-node delivery through the Redis backplane: publish on node A, receive on node B, next
//! to the single-node hub in the same run.
//!
//! Needs `redis-server` (it starts its own on a free loopback port, killed at the end) and the
//! `redis` feature: `cargo bench --features redis --bench cross_node`. Without `redis-server`
//! it prints `SKIPPED` and measures nothing.
//!
//! * Throughput (criterion, group `cross_node`), one subscriber, rounds of [`BATCH`] events of
//!   about 260 bytes:
//!   * `single-node`: sync `broadcast` on one hub, received by its subscriber;
//!   * `redis/pipelined`: sync `broadcast` on A (queued, sent to Redis in pipelines), received
//!     on B;
//!   * `redis/awaited`: `broadcast_async` on A, each publish awaited before the next, received
//!     on B.
//! * Latency (printed after criterion's report), [`SAMPLES`] events one at a time: from the
//!   publish call to the frame coming out of the subscriber's stream, p50 and p99.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use serde_json::{Value, json};
use sse_hub::backplane::{RedisBackplane, RedisConfig};
use sse_hub::{Broadcaster, Config, Subscription, UserId};
use tokio_stream::StreamExt;

/// Events per measured round.
const BATCH: usize = 64;
/// Events in the latency measurement.
const SAMPLES: usize = 2_000;

type Hub = Broadcaster<Value>;

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(RedisServer, String)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some((server, format!("redis://127.0.0.1:{port}/")))
}

/// An event whose frame is about 260 bytes, like a streamed text chunk.
fn event(n: usize) -> Value {
    json!({
        "type": "TEXT_MESSAGE_CONTENT",
        "messageId": format!("msg-{n:08}"),
        "delta": "The quick brown fox jumps over the lazy dog while the agent streams its \
                  answer one chunk at a time to every open tab of the user, encoded once.",
        "timestamp": 1_780_000_000_000u64,
    })
}

fn config() -> Config {
    let mut config = Config::named("bench");
    // A round never overruns the ring, so nobody lags.
    config.capacity = BATCH * 2;
    config
}

async fn node(url: &str) -> (Hub, RedisBackplane) {
    let backplane = RedisBackplane::new(RedisConfig::new(url)).expect("backplane");
    assert!(backplane.wait_connected(Duration::from_secs(10)).await);
    let hub = Broadcaster::with_backplane(config(), Arc::new(backplane.clone()));
    (hub, backplane)
}

async fn receive(subscription: &mut Subscription<Value>, count: usize) {
    for _ in 0..count {
        tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("delivered in time")
            .expect("a frame");
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.50), at(0.99))
}

fn main() {
    let Some((_redis, url)) = start_redis() else {
        println!("SKIPPED: the cross-node bench needs redis-server (apt-get install redis-server)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let user = UserId::from("alice");
    let (single, mut single_sub, a, b, mut b_sub) = rt.block_on(async {
        let single: Hub = Broadcaster::new(config());
        let single_sub = single.subscribe(&user).unwrap();
        let (a, _a_backplane) = node(&url).await;
        let (b, _b_backplane) = node(&url).await;
        let b_sub = b.subscribe_async(&user, None).await.unwrap();
        (single, single_sub, a, b, b_sub)
    });
    let events: Vec<Value> = (0..BATCH).map(event).collect();

    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("cross_node");
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("single-node", |bencher| {
            bencher.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for event in &events {
                            single.broadcast(&user, event).unwrap();
                        }
                        receive(&mut single_sub, BATCH).await;
                    }
                    start.elapsed()
                })
            })
        });
        group.bench_function("redis/pipelined", |bencher| {
            bencher.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for event in &events {
                            a.broadcast(&user, event).unwrap();
                        }
                        receive(&mut b_sub, BATCH).await;
                    }
                    start.elapsed()
                })
            })
        });
        group.bench_function("redis/awaited", |bencher| {
            bencher.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for event in &events {
                            a.broadcast_async(&user, event).await.unwrap();
                        }
                        receive(&mut b_sub, BATCH).await;
                    }
                    start.elapsed()
                })
            })
        });
        group.finish();
    }

    let (single_latency, cross_latency) = rt.block_on(async {
        let mut single_latency = Vec::with_capacity(SAMPLES);
        let mut cross_latency = Vec::with_capacity(SAMPLES);
        for n in 0..SAMPLES {
            let event = event(n);
            let start = Instant::now();
            single.broadcast(&user, &event).unwrap();
            receive(&mut single_sub, 1).await;
            single_latency.push(start.elapsed());

            let start = Instant::now();
            a.broadcast(&user, &event).unwrap();
            receive(&mut b_sub, 1).await;
            cross_latency.push(start.elapsed());
        }
        (single_latency, cross_latency)
    });
    let (p50, p99) = percentiles(single_latency);
    println!(
        "latency single-node   publish -> subscriber: p50 {p50:?}, p99 {p99:?} ({SAMPLES} events)"
    );
    let (p50, p99) = percentiles(cross_latency);
    println!(
        "latency redis A -> B  publish -> subscriber: p50 {p50:?}, p99 {p99:?} ({SAMPLES} events)"
    );
    assert_eq!(a.stats().backplane_failures, 0);
    drop(b);
    criterion.final_summary();
}
