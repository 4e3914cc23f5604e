//! The demo server (`examples/server.rs`) as a subprocess, for the tests that check its contract
//! (`tests/demo_server.rs`) and drive it with a real browser (`tests/browser.rs`), plus the
//! HTTP and SSE helpers they share: reqwest for the requests, the independent
//! `eventsource-stream` parser for the streams.
//!
//! Every wait is bounded, and the process is killed when its [`DemoServer`] is dropped, so a
//! failing test never leaks a server.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The bound of one wait on the network or on the server.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long the server may take to print its address after it was started.
const STARTUP: Duration = Duration::from_secs(30);

/// The demo server's binary, built if needed.
///
/// `cargo test` builds the examples before running the tests, but `cargo test --test NAME`
/// does not, and would leave a stale or missing binary; so this runs `cargo build --example
/// server` once per test process, with the same target directory, profile and features as the
/// test itself. When everything is fresh that is a no-op of a fraction of a second.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the path of the test executable");
        // <target dir>/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lies in <target>/<profile>/deps");
        let target_dir = profile_dir
            .parent()
            .expect("the profile directory lies in the target directory");
        let profile = profile_dir
            .file_name()
            .and_then(|name| name.to_str())
            .expect("a UTF-8 profile directory name");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--example", "server", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir)
            .stdin(Stdio::null());
        match profile {
            "debug" => {}
            "release" => {
                cargo.arg("--release");
            }
            other => {
                cargo.args(["--profile", other]);
            }
        }
        // The features the test was built with, so that the binary is the one `cargo test`
        // built (`redis-tls`: `REDIS_CA` and `rediss://`).
        let features: Vec<&str> = [
            ("redis", cfg!(feature = "redis")),
            ("redis-tls", cfg!(feature = "redis-tls")),
            (
                "redis-tls-webpki-roots",
                cfg!(feature = "redis-tls-webpki-roots"),
            ),
        ]
        .into_iter()
        .filter_map(|(feature, on)| on.then_some(feature))
        .collect();
        if !features.is_empty() {
            cargo.args(["--features", &features.join(",")]);
        }
        let status = cargo
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build the demo server: {e}"));
        assert!(
            status.success(),
            "`cargo build --example server` failed ({status}): see its output above"
        );
        let binary = profile_dir
            .join("examples")
            .join(format!("server{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.is_file(),
            "the demo server was built but {} does not exist",
            binary.display()
        );
        binary
    })
}

/// A running demo server on a free loopback port. Killed (SIGKILL) on drop if still running.
pub struct DemoServer {
    child: Child,
    /// The address it printed on its first line.
    pub addr: SocketAddr,
    /// `http://{addr}`.
    pub base: String,
}

impl DemoServer {
    /// Starts the demo server with `ADDR=127.0.0.1:0` and reads the address it listens on from
    /// the first line of its standard output.
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// [`start`](Self::start) with more environment variables (`REDIS_URL`, say).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let binary = server_binary();
        let mut command = Command::new(binary);
        command.envs(env.iter().copied());
        command
            .env("ADDR", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("the server's piped stdout");
        let (first_line, line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = first_line.send(read);
            // Keep reading, so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        // From here on, the guard kills the process if anything below fails.
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            base: String::new(),
        };
        let line = match line.recv_timeout(STARTUP) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("cannot read the demo server's standard output: {e}"),
            Err(_) => panic!("the demo server printed no line within {STARTUP:?}"),
        };
        let Some(addr) = line.trim_end().strip_prefix("listening on http://") else {
            let status = server.wait_exit(Duration::from_secs(1));
            panic!(
                "the demo server's first line should be `listening on http://HOST:PORT`, got \
                 {line:?} (exit status: {status:?})"
            );
        };
        server.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("the demo server printed a bad address {addr:?}: {e}"));
        assert_ne!(server.addr.port(), 0, "the server must print its real port");
        server.base = format!("http://{}", server.addr);
        server
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as a service manager or `docker stop` does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("cannot run `kill`");
        assert!(status.success(), "`kill -TERM` failed: {status}");
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("the server's status") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client for the tests: no proxy (everything is on loopback), no overall timeout (streams
/// stay open); each helper bounds its own wait.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(WAIT)
        .build()
        .expect("an HTTP client")
}

/// A complete HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}), got {} {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Checks that this is the JSON error `{"error": code, "message": text}` with `status` and
    /// `code` and a message, and returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "status of {:?}", self.text());
        assert!(
            self.content_type.starts_with("application/json"),
            "an error is JSON, got {:?}: {:?}",
            self.content_type,
            self.text()
        );
        let body = self.json();
        assert_eq!(body["error"], code, "error code in {body}");
        let message = body["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "an error says what is wrong: {body}");
        message
    }
}

/// Sends a request and reads the whole answer, within [`WAIT`].
pub async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> Reply {
    let mut request = client.request(method.clone(), url).timeout(WAIT);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let status = response.status();
    let content_type = content_type(response.headers());
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("reading the body of {method} {url} failed: {e}"));
    Reply {
        status,
        content_type,
        body,
    }
}

/// Sends `request` as it is on a connection of its own and reads the answer to the server's
/// close (a request the server refuses ends its connection; others should say
/// `Connection: close`), within [`WAIT`]: for what an HTTP client will not send.
pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect within WAIT")
        .expect("connect");
    tcp.write_all(request).await.expect("write the request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        // A server that closes with some of the request unread resets the connection: what
        // came before is the answer.
        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
            response.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server answers and closes the connection within WAIT");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let head = head.to_ascii_lowercase();
    let status = head
        .strip_prefix("http/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    };
    if let Some(length) = header("content-length") {
        assert_eq!(length, body.len().to_string(), "the whole body: {text:?}");
    }
    Reply {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body: Bytes::from(body.to_owned()),
    }
}

/// Runs the demo with `args` and `env` and returns its exit code and output; one that is still
/// running after 10 s (it started serving) is killed and fails the test.
pub fn run_demo(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut child = Command::new(server_binary())
        .args(args)
        .envs(env.iter().copied())
        .env("ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the demo server");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo server") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo server given {args:?} {env:?} was still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut out = child.stdout.take().unwrap();
    out.read_to_string(&mut stdout).unwrap();
    let mut err = child.stderr.take().unwrap();
    err.read_to_string(&mut stderr).unwrap();
    (status.code(), stdout, stderr)
}

pub async fn get(client: &reqwest::Client, url: &str) -> Reply {
    send(client, Method::GET, url, None).await
}

pub async fn post(client: &reqwest::Client, url: &str, body: impl Into<Vec<u8>>) -> Reply {
    send(client, Method::POST, url, Some(body.into())).await
}

pub async fn delete(client: &reqwest::Client, url: &str) -> Reply {
    send(client, Method::DELETE, url, None).await
}

/// Posts `event` and checks the `202` answer; returns the event's id on the channel posted to.
pub async fn publish(client: &reqwest::Client, url: &str, event: &Value) -> String {
    let reply = post(client, url, event.to_string()).await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "POST {url}: {}",
        reply.text()
    );
    let body = reply.json();
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("POST {url} should give an event id: {body}"))
        .to_owned()
}

/// `/stats` as JSON.
pub async fn stats(client: &reqwest::Client, base: &str) -> Value {
    let reply = get(client, &format!("{base}/stats")).await;
    assert_eq!(reply.status, StatusCode::OK, "GET /stats: {}", reply.text());
    reply.json()
}

/// Waits until `/stats` says `channel` has `connections` open connections.
pub async fn wait_connections(client: &reqwest::Client, base: &str, channel: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = stats(client, base).await;
        if stats[channel]["connections"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} should have {want} connections within {WAIT:?}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn content_type(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An open SSE stream, parsed by `eventsource-stream`.
pub struct SseStream {
    events: Events,
}

impl SseStream {
    /// Opens `url`, resuming from `last_event_id` (sent as the `Last-Event-ID` header) if
    /// given. `Err` with the whole answer when the server does not answer `200` with
    /// `text/event-stream`.
    pub async fn open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Result<Self, Reply> {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("GET {url} got no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        let status = response.status();
        let content_type = content_type(response.headers());
        if status != StatusCode::OK || content_type != "text/event-stream" {
            let body = tokio::time::timeout(WAIT, response.bytes())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(Reply {
                status,
                content_type,
                body,
            });
        }
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|item| item.map_err(|e| e.to_string()));
        Ok(Self {
            events: Box::pin(events),
        })
    }

    /// Opens `url` and panics, with the answer, if it is not a stream.
    pub async fn connect(client: &reqwest::Client, url: &str) -> Self {
        match Self::open(client, url, None).await {
            Ok(stream) => stream,
            Err(reply) => panic!("GET {url}: {} {:?}", reply.status, reply.text()),
        }
    }

    /// The next event other than a heartbeat: `Some` event, or `None` when the stream ended
    /// (cleanly or not). Panics when nothing comes within `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Err(_) => panic!("no event and no end of stream within {within:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(event))) if event.event == "heartbeat" => continue,
                Ok(Some(Ok(event))) => return Some(event),
            }
        }
    }

    /// The next event other than a heartbeat; panics if the stream ends or nothing comes
    /// within [`WAIT`].
    pub async fn next_event(&mut self) -> Event {
        self.next_within(WAIT)
            .await
            .expect("the stream ended while an event was expected")
    }

    /// The next event, which must be a published one (not `lagged` or `reset`), as
    /// `(id, data as JSON)`.
    pub async fn next_message(&mut self) -> (String, Value) {
        let event = self.next_event().await;
        assert_eq!(
            event.event, "message",
            "expected a published event: {event:?}"
        );
        let data = serde_json::from_str(&event.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {event:?}"));
        (event.id, data)
    }

    /// Panics unless the stream ends within [`WAIT`], without another event.
    pub async fn assert_ends(&mut self) {
        if let Some(event) = self.next_within(WAIT).await {
            panic!("the stream should have ended, got {event:?}");
        }
    }
}
