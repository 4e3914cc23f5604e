//! What the node's streams ask of Redis through the command connection the connection task
//! installs: the catch-up reads a subscribe makes once the node listens to its user's feed (the
//! history after an id, a thread's snapshot and entries), and the thread snapshot writes.

use std::sync::Arc;

use redis::{ScriptInvocation, Value};

use crate::backplane::redis::state::{Link, Shared, SnapshotWrite, classify, deadline};
use crate::backplane::redis::wire::{parse_history, parse_thread_history, snapshot_blob};
use crate::backplane::{History, ThreadHistory, ThreadSnapshot};
use crate::error::BackplaneError;
use crate::event_id::EventId;
use crate::thread::ThreadId;

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
    let (events, bytes, age) = shared.bounds(channel);
    let mut script = shared.history_script.prepare_invoke();
    script
        .key(history)
        .key(&shared.generation_key)
        .arg(shared.config.history_ttl.as_millis() as u64)
        .arg(after.map(|id| id.to_string()).unwrap_or_default())
        .arg(events)
        .arg(bytes)
        .arg(age.as_millis() as u64)
        .arg(shared.fresh_generation());
    let value = run_when_subscribed(shared, feed, &script).await?;
    parse_history(value)
        .ok_or_else(|| BackplaneError::Failed("unexpected reply to the history script".into()))
}

/// Waits until the node listens to `feed`, then reads `thread`'s snapshot and its entries
/// after it (see the thread catch-up script). A read under a generation marker the node does
/// not know yet fails: it is of a Redis that lost the data the node's feed still brings (the
/// feed lags the command connection), and the node takes the loss in only when its feed
/// announces it (see [`Shared::generation_seen`]). The sync that asked for it fails, and the
/// next one reads the thread again.
pub(crate) async fn read_thread(
    shared: &Shared,
    history: &str,
    threads: &str,
    feed: &str,
    thread: &ThreadId,
    kept: bool,
) -> Result<ThreadHistory, BackplaneError> {
    let mut script = shared.thread_script.prepare_invoke();
    script
        .key(history)
        .key(threads)
        .key(&shared.generation_key)
        .arg(shared.config.history_ttl.as_millis() as u64)
        .arg(thread.as_str())
        .arg(shared.fresh_generation())
        .arg(u8::from(kept));
    let value = run_when_subscribed(shared, feed, &script).await?;
    let unexpected =
        || BackplaneError::Failed("unexpected reply to the thread catch-up script".into());
    let (read, marker) = parse_thread_history(value).ok_or_else(unexpected)?;
    if !shared.generation_known(&marker) {
        return Err(BackplaneError::Failed(
            "the thread was read under a generation marker the node's feed has not announced yet"
                .into(),
        ));
    }
    Ok(read)
}

/// Waits until the node listens to `feed`, then runs `script` on the command connection: so
/// that what it reads and what the feed delivers after it leave no gap. A failure that shows
/// the connection broken is told to the link task.
async fn run_when_subscribed(
    shared: &Shared,
    feed: &str,
    script: &ScriptInvocation<'_>,
) -> Result<Value, BackplaneError> {
    wait_subscribed(shared, feed).await?;
    let (mut command, link) = shared
        .command_of_link()
        .ok_or(BackplaneError::Disconnected)?;
    script.invoke_async(&mut command).await.map_err(|e| {
        let error = classify(&e);
        shared.command_failed(&error, link);
        error
    })
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

/// Waits until the connection task recorded Redis's confirmation of the node's `SUBSCRIBE` to
/// `feed` on the current connection ([`RedisConfig::subscribe_timeout`] at most).
///
/// [`RedisConfig::subscribe_timeout`]: crate::backplane::RedisConfig::subscribe_timeout
async fn wait_subscribed(shared: &Shared, feed: &str) -> Result<(), BackplaneError> {
    let until = deadline(shared.config.subscribe_timeout);
    let mut status = shared.status.subscribe();
    loop {
        status.mark_unchanged();
        {
            let state = shared.lock();
            match state.wanted.get(feed) {
                Some(wanted) if wanted.confirmed => return Ok(()),
                Some(_) => {
                    // Served degraded at once: Redis will not have the node listen to the
                    // user before the next attempt, a backoff away.
                    if let Some(refused) = state.refused.get(feed) {
                        return Err(BackplaneError::Failed(refused.error.clone()));
                    }
                }
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
