//! [`Shared`]: what every channel of one broadcaster shares — its config, its metric handles
//! and its counters — so that a channel and its subscriptions reach them without going through
//! the registry.
//!
//! Counters are relaxed atomics: each is exact on its own, and [`Stats`](crate::Stats) is a
//! snapshot of them, not a transaction across them. Gauges move by deltas, never by storing a
//! value read before, so concurrent changes cannot leave one stale.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::time::Instant;

use crate::config::Config;
use crate::metrics::Metrics;

/// What every channel of a broadcaster shares: the config, the metrics and the counters.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) channels: AtomicUsize,
    pub(crate) active_users: AtomicUsize,
    pub(crate) connections: AtomicUsize,
    pub(crate) buffered_bytes: AtomicUsize,
    pub(crate) published: AtomicU64,
    pub(crate) lag_events: AtomicU64,
    pub(crate) events_missed: AtomicU64,
    pub(crate) events_recovered: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) backplane_failures: AtomicU64,
    pub(crate) thread_state_bytes: AtomicUsize,
    pub(crate) threads_evicted: AtomicU64,
    pub(crate) thread_states_unknown: AtomicU64,
    pub(crate) thread_states_trimmed: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: Config, metrics: Metrics) -> Self {
        Self {
            config,
            metrics,
            shutting_down: AtomicBool::new(false),
            channels: AtomicUsize::new(0),
            active_users: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            buffered_bytes: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            lag_events: AtomicU64::new(0),
            events_missed: AtomicU64::new(0),
            events_recovered: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            backplane_failures: AtomicU64::new(0),
            thread_state_bytes: AtomicUsize::new(0),
            threads_evicted: AtomicU64::new(0),
            thread_states_unknown: AtomicU64::new(0),
            thread_states_trimmed: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    // Gauges move by deltas, not by setting a value read before: concurrent changes could
    // otherwise be applied out of order and leave a gauge stale.
    pub(crate) fn buffered_added(&self, bytes: usize) {
        self.buffered_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.metrics.buffered_bytes.increment(bytes as f64);
    }

    /// A thread state grew or shrank from `before` to `after` bytes.
    pub(crate) fn thread_state_resized(&self, before: usize, after: usize) {
        if after >= before {
            let grown = after - before;
            self.thread_state_bytes.fetch_add(grown, Ordering::Relaxed);
            self.metrics.thread_state_bytes.increment(grown as f64);
        } else {
            let shrunk = before - after;
            self.thread_state_bytes.fetch_sub(shrunk, Ordering::Relaxed);
            self.metrics.thread_state_bytes.decrement(shrunk as f64);
        }
    }

    pub(crate) fn buffered_removed(&self, bytes: usize) {
        self.buffered_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.metrics.buffered_bytes.decrement(bytes as f64);
    }

    /// Counts an accepted publish, delivered by this node itself, begun at `started`.
    pub(crate) fn count_published(&self, started: Instant) {
        self.count_handed();
        self.metrics.publish_timed(started);
    }

    /// Counts an accepted publish that the backplane delivers.
    pub(crate) fn count_handed(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.metrics.published();
    }

    /// Counts a thread state made partly unknown (the caller logs why).
    pub(crate) fn count_thread_state_unknown(&self) {
        self.thread_states_unknown.fetch_add(1, Ordering::Relaxed);
        self.metrics.thread_states_unknown.increment(1);
    }

    pub(crate) fn user_became_active(&self) {
        self.active_users.fetch_add(1, Ordering::Relaxed);
        self.metrics.retained_channels.decrement(1.0);
    }

    pub(crate) fn user_became_idle(&self) {
        self.active_users.fetch_sub(1, Ordering::Relaxed);
        self.metrics.retained_channels.increment(1.0);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.increment(1.0);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections.decrement(1.0);
    }
}
