//! Wire tests of the SSE body's coalescing (issue 13): frames that are ready together go out as
//! one HTTP/1.1 chunk, at most `sse::MAX_CHUNK` bytes, intact and in order; a frame that is
//! ready alone goes out at once, in a chunk of its own.
//!
//! The server is a real axum server on `127.0.0.1:0`. The client is raw TCP, so that the chunks
//! of the chunked body can be counted; the de-chunked bytes are decoded by `eventsource-stream`,
//! an SSE parser independent of ours.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use common::{SseClient, TestServer, WAIT, bounded, http_client, router};
use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_hub::sse::MAX_CHUNK;
use sse_hub::{Broadcaster, Config, Heartbeat, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A chunked SSE response read over raw TCP: its chunks as they were framed on the wire.
struct RawStream {
    stream: TcpStream,
    /// Bytes read and not decoded yet.
    input: Vec<u8>,
    /// The data of every chunk decoded so far.
    chunks: Vec<Vec<u8>>,
}

impl RawStream {
    /// `GET path` over HTTP/1.1, with `Last-Event-ID` when given; checks the head.
    async fn open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> Self {
        let mut stream = bounded("connect", WAIT, TcpStream::connect(addr))
            .await
            .expect("connect");
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Self {
            stream,
            input: Vec::new(),
            chunks: Vec::new(),
        };
        let head_end = loop {
            if let Some(end) = common::find(&raw.input, b"\r\n\r\n") {
                break end;
            }
            raw.read_more().await;
        };
        let head = String::from_utf8_lossy(&raw.input[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "head: {head}");
        assert!(head.contains("transfer-encoding: chunked"), "head: {head}");
        raw.input.drain(..head_end + 4);
        raw
    }

    async fn read_more(&mut self) {
        let mut buf = [0u8; 8192];
        let n = match tokio::time::timeout(WAIT, self.stream.read(&mut buf)).await {
            Ok(read) => read.expect("read"),
            Err(_) => panic!(
                "no bytes from the server within {WAIT:?}; undecoded: {:?}, chunks: {}",
                String::from_utf8_lossy(&self.input),
                self.chunks.len()
            ),
        };
        assert!(n > 0, "the server closed the connection");
        self.input.extend_from_slice(&buf[..n]);
    }

    /// Decodes the whole chunks in the input; returns whether one was decoded.
    fn decode(&mut self) -> bool {
        let Some(line_end) = common::find(&self.input, b"\r\n") else {
            return false;
        };
        let size = std::str::from_utf8(&self.input[..line_end]).expect("a chunk-size line");
        let size = usize::from_str_radix(size, 16).expect("a hexadecimal chunk size");
        assert!(size > 0, "the stream ended");
        let end = line_end + 2 + size;
        if self.input.len() < end + 2 {
            return false;
        }
        assert_eq!(
            &self.input[end..end + 2],
            b"\r\n",
            "chunk data ends with CRLF"
        );
        self.chunks.push(self.input[line_end + 2..end].to_vec());
        self.input.drain(..end + 2);
        true
    }

    /// Reads until `condition` holds for the de-chunked body.
    async fn read_until(&mut self, condition: impl Fn(&[u8]) -> bool) {
        loop {
            while self.decode() {}
            if condition(&self.body()) {
                return;
            }
            self.read_more().await;
        }
    }

    /// The de-chunked body so far.
    fn body(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// The events `eventsource-stream` decodes from `body`.
async fn parse(body: Vec<u8>) -> Vec<Event> {
    let input = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from(body))]);
    input
        .eventsource()
        .map(|event| event.expect("the SSE parser accepts the stream"))
        .collect()
        .await
}

fn quiet_config() -> Config {
    let mut config = Config::default();
    config.sse.heartbeat = Heartbeat::Off;
    config.replay_events = 4096;
    config.replay_bytes = 4 << 20;
    config
}

/// The server's address.
fn addr_of(server: &TestServer) -> SocketAddr {
    let url = server.url("");
    url.strip_prefix("http://")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("an http URL: {url}"))
}

/// The id of the last frame of the opening a fresh connection gets (its priming `id:`).
async fn priming_id(server: &TestServer, user: &str) -> String {
    let http = http_client();
    let mut tab = SseClient::open(&http, &server.events_url(user), None).await;
    tab.read_opening().await;
    let text = tab.raw_text();
    text.lines()
        .find_map(|line| line.strip_prefix("id: "))
        .expect("a priming id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ready_frames_goes_out_in_few_bounded_chunks_intact_and_in_order() {
    let hub: Broadcaster<Value> = Broadcaster::new(quiet_config());
    let server = TestServer::start(router(hub.clone())).await;
    let user = UserId::from("ada");
    let start = priming_id(&server, "ada").await;

    // 600 events of about 100 bytes, and two of 20 KiB (more than a chunk holds) among them:
    // a client that resumes from before the first has them all ready at once.
    const EVENTS: u64 = 600;
    let big = "x".repeat(20 * 1024);
    for n in 1..=EVENTS {
        let event = if n == 200 || n == 201 {
            json!({"type": "note", "n": n, "big": big})
        } else {
            json!({"type": "note", "n": n})
        };
        hub.broadcast(&user, &event).expect("publish");
    }

    let mut raw = RawStream::open(addr_of(&server), "/events/ada", Some(&start)).await;
    let last = format!("\"n\":{EVENTS},");
    raw.read_until(|body| common::find(body, last.as_bytes()).is_some())
        .await;

    let events = parse(raw.body()).await;
    let numbers: Vec<u64> = events
        .iter()
        .map(|event| {
            let data: Value = serde_json::from_str(&event.data).expect("JSON data");
            data["n"].as_u64().expect("a note")
        })
        .collect();
    assert_eq!(
        numbers,
        (1..=EVENTS).collect::<Vec<_>>(),
        "every event once, in order"
    );
    for event in &events {
        let data: Value = serde_json::from_str(&event.data).unwrap();
        let n = data["n"].as_u64().unwrap();
        if n == 200 || n == 201 {
            assert_eq!(data["big"].as_str().map(str::len), Some(20 * 1024));
        }
    }

    // Every chunk holds whole frames; only a frame larger than the bound makes a chunk larger
    // than the bound, and it is alone in it.
    for chunk in &raw.chunks {
        assert!(chunk.ends_with(b"\n\n"), "a chunk ends with a whole frame");
        if chunk.len() > MAX_CHUNK {
            assert_eq!(
                common::count(chunk, b"\n\n"),
                1,
                "a chunk over the bound is one frame"
            );
        }
    }
    // 600 frames of the burst (about 60 KiB with the two big ones) in a handful of chunks, not
    // one per frame.
    assert!(
        raw.chunks.len() <= 12,
        "{} chunks for {EVENTS} frames ready at once",
        raw.chunks.len()
    );
    assert!(
        raw.chunks
            .iter()
            .any(|chunk| common::count(chunk, b"\n\n") > 50),
        "small frames ready together share a chunk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_ready_alone_is_sent_at_once_in_a_chunk_of_its_own() {
    // Heartbeats off and nothing else published: if the body held a frame back to wait for
    // another, it would never arrive.
    let hub: Broadcaster<Value> = Broadcaster::new(quiet_config());
    let server = TestServer::start(router(hub.clone())).await;
    let user = UserId::from("grace");

    let mut raw = RawStream::open(addr_of(&server), "/events/grace", None).await;
    raw.read_until(|body| body.ends_with(b"\n\n")).await;
    let opening_chunks = raw.chunks.len();

    for n in 1..=3u64 {
        hub.broadcast(&user, &json!({"type": "note", "n": n}))
            .expect("publish");
        let expected = format!("\"n\":{n},");
        raw.read_until(|body| common::find(body, expected.as_bytes()).is_some())
            .await;
        let chunk = raw.chunks.last().expect("a chunk");
        assert_eq!(
            common::count(chunk, b"\n\n"),
            1,
            "event {n} came alone: {:?}",
            String::from_utf8_lossy(chunk)
        );
        assert_eq!(raw.chunks.len(), opening_chunks + n as usize);
    }
    let events = parse(raw.body()).await;
    assert_eq!(events.len(), 3);
}
