//! [`Config`]: every bound of a broadcaster, with the defaults and what they cost.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;

use crate::thread::ThreadConfig;

/// How long a stream may stay idle before a heartbeat is sent, as in the replaced crate.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// The data of the `heartbeat` event, as in the replaced crate.
pub const HEARTBEAT_JSON: &str = r#"{"type":"heartbeat"}"#;

/// What a [`Broadcaster`](crate::Broadcaster) does when a subscription falls behind the channel.
///
/// A receiver falls behind when more than [`Config::capacity`] events are published before it
/// reads; tokio's broadcast ring then overwrites what it had not read. The policy decides what
/// the subscriber sees. Whatever the policy, the ring and the replay window are the only buffers,
/// so a slow or stalled receiver never makes memory grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LagPolicy {
    /// Back-fill the missed events from the replay window, so a slow client loses nothing while
    /// it stays within the window. What the window no longer holds is signalled as with
    /// [`Notify`](Self::Notify), before the events the window still has.
    #[default]
    Recover,
    /// Skip the missed events and yield a `lagged` control event that says how many.
    Notify,
    /// Yield the `lagged` control event, then end the stream. The client reconnects with its
    /// `Last-Event-ID` and resumes from the replay window.
    Disconnect,
}

/// The bounds of a broadcaster. Build it from [`Config::default`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// use sse_hub::{Config, LagPolicy};
///
/// let mut config = Config::default();
/// config.retention = Duration::from_secs(60);
/// config.lag_policy = LagPolicy::Notify;
/// ```
///
/// The worst-case memory these bounds allow is given in the [crate docs](crate#memory).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The channel's name, used in metrics labels, tracing fields and errors. Default `"events"`.
    pub name: Cow<'static, str>,
    /// Slots of each user's broadcast ring, rounded up to a power of two, at least 1 and at
    /// most 2²⁰ (a larger value is taken as 2²⁰: a ring is preallocated per user). tokio
    /// preallocates every slot (80 bytes each, a thread tag included) when the channel is
    /// created, so this is the idle cost of a user: the default, 8, costs 640 bytes. Events
    /// beyond it are not lost: a receiver that falls this far behind recovers from the replay
    /// window ([`LagPolicy`]).
    pub capacity: usize,
    /// Events kept per user channel for resume and lag recovery. Default 256.
    pub replay_events: usize,
    /// Bytes of frames kept per user channel. Default 256 KiB.
    pub replay_bytes: usize,
    /// How long an event stays replayable. Default 2 minutes.
    pub replay_age: Duration,
    /// The largest encoded frame a publish may produce; larger events are refused with
    /// [`PublishError::FrameTooLarge`](crate::PublishError). Default 64 KiB.
    pub max_frame_bytes: usize,
    /// Connections one user may hold on this channel; the next subscribe gets
    /// [`SubscribeError::TooManyConnections`](crate::SubscribeError). Default 16.
    pub max_connections_per_user: usize,
    /// User channels the broadcaster holds, connected or retained; the next new user gets
    /// [`SubscribeError::AtCapacity`](crate::SubscribeError). Default 100 000.
    pub max_channels: usize,
    /// How long a user's channel (with its replay window and epoch) outlives its last
    /// connection, so a reload or reconnect loses nothing. Default 30 s, longer than a browser's
    /// reconnection delay.
    pub retention: Duration,
    /// What a subscription does when it falls behind. Default [`LagPolicy::Recover`].
    pub lag_policy: LagPolicy,
    /// How subscriptions are served over HTTP: heartbeats, retry hint, shutdown.
    pub sse: SseConfig,
    /// Threads: how many a user channel keeps, and the state folded per thread, if any.
    pub threads: ThreadConfig,
}

impl Config {
    /// The defaults, under a channel name.
    pub fn named(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: Cow::Borrowed("events"),
            capacity: 8,
            replay_events: 256,
            replay_bytes: 256 * 1024,
            replay_age: Duration::from_secs(120),
            max_frame_bytes: 64 * 1024,
            max_connections_per_user: 16,
            max_channels: 100_000,
            retention: Duration::from_secs(30),
            lag_policy: LagPolicy::Recover,
            sse: SseConfig::default(),
            threads: ThreadConfig::default(),
        }
    }
}

/// What a heartbeat looks like on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Heartbeat {
    /// `event: heartbeat` with data [`HEARTBEAT_JSON`], as the replaced crate sent. Clients see it
    /// only if they listen for `heartbeat`.
    #[default]
    Event,
    /// A comment line, `: heartbeat`, which clients never see.
    Comment,
    /// No heartbeat. Idle connections may then be cut by proxies, and dead peers are found only
    /// when an event is written.
    Off,
}

/// How subscriptions are served over HTTP.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SseConfig {
    /// The heartbeat's form. Default [`Heartbeat::Event`].
    pub heartbeat: Heartbeat,
    /// Idle time after which a heartbeat is sent. Default [`HEARTBEAT_INTERVAL`] (15 s).
    pub heartbeat_interval: Duration,
    /// The reconnection delay sent as `retry:` when the stream opens; `None` leaves the
    /// client's default (about 3 s in browsers). Default 1 s.
    pub retry: Option<Duration>,
    /// On shutdown, each stream ends with `retry:` set to a random delay up to this, so that
    /// clients do not reconnect all at once; `None` sends no hint. Default 5 s.
    pub shutdown_retry_jitter: Option<Duration>,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat: Heartbeat::Event,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            retry: Some(Duration::from_secs(1)),
            shutdown_retry_jitter: Some(Duration::from_secs(5)),
        }
    }
}

impl SseConfig {
    pub(crate) fn heartbeat_frame(&self) -> Option<Bytes> {
        match self.heartbeat {
            Heartbeat::Event => Some(Bytes::from(format!(
                "event: heartbeat\ndata: {HEARTBEAT_JSON}\n\n"
            ))),
            Heartbeat::Comment => Some(Bytes::from_static(b": heartbeat\n\n")),
            Heartbeat::Off => None,
        }
    }
}
