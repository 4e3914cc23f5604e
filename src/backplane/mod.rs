//! Several servers as one: a backplane shares every user channel between the nodes.
//!
//! Behind a load balancer a user's tabs land on different nodes, and a reconnect lands on any
//! node. A *backplane* makes the nodes behave as one: an event published on any node reaches
//! every connection of the user on every node, exactly once and in one order, and a
//! `Last-Event-ID` issued by one node resumes on any other.
//!
//! Without a backplane (the default) a [`Broadcaster`](crate::Broadcaster) is the single-node
//! hub described in the [crate docs](crate), and pays nothing for this module: each hot path
//! checks one `Option`. With one ([`Broadcaster::with_backplane`](crate::Broadcaster::with_backplane),
//! [`EventRouter::with_backplane`](crate::EventRouter::with_backplane)), the broadcaster keeps
//! its local machinery (per-user ring, window, lag policies, caps, retention) and the backplane
//! adds the shared history and the fan-out between nodes. The implementation this crate ships
//! is [`RedisBackplane`] (cargo feature `redis`; `redis-tls` for `rediss://` URLs, see
//! [TLS][redis-tls]).
//!
//! # The model
//!
//! ```text
//!   node A: broadcast(alice, e)                                  node B
//!     │ encode once: event:/data: lines                             │
//!     ▼                                                             │
//!   Redis script: XADD history ──► id ──► frame = head + "id: <id>"  │
//!                 PUBLISH frame ──────────────┬─────────────────────┤
//!                                             ▼                     ▼
//!                      A's alice channel ──► tabs      B's alice channel ──► tabs
//! ```
//!
//! * **History.** Each (channel, user) has a bounded history in the backplane whose ids are the
//!   events' ids: a client's `Last-Event-ID` names a position in that shared history, valid on
//!   every node. Ids have the same `{ms}-{seq}` shape as single-node [`EventId`]s.
//! * **Live fan-out.** A node listens to a user's live feed only while it holds a channel for
//!   that user (connections; or the retention after the last one, or after a thread's last
//!   event: a publish into a thread makes the publishing node a channel), so no node receives
//!   traffic for users it does not serve.
//! * **Delivery.** Every node, the publishing one included, delivers an event to its local
//!   connections *only* from the live feed. The publisher never delivers it itself, so it
//!   cannot deliver it twice; and the feed carries the events in the history's order, so every
//!   node delivers them in the same order.
//! * **Encode once.** The publisher encodes the event's `event:`/`data:` lines once; the
//!   backplane appends the `id:` line and the finished frame travels pre-encoded to every node,
//!   where it is shared by every local connection as one [`Bytes`].
//! * **Resume.** A subscribe joins the local channel first, then waits until the node listens
//!   to the user's feed, then reads the history after the client's id. Live frames whose id is
//!   not after the last one read are skipped, so the seam has no gap and no duplicate. An id
//!   that cannot be resumed gives a `reset`, as on a single node: `malformed`, `expired` (the
//!   history no longer holds what followed it) or `unknown` (ahead of the history). Since a
//!   history only ever loses its *oldest* events, every id it issued after the newest one it
//!   deleted is still in it; an id in that span that is not was lost with the history's
//!   *tail* (Redis restored from a snapshot, or failed over to a replica that lagged), and
//!   resumes as `expired` too, never as a silent skip of the events lost after it.
//!
//! Inside a node, frames still get local sequence numbers: the ring, the replay window and the
//! lag policies work on them as on a single node; only the ids the client sees are the
//! backplane's.
//!
//! # Threads
//!
//! A publish into a [thread](crate::ThreadId) works across nodes as on one
//! ([`Backplane::supports_threads`]; the Redis backplane does), so that a late join or a
//! resume on any node gets the same opening:
//!
//! * **The thread travels with the event**: in its history entry, and on the feed with the
//!   event's *ordinal* in the thread (1, 2, 3…, counted by the backplane in history order).
//!   Every node tags the frame it delivers ([`LocalChannels::deliver_in_thread`]), so thread
//!   subscriptions filter as on one node, and a resume by id replays only the thread's events.
//!   A thread's event is stored even when no node serves the user, and the publishing node
//!   keeps a channel for the user, as a single node does: each of the thread's events, from
//!   the feed, restarts the retention of every node's channel for the user.
//! * **Every node folds it**, under the channel lock as a single node does, but only *in
//!   sequence*: a node's state of a thread is *exact* while it has folded the ordinals 1, 2, 3…
//!   without a hole. A node that starts listening mid-thread, or whose feed was interrupted
//!   (it then ends its streams and forgets its thread states, unless Redis lost its data:
//!   below), *syncs* the thread instead:
//!   it reads the thread's snapshot and the thread's events the history holds after it
//!   ([`Backplane::catch_up_thread`]), folds them into a fresh state, then folds the frames
//!   its feed delivered meanwhile (from the replay window, those with ids after the read). A
//!   sync runs in the background, once per node and thread, started by the first frame that
//!   does not follow or by the first subscription that needs the state.
//! * **Snapshots**: a node with an exact state writes it to the backplane as the thread's
//!   snapshot ([`Backplane::store_thread_snapshot`]): the state's opening, the id it covers and
//!   its ordinal, kept only if newer than the stored one (every node that serves the user
//!   writes; the newest wins). It writes at each [`checkpoint`](crate::ThreadState::checkpoint)
//!   (a run started or ended), when `replay_events / 2` events of the user passed since the
//!   thread last changed unsnapshotted, and after a sync that folded events the stored
//!   snapshot did not cover (the node that folded them may be gone), so that the history still
//!   holds what followed the snapshot. The opening must fold back into the same state (the AG-UI run state does:
//!   tested at every point of a run).
//! * **A thread subscription** opens from the node's exact state, under the channel lock, then
//!   the live tail, as on one node; if the state is not exact, it waits for the sync first
//!   (its first poll; [`Subscription::start_id`](crate::Subscription::start_id) is final once
//!   the opening is taken). Since a sync may read the history ahead of the node's feed, the
//!   live frames whose id the opening covers are skipped: the seam rule of a resume.
//! * **When the history no longer reaches back to the snapshot** (the snapshot's ordinal plus
//!   the thread's events after it fall short of the thread's count: no node with an exact
//!   state wrote a snapshot while `replay_events` events passed, as after losing Redis' data or
//!   every node's feed for that long), the sync still rebuilds the state from the snapshot and
//!   the events that remain, counts it in
//!   [`Stats::thread_states_unknown`](crate::Stats::thread_states_unknown), logs it at `warn`,
//!   and writes it as the new snapshot: the thread's state is then partly unknown, exactly as
//!   on a single node when an event cannot be applied. This is a choice: ending the stream
//!   instead would end every reconnect the same way, forever, since no node can rebuild what
//!   the history lost. A node that has been listening throughout never syncs, so it keeps its
//!   exact state. A sync fails when it cannot read the backplane (down, too slow) or when
//!   the node's window no longer holds every frame delivered while it read (a slow read during
//!   a burst of events); a subscription waits for three syncs at most (for the Redis backplane
//!   each is bounded by its `subscribe_timeout` and `command_timeout`), and if none got
//!   through it ends before sending any event, with the jittered `retry:` of the faults below,
//!   so that the client comes back instead of receiving an opening that is not the thread's.
//!   While a node's link is down, a thread whose state it holds exact opens from that state as
//!   the cut left it (the node cannot know what it missed); such a stream ends with the
//!   node's others when it is connected again, and its client comes back to the whole run
//!   (`tests/agui_node_faults.rs`).
//!
//! * **When Redis loses *all* its data** in the middle of a run (a restart without
//!   persistence, a flush), nothing in Redis is left to show it: the thread starts again at
//!   its next event (ordinal 1), as a new one would. So the backplane keeps a *generation
//!   marker* in Redis (a key with a random value and no time to live, set anew by whatever
//!   finds it absent, which tells every node at once; see the [Redis keys][redis-keys]); a
//!   node that finds another value, at a reconnect or while connected (a `FLUSHALL` cuts no
//!   connection), knows Redis lost its data
//!   (counted in the [`RedisBackplane`]'s `health().data_losses`, logged at `warn`), and tells
//!   its channels ([`LocalChannels::kick_after_loss`]) before it dispatches any event published
//!   after the loss. Its streams end, as at any reconnect, but it *keeps* the exact state it
//!   held of each thread, instead of forgetting it, since Redis no longer holds what it
//!   covers. Then:
//!
//!   - when the node next meets the thread (its next event on the feed, or a subscription's
//!     sync) and Redis holds every event of the thread since it started over, and no snapshot
//!     of it yet, the node goes on from its kept state plus those events: its state is the
//!     whole thread, and it writes it as the thread's snapshot, so that Redis holds the whole
//!     thread again and every other node, and every new tab, opens with the whole run. If
//!     nothing was published since, it waits for the thread's next event to write it (Redis
//!     counts the thread only from there). Logged at `warn`. Until a sync finds a snapshot of
//!     the thread stored after the loss, a later interruption keeps the state again (its
//!     snapshot may not have reached Redis);
//!   - when Redis already holds a snapshot of the thread that folds events from before the
//!     loss ([`ThreadSnapshot::from_before_loss`]: another node went on from its kept state
//!     first), that snapshot is the thread's, as for any sync. One that does not (a node that
//!     never held the thread folded it from where Redis started it over, and stored that) is
//!     passed over while Redis still holds every event since it started the thread over (else
//!     it is the most there is: see below), and never replaces one that does, whatever it
//!     covers (Redis keeps which is which): the whole thread wins, and the node that stored the
//!     partial one, its next snapshot refused for that, reads the thread back;
//!   - a node that knew the thread without holding an exact state of it (its sync had not
//!     ended), or whose kept state cannot be joined (Redis no longer holds every event since
//!     the thread started over), cannot rebuild it: the state it reads back (the thread since
//!     Redis started it over, maybe from another node's snapshot of that) is counted in
//!     [`Stats::thread_states_unknown`](crate::Stats::thread_states_unknown) and logged at
//!     `warn`, as when the history no longer reaches back to the snapshot (above). Once: the
//!     first event that state then cannot apply (to the AG-UI run state, an event of the run
//!     whose start it lacks) is that same loss, and is not counted again.
//!
//!   *Limits:* what Redis confirmed and lost before it reached a node's feed is not in the
//!   kept state (the [lost tail](#faults) of a history, which no node can see); if the nodes
//!   kept different states (one's feed lagged at the crash), the first snapshot stored is the
//!   one the others read back, and each keeps its own state until its next interruption. A
//!   node that folded the thread from where Redis started it over, before the whole one was
//!   back, opens with that partial state until its next snapshot is refused (at the thread's
//!   next checkpoint, or `replay_events / 2` events later), or its feed is interrupted. A
//!   thread that no node held (no node served the user, or every node restarted too) starts
//!   over from what Redis holds after the loss. The backplane does not count those, but the
//!   AG-UI run state marks the run unknown at an event of it with no `RUN_STARTED` (counted in
//!   `thread_states_unknown` by a node that folds that event from its feed; not by one that
//!   reads it back), and a connection to the thread opens with a `RUN_ERROR` (`code`
//!   `run_unknown`) until the next run starts, and is sent that run, not the rest of the
//!   unknown one (see
//!   [`run_state`](crate::run_state#edge-cases)). Use persistence that keeps acknowledged
//!   writes where that matters (see the faults below). Conversely, a marker that goes without
//!   the data (evicted, deleted) is no loss: whatever sets it again finds keys of the backplane
//!   in Redis, and says so in the new marker, so nothing is counted and no stream ends. (Its
//!   search gives up after about 64 000 keys of a Redis shared with other data: the marker then
//!   reads as a loss, counted in `data_losses`; a kept state is only joined to events that
//!   follow the last one it holds, since Redis' ids grow with time, so where Redis still
//!   holds the thread from before, the node reads it back as after any interruption, and
//!   folds nothing twice.)
//! * **When Redis drops a thread's keys alone** (evicted: Redis must run with
//!   `maxmemory-policy noeviction`, see [Eviction][redis-eviction]; or deleted), it numbers the
//!   thread's next event 1 again, with no loss to announce. A node that folded the thread
//!   exactly sees an event numbered at or below what it folded, yet newer than it (a copy of
//!   one it folded has its id or an older one, and is dropped), and handles it as a loss of
//!   that thread alone: it keeps its state and goes on from it, putting the whole thread back
//!   in Redis (logged at `warn`; `tests/redis_thread_started_over.rs`). A node that folded the thread
//!   before but holds no exact state of it now (its feed was interrupted) takes the event
//!   numbered 1 again with a newer id for the thread started over too, not for its start: it
//!   reads the thread back, and so opens with the whole run another node put back. If none did
//!   yet (no node held the run, or its put-back had not landed), the read (at that event, or
//!   at a subscription's sync) holds only the thread since Redis started it over after every
//!   event the node folded: the node opens with that and counts it in
//!   [`Stats::thread_states_unknown`](crate::Stats::thread_states_unknown), once, until a
//!   put-back refuses its snapshot and it reads the whole run back. A thread no
//!   node held starts over from what Redis holds, as above. A node that reads it back before
//!   anything was published into it again (so before any node put it back) finds no snapshot
//!   and the history holding more of the thread's events than Redis counts: it rebuilds the
//!   thread from the history, from the thread's first event (marked in its entry), which is
//!   the whole thread and not counted; if the history no longer holds that event, from what it
//!   holds, counted unknown. It then meets the thread's next event numbered 1 again as a
//!   node that held the thread's exact state does.
//! * **Local only**: an event published into a thread while the backplane is unreachable is
//!   delivered to this node's thread subscriptions without an id (as any such event) and is
//!   not folded: it is in no history, and no other node has it.
//! * **Bounds**: the backplane keeps at most
//!   [`ThreadConfig::max_threads_per_user`](crate::ThreadConfig::max_threads_per_user) threads
//!   per (channel, user) (the thread published to least recently is forgotten, snapshot and
//!   count; its next event is numbered 1 again, and a node that knew it handles that as a
//!   thread whose keys Redis dropped, above).
//!
//! # Faults
//!
//! The guarantees hold under faults, as the fault campaign checks (`tests/redis_fault_campaign.rs`,
//! BENCHMARKS.md): a client never receives an event twice, receives a user's events in the
//! order of their ids, and never misses one silently; a publish the API confirmed reaches every
//! client of the user, or the client is told with a `reset` or `lagged` that it lost some.
//!
//! * **The backplane is unreachable when publishing.** The publish fails with
//!   [`PublishError::Backplane`](crate::PublishError::Backplane), and the publishing node's own
//!   connections still receive the event, *without an `id:` line*, so their last event id stays
//!   valid; the loss (other nodes, and the history) is counted in
//!   [`Stats::backplane_failures`](crate::Stats::backplane_failures) and in the
//!   `sse_hub_backplane_failures_total` metric. This happens only when the event surely did not
//!   reach the backplane.
//! * **The backplane is slow, or the connection breaks after a publish was sent.** The
//!   outcome is unknown: the publish is sent again, idempotently (each carries a token the
//!   backplane recognises), until it is confirmed, and the caller gets its id. If it stays
//!   unconfirmed, the caller gets [`BackplaneError::Unknown`] (HTTP `504`): the event may have
//!   reached every node, so it is *not* delivered locally without an id, and retrying it may
//!   duplicate it.
//! * **The publish queue is full.** [`BackplaneError::Overloaded`]: the event is delivered
//!   nowhere (delivering it locally at once would overtake the publishes queued before it).
//!   An [`EventRouter`](crate::EventRouter)'s event is queued for all its channels at once
//!   ([`Backplane::publish_all`]), or refused for all.
//! * **The live feed was interrupted.** A node cannot know what it missed while it was not
//!   listening, so when it is connected again it ends its local streams, each with a jittered
//!   `retry:` ([`SseConfig::shutdown_retry_jitter`](crate::SseConfig::shutdown_retry_jitter)) so
//!   that clients do not all come back at once: they reconnect with their `Last-Event-ID` and
//!   resume from the history, with the gap signalled if the history lost events too (a
//!   restarted Redis without persistence), never a silent loss and never a duplicate.
//! * **The history lost its tail** (Redis restarted from a snapshot older than its last
//!   events, or failed over to a replica that lagged): a client whose last id is one of the
//!   lost events gets `expired` (its id is missing from a span the history must hold whole),
//!   and one whose id is ahead of everything the history issued gets `unknown`. *Limit:* a
//!   client whose last id is at or before the restored history's last event cannot be told
//!   apart from one that saw everything: Redis keeps no trace of what it lost, so the events
//!   published between the snapshot and the crash are missing from its resume without a
//!   `reset`. Use persistence that does not lose acknowledged writes (AOF with
//!   `appendfsync always`, `WAIT` on replicas) where that matters.
//! * **A subscribe whose catch-up fails** (the backplane down, too slow to confirm the feed or
//!   to read the history, or refusing to let the node listen to the user's feed, as a Redis ACL
//!   may: the node asks again with backoff, and serves its other users meanwhile) is served
//!   *degraded*: no priming id, no history, and only frames without an id (events published on
//!   this node that could not go through). It cannot vouch for any id, so it never sends one:
//!   at the first live event with an id it ends (as it does as soon as the node is connected
//!   and listens to the user's feed; the user's other streams, whose catch-up went through,
//!   stay), and the client resumes from its own last id, in order, without a gap. A client that
//!   came without an id has none to resume from, and a fresh start would skip what was
//!   published while it was degraded: it is primed with `0-0`, the position before every
//!   event, so that its reconnect opens with a `reset` (`expired`). That opening is how the
//!   stream says it is degraded: `id: 0-0`, or no priming `id:` for a client that sent one.
//! * **[`Broadcaster::disconnect_user`](crate::Broadcaster::disconnect_user)** ends the user's
//!   streams on every node (best effort while the backplane is unreachable).
//!   [`Config::max_connections_per_user`](crate::Config::max_connections_per_user) is a cap per
//!   node: a user may hold that many connections on each node.

//! # Memory
//!
//! On top of the single-node bounds of the [crate docs](crate#memory), with the same letters
//! (`F` = [`max_frame_bytes`](crate::Config::max_frame_bytes), `W` =
//! [`replay_bytes`](crate::Config::replay_bytes), `N` =
//! [`replay_events`](crate::Config::replay_events)) and `Q` = the publish queue
//! ([`RedisConfig::publish_queue`]):
//!
//! * a subscription catching up holds at most `min(N·F, W)` bytes of replayed frames: the
//!   backplane reads nothing beyond the replay bounds (a resume from further back is `expired`);
//! * a node's publish queue holds at most `Q·F` bytes of heads, and the publish tokens it
//!   remembers about 8192 × 40 bytes;
//! * in Redis, a (channel, user) history holds at most `N + min(max(N/8, 1), 64)` entries
//!   (each at most `F`), none older than [`replay_age`](crate::Config::replay_age) once a
//!   publish trims it (up to its oldest event of a thread: a thread's events go by the length
//!   bound only, since a thread's snapshots are written by count, and a sync needs the events
//!   after the last; a publish deletes at most 256 aged entries, so a longer backlog of them
//!   takes several publishes),
//!   plus a small hash of publish marks (one field per node that published to the user
//!   lately: expired marks are dropped once it holds 64; see the
//!   [Redis keys][redis-keys]), and expires
//!   [`RedisConfig::history_ttl`] after the last node serving the user left;
//! * in Redis, with threads, per (channel, user): at most `T` =
//!   [`max_threads_per_user`](crate::ThreadConfig::max_threads_per_user) snapshots, each the
//!   size of its thread's opening (about its state's bytes: at most about
//!   [`RunStates::max_thread_bytes`](crate::run_state::RunStates::max_thread_bytes) for the
//!   AG-UI run state), plus a count and a recency entry per thread, expiring with the history;
//! * a sync holds the snapshot and the thread's events of the history (at most the history's
//!   `N + min(max(N/8, 1), 64)` entries) while it folds them; a node writes at most 64
//!   snapshots at a time, and past it keeps the newest snapshot of each thread waiting for a
//!   writer (at most one opening per thread it holds: a run's end may be its thread's last
//!   snapshot for long, so it is not dropped).

//! # Sync and async
//!
//! The backplane is reached over the network, so its operations are asynchronous:
//!
//! * [`Broadcaster::broadcast_async`](crate::Broadcaster::broadcast_async) (and
//!   [`EventRouter::route_async`](crate::EventRouter::route_async)) publish and report the id or
//!   the error. The sync [`broadcast`](crate::Broadcaster::broadcast) *queues* the event for the
//!   backplane, in order with every other publish of the node, and returns at once with no id;
//!   its failures are handled as above (local delivery when the event surely did not get
//!   through, counted) but not returned, except a full queue, which is
//!   [`BackplaneError::Overloaded`] (delivered nowhere).
//! * [`Broadcaster::subscribe_async`](crate::Broadcaster::subscribe_async) resolves once the
//!   subscription is caught up, so its [`start_id`](crate::Subscription::start_id) is final. The
//!   sync [`subscribe_from`](crate::Broadcaster::subscribe_from) and
//!   [`sse_response`](crate::Broadcaster::sse_response) work too: the subscription catches up
//!   when first polled, and the SSE body sends its priming `id:` after that.
//! * A fresh subscription (no `Last-Event-ID`) starts where its catch-up finds the history:
//!   its priming id is the history's last id then. So an event published after the response's
//!   head went out but before that read (the node was already listening) is before the
//!   stream's start, and is not delivered to it, as an event published just before a
//!   single-node subscribe is not. A client that must not miss what follows its connect waits
//!   for the priming id (or resumes from an id it has).
//!
// Without the `redis` feature these items do not exist: the links then point at this page's
// own account of them, so that the docs build without warnings under any set of features.
#![cfg_attr(
    not(feature = "redis"),
    doc = "[`RedisBackplane`]: self\n[`RedisConfig::publish_queue`]: self\n\
           [`RedisConfig::history_ttl`]: self\n[redis-keys]: self\n[redis-tls]: self\n\
           [redis-eviction]: self"
)]
#![cfg_attr(
    feature = "redis",
    doc = "[redis-keys]: redis#keys\n[redis-tls]: redis#tls\n[redis-eviction]: redis#eviction"
)]

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::event_id::EventId;
use crate::stats::Published;
use crate::thread::ThreadId;
use crate::user_id::UserId;

mod local;
#[cfg(feature = "redis")]
pub mod redis;

pub use self::local::LocalChannels;
pub(crate) use self::local::LocalDelivery;

#[cfg(feature = "redis-tls")]
pub use self::redis::RedisTls;
#[cfg(feature = "redis")]
pub use self::redis::{BackplaneHealth, RedisBackplane, RedisConfig};

/// A boxed future that is `Send`, as the [`Backplane`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use crate::error::BackplaneError;

/// What a publish through the backplane comes to: the event's id and reach, or the error, as
/// [`Backplane::publish`] describes. Dropping it does not cancel the publish.
pub type Outcome = BoxFuture<'static, Result<Published, BackplaneError>>;

/// One of the publishes of [`Backplane::publish_all`]: an event's encoded `event:`/`data:`
/// lines for `user` on the channel of `channels`, into `thread` if there is one.
#[derive(Clone, Debug)]
pub struct PublishRequest {
    /// The local channels of the broadcaster the event is published on.
    pub channels: LocalChannels,
    /// The user it is published to.
    pub user: UserId,
    /// The thread it goes into, if any (see [`Backplane::publish_in_thread`]).
    pub thread: Option<ThreadId>,
    /// The event's encoded lines, without an id line.
    pub head: Bytes,
}

/// What a backplane's history holds after a position: the answer to [`Backplane::catch_up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The last id the history ever issued (`0-0` if none).
    pub last_id: EventId,
    /// The newest id the history cannot resume from (`0-0` if none): a client whose id is
    /// older lost what followed it. Usually the newest id deleted from the history; newer
    /// when the client's own id is gone from the history (a history restored without its
    /// tail) or what follows it exceeds the replay bounds.
    pub deleted_through: EventId,
    /// The finished frames after the requested position, oldest first, each ending with its
    /// `id:` line, with the thread each was published into, if any.
    pub events: Vec<(EventId, Bytes, Option<ThreadId>)>,
}

/// A thread's snapshot in a backplane: the frames of its state's opening, and what they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSnapshot {
    /// The id of the last event of the user's history the snapshot covers: every event of the
    /// thread up to it is folded in.
    pub covers: EventId,
    /// How many events of the thread it folds (the ordinal of the last one).
    pub count: u64,
    /// The state's opening ([`ThreadState::write_opening`](crate::ThreadState::write_opening)):
    /// complete SSE frames, which a fresh state folds back into the same state.
    pub opening: Bytes,
    /// The state folds events from before the backplane last started the thread over (a node
    /// kept it across a loss of the backplane's data, or read it from such a snapshot). Such a
    /// snapshot outranks one that does not, whatever they cover: that one is of a node that
    /// folded only what followed (see the [module docs](self#threads)).
    pub from_before_loss: bool,
}

/// What a backplane holds of one thread: the answer to [`Backplane::catch_up_thread`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadHistory {
    /// The last id the user's history ever issued (`0-0` if none): the read covers every
    /// event up to it.
    pub last_id: EventId,
    /// How many events were ever published into the thread (since it was last forgotten). A
    /// backplane that forgot the thread's count and snapshot (Redis evicted them) while its
    /// history still holds the thread from its first event, nothing published into it since,
    /// may answer the thread whole from there: those events, with their number here.
    pub count: u64,
    /// The thread's newest snapshot, if any.
    pub snapshot: Option<ThreadSnapshot>,
    /// The thread's frames the history holds after the snapshot (all of them without one),
    /// oldest first, each ending with its `id:` line. The read is *complete* when the
    /// snapshot's count plus these make [`count`](Self::count).
    pub events: Vec<(EventId, Bytes)>,
}

impl ThreadHistory {
    /// Whether the snapshot and the events hold every event of the thread.
    pub fn is_complete(&self) -> bool {
        let base = self.snapshot.as_ref().map_or(0, |s| s.count);
        base + self.events.len() as u64 == self.count
    }
}

/// A distributed event bus shared by the nodes of a cluster: see the [module docs](self).
///
/// The methods are called by the broadcasters attached to the backplane; none blocks (they are
/// called under the registry's locks). An implementation must never call back into a
/// [`LocalChannels`] from inside one of them.
pub trait Backplane: Send + Sync + 'static {
    /// A broadcaster was created with this backplane: frames for its channel name go to
    /// `channels`.
    fn attach(&self, channels: LocalChannels);

    /// The node now holds a channel for `user` on `channel`: listen to its live feed. Calls for
    /// the same channel and user are counted; the node stops listening when as many
    /// [`channel_removed`](Self::channel_removed) calls have been made.
    fn channel_created(&self, channel: &str, user: &UserId);

    /// The node no longer holds that channel.
    fn channel_removed(&self, channel: &str, user: &UserId);

    /// Publishes an event, given as its encoded `event:`/`data:` lines, to `user` on the
    /// channel of `channels`.
    ///
    /// The publish is queued when this is called, in call order; the future only reports the
    /// outcome, and dropping it does not cancel the publish. The result is the event's id and
    /// the number of nodes that received it, or no id when nothing was stored because no node
    /// serves the user and the user has no history (as a single node does for a user without
    /// a channel), or when a retry finds that the publish ran but can no longer tell its id
    /// (the history no longer holds it). When the backplane cannot take the
    /// event, the implementation delivers it to the node's own connections with
    /// [`LocalChannels::deliver_local_only`] and returns the error.
    fn publish(
        &self,
        channels: &LocalChannels,
        user: &UserId,
        head: Bytes,
    ) -> BoxFuture<'static, Result<Published, BackplaneError>>;

    /// Publishes one event to several channels (an [`EventRouter`](crate::EventRouter)'s
    /// targets: AG-UI or A2A, and context) as one: every publish is queued, in order, or none
    /// is. A refusal ([`BackplaneError::Overloaded`], [`BackplaneError::Closed`]) is the
    /// result, and the event then went nowhere, so that a caller who retries it cannot
    /// duplicate it on the channels that had taken it. Otherwise the result has a future per
    /// publish, each as [`publish`](Self::publish) or
    /// [`publish_in_thread`](Self::publish_in_thread) returns it.
    ///
    /// The default queues them one by one with those two methods, and cannot take back the
    /// ones queued before a refusal: a backplane whose queue can refuse a publish overrides
    /// it.
    fn publish_all(&self, publishes: Vec<PublishRequest>) -> Result<Vec<Outcome>, BackplaneError> {
        Ok(publishes
            .into_iter()
            .map(|p| match &p.thread {
                None => self.publish(&p.channels, &p.user, p.head),
                Some(thread) => self.publish_in_thread(&p.channels, &p.user, thread, p.head),
            })
            .collect())
    }

    /// Waits (bounded) until the node listens to `user`'s live feed on `channel`, then reads
    /// the history after `after` (no events when `after` is `None`).
    fn catch_up(
        &self,
        channel: &str,
        user: &UserId,
        after: Option<EventId>,
    ) -> BoxFuture<'static, Result<History, BackplaneError>>;

    /// Whether the backplane is connected now.
    fn is_connected(&self) -> bool;

    /// Whether the backplane carries threads: [`publish_in_thread`](Self::publish_in_thread),
    /// [`catch_up_thread`](Self::catch_up_thread) and
    /// [`store_thread_snapshot`](Self::store_thread_snapshot). Without them (the default), a
    /// publish into a thread is [`PublishError::ThreadsNeedOneNode`](crate::PublishError::ThreadsNeedOneNode).
    fn supports_threads(&self) -> bool {
        false
    }

    /// [`publish`](Self::publish) into `thread`: the thread travels with the event, in the
    /// history and on the feed, and every node delivers it with
    /// [`LocalChannels::deliver_in_thread`], with the event's ordinal in the thread. Unlike a
    /// plain publish, it is stored even when no node serves the user, as a single node keeps
    /// it. The default refuses.
    fn publish_in_thread(
        &self,
        channels: &LocalChannels,
        user: &UserId,
        thread: &ThreadId,
        head: Bytes,
    ) -> BoxFuture<'static, Result<Published, BackplaneError>> {
        let _ = (channels, user, thread, head);
        Box::pin(std::future::ready(Err(BackplaneError::Failed(
            "this backplane does not carry threads".into(),
        ))))
    }

    /// Waits (bounded) until the node listens to `user`'s live feed on `channel`, then reads
    /// `thread`'s newest snapshot and the thread's events the history holds after it. With
    /// `kept` (the node kept the thread's state across a loss of the backplane's data), a
    /// snapshot that is not [`from_before_loss`](ThreadSnapshot::from_before_loss) is passed
    /// over, and the read holds every event the history holds of the thread: the kept state
    /// goes on with them. The default refuses.
    fn catch_up_thread(
        &self,
        channel: &str,
        user: &UserId,
        thread: &ThreadId,
        kept: bool,
    ) -> BoxFuture<'static, Result<ThreadHistory, BackplaneError>> {
        let _ = (channel, user, thread, kept);
        Box::pin(std::future::ready(Err(BackplaneError::Failed(
            "this backplane does not carry threads".into(),
        ))))
    }

    /// Stores `snapshot` as `thread`'s, unless the backplane holds a newer one or forgot the
    /// thread. Does not block: best effort, in the background (a later snapshot replaces a
    /// lost one). The default does nothing.
    fn store_thread_snapshot(
        &self,
        channel: &str,
        user: &UserId,
        thread: &ThreadId,
        snapshot: ThreadSnapshot,
    ) {
        let _ = (channel, user, thread, snapshot);
    }

    /// [`Broadcaster::disconnect_user`](crate::Broadcaster::disconnect_user) was called on
    /// this node: end the user's streams on `channel` on every node, this one included, after
    /// the publishes queued before, so that they still reach the streams. Returns `false` if it
    /// cannot (the broadcaster then ends this node's streams at once). Best effort for the
    /// other nodes (one that cannot be reached keeps its streams); this node's streams end
    /// either way. The default returns `false`.
    fn disconnect_user(&self, channel: &str, user: &UserId) -> bool {
        let _ = (channel, user);
        false
    }
}
