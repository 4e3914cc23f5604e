//! The sse-hub demo server: live events per user over Server-Sent Events, with a web page to
//! watch and publish them.
//!
//! # Running it
//!
//! ```text
//! cargo run --example server                    # http://127.0.0.1:3000
//! ADDR=127.0.0.1:0 cargo run --example server   # any free port
//! cargo run --example server -- --help           # the settings; any other argument is refused
//! ```
//!
//! With `REDIS_URL` (and the `redis` feature), servers that share the Redis behave as one: an
//! event published on either reaches the user's streams on both, and a stream resumes on
//! either with the `Last-Event-ID` the other gave (see [`sse_hub::backplane`]):
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 ADDR=127.0.0.1:3000 cargo run --features redis --example server
//! REDIS_URL=redis://127.0.0.1:6379 ADDR=127.0.0.1:3001 cargo run --features redis --example server
//! ```
//!
//! A `rediss://` URL (TLS, the `redis-tls` feature) trusts the platform's roots; for a server
//! whose certificate a private CA signed, `REDIS_CA` names a PEM file of the CA certificates to
//! trust instead (a file that cannot be read or holds no PEM certificate stops the server at
//! startup, naming `REDIS_CA`):
//!
//! ```text
//! REDIS_URL=rediss://redis.internal:6380 REDIS_CA=/etc/redis/ca.pem cargo run --features redis-tls --example server
//! ```
//!
//! The first line the server prints on standard output is `listening on http://HOST:PORT`, with
//! the real port (tools that start it with port 0 read it from there); logs go to standard
//! error (`RUST_LOG=debug` for more). `HEARTBEAT_MS` sets the idle time before a heartbeat, in
//! milliseconds (default 15 000; tests set it short to see heartbeats). Open the address in a browser: pick a user and a channel,
//! watch that user's events arrive with their ids, publish events from the form, press
//! "End streams (server side)" or reload the page, and see that nothing is lost. "agent run"
//! publishes an AG-UI run into a thread token by token and shows the thread as a chat; "open a
//! second view" joins it mid-answer from the run so far. Ctrl-C (or SIGTERM) ends every open
//! stream and exits.
//!
//! # Routes
//!
//! `{channel}` is `agui`, `a2a`, `context` or `analytics`; `{user}` is any user id.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /` | the demo page |
//! | `GET /events/{channel}/{user}` | the user's SSE stream on that channel; resumes from `Last-Event-ID` (the header, or the `last_event_id` query parameter) |
//! | `POST /events/{channel}/{user}` | publishes the JSON event in the body through the [`EventRouter`]; `202` with `{"id": "...", "receivers": N, "routed": {...}}` |
//! | `GET /events/agui/{user}?thread={thread}` | that thread's AG-UI-native stream: it opens with the thread's run so far (`RUN_STARTED`, `MESSAGES_SNAPSHOT`, `STATE_SNAPSHOT`, what is open re-opened), then the live tail; every `data:` line is an AG-UI event, heartbeats are comments |
//! | `POST /events/agui/{user}?thread={thread}` | publishes the AG-UI event into that thread (folded into its run state, kept even when nobody is connected) |
//! | `DELETE /events/{channel}/{user}` | ends the user's open streams on that channel (`disconnect_user`): `204`; clients reconnect by themselves with their `Last-Event-ID` and lose nothing |
//! | `GET /stats` | the router's [`RouterStats`](sse_hub::RouterStats) as JSON |
//! | `GET /metrics` | every sse-hub metric in the Prometheus text format |
//!
//! The body of a `POST` is one event of the channel's type: an AG-UI event on `agui`, an A2A
//! event on `a2a`, a *system* event on `context` and an analytics event on `analytics`. It is
//! routed like any event of its type, so an AG-UI or A2A event also reaches the user's
//! `context` stream, wrapped as `{"protocol": ..., "event": ...}`. In the `202` answer, `id` is
//! the event's id on the channel posted to and `receivers` the connections it reached there
//! (with `REDIS_URL`, the servers that received it); `routed` has the same for every channel the
//! event went to. `id` is `null` when the user has no channel at all there: no connection ever,
//! or none for longer than the retention (30 s), so there was nobody to deliver the event to and
//! nothing to replay it from (with `REDIS_URL`: no server serves the user, and Redis holds no
//! history of them).
//!
//! Bad input gets a JSON error `{"error": code, "message": text}` and changes nothing: an
//! unknown channel is `404`; a body that is not JSON, or not an event of the channel's type, is
//! `400` with serde's explanation (an AG-UI event the 1.0 schemas reject is `400
//! invalid_event` naming the member; one of a type the model does not know is carried as it
//! came); a thread name that is empty, over 256 bytes or not UTF-8, or a `thread` given more
//! than once, is `400` `invalid_thread`;
//! a body over 64 KiB is `413`; a user's 17th connection on a
//! channel is `429`; and after shutdown began, `503`. So are the refusals no handler of the
//! demo writes: a path that is not UTF-8 once percent-decoded is `400` `invalid_path`, a body
//! that cannot be read (a broken chunked coding) `400` `unreadable_body`, and, from
//! [`sse_hub::serve`] over HTTP/1.1, a request head over 64 KiB `431`
//! `request_head_too_large` and one that cannot be parsed `400` `malformed_request`.
//!
//! # Authentication in a real application
//!
//! This demo takes the user from the path, so anyone can read anyone's events: fine for a demo,
//! never for an application. A real application takes the user id from its authentication,
//! with an extractor of its own in place of the `{user}` path segment. `EventSource` cannot set
//! headers, so a browser stream is usually authenticated by a session cookie:
//!
//! ```rust,ignore
//! use axum::extract::{FromRequestParts, Path, State};
//! use axum::http::{StatusCode, request::Parts};
//! use axum::response::{IntoResponse, Response};
//! use sse_hub::{Channel, EventRouter, LastEventId, UserId, sse::error_response};
//!
//! /// The signed-in user, from the session cookie.
//! struct CurrentUser(UserId);
//!
//! impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
//!     type Rejection = Response;
//!
//!     async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
//!         let unauthorized =
//!             || error_response(StatusCode::UNAUTHORIZED, "unauthorized", "sign in");
//!         let subject = my_auth::session_subject(&parts.headers) // your session check
//!             .ok_or_else(unauthorized)?;
//!         Ok(CurrentUser(UserId::from(subject)))
//!     }
//! }
//!
//! // Route: GET /events/{channel}. The user never comes from the request's path or query.
//! async fn stream(
//!     State(router): State<EventRouter>,
//!     Path(channel): Path<String>,
//!     CurrentUser(user): CurrentUser,
//!     last_event_id: LastEventId,
//! ) -> Response {
//!     let Ok(channel) = channel.parse::<Channel>() else {
//!         return StatusCode::NOT_FOUND.into_response();
//!     };
//!     router
//!         .channel_response(channel, &user, &last_event_id)
//!         .into_response()
//! }
//! ```
//!
//! Publishing is the backend's business: agents and services call
//! [`EventRouter::route`] in-process, or an internal endpoint like this demo's `POST`, after
//! checking that the caller may publish for that user; [`sse_hub::EventBody`] reads such a
//! body with the JSON refusals this demo writes by hand. `tests/adopter_app.rs` is such an
//! application, end to end.

use std::future::IntoFuture;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::de::DeserializeOwned;
use serde_json::json;
use sse_hub::models::{A2AEvent, AgUiEvent, AnalyticsEvent, SystemEvent};
use sse_hub::sse::error_response;
use sse_hub::{
    Channel, EventRouter, LastEventId, PublishError, Route, Routed, SubscribeError, ThreadQuery,
    UserId,
};
use tokio::sync::Notify;

#[path = "server/env.rs"]
mod env;
#[path = "server/signals.rs"]
mod signals;

use env::router_from_env;
use signals::Signals;

/// The address listened on when `ADDR` is not set.
const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// The largest `POST` body accepted. An event's frame is limited to 64 KiB too
/// ([`Config::max_frame_bytes`](sse_hub::Config::max_frame_bytes)), so a bigger body could never be published anyway.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long the open connections may take to close after shutdown began, before the process
/// exits anyway. SSE streams end at once; this bounds a client stuck mid-request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The demo page: one self-contained HTML file, with no external resources.
const PAGE: &str = include_str!("server/page.html");

#[derive(Clone)]
struct App {
    router: EventRouter,
    metrics: PrometheusHandle,
}

/// What `--help` prints: the demo's settings are environment variables, not flags.
const USAGE: &str = "\
The sse-hub demo server. It takes no arguments; its settings are environment variables:

  ADDR=HOST:PORT     where to listen (default 127.0.0.1:3000; port 0 picks a free one)
  HEARTBEAT_MS=N     idle milliseconds before a heartbeat (default 15000)
  REDIS_URL=URL      share channels with every server on this Redis (feature `redis`)
  REDIS_CA=FILE      PEM CA certificates to trust for a rediss:// REDIS_URL, instead of
                     the default roots (feature `redis-tls`)
  RUST_LOG=FILTER    log filter for standard error (default info)

The first line on standard output is `listening on http://HOST:PORT`. Routes: see the
examples/server.rs module docs, or open the address in a browser.
";

#[tokio::main]
async fn main() -> ExitCode {
    // Settings come from the environment; an argument is either a request for help or a
    // mistake worth saying out loud (`--port 8080` silently ignored would listen on 3000).
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--help" || arg == "-h" {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        eprintln!("error: unknown argument {arg:?}: the demo takes no arguments\n\n{USAGE}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    // Before anything can be told to stop us, so that an early signal is a clean shutdown too.
    let signals = Signals::new().map_err(|e| format!("cannot listen for signals: {e}"))?;

    // The recorder must be installed before the broadcasters are created: each registers its
    // metric handles when it is built.
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let (router, backplane) = router_from_env().await?;
    let app = App {
        router: router.clone(),
        metrics,
    };

    let addr = std::env::var("ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr:?} (set ADDR to HOST:PORT): {e}"))?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;

    // Tools read this first line to find the port: print it before anything else, and flush.
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{local}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to standard output: {e}"))?;
    }
    tracing::info!(%local, "serving the demo page and the event routes");

    let draining = Arc::new(Notify::new());
    let shutdown = {
        let draining = draining.clone();
        async move {
            let signal = signals.recv().await;
            tracing::info!(
                signal,
                connections = router.total_connections(),
                "shutting down: ending every open stream"
            );
            // Ends every SSE stream, so the graceful shutdown below does not wait for them.
            router.shutdown();
            draining.notify_one();
        }
    };
    // HTTP/1.1 and HTTP/2 (h2c with prior knowledge) on the same port, with sse-hub's
    // settings for long-lived streams. A client that stops reading is closed once its writes
    // make no progress for twice the heartbeat interval (the default stall timeout), so it
    // cannot keep its slot or hold up the shutdown.
    let server = sse_hub::serve(listener, routes(app))
        .stall_timeout(2 * sse_hub::HEARTBEAT_INTERVAL)
        .with_graceful_shutdown(shutdown)
        .into_future();

    tokio::select! {
        served = server => served.map_err(|e| format!("the server failed: {e}"))?,
        () = async {
            draining.notified().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!(
                timeout = ?DRAIN_TIMEOUT,
                "some connections were still open after the drain timeout; exiting anyway"
            );
        }
    }
    // Publishes still queued for Redis are sent before the process exits.
    #[cfg(feature = "redis")]
    if let Some(backplane) = backplane {
        backplane.close().await;
    }
    #[cfg(not(feature = "redis"))]
    let _ = backplane;
    tracing::info!("stopped");
    Ok(())
}

fn routes(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/events/{channel}/{user}",
            get(stream).post(publish).delete(disconnect),
        )
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The `Bytes` extractor enforces this; `publish` answers the rejection with JSON.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// A refused request: its answer is the JSON error `{"error": code, "message": text}`.
#[derive(Debug)]
enum Refusal {
    /// A refusal of the demo's own.
    Error {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// The library refused to publish: its own status and code (413 for a frame over the
    /// limit, 503 during shutdown).
    Publish(PublishError),
    /// The library refused to subscribe: 429 at the user's connection cap, 503 at capacity or
    /// during shutdown.
    Subscribe(SubscribeError),
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl std::fmt::Display) -> Self {
        Self::Error {
            status,
            code,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Error {
                status,
                code,
                message,
            } => error_response(status, code, message),
            Self::Publish(error) => error.into_response(),
            Self::Subscribe(error) => error.into_response(),
        }
    }
}

/// `GET /events/{channel}/{user}`: the user's stream, resumed from the client's last event id;
/// with `?thread=`, that thread's stream (on `agui`, AG-UI-native and opened with the run so far).
async fn stream(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    ThreadQuery(thread): ThreadQuery,
    last_event_id: LastEventId,
) -> Result<Response, Refusal> {
    let (channel, user) = channel_and_user(path)?;
    match thread {
        None => app.router.channel_response(channel, &user, &last_event_id),
        Some(thread) => {
            app.router
                .channel_response_in_thread(channel, &user, &thread, &last_event_id)
        }
    }
    .map_err(Refusal::Subscribe)
}

/// `POST /events/{channel}/{user}`: publishes the body, an event of the channel's type.
async fn publish(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    ThreadQuery(thread): ThreadQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let (channel, user) = channel_and_user(path)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format_args!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
            )
        } else {
            Refusal::new(
                rejection.status(),
                "unreadable_body",
                format_args!(
                    "the request body could not be read: {}",
                    rejection.body_text()
                ),
            )
        }
    })?;
    let router = &app.router;
    let routed = match (channel, thread) {
        (Channel::AgUi, Some(thread)) => {
            let event: AgUiEvent =
                serde_json::from_slice(&body).map_err(|e| invalid_event(channel, &body, &e))?;
            router
                .route_agui_in_thread_async(&user, &thread, &event)
                .await
                .map_err(Refusal::Publish)
        }
        (_, Some(_)) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_thread",
            "threads are published on the agui channel",
        )),
        (Channel::AgUi, None) => route::<AgUiEvent>(router, &user, channel, &body).await,
        (Channel::A2A, None) => route::<A2AEvent>(router, &user, channel, &body).await,
        (Channel::Context, None) => route::<SystemEvent>(router, &user, channel, &body).await,
        (Channel::Analytics, None) => route::<AnalyticsEvent>(router, &user, channel, &body).await,
    }?;
    // Every route of a channel's own event type publishes to that channel.
    let (id, receivers) = routed.get(channel.as_str()).map_or((None, 0), |published| {
        (
            published.id,
            published.connections().or(published.nodes()).unwrap_or(0),
        )
    });
    let all: serde_json::Map<String, serde_json::Value> = routed
        .targets()
        .map(|(target, published)| (target.to_owned(), json!(published)))
        .collect();
    let body = json!({ "id": id, "receivers": receivers, "routed": all });
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// Parses `body` as an event of type `E` and routes it for `user`. With a backplane this waits
/// for Redis, so that the answer has the event's id (a Redis outage is `503`, and the event
/// still reached this server's own streams; a publish Redis never confirmed is `504`, and may
/// have reached every server).
async fn route<E: DeserializeOwned + Route + Sync>(
    router: &EventRouter,
    user: &UserId,
    channel: Channel,
    body: &[u8],
) -> Result<Routed, Refusal> {
    let event: E = serde_json::from_slice(body).map_err(|e| invalid_event(channel, body, &e))?;
    router
        .route_async(user, &event)
        .await
        .map_err(Refusal::Publish)
}

/// The `400` for a body that is not an event of `channel`'s type, saying what is wrong.
fn invalid_event(channel: Channel, body: &[u8], error: &serde_json::Error) -> Refusal {
    let (kind, expected) = match channel {
        Channel::AgUi => (
            "AG-UI",
            "an AG-UI event such as {\"type\":\"TEXT_MESSAGE_CONTENT\",...}",
        ),
        Channel::A2A => (
            "A2A",
            "an A2A event such as {\"type\":\"TASK_STATUS_UPDATE\",...}",
        ),
        Channel::Context => (
            "system",
            "a system event such as {\"type\":\"CONTEXT_CREATED\",...} (AG-UI and A2A events \
             reach context when posted to agui or a2a)",
        ),
        Channel::Analytics => (
            "analytics",
            "an analytics event such as {\"type\":\"PAGE_VIEW\",...}",
        ),
    };
    let (code, problem) = if body.iter().all(u8::is_ascii_whitespace) {
        ("invalid_json", "the request body is empty".to_owned())
    } else if error.is_syntax() || error.is_eof() {
        (
            "invalid_json",
            format!("the request body is not JSON: {error}"),
        )
    } else {
        (
            "invalid_event",
            format!("the request body is not a valid {kind} event: {error}"),
        )
    };
    Refusal::new(
        StatusCode::BAD_REQUEST,
        code,
        format_args!("{problem}; POST /events/{channel}/{{user}} takes {expected}"),
    )
}

/// `DELETE /events/{channel}/{user}`: ends the user's open streams on the channel.
async fn disconnect(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, Refusal> {
    let (channel, user) = channel_and_user(path)?;
    let ended = app.router.disconnect_user(channel, &user);
    tracing::info!(%channel, %user, ended, "ended the user's streams");
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(State(app): State<App>) -> Response {
    axum::Json(app.router.stats()).into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format_args!(
            "no route for {method} {}: see GET / for the demo page and the routes",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    // An unknown channel is 404 on every method (README, "Bad input"), whatever the method.
    if let Some((channel, _user)) = uri
        .path()
        .strip_prefix("/events/")
        .and_then(|rest| rest.split_once('/'))
        && let Err(unknown) = channel.parse::<Channel>()
    {
        return Refusal::new(StatusCode::NOT_FOUND, "unknown_channel", unknown).into_response();
    }
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format_args!("{method} is not allowed on {}", uri.path()),
    )
}

/// The channel and user of an `/events/{channel}/{user}` path: `404` for an unknown channel.
fn channel_and_user(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Channel, UserId), Refusal> {
    let Path((channel, user)) = path.map_err(|rejection| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    })?;
    let channel: Channel = channel
        .parse()
        .map_err(|unknown| Refusal::new(StatusCode::NOT_FOUND, "unknown_channel", unknown))?;
    Ok((channel, UserId::from(user)))
}
