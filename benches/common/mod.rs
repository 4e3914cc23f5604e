//! What the benchmarks, `examples/memory.rs` and `examples/loadgen.rs` share: the event they
//! publish, the AG-UI run the thread benches stream, the bench configuration, and `replaced`, a
//! faithful re-implementation of the design sse-hub replaces (see
//! `../shared/notes/seed-users.md`).
//!
//! Included with `#[path]` by each user, so not every item is used by every one of them.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use sse_hub::models::AgUiEvent;
use sse_hub::models::agui::TextMessageContent;

/// A streamed text chunk whose sse-hub frame (`data:` line plus `id:` line) is about 260 bytes.
pub fn text_event(n: u64) -> AgUiEvent {
    AgUiEvent::from(TextMessageContent {
        message_id: format!("msg-{n:08}"),
        delta: "The quick brown fox jumps over the lazy dog while the agent streams its answer \
                one chunk at a time to every open tab of the user."
            .into(),
        timestamp: Some(1_780_000_000_000),
        ..Default::default()
    })
}

/// The pre-encoded frame the bare-broadcast "limit" contender sends: the same bytes sse-hub
/// produces for [`text_event`], with an id line of the same length.
pub fn text_frame() -> Bytes {
    let json = serde_json::to_string(&text_event(0)).expect("serialisable");
    Bytes::from(format!("data: {json}\nid: 12345678901234567890-1234\n\n"))
}

/// The tokens of the answers the AG-UI run benches stream (`run_state`, `threads`), in turn.
pub const WORDS: &[&str] = &[
    " the",
    " weather",
    " in",
    " Paris",
    " is",
    " \"mild\"",
    ",",
    " 18",
    "°C",
    ".\n",
];

/// The `i`th token of a streamed answer.
pub fn word(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

/// `RUN_STARTED` of run `r` in `thread`, a user's question in its input.
pub fn run_started(thread: &str) -> serde_json::Value {
    serde_json::json!({"type": "RUN_STARTED", "threadId": thread, "runId": "r",
    "input": {"threadId": thread, "runId": "r",
        "messages": [{"id": "u1", "role": "user", "content": "Weather?"}],
        "tools": [], "context": [], "state": {}, "forwardedProps": {}}})
}

/// `TEXT_MESSAGE_START` of the answer `msg-1`.
pub fn text_start() -> serde_json::Value {
    serde_json::json!({"type": "TEXT_MESSAGE_START", "messageId": "msg-1", "role": "assistant"})
}

/// `TEXT_MESSAGE_CONTENT`: one token `delta` of the answer `msg-1`.
pub fn content(delta: &str) -> serde_json::Value {
    serde_json::json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "msg-1", "delta": delta})
}

/// One of the JSON events above, typed, as a publisher holds it.
pub fn agui(json: serde_json::Value) -> AgUiEvent {
    serde_json::from_value(json).expect("an AG-UI event")
}

/// Times `iters` calls of `step` on a state that `fresh` makes anew (untimed) every 20 000
/// calls, so that a thread's answer stays answer-sized however long criterion runs.
pub fn chunked<T>(
    iters: u64,
    mut fresh: impl FnMut() -> T,
    mut step: impl FnMut(&mut T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(20_000);
        let mut state = fresh();
        let start = Instant::now();
        for _ in 0..n {
            step(&mut state);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

/// Criterion settings that keep a full `cargo bench` within minutes on a 2-core machine.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

/// A multi-threaded runtime with two workers, the size of the machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The p-th percentile (0..=100) of `sorted`.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The replaced design, re-implemented as `systemprompt-events` 0.3 works: one async `RwLock`
/// over `HashMap<user, HashMap<connection id, sender>>` of unbounded per-connection mpsc senders
/// of axum `Event`s; the event serialised once per broadcast, one `Event` clone (a deep copy of
/// its buffer) sent per connection, senders that failed removed under the write lock.
pub mod replaced {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::response::sse::Event;
    use serde::Serialize;
    use tokio::sync::{RwLock, mpsc};

    /// The per-connection sender.
    pub type EventSender = mpsc::UnboundedSender<Result<Event, Infallible>>;
    /// The per-connection receiver, which the SSE response streams.
    pub type EventReceiver = mpsc::UnboundedReceiver<Result<Event, Infallible>>;

    /// One broadcaster (the original has four: AG-UI, A2A, context, analytics).
    #[derive(Clone, Default)]
    pub struct GenericBroadcaster {
        connections: Arc<RwLock<HashMap<String, HashMap<String, EventSender>>>>,
        next_conn: Arc<AtomicU64>,
    }

    impl GenericBroadcaster {
        /// A fresh connection id (the original uses a UUID string).
        pub fn connection_id(&self) -> String {
            let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
            format!(
                "{:08x}-0000-4000-8000-{:012x}",
                n >> 48,
                n & 0xffff_ffff_ffff
            )
        }

        /// Registers a connection's sender.
        pub async fn register(&self, user: &str, conn: &str, sender: EventSender) {
            let mut connections = self.connections.write().await;
            connections
                .entry(user.to_owned())
                .or_default()
                .insert(conn.to_owned(), sender);
        }

        /// Opens a connection: a channel, registered; the receiver is the stream.
        pub async fn connect(&self, user: &str) -> (String, EventReceiver) {
            let (tx, rx) = mpsc::unbounded_channel();
            let conn = self.connection_id();
            self.register(user, &conn, tx).await;
            (conn, rx)
        }

        /// Removes a connection.
        pub async fn unregister(&self, user: &str, conn: &str) {
            let mut connections = self.connections.write().await;
            if let Some(user_connections) = connections.get_mut(user) {
                user_connections.remove(conn);
                if user_connections.is_empty() {
                    connections.remove(user);
                }
            }
        }

        /// Serialises `event` once and sends one clone of the `Event` to every connection of
        /// `user`; returns the connections reached.
        pub async fn broadcast<E: Serialize>(&self, user: &str, event: &E) -> usize {
            let Ok(json) = serde_json::to_string(event) else {
                return 0;
            };
            self.broadcast_event(user, Event::default().data(json))
                .await
        }

        /// Sends an already built `Event` to every connection of `user`.
        pub async fn broadcast_event(&self, user: &str, event: Event) -> usize {
            let mut failed = Vec::new();
            let mut sent = 0;
            {
                let connections = self.connections.read().await;
                let Some(user_connections) = connections.get(user) else {
                    return 0;
                };
                for (conn, sender) in user_connections {
                    if sender.send(Ok(event.clone())).is_ok() {
                        sent += 1;
                    } else {
                        failed.push(conn.clone());
                    }
                }
            }
            if !failed.is_empty() {
                let mut connections = self.connections.write().await;
                if let Some(user_connections) = connections.get_mut(user) {
                    for conn in &failed {
                        user_connections.remove(conn);
                    }
                    if user_connections.is_empty() {
                        connections.remove(user);
                    }
                }
            }
            sent
        }

        /// Connections of `user`.
        pub async fn connection_count(&self, user: &str) -> usize {
            self.connections
                .read()
                .await
                .get(user)
                .map_or(0, HashMap::len)
        }

        /// Connections across all users.
        pub async fn total_connections(&self) -> usize {
            self.connections
                .read()
                .await
                .values()
                .map(HashMap::len)
                .sum()
        }
    }

    /// The context stream's wrapper, `{"protocol":"agui","event":{...}}`.
    #[derive(Serialize)]
    struct ContextEvent<'a, E> {
        protocol: &'static str,
        event: &'a E,
    }

    /// The original `EventRouter`, over injected broadcasters instead of statics.
    #[derive(Clone, Default)]
    pub struct EventRouter {
        /// The AG-UI broadcaster.
        pub agui: GenericBroadcaster,
        /// The context broadcaster.
        pub context: GenericBroadcaster,
    }

    impl EventRouter {
        /// AG-UI event: to the AG-UI broadcaster, and wrapped to the context broadcaster; each
        /// broadcaster serialises what it sends.
        pub async fn route_agui<E: Serialize>(&self, user: &str, event: &E) -> (usize, usize) {
            let agui = self.agui.broadcast(user, event).await;
            let wrapped = ContextEvent {
                protocol: "agui",
                event,
            };
            let context = self.context.broadcast(user, &wrapped).await;
            (agui, context)
        }
    }
}
