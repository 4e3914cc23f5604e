//! Metrics, through the [`metrics`] facade: the application installs the exporter it wants.
//!
//! Every metric but [`BACKPLANE_CONNECTED`] carries the label `channel` (the broadcaster's
//! [`Config::name`](crate::Config)); none carries the user, whose cardinality is unbounded. Handles are registered when a
//! broadcaster is created, so install the recorder first. The README lists every metric.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use tokio::time::Instant;

use crate::reason::ResetReason;

/// Events published. With a backplane, counted on the node that published them once the
/// backplane took them, not on the nodes its feed delivers them to.
pub const EVENTS_PUBLISHED: &str = "sse_hub_events_published_total";
/// Published events yielded to connections, with an id or without (added in batches of 256
/// per subscription, and when it is dropped). Not the control events (`lagged`, `reset`) nor a
/// thread stream's opening, which are no published event. Counted when the subscription
/// yields them; through an [`SseBody`](crate::sse::SseBody), when the body hands them to the
/// HTTP server in a chunk: a frame the body held back for its next chunk (it did not fit in
/// [`MAX_CHUNK`](crate::sse::MAX_CHUNK)) is not counted if the client goes away first. Frames
/// the server took but had not written when the client went away, and bytes the kernel had not
/// sent, are counted: at most one chunk per closed connection, plus its socket's buffers.
pub const FRAMES_DELIVERED: &str = "sse_hub_frames_delivered_total";
/// Times a subscription fell behind the ring.
pub const LAG_EVENTS: &str = "sse_hub_lag_events_total";
/// Events lost to lagging subscriptions and signalled with `lagged` (a thread stream opened
/// from its state ends instead). For a thread subscription: its own events that the window
/// still held and its policy skipped (`Notify`, `Disconnect`), plus every event the window
/// dropped from its gap, other threads' included (the window no longer knows whose they
/// were): an upper bound on its own losses, exact when the window dropped none of the gap.
pub const EVENTS_MISSED: &str = "sse_hub_events_missed_total";
/// Events lagging subscriptions recovered from the replay window.
pub const EVENTS_RECOVERED: &str = "sse_hub_events_recovered_total";
/// Resumes that started with `reset`, by `reason`.
pub const RESETS: &str = "sse_hub_resets_total";
/// Subscribes refused, by `reason`: `too_many_connections`, `at_capacity`, `shutting_down`.
pub const SUBSCRIBES_REJECTED: &str = "sse_hub_subscribes_rejected_total";
/// Events whose encoding failed (nothing was sent).
pub const ENCODE_FAILURES: &str = "sse_hub_encode_failures_total";
/// Open connections (gauge).
pub const CONNECTIONS: &str = "sse_hub_connections";
/// User channels held, connected or retained (gauge).
pub const USER_CHANNELS: &str = "sse_hub_user_channels";
/// User channels without a connection, kept for the retention (gauge).
pub const RETAINED_CHANNELS: &str = "sse_hub_retained_channels";
/// Bytes held by replay windows (gauge).
pub const BUFFERED_BYTES: &str = "sse_hub_buffered_bytes";
/// Time to publish one event to all of a user's connections, in seconds (histogram). With a
/// backplane, each node times its own delivery of every event its feed brings.
pub const PUBLISH_SECONDS: &str = "sse_hub_publish_seconds";
/// Bytes held by per-thread states, such as the AG-UI run state (gauge).
pub const THREAD_STATE_BYTES: &str = "sse_hub_thread_state_bytes";
/// Thread states forgotten because a user channel held its maximum of threads.
pub const THREADS_EVICTED: &str = "sse_hub_threads_evicted_total";
/// Events a thread state could not apply, leaving it partly unknown until replaced (a
/// `STATE_DELTA` that does not apply, say, or an AG-UI event of a run whose `RUN_STARTED` the
/// thread no longer holds); with a backplane, also thread states a node rebuilt from less than
/// the whole thread (see [`Stats::thread_states_unknown`](crate::Stats::thread_states_unknown)).
pub const THREAD_STATES_UNKNOWN: &str = "sse_hub_thread_states_unknown_total";
/// Events after which a thread state dropped its oldest parts to stay within its byte cap.
pub const THREAD_STATES_TRIMMED: &str = "sse_hub_thread_states_trimmed_total";
/// Events that could not go through the backplane: delivered to the publishing node's
/// connections only, without an id; and the publishes abandoned when the backplane was dropped
/// unclosed: delivered nowhere if still queued, but one that Redis had already run, its answer
/// still on the way, was delivered by every node but this one (the node cannot tell, so a
/// drop's count is an upper bound on its losses). Registered only for broadcasters with a
/// backplane.
pub const BACKPLANE_FAILURES: &str = "sse_hub_backplane_failures_total";
/// 1 while the Redis backplane is connected, 0 otherwise (gauge, without labels: one backplane
/// serves every channel of a node).
pub const BACKPLANE_CONNECTED: &str = "sse_hub_backplane_connected";

/// The seconds since an instant, read when a histogram converts it.
struct Elapsed(Instant);

impl metrics::IntoF64 for Elapsed {
    fn into_f64(self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

pub(crate) struct Metrics {
    published: Counter,
    delivered: Counter,
    lag_events: Counter,
    missed: Counter,
    recovered: Counter,
    resets: [Counter; 4],
    rejected: [Counter; 3],
    encode_failures: Counter,
    pub(crate) connections: Gauge,
    pub(crate) channels: Gauge,
    pub(crate) retained_channels: Gauge,
    pub(crate) buffered_bytes: Gauge,
    pub(crate) thread_state_bytes: Gauge,
    pub(crate) threads_evicted: Counter,
    pub(crate) thread_states_unknown: Counter,
    pub(crate) thread_states_trimmed: Counter,
    publish_seconds: Histogram,
    /// Registered only for a broadcaster with a backplane.
    backplane_failures: Option<Counter>,
}

const REJECT_REASONS: [&str; 3] = ["too_many_connections", "at_capacity", "shutting_down"];
const RESET_REASONS: [ResetReason; 4] = [
    ResetReason::Malformed,
    ResetReason::Stale,
    ResetReason::Expired,
    ResetReason::Unknown,
];

impl Metrics {
    pub(crate) fn new(channel: &str) -> Self {
        let channel = channel.to_owned();
        let label = || metrics::Label::new("channel", channel.clone());
        Self {
            published: counter!(EVENTS_PUBLISHED, vec![label()]),
            delivered: counter!(FRAMES_DELIVERED, vec![label()]),
            lag_events: counter!(LAG_EVENTS, vec![label()]),
            missed: counter!(EVENTS_MISSED, vec![label()]),
            recovered: counter!(EVENTS_RECOVERED, vec![label()]),
            resets: RESET_REASONS.map(|r| {
                counter!(
                    RESETS,
                    vec![label(), metrics::Label::new("reason", r.as_str())]
                )
            }),
            rejected: REJECT_REASONS.map(|r| {
                counter!(
                    SUBSCRIBES_REJECTED,
                    vec![label(), metrics::Label::new("reason", r)]
                )
            }),
            encode_failures: counter!(ENCODE_FAILURES, vec![label()]),
            connections: gauge!(CONNECTIONS, vec![label()]),
            channels: gauge!(USER_CHANNELS, vec![label()]),
            retained_channels: gauge!(RETAINED_CHANNELS, vec![label()]),
            buffered_bytes: gauge!(BUFFERED_BYTES, vec![label()]),
            thread_state_bytes: gauge!(THREAD_STATE_BYTES, vec![label()]),
            threads_evicted: counter!(THREADS_EVICTED, vec![label()]),
            thread_states_unknown: counter!(THREAD_STATES_UNKNOWN, vec![label()]),
            thread_states_trimmed: counter!(THREAD_STATES_TRIMMED, vec![label()]),
            publish_seconds: histogram!(PUBLISH_SECONDS, vec![label()]),
            backplane_failures: None,
        }
    }

    pub(crate) fn published(&self) {
        self.published.increment(1);
    }

    /// Times a delivery to a user's connections begun at `started`. The clock is read only if
    /// a recorder gave the histogram a handle: a no-op histogram never converts its value.
    pub(crate) fn publish_timed(&self, started: Instant) {
        self.publish_seconds.record(Elapsed(started));
    }

    pub(crate) fn delivered(&self, frames: u64) {
        self.delivered.increment(frames);
    }

    pub(crate) fn lagged(&self, missed: u64) {
        self.lag_events.increment(1);
        self.missed.increment(missed);
    }

    pub(crate) fn recovered(&self, events: u64) {
        self.recovered.increment(events);
    }

    pub(crate) fn reset(&self, reason: ResetReason) {
        let at = RESET_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.resets[at].increment(1);
    }

    pub(crate) fn rejected(&self, reason: &str) {
        if let Some(at) = REJECT_REASONS.iter().position(|r| *r == reason) {
            self.rejected[at].increment(1);
        }
    }

    pub(crate) fn encode_failed(&self) {
        self.encode_failures.increment(1);
    }

    /// Registers the backplane's metric too.
    pub(crate) fn with_backplane(mut self, channel: &str) -> Self {
        let label = metrics::Label::new("channel", channel.to_owned());
        self.backplane_failures = Some(counter!(BACKPLANE_FAILURES, vec![label]));
        self
    }

    pub(crate) fn backplane_failed(&self) {
        if let Some(counter) = &self.backplane_failures {
            counter.increment(1);
        }
    }
}
