//! Load generator: real SSE connections over loopback, publish-to-receive latency, losses,
//! server CPU per delivery and server RSS per connection.
//!
//! ```text
//! cargo run --release --example loadgen -- --connections 1000 --users 100 --rate 15000 --seconds 10
//! cargo run --release --example loadgen -- --design replaced --connections 1000 --users 100 --rate 15000
//! cargo run --release --example loadgen -- --design bare --connections 1000 --users 1000 --rate 400000 --seconds 5
//! cargo run --release --example loadgen -- --connections 19900 --users 19900 --rate 0 --seconds 20 --heartbeat-ms 1000
//! cargo run --release --example loadgen -- --addr 127.0.0.1:3000 --server-pid 1234 --connections 100 --users 10 --rate 2000
//! ```
//!
//! # How it works
//!
//! By default this process is the server: an axum app on `127.0.0.1:0`, served by
//! `sse_hub::serve` (or, with `--serve axum`, by `axum::serve`, as before issue 13; the
//! replaced design is served by `axum::serve` unless `--serve` says otherwise), serving
//! `GET /events/{channel}/{user}` through sse-hub's `EventRouter::channel_response` (or, with
//! `--design replaced`, through a re-implementation of the design sse-hub replaces, an axum `Sse`
//! over an unbounded mpsc per connection; with `--design bare`, through the limit of sse-hub's
//! own design: a map of per-user `broadcast::Sender<Bytes>` of frames the publisher encodes
//! once, each connection's body a bare stream over its receiver, served as the hub design is,
//! lean HTTP/1.1 path included, so that what separates the two is what sse-hub adds to that
//! skeleton; `loadgen/bare.rs` says what it leaves out; `--design bare-joined` is the same
//! skeleton joining the frames ready together into one chunk, as sse-hub does). A publisher thread in the same process
//! publishes straight through the broadcaster at `--rate` events per second (event `i` to user
//! `i % U`), so the publish path is measured without the overhead of an HTTP POST. It wakes every
//! `--tick-us` (1 ms by default) and publishes what is due, as a token-streaming agent does; the
//! send timestamp is taken at each publish, so the tick adds nothing to the measured latency. Because the server is
//! alone in this process, `/proc/self/stat` (utime + stime) is its CPU, `/proc/self/statm` its
//! RSS and `syscw` of `/proc/self/io` its write system calls (`server_writes_per_delivery`:
//! below 1 when frames ready together leave in one write). `server_user_cpu_ns_per_delivery` is
//! the utime part alone: the server's own code, without the kernel's (system calls, and the
//! loopback TCP path they run, the receiving side's included).
//!
//! With `--http2 S` the clients speak HTTP/2 with prior knowledge (h2c), `S` streams per
//! connection, through hyper's client; otherwise HTTP/1.1 as below.
//!
//! The clients run in child processes (this same binary, `--client-worker`), because one
//! process may hold at most RLIMIT_NOFILE descriptors and the hard limit may be too low for both
//! ends of 20 000 connections. Each child opens its share of the connections over raw TCP with a
//! minimal HTTP/1.1 request, spreading them over several `127.0.0.x` source addresses so that
//! ephemeral ports never run out, de-chunks the response and parses the SSE lines itself.
//!
//! With `--addr` the server is an external one (the demo, `examples/server.rs`): events are
//! published with `POST /events/{channel}/{user}` over keep-alive connections, and the server's
//! CPU and RSS are read from `/proc/PID` when `--server-pid` is given.
//!
//! Every event is an AG-UI `CUSTOM` event whose value carries the user's sequence number `s`
//! and the send time `t` (CLOCK_MONOTONIC nanoseconds, the same clock in every process of the
//! machine). A client counts an event as lost when its sequence number skips one, or when it
//! never arrives; events the server signalled with a `lagged` control event are counted apart.
//!
//! The last line is the summary, `summary key=value ...`, for scripts.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Counts the heap bytes in use, in the server process only (enabled by the parent), so that
/// the server's heap per connection can be told apart from its RSS.
struct Counting;

static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

fn count(delta: isize) {
    use std::sync::atomic::Ordering::Relaxed;
    if COUNTING.load(Relaxed) {
        LIVE.fetch_add(delta, Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        count(-(layout.size() as isize));
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count(size as isize - layout.size() as isize);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_bytes() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

#[path = "../benches/common/mod.rs"]
#[allow(unused)]
mod common;

#[path = "loadgen/bare.rs"]
mod bare;

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    connections: usize,
    users: usize,
    rate: u64,
    seconds: f64,
    addr: Option<String>,
    server_pid: Option<u32>,
    policy: String,
    design: String,
    serve: String,
    http2: usize,
    capacity: usize,
    heartbeat_ms: u64,
    clients: usize,
    sources: u8,
    channel: String,
    pad: usize,
    drain_ms: u64,
    tick_us: u64,
    // client worker only
    worker: bool,
    first: usize,
    count: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connections: 1000,
            users: 100,
            rate: 15_000,
            seconds: 10.0,
            addr: None,
            server_pid: None,
            policy: "recover".into(),
            design: "hub".into(),
            serve: "sse-hub".into(),
            http2: 0,
            capacity: 16,
            heartbeat_ms: 15_000,
            clients: 2,
            sources: 8,
            channel: "agui".into(),
            pad: 120,
            drain_ms: 60_000,
            tick_us: 1_000,
            worker: false,
            first: 0,
            count: 0,
        }
    }
}

const USAGE: &str = "usage: loadgen [--connections C] [--users U] [--rate R events/s] [--seconds T]
               [--addr HOST:PORT [--server-pid PID]] [--policy recover|notify|disconnect]
               [--design hub|replaced|bare|bare-joined] [--serve sse-hub|axum] [--http2 STREAMS_PER_CONN] [--capacity N] [--heartbeat-ms MS] [--clients K]
               [--sources S] [--channel agui] [--pad BYTES] [--drain-ms MS] [--tick-us US]";

fn parse_options() -> Result<Options, String> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--client-worker" {
            o.worker = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--connections" => o.connections = value.parse().map_err(|e| bad(&e))?,
            "--users" => o.users = value.parse().map_err(|e| bad(&e))?,
            "--rate" => o.rate = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => o.seconds = value.parse().map_err(|e| bad(&e))?,
            "--addr" => o.addr = Some(value),
            "--server-pid" => o.server_pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--policy" => o.policy = value,
            "--design" => o.design = value,
            "--serve" => o.serve = value,
            "--http2" => o.http2 = value.parse().map_err(|e| bad(&e))?,
            "--capacity" => o.capacity = value.parse().map_err(|e| bad(&e))?,
            "--heartbeat-ms" => o.heartbeat_ms = value.parse().map_err(|e| bad(&e))?,
            "--clients" => o.clients = value.parse().map_err(|e| bad(&e))?,
            "--sources" => o.sources = value.parse().map_err(|e| bad(&e))?,
            "--channel" => o.channel = value,
            "--pad" => o.pad = value.parse().map_err(|e| bad(&e))?,
            "--drain-ms" => o.drain_ms = value.parse().map_err(|e| bad(&e))?,
            "--tick-us" => o.tick_us = value.parse().map_err(|e| bad(&e))?,
            "--first" => o.first = value.parse().map_err(|e| bad(&e))?,
            "--count" => o.count = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if o.users == 0 || o.connections == 0 || o.clients == 0 || o.sources == 0 {
        return Err("connections, users, clients and sources must be at least 1".into());
    }
    if !o.seconds.is_finite() || o.seconds <= 0.0 || o.seconds > 3600.0 {
        return Err("--seconds must be in (0, 3600]".into());
    }
    if !["recover", "notify", "disconnect"].contains(&o.policy.as_str()) {
        return Err(format!("unknown policy {}", o.policy));
    }
    if !["hub", "replaced", "bare", "bare-joined"].contains(&o.design.as_str()) {
        return Err(format!("unknown design {}", o.design));
    }
    // The replaced design is served as it was, by axum::serve, unless told otherwise.
    if o.design == "replaced" && !std::env::args().any(|a| a == "--serve") {
        o.serve = "axum".into();
    }
    if !["sse-hub", "axum"].contains(&o.serve.as_str()) {
        return Err(format!("unknown server {}", o.serve));
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Process facts: clock, file descriptors, CPU, RSS

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// utime + stime of a process, in nanoseconds.
fn cpu_ns(pid: Option<u32>) -> Option<u64> {
    cpu_split_ns(pid).map(|(user, system)| user + system)
}

/// utime and stime of a process, in nanoseconds: the time in its own code and in the kernel
/// on its behalf (system calls, and the loopback TCP path they run, the peer's receive side
/// included).
fn cpu_split_ns(pid: Option<u32>) -> Option<(u64, u64)> {
    let path = pid.map_or("/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime * 1_000_000_000 / ticks, stime * 1_000_000_000 / ticks))
}

/// The write system calls (`write`, `writev`, `sendmsg`...) a process has made so far:
/// `syscw` of `/proc/PID/io`.
fn write_calls(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or("/proc/self/io".to_owned(), |p| format!("/proc/{p}/io"));
    let io = std::fs::read_to_string(path).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident set size of a process, in bytes.
fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or("/proc/self/statm".to_owned(), |p| {
        format!("/proc/{p}/statm")
    });
    let statm = std::fs::read_to_string(path).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some(pages * page)
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear, 32 sub-buckets per power of two (about 3 % resolution)

const BUCKETS: usize = 2048;

fn bucket(v: u64) -> usize {
    if v < 64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros() as usize;
    let shift = msb - 5;
    ((shift + 1) * 32 + ((v >> shift) & 31) as usize).min(BUCKETS - 1)
}

/// The middle of a bucket.
fn bucket_value(i: usize) -> u64 {
    if i < 64 {
        return i as u64;
    }
    let shift = i / 32 - 1;
    let low = (32 + (i % 32) as u64) << shift;
    low + (1u64 << shift) / 2
}

struct Histogram {
    counts: Vec<u64>,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            max: 0,
        }
    }

    fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.max = self.max.max(v);
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn percentile(&self, p: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_value(i).min(self.max);
            }
        }
        self.max
    }

    fn encode(&self) -> String {
        let parts: Vec<String> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| format!("{i}:{c}"))
            .collect();
        parts.join(",")
    }

    fn merge_encoded(&mut self, s: &str) {
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let Some((i, c)) = part.split_once(':') else {
                continue;
            };
            if let (Ok(i), Ok(c)) = (i.parse::<usize>(), c.parse::<u64>())
                && i < BUCKETS
            {
                self.counts[i] += c;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// The JSON of the `seq`-th event of a user: an AG-UI CUSTOM event with the sequence number,
/// the send time and padding to bring the frame to about 260 bytes.
fn event_json(seq: u64, sent_ns: u64, pad: &str) -> String {
    format!(
        r#"{{"type":"CUSTOM","name":"loadgen","value":{{"s":{seq},"t":{sent_ns},"p":"{pad}"}}}}"#
    )
}

fn user_name(u: usize) -> String {
    format!("u{u:06}")
}

/// Events user `u` got when `published` events went round-robin over `users` users.
fn expected_for(u: usize, users: usize, published: u64) -> u64 {
    let users = users as u64;
    published / users + u64::from((u as u64) < published % users)
}

// ---------------------------------------------------------------------------------------------
// The in-process servers

mod servers {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use futures_core::Stream;
    use sse_hub::{Channel, Config, EventRouter, LagPolicy, LastEventId, UserId};
    use tokio_stream::wrappers::UnboundedReceiverStream;

    use super::common::replaced;

    /// The sse-hub server's router and app.
    pub fn hub(
        capacity: usize,
        policy: &str,
        heartbeat: Duration,
        per_user: usize,
        users: usize,
    ) -> (EventRouter, Router) {
        let mut config = Config::named("loadgen");
        config.capacity = capacity;
        config.lag_policy = match policy {
            "notify" => LagPolicy::Notify,
            "disconnect" => LagPolicy::Disconnect,
            _ => LagPolicy::Recover,
        };
        config.sse.heartbeat_interval = heartbeat;
        config.max_connections_per_user = per_user.max(16);
        config.max_channels = users.max(100_000);
        let router = EventRouter::new(config);
        let app = Router::new()
            .route("/events/{channel}/{user}", get(hub_stream))
            .with_state(router.clone());
        (router, app)
    }

    async fn hub_stream(
        State(router): State<EventRouter>,
        Path((channel, user)): Path<(String, String)>,
        last_event_id: LastEventId,
    ) -> Response {
        let Ok(channel) = channel.parse::<Channel>() else {
            return axum::http::StatusCode::NOT_FOUND.into_response();
        };
        match router.channel_response(channel, &UserId::from(user), &last_event_id) {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    /// The replaced design's server: an axum `Sse` over each connection's unbounded receiver,
    /// with the original's keep-alive (a named `heartbeat` event) and its guard, whose drop
    /// unregisters the connection from a spawned task.
    pub fn replaced(heartbeat: Duration) -> (replaced::GenericBroadcaster, Router) {
        let broadcaster = replaced::GenericBroadcaster::default();
        let app = Router::new()
            .route("/events/{channel}/{user}", get(replaced_stream))
            .with_state((broadcaster.clone(), heartbeat));
        (broadcaster, app)
    }

    struct ConnectionGuard {
        broadcaster: replaced::GenericBroadcaster,
        user: String,
        conn: String,
    }

    impl Drop for ConnectionGuard {
        fn drop(&mut self) {
            let broadcaster = self.broadcaster.clone();
            let user = std::mem::take(&mut self.user);
            let conn = std::mem::take(&mut self.conn);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { broadcaster.unregister(&user, &conn).await });
            }
        }
    }

    struct Guarded {
        inner: UnboundedReceiverStream<Result<Event, Infallible>>,
        _guard: ConnectionGuard,
    }

    impl Stream for Guarded {
        type Item = Result<Event, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Pin::new(&mut self.inner).poll_next(cx)
        }
    }

    async fn replaced_stream(
        State((broadcaster, heartbeat)): State<(replaced::GenericBroadcaster, Duration)>,
        Path((_channel, user)): Path<(String, String)>,
    ) -> Response {
        let (conn, rx) = broadcaster.connect(&user).await;
        let stream = Guarded {
            inner: UnboundedReceiverStream::new(rx),
            _guard: ConnectionGuard {
                broadcaster: broadcaster.clone(),
                user,
                conn,
            },
        };
        let keep_alive = KeepAlive::new().interval(heartbeat).event(
            Event::default()
                .event("heartbeat")
                .data(sse_hub::HEARTBEAT_JSON),
        );
        Sse::new(stream).keep_alive(keep_alive).into_response()
    }
}

/// Where events are published.
enum Publisher {
    Hub(sse_hub::EventRouter, sse_hub::Channel),
    Replaced(common::replaced::GenericBroadcaster),
    Bare(std::sync::Arc<bare::Hub>),
    Http(SocketAddr, String),
}

/// Publishes `total` events at `options.rate` from this thread, event `i` to user
/// `i % seqs.len()` (whose sequence number it takes), waking every `options.tick_us`, as
/// `publish` does it; returns how many were sent and how many `publish` said failed.
fn publish_paced(
    options: &Options,
    total: u64,
    seqs: &mut [u64],
    pad: &str,
    mut publish: impl FnMut(usize, u64, &str) -> bool,
) -> (u64, u64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.seconds + 60.0);
    let tick = Duration::from_micros(options.tick_us.max(1));
    let (mut sent, mut failed) = (0u64, 0u64);
    while sent < total && Instant::now() < deadline {
        let due = ((start.elapsed().as_secs_f64() * options.rate as f64) as u64).min(total);
        while sent < due {
            let u = (sent % seqs.len() as u64) as usize;
            seqs[u] += 1;
            let json = event_json(seqs[u], now_ns(), pad);
            failed += u64::from(!publish(u, seqs[u], &json));
            sent += 1;
        }
        std::thread::sleep(tick);
    }
    (sent, failed)
}

/// Publishes `rate` events per second for `seconds`, event `i` to user `i % users`; returns
/// how many were published and how many failed.
fn publish(
    publisher: Publisher,
    options: &Options,
    users: &[String],
    hub_users: &[sse_hub::UserId],
) -> (u64, u64) {
    let pad = "x".repeat(options.pad);
    let total = (options.rate as f64 * options.seconds) as u64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut seqs = vec![0u64; users.len()];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.seconds + 60.0);
    let mut sent = 0u64;
    let mut failed = 0u64;
    let tick = Duration::from_micros(options.tick_us.max(1));
    match publisher {
        Publisher::Hub(router, channel) => {
            let broadcaster = router.agui().clone();
            debug_assert_eq!(channel, sse_hub::Channel::AgUi);
            (sent, failed) = publish_paced(options, total, &mut seqs, &pad, |u, _, json| {
                sse_hub::Payload::from_text(None, json)
                    .and_then(|p| broadcaster.broadcast_payload(&hub_users[u], p))
                    .is_ok()
            });
        }
        Publisher::Bare(hub) => {
            (sent, failed) = publish_paced(options, total, &mut seqs, &pad, |u, seq, json| {
                // A user with no connection is no failure, as with the hub design.
                hub.send(&hub_users[u], hub.frame(json, seq));
                true
            });
        }
        Publisher::Replaced(broadcaster) => rt.block_on(async {
            while sent < total && Instant::now() < deadline {
                let due = ((start.elapsed().as_secs_f64() * options.rate as f64) as u64).min(total);
                while sent < due {
                    let u = (sent % users.len() as u64) as usize;
                    seqs[u] += 1;
                    let json = event_json(seqs[u], now_ns(), &pad);
                    let event = axum::response::sse::Event::default().data(json);
                    broadcaster.broadcast_event(&users[u], event).await;
                    sent += 1;
                }
                std::thread::sleep(tick);
            }
        }),
        Publisher::Http(addr, channel) => rt.block_on(async {
            // Four keep-alive connections, each posting its share in turn.
            const POSTERS: usize = 4;
            let mut streams = Vec::new();
            for _ in 0..POSTERS {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        streams.push(s);
                    }
                    Err(e) => {
                        eprintln!("cannot connect to {addr}: {e}");
                        return;
                    }
                }
            }
            let mut buf = vec![0u8; 16 * 1024];
            while sent < total && Instant::now() < deadline {
                let due = ((start.elapsed().as_secs_f64() * options.rate as f64) as u64).min(total);
                while sent < due {
                    // One request per poster in flight at a time, pipelined across posters.
                    let batch = (due - sent).min(POSTERS as u64) as usize;
                    for (k, stream) in streams.iter_mut().enumerate().take(batch) {
                        let n = sent + k as u64;
                        let u = (n % users.len() as u64) as usize;
                        seqs[u] += 1;
                        let json = event_json(seqs[u], now_ns(), &pad);
                        let request = format!(
                            "POST /events/{channel}/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                            users[u],
                            json.len()
                        );
                        if stream.write_all(request.as_bytes()).await.is_err() {
                            failed += 1;
                        }
                    }
                    for stream in streams.iter_mut().take(batch) {
                        if !read_response(stream, &mut buf).await {
                            failed += 1;
                        }
                    }
                    sent += batch as u64;
                }
                tokio::time::sleep(tick).await;
            }
        }),
    }
    (sent, failed)
}

/// Reads one HTTP response with a Content-Length body; true when its status is 2xx.
async fn read_response(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut have = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Instant::now() > deadline || have == buf.len() {
            return false;
        }
        let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf[have..])).await
        else {
            return false;
        };
        if n == 0 {
            return false;
        }
        have += n;
        let Some(end) = find(&buf[..have], b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let ok = head.starts_with("http/1.1 2");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = have - (end + 4);
        while body < length {
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf[..])).await
            else {
                return false;
            };
            if n == 0 {
                return false;
            }
            body += n;
        }
        return ok;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The client worker: a child process holding `count` connections

/// What one connection has seen.
#[derive(Default)]
struct ConnState {
    last_seq: u64,
    unique: u64,
    gaps: u64,
    duplicates: u64,
    signalled: u64,
    heartbeats: u64,
    ended: bool,
}

#[derive(Default)]
struct WorkerTotals {
    connected: u64,
    failed: u64,
    last_receive_ns: u64,
    /// Events received and events signalled as lost, so far, for the parent's progress query.
    events: u64,
    signalled: u64,
}

/// Parses SSE lines from de-chunked body bytes.
struct SseParser {
    line: Vec<u8>,
    event: Vec<u8>,
    seq: Option<(u64, u64)>,
    missed: u64,
}

fn number_after(data: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(data, key)? + key.len();
    let mut n: u64 = 0;
    let mut digits = 0;
    for &b in &data[at..] {
        if !b.is_ascii_digit() || digits == 20 {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

impl SseParser {
    fn new() -> Self {
        Self {
            line: Vec::with_capacity(512),
            event: Vec::new(),
            seq: None,
            missed: 0,
        }
    }

    /// Parses `bytes`, read at `now`; returns whether an event was dispatched.
    fn feed(
        &mut self,
        mut bytes: &[u8],
        now: u64,
        conn: &mut ConnState,
        hist: &mut Histogram,
    ) -> bool {
        let mut dispatched = false;
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(at) => {
                    if self.line.is_empty() {
                        dispatched |= self.on_line(&bytes[..at], now, conn, hist);
                    } else {
                        self.line.extend_from_slice(&bytes[..at]);
                        let line = std::mem::take(&mut self.line);
                        dispatched |= self.on_line(&line, now, conn, hist);
                        self.line = line;
                        self.line.clear();
                    }
                    bytes = &bytes[at + 1..];
                }
                None => {
                    self.line.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
        dispatched
    }

    /// Returns whether an event was dispatched.
    fn on_line(
        &mut self,
        line: &[u8],
        now: u64,
        conn: &mut ConnState,
        hist: &mut Histogram,
    ) -> bool {
        if line.is_empty() {
            let mut received = false;
            if self.event == b"heartbeat" {
                conn.heartbeats += 1;
            } else if self.event == b"lagged" {
                conn.signalled += self.missed;
            } else if let Some((seq, sent)) = self.seq {
                hist.record(now.saturating_sub(sent));
                received = true;
                if seq <= conn.last_seq {
                    conn.duplicates += 1;
                } else {
                    conn.gaps += seq - conn.last_seq - 1;
                    conn.unique += 1;
                    conn.last_seq = seq;
                }
            }
            self.event.clear();
            self.seq = None;
            self.missed = 0;
            return received;
        }
        if let Some(name) = line.strip_prefix(b"event: ") {
            self.event.clear();
            self.event.extend_from_slice(name);
        } else if let Some(data) = line.strip_prefix(b"data: ") {
            if self.event == b"lagged" {
                self.missed = number_after(data, b"\"missed\":").unwrap_or(0);
            } else if let Some(s) = number_after(data, b"\"s\":") {
                let after = memchr::memmem::find(data, b"\"s\":").unwrap_or(0);
                if let Some(t) = number_after(&data[after..], b"\"t\":") {
                    self.seq = Some((s, t));
                }
            }
        }
        false
    }
}

/// De-chunks an HTTP/1.1 chunked body.
enum Chunked {
    Size(u64, bool),
    Data(u64),
    DataEnd(u8),
}

impl Chunked {
    /// Appends the body bytes of `input` to `out`; false at the terminating chunk.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> bool {
        while !input.is_empty() {
            match self {
                Chunked::Size(size, in_ext) => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'\n' => {
                            if *size == 0 {
                                return false;
                            }
                            *self = Chunked::Data(*size);
                        }
                        b'\r' => {}
                        b';' => *in_ext = true,
                        _ if *in_ext => {}
                        _ => {
                            let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                            *size = *size * 16 + digit;
                        }
                    }
                }
                Chunked::Data(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Chunked::DataEnd(2);
                    }
                }
                Chunked::DataEnd(left) => {
                    input = &input[1..];
                    *left -= 1;
                    if *left == 0 {
                        *self = Chunked::Size(0, false);
                    }
                }
            }
        }
        true
    }
}

async fn open(
    server: SocketAddr,
    source: Ipv4Addr,
    path: &str,
) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("response timed out"))??;
        if n == 0 {
            return Err(std::io::Error::other("closed before the response"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&head, b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            if !status.starts_with("http/1.1 200") {
                let line = status.lines().next().unwrap_or("").to_owned();
                return Err(std::io::Error::other(line));
            }
            if !status.contains("transfer-encoding: chunked") {
                return Err(std::io::Error::other("expected a chunked body"));
            }
            let rest = head[end + 4..].to_vec();
            return Ok((stream, rest));
        }
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::other("response head too long"));
        }
    }
}

/// An HTTP/2 connection with prior knowledge (h2c) from `source`, driven by a local task.
async fn open_h2(
    server: SocketAddr,
    source: Ipv4Addr,
) -> std::io::Result<hyper::client::conn::http2::SendRequest<String>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(LocalExec)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::task::spawn_local(async move {
        if let Err(e) = connection.await {
            eprintln!("HTTP/2 connection: {e}");
        }
    });
    Ok(sender)
}

/// Runs the HTTP/2 client's tasks on the worker's `LocalSet`.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// Opens one SSE stream on an HTTP/2 connection; its body, or `None` when it failed.
async fn h2_stream(
    sender: Option<hyper::client::conn::http2::SendRequest<String>>,
    server: SocketAddr,
    path: &str,
) -> Option<hyper::body::Incoming> {
    let mut sender = sender?;
    let request = hyper::Request::get(format!("http://{server}{path}"))
        .header("accept", "text/event-stream")
        .body(String::new())
        .ok()?;
    let ready = async {
        std::future::poll_fn(|cx| sender.poll_ready(cx))
            .await
            .ok()?;
        sender.send_request(request).await.ok()
    };
    let response = match tokio::time::timeout(Duration::from_secs(30), ready).await {
        Ok(Some(response)) => response,
        _ => return None,
    };
    (response.status() == 200).then(|| response.into_body())
}

/// Reads an HTTP/2 SSE stream until it ends or the worker stops.
async fn read_h2(
    mut body: hyper::body::Incoming,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    hist: &RefCell<Histogram>,
    totals: &RefCell<WorkerTotals>,
) -> ConnState {
    use http_body::Body as _;
    let mut state = ConnState::default();
    let mut parser = SseParser::new();
    loop {
        let frame = tokio::select! {
            frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)) => frame,
            _ = stop.changed() => break,
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            _ => {
                state.ended = true;
                break;
            }
        };
        let (events, signalled) = (state.unique, state.signalled);
        let now = now_ns();
        let got = parser.feed(&data, now, &mut state, &mut hist.borrow_mut());
        if got || state.signalled != signalled {
            let mut totals = totals.borrow_mut();
            if got {
                totals.last_receive_ns = totals.last_receive_ns.max(now);
            }
            totals.events += state.unique - events;
            totals.signalled += state.signalled - signalled;
        }
    }
    state
}

fn run_worker(o: Options) {
    raise_fd_limit();
    let addr: SocketAddr = o
        .addr
        .as_deref()
        .and_then(|a| a.parse().ok())
        .expect("--addr HOST:PORT");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = Rc::new(RefCell::new(None::<u64>));
    let hist = Rc::new(RefCell::new(Histogram::new()));
    let totals = Rc::new(RefCell::new(WorkerTotals::default()));
    let conns: Rc<RefCell<Vec<(usize, ConnState)>>> = Rc::new(RefCell::new(Vec::new()));
    let safety = Duration::from_secs_f64(o.seconds + 600.0);

    // Commands from the parent on standard input: `progress`, answered with the events seen so
    // far, and `stop PUBLISHED`. `None` is a progress query.
    let (cmd_tx, cmd_rx) = mpsc::channel::<Option<u64>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines().map_while(Result::ok) {
            if line == "progress" {
                let _ = cmd_tx.send(None);
            } else if let Some(n) = line.strip_prefix("stop ") {
                let _ = cmd_tx.send(Some(n.trim().parse().unwrap_or(0)));
                return;
            }
        }
        let _ = cmd_tx.send(Some(0));
    });

    local.block_on(&rt, async {
        let limit = Rc::new(tokio::sync::Semaphore::new(256));
        let mut opened = Vec::new();
        // With --http2 S: one HTTP/2 connection (h2c, prior knowledge) per S streams.
        let mut senders = Vec::new();
        if o.http2 > 0 {
            for g in 0..o.count.div_ceil(o.http2) {
                let source = Ipv4Addr::new(127, 0, 0, 1 + (g % o.sources as usize) as u8);
                match open_h2(addr, source).await {
                    Ok(sender) => senders.push(Some(sender)),
                    Err(e) => {
                        eprintln!("HTTP/2 connection {g}: {e}");
                        senders.push(None);
                    }
                }
            }
        }
        let senders = Rc::new(senders);
        for i in o.first..o.first + o.count {
            let u = i % o.users;
            let path = format!("/events/{}/{}", o.channel, user_name(u));
            let source = Ipv4Addr::new(127, 0, 0, 1 + (i % o.sources as usize) as u8);
            let limit = limit.clone();
            let mut stop = stop_rx.clone();
            let hist = hist.clone();
            let totals = totals.clone();
            let conns = conns.clone();
            let h2 = (o.http2 > 0).then(|| senders[(i - o.first) / o.http2].clone());
            opened.push(tokio::task::spawn_local(async move {
                let permit = limit.acquire().await.expect("semaphore");
                if let Some(sender) = h2 {
                    let Some(body) = h2_stream(sender, addr, &path).await else {
                        totals.borrow_mut().failed += 1;
                        return;
                    };
                    drop(permit);
                    totals.borrow_mut().connected += 1;
                    let state = read_h2(body, &mut stop, &hist, &totals).await;
                    conns.borrow_mut().push((u, state));
                    return;
                }
                let mut attempt = 0;
                let (mut stream, rest) = loop {
                    match open(addr, source, &path).await {
                        Ok(pair) => break pair,
                        Err(e) if attempt < 3 => {
                            attempt += 1;
                            if attempt == 3 {
                                eprintln!("connection {i}: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(_) => {
                            totals.borrow_mut().failed += 1;
                            return;
                        }
                    }
                };
                drop(permit);
                totals.borrow_mut().connected += 1;
                let mut state = ConnState::default();
                let mut chunked = Chunked::Size(0, false);
                let mut parser = SseParser::new();
                let mut body = Vec::with_capacity(4096);
                let mut buf = vec![0u8; 8192];
                let mut pending = Some(rest);
                loop {
                    let n = if let Some(rest) = pending.take() {
                        buf[..rest.len().min(8192)].copy_from_slice(&rest[..rest.len().min(8192)]);
                        rest.len().min(8192)
                    } else {
                        tokio::select! {
                            read = stream.read(&mut buf) => match read {
                                Ok(0) | Err(_) => { state.ended = true; break; }
                                Ok(n) => n,
                            },
                            _ = stop.changed() => break,
                        }
                    };
                    body.clear();
                    let more = chunked.feed(&buf[..n], &mut body);
                    let (events, signalled) = (state.unique, state.signalled);
                    let now = now_ns();
                    let got = parser.feed(&body, now, &mut state, &mut hist.borrow_mut());
                    if got || state.signalled != signalled {
                        let mut totals = totals.borrow_mut();
                        if got {
                            totals.last_receive_ns = totals.last_receive_ns.max(now);
                        }
                        totals.events += state.unique - events;
                        totals.signalled += state.signalled - signalled;
                    }
                    if !more {
                        state.ended = true;
                        break;
                    }
                }
                conns.borrow_mut().push((u, state));
            }));
        }
        // Ready once every connection is open or has failed.
        let ready_deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let done = {
                let t = totals.borrow();
                (t.connected + t.failed) as usize >= o.count
            };
            if done || Instant::now() > ready_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        {
            let t = totals.borrow();
            println!("ready connected={} failed={}", t.connected, t.failed);
            let _ = std::io::stdout().flush();
        }
        let started = Instant::now();
        let published = loop {
            match cmd_rx.try_recv() {
                Ok(Some(n)) => break n,
                Ok(None) => {
                    let t = totals.borrow();
                    println!("progress events={} signalled={}", t.events, t.signalled);
                    let _ = std::io::stdout().flush();
                }
                Err(_) => {}
            }
            if started.elapsed() > safety {
                break 0;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        *stopped.borrow_mut() = Some(published);
        let _ = stop_tx.send(true);
        // Tasks still connecting are given up on after a few seconds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for task in opened {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
    });

    let published = stopped.borrow().unwrap_or(0);
    let conns = conns.borrow();
    let mut received = 0u64;
    let mut lost = 0u64;
    let mut gaps = 0u64;
    let mut duplicates = 0u64;
    let mut signalled = 0u64;
    let mut heartbeats = 0u64;
    let mut ended = 0u64;
    for (u, c) in conns.iter() {
        let expected = expected_for(*u, o.users, published);
        received += c.unique;
        lost += expected.saturating_sub(c.unique + c.signalled);
        gaps += c.gaps;
        duplicates += c.duplicates;
        signalled += c.signalled;
        heartbeats += c.heartbeats;
        ended += u64::from(c.ended);
    }
    let t = totals.borrow();
    let h = hist.borrow();
    println!(
        "result connected={} failed={} received={received} lost={lost} gaps={gaps} duplicates={duplicates} signalled={signalled} heartbeats={heartbeats} ended={ended} last_ns={} max_ns={} hist={}",
        t.connected,
        t.failed,
        t.last_receive_ns,
        h.max,
        h.encode()
    );
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------------------
// The parent: server, publisher, client processes, summary

struct Worker {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn spawn_worker(o: &Options, addr: SocketAddr, first: usize, count: usize) -> Worker {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--client-worker",
            "--addr",
            &addr.to_string(),
            "--first",
            &first.to_string(),
            "--count",
            &count.to_string(),
            "--users",
            &o.users.to_string(),
            "--connections",
            &o.connections.to_string(),
            "--sources",
            &o.sources.to_string(),
            "--channel",
            &o.channel,
            "--seconds",
            &o.seconds.to_string(),
            "--http2",
            &o.http2.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn client worker");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Worker { child, lines: rx }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn num(line: &str, key: &str) -> u64 {
    field(line, key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if o.worker {
        run_worker(o);
        return;
    }
    let fd_limit = raise_fd_limit();
    COUNTING.store(true, std::sync::atomic::Ordering::Relaxed);
    let users: Vec<String> = (0..o.users).map(user_name).collect();
    let hub_users: Vec<sse_hub::UserId> = users.iter().map(sse_hub::UserId::from).collect();
    let heartbeat = Duration::from_millis(o.heartbeat_ms.max(1));
    let per_user = o.connections.div_ceil(o.users);

    // The server: in this process, or external.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .expect("runtime");
    let (addr, publisher, server_pid) = match &o.addr {
        Some(a) => {
            let addr: SocketAddr = a.parse().expect("--addr HOST:PORT");
            (addr, Publisher::Http(addr, o.channel.clone()), o.server_pid)
        }
        None => {
            let listener = server_rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let (app, publisher) = if o.design == "hub" {
                let (router, app) =
                    servers::hub(o.capacity, &o.policy, heartbeat, per_user, o.users);
                (app, Publisher::Hub(router, sse_hub::Channel::AgUi))
            } else if o.design.starts_with("bare") {
                let joined = o.design == "bare-joined";
                let (hub, app) = bare::server(o.capacity, heartbeat, joined);
                (app, Publisher::Bare(hub))
            } else {
                let (broadcaster, app) = servers::replaced(heartbeat);
                (app, Publisher::Replaced(broadcaster))
            };
            let serve = o.serve.clone();
            server_rt.spawn(async move {
                let _ = if serve == "axum" {
                    axum::serve(listener, app).await
                } else {
                    sse_hub::serve(listener, app).await
                };
            });
            (addr, publisher, None)
        }
    };
    let in_process = o.addr.is_none();
    let self_pid = if in_process { None } else { server_pid };
    let measurable = in_process || server_pid.is_some();

    std::thread::sleep(Duration::from_millis(200));
    let rss_before = rss_bytes(self_pid).unwrap_or(0);
    let heap_before = heap_bytes();

    // The clients.
    let per_worker = o.connections.div_ceil(o.clients);
    let mut workers = Vec::new();
    for k in 0..o.clients {
        let first = k * per_worker;
        let count = per_worker.min(o.connections.saturating_sub(first));
        if count > 0 {
            workers.push(spawn_worker(&o, addr, first, count));
        }
    }
    let connect_start = Instant::now();
    let mut connected = 0u64;
    let mut connect_failed = 0u64;
    for w in &workers {
        match w.lines.recv_timeout(Duration::from_secs(330)) {
            Ok(line) if line.starts_with("ready") => {
                connected += num(&line, "connected");
                connect_failed += num(&line, "failed");
            }
            Ok(line) => eprintln!("unexpected from a client worker: {line}"),
            Err(_) => eprintln!("a client worker never got ready"),
        }
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    eprintln!(
        "connected {connected} of {} in {connect_secs:.1} s ({connect_failed} failed); fd limit {fd_limit}",
        o.connections
    );
    // Let the server settle (first heartbeat timers armed, buffers allocated).
    std::thread::sleep(Duration::from_millis(1000));
    let rss_connected = rss_bytes(self_pid).unwrap_or(0);
    let heap_connected = heap_bytes();

    // Publish (or hold the connections idle) for the duration.
    let (user_before, system_before) = cpu_split_ns(self_pid).unwrap_or((0, 0));
    let cpu_before = user_before + system_before;
    let writes_before = write_calls(self_pid).unwrap_or(0);
    let clients_cpu = |workers: &[Worker]| -> u64 {
        workers
            .iter()
            .filter_map(|w| cpu_ns(Some(w.child.id())))
            .sum()
    };
    let client_cpu_before = clients_cpu(&workers);
    let publish_start_ns = now_ns();
    let publish_start = Instant::now();
    let (published, publish_failed) = if o.rate > 0 {
        publish(publisher, &o, &users, &hub_users)
    } else {
        std::thread::sleep(Duration::from_secs_f64(o.seconds));
        drop(publisher);
        (0, 0)
    };
    let publish_secs = publish_start.elapsed().as_secs_f64();
    // Drain: wait until every event has reached every connection (or was signalled lost), or
    // nothing moved for a second, or --drain-ms passed.
    let expected: u64 = (0..o.connections)
        .map(|i| expected_for(i % o.users, o.users, published))
        .sum();
    let drain_deadline = Instant::now() + Duration::from_millis(o.drain_ms);
    let mut last_seen = (u64::MAX, Instant::now());
    while o.rate > 0 && Instant::now() < drain_deadline {
        let mut seen = 0;
        for w in &mut workers {
            if let Some(stdin) = w.child.stdin.as_mut() {
                let _ = writeln!(stdin, "progress");
                let _ = stdin.flush();
            }
            while let Ok(line) = w.lines.recv_timeout(Duration::from_secs(5)) {
                if line.starts_with("progress") {
                    seen += num(&line, "events") + num(&line, "signalled");
                    break;
                }
            }
        }
        if seen >= expected {
            break;
        }
        if seen != last_seen.0 {
            last_seen = (seen, Instant::now());
        } else if last_seen.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (user_after, system_after) = cpu_split_ns(self_pid).unwrap_or((0, 0));
    let cpu_after = user_after + system_after;
    let writes_after = write_calls(self_pid).unwrap_or(0);
    let client_cpu_after = clients_cpu(&workers);
    let rss_end = rss_bytes(self_pid).unwrap_or(0);

    // Results.
    for w in &mut workers {
        if let Some(stdin) = w.child.stdin.as_mut() {
            let _ = writeln!(stdin, "stop {published}");
            let _ = stdin.flush();
        }
    }
    let mut hist = Histogram::new();
    let mut totals = [0u64; 9];
    let keys = [
        "received",
        "lost",
        "gaps",
        "duplicates",
        "signalled",
        "heartbeats",
        "ended",
        "last_ns",
        "max_ns",
    ];
    for w in &mut workers {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match w.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("result") => {
                    for (i, k) in keys.iter().enumerate() {
                        let v = num(&line, k);
                        if *k == "last_ns" || *k == "max_ns" {
                            totals[i] = totals[i].max(v);
                        } else {
                            totals[i] += v;
                        }
                    }
                    hist.merge_encoded(field(&line, "hist").unwrap_or(""));
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    eprintln!("a client worker sent no result");
                    break;
                }
            }
        }
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
    let [
        received,
        lost,
        _gaps,
        duplicates,
        signalled,
        heartbeats,
        ended,
        last_ns,
        max_ns,
    ] = totals;
    hist.max = max_ns;
    let delivery_secs = if last_ns > publish_start_ns {
        (last_ns - publish_start_ns) as f64 / 1e9
    } else {
        publish_secs
    };
    let deliveries_per_sec = if received > 0 {
        received as f64 / delivery_secs.max(publish_secs)
    } else {
        0.0
    };
    let cpu_per_delivery = if measurable && received > 0 {
        (cpu_after.saturating_sub(cpu_before)) as f64 / received as f64
    } else {
        0.0
    };
    let user_cpu_per_delivery = if measurable && received > 0 {
        (user_after.saturating_sub(user_before)) as f64 / received as f64
    } else {
        0.0
    };
    let writes_per_delivery = if measurable && received > 0 {
        writes_after.saturating_sub(writes_before) as f64 / received as f64
    } else {
        0.0
    };
    let client_cpu_per_delivery = if received > 0 {
        client_cpu_after.saturating_sub(client_cpu_before) as f64 / received as f64
    } else {
        0.0
    };
    let rss_per_conn = if measurable && connected > 0 {
        rss_connected.saturating_sub(rss_before) as f64 / connected as f64
    } else {
        0.0
    };
    let heap_per_conn = if in_process && connected > 0 {
        (heap_connected - heap_before) as f64 / connected as f64
    } else {
        0.0
    };
    println!(
        "summary design={} serve={} http2={} policy={} capacity={} connections={} connected={connected} users={} rate={} seconds={} published={published} publish_failed={publish_failed} publish_rate={:.0} received={received} deliveries_per_sec={deliveries_per_sec:.0} p50_us={:.1} p99_us={:.1} max_us={:.1} lost={lost} duplicates={duplicates} signalled={signalled} heartbeats={heartbeats} ended={ended} server_cpu_ns_per_delivery={cpu_per_delivery:.0} server_cpu_s={:.2} server_writes_per_delivery={writes_per_delivery:.3} client_cpu_ns_per_delivery={client_cpu_per_delivery:.0} server_rss_before_bytes={rss_before} server_rss_connected_bytes={rss_connected} server_rss_end_bytes={rss_end} server_rss_per_conn_bytes={rss_per_conn:.0} server_heap_per_conn_bytes={heap_per_conn:.0} connect_secs={connect_secs:.1} server_user_cpu_ns_per_delivery={user_cpu_per_delivery:.0}",
        if in_process {
            o.design.as_str()
        } else {
            "external"
        },
        if in_process {
            o.serve.as_str()
        } else {
            "external"
        },
        o.http2,
        o.policy,
        o.capacity,
        o.connections,
        o.users,
        o.rate,
        o.seconds,
        published as f64 / publish_secs,
        hist.percentile(50.0) as f64 / 1e3,
        hist.percentile(99.0) as f64 / 1e3,
        max_ns as f64 / 1e3,
        (cpu_after.saturating_sub(cpu_before)) as f64 / 1e9,
    );
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
