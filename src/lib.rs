//! Live events to the right users, fast, in bounded memory.
//!
//! sse-hub delivers the events a backend publishes for a user to every Server-Sent Events
//! connection of that user, and to nobody else, without losing any silently.
//!
//! # The model
//!
//! A [`Broadcaster`] is a registry of *user channels* for one event type. Each user channel is
//! one [`tokio::sync::broadcast`] channel; each connection of the user is one of its receivers,
//! a [`Subscription`]. A user's connection set *is* the channel's receiver count: there is no
//! map of per-connection senders to keep in sync.
//!
//! ```text
//!   broadcast(&alice, &event)
//!        │ encode once: `event:` + `data:` lines          Broadcaster<E>
//!        ▼                                                ┌──────────────────────────────┐
//!   Payload ──► alice's channel: seq + `id:` ──► Bytes ──►│ alice: ring (8 slots)  ──► tab 1, tab 2
//!                              └─► replay window          │ bob:   ring            ──► phone
//!                                                         └──────────────────────────────┘
//! ```
//!
//! An event is encoded to its SSE frame **once** per publish; the frame, [`bytes::Bytes`], is
//! shared by every receiver, so fan-out costs a reference count per connection.
//!
//! [`EventRouter`] sends one event to the channels that carry it: AG-UI and A2A events to their
//! own channel and, wrapped, to the aggregated context channel. [`SseResponse`] serves a
//! subscription over axum with heartbeats, `Last-Event-ID` resume and clean shutdown.
//!
//! # Event ids and resume
//!
//! Every event gets an [`EventId`], the channel's epoch and a sequence number, sent as the SSE
//! `id:`. A client that reconnects sends it back as `Last-Event-ID`;
//! [`Broadcaster::subscribe_from`] then replays what it missed from the channel's *replay
//! window* and continues live, with no duplicate and no gap. An id that cannot be resumed
//! (garbage, from an earlier channel, or older than the window) starts the stream with a `reset`
//! control event instead; it is never an error to the client.
//!
//! # Lagging
//!
//! The broadcast ring is small ([`Config::capacity`], 8 slots by default), because tokio
//! preallocates it for every user. A connection that falls further behind *lags*: what happens
//! then is the [`LagPolicy`]. By default it is back-filled from the replay window and loses
//! nothing while it stays within it; beyond the window, and with the other policies, every loss
//! is counted ([`Stats`], the metrics) and signalled in-band with a `lagged` control event (a
//! thread stream opened from its thread's state ends instead: its reconnect opens whole).
//! A slow client never makes the server grow: the ring and the window are the only buffers.
//!
//! # Closing and retention
//!
//! Dropping a subscription removes the connection at once: counts are exact when `drop`
//! returns. When a user's last connection goes, the channel (its epoch and its window) is kept
//! for [`Config::retention`], 30 s by default, so a reload or a reconnect loses nothing; then
//! it is removed. A subscribe that races with the removal lands on a fresh channel, never on the
//! removed one. [`Broadcaster::disconnect_user`] ends a user's streams but keeps the channel;
//! [`Broadcaster::shutdown`] ends every stream and refuses new ones.
//!
//! # Memory
//!
//! Everything is bounded by the [`Config`]. With `C` = [`capacity`](Config::capacity) rounded
//! up to a power of two, `F` = [`max_frame_bytes`](Config::max_frame_bytes), `W` =
//! [`replay_bytes`](Config::replay_bytes), `N` = [`replay_events`](Config::replay_events) and `U`
//! = [`max_channels`](Config::max_channels):
//!
//! * an idle user channel costs about `80·C + 500` bytes at most (the preallocated ring, tokio's
//!   channel state, the channel and its map entry): about 1.1 KB with the defaults;
//! * the frames a channel holds are at most `W` in its window (this is what
//!   [`Stats::buffered_bytes`] accounts, so `buffered_bytes ≤ U·W`) plus the `C` newest frames
//!   the ring may still reference after the window let them go, `C·F`; the window's index costs
//!   `64·N` bytes more at most;
//! * a connection costs about 250 bytes, plus `64·N` while it back-fills after a lag; served
//!   over HTTP, add hyper's write queue, up to 16 frames (`16·F`) for a connection whose client
//!   does not read.
//!
//! * threads: a channel that folds threads keeps at most `T` =
//!   [`ThreadConfig::max_threads_per_user`] states of at most `B` bytes each (for the AG-UI run
//!   state, [`run_state::RunStates::max_thread_bytes`]), `T·B` per user channel.
//!
//! So the worst case is
//! `U·(80·C + 500 + W + C·F + 64·N + T·B) + connections·(250 + 64·N + 16·F)` bytes, whatever
//! clients do (kernel socket buffers come on top). Inside the library a
//! stalled client pins at most the `C` frames of the ring; over HTTP, serve through
//! [`StallTimeout`] so that a connection whose writes make no progress is closed, and with it
//! everything it held.
//!
//! # Layers
//!
//! The modules form a stack with no import circle, read bottom-up: plain types (ids, errors,
//! reset reasons, stats, threads, [`Config`]) → wire encoding ([`SseFrame`], [`Payload`],
//! [`Frame`]) → the user channel with its replay window → the [`Subscription`] (lag policy,
//! resume, the [`backplane`] catch-up) → the registry ([`Broadcaster`]) → adapters: [`sse`],
//! [`listener`] and [`serve()`] for axum, [`EventRouter`], [`models`] and [`run_state`] for
//! agents, and the Redis backplane.
//!
//! Words: a *channel* is a named stream of one kind of event (`agui`, `a2a`, `context`,
//! `analytics`; [`Config::name`], [`Channel`]) served by one [`Broadcaster`]; a *user channel* is
//! one user's broadcast ring and window on it; a *connection* is one [`Subscription`].
//!
//! # Example
//!
//! ```
//! use sse_hub::{EventRouter, UserId, models::AgUiEvent};
//! use tokio_stream::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = EventRouter::default();
//! let alice = UserId::from("alice");
//! let mut tab = router.context().subscribe(&alice)?;
//!
//! let event: AgUiEvent = serde_json::from_str(
//!     r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hello"}"#,
//! )?;
//! let routed = router.route_agui(&alice, &event)?;
//! assert_eq!(routed.get("context").unwrap().connections(), Some(1));
//!
//! let frame = tab.next().await.unwrap();
//! let text = std::str::from_utf8(frame.bytes())?;
//! assert!(text.starts_with(r#"data: {"protocol":"agui","event":{"type":"TEXT_MESSAGE_CONTENT""#));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

// The stack, read bottom-up: each module uses only modules listed before it.
//
// Plain types.
mod user_id; //       UserId: whose channel.
mod event_id; //      EventId: a channel's epoch and sequence number, the SSE `id:`.
mod error; //         Every typed error, the backplane's included.
mod reason; //        ResetReason, EndReason: why a stream reset or ended.
mod stats; //         Published, Delivery, Stats: what a publish and a broadcaster did.
mod thread; //        ThreadId, and the ThreadState interface a channel folds per thread.
mod config; //        Config, LagPolicy, SseConfig: every bound, with its default.
pub mod metrics; //   The `metrics` names and handles.
// Wire encoding.
mod json; //          serde_json's output, with a fast path for strings that need no escape.
mod wire; //          SseFrame and the field writers: the SSE wire format.
mod encode; //        Payload, ToSse: an event encoded once, finished per channel with its id.
mod frame; //         Frame, FrameKind: what a subscription yields; the control frames.
// The channel and its window.
mod expiry; //        ExpiryQueue: idle channels in the order they expire.
mod shared; //        Shared: config, metrics and counters of one broadcaster's channels.
mod channel; //       UserChannel: one user's broadcast ring and replay window.
// The subscription.
pub mod backplane; // The Backplane interface: shared history and live feed across nodes.
pub mod subscription; // Subscription: lag policy, resume, backplane catch-up.
// The registry.
mod registry; //      Broadcaster: user channels by user; publish, subscribe, retention.
// Adapters.
pub mod sse; //       SseResponse, LastEventId: a subscription served over axum.
pub mod event_body; // EventBody: an event in a request body, refused with a JSON error.
pub mod listener; //  StallTimeout: close connections whose writes stall.
pub mod serve; //     serve: a Router over HTTP/1.1 and HTTP/2, tuned for SSE, in one call.
pub mod models; //    AG-UI, A2A, system, analytics and context event models.
pub mod run_state; // The AG-UI run state: a thread's run folded from its events, and its opening.
mod router; //        EventRouter: one event to the channels that carry it.
// (backplane::redis, the Redis backplane, is an adapter too: it implements the interface.)

pub use config::{Config, HEARTBEAT_INTERVAL, HEARTBEAT_JSON, Heartbeat, LagPolicy, SseConfig};
pub use encode::{Named, Payload, ToSse};
pub use error::{EncodeError, FrameError, InvalidThread, PublishError, SubscribeError};
pub use event_body::EventBody;
pub use event_id::{EventId, MAX_EVENT_ID_LEN};
pub use listener::StallTimeout;
pub use registry::Broadcaster;
pub use router::{
    A2A_BROADCASTER, A2ABroadcaster, AGUI_BROADCASTER, ANALYTICS_BROADCASTER, AgUiBroadcaster,
    AnalyticsBroadcaster, CONTEXT_BROADCASTER, Channel, ContextBroadcaster, EventRouter, Route,
    Routed, RouterStats, UnknownChannel,
};
pub use serve::{Serve, serve};
pub use sse::{LastEventId, SseResponse, ThreadQuery, standard_keep_alive};
pub use stats::{Delivery, Published, Stats};
pub use subscription::{
    ConnectionGuard, EndReason, Frame, FrameKind, LAGGED_EVENT, RESET_EVENT, ResetReason,
    Subscription,
};
pub use thread::{
    Folded, HoldBack, MAX_THREAD_LEN, ThreadConfig, ThreadId, ThreadState, ThreadStates,
};
pub use user_id::UserId;
pub use wire::SseFrame;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
