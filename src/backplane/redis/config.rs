//! [`RedisConfig`]: the settings of a [`RedisBackplane`](super::RedisBackplane), and their
//! validation (pure, unit-tested here).

use std::time::Duration;

use crate::backplane::redis::tls;
#[cfg(feature = "redis-tls")]
use crate::backplane::redis::tls::RedisTls;
use crate::error::BackplaneError;

/// The longest duration a setting may have: long enough for any real timeout or time to live,
/// short enough that `now + duration` and `duration * 2` can never overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The settings of a [`RedisBackplane`](super::RedisBackplane). Build it with
/// [`RedisConfig::new`] and change what you need; [`RedisBackplane::new`](super::RedisBackplane::new)
/// checks them ([`RedisConfig::validate`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL, `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS (cargo
    /// feature `redis-tls`; see the field `tls`). Redis 7.0 or later.
    pub url: String,
    /// The prefix of every key and pub/sub channel. Default `"sse-hub"`. Nodes that share a
    /// prefix (and a Redis) behave as one.
    pub prefix: String,
    /// How long a user's history outlives the last publish or subscribe, unless a node serving
    /// the user refreshes it (every third of it). Default 10 minutes; at least 1 s.
    pub history_ttl: Duration,
    /// How long a subscribe waits for the node to listen to the user before it is served
    /// degraded. Default 2 s.
    pub subscribe_timeout: Duration,
    /// The time limit of one connection attempt and of one command. Default 2 s.
    pub command_timeout: Duration,
    /// How long a batch of publishes whose outcome is unknown (a timeout, or a connection lost
    /// after the write) is retried before the publishes are answered
    /// [`BackplaneError::Unknown`]. Retries are idempotent: an event is stored and delivered
    /// once however often it is sent. Default 10 s.
    pub publish_retry: Duration,
    /// The first reconnection delay; it doubles on each failed attempt (a connection lost
    /// before it subscribed to every feed counts as one), and a connection that served resets
    /// it. Default 100 ms; more than zero.
    pub reconnect_min: Duration,
    /// The longest reconnection delay. Default 5 s; at least `reconnect_min`.
    pub reconnect_max: Duration,
    /// Publishes that may wait for Redis on one node; beyond, a publish is refused at once with
    /// [`BackplaneError::Overloaded`] and delivered nowhere. At least 2: an
    /// [`EventRouter`](crate::EventRouter) queues an AG-UI or A2A event for two channels at
    /// once (all or none). Default 4096.
    pub publish_queue: usize,
    /// How often both connections (pub/sub and command) are checked (a `PING`; a read of the
    /// generation marker on the command connection), answered within
    /// [`command_timeout`](Self::command_timeout) or the node reconnects: a connection that
    /// died silently (no RST) is replaced within `ping_interval + command_timeout`, and a
    /// loss of Redis' data that cut no connection and that no publish or read showed first is
    /// found within `ping_interval` (the check sets the marker again, and the node's feed
    /// announces it: see the [module docs](super#faults)).
    /// Default 5 s; at least 10 ms.
    pub ping_interval: Duration,
    /// The certificates of a `rediss://` connection: by default none, and the server's
    /// certificate must chain to the default roots. See [`RedisTls`].
    #[cfg(feature = "redis-tls")]
    pub tls: RedisTls,
}

impl RedisConfig {
    /// The defaults, for the Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "sse-hub".to_owned(),
            history_ttl: Duration::from_secs(600),
            subscribe_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            publish_retry: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            publish_queue: 4096,
            ping_interval: Duration::from_secs(5),
            #[cfg(feature = "redis-tls")]
            tls: RedisTls::default(),
        }
    }

    /// The redis client for these settings (checked before).
    pub(crate) fn client(&self) -> Result<redis::Client, BackplaneError> {
        #[cfg(feature = "redis-tls")]
        return tls::client(&self.url, &self.tls);
        #[cfg(not(feature = "redis-tls"))]
        return tls::client(&self.url);
    }

    /// Checks that the settings can work: every duration within a week (so that no deadline
    /// overflows), the timeouts and intervals above zero (a zero reconnection delay would spin),
    /// a ping interval of at least 10 ms, `reconnect_min <= reconnect_max`, a history time to
    /// live of at least a second (shorter, every publish would outlive its own history), a
    /// queue of at least two publishes, a prefix without `:` or whitespace, and for TLS:
    ///
    /// * a `rediss://` URL is refused without the cargo feature `redis-tls` (`url`, naming the
    ///   feature), and with a `#` fragment (`#insecure`, which checks no certificate, is not
    ///   supported);
    /// * `tls` (feature `redis-tls`) must be empty for a `redis://` URL, which would not use it;
    /// * its PEM must parse: at least one valid CA certificate in `tls.root_certs`, a client
    ///   certificate and a private key that match, given both or neither.
    pub fn validate(&self) -> Result<(), BackplaneError> {
        let invalid = |setting, problem| Err(BackplaneError::InvalidConfig { setting, problem });
        let durations = [
            ("history_ttl", self.history_ttl),
            ("subscribe_timeout", self.subscribe_timeout),
            ("command_timeout", self.command_timeout),
            ("publish_retry", self.publish_retry),
            ("reconnect_min", self.reconnect_min),
            ("reconnect_max", self.reconnect_max),
            ("ping_interval", self.ping_interval),
        ];
        for (setting, duration) in durations {
            if duration > MAX_DURATION {
                return invalid(setting, "longer than a week");
            }
            if duration.is_zero() {
                return invalid(setting, "zero");
            }
        }
        if self.reconnect_min > self.reconnect_max {
            return invalid("reconnect_min", "longer than reconnect_max");
        }
        if self.history_ttl < Duration::from_secs(1) {
            return invalid("history_ttl", "shorter than a second");
        }
        if self.ping_interval < Duration::from_millis(10) {
            return invalid("ping_interval", "shorter than 10 ms");
        }
        if self.publish_queue < 2 {
            return invalid("publish_queue", "under 2");
        }
        if self.prefix.is_empty()
            || self
                .prefix
                .bytes()
                .any(|b| b == b':' || b.is_ascii_whitespace())
        {
            return invalid("prefix", "empty, or holds ':' or whitespace");
        }
        #[cfg(feature = "redis-tls")]
        return tls::check(&self.url, &self.tls);
        #[cfg(not(feature = "redis-tls"))]
        return tls::check(&self.url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(config: &RedisConfig) -> Option<&'static str> {
        match config.validate() {
            Ok(()) => None,
            Err(BackplaneError::InvalidConfig { setting, .. }) => Some(setting),
            Err(other) => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(problem(&RedisConfig::new("redis://x")), None);
    }

    #[test]
    fn settings_that_panic_or_spin_are_refused() {
        let base = RedisConfig::new("redis://x");
        type Change = fn(&mut RedisConfig);
        let cases: [(&str, Change); 9] = [
            ("command_timeout", |c| c.command_timeout = Duration::MAX),
            ("subscribe_timeout", |c| c.subscribe_timeout = Duration::MAX),
            ("reconnect_max", |c| c.reconnect_max = Duration::MAX),
            ("reconnect_min", |c| c.reconnect_min = Duration::ZERO),
            ("history_ttl", |c| c.history_ttl = Duration::ZERO),
            ("history_ttl", |c| {
                c.history_ttl = Duration::from_millis(999)
            }),
            ("reconnect_min", |c| {
                c.reconnect_min = Duration::from_secs(6)
            }),
            ("publish_queue", |c| c.publish_queue = 0),
            ("prefix", |c| c.prefix = "a:b".into()),
        ];
        for (setting, change) in cases {
            let mut config = base.clone();
            change(&mut config);
            assert_eq!(problem(&config), Some(setting), "{config:?}");
        }
    }

    #[test]
    fn the_longest_durations_cannot_overflow_a_deadline_or_a_backoff() {
        let now = tokio::time::Instant::now();
        assert!(now.checked_add(MAX_DURATION * 2).is_some());
    }
}
