//! [`RedisBackplane`]: the shared history in Redis streams, the live fan-out through Redis
//! pub/sub.
//!
//! # Keys
//!
//! For the channel name `c` (the broadcaster's [`Config::name`](crate::Config::name)) and the
//! user `u`, with the prefix `p` ([`RedisConfig::prefix`]):
//!
//! | key | what |
//! |---|---|
//! | `p:c:u` | the user's history: a stream whose entry ids are the event ids, each entry holding the frame's `event:`/`data:` lines in its field `f` |
//! | `p:live:c:u` | the pub/sub channel that carries the finished frames, `id:` line included |
//!
//! User ids are only key material: they are never parsed back from a key (the node maps the
//! pub/sub channels it listens to back to its users), so any string is a valid user id.
//! Channel names should not contain `:`, which would make two (channel, user) pairs share keys.
//!
//! # Publishing
//!
//! A node's publishes go through one bounded queue, in call order, to one task that sends them
//! to Redis as pipelined `EVALSHA`s of one Lua script. The script, atomically:
//!
//! 1. if the user has no history and no node listens to the user (`PUBSUB NUMSUB`), stores
//!    nothing and returns no id, as a single node does for a user without a channel: nobody
//!    can receive or resume it. While a history exists, events are stored even if no node
//!    listens at that moment (one that lost its pub/sub connection briefly, say), so that
//!    clients resume them;
//! 2. `XADD`s the frame's head and trims the oldest entries beyond the history length
//!    ([`Config::replay_events`](crate::Config::replay_events)), in batches, with `XDEL`, so
//!    that the stream's `max-deleted-entry-id` says exactly what was lost (Redis 7.0's
//!    `MAXLEN` trimming does not advance it);
//! 3. sets the history's time to live ([`RedisConfig::history_ttl`]);
//! 4. `PUBLISH`es the finished frame, `head` + `id: <id>` + blank line, and returns the id and
//!    the number of nodes that received it.
//!
//! A history is created with a deleted marker entry, so that its `max-deleted-entry-id` is its
//! creation: an id from before (an earlier history of the user, which expired, or a Redis that
//! restarted without persistence) resumes as `expired`.
//!
//! # Listening
//!
//! One task per node owns a pub/sub connection and a multiplexed command connection. It
//! `SUBSCRIBE`s to a user's live channel when a broadcaster of the node creates a channel for
//! the user, `UNSUBSCRIBE`s when the channel is removed after its retention, and dispatches each
//! message to the broadcasters by channel name. A subscribe waits until the node's `SUBSCRIBE`
//! is confirmed ([`RedisConfig::subscribe_timeout`] at most), then reads the history in one
//! script (`XINFO STREAM` for the last and the deleted ids, `XRANGE` for the events).
//!
//! # Faults
//!
//! When a connection fails, the task reconnects with capped exponential backoff
//! ([`RedisConfig::reconnect_min`] to [`RedisConfig::reconnect_max`], with jitter),
//! `SUBSCRIBE`s again to every user the node serves, then ends the node's local streams, since
//! it cannot know what it missed meanwhile: clients reconnect and resume from the history.
//! While it is down, publishes fail at once and are delivered locally without an id, and
//! subscribes are degraded (see the [module docs](super#faults)). Nothing grows while Redis is
//! down: the publish queue is bounded ([`RedisConfig::publish_queue`]), and the set of users to
//! listen to is the node's own channels. Histories of users every node left expire after
//! [`RedisConfig::history_ttl`]; the nodes refresh the time to live of the users they serve.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, Script, Value};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::StreamExt;

use super::{Backplane, BackplaneError, BoxFuture, History, LocalChannels};
use crate::event_id::EventId;
use crate::stats::{Delivery, Published};
use crate::user_id::UserId;

/// The publish script; see the [module docs](self#publishing).
const PUBLISH_LUA: &str = r"
local nodes = redis.call('PUBSUB', 'NUMSUB', ARGV[1])[2]
if redis.call('EXISTS', KEYS[1]) == 0 then
  if nodes == 0 then return false end
  local marker = redis.call('XADD', KEYS[1], '*', 'f', '')
  redis.call('XDEL', KEYS[1], marker)
end
local id = redis.call('XADD', KEYS[1], '*', 'f', ARGV[2])
local keep = tonumber(ARGV[3])
local len = redis.call('XLEN', KEYS[1])
if len > keep + tonumber(ARGV[4]) then
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - keep)
  local ids = {}
  for i, entry in ipairs(old) do ids[i] = entry[1] end
  redis.call('XDEL', KEYS[1], unpack(ids))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. 'id: ' .. id .. '\n\n')
return {id, nodes}
";

/// The catch-up script: creates the history if needed (with its deleted marker), refreshes its
/// time to live, and returns `{last-generated-id, max-deleted-entry-id, events after ARGV[2]}`.
const HISTORY_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local marker = redis.call('XADD', KEYS[1], '*', 'f', '')
  redis.call('XDEL', KEYS[1], marker)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1]
  elseif info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
local events = {}
if ARGV[2] ~= '' then
  events = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+')
end
return {last, deleted, events}
";

/// Channels per `SUBSCRIBE` or `UNSUBSCRIBE` command, and publishes per pipeline.
const BATCH: usize = 256;

/// The settings of a [`RedisBackplane`]. Build it with [`RedisConfig::new`] and change what
/// you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL, `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// The prefix of every key and pub/sub channel. Default `"sse-hub"`. Nodes that share a
    /// prefix (and a Redis) behave as one.
    pub prefix: String,
    /// How long a user's history outlives the last publish or subscribe, unless a node serving
    /// the user refreshes it (every third of it). Default 10 minutes.
    pub history_ttl: Duration,
    /// How long a subscribe waits for the node to listen to the user before it is served
    /// degraded. Default 2 s.
    pub subscribe_timeout: Duration,
    /// The time limit of one connection attempt and of one command. Default 2 s.
    pub command_timeout: Duration,
    /// The first reconnection delay; it doubles on each failed attempt. Default 100 ms.
    pub reconnect_min: Duration,
    /// The longest reconnection delay. Default 5 s.
    pub reconnect_max: Duration,
    /// Publishes that may wait for Redis on one node; beyond, a publish fails at once with
    /// [`BackplaneError::Overloaded`] (and is delivered locally). Default 4096.
    pub publish_queue: usize,
    /// How often an idle pub/sub connection is checked with a `PING`. Default 5 s.
    pub ping_interval: Duration,
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
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            publish_queue: 4096,
            ping_interval: Duration::from_secs(5),
        }
    }
}

/// The state of a [`RedisBackplane`], from [`RedisBackplane::health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackplaneHealth {
    /// Both connections are up and every user the node serves is subscribed to.
    pub connected: bool,
    /// Users (per channel) the node serves, whose live events it should receive.
    pub serving: usize,
    /// Of those, the ones Redis confirmed the node listens to.
    pub listening: usize,
    /// Connections established after a failure.
    pub reconnects: u64,
    /// Publishes that did not go through Redis (delivered locally only).
    pub publish_failures: u64,
    /// Live frames received from Redis.
    pub received: u64,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// The Redis [`Backplane`]: see the [module docs](self) and the [backplane model](super).
///
/// Cheap to clone: clones share the connections. Create one per node (per process) and share
/// it, as an `Arc<dyn Backplane>`, between the broadcasters of the node.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sse_hub::backplane::{RedisBackplane, RedisConfig};
/// use sse_hub::{Config, EventRouter};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backplane = RedisBackplane::new(RedisConfig::new("redis://127.0.0.1:6379"))?;
/// backplane.wait_connected(Duration::from_secs(5)).await;
/// let router = EventRouter::with_backplane(Config::default(), Arc::new(backplane.clone()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackplane {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("prefix", &self.shared.config.prefix)
            .field("health", &self.health())
            .finish()
    }
}

/// The backplane's tasks, aborted when the last clone of the backplane goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

struct Shared {
    config: RedisConfig,
    client: Client,
    publish_script: Script,
    history_script: Script,
    state: Mutex<State>,
    /// Wakes the connection task: what to listen to changed, or something must be kicked.
    wake: Notify,
    /// Wakes subscribes waiting for a confirmation, and `wait_connected`.
    status: Notify,
    command: Mutex<Option<MultiplexedConnection>>,
    queue: mpsc::Sender<Job>,
    connected: AtomicBool,
    reconnects: AtomicU64,
    publish_failures: AtomicU64,
    received: AtomicU64,
    connected_gauge: metrics::Gauge,
}

struct State {
    /// The live channels the node's broadcasters want, by pub/sub channel name.
    wanted: HashMap<Arc<str>, Wanted>,
    /// The live channels Redis confirmed on the current pub/sub connection.
    subscribed: HashSet<Arc<str>>,
    /// Live channels to (un)subscribe: whether they are wanted changed since the last pass.
    dirty: HashSet<Arc<str>>,
    /// Live channels whose local streams must end once the backplane is back: a subscribe on
    /// them was served degraded.
    to_kick: HashSet<Arc<str>>,
    /// The broadcasters, by channel name.
    sinks: HashMap<Arc<str>, Arc<[LocalChannels]>>,
    link: Link,
    last_error: Option<String>,
    /// A command failed with a broken connection: reconnect.
    command_broken: bool,
}

struct Wanted {
    /// Local channels (one per broadcaster of that name) that want it.
    count: usize,
    channel: Arc<str>,
    user: UserId,
    stream: Arc<str>,
    /// Redis confirmed the `SUBSCRIBE` on the current connection.
    confirmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Connecting or reconnecting; no attempt has failed yet.
    Connecting,
    Connected,
    /// The last attempt failed: subscribes do not wait.
    Down,
}

/// A publish waiting for Redis.
struct Job {
    channels: LocalChannels,
    user: UserId,
    head: Bytes,
    stream: String,
    live: String,
    reply: oneshot::Sender<Result<Published, BackplaneError>>,
}

fn keys(prefix: &str, channel: &str, user: &UserId) -> (String, String) {
    (
        format!("{prefix}:{channel}:{user}"),
        format!("{prefix}:live:{channel}:{user}"),
    )
}

fn classify(error: &RedisError) -> BackplaneError {
    if error.is_timeout() {
        BackplaneError::Timeout
    } else if error.is_connection_dropped() || error.is_io_error() || error.is_unrecoverable_error()
    {
        BackplaneError::Disconnected
    } else {
        BackplaneError::Failed(error.to_string())
    }
}

impl RedisBackplane {
    /// A backplane for the Redis at [`RedisConfig::url`]. Returns at once: it connects (and
    /// reconnects) in the background, on the current tokio runtime, which must be running.
    /// See [`wait_connected`](Self::wait_connected).
    pub fn new(config: RedisConfig) -> Result<Self, BackplaneError> {
        let client =
            Client::open(config.url.as_str()).map_err(|e| BackplaneError::Failed(e.to_string()))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BackplaneError::Failed("the Redis backplane needs a running tokio runtime".into())
        })?;
        let (queue, jobs) = mpsc::channel(config.publish_queue.max(1));
        let shared = Arc::new(Shared {
            config,
            client,
            publish_script: Script::new(PUBLISH_LUA),
            history_script: Script::new(HISTORY_LUA),
            state: Mutex::new(State {
                wanted: HashMap::new(),
                subscribed: HashSet::new(),
                dirty: HashSet::new(),
                to_kick: HashSet::new(),
                sinks: HashMap::new(),
                link: Link::Connecting,
                last_error: None,
                command_broken: false,
            }),
            wake: Notify::new(),
            status: Notify::new(),
            command: Mutex::new(None),
            queue,
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            received: AtomicU64::new(0),
            connected_gauge: metrics::gauge!(crate::metrics::BACKPLANE_CONNECTED),
        });
        shared.connected_gauge.set(0.0);
        let tasks = vec![
            runtime.spawn(run_connection(shared.clone())),
            runtime.spawn(run_publisher(shared.clone(), jobs)),
        ];
        Ok(Self {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    /// Whether the backplane is connected now: both connections up, and every user the node
    /// serves subscribed to.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Waits until the backplane is connected, for `within` at most; returns whether it is.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.shared.status.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_connected() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_connected();
            }
        }
    }

    /// The backplane's state and counters.
    pub fn health(&self) -> BackplaneHealth {
        let shared = &self.shared;
        let state = shared.lock();
        BackplaneHealth {
            connected: shared.connected.load(Ordering::Acquire),
            serving: state.wanted.len(),
            listening: state.wanted.values().filter(|w| w.confirmed).count(),
            reconnects: shared.reconnects.load(Ordering::Relaxed),
            publish_failures: shared.publish_failures.load(Ordering::Relaxed),
            received: shared.received.load(Ordering::Relaxed),
            last_error: state.last_error.clone(),
        }
    }
}

impl Backplane for RedisBackplane {
    fn attach(&self, channels: LocalChannels) {
        let mut state = self.shared.lock();
        let name: Arc<str> = channels.name().into();
        let mut sinks: Vec<LocalChannels> = state
            .sinks
            .get(&name)
            .map(|sinks| sinks.iter().filter(|s| s.is_alive()).cloned().collect())
            .unwrap_or_default();
        sinks.push(channels);
        state.sinks.insert(name, sinks.into());
    }

    fn channel_created(&self, channel: &str, user: &UserId) {
        let (stream, live) = keys(&self.shared.config.prefix, channel, user);
        let mut state = self.shared.lock();
        if let Some(wanted) = state.wanted.get_mut(live.as_str()) {
            wanted.count += 1;
            return;
        }
        let live: Arc<str> = live.into();
        let confirmed = state.subscribed.contains(&live);
        state.wanted.insert(
            live.clone(),
            Wanted {
                count: 1,
                channel: channel.into(),
                user: user.clone(),
                stream: stream.into(),
                confirmed,
            },
        );
        state.dirty.insert(live);
        drop(state);
        self.shared.wake.notify_one();
    }

    fn channel_removed(&self, channel: &str, user: &UserId) {
        let (_, live) = keys(&self.shared.config.prefix, channel, user);
        let mut state = self.shared.lock();
        let Some(wanted) = state.wanted.get_mut(live.as_str()) else {
            return;
        };
        wanted.count -= 1;
        if wanted.count > 0 {
            return;
        }
        if let Some((live, _)) = state.wanted.remove_entry(live.as_str()) {
            state.to_kick.remove(&live);
            state.dirty.insert(live);
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    fn publish(
        &self,
        channels: &LocalChannels,
        user: &UserId,
        head: Bytes,
    ) -> BoxFuture<'static, Result<Published, BackplaneError>> {
        let (stream, live) = keys(&self.shared.config.prefix, channels.name(), user);
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            channels: channels.clone(),
            user: user.clone(),
            head,
            stream,
            live,
            reply,
        };
        match self.shared.queue.try_send(job) {
            Ok(()) => {
                Box::pin(async move { outcome.await.unwrap_or(Err(BackplaneError::Disconnected)) })
            }
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                self.shared.failed(&job);
                Box::pin(std::future::ready(Err(BackplaneError::Overloaded)))
            }
        }
    }

    fn catch_up(
        &self,
        channel: &str,
        user: &UserId,
        after: Option<EventId>,
    ) -> BoxFuture<'static, Result<History, BackplaneError>> {
        let shared = self.shared.clone();
        let (stream, live) = keys(&shared.config.prefix, channel, user);
        Box::pin(async move {
            let history = shared.history(&stream, &live, after).await;
            if let Err(error) = &history {
                tracing::debug!(%live, %error, "catch-up failed: degraded subscription");
                shared.kick_later(&live);
            }
            history
        })
    }

    fn is_connected(&self) -> bool {
        RedisBackplane::is_connected(self)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn command(&self) -> Option<MultiplexedConnection> {
        self.command
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_command(&self, command: Option<MultiplexedConnection>) {
        *self.command.lock().unwrap_or_else(|p| p.into_inner()) = command;
    }

    /// A publish did not go through: delivered locally without an id, and counted.
    fn failed(&self, job: &Job) {
        self.publish_failures.fetch_add(1, Ordering::Relaxed);
        job.channels.deliver_local_only(&job.user, &job.head);
    }

    fn command_failed(&self, error: &BackplaneError) {
        if *error == BackplaneError::Disconnected {
            self.lock().command_broken = true;
            self.wake.notify_one();
        }
    }

    /// Waits until the node listens to `live`, then reads the history after `after`.
    async fn history(
        &self,
        stream: &str,
        live: &str,
        after: Option<EventId>,
    ) -> Result<History, BackplaneError> {
        self.wait_subscribed(live).await?;
        let mut command = self.command().ok_or(BackplaneError::Disconnected)?;
        // The one id after which nothing can come; `(` would be an error for it.
        let after = after
            .filter(|id| *id != EventId::new(u64::MAX, u64::MAX))
            .map(|id| id.to_string())
            .unwrap_or_default();
        let value: Value = self
            .history_script
            .key(stream)
            .arg(self.config.history_ttl.as_millis() as u64)
            .arg(after)
            .invoke_async(&mut command)
            .await
            .map_err(|e| {
                let error = classify(&e);
                self.command_failed(&error);
                error
            })?;
        parse_history(value)
            .ok_or_else(|| BackplaneError::Failed("unexpected reply to the history script".into()))
    }

    async fn wait_subscribed(&self, live: &str) -> Result<(), BackplaneError> {
        let deadline = Instant::now() + self.config.subscribe_timeout;
        loop {
            let notified = self.status.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                match state.wanted.get(live) {
                    Some(wanted) if wanted.confirmed => return Ok(()),
                    Some(_) => {}
                    // The subscription holds the local channel, so this does not happen.
                    None => return Err(BackplaneError::Failed("no local channel".into())),
                }
                if state.link == Link::Down {
                    return Err(BackplaneError::Disconnected);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(BackplaneError::Timeout);
            }
        }
    }

    /// Ends the local streams of `live` as soon as the backplane is connected.
    fn kick_later(&self, live: &str) {
        let mut state = self.lock();
        if let Some((live, _)) = state.wanted.get_key_value(live) {
            let live = live.clone();
            state.to_kick.insert(live);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Ends the local streams of the given live channels, or of every one.
    fn kick(&self, which: Option<Vec<Arc<str>>>) {
        let targets: Vec<(Arc<[LocalChannels]>, UserId)> = {
            let state = self.lock();
            let target = |wanted: &Wanted| {
                state
                    .sinks
                    .get(&wanted.channel)
                    .map(|sinks| (sinks.clone(), wanted.user.clone()))
            };
            match which {
                None => state.wanted.values().filter_map(target).collect(),
                Some(keys) => keys
                    .iter()
                    .filter_map(|key| state.wanted.get(key))
                    .filter_map(target)
                    .collect(),
            }
        };
        let mut kicked = 0;
        for (sinks, user) in targets {
            for sink in sinks.iter() {
                kicked += sink.kick(&user);
            }
        }
        if kicked > 0 {
            tracing::info!(
                streams = kicked,
                "backplane: ended local streams so that they resume from the history"
            );
        }
    }

    /// A live frame from Redis: to the broadcasters of its channel, for its user.
    fn dispatch(&self, message: &redis::Msg) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let (sinks, user) = {
            let state = self.lock();
            let Some(wanted) = state.wanted.get(message.get_channel_name()) else {
                return;
            };
            let Some(sinks) = state.sinks.get(&wanted.channel) else {
                return;
            };
            (sinks.clone(), wanted.user.clone())
        };
        let frame = Bytes::copy_from_slice(message.get_payload_bytes());
        for sink in sinks.iter() {
            sink.deliver(&user, frame.clone());
        }
    }

    fn set_link(&self, link: Link, error: Option<String>) {
        let mut state = self.lock();
        state.link = link;
        if error.is_some() {
            state.last_error = error;
        }
        drop(state);
        let connected = link == Link::Connected;
        self.connected.store(connected, Ordering::Release);
        self.connected_gauge.set(if connected { 1.0 } else { 0.0 });
        self.status.notify_waiters();
    }

    /// The connection was lost: nothing is subscribed any more, everything wanted is to be
    /// subscribed again.
    fn lost(&self, error: String) {
        self.set_command(None);
        let mut state = self.lock();
        state.subscribed.clear();
        let State { wanted, dirty, .. } = &mut *state;
        for (live, wanted) in wanted.iter_mut() {
            wanted.confirmed = false;
            dirty.insert(live.clone());
        }
        drop(state);
        self.set_link(Link::Connecting, Some(error));
    }

    /// (Un)subscribes what changed, until nothing is left to do.
    async fn reconcile(&self, sink: &mut PubSubSink) -> Result<(), String> {
        let timeout = self.config.command_timeout;
        loop {
            let (subscribe, unsubscribe) = {
                let mut state = self.lock();
                let batch: Vec<Arc<str>> = state.dirty.iter().take(BATCH).cloned().collect();
                let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
                for live in batch {
                    state.dirty.remove(&live);
                    let wanted = state.wanted.contains_key(&live);
                    let subscribed = state.subscribed.contains(&live);
                    if wanted && !subscribed {
                        subscribe.push(live);
                    } else if !wanted && subscribed {
                        state.subscribed.remove(&live);
                        unsubscribe.push(live);
                    }
                }
                (subscribe, unsubscribe)
            };
            if subscribe.is_empty() && unsubscribe.is_empty() {
                if self.lock().dirty.is_empty() {
                    return Ok(());
                }
                continue;
            }
            if !unsubscribe.is_empty() {
                let names: Vec<&str> = unsubscribe.iter().map(|k| &**k).collect();
                tokio::time::timeout(timeout, sink.unsubscribe(&names))
                    .await
                    .map_err(|_| "UNSUBSCRIBE timed out".to_owned())?
                    .map_err(|e| format!("UNSUBSCRIBE failed: {e}"))?;
            }
            if !subscribe.is_empty() {
                let names: Vec<&str> = subscribe.iter().map(|k| &**k).collect();
                tokio::time::timeout(timeout, sink.subscribe(&names))
                    .await
                    .map_err(|_| "SUBSCRIBE timed out".to_owned())?
                    .map_err(|e| format!("SUBSCRIBE failed: {e}"))?;
                let mut state = self.lock();
                for live in subscribe {
                    if let Some(wanted) = state.wanted.get_mut(&live) {
                        wanted.confirmed = true;
                    }
                    state.subscribed.insert(live);
                }
                drop(state);
                self.status.notify_waiters();
            }
        }
    }

    /// Refreshes the time to live of the histories of the users the node serves.
    fn refresh_ttls(&self) {
        let Some(mut command) = self.command() else {
            return;
        };
        let streams: Vec<Arc<str>> = self
            .lock()
            .wanted
            .values()
            .map(|w| w.stream.clone())
            .collect();
        let ttl = self.config.history_ttl.as_millis() as u64;
        tokio::spawn(async move {
            for chunk in streams.chunks(1024) {
                let mut pipe = redis::pipe();
                for stream in chunk {
                    pipe.cmd("PEXPIRE").arg(&**stream).arg(ttl).ignore();
                }
                if let Err(error) = pipe.query_async::<()>(&mut command).await {
                    tracing::debug!(%error, "backplane: refreshing history TTLs failed");
                    return;
                }
            }
        });
    }

    /// Sends a batch of publishes as one pipeline; one result per job, in order.
    async fn run_batch(&self, batch: &[Job]) -> Vec<Result<Published, BackplaneError>> {
        let failed = |error: BackplaneError| vec![Err(error); batch.len()];
        let Some(mut command) = self.command() else {
            return failed(BackplaneError::Disconnected);
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for job in batch {
            let keep = job.channels.history_len() as u64;
            pipe.cmd("EVALSHA")
                .arg(self.publish_script.get_hash())
                .arg(1)
                .arg(&job.stream)
                .arg(&job.live)
                .arg(&job.head[..])
                .arg(keep)
                .arg((keep / 8).clamp(1, 64))
                .arg(self.config.history_ttl.as_millis() as u64);
        }
        for attempt in 0..2 {
            let results = match pipe
                .query_async::<Vec<RedisResult<Value>>>(&mut command)
                .await
            {
                Ok(results) => results,
                Err(error) => {
                    let error = classify(&error);
                    self.command_failed(&error);
                    return failed(error);
                }
            };
            let noscript = results
                .iter()
                .all(|r| matches!(r, Err(e) if e.code() == Some("NOSCRIPT")));
            if noscript && attempt == 0 {
                // The script cache was flushed: load it again and retry the whole batch.
                if let Err(error) = self.publish_script.load_async(&mut command).await {
                    return failed(classify(&error));
                }
                continue;
            }
            return results
                .into_iter()
                .map(|result| match result {
                    Ok(value) => parse_published(value).ok_or_else(|| {
                        BackplaneError::Failed("unexpected reply to the publish script".into())
                    }),
                    Err(error) => Err(classify(&error)),
                })
                .collect();
        }
        failed(BackplaneError::Failed(
            "the publish script cannot be loaded".into(),
        ))
    }
}

fn parse_id(value: &Value) -> Option<EventId> {
    match value {
        Value::BulkString(bytes) => EventId::parse(std::str::from_utf8(bytes).ok()?),
        Value::SimpleString(text) => EventId::parse(text),
        _ => None,
    }
}

fn parse_published(value: Value) -> Option<Published> {
    match value {
        Value::Nil | Value::Boolean(false) => Some(Published {
            id: None,
            delivery: Delivery::Nodes(0),
        }),
        Value::Array(items) => match items.as_slice() {
            [id, Value::Int(nodes)] => Some(Published {
                id: Some(parse_id(id)?),
                delivery: Delivery::Nodes(usize::try_from(*nodes).unwrap_or(0)),
            }),
            _ => None,
        },
        _ => None,
    }
}

fn parse_history(value: Value) -> Option<History> {
    let Value::Array(items) = value else {
        return None;
    };
    let [last, deleted, Value::Array(entries)] = <[Value; 3]>::try_from(items).ok()? else {
        return None;
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(entry) = entry else {
            return None;
        };
        let [id, Value::Array(fields)] = <[Value; 2]>::try_from(entry).ok()? else {
            return None;
        };
        let Some(Value::BulkString(head)) = fields.into_iter().nth(1) else {
            return None;
        };
        let id_text = match &id {
            Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.to_owned(),
            _ => return None,
        };
        let mut frame = head;
        frame.reserve_exact(id_text.len() + 6);
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(id_text.as_bytes());
        frame.extend_from_slice(b"\n\n");
        events.push((parse_id(&id)?, Bytes::from(frame)));
    }
    Some(History {
        last_id: parse_id(&last)?,
        deleted_through: parse_id(&deleted)?,
        events,
    })
}

/// The publish queue's task: batches of publishes, pipelined, in order.
async fn run_publisher(shared: Arc<Shared>, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while jobs.recv_many(&mut batch, BATCH).await > 0 {
        let results = shared.run_batch(&batch).await;
        for (job, result) in batch.drain(..).zip(results) {
            if result.is_err() {
                shared.failed(&job);
            }
            let _ = job.reply.send(result);
        }
    }
}

/// Connects both connections and loads the scripts.
async fn connect(
    shared: &Shared,
) -> Result<(PubSubSink, PubSubStream, MultiplexedConnection), String> {
    let timeout = shared.config.command_timeout;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut command = shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let pubsub = tokio::time::timeout(timeout, shared.client.get_async_pubsub())
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    for script in [&shared.publish_script, &shared.history_script] {
        script
            .load_async(&mut command)
            .await
            .map_err(|e| e.to_string())?;
    }
    let (sink, stream) = pubsub.split();
    Ok((sink, stream, command))
}

/// The connection task: connects, serves until the connection fails, reconnects with backoff.
async fn run_connection(shared: Arc<Shared>) {
    let mut backoff = shared.config.reconnect_min;
    let mut ever_connected = false;
    let mut failing = false;
    loop {
        match connect(&shared).await {
            Ok((sink, stream, command)) => {
                backoff = shared.config.reconnect_min;
                if ever_connected {
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                let error = serve(&shared, sink, stream, command, ever_connected).await;
                ever_connected = true;
                failing = false;
                tracing::warn!(%error, "backplane: connection to Redis lost; reconnecting");
                shared.lost(error);
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "backplane: cannot connect to Redis; retrying with backoff");
                } else {
                    tracing::debug!(%error, "backplane: cannot connect to Redis");
                }
                failing = true;
                shared.set_link(Link::Down, Some(error));
                let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(shared.config.reconnect_max);
            }
        }
    }
}

/// Serves one connection until it fails; returns why.
async fn serve(
    shared: &Shared,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    command: MultiplexedConnection,
    reconnected: bool,
) -> String {
    shared.set_command(Some(command));
    shared.lock().command_broken = false;
    // Messages that arrive meanwhile wait in the connection's buffer.
    if let Err(error) = shared.reconcile(&mut sink).await {
        return error;
    }
    shared.set_link(Link::Connected, None);
    if reconnected {
        tracing::info!("backplane: reconnected to Redis");
        // What was published while the node did not listen is only in the histories.
        shared.kick(None);
    }
    let mut ping =
        tokio::time::interval(shared.config.ping_interval.max(Duration::from_millis(10)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut refresh =
        tokio::time::interval((shared.config.history_ttl / 3).max(Duration::from_millis(10)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => shared.dispatch(&message),
                None => return "the pub/sub connection closed".to_owned(),
            },
            () = shared.wake.notified() => {
                if shared.lock().command_broken {
                    return "the command connection failed".to_owned();
                }
                if let Err(error) = shared.reconcile(&mut sink).await {
                    return error;
                }
                let kick: Vec<Arc<str>> = shared.lock().to_kick.drain().collect();
                if !kick.is_empty() {
                    shared.kick(Some(kick));
                }
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(shared.config.command_timeout, sink.ping::<Value>());
                match pong.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return format!("PING failed: {error}"),
                    Err(_) => return "PING timed out".to_owned(),
                }
            }
            _ = refresh.tick() => shared.refresh_ttls(),
        }
    }
}
