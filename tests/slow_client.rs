//! Slow and stalled clients over real sockets.
//!
//! An axum server on 127.0.0.1 serves `/events/{user}`; clients are raw `TcpStream`s with a small
//! receive buffer (and the server's sockets a small send buffer), so a client that stops reading
//! stalls the server's writes after a few kilobytes. Each client decodes the chunked body itself
//! and parses it with `eventsource-stream`.
//!
//! * 100 000 events go to a user with one stalled and one healthy connection, while another
//!   user's healthy connection gets events too: the accounted buffered bytes stay within the
//!   documented bound, the healthy clients get everything in order with a low publish-to-receive
//!   latency, and when the stalled client reads again it gets what the `Recover` policy promises.
//! * Each policy's outcome as the stalled client sees it: `Recover` within the window loses
//!   nothing, `Notify` says how many it skipped, `Disconnect` says so and ends the stream (and the
//!   reconnect resumes from the window).
//! * A client that disconnects in the middle of a large frame is gone from the counts promptly.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use eventsource_stream::{Event, EventStream};
use futures_core::Stream;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_hub::{Broadcaster, Config, EventId, LagPolicy, LastEventId, StallTimeout, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

/// Counts the heap bytes live per thread, so that a test on a current-thread runtime can measure
/// what the server holds, undisturbed by the other tests' threads.
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        count(-(layout.size() as isize));
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        count(new as isize - layout.size() as isize);
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_bytes() -> isize {
    LIVE_BYTES.with(|live| live.get())
}

/// Socket buffer sizes asked for; Linux doubles them and keeps a minimum.
const SMALL_BUFFER: u32 = 4096;

type Hub = Broadcaster<Value>;

async fn events(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    last_event_id: LastEventId,
) -> Response {
    match hub.sse_response(&UserId::from(user), &last_event_id) {
        Ok(sse) => sse.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Serves `hub` on a loopback port whose accepted sockets have a small send buffer.
async fn serve(hub: Hub) -> SocketAddr {
    let (listener, addr) = small_buffer_listener();
    let app = Router::new()
        .route("/events/{user}", get(events))
        .with_state(hub);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn small_buffer_listener() -> (tokio::net::TcpListener, SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(SMALL_BUFFER).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// How long a write may make no progress before the connection is closed, in the tests that
/// serve through [`StallTimeout`].
const STALL: Duration = Duration::from_millis(500);

/// Connects with a small receive buffer and sends the request; reads nothing.
async fn request(addr: SocketAddr, user: &str, last_event_id: Option<&str>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SMALL_BUFFER).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut head = format!("GET /events/{user} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(id) = last_event_id {
        head.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    head.push_str("Accept: text/event-stream\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads the response head; returns the bytes of the body read with it.
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the response head in time")
            .unwrap();
        assert!(n > 0, "closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    buf.split_off(end + 4)
}

/// The decoded body of a chunked response: ends at the last chunk (or at EOF, as an error).
fn chunked_body(
    mut stream: TcpStream,
    mut buf: Vec<u8>,
) -> Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>> {
    Box::pin(async_stream::try_stream! {
        loop {
            // A chunk: `{hex size}\r\n{data}\r\n`; size 0 ends the body.
            let chunk = loop {
                if let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") {
                    let line = std::str::from_utf8(&buf[..line_end]).unwrap();
                    let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    if size == 0 {
                        break None;
                    }
                    if buf.len() >= line_end + 2 + size + 2 {
                        let data = buf[line_end + 2..line_end + 2 + size].to_vec();
                        buf.drain(..line_end + 2 + size + 2);
                        break Some(data);
                    }
                }
                let mut more = [0u8; 16 * 1024];
                let n = stream.read(&mut more).await?;
                if n == 0 {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-body"))?;
                }
                buf.extend_from_slice(&more[..n]);
            };
            match chunk {
                Some(data) => yield Bytes::from(data),
                None => break,
            }
        }
    })
}

type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// The SSE events of a response (after its head), parsed by `eventsource-stream`.
fn sse_events(stream: TcpStream, rest: Vec<u8>) -> Events {
    Box::pin(
        EventStream::new(chunked_body(stream, rest))
            .map(|event| event.unwrap_or_else(|e| panic!("bad SSE: {e}"))),
    )
}

async fn connect(addr: SocketAddr, user: &str, last_event_id: Option<&str>) -> Events {
    let mut stream = request(addr, user, last_event_id).await;
    let rest = read_head(&mut stream).await;
    sse_events(stream, rest)
}

/// What a client got, in order.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    /// An event: its `n`, its id, and its publish-to-receive latency in microseconds.
    Event {
        n: u64,
        id: EventId,
        latency: u64,
    },
    Lagged(u64),
    Reset(String),
}

/// The clock publishers stamp events with and clients measure latency against.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

fn classify(event: &Event, user: &str, clock: Clock) -> Option<Got> {
    let data: Value = serde_json::from_str(&event.data).unwrap();
    match event.event.as_str() {
        "message" => {
            assert_eq!(data["u"], user, "ISOLATION: {data}");
            let sent = data["t"].as_u64().unwrap();
            Some(Got::Event {
                n: data["n"].as_u64().unwrap(),
                id: EventId::parse(&event.id).expect("every event has our id"),
                latency: clock.now().saturating_sub(sent),
            })
        }
        "lagged" => Some(Got::Lagged(data["missed"].as_u64().unwrap())),
        "reset" => Some(Got::Reset(data["reason"].as_str().unwrap().to_owned())),
        "heartbeat" => None,
        other => panic!("unexpected event {other:?}"),
    }
}

/// Reads until the event `last` arrives or the stream ends; `progress` follows the `n`s.
/// What [`read_until`] read: the items, whether the stream ended, and the client's last event
/// id as the SSE parser keeps it (what a browser sends back as `Last-Event-ID`), which includes
/// the priming `id:` of the stream's opening.
struct Read {
    got: Vec<Got>,
    ended: bool,
    last_event_id: String,
}

async fn read_until(
    events: &mut Events,
    user: &str,
    clock: Clock,
    last: u64,
    progress: Option<&watch::Sender<u64>>,
    within: Duration,
) -> Read {
    let mut got = Vec::new();
    let mut last_event_id = String::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{user}: no event {last} within {within:?}; last got {:?}",
                    got.last()
                )
            });
        let Some(event) = next else {
            return Read {
                got,
                ended: true,
                last_event_id,
            };
        };
        last_event_id.clone_from(&event.id);
        let Some(item) = classify(&event, user, clock) else {
            continue;
        };
        let n = match item {
            Got::Event { n, .. } => Some(n),
            _ => None,
        };
        got.push(item);
        if let (Some(n), Some(progress)) = (n, progress) {
            progress.send_replace(n);
        }
        if n == Some(last) {
            return Read {
                got,
                ended: false,
                last_event_id,
            };
        }
    }
}

fn event_ns(got: &[Got]) -> Vec<u64> {
    got.iter()
        .filter_map(|g| match g {
            Got::Event { n, .. } => Some(*n),
            _ => None,
        })
        .collect()
}

fn markers(got: &[Got]) -> Vec<(usize, &Got)> {
    got.iter()
        .enumerate()
        .filter(|(_, g)| !matches!(g, Got::Event { .. }))
        .collect()
}

/// Asserts that `got` is the events `1..=last` in order, except for gaps, each right after a
/// `lagged` marker that counts it exactly (a stalled connection may lag more than once: when
/// the socket drains a little, and when it reads again). Returns each marker as
/// `(the last n before it, missed)`. Event ids follow `n` (each user's channel starts with the
/// test).
fn assert_gaps_counted(got: &[Got], last: u64) -> Vec<(u64, u64)> {
    let (mut next, mut gap, mut found) = (1, None, Vec::new());
    for g in got {
        match g {
            Got::Lagged(missed) => {
                assert!(gap.is_none() && *missed > 0, "{g:?} after {gap:?}");
                gap = Some(*missed);
                found.push((next - 1, *missed));
            }
            Got::Event { n, id, .. } => {
                let skip = gap.take().unwrap_or(0);
                assert_eq!(*n, next + skip, "after {} (lagged {skip})", next - 1);
                assert_eq!(id.seq(), *n, "the id follows the sequence");
                next = n + 1;
            }
            Got::Reset(reason) => panic!("reset {reason} on a fresh subscribe"),
        }
    }
    assert_eq!(next - 1, last, "the last event");
    found
}

fn config(name: &'static str, policy: LagPolicy) -> Config {
    let mut config = Config::named(name);
    config.lag_policy = policy;
    config.retention = Duration::from_secs(60);
    config
}

async fn wait_for_connections(hub: &Hub, user: &UserId, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.connection_count(user) != n {
        assert!(
            Instant::now() < deadline,
            "{user} has {} connections, not {n}",
            hub.connection_count(user)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Publishes `count` events to `user`, numbered from 1, each padded to about `pad` bytes.
fn publish_all(hub: &Hub, user: &UserId, count: u64, pad: usize, clock: Clock) {
    let padding = "x".repeat(pad);
    for n in 1..=count {
        let event = json!({ "u": user.as_str(), "n": n, "t": clock.now(), "pad": padding });
        let published = hub.broadcast(user, &event).unwrap();
        assert_eq!(published.id.map(|id| id.seq()), Some(n));
    }
}

/// The window's bound from the crate docs, for `U` channels: `buffered_bytes ≤ U·W`.
fn assert_within_bound(hub: &Hub, channels: usize) {
    let bound = channels * hub.config().replay_bytes;
    let stats = hub.stats();
    assert!(
        stats.buffered_bytes <= bound,
        "buffered {} > U·W = {bound}",
        stats.buffered_bytes
    );
    for (user, bytes, _) in hub.buffered_by_user() {
        assert!(bytes <= hub.config().replay_bytes, "{user}: {bytes}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_costs_bounded_memory_slows_nobody_and_recovers_per_policy() {
    const EVENTS: u64 = 100_000;
    const BOB_EVERY: u64 = 4;
    /// The publisher keeps at most this many events ahead of the healthy clients: fewer than
    /// the window holds, so that a healthy client never loses one.
    const AHEAD: u64 = 96;
    let mut cfg = config("slow", LagPolicy::Recover);
    cfg.capacity = 16;
    cfg.replay_events = 256;
    cfg.replay_bytes = 64 * 1024;
    let hub: Hub = Broadcaster::new(cfg);
    let addr = serve(hub.clone()).await;
    let clock = Clock(Instant::now());
    let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));

    // The stalled client sends its request and never reads, until the end.
    let stalled = request(addr, "alice", None).await;
    wait_for_connections(&hub, &alice, 1).await;
    let mut healthy = connect(addr, "alice", None).await;
    let mut other = connect(addr, "bob", None).await;
    wait_for_connections(&hub, &alice, 2).await;
    wait_for_connections(&hub, &bob, 1).await;

    let (alice_progress, mut alice_seen) = watch::channel(0u64);
    let (bob_progress, mut bob_seen) = watch::channel(0u64);
    let alice_reader = tokio::spawn(async move {
        let within = Duration::from_secs(60);
        let read = read_until(
            &mut healthy,
            "alice",
            clock,
            EVENTS,
            Some(&alice_progress),
            within,
        )
        .await;
        (read.got, healthy)
    });
    let bob_reader = tokio::spawn(async move {
        let within = Duration::from_secs(60);
        let last = EVENTS / BOB_EVERY;
        let read = read_until(&mut other, "bob", clock, last, Some(&bob_progress), within).await;
        (read.got, other)
    });

    let missed_before = hub.stats().events_missed;
    let started = Instant::now();
    let mut bob_n = 0;
    let mut max_buffered = 0;
    for n in 1..=EVENTS {
        let event = json!({ "u": "alice", "n": n, "t": clock.now() });
        hub.broadcast(&alice, &event).unwrap();
        if n % BOB_EVERY == 0 {
            bob_n += 1;
            let event = json!({ "u": "bob", "n": bob_n, "t": clock.now() });
            hub.broadcast(&bob, &event).unwrap();
        }
        max_buffered = max_buffered.max(hub.stats().buffered_bytes);
        if n % 1000 == 0 {
            assert_within_bound(&hub, 2);
        }
        if n % 32 == 0 {
            // Flow control for the healthy clients only: the stalled one is never waited for.
            let wait = async {
                alice_seen.wait_for(|seen| n - seen <= AHEAD).await.unwrap();
                bob_seen
                    .wait_for(|seen| bob_n - seen <= AHEAD)
                    .await
                    .unwrap();
            };
            timeout(Duration::from_secs(10), wait)
                .await
                .unwrap_or_else(|_| panic!("a healthy client stopped at {n}"));
        }
    }
    let publishing = started.elapsed();
    assert!(
        max_buffered <= 2 * hub.config().replay_bytes,
        "{max_buffered}"
    );

    let (alice_got, healthy) = alice_reader.await.unwrap();
    let (bob_got, other) = bob_reader.await.unwrap();
    assert_eq!(event_ns(&alice_got), (1..=EVENTS).collect::<Vec<_>>());
    assert_eq!(
        event_ns(&bob_got),
        (1..=EVENTS / BOB_EVERY).collect::<Vec<_>>()
    );
    assert!(markers(&alice_got).is_empty() && markers(&bob_got).is_empty());
    for (who, got) in [("alice", &alice_got), ("bob", &bob_got)] {
        let mut latencies: Vec<u64> = got
            .iter()
            .filter_map(|g| match g {
                Got::Event { latency, .. } => Some(*latency),
                _ => None,
            })
            .collect();
        latencies.sort_unstable();
        let (p50, p99, max) = (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            *latencies.last().unwrap(),
        );
        println!(
            "{who}: {} events in {publishing:?}; latency p50 {p50} µs, p99 {p99} µs, max {max} µs",
            latencies.len()
        );
        // Generous: a debug build on two busy cores. A client held up by the stalled one would
        // wait for the 10 s flow-control timeout, or for ever.
        assert!(p99 < 250_000, "{who}: p99 {p99} µs");
        assert!(max < 2_000_000, "{who}: max {max} µs");
    }

    // The stalled client reads again: what the kernel and the server had queued for it, then
    // the `lagged` marker for what neither the ring nor the window still had, then the window.
    let mut stalled = stalled;
    let rest = read_head(&mut stalled).await;
    let mut stalled = sse_events(stalled, rest);
    let Read { got, ended, .. } = read_until(
        &mut stalled,
        "alice",
        clock,
        EVENTS,
        None,
        Duration::from_secs(20),
    )
    .await;
    assert!(!ended);
    let found = assert_gaps_counted(&got, EVENTS);
    let at = got
        .iter()
        .rposition(|g| matches!(g, Got::Lagged(_)))
        .unwrap();
    let before_resume = event_ns(&got[..at]).len();
    println!(
        "stalled client: {before_resume} events before it read again; lagged (after n, \
         missed) {found:?}"
    );
    // It really was stalled: it got a few hundred events while 100 000 were published.
    assert!(before_resume < 5_000, "{before_resume}");
    let &(k, missed) = found.last().expect("the stalled client lagged");
    assert_eq!(
        EVENTS - k - missed,
        256,
        "the whole window was replayed after the last marker"
    );
    // Every loss was counted: the healthy clients lost nothing, so the stalled one's markers
    // are all of it.
    let total: u64 = found.iter().map(|(_, m)| m).sum();
    assert_eq!(hub.stats().events_missed - missed_before, total);
    assert_within_bound(&hub, 2);
    drop((stalled, healthy, other));
    wait_for_connections(&hub, &alice, 0).await;
    wait_for_connections(&hub, &bob, 0).await;
}

/// Stalls a client of a fresh user, publishes `count` events of about `pad` bytes, then
/// starts reading: returns what it gets until the last event or the end of the stream, and the
/// server's address.
async fn stall_then_read(
    hub: &Hub,
    user: &'static str,
    count: u64,
    pad: usize,
) -> (Read, SocketAddr) {
    let addr = serve(hub.clone()).await;
    let clock = Clock(Instant::now());
    let id = UserId::from(user);
    let stalled = request(addr, user, None).await;
    wait_for_connections(hub, &id, 1).await;
    let lag_events = hub.stats().lag_events;
    publish_all(hub, &id, count, pad, clock);
    assert_within_bound(hub, 1);
    let mut stream = stalled;
    let rest = read_head(&mut stream).await;
    let mut events = sse_events(stream, rest);
    let read = read_until(
        &mut events,
        user,
        clock,
        count,
        None,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        hub.stats().lag_events > lag_events,
        "the client did not even lag: the test proves nothing"
    );
    drop(events);
    (read, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_within_the_window_delivers_everything_to_a_stalled_client() {
    let mut cfg = config("recover", LagPolicy::Recover);
    cfg.capacity = 16;
    cfg.replay_events = 1024;
    cfg.replay_bytes = 4 << 20;
    let hub: Hub = Broadcaster::new(cfg);
    // 400 frames of 2 KB: far more than the socket buffers, the server's queue and the ring.
    let (Read { got, ended, .. }, _) = stall_then_read(&hub, "rita", 400, 2048).await;
    assert!(!ended);
    assert!(markers(&got).is_empty(), "{:?}", markers(&got));
    assert_eq!(event_ns(&got), (1..=400).collect::<Vec<_>>());
    let stats = hub.stats();
    assert!(stats.events_recovered > 0, "{stats:?}");
    assert_eq!(stats.events_missed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_beyond_the_window_says_how_many_it_lost() {
    let mut cfg = config("recover-far", LagPolicy::Recover);
    cfg.capacity = 16;
    cfg.replay_events = 64;
    let hub: Hub = Broadcaster::new(cfg);
    let (Read { got, ended, .. }, _) = stall_then_read(&hub, "rob", 3000, 64).await;
    assert!(!ended);
    let found = assert_gaps_counted(&got, 3000);
    // At the last marker: lost, everything between what was queued for the client and the
    // window; at least the window's 64 follow (more when the stream caught up before the
    // publisher was done, the rest then coming through the ring: every event is either
    // delivered or counted, above).
    let &(k, missed) = found.last().unwrap();
    assert!(
        3000 - (k + missed) >= 64,
        "the window's 64 follow the marker: only {} did",
        3000 - (k + missed)
    );
    let total: u64 = found.iter().map(|(_, m)| m).sum();
    assert_eq!(hub.stats().events_missed, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_skips_to_the_ring_and_says_how_many() {
    let mut cfg = config("notify", LagPolicy::Notify);
    cfg.capacity = 16;
    cfg.replay_events = 4096;
    cfg.replay_bytes = 4 << 20;
    let hub: Hub = Broadcaster::new(cfg);
    let (Read { got, ended, .. }, _) = stall_then_read(&hub, "nina", 3000, 64).await;
    assert!(!ended);
    let found = assert_gaps_counted(&got, 3000);
    // No back-fill under Notify, even though the window has it: only the ring's 16 follow.
    let &(k, missed) = found.last().unwrap();
    assert_eq!(k + missed, 3000 - 16);
    let total: u64 = found.iter().map(|(_, m)| m).sum();
    assert_eq!(hub.stats().events_missed, total);
    assert_eq!(hub.stats().events_recovered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_says_how_many_then_ends_and_the_reconnect_resumes() {
    let mut cfg = config("disconnect", LagPolicy::Disconnect);
    cfg.capacity = 16;
    cfg.replay_events = 4096;
    cfg.replay_bytes = 4 << 20;
    let hub: Hub = Broadcaster::new(cfg);
    let (read, addr) = stall_then_read(&hub, "dora", 3000, 64).await;
    let Read {
        got,
        ended,
        last_event_id,
    } = read;
    assert!(ended, "the stream must end after the marker");
    let found = markers(&got);
    assert_eq!(found.len(), 1);
    let (at, Got::Lagged(missed)) = found[0] else {
        panic!("{found:?}")
    };
    assert_eq!(at, got.len() - 1, "the marker is the last thing sent");
    let before = event_ns(&got);
    let k = before.len() as u64;
    assert_eq!(before, (1..=k).collect::<Vec<_>>());
    // The gap runs to the oldest event the ring still had when the connection lagged: at the
    // latest, when it read again.
    assert!(k + missed <= 3000 - 16, "{k} + {missed}");
    assert_eq!(hub.stats().events_missed, *missed);
    // The client's last event id: its last event's, or, if it lagged before the first, the
    // priming id the stream opened with.
    let last_id = EventId::parse(&last_event_id).expect("the client holds an id");
    assert_eq!(last_id.seq(), k);
    let user = UserId::from("dora");
    wait_for_connections(&hub, &user, 0).await;

    // The client reconnects with its last event id: the window has everything after it.
    let mut events = connect(addr, "dora", Some(&last_event_id)).await;
    let clock = Clock(Instant::now());
    let Read {
        got: again, ended, ..
    } = read_until(
        &mut events,
        "dora",
        clock,
        3000,
        None,
        Duration::from_secs(20),
    )
    .await;
    assert!(!ended);
    assert!(markers(&again).is_empty());
    assert_eq!(event_ns(&again), (k + 1..=3000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_in_the_middle_of_a_large_frame_is_removed_promptly() {
    let mut cfg = config("midframe", LagPolicy::Recover);
    cfg.max_frame_bytes = 1 << 20;
    cfg.replay_bytes = 4 << 20;
    let hub: Hub = Broadcaster::new(cfg);
    let addr = serve(hub.clone()).await;
    let clock = Clock(Instant::now());
    let user = UserId::from("mia");

    for round in 0..3 {
        let mut stream = request(addr, "mia", None).await;
        let mut rest = read_head(&mut stream).await;
        wait_for_connections(&hub, &user, 1).await;
        // A frame far larger than every buffer between the server and the client.
        let event = json!({ "u": "mia", "n": round, "t": clock.now(), "pad": "y".repeat(900_000) });
        assert_eq!(hub.broadcast(&user, &event).unwrap().connections(), Some(1));
        // Read part of it, so that the server is in the middle of writing it, then go.
        while rest.len() < 32 * 1024 {
            let mut chunk = [0u8; 8192];
            let n = timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("the frame starts")
                .unwrap();
            assert!(n > 0);
            rest.extend_from_slice(&chunk[..n]);
        }
        assert!(
            rest.windows(7).any(|w| w == b"yyyyyyy"),
            "inside the frame's data"
        );
        if round == 0 {
            // An abortive close (RST).
            stream.set_zero_linger().unwrap();
        }
        let closed = Instant::now();
        drop(stream);

        // Bounded poll: the server notices the closed socket on its blocked write.
        let deadline = closed + Duration::from_secs(5);
        while hub.connection_count(&user) != 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the connection outlived its socket"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!(
            "round {round}: removed {:?} after the close",
            closed.elapsed()
        );
        assert_eq!(hub.stats().connections, 0);
        assert_eq!(hub.stats().users, 0);
    }
    // Nothing is stuck: the next publish reaches nobody, quickly.
    let published = hub
        .broadcast(&user, &json!({ "u": "mia", "n": 9, "t": 0 }))
        .unwrap();
    assert_eq!(published.connections(), Some(0));
}

/// Connects a client of `user` that never reads, and publishes until the server's writes to
/// it are blocked (the socket buffers and the server's queue are full).
async fn stalled_client(hub: &Hub, addr: SocketAddr, user: &str) -> TcpStream {
    let stream = request(addr, user, None).await;
    let id = UserId::from(user);
    wait_for_connections(hub, &id, 1).await;
    let clock = Clock(Instant::now());
    publish_all(hub, &id, 2000, 1024, clock);
    stream
}

/// `disconnect_user` "ends every open stream of `user`". A stalled stream is never polled by
/// the HTTP server (its write queue is full), so the kick alone is never seen; served through
/// [`StallTimeout`], the stalled write fails and the connection goes, freeing its slot against
/// `max_connections_per_user`, whatever the client does with its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_user_ends_a_stalled_stream() {
    let mut cfg = config("kick-stalled", LagPolicy::Recover);
    cfg.replay_bytes = 4 << 20;
    let hub: Hub = Broadcaster::new(cfg);
    let (listener, addr) = small_buffer_listener();
    let app = Router::new()
        .route("/events/{user}", get(events))
        .with_state(hub.clone());
    tokio::spawn(async move { axum::serve(StallTimeout::new(listener, STALL), app).await });
    let user = UserId::from("sam");
    let _stalled = stalled_client(&hub, addr, "sam").await;
    assert_eq!(hub.disconnect_user(&user), 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while hub.connection_count(&user) != 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled connection is still counted 3 s after disconnect_user"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `Broadcaster::shutdown`: "a server's graceful shutdown is not held up by" open streams. A
/// stalled one would hold it up, its response never finishing, were the server not behind
/// [`StallTimeout`]: the stalled write fails and the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_is_not_held_up_by_a_stalled_client() {
    let mut cfg = config("shutdown-stalled", LagPolicy::Recover);
    cfg.replay_bytes = 4 << 20;
    let hub: Hub = Broadcaster::new(cfg);
    let (listener, addr) = small_buffer_listener();
    let app = Router::new()
        .route("/events/{user}", get(events))
        .with_state(hub.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(StallTimeout::new(listener, STALL), app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let _stalled = stalled_client(&hub, addr, "sid").await;
    // A healthy, idle client too: its stream ends at once.
    let mut idle = connect(addr, "ida", None).await;

    hub.shutdown();
    stop.send(()).unwrap();
    let idle_end = timeout(Duration::from_secs(3), idle.next()).await;
    assert!(matches!(idle_end, Ok(None)), "the idle stream ends");
    let finished = timeout(Duration::from_secs(5), server).await;
    assert!(
        finished.is_ok(),
        "graceful shutdown still waits for the stalled client after 5 s"
    );
}

/// Publishes 200 frames of 60 KB to `user`, letting the server's tasks run between them.
async fn publish_large(hub: &Hub, user: &UserId) {
    let clock = Clock(Instant::now());
    for n in 1..=200u64 {
        let event =
            json!({ "u": user.as_str(), "n": n, "t": clock.now(), "pad": "z".repeat(60_000) });
        hub.broadcast(user, &event).unwrap();
        // Let the connection task take the frame, as a server's would between publishes.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
}

/// The crate docs bound memory "whatever clients do": `U·(64·C + 500 + W + C·F + 48·N) +
/// connections·(250 + 48·N + 16·F)`, where `16·F` is the HTTP server's write queue (hyper
/// queues up to 16 frames for a connection that does not drain), frames the window and the
/// ring may long have let go.
///
/// Measured on a current-thread runtime with a per-thread allocation counter; a healthy client
/// under the same publishes is the control.
#[test]
fn a_stalled_connection_holds_no_more_than_the_documented_bound() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut cfg = config("memory", LagPolicy::Recover);
        cfg.capacity = 1;
        cfg.replay_events = 1;
        let (c, f, w, n) = (1, cfg.max_frame_bytes, cfg.replay_bytes, cfg.replay_events);
        let bound = ((80 * c + 500 + w + c * f + 64 * n) + (250 + 64 * n + 16 * f)) as isize;
        let hub: Hub = Broadcaster::new(cfg);
        let addr = serve(hub.clone()).await;

        // The control: a client that reads everything, measured once it has caught up (its
        // connection still open).
        let healthy = UserId::from("hal");
        let mut events = connect(addr, "hal", None).await;
        wait_for_connections(&hub, &healthy, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = live_bytes();
        let reader = tokio::spawn(async move {
            let clock = Clock(Instant::now());
            let within = Duration::from_secs(20);
            // It reads through to the last event (it may lag: ring and window hold one frame).
            let read = read_until(&mut events, "hal", clock, 200, None, within).await;
            assert!(!read.ended);
            events
        });
        publish_large(&hub, &healthy).await;
        let events = reader.await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let held_by_healthy = live_bytes() - before;
        assert_eq!(hub.connection_count(&healthy), 1);

        // A client that never reads.
        let stalled_user = UserId::from("max");
        let stalled = request(addr, "max", None).await;
        wait_for_connections(&hub, &stalled_user, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = live_bytes();
        publish_large(&hub, &stalled_user).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let held_by_stalled = live_bytes() - before;
        assert_eq!(hub.connection_count(&stalled_user), 1);
        println!(
            "held: {held_by_healthy} bytes for a healthy connection, {held_by_stalled} for a \
             stalled one; documented bound {bound}"
        );
        drop((stalled, events));
        assert!(held_by_healthy <= bound, "the control: {held_by_healthy}");
        assert!(
            held_by_stalled <= bound,
            "{held_by_stalled} bytes held for one stalled connection, over the documented {bound}"
        );
    });
}
