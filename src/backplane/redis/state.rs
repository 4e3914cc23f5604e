//! What the Redis backplane's handle and its two tasks share: the feeds the node wants, the link
//! state, the command connection, the publish queue, the counters; and the node-side handling of
//! what comes back from Redis (dispatch, kicks).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError, Script};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::backplane::LocalChannels;
use crate::backplane::redis::config::RedisConfig;
use crate::backplane::redis::feeds::{Refused, Wanted};
use crate::backplane::redis::generation::{Generations, Marker};
use crate::backplane::redis::wire::{Message, parse_message};
use crate::error::BackplaneError;
use crate::event_id::EventId;
use crate::stats::Published;
use crate::thread::ThreadId;
use crate::user_id::UserId;

/// Publish tokens a node remembers having dispatched, so that an event sent twice (a retry
/// after Redis restarted between running a publish and answering it, and lost its mark) is
/// not delivered live again. Only a second line: the publish marks in Redis make retries run
/// once whatever the number of publishes in between, and a copy sent twice can only reach
/// streams that resumed after a `reset` (see the [module docs](super#publishing)); so a bound on
/// memory, not on a retry window.
const RECENT_TOKENS: usize = 8192;

/// Whether the link to Redis is up; published through a `watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Connecting or reconnecting; no attempt has failed yet.
    Connecting,
    /// Both connections up, every wanted feed subscribed.
    Connected,
    /// The last attempt failed: subscribes do not wait.
    Down,
}

/// The link state and a generation bumped whenever Redis confirms subscriptions, so that
/// waiters re-check theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) link: Link,
    pub(crate) confirmations: u64,
}

pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) client: Client,
    pub(crate) publish_script: Script,
    pub(crate) history_script: Script,
    pub(crate) thread_script: Script,
    pub(crate) snapshot_script: Script,
    pub(crate) generation_script: Script,
    /// The generation marker's key, which is also the channel that says a new one.
    pub(crate) generation_key: String,
    /// This node's id in publish tokens: random per backplane.
    pub(crate) node: String,
    state: Mutex<State>,
    /// Wakes the connection task: what to listen to changed, or something must be kicked.
    pub(crate) wake: Notify,
    pub(crate) status: watch::Sender<Status>,
    /// The command connection, if connected, and the number of the link it belongs to (each
    /// connection the task establishes is the next one).
    command: Mutex<(Option<MultiplexedConnection>, u64)>,
    pub(crate) queue: mpsc::Sender<Queued>,
    pub(crate) closed: AtomicBool,
    pub(crate) reconnects: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) publish_unknown: AtomicU64,
    pub(crate) publish_retries: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) duplicates_dropped: AtomicU64,
    /// Times the node found that Redis had lost its data (its generation marker changed).
    pub(crate) data_losses: AtomicU64,
    /// The generation markers the node has seen: see [`Generations`].
    generations: Mutex<Generations>,
    /// Thread snapshots being written, and those waiting for a writer.
    snapshot_writes: Mutex<SnapshotWrites>,
    pub(crate) connected_gauge: metrics::Gauge,
}

pub(crate) struct State {
    /// The feeds the node's broadcasters want.
    pub(crate) wanted: HashMap<Arc<str>, Wanted>,
    /// The feeds Redis confirmed on the current pub/sub connection.
    pub(crate) subscribed: HashSet<Arc<str>>,
    /// Feeds to (un)subscribe: whether they are wanted changed since the last pass.
    pub(crate) dirty: HashSet<Arc<str>>,
    /// Wanted feeds whose `SUBSCRIBE` Redis refused, asked again with backoff.
    pub(crate) refused: HashMap<Arc<str>, Refused>,
    /// Feeds whose degraded local streams must end once the backplane is connected: a
    /// subscribe on them was served degraded.
    pub(crate) to_kick: HashSet<Arc<str>>,
    /// The broadcasters, by channel name.
    pub(crate) sinks: HashMap<Arc<str>, Arc<[LocalChannels]>>,
    pub(crate) last_error: Option<String>,
    pub(crate) version: Option<String>,
    /// The server's `maxmemory-policy`, read at every connection.
    pub(crate) eviction_policy: Option<String>,
    /// The newest link whose command connection failed with a broken connection (0: none):
    /// the connection task serving that link reconnects.
    pub(crate) broken_link: u64,
    /// Publish tokens recently dispatched, oldest first, and as a set.
    recent: VecDeque<Bytes>,
    recent_set: HashSet<Bytes>,
}

/// The node's thread snapshot writes: how many are in flight, and the snapshots waiting for
/// one to end, the newest per (snapshots key, thread).
#[derive(Default)]
pub(crate) struct SnapshotWrites {
    pub(crate) writing: usize,
    pub(crate) waiting: HashMap<(String, ThreadId), SnapshotWrite>,
}

/// A thread snapshot to write: the link it was taken on (a later link may be to a Redis that
/// lost what it covers), the id it covers, the stored form, and whether it folds events from
/// before Redis started the thread over.
#[derive(Clone)]
pub(crate) struct SnapshotWrite {
    pub(crate) link: u64,
    pub(crate) covers: EventId,
    pub(crate) blob: Vec<u8>,
    pub(crate) from_before_loss: bool,
}

/// What the publish queue carries, in order.
pub(crate) enum Queued {
    Publish(Job),
    /// A message for every node listening to a feed (a cluster-wide disconnect).
    Control {
        feed: String,
        message: String,
    },
    /// Answered once everything queued before it is done: [`RedisBackplane::close`].
    ///
    /// [`RedisBackplane::close`]: crate::backplane::RedisBackplane::close
    Flush(oneshot::Sender<()>),
}

/// A publish waiting for Redis. Dropped unanswered (the backplane was dropped, aborting its
/// publisher), it counts itself lost.
pub(crate) struct Job {
    pub(crate) channels: LocalChannels,
    pub(crate) user: UserId,
    pub(crate) head: Bytes,
    pub(crate) history: String,
    pub(crate) marks: String,
    pub(crate) feed: String,
    /// A publish into a thread: the thread, and its keys (snapshots, recency). Boxed: most
    /// publishes have none, and the queue holds jobs by value.
    pub(crate) thread: Option<Box<(ThreadId, String, String)>>,
    /// The node's publish counter, given when the publisher first takes the job (in queue
    /// order, which the marks in Redis rely on); kept across retries.
    pub(crate) counter: Option<u64>,
    pub(crate) reply: Option<oneshot::Sender<Result<Published, BackplaneError>>>,
}

impl Job {
    pub(crate) fn answer(&mut self, result: Result<Published, BackplaneError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.reply.is_some() {
            // Not delivered locally, not confirmed: still queued, or sent and unanswered (Redis
            // may have run it). Counted where the broadcaster counts backplane failures.
            self.channels.count_failure();
            tracing::warn!(user = %self.user, "backplane dropped with a publish unconfirmed: the event is lost, unless Redis ran it");
        }
    }
}

pub(crate) fn classify(error: &RedisError) -> BackplaneError {
    if error.is_timeout() {
        BackplaneError::Timeout
    } else if error.is_connection_dropped() || error.is_io_error() || error.is_unrecoverable_error()
    {
        BackplaneError::Disconnected
    } else {
        BackplaneError::Failed(error.to_string())
    }
}

/// `now + duration`, or a day from now if that overflows (a validated config never does).
pub(crate) fn deadline(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

impl Shared {
    pub(crate) fn new(config: RedisConfig, client: Client, queue: mpsc::Sender<Queued>) -> Self {
        let status = Status {
            link: Link::Connecting,
            confirmations: 0,
        };
        let generation_key = format!("{}:generation", config.prefix);
        Self {
            config,
            client,
            publish_script: Script::new(&crate::backplane::redis::scripts::publish_lua()),
            history_script: Script::new(&crate::backplane::redis::scripts::history_lua()),
            thread_script: Script::new(&crate::backplane::redis::scripts::thread_lua()),
            snapshot_script: Script::new(&crate::backplane::redis::scripts::snapshot_lua()),
            generation_script: Script::new(&crate::backplane::redis::scripts::generation_lua()),
            generation_key,
            node: format!("{:016x}", fastrand::u64(..)),
            state: Mutex::new(State {
                wanted: HashMap::new(),
                subscribed: HashSet::new(),
                dirty: HashSet::new(),
                refused: HashMap::new(),
                to_kick: HashSet::new(),
                sinks: HashMap::new(),
                last_error: None,
                version: None,
                eviction_policy: None,
                broken_link: 0,
                recent: VecDeque::with_capacity(RECENT_TOKENS),
                recent_set: HashSet::with_capacity(RECENT_TOKENS),
            }),
            wake: Notify::new(),
            status: watch::Sender::new(status),
            command: Mutex::new((None, 0)),
            queue,
            closed: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            publish_unknown: AtomicU64::new(0),
            publish_retries: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicates_dropped: AtomicU64::new(0),
            data_losses: AtomicU64::new(0),
            generations: Mutex::new(Generations::default()),
            snapshot_writes: Mutex::new(SnapshotWrites::default()),
            connected_gauge: metrics::gauge!(crate::metrics::BACKPLANE_CONNECTED),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn snapshot_writes(&self) -> MutexGuard<'_, SnapshotWrites> {
        self.snapshot_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn link(&self) -> Link {
        self.status.borrow().link
    }

    pub(crate) fn command(&self) -> Option<MultiplexedConnection> {
        self.command_of_link().map(|(command, _)| command)
    }

    /// The command connection and the number of its link, for a command whose failure
    /// [`command_failed`](Self::command_failed) may report.
    pub(crate) fn command_of_link(&self) -> Option<(MultiplexedConnection, u64)> {
        let command = self.command.lock().unwrap_or_else(|p| p.into_inner());
        command.0.clone().map(|c| (c, command.1))
    }

    /// Installs the command connection of a new link; returns the link's number.
    pub(crate) fn set_command(&self, command: MultiplexedConnection) -> u64 {
        let mut current = self.command.lock().unwrap_or_else(|p| p.into_inner());
        current.1 += 1;
        current.0 = Some(command);
        current.1
    }

    /// The command connection of `link` failed with a broken connection: make the connection
    /// task reconnect, if it still serves that link. A command sent on an older link may fail
    /// long after the node reconnected (a clone of that connection outlives it), which says
    /// nothing of the link now.
    pub(crate) fn command_failed(&self, error: &BackplaneError, link: u64) {
        if *error == BackplaneError::Disconnected {
            let mut state = self.lock();
            state.broken_link = state.broken_link.max(link);
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Whether the command connection of `link` failed.
    pub(crate) fn link_broken(&self, link: u64) -> bool {
        self.lock().broken_link >= link
    }

    pub(crate) fn set_link(&self, link: Link, error: Option<String>) {
        if error.is_some() {
            self.lock().last_error = error;
        }
        // The gauge first: whoever sees the new link (`wait_connected`) sees the gauge agree.
        let connected = link == Link::Connected;
        self.connected_gauge.set(if connected { 1.0 } else { 0.0 });
        self.status.send_modify(|status| status.link = link);
    }

    /// Wakes the subscribes waiting for Redis to answer their feed's `SUBSCRIBE`: to confirm
    /// it, or to refuse it.
    pub(crate) fn confirmed(&self) {
        self.status
            .send_modify(|status| status.confirmations = status.confirmations.wrapping_add(1));
    }

    /// A value for a new generation marker, should a script find none: random, never reused.
    pub(crate) fn fresh_generation(&self) -> String {
        format!("{}-{:016x}", self.node, fastrand::u64(..))
    }

    /// Redis showed its generation marker, at a connection or on the marker's channel: if it is
    /// new, Redis lost its data since the node saw the current one, unless the new marker says
    /// the data was kept (it went alone: see the generation script). A loss is counted, logged
    /// and told to the channels ([`kick_all`](Self::kick_all)), which keep their exact thread
    /// states, before this returns: before the node dispatches what followed the announcement
    /// on its feed. Returns whether it was a loss; the first marker the node sees is none.
    ///
    /// Only there: a marker is announced in the same atomic step that sets it, so the feed
    /// brings it after every event from before the loss and before every one after. A reply
    /// (a link check, a thread read) may show it while the lagging feed still brings events
    /// from before, which the kept states would lack. The feed announces every marker set since
    /// the node subscribed (at the connection), or breaks and the next connection reads it. A
    /// thread read under a marker not known yet is not used ([`Self::generation_known`]).
    pub(crate) fn generation_seen(&self, value: &str) -> bool {
        let mut generations = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        match generations.see(value) {
            Marker::Known => return false,
            Marker::Kept => {
                tracing::info!("backplane: Redis' generation marker went, and its data stayed");
                return false;
            }
            Marker::Lost => {}
        }
        self.data_losses.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("backplane: Redis lost its data (its generation marker changed)");
        // Under the lock: whoever sees the marker next waits until the channels were told.
        self.kick_all(true);
        true
    }

    /// Whether a reply's marker is the node's current one or an earlier one (see
    /// [`generation_seen`](Self::generation_seen)).
    pub(crate) fn generation_known(&self, value: &str) -> bool {
        let generations = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        generations.knows(value)
    }

    /// The connection was lost: nothing is subscribed any more, everything wanted is to be
    /// subscribed again (the feeds Redis refused too, their refusals kept for their backoff).
    pub(crate) fn lost(&self, error: String) {
        self.command.lock().unwrap_or_else(|p| p.into_inner()).0 = None;
        let mut state = self.lock();
        state.subscribed.clear();
        let State { wanted, dirty, .. } = &mut *state;
        for (feed, wanted) in wanted.iter_mut() {
            wanted.confirmed = false;
            dirty.insert(feed.clone());
        }
        drop(state);
        self.set_link(Link::Connecting, Some(error));
    }

    /// A publish that surely did not reach Redis: delivered locally without an id, counted.
    pub(crate) fn failed(&self, job: &mut Job, error: BackplaneError) {
        self.publish_failures.fetch_add(1, Ordering::Relaxed);
        match job.thread.as_deref() {
            None => job.channels.deliver_local_only(&job.user, &job.head),
            Some((thread, _, _)) => job
                .channels
                .deliver_local_only_in_thread(&job.user, &job.head, thread),
        };
        job.answer(Err(error));
    }

    /// A message from a feed: a frame to the broadcasters of its channel, for its user, unless
    /// its publish token was dispatched already; or a disconnect from another node. Or a new
    /// generation marker, on its own channel ([`generation_seen`](Self::generation_seen)).
    pub(crate) fn dispatch(&self, feed: &str, payload: Bytes) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if feed == self.generation_key {
            match std::str::from_utf8(&payload) {
                Ok(value) => {
                    self.generation_seen(value);
                }
                Err(_) => tracing::debug!("backplane: unreadable generation marker ignored"),
            }
            return;
        }
        let Some(message) = parse_message(payload) else {
            tracing::debug!(%feed, "backplane: unreadable feed message ignored");
            return;
        };
        let (sinks, user, frame) = {
            let mut state = self.lock();
            let Some(wanted) = state.wanted.get(feed) else {
                return;
            };
            let Some(sinks) = state.sinks.get(&wanted.channel).cloned() else {
                return;
            };
            let user = wanted.user.clone();
            match message {
                // The originating node too: it waits for its own message, so that the events it
                // published before the disconnect reach its streams first.
                Message::Disconnect { origin } => {
                    drop(state);
                    let ended: usize = sinks.iter().map(|sink| sink.kick(&user)).sum();
                    let local = origin == self.node.as_bytes();
                    tracing::debug!(%user, ended, local, "backplane: disconnect_user");
                    return;
                }
                Message::Event {
                    token,
                    frame,
                    thread,
                } => {
                    if !state.remember(Bytes::copy_from_slice(&token)) {
                        drop(state);
                        self.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%feed, "backplane: an event sent twice was dropped");
                        return;
                    }
                    (sinks, user, (frame, thread))
                }
            }
        };
        let (frame, thread) = frame;
        for sink in sinks.iter() {
            match &thread {
                None => sink.deliver(&user, frame.clone()),
                Some((thread, ordinal)) => {
                    sink.deliver_in_thread(&user, frame.clone(), thread, *ordinal)
                }
            };
        }
    }

    /// Ends the degraded local streams of `feed` as soon as the backplane is connected (at
    /// once if it is): a subscribe on it was served degraded. The user's other streams on the
    /// feed are healthy (a catch-up may fail on its own, a read timing out, while the feed is
    /// listened to), and stay.
    pub(crate) fn kick_later(&self, feed: &str) {
        let mut state = self.lock();
        if let Some((feed, _)) = state.wanted.get_key_value(feed) {
            let feed = feed.clone();
            state.to_kick.insert(feed);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Redis refused this node's snapshot of `thread` (in the snapshots key `threads`): it holds
    /// one that folds events from before it started the thread over, which the node's state
    /// lacks. The node's channels read the thread back
    /// ([`LocalChannels::thread_outranked`]).
    pub(crate) fn snapshot_outranked(&self, threads: &str, thread: &ThreadId) {
        let targets: Vec<_> = {
            let state = self.lock();
            state
                .wanted
                .values()
                .filter(|wanted| &*wanted.threads[0] == threads)
                .filter_map(|wanted| {
                    let sinks = state.sinks.get(&wanted.channel)?;
                    Some((sinks.clone(), wanted.user.clone()))
                })
                .collect()
        };
        for (sinks, user) in targets {
            for sink in sinks.iter() {
                sink.thread_outranked(&user, thread);
            }
        }
    }

    /// Whether Redis confirmed that the node listens to `feed` on the current connection.
    pub(crate) fn listens(&self, feed: &str) -> bool {
        self.lock().wanted.get(feed).is_some_and(|w| w.confirmed)
    }

    /// Ends this node's streams of the user whose feed is `feed`, at once: what a
    /// cluster-wide disconnect falls back to when its message cannot be sent.
    pub(crate) fn kick_feed(&self, feed: &str) -> usize {
        let (sinks, user) = {
            let state = self.lock();
            let Some(wanted) = state.wanted.get(feed) else {
                return 0;
            };
            let Some(sinks) = state.sinks.get(&wanted.channel).cloned() else {
                return 0;
            };
            (sinks, wanted.user.clone())
        };
        sinks.iter().map(|sink| sink.kick(&user)).sum()
    }

    /// The broadcasters and the user of each of the given feeds, or of every one.
    fn targets(&self, which: Option<&[Arc<str>]>) -> Vec<(Arc<[LocalChannels]>, UserId)> {
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
    }

    /// Ends the degraded local streams of the given feeds.
    pub(crate) fn end_degraded(&self, feeds: &[Arc<str>]) {
        for (sinks, user) in self.targets(Some(feeds)) {
            for sink in sinks.iter() {
                sink.end_degraded(&user);
            }
        }
    }

    /// Ends every local stream; `lost`: Redis lost its data meanwhile (see
    /// [`LocalChannels::kick_after_loss`]).
    pub(crate) fn kick_all(&self, lost: bool) {
        let targets = self.targets(None);
        let mut kicked = 0;
        for (sinks, user) in targets {
            for sink in sinks.iter() {
                kicked += if lost {
                    sink.kick_after_loss(&user)
                } else {
                    sink.kick(&user)
                };
            }
        }
        if kicked > 0 {
            tracing::info!(
                streams = kicked,
                "backplane: ended local streams so that they resume from the history"
            );
        }
    }

    /// The replay bounds of the broadcasters of `channel`: events, bytes, age.
    pub(crate) fn bounds(&self, channel: &str) -> (usize, usize, Duration) {
        let state = self.lock();
        state
            .sinks
            .get(channel)
            .and_then(|sinks| sinks.first())
            .map_or((256, 256 * 1024, Duration::ZERO), |sink| {
                (sink.history_len(), sink.history_bytes(), sink.history_age())
            })
    }
}

impl State {
    /// Remembers a dispatched publish token (a copy, not a slice that would keep its frame
    /// alive); `false` if it was dispatched already.
    fn remember(&mut self, token: Bytes) -> bool {
        if self.recent_set.contains(&token) {
            return false;
        }
        if self.recent.len() == RECENT_TOKENS
            && let Some(oldest) = self.recent.pop_front()
        {
            self.recent_set.remove(&oldest);
        }
        self.recent.push_back(token.clone());
        self.recent_set.insert(token);
        true
    }
}
