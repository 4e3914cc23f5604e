//! [`RedisBackplane`]: the shared history in Redis streams, the live fan-out through Redis
//! pub/sub. Needs Redis 7.0 or later (checked at every connection).
//!
//! # TLS
//!
//! A `rediss://` URL needs the cargo feature `redis-tls` (without it, [`RedisBackplane::new`]
//! refuses it with [`BackplaneError::InvalidConfig`], naming the feature): the redis crate's
//! rustls, with the `ring` provider, installed as the process's default provider if the
//! process has none. The server's certificate must chain to the platform's roots (with
//! `redis-tls-webpki-roots`: the Mozilla roots compiled in), or to the CAs of
//! `RedisConfig::tls`, which also takes a client certificate for mutual TLS, and name the
//! URL's host. The certificates are checked when the backplane is created; a server that
//! cannot be trusted keeps the backplane down, retrying with backoff, the reason in
//! [`BackplaneHealth::last_error`].
//!
//! # Keys
//!
//! For the channel name `c` (the broadcaster's [`Config::name`](crate::Config::name)) and the
//! user `u`, with the prefix `p` ([`RedisConfig::prefix`]):
//!
//! | key | what |
//! |---|---|
//! | `p:c:u` | the user's history: a stream whose entry ids are the event ids, each entry holding the frame's `event:`/`data:` lines in its field `f` and its publish token in `t`; for an event published into a thread, the thread in `h`, and `s` = `1` on the thread's first event |
//! | `p:marks:c:u` | the publish marks: a hash, node → the last publish counter of that node that ran, and when the mark may be forgotten (ms, Redis time: twice [`RedisConfig::publish_retry`] and a minute after that publish ran) |
//! | `p:live:c:u` | the user's *feed*: the pub/sub channel that carries the finished frames, each after its publish token line (for an event published into a thread: `token ordinal length`, then the thread's name) |
//! | `p:threads:c:u` | the thread snapshots: a hash, `s:<thread>` → `<id> <ordinal>\n` and the opening's frames (the snapshot covers every event of the thread up to that id), `n:<thread>` → the number of events published into the thread, `r:<thread>` → `1` when the snapshot folds events from before Redis last started the thread over (see [`ThreadSnapshot::from_before_loss`]) |
//! | `p:thread-age:c:u` | the threads' recency: a sorted set, thread → the time of its last event (ms), to forget the least recent past [`ThreadConfig::max_threads_per_user`](crate::ThreadConfig::max_threads_per_user) |
//! | `p:generation` | the generation marker: a random value with no time to live, set by the first script that finds it absent (every script that creates keys, the nodes' connections and link checks look first), which also `PUBLISH`es it on the pub/sub channel of the same name, that every node listens to; a node that reads another value at a connection, or hears one on the channel, than the one it saw knows Redis lost its data meanwhile, unless the value ends with ` kept`: set while Redis still held keys under the prefix (see [Faults](#faults) and the [backplane docs](super#threads)) |
//!
//! User ids are only key material: they are never parsed back from a key (the node maps the
//! feeds it listens to back to its users), so any string is a valid user id. Channel names
//! should not contain `:`, which would make two (channel, user) pairs share keys.
//!
//! # Publishing
//!
//! A node's publishes go through one bounded queue, in call order, to one task that sends them
//! to Redis as pipelined `EVALSHA`s of one Lua script. The script, atomically:
//!
//! 1. if the publish's token is not newer than the node's mark, answers the id the publish got
//!    when it first ran, and does nothing else (a retry; see below);
//! 2. if the user has no history and no node listens to the user (`PUBSUB NUMSUB`), stores
//!    nothing and returns no id, as a single node does for a user without a channel;
//! 3. `XADD`s the frame's head and trims, with `XDEL`, the oldest entries beyond the history
//!    length ([`Config::replay_events`](crate::Config::replay_events), in batches) and older
//!    than [`Config::replay_age`](crate::Config::replay_age), so that the stream's
//!    `max-deleted-entry-id` says exactly what was lost. The age trim stops at the oldest event
//!    published into a thread: a thread's snapshot is written every `replay_events / 2` events,
//!    not by time, and a node that reads the thread back needs the events after it, however
//!    slowly the run went (the length trim is what the snapshots keep up with);
//! 4. sets the history's time to live ([`RedisConfig::history_ttl`]) and the node's mark,
//!    and, once the marks hash holds 64 fields, drops the marks past their time (kept while
//!    a copy of their node's publishes may still arrive; so however many node processes
//!    published to the user, a retry still finds its mark);
//! 5. `PUBLISH`es the token and the finished frame, `head` + `id: <id>` + blank line, and
//!    returns the id and the number of nodes that received it.
//!
//! A publish into a thread is stored even when no node listens; the script also counts the
//! event in the thread (its ordinal, sent on the feed), adds the thread to the entry (field
//! `h`; `s` marks the thread's first event), and for a thread's first event forgets the least
//! recent threads beyond the maximum and stores an empty snapshot covering the ids before it
//! (so that an older thread of the same name, forgotten, is not read back). Snapshots are
//! stored by a second script, only if the thread is still counted and the snapshot outranks
//! the stored one: one that folds events from before Redis started the thread over outranks
//! one that does not, else the newer wins (a snapshot refused for its rank is answered so, and
//! the node reads the thread back); a third reads a thread back (`HGET` of its count and
//! snapshot, `XRANGE` after the snapshot's id, keeping the thread's entries), atomically, so
//! that the read is complete exactly when the snapshot's ordinal plus the entries make the
//! count. A thread whose keys went (evicted, or
//! the thread forgotten) with nothing published into it since has no snapshot and no count:
//! its read is the thread's entries from its newest first event on, complete if the history
//! still holds that event (see [Eviction](#eviction)). See the [backplane docs](super#threads).
//!
//! A history is created with a deleted marker entry, so that its `max-deleted-entry-id` is its
//! creation: an id from before (an earlier history of the user, which expired, or a Redis that
//! restarted without persistence) resumes as `expired`.
//!
//! When a batch is sent and not answered (a timeout, a connection cut after the write), Redis
//! may have run any part of it. The batch is sent again, with the same tokens, until Redis
//! answers or [`RedisConfig::publish_retry`] passed; the marks make each publish run once
//! however many copies reach Redis, in whatever order. Publishes queued behind wait, so the
//! node's publishes stay in order. When the retries run out, the publishes are answered
//! [`BackplaneError::Unknown`] and are *not* delivered locally.
//!
//! A mark is a counter, not a window of recent tokens: a copy runs only if its counter is
//! newer than the mark, so a retry finds that it ran however many publishes (of any node, to
//! this user or others) ran in between, for as long as the mark lives, which is tied to the
//! retry window (above), not to a count. (Its answer carries the id the first run gave while
//! the history still holds that entry, and no id after it was trimmed.)
//!
//! A node also drops a feed message whose token it already dispatched (the last 8192 tokens,
//! so bounded memory). That is not what makes retries idempotent, and its length is no bound on
//! the guarantees: a publish runs twice only if Redis lost its mark (a restart, failover or
//! flush that lost data), and every node learns of that loss (see [Faults](#faults)) and ends
//! its streams before it dispatches anything published after it. So the second copy
//! only reaches streams that resumed since, with a `reset` (their ids are gone from the
//! history); the window spares most of them that copy live. Tokens are never reused (a random
//! node id per backplane, and a counter), so forgetting one never drops a new event.
//!
//! # Listening
//!
//! One task per node owns a pub/sub connection and a multiplexed command connection. It
//! `SUBSCRIBE`s to a user's feed when a broadcaster of the node creates a channel for the
//! user, `UNSUBSCRIBE`s when the channel is removed after its retention, and dispatches each
//! message to the broadcasters by channel name. It dispatches while a `SUBSCRIBE` or a link
//! check (below) waits for its answer, and neither waits for the other, so neither users who
//! connect nor a slow link delay the live events of the users the node already listens to, and
//! a check stalled on the command connection does not delay a new user's `SUBSCRIBE`; a
//! `SUBSCRIBE`'s confirmation is still recorded before any message that came after it. A
//! subscribe waits until the node's `SUBSCRIBE`
//! is confirmed ([`RedisConfig::subscribe_timeout`] at most), then reads the history in one
//! script (`XINFO STREAM` for the last and the deleted ids, `XRANGE … COUNT` for the events),
//! which reads nothing beyond the channel's replay bounds (events, bytes, age): a resume from
//! further back is `expired`. The client's id must also be in the stream, unless it is the
//! `max-deleted-entry-id`: entries are only deleted oldest first, so a missing one was lost
//! with the stream's tail (see the [backplane docs](super#faults)), and the resume is
//! `expired` rather than a silent skip of what followed it.
//!
//! # Faults
//!
//! A connection can die silently (a NAT or a stateful firewall forgets it: no RST, packets
//! dropped), and the two connections die independently. So every [`RedisConfig::ping_interval`] the
//! task checks *both*, together (a `PING` on the pub/sub one; on the command one, a read of the
//! generation marker: below); a check unanswered within [`RedisConfig::command_timeout`] counts as
//! a failed connection (meanwhile, the messages of the pub/sub connection are dispatched as they
//! come). Otherwise a dead command connection would never be replaced while the pub/sub one lives:
//! its commands only time out, the node would say it is connected, and every publish would end
//! [`BackplaneError::Unknown`]. A command that times out does not by itself reconnect: Redis may
//! only be slow, and a publish then waits for its answer (see above). A command that fails with a
//! broken connection does, but only if it was sent on the current connection: one sent before a
//! reconnect (a slow history read, a publish waiting for its answer) may fail long after, which
//! says nothing of the new connection.
//!
//! When a connection fails, the task reconnects with capped exponential backoff
//! ([`RedisConfig::reconnect_min`] to [`RedisConfig::reconnect_max`], with jitter), `SUBSCRIBE`s
//! again to every user the node serves, then ends the node's local streams, since it cannot know
//! what it missed meanwhile: clients reconnect (after a jittered `retry:`) and resume from the
//! history. The first attempt after a connection that served is at once; a connection lost before
//! it served (its `SUBSCRIBE`s timed out, say) counts as a failed attempt, so that the task does
//! not reconnect in a loop. A `SUBSCRIBE` Redis refuses (an error reply: an ACL that does not grant
//! the node's Redis user that user's channel) is the user's, not the link's: the other users are
//! served, and that user's streams degraded (see [`BackplaneHealth::refused`]) until Redis accepts
//! it, asked again with backoff. Redis 7 refuses a `SUBSCRIBE` of several channels as a whole when
//! it refuses one: the node then subscribes each of them alone, so that only the refused ones are.
//! While it is down, publishes fail at once and are delivered locally without an id, and subscribes
//! are degraded (see the [module docs](super#faults)). Nothing grows while Redis is down: the
//! publish queue is bounded ([`RedisConfig::publish_queue`]), and the set of users to listen to is
//! the node's own channels. Histories of users every node left expire after
//! [`RedisConfig::history_ttl`]; the nodes refresh the time to live of the users they serve.
//!
//! Redis can lose its data with or without cutting the connections (a restart without persistence;
//! a `FLUSHALL`, a failover to a replica without the data). The generation marker (`p:generation`)
//! shows it: it goes with the data, and whatever finds it absent sets a new random value and
//! announces it on its channel in the same atomic step. A node that sees a value other than the one
//! it saw (read at every connection, heard on the channel) knows Redis lost its data: it counts it
//! once ([`BackplaneHealth::data_losses`]), logs it, and tells its channels before it goes on,
//! which keep their thread states (see the [backplane docs](super#threads)) and end their streams,
//! whose clients resume from the history (a `reset`: what it held is gone). Since every script that
//! creates keys sets a missing marker first, nothing is published into a Redis that lost its data
//! before the announcement, and a node hears it before any event published after it, and after
//! every event published before it, on the same connection: no event of the new Redis is dispatched
//! as if from before the loss, and every event from before it that reached the node's feed is in
//! the states it keeps. So while connected, a node takes a new marker in only from its feed, in the
//! feed's order, however many losses follow each other: a reply on its command connection (a link
//! check, a thread read) may show the new marker while the feed, lagging, still brings events from
//! before; a thread read under a marker the feed has not announced yet is not used (the sync that
//! asked for it fails, and the next one reads again). Found at a reconnect, the loss is told before
//! the node subscribes (a reconnect that fails then would leave the next one, which reads the new
//! marker as the one it saw, nothing to tell). With no connection cut, the marker is set again by
//! the first script to run after the loss, or else by the next link check, which runs the
//! generation script: within [`RedisConfig::ping_interval`], and the feed announces it.
//!
//! The marker can also go alone (deleted, or evicted by an `allkeys-*` policy). Whatever sets it
//! again first looks for keys under the prefix (a `SCAN`, up to about 64 000 keys): since no key is
//! created without the marker, one found is from before, and the new value says so (it ends with `
//! kept`). A node takes it as the new current marker, and counts nothing, kicks nothing. Only a
//! search that gives up (a Redis shared with many other keys) makes such a marker read as a loss. A
//! limit: a node disconnected through a loss *and* a later marker that went alone reads only the
//! last one when it reconnects, and takes nothing for a loss (it forgets its thread states, as at
//! any reconnect, and reads them back from what the other nodes put back).
//!
//! # Eviction
//!
//! Redis must run with `maxmemory-policy noeviction` (the default): every key of the backplane has
//! a time to live, so a `volatile-*` policy may evict them as well as an `allkeys-*` one, and a key
//! that goes alone, the rest of the data staying, is no loss the generation marker shows. An
//! evicted history loses its replay (a resume from before gets `expired`); a retry whose publish
//! mark was evicted looks for its event in the history by its token, and is stored twice only if
//! the history no longer holds it either; evicted thread keys start the thread over at ordinal 1. A
//! node that sees a thread's ordinal go back with a newer id takes the thread as started over: if
//! it holds the thread's exact state, it goes on from it and puts it back in Redis, as after a loss
//! (see the [backplane docs](super#threads)); one that folded none of it (it read the thread while
//! it had no event) takes that event for the thread's start, as one that never met the thread does;
//! if it folded the thread before without holding its exact state now, it reads the thread back at
//! its first event numbered 1 again (or when a tab opens first): whole if a node put it back; if
//! none did yet (none held it, or its put-back has not landed), the read holds only the thread
//! since Redis started it over, which lacks the run this node folded: the node opens with that, and
//! counts it once in [`Stats::thread_states_unknown`](crate::Stats::thread_states_unknown) (the
//! history's older events of the thread are not joined to it: Redis no longer counts them). A
//! put-back landing later outranks that node's snapshot, which is refused at its next checkpoint
//! (at most `replay_events / 2` events later): the node then reads the whole run back. Both are
//! logged at `warn`. A read that ran ahead of the node's feed (a tab's) covers the older frames the
//! feed still brings, numbered before Redis started the thread over: none is folded on top of it,
//! whatever its ordinal. A thread evicted while no node held it starts over unseen, but for the
//! AG-UI run state's `run_unknown`. A node that reads an evicted thread back before anything was
//! published into it again rebuilds it from the history, whole if the history still holds the
//! thread's first event (not counted: nothing is lost), else from what it holds, counted in
//! `thread_states_unknown`. The node reads the policy at every connection
//! ([`BackplaneHealth::eviction_policy`]), and logs at `warn` any other than `noeviction`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use self::commands::{read_history, read_thread, store_snapshot};
use self::feeds::Wanted;
use self::link::run_connection;
use self::publisher::run_publisher;
use self::state::{Job, Link, Queued, Shared, deadline};
use self::wire::{disconnect_message, keys, thread_keys};
use super::{
    Backplane, BackplaneError, BoxFuture, History, LocalChannels, Outcome, PublishRequest,
    ThreadHistory, ThreadSnapshot,
};
use crate::event_id::EventId;
use crate::stats::Published;
use crate::thread::ThreadId;
use crate::user_id::UserId;

mod commands;
mod config;
mod feeds;
mod generation;
mod health;
mod link;
mod publisher;
mod reconcile;
mod state;
mod scripts;
mod tls;
mod wire;

pub use self::config::RedisConfig;
pub use self::health::BackplaneHealth;
#[cfg(feature = "redis-tls")]
pub use self::tls::RedisTls;

/// The Redis [`Backplane`]: see the [module docs](self) and the [backplane model](super).
///
/// Cheap to clone: clones share the connections. Create one per node (per process) and share
/// it, as an `Arc<dyn Backplane>`, between the broadcasters of the node. Before dropping the
/// last clone, [`close`](Self::close) it: the publishes still queued are sent; dropping it
/// abandons them, and any sent but not yet answered (they are counted in
/// [`Stats::backplane_failures`](crate::Stats::backplane_failures) and logged, though Redis may
/// have run one of those sent, and the other nodes delivered it).
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
/// // ... serve; then, on shutdown:
/// router.shutdown();
/// backplane.close().await;
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

/// The backplane's tasks, aborted when the last clone of the backplane goes (tokio-util's
/// `AbortOnDropHandle` rather than a hand-written `Drop`). The jobs the aborted publisher
/// still held count themselves lost ([`Job`]'s `Drop`).
struct Tasks {
    _connection: AbortOnDropHandle<()>,
    _publisher: AbortOnDropHandle<()>,
    queue: mpsc::Sender<Queued>,
    /// `sse_hub_backplane_connected`, set to 0 here: the connections go with the tasks, and the
    /// gauge must not keep the 1 it was last set to.
    connected_gauge: metrics::Gauge,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.connected_gauge.set(0.0);
        let queued = self.queue.max_capacity() - self.queue.capacity();
        if queued > 0 {
            tracing::warn!(
                queued,
                "backplane dropped without close(): its queued publishes are lost"
            );
        }
    }
}

impl RedisBackplane {
    /// A backplane for the Redis at [`RedisConfig::url`]. Returns at once: it connects (and
    /// reconnects) in the background, on the current tokio runtime, which must be running.
    /// See [`wait_connected`](Self::wait_connected). The config is checked first
    /// ([`RedisConfig::validate`]): [`BackplaneError::InvalidConfig`] names what is wrong.
    pub fn new(config: RedisConfig) -> Result<Self, BackplaneError> {
        config.validate()?;
        let client = config.client()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BackplaneError::Failed("the Redis backplane needs a running tokio runtime".into())
        })?;
        let (queue, jobs) = mpsc::channel(config.publish_queue);
        let shared = Arc::new(Shared::new(config, client, queue.clone()));
        shared.connected_gauge.set(0.0);
        let tasks = Tasks {
            _connection: AbortOnDropHandle::new(runtime.spawn(run_connection(shared.clone()))),
            _publisher: AbortOnDropHandle::new(runtime.spawn(run_publisher(shared.clone(), jobs))),
            queue,
            connected_gauge: shared.connected_gauge.clone(),
        };
        Ok(Self {
            shared,
            _tasks: Arc::new(tasks),
        })
    }

    /// Whether the backplane is connected now: both connections up, and every user the node
    /// served when they were made subscribed to. A user who connected since is subscribed to
    /// while the link serves (see [`BackplaneHealth::listening`]).
    pub fn is_connected(&self) -> bool {
        self.shared.link() == Link::Connected
    }

    /// Waits until the backplane is connected, for `within` at most; returns whether it is.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let mut status = self.shared.status.subscribe();
        let connected = status.wait_for(|s| s.link == Link::Connected);
        matches!(
            tokio::time::timeout_at(deadline(within), connected).await,
            Ok(Ok(_))
        )
    }

    /// Stops taking publishes ([`BackplaneError::Closed`] from now on) and waits until every
    /// publish queued before is done: sent, or failed as the [module docs](self#faults) say.
    /// Bounded by the retries of the last batch ([`RedisConfig::publish_retry`]).
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let (done, flushed) = oneshot::channel();
        if self.shared.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Queues a publish (into `thread`, if any).
    fn enqueue(
        &self,
        channels: &LocalChannels,
        user: &UserId,
        head: Bytes,
        thread: Option<&ThreadId>,
    ) -> Outcome {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(BackplaneError::Closed)));
        }
        let (job, outcome) = self.job(channels, user, head, thread);
        match self.shared.queue.try_send(Queued::Publish(job)) {
            Ok(()) => outcome,
            Err(
                mpsc::error::TrySendError::Full(queued) | mpsc::error::TrySendError::Closed(queued),
            ) => {
                // Refused: delivered nowhere, so that it cannot overtake the publishes queued
                // before it on this node's connections.
                if let Queued::Publish(mut job) = queued {
                    job.reply = None;
                }
                Box::pin(std::future::ready(Err(BackplaneError::Overloaded)))
            }
        }
    }

    /// A publish's job for the queue, and the future of its outcome.
    fn job(
        &self,
        channels: &LocalChannels,
        user: &UserId,
        head: Bytes,
        thread: Option<&ThreadId>,
    ) -> (Job, Outcome) {
        let keys = keys(&self.shared.config.prefix, channels.name(), user);
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            channels: channels.clone(),
            user: user.clone(),
            head,
            history: keys.history,
            marks: keys.marks,
            feed: keys.feed,
            thread: thread.map(|thread| {
                let (threads, recency) =
                    thread_keys(&self.shared.config.prefix, channels.name(), user);
                Box::new((thread.clone(), threads, recency))
            }),
            counter: None,
            reply: Some(reply),
        };
        let outcome = Box::pin(async move {
            // The sender is dropped unanswered only when the backplane is dropped.
            outcome.await.unwrap_or(Err(BackplaneError::Closed))
        });
        (job, outcome)
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
        let keys = keys(&self.shared.config.prefix, channel, user);
        let mut state = self.shared.lock();
        if let Some(wanted) = state.wanted.get_mut(keys.feed.as_str()) {
            wanted.count += 1;
            return;
        }
        let feed: Arc<str> = keys.feed.into();
        let confirmed = state.subscribed.contains(&feed);
        state.wanted.insert(
            feed.clone(),
            Wanted {
                count: 1,
                channel: channel.into(),
                user: user.clone(),
                history: keys.history.into(),
                marks: keys.marks.into(),
                threads: {
                    let (threads, recency) = thread_keys(&self.shared.config.prefix, channel, user);
                    [threads.into(), recency.into()]
                },
                confirmed,
            },
        );
        state.dirty.insert(feed);
        drop(state);
        self.shared.wake.notify_one();
    }

    fn channel_removed(&self, channel: &str, user: &UserId) {
        let keys = keys(&self.shared.config.prefix, channel, user);
        let mut state = self.shared.lock();
        let Some(wanted) = state.wanted.get_mut(keys.feed.as_str()) else {
            return;
        };
        wanted.count -= 1;
        if wanted.count > 0 {
            return;
        }
        if let Some((feed, _)) = state.wanted.remove_entry(keys.feed.as_str()) {
            state.to_kick.remove(&feed);
            state.refused.remove(&feed);
            state.dirty.insert(feed);
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
        self.enqueue(channels, user, head, None)
    }

    fn supports_threads(&self) -> bool {
        true
    }

    /// Takes room in the queue for every publish at once (`try_reserve_many`), so that a full
    /// queue refuses them all and none is queued.
    fn publish_all(&self, publishes: Vec<PublishRequest>) -> Result<Vec<Outcome>, BackplaneError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(BackplaneError::Closed);
        }
        let permits = self
            .shared
            .queue
            .try_reserve_many(publishes.len())
            .map_err(|_| BackplaneError::Overloaded)?;
        Ok(publishes
            .into_iter()
            .zip(permits)
            .map(|(p, permit)| {
                let (job, outcome) = self.job(&p.channels, &p.user, p.head, p.thread.as_ref());
                permit.send(Queued::Publish(job));
                outcome
            })
            .collect())
    }

    fn publish_in_thread(
        &self,
        channels: &LocalChannels,
        user: &UserId,
        thread: &ThreadId,
        head: Bytes,
    ) -> BoxFuture<'static, Result<Published, BackplaneError>> {
        self.enqueue(channels, user, head, Some(thread))
    }

    fn catch_up_thread(
        &self,
        channel: &str,
        user: &UserId,
        thread: &ThreadId,
        kept: bool,
    ) -> BoxFuture<'static, Result<ThreadHistory, BackplaneError>> {
        let shared = self.shared.clone();
        let keys = keys(&shared.config.prefix, channel, user);
        let (threads, _) = thread_keys(&shared.config.prefix, channel, user);
        let thread = thread.clone();
        Box::pin(async move {
            read_thread(&shared, &keys.history, &threads, &keys.feed, &thread, kept).await
        })
    }

    fn store_thread_snapshot(
        &self,
        channel: &str,
        user: &UserId,
        thread: &ThreadId,
        snapshot: ThreadSnapshot,
    ) {
        let (threads, _) = thread_keys(&self.shared.config.prefix, channel, user);
        store_snapshot(&self.shared, threads, thread, &snapshot);
    }
    fn catch_up(
        &self,
        channel: &str,
        user: &UserId,
        after: Option<EventId>,
    ) -> BoxFuture<'static, Result<History, BackplaneError>> {
        let shared = self.shared.clone();
        let channel: Arc<str> = channel.into();
        let keys = keys(&shared.config.prefix, &channel, user);
        Box::pin(async move {
            let history = read_history(&shared, &channel, &keys.history, &keys.feed, after).await;
            if let Err(error) = &history {
                tracing::debug!(feed = %keys.feed, %error, "catch-up failed: degraded subscription");
                shared.kick_later(&keys.feed);
            }
            history
        })
    }

    fn disconnect_user(&self, channel: &str, user: &UserId) -> bool {
        let feed = keys(&self.shared.config.prefix, channel, user).feed;
        let message = disconnect_message(&self.shared.node);
        let queued = self
            .shared
            .queue
            .try_send(Queued::Control { feed, message })
            .is_ok();
        if !queued {
            tracing::warn!(%user, "backplane: queue full or closed, so disconnect_user ends this node's streams only");
        }
        queued
    }

    fn is_connected(&self) -> bool {
        RedisBackplane::is_connected(self)
    }
}
