//! [`BackplaneHealth`]: what a [`RedisBackplane`] tells of its link and its counters.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::RedisBackplane;
use super::state::Link;

/// The state of a [`RedisBackplane`], from [`RedisBackplane::health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackplaneHealth {
    /// Both connections are up, and every user the node served when they were made is
    /// subscribed to, or was [`refused`](Self::refused). Users who connected since are
    /// subscribed to while the link serves: until Redis confirms it,
    /// [`listening`](Self::listening) is below [`serving`](Self::serving).
    pub connected: bool,
    /// Users (per channel) the node serves, whose live events it should receive.
    pub serving: usize,
    /// Of those, the ones Redis confirmed the node listens to.
    pub listening: usize,
    /// Of those, the ones whose `SUBSCRIBE` Redis refused (an ACL that does not grant the
    /// node's Redis user their channel, say; the reason is in
    /// [`last_error`](Self::last_error)). The link stays up for the others. Their streams are
    /// served degraded (see the [backplane docs](crate::backplane#faults): a client that
    /// came without a last event id is primed with `0-0`, one with an id gets no priming id,
    /// and no event with an id comes), and the node asks again with backoff
    /// ([`RedisConfig::reconnect_min`](super::RedisConfig::reconnect_min) doubling up to
    /// [`reconnect_max`](super::RedisConfig::reconnect_max)), at its link checks; once Redis
    /// accepts, those streams end, and their clients resume from the history.
    pub refused: usize,
    /// Connections established after a failure.
    pub reconnects: u64,
    /// Publishes that surely did not go through Redis (delivered locally only, without an id).
    pub publish_failures: u64,
    /// Publishes whose outcome stayed unknown
    /// ([`BackplaneError::Unknown`](crate::backplane::BackplaneError::Unknown)).
    pub publish_unknown: u64,
    /// Batches of publishes sent again because their outcome was unknown.
    pub publish_retries: u64,
    /// Messages received from Redis.
    pub received: u64,
    /// Feed messages dropped because their event was dispatched already.
    pub duplicates_dropped: u64,
    /// Times the node found that Redis had lost its data (a restart without persistence, a
    /// flush), at a reconnect or while connected: its generation marker changed (see
    /// [Faults](super#faults)).
    pub data_losses: u64,
    /// The Redis server's version, once connected.
    pub version: Option<String>,
    /// The server's `maxmemory-policy`, read at every connection. Anything but `noeviction`
    /// lets Redis evict the backplane's keys under memory pressure, which the node cannot
    /// always tell (see [Eviction](super#eviction)); logged at `warn` at every connection.
    pub eviction_policy: Option<String>,
    /// The last connection error, if any: an unsupported server version, a TLS handshake
    /// refused (`invalid peer certificate: UnknownIssuer`, say) and a `SUBSCRIBE` to a user's
    /// feed refused (naming the feed: see [`refused`](Self::refused)) included. Kept once the
    /// link is up again, as the last one seen: [`connected`](Self::connected) says whether it
    /// is.
    pub last_error: Option<String>,
}

impl RedisBackplane {
    /// The backplane's state and counters.
    pub fn health(&self) -> BackplaneHealth {
        let shared = &self.shared;
        let state = shared.lock();
        BackplaneHealth {
            connected: shared.link() == Link::Connected,
            serving: state.wanted.len(),
            listening: state.wanted.values().filter(|w| w.confirmed).count(),
            refused: state.refused.len(),
            reconnects: shared.reconnects.load(Ordering::Relaxed),
            publish_failures: shared.publish_failures.load(Ordering::Relaxed),
            publish_unknown: shared.publish_unknown.load(Ordering::Relaxed),
            publish_retries: shared.publish_retries.load(Ordering::Relaxed),
            received: shared.received.load(Ordering::Relaxed),
            duplicates_dropped: shared.duplicates_dropped.load(Ordering::Relaxed),
            data_losses: shared.data_losses.load(Ordering::Relaxed),
            version: state.version.clone(),
            eviction_policy: state.eviction_policy.clone(),
            last_error: state.last_error.clone(),
        }
    }
}
