//! Request heads that `sse_hub::serve` refuses over HTTP/1.1 before any handler runs: one
//! longer than `max_buf_size` (431) and one that cannot be parsed (400). hyper answers them
//! with an empty body; on the lean path (the default) `serve` answers them itself, with the same
//! status and the library's JSON error body (`{"error": code, "message": text}`), and closes the
//! connection as hyper does. `lean_http1(false)` keeps hyper's answers, which these tests take
//! as the reference for the statuses.
//!
//! Raw TCP clients on 127.0.0.1, since an HTTP client will not send such heads; every read is
//! bounded.

mod common;

use common::raw::Raw;
use common::{Served, router};
use serde_json::Value;
use sse_hub::serve::DEFAULT_MAX_BUF_SIZE;
use sse_hub::{Broadcaster, Config};

async fn start(lean: bool) -> Served {
    let hub: Broadcaster<Value> = Broadcaster::new(Config::default());
    let ending = hub.clone();
    Served::start(router(hub), lean, move || ending.shutdown()).await
}

/// An SSE request head for `/events/ada` with `extra` header lines, as `EventSource` sends it.
fn sse_get(extra: &str) -> String {
    format!("GET /events/ada HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{extra}\r\n")
}

/// A head whose `cookie` line makes it exactly `len` bytes long.
fn sse_get_of_len(len: usize) -> String {
    let without = sse_get("Cookie: \r\n").len();
    let head = sse_get(&format!("Cookie: {}\r\n", "c".repeat(len - without)));
    assert_eq!(head.len(), len);
    head
}

/// `n` header lines of no meaning.
fn extra_headers(n: usize) -> String {
    (0..n).map(|n| format!("X-H{n}: {n}\r\n")).collect()
}

/// A head `serve` refuses, what hyper answers it, and how the JSON body must name it.
struct Bad {
    what: &'static str,
    head: Vec<u8>,
    status: u16,
    code: &'static str,
    /// Words the JSON `message` must contain.
    names: &'static str,
}

fn bad_heads() -> Vec<Bad> {
    vec![
        Bad {
            what: "a 65 KiB header",
            head: sse_get(&format!("Cookie: {}\r\n", "c".repeat(65 * 1024))).into_bytes(),
            status: 431,
            code: "request_head_too_large",
            names: "65536 bytes",
        },
        Bad {
            what: "101 header lines (hyper takes 100)",
            head: sse_get(&extra_headers(99)).into_bytes(),
            status: 431,
            code: "request_head_too_large",
            names: "100 header lines",
        },
        Bad {
            what: "a garbage request line (a TLS ClientHello)",
            head: b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(),
            status: 400,
            code: "malformed_request",
            names: "method",
        },
        Bad {
            what: "a request line with no version",
            head: b"GET /events/ada\r\nHost: test\r\n\r\n".to_vec(),
            status: 400,
            code: "malformed_request",
            names: "version",
        },
        Bad {
            what: "a header line without a colon",
            head: b"GET /events/ada HTTP/1.1\r\nHost: test\r\nAccept text/event-stream\r\n\r\n"
                .to_vec(),
            status: 400,
            code: "malformed_request",
            names: "header name",
        },
        Bad {
            what: "a Content-Length that is not a number",
            head: b"POST /events/ada HTTP/1.1\r\nHost: test\r\nContent-Length: x\r\n\r\n".to_vec(),
            status: 400,
            code: "malformed_request",
            names: "Content-Length",
        },
    ]
}

/// The status of an HTTP/1.1 response, its head (lowercased) and its body.
fn split(response: &[u8]) -> (u16, String, Vec<u8>) {
    let at = common::find(response, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "no response head in {:?}",
            String::from_utf8_lossy(response)
        )
    });
    let head = String::from_utf8_lossy(&response[..at + 4]).to_ascii_lowercase();
    let status = head
        .strip_prefix("http/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    (status, head, response[at + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_head_gets_hypers_status_with_a_json_body_on_the_lean_path() {
    for lean in [false, true] {
        let server = start(lean).await;
        for bad in bad_heads() {
            let mut raw = Raw::connect(server.addr).await;
            raw.send_bytes(&bad.head).await;
            // Read to the close: the connection ends after the answer, on both paths.
            let response = raw.read_to_close().await;
            let (status, head, body) = split(&response);
            let what = format!("{} (lean {lean})", bad.what);
            assert_eq!(status, bad.status, "{what}: {head}");
            if !lean {
                // hyper's own answer, which `lean_http1(false)` keeps.
                assert_eq!(header(&head, "content-length"), Some("0"), "{what}: {head}");
                continue;
            }
            assert_eq!(
                header(&head, "content-type"),
                Some("application/json"),
                "{what}: {head}"
            );
            assert_eq!(
                header(&head, "content-length").and_then(|l| l.parse().ok()),
                Some(body.len()),
                "{what}: the whole body came, and only it: {head}{}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(header(&head, "connection"), Some("close"), "{what}: {head}");
            let json: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
            assert_eq!(json["error"], bad.code, "{what}: {json}");
            let message = json["message"].as_str().expect("a message");
            assert!(
                message.contains(bad.names),
                "{what}: the message names the problem ({:?}): {message}",
                bad.names
            );
        }
        server.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_a_refused_head_is_not_served_on_that_connection() {
    for lean in [false, true] {
        let server = start(lean).await;
        // Pipelined: the valid stream request comes in the same write as the bad head.
        let mut raw = Raw::connect(server.addr).await;
        let mut bytes = b"GET /events/ada HTTP/1.1\r\nHost: test\r\nbroken\r\n\r\n".to_vec();
        bytes.extend_from_slice(sse_get("").as_bytes());
        raw.send_bytes(&bytes).await;
        let response = raw.read_to_close().await;
        let (status, head, _) = split(&response);
        assert_eq!(status, 400, "lean {lean}: {head}");
        assert_eq!(
            common::count(&response, b"HTTP/1.1 "),
            1,
            "lean {lean}: one answer, then the close: {:?}",
            String::from_utf8_lossy(&response)
        );
        server.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_of_exactly_the_limit_is_served_and_one_byte_more_is_refused() {
    // hyper's limit, which the lean path keeps: a head whose end is within `max_buf_size`
    // bytes is served (here by hyper, as every head over 8 KiB), whatever its length.
    for lean in [false, true] {
        let server = start(lean).await;
        for len in [16 * 1024, 60 * 1024, DEFAULT_MAX_BUF_SIZE] {
            let mut raw = Raw::connect(server.addr).await;
            raw.send(&sse_get_of_len(len)).await;
            let head = raw.read_head_lowercase().await;
            assert!(
                head.starts_with("http/1.1 200 ok\r\n"),
                "{len} bytes, lean {lean}: {head}"
            );
            assert_eq!(
                header(&head, "content-type"),
                Some("text/event-stream"),
                "{len} bytes, lean {lean}"
            );
            raw.read_through(b"\n\n\r\n").await;
        }
        server.shut_down().await;
    }
    // One byte more is too long on the lean path, which reads the head itself. (hyper alone
    // reads in chunks and may take a head that ends just past the limit.)
    let server = start(true).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send(&sse_get_of_len(DEFAULT_MAX_BUF_SIZE + 1)).await;
    let (status, head, _) = split(&raw.read_to_close().await);
    assert_eq!(status, 431, "{head}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_and_the_lean_path_give_each_head_the_same_status() {
    // The lean path answers with hyper's checks, not its own: heads on both sides of each of
    // them get the status hyper gives (200: served; 400 and 431: refused before any handler).
    let heads: Vec<(String, &str)> = vec![
        (sse_get("Content-Length: 0\r\nContent-Length: 0\r\n"), ""),
        (sse_get("Content-Length: 0, 0\r\n"), ""),
        (sse_get("Content-Length: +0\r\n"), ""),
        (sse_get("Content-Length: 0\r\nContent-Length: 1\r\n"), ""),
        (sse_get("Content-Length: 18446744073709551613\r\n"), ""),
        (sse_get("Content-Length: 18446744073709551614\r\n"), ""),
        (sse_get("Transfer-Encoding: gzip, chunked\r\n"), "0\r\n\r\n"),
        (sse_get("Transfer-Encoding: chunked, gzip\r\n"), ""),
        (
            sse_get("Transfer-Encoding: chunked\r\nContent-Length: x\r\n"),
            "0\r\n\r\n",
        ),
        (
            "GET /events/ada HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
            "",
        ),
        ("GET /events/ada HTTP/1.0\r\n\r\n".to_owned(), ""),
        ("GET /events/ada HTTP/2.0\r\n\r\n".to_owned(), ""),
        ("G(T /events/ada HTTP/1.1\r\n\r\n".to_owned(), ""),
        (sse_get("X-Value: \x01\r\n"), ""),
        (sse_get("X-Value: caf\u{e9}\r\n"), ""),
        ("\r\n".to_owned() + &sse_get(""), ""),
        // 100 header lines in all (hyper's limit), then 101.
        (sse_get(&extra_headers(98)), ""),
        (sse_get(&extra_headers(99)), ""),
    ];
    let mut statuses: Vec<Vec<String>> = Vec::new();
    for lean in [false, true] {
        let server = start(lean).await;
        let mut seen = Vec::new();
        for (head, body) in &heads {
            let mut raw = Raw::connect(server.addr).await;
            raw.send(&format!("{head}{body}")).await;
            let response = raw.read_head_lowercase().await;
            let status = response.lines().next().unwrap_or_default().to_owned();
            if lean && status.split(' ').nth(1) != Some("200") {
                assert_eq!(
                    header(&response, "content-type"),
                    Some("application/json"),
                    "{head:?}: {response}"
                );
            }
            seen.push(status);
        }
        statuses.push(seen);
        server.shut_down().await;
    }
    let table: Vec<_> = heads
        .iter()
        .zip(statuses[0].iter().zip(&statuses[1]))
        .map(|((head, _), (hyper, lean))| (head.lines().take(4).collect::<Vec<_>>(), hyper, lean))
        .collect();
    for (head, hyper, lean) in &table {
        assert_eq!(hyper, lean, "{head:?}: hyper (left), the lean path (right)");
    }
    // The table covers both sides of the checks.
    for status in ["http/1.1 200", "http/1.1 400", "http/1.1 431"] {
        assert!(
            statuses[0].iter().any(|s| s.starts_with(status)),
            "{table:?}"
        );
    }
}
