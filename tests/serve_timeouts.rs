//! `sse_hub::serve`'s timeouts where the connection's own ones cannot see: graceful shutdown
//! held by responses that never complete (an HTTP/2 stream stalled by flow control while its
//! connection is healthy, streams that are never ended), and a connection that goes silent
//! before its protocol is known (the header read timeout). Real servers on `127.0.0.1:0`, real clients, bounded waits.

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use common::{WAIT, bounded, router};
use futures_util::{Stream, StreamExt};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sse_hub::{Broadcaster, Config, UserId};
use tokio::net::TcpListener;

/// An HTTP/2 (h2c, prior knowledge) client connection whose streams each get a receive window
/// of `stream_window` bytes, released only as the application reads a body: a stream whose body
/// is not read stops being sent to, as a proxy (Envoy, haproxy, nginx) does for a stream whose
/// own downstream client stopped reading. The connection itself stays healthy (pings answered).
async fn h2_connection(addr: SocketAddr, stream_window: u32) -> http2::SendRequest<Body> {
    let tcp = bounded("connect", WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let (send, connection) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(8 << 20)
        .adaptive_window(false)
        .handshake(TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    send
}

async fn open(
    send: &mut http2::SendRequest<Body>,
    addr: SocketAddr,
    user: &str,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Unpin + use<> {
    let request = axum::http::Request::get(format!("http://{addr}/events/{user}"))
        .header("accept", "text/event-stream")
        .body(Body::empty())
        .unwrap();
    bounded("ready", WAIT, send.ready()).await.expect("ready");
    let response = bounded("a response head", WAIT, send.send_request(request))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    Body::new(response.into_body()).into_data_stream()
}

/// Reads `stream` until `needle` arrived.
async fn read_through(
    stream: &mut (impl Stream<Item = Result<Bytes, axum::Error>> + Unpin),
    needle: &str,
) {
    let mut seen = Vec::new();
    bounded(&format!("{needle:?} on the stream"), WAIT, async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let chunk = stream
                .next()
                .await
                .expect("the stream goes on")
                .expect("data");
            seen.extend_from_slice(&chunk);
        }
    })
    .await;
}

/// Over HTTP/2, a stream whose peer stops granting it flow-control window (a proxy whose
/// downstream client stopped reading) makes no progress while its connection's writes do (its
/// sibling streams, pings), so the socket's write timeout never fires, and hyper stops polling
/// the stream's body, so the kick of `Broadcaster::shutdown` is never seen. The graceful
/// shutdown must not wait for that stream for ever.
///
/// Here: one HTTP/2 connection, a stalled stream and a healthy sibling, stall timeout 300 ms.
/// The sibling keeps flowing. After `hub.shutdown()` and the shutdown signal, `serve` returns
/// within a few stall timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_is_not_held_up_by_a_stalled_http2_stream() {
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ending = hub.clone();
    let server = tokio::spawn(
        sse_hub::serve(listener, router(hub.clone()))
            .stall_timeout(Duration::from_millis(300))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
                ending.shutdown();
            })
            .into_future(),
    );

    let mut send = h2_connection(addr, 16 * 1024).await;
    let mut stalled = open(&mut send, addr, "stalled").await;
    let mut healthy = open(&mut send, addr, "healthy").await;
    read_through(&mut stalled, "retry:").await;
    read_through(&mut healthy, "retry:").await;
    let (stalled_user, healthy_user) = (UserId::from("stalled"), UserId::from("healthy"));
    assert_eq!(hub.connection_count(&stalled_user), 1);

    // The stalled stream's client reads no more: 20 frames of 8 KiB exhaust its 16 KiB window.
    let big = "x".repeat(8 * 1024);
    for n in 0..20 {
        hub.broadcast(&stalled_user, &json!({"n": n, "big": big}))
            .expect("publish");
    }
    // Its sibling on the same connection is not held up by it.
    for n in 0..5 {
        hub.broadcast(&healthy_user, &json!({"n": n}))
            .expect("publish");
        read_through(&mut healthy, &format!("\"n\":{n}")).await;
    }

    // Well past the stall timeout, the stalled stream is still open and counted...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still_open = hub.connection_count(&stalled_user);

    // ...and the graceful shutdown waits for it.
    stop.send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(
        finished.is_ok(),
        "serve did not return within 5 s of the shutdown (stall timeout 300 ms): the stalled \
         HTTP/2 stream holds it up (it was still counted {still_open} connection(s) 1.5 s after \
         it stalled)"
    );
    drop((stalled, healthy, send));
}

/// Starts `serve` on `127.0.0.1:0` with `stall` as the stall timeout; its graceful shutdown
/// begins when the returned sender is used (or dropped) and, unlike a well-behaved application,
/// does not end the hub's streams.
async fn start_without_ending_streams(
    hub: &Broadcaster<Value>,
    stall: Duration,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        sse_hub::serve(listener, router(hub.clone()))
            .stall_timeout(stall)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    (addr, stop, server)
}

/// Reads `tcp` until `needle` arrived.
async fn read_tcp_through(tcp: &mut tokio::net::TcpStream, needle: &str) {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    bounded(&format!("{needle:?} on the connection"), WAIT, async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before {needle:?}");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
}

/// Reads `tcp` until the server closes it.
async fn read_tcp_to_close(tcp: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    bounded("the server's close", WAIT, async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The bound on graceful shutdown: a connection whose responses have not completed a stall
/// timeout after shutdown began is dropped, whatever holds it. Here the application does not
/// end its SSE streams on shutdown, so none completes: one over HTTP/2, one on the lean HTTP/1.1
/// path, one on hyper's HTTP/1.1 path (no `Accept: text/event-stream`). `serve` returns after
/// the stall timeout, every connection is closed, and every subscription is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drops_connections_still_open_a_stall_timeout_later() {
    use tokio::io::AsyncWriteExt;
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let stall = Duration::from_millis(300);
    let (addr, stop, server) = start_without_ending_streams(&hub, stall).await;

    let mut send = h2_connection(addr, 1 << 20).await;
    let mut h2 = open(&mut send, addr, "h2").await;
    read_through(&mut h2, "retry:").await;
    let mut http1 = Vec::new();
    for (user, accept) in [("lean", "accept: text/event-stream\r\n"), ("hyper", "")] {
        let mut tcp = bounded("connect", WAIT, tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect");
        let head = format!("GET /events/{user} HTTP/1.1\r\nhost: x\r\n{accept}\r\n");
        tcp.write_all(head.as_bytes()).await.expect("write");
        read_tcp_through(&mut tcp, "retry:").await;
        http1.push(tcp);
    }
    let users = ["h2", "lean", "hyper"].map(UserId::from);
    for user in &users {
        assert_eq!(hub.connection_count(user), 1);
    }

    let signalled = Instant::now();
    stop.send(()).unwrap();
    let served = bounded("serve's return", WAIT, server).await;
    served.expect("the server task").expect("serve");
    let took = signalled.elapsed();
    assert!(took >= stall, "returned after {took:?}, before the grace");

    for tcp in &mut http1 {
        read_tcp_to_close(tcp).await;
    }
    let h2_end = bounded("the HTTP/2 stream's end", WAIT, async {
        loop {
            match h2.next().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    h2_end.await;
    // HTTP/2 streams run in tasks of their own, which end as they notice their connection
    // went away: no event tells the test when, so poll (bounded).
    common::wait_until("every subscription is dropped", WAIT, || {
        users.iter().all(|user| hub.connection_count(user) == 0)
    })
    .await;
}

/// Connects, sends `bytes`, and reports whether the server closed the connection within
/// `within` (a read returned 0 or failed).
async fn closed_within(addr: SocketAddr, bytes: &[u8], within: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = bounded("connect", WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The header read timeout covers a connection's first bytes, until they show its protocol. A
/// connection that sends the start of the HTTP/2 preface, or nothing at all, and then goes
/// silent must be closed by it: hyper-util's protocol sniffing has no timeout, hyper's HTTP/1.1
/// head timer starts only after it, and HTTP/2 pings only once the HTTP/2 connection exists,
/// so each such connection used to hold a socket and a task until shutdown (a slowloris that
/// the header read timeout is there to stop). On both paths; a partial HTTP/1.1 head is the
/// control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_silent_before_its_protocol_is_known_is_closed_by_the_header_read_timeout() {
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let mut failures = Vec::new();
    for lean in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(
            sse_hub::serve(listener, router(hub.clone()))
                .lean_http1(lean)
                .header_read_timeout(Duration::from_millis(300))
                .into_future(),
        );
        // Control: a partial HTTP/1.1 head is closed by the timeout on both paths.
        assert!(
            closed_within(
                addr,
                b"GET /events/ada HTTP/1.1\r\n",
                Duration::from_secs(3)
            )
            .await,
            "lean {lean}: a partial HTTP/1.1 head is closed"
        );
        for (what, bytes) in [
            (
                "the start of the HTTP/2 preface",
                &b"PRI * HTTP/2.0\r\n"[..],
            ),
            ("nothing", &b""[..]),
        ] {
            if !closed_within(addr, bytes, Duration::from_secs(3)).await {
                failures.push(format!(
                    "lean_http1({lean}): a connection that sent {what} is still open 3 s later \
                     (header read timeout 300 ms)"
                ));
            }
        }
        server.abort();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// On the lean path the header read timeout bounds the whole head, from the connect, as the
/// module docs say. A head that grows past what the lean path reads (8 KiB) was handed to hyper
/// unfinished, whose own timer then started afresh: a client trickling a long head held its
/// connection for up to twice the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_longer_than_the_lean_path_reads_is_bounded_by_one_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_secs(1);
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(
        sse_hub::serve(listener, router(hub.clone()))
            .header_read_timeout(timeout)
            .into_future(),
    );
    let pad = |n: usize| format!("x-pad-{n}: {}\r\n", "p".repeat(1000));
    let mut tcp = connect(addr).await;
    let connected = Instant::now();
    let mut start =
        String::from("GET /events/ada HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n");
    (0..4).for_each(|n| start.push_str(&pad(n)));
    tcp.write_all(start.as_bytes()).await.expect("write");
    // Most of the timeout later, the head grows past 8 KiB, and never ends.
    tokio::time::sleep(timeout * 9 / 10).await;
    let more: String = (4..9).map(pad).collect();
    tcp.write_all(more.as_bytes()).await.expect("write");
    let mut buf = [0u8; 1024];
    bounded("the close", WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    let took = connected.elapsed();
    assert!(
        took < timeout * 3 / 2,
        "closed {took:?} after the connect, with a header read timeout of {timeout:?}"
    );
    server.abort();
}

/// Connects to `addr`, with `TCP_NODELAY` so that each write leaves as its own segment.
async fn connect(addr: SocketAddr) -> tokio::net::TcpStream {
    let tcp = bounded("connect", WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp
}

/// Reading on until the protocol is known must not break what reads on: an HTTP/2 preface
/// that arrives in pieces is still HTTP/2 (the server answers with its SETTINGS frame), and an
/// HTTP/1.1 request whose first bytes are also the preface's (`PR`, then `OPFIND`) is still
/// HTTP/1.1, on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preface_in_pieces_and_a_request_that_starts_like_one_are_served_on_both_paths() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    for lean in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(
            sse_hub::serve(listener, router(hub.clone()))
                .lean_http1(lean)
                .header_read_timeout(Duration::from_secs(5))
                .into_future(),
        );

        let mut tcp = connect(addr).await;
        let (first, rest) = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".split_at(5);
        tcp.write_all(first).await.expect("write");
        // Not a wait for the server: the rest must leave as a segment of its own.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(rest).await.expect("write");
        // An empty SETTINGS frame, as the preface must be followed by one.
        tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .expect("write");
        let mut head = [0u8; 9];
        bounded("the server's first frame", WAIT, tcp.read_exact(&mut head))
            .await
            .expect("a frame header");
        assert_eq!(head[3], 4, "lean {lean}: the server's SETTINGS: {head:?}");

        let mut tcp = connect(addr).await;
        tcp.write_all(b"PROPFIND /events/ada HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = Vec::new();
        bounded("the response", WAIT, tcp.read_to_end(&mut response))
            .await
            .expect("read");
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 405"),
            "lean {lean}: an HTTP/1.1 answer: {response}"
        );
        server.abort();
    }
}

/// A connection whose protocol is not known yet when shutdown begins has nothing being served:
/// it is closed at once, on both paths, and does not hold `serve` (here for the whole header
/// read timeout, or the stall timeout that bounds the close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_a_connection_whose_protocol_is_not_known_yet_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    for lean in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            sse_hub::serve(listener, router(hub.clone()))
                .lean_http1(lean)
                .header_read_timeout(Duration::from_secs(60))
                .stall_timeout(Duration::from_secs(60))
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        let mut silent = connect(addr).await;
        let mut partial = connect(addr).await;
        partial
            .write_all(b"PRI * HTTP/2.0\r\n")
            .await
            .expect("write");
        // Connections are accepted in the order they were made: once a later one is answered,
        // both are being served.
        let mut later = connect(addr).await;
        later
            .write_all(b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut answer = [0u8; 12];
        bounded("an answer", WAIT, later.read_exact(&mut answer))
            .await
            .expect("read");
        assert_eq!(&answer, b"HTTP/1.1 404");
        stop.send(()).unwrap();
        bounded("serve's return", WAIT, server)
            .await
            .expect("the server task")
            .expect("serve");
        for tcp in [&mut silent, &mut partial] {
            let mut buf = [0u8; 64];
            let read = bounded("the close", WAIT, tcp.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "lean {lean}: closed, nothing answered: {read:?}"
            );
        }
    }
}
