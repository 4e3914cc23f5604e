//! The connection task of the Redis backplane: connects (checking the server's version, and
//! reading its generation marker, which tells a Redis that lost its data),
//! subscribes the node to the feeds it wants, dispatches what comes on them, checks the link
//! (and the generation marker, whose loss no reconnect shows when Redis loses its data
//! without cutting a connection), and reconnects with capped, jittered, exponential backoff;
//! and the catch-up read a subscribe makes through the command connection.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Value};
use tokio_stream::StreamExt;

use crate::backplane::redis::state::{Link, Shared, SnapshotWrite, classify, deadline};
use crate::backplane::redis::wire::{
    MIN_VERSION, parse_history, parse_thread_history, parse_version, plan_reconcile, snapshot_blob,
};
use crate::backplane::{History, ThreadHistory, ThreadSnapshot};
use crate::error::BackplaneError;
use crate::event_id::EventId;
use crate::thread::ThreadId;

/// Why a connection attempt failed.
enum ConnectError {
    /// Unreachable, refused, timed out: retried with backoff.
    Io(String),
    /// A server too old for the guarantees: retried at the longest backoff, logged as an error.
    Unsupported(String),
}

/// What a connection attempt established: the two connections, and the server's generation
/// marker.
struct Connected {
    sink: PubSubSink,
    stream: PubSubStream,
    command: MultiplexedConnection,
    generation: String,
}

/// Connects both connections, checks the server's version, loads the scripts and reads the
/// generation marker.
async fn connect(shared: &Shared) -> Result<Connected, ConnectError> {
    let io = |e: redis::RedisError| ConnectError::Io(e.to_string());
    let timeout = shared.config.command_timeout;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut command = shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(io)?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut command)
        .await
        .map_err(io)?;
    let Some((version, text)) = parse_version(&info) else {
        return Err(ConnectError::Unsupported(
            "the server did not report a redis_version".into(),
        ));
    };
    shared.lock().version = Some(text.clone());
    if version < MIN_VERSION {
        return Err(ConnectError::Unsupported(
            BackplaneError::Unsupported {
                version: text,
                requirement: "Redis 7.0 or later (for the stream's max-deleted-entry-id)",
            }
            .to_string(),
        ));
    }
    let mut pubsub = tokio::time::timeout(timeout, shared.client.get_async_pubsub())
        .await
        .map_err(|_| ConnectError::Io("connecting timed out".to_owned()))?
        .map_err(io)?;
    // Before the marker is read: a marker set after the read is then heard of on this
    // connection, before any event that follows it.
    tokio::time::timeout(timeout, pubsub.subscribe(&shared.generation_key))
        .await
        .map_err(|_| ConnectError::Io("SUBSCRIBE timed out".to_owned()))?
        .map_err(io)?;
    for script in [
        &shared.publish_script,
        &shared.history_script,
        &shared.thread_script,
        &shared.snapshot_script,
        &shared.generation_script,
    ] {
        script.load_async(&mut command).await.map_err(io)?;
    }
    let generation = generation(shared, &mut command).await.map_err(io)?;
    let (sink, stream) = pubsub.split();
    Ok(Connected {
        sink,
        stream,
        command,
        generation,
    })
}

/// The server's generation marker (`<prefix>:generation`), created with a new random value if
/// absent (and said on its channel: see the generation script). Nothing else writes or deletes
/// it, and it has no time to live: a value other than the one the node saw last means Redis
/// lost its data in between (a restart without persistence, a flush), which nothing else in
/// Redis can show, since every key went with it.
async fn generation(
    shared: &Shared,
    command: &mut MultiplexedConnection,
) -> redis::RedisResult<String> {
    shared
        .generation_script
        .key(&shared.generation_key)
        .arg(shared.fresh_generation())
        .invoke_async(command)
        .await
}

/// The connection task: connects, serves until the connection fails, reconnects with backoff.
pub(crate) async fn run_connection(shared: Arc<Shared>) {
    let config = &shared.config;
    let mut backoff = config.reconnect_min;
    let mut ever_connected = false;
    let mut failing = false;
    loop {
        match connect(&shared).await {
            Ok(connected) => {
                backoff = config.reconnect_min;
                if ever_connected {
                    shared
                        .reconnects
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // A loss is told to the channels here, at once: if this connection failed
                // before it served, the next one would read the new marker as the one it saw,
                // and could never tell them; and before it serves any read (see
                // `generation_seen`).
                shared.generation_seen(&connected.generation);
                let error = serve(
                    &shared,
                    connected.sink,
                    connected.stream,
                    connected.command,
                    ever_connected,
                )
                .await;
                ever_connected = true;
                failing = false;
                tracing::warn!(%error, "backplane: connection to Redis lost; reconnecting");
                shared.lost(error);
            }
            Err(ConnectError::Unsupported(error)) => {
                tracing::error!(%error, "backplane: refusing this Redis server");
                shared.set_link(Link::Down, Some(error));
                backoff = config.reconnect_max;
                tokio::time::sleep(backoff).await;
            }
            Err(ConnectError::Io(error)) => {
                if failing {
                    tracing::debug!(%error, "backplane: cannot connect to Redis");
                } else {
                    tracing::warn!(%error, "backplane: cannot connect to Redis; retrying with backoff");
                }
                failing = true;
                shared.set_link(Link::Down, Some(error));
                let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
                tokio::time::sleep(backoff + jitter).await;
                // Both are at most a week (validated): no overflow.
                backoff = (backoff * 2).min(config.reconnect_max);
            }
        }
    }
}

/// (Un)subscribes what changed, until nothing is left to do.
async fn reconcile(shared: &Shared, sink: &mut PubSubSink) -> Result<(), String> {
    let timeout = shared.config.command_timeout;
    loop {
        let (subscribe, unsubscribe) = {
            let mut state = shared.lock();
            let plan = plan_reconcile(
                &state.dirty,
                |f| state.wanted.contains_key(f),
                &state.subscribed,
            );
            for feed in &plan.batch {
                state.dirty.remove(feed);
            }
            for feed in &plan.unsubscribe {
                state.subscribed.remove(feed);
            }
            if plan.batch.is_empty() {
                return Ok(());
            }
            (plan.subscribe, plan.unsubscribe)
        };
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
            let mut state = shared.lock();
            for feed in subscribe {
                if let Some(wanted) = state.wanted.get_mut(&feed) {
                    wanted.confirmed = true;
                }
                state.subscribed.insert(feed);
            }
            drop(state);
            shared.confirmed();
        }
    }
}

/// Refreshes the time to live of the histories (and publish marks) of the users the node
/// serves.
fn refresh_ttls(shared: &Shared) {
    let Some(mut command) = shared.command() else {
        return;
    };
    let keys: Vec<Arc<str>> = shared
        .lock()
        .wanted
        .values()
        .flat_map(|w| {
            [
                w.history.clone(),
                w.marks.clone(),
                w.threads[0].clone(),
                w.threads[1].clone(),
            ]
        })
        .collect();
    let ttl = shared.config.history_ttl.as_millis() as u64;
    tokio::spawn(async move {
        for chunk in keys.chunks(1024) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("PEXPIRE").arg(&**key).arg(ttl).ignore();
            }
            if let Err(error) = pipe.query_async::<()>(&mut command).await {
                tracing::debug!(%error, "backplane: refreshing history TTLs failed");
                return;
            }
        }
    });
}

/// Ends the streams served degraded, now that the backplane is connected.
fn kick_degraded(shared: &Shared) {
    let kick: Vec<Arc<str>> = shared.lock().to_kick.drain().collect();
    if !kick.is_empty() {
        shared.end_degraded(&kick);
    }
}

/// Reads the generation marker on the command connection, within the command timeout: `Err`
/// (why) if it does not answer. Commands on a connection that went silently dead only ever
/// time out, and a timeout alone does not mean the connection is dead (Redis may just be slow:
/// a publish then waits for its answer, see the publisher), so without this probe nothing
/// would replace it: the node would say it is connected while every publish ends
/// [`BackplaneError::Unknown`](crate::error::BackplaneError::Unknown).
///
/// The probe reads the marker so that a loss no reconnect shows (a `FLUSHALL`) is found even
/// while nothing runs a script: each script that creates keys sets a missing marker and says
/// so on its channel first, but none may run for a while.
async fn ping_command(shared: &Shared, command: &MultiplexedConnection) -> Result<(), String> {
    // A clone of the connection the node uses, with its own response timeout: a probe queued
    // behind a publish pipeline waits for it, as any command would.
    let mut command = command.clone();
    command.set_response_timeout(shared.config.command_timeout);
    let marker = generation(shared, &mut command);
    match tokio::time::timeout(shared.config.command_timeout, marker).await {
        Ok(Ok(marker)) => {
            shared.generation_seen(&marker);
            Ok(())
        }
        Ok(Err(error)) => Err(format!(
            "reading the generation marker on the command connection failed: {error}"
        )),
        Err(_) => {
            Err("reading the generation marker on the command connection timed out".to_owned())
        }
    }
}

/// Serves one connection until it fails; returns why. `reconnected` if the node was connected
/// before.
async fn serve(
    shared: &Shared,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    command: MultiplexedConnection,
    reconnected: bool,
) -> String {
    let link = shared.set_command(command.clone());
    // Messages that arrive meanwhile wait in the connection's buffer.
    if let Err(error) = reconcile(shared, &mut sink).await {
        return error;
    }
    shared.set_link(Link::Connected, None);
    if reconnected {
        tracing::info!("backplane: reconnected to Redis");
        // What was published while the node did not listen is only in the histories. The
        // streams end with a jittered `retry:` (see `SseConfig::shutdown_retry_jitter`), so
        // their clients do not all come back at once. After a loss, the states kept when it
        // was found stay kept (and one joined since is kept with what it holds of the new
        // Redis).
        shared.lock().to_kick.clear();
        shared.kick_all(false);
    } else {
        // Subscribes served degraded before the first connection (a start while Redis is
        // down) resume properly now.
        kick_degraded(shared);
    }
    let mut ping = tokio::time::interval(shared.config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut refresh =
        tokio::time::interval((shared.config.history_ttl / 3).max(Duration::from_millis(10)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    let payload = bytes::Bytes::copy_from_slice(message.get_payload_bytes());
                    shared.dispatch(message.get_channel_name(), payload);
                }
                None => return "the pub/sub connection closed".to_owned(),
            },
            () = shared.wake.notified() => {
                if shared.link_broken(link) {
                    return "the command connection failed".to_owned();
                }
                if let Err(error) = reconcile(shared, &mut sink).await {
                    return error;
                }
                kick_degraded(shared);
            }
            _ = ping.tick() => {
                // Both connections: either can die silently while the other lives. Probed
                // together, so a tick waits one command timeout at most.
                let pubsub = async {
                    let pong = tokio::time::timeout(shared.config.command_timeout, sink.ping::<Value>());
                    match pong.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(error)) => Err(format!("PING failed: {error}")),
                        Err(_) => Err("PING timed out".to_owned()),
                    }
                };
                let (pubsub, command) = tokio::join!(pubsub, ping_command(shared, &command));
                if let Err(error) = pubsub.and(command) {
                    return error;
                }
            }
            _ = refresh.tick() => refresh_ttls(shared),
        }
    }
}

/// Waits until the node listens to `feed` ([`RedisConfig::subscribe_timeout`] at most), then
/// reads the history after `after`, within the replay bounds of `channel`.
///
/// [`RedisConfig::subscribe_timeout`]: crate::backplane::RedisConfig::subscribe_timeout
pub(crate) async fn read_history(
    shared: &Shared,
    channel: &str,
    history: &str,
    feed: &str,
    after: Option<EventId>,
) -> Result<History, BackplaneError> {
    wait_subscribed(shared, feed).await?;
    let (mut command, link) = shared
        .command_of_link()
        .ok_or(BackplaneError::Disconnected)?;
    let (events, bytes, age) = shared.bounds(channel);
    let value: Value = shared
        .history_script
        .key(history)
        .key(&shared.generation_key)
        .arg(shared.config.history_ttl.as_millis() as u64)
        .arg(after.map(|id| id.to_string()).unwrap_or_default())
        .arg(events)
        .arg(bytes)
        .arg(age.as_millis() as u64)
        .arg(shared.fresh_generation())
        .invoke_async(&mut command)
        .await
        .map_err(|e| {
            let error = classify(&e);
            shared.command_failed(&error, link);
            error
        })?;
    parse_history(value)
        .ok_or_else(|| BackplaneError::Failed("unexpected reply to the history script".into()))
}

/// Waits until the node listens to `feed`, then reads `thread`'s snapshot and its entries
/// after it (see the thread catch-up script). A read under a generation marker the node had
/// not seen tells the node's channels of the loss first (which makes the sync that asked for
/// it fail: it started before the loss, and the next one reads the thread again).
pub(crate) async fn read_thread(
    shared: &Shared,
    history: &str,
    threads: &str,
    feed: &str,
    thread: &ThreadId,
    kept: bool,
) -> Result<ThreadHistory, BackplaneError> {
    wait_subscribed(shared, feed).await?;
    let (mut command, link) = shared
        .command_of_link()
        .ok_or(BackplaneError::Disconnected)?;
    let value: Value = shared
        .thread_script
        .key(history)
        .key(threads)
        .key(&shared.generation_key)
        .arg(shared.config.history_ttl.as_millis() as u64)
        .arg(thread.as_str())
        .arg(shared.fresh_generation())
        .arg(u8::from(kept))
        .invoke_async(&mut command)
        .await
        .map_err(|e| {
            let error = classify(&e);
            shared.command_failed(&error, link);
            error
        })?;
    let unexpected =
        || BackplaneError::Failed("unexpected reply to the thread catch-up script".into());
    let (read, marker) = parse_thread_history(value).ok_or_else(unexpected)?;
    shared.generation_seen(&marker);
    Ok(read)
}

/// The snapshot script's answer when the stored snapshot folds events from before Redis
/// started the thread over, and the one it was given does not.
const OUTRANKED: i64 = 2;

/// Snapshot writes a node has in flight at most; past it, a snapshot waits for a writer.
const SNAPSHOTS_IN_FLIGHT: usize = 64;

/// Stores a thread's snapshot, newer-wins, in the background: best effort (dropped if the link
/// is down or changes first: the nodes then read their threads back, which stores them again).
///
/// Past [`SNAPSHOTS_IN_FLIGHT`] writes, the snapshot waits for one to end, replacing the one of
/// its thread that waited: it may be the thread's last for a long while (a run's end), so it
/// is not dropped, and the waiting ones hold at most one opening per thread the node holds.
pub(crate) fn store_snapshot(
    shared: &Arc<Shared>,
    threads: String,
    thread: &ThreadId,
    snapshot: &ThreadSnapshot,
) {
    let (Some((_, link)), Ok(runtime)) = (
        shared.command_of_link(),
        tokio::runtime::Handle::try_current(),
    ) else {
        return;
    };
    let write = SnapshotWrite {
        link,
        covers: snapshot.covers,
        blob: snapshot_blob(snapshot),
        from_before_loss: snapshot.from_before_loss,
    };
    let mut writes = shared.snapshot_writes();
    if writes.writing >= SNAPSHOTS_IN_FLIGHT {
        let waiting = writes.waiting.entry((threads, thread.clone())).or_insert_with(|| {
            tracing::debug!(%thread, "backplane: too many snapshot writes in flight; one waits");
            write.clone()
        });
        if waiting.covers < write.covers {
            *waiting = write;
        }
        return;
    }
    writes.writing += 1;
    drop(writes);
    runtime.spawn(write_snapshots(
        shared.clone(),
        (threads, thread.clone()),
        write,
    ));
}

/// Writes a snapshot, then the waiting ones, until none waits.
async fn write_snapshots(
    shared: Arc<Shared>,
    mut key: (String, ThreadId),
    mut write: SnapshotWrite,
) {
    loop {
        let (threads, thread) = &key;
        match shared.command_of_link() {
            Some((mut command, link)) if link == write.link => {
                let stored: Result<i64, _> = shared
                    .snapshot_script
                    .key(threads)
                    .arg(thread.as_str())
                    .arg(write.covers.to_string())
                    .arg(write.blob)
                    .arg(shared.config.history_ttl.as_millis() as u64)
                    .arg(u8::from(write.from_before_loss))
                    .invoke_async(&mut command)
                    .await;
                match stored {
                    Err(error) => {
                        tracing::debug!(%thread, %error, "backplane: a thread snapshot could not be stored")
                    }
                    Ok(OUTRANKED) => shared.snapshot_outranked(threads, thread),
                    Ok(_) => {}
                }
            }
            _ => {
                tracing::debug!(%thread, "backplane: a thread snapshot of an earlier link dropped")
            }
        }
        let mut writes = shared.snapshot_writes();
        let Some(next) = writes.waiting.keys().next().cloned() else {
            writes.writing -= 1;
            return;
        };
        let Some(next_write) = writes.waiting.remove(&next) else {
            writes.writing -= 1;
            return;
        };
        (key, write) = (next, next_write);
    }
}

async fn wait_subscribed(shared: &Shared, feed: &str) -> Result<(), BackplaneError> {
    let until = deadline(shared.config.subscribe_timeout);
    let mut status = shared.status.subscribe();
    loop {
        status.mark_unchanged();
        {
            let state = shared.lock();
            match state.wanted.get(feed) {
                Some(wanted) if wanted.confirmed => return Ok(()),
                Some(_) => {}
                // The subscription holds the local channel, so this does not happen.
                None => return Err(BackplaneError::Failed("no local channel".into())),
            }
        }
        if status.borrow().link == Link::Down {
            return Err(BackplaneError::Disconnected);
        }
        match tokio::time::timeout_at(until, status.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(BackplaneError::Disconnected),
            Err(_) => return Err(BackplaneError::Timeout),
        }
    }
}
