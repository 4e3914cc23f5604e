//! `sse_hub::serve`'s timeouts where the connection's own ones cannot see: an HTTP/2 stream
//! stalled by flow control while its connection is healthy, graceful shutdown held by responses
//! that never complete, and a connection that goes silent before its protocol is known (the
//! header read timeout). Real servers on `127.0.0.1:0`, real clients, bounded waits.

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

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

/// `Serve` docs: "on every connection, a write that makes no progress for the stall timeout
/// closes it", and graceful shutdown returns once every stream ended after
/// `Broadcaster::shutdown`. Over HTTP/2, a stream whose peer stops granting it flow-control
/// window (a proxy whose downstream client stopped reading) makes no progress, but the
/// connection's writes do (its sibling streams, pings), so the TCP write timeout never fires;
/// hyper stops polling the stalled stream's body, so the kick of `Broadcaster::shutdown` is never
/// seen; and the connection's graceful shutdown waits for that stream forever.
///
/// Here: one HTTP/2 connection, a stalled stream and a healthy sibling, stall timeout 300 ms.
/// The sibling keeps flowing (good). After `hub.shutdown()` and the shutdown signal, `serve` must
/// return within a few stall timeouts; it never does.
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

/// `Serve` docs: "A request head must arrive within `header_read_timeout`". A connection that
/// sends the start of the HTTP/2 preface (or, with the lean path off, nothing at all) and then
/// goes silent is held open for ever: hyper-util's protocol sniffing (`ReadVersion`) has no
/// timeout, hyper's HTTP/1 header timer starts only after it, and HTTP/2 pings only once the
/// HTTP/2 connection exists. Each such connection holds a socket and a task until shutdown:
/// a slowloris that the header read timeout is there to stop.
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
