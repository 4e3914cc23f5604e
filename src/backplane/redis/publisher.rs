//! The publish task of the Redis backplane: the node's publishes, in queue order, sent as
//! pipelined `EVALSHA`s of the publish script, with idempotent retries when their outcome is
//! unknown.
//!
//! Each publish carries a token, `node:counter`, where the counter grows in queue order. The
//! script records, per history, the last counter of each node that ran, and runs a publish
//! only if its counter is newer: so a batch sent again (after a timeout, or a connection cut
//! after the write) runs at most once, whichever copy Redis reads first, and the retry answers
//! with the id the first run gave. A retry whose mark Redis evicted (the marks go alone under
//! an evicting `maxmemory-policy`) finds its event in the history by its token instead, while
//! the history holds it. A publish is delivered locally without an id only when it
//! surely did not reach Redis (no connection when it was sent, or an error reply): then it is
//! in no history and on no other node, and the local copy is the only one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{RedisResult, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backplane::redis::state::{Job, Link, Queued, Shared, classify, deadline};
use crate::backplane::redis::wire::{BATCH, parse_published};
use crate::error::BackplaneError;
use crate::stats::Published;

/// What became of one attempt at a batch.
enum Attempt {
    /// Redis answered every publish (each with its result).
    Answered(Vec<Result<Published, BackplaneError>>),
    /// Nothing was sent: no connection, or the scripts were not loaded.
    NotSent(BackplaneError),
    /// Sent, and no answer: Redis may have run any prefix of the batch.
    Unknown(BackplaneError),
}

/// The publish queue's task: batches of publishes, pipelined, in order.
pub(crate) async fn run_publisher(shared: Arc<Shared>, mut queue: mpsc::Receiver<Queued>) {
    let mut counter: u64 = 0;
    let mut received = Vec::with_capacity(BATCH);
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut received, BATCH).await > 0 {
        for item in received.drain(..) {
            match item {
                Queued::Publish(mut job) => {
                    counter += 1;
                    job.counter = Some(counter);
                    batch.push(job);
                }
                Queued::Control { feed, message } => {
                    send(&shared, &mut batch).await;
                    control(&shared, &feed, &message).await;
                }
                Queued::Flush(done) => {
                    send(&shared, &mut batch).await;
                    let _ = done.send(());
                }
            }
        }
        send(&shared, &mut batch).await;
    }
}

/// A control message on a feed: a cluster-wide disconnect, which this node also waits for to
/// end its own streams. Best effort for the other nodes; this node's streams end either way.
async fn control(shared: &Shared, feed: &str, message: &str) {
    let Some(mut command) = shared.command() else {
        shared.kick_feed(feed);
        tracing::warn!(%feed, "backplane: disconnected, so disconnect_user ended this node's streams only");
        return;
    };
    // The message comes back to this node only if Redis had its SUBSCRIBE to the feed before
    // the PUBLISH, which is sure only once the SUBSCRIBE was confirmed. A feed not listened to
    // yet (its user just connected) is ended here.
    let listening = shared.listens(feed);
    let sent: RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(feed)
        .arg(message)
        .query_async(&mut command)
        .await;
    match sent {
        Err(error) => {
            shared.kick_feed(feed);
            tracing::warn!(%feed, %error, "backplane: disconnect_user may not have reached the other nodes");
        }
        Ok(_) if !listening => {
            shared.kick_feed(feed);
        }
        Ok(_) => {}
    }
}

/// Sends the batch until Redis answers, or the outcome stays unknown past
/// [`RedisConfig::publish_retry`](crate::backplane::RedisConfig::publish_retry); answers every
/// job and empties the batch.
async fn send(shared: &Shared, batch: &mut Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    let until = deadline(shared.config.publish_retry);
    let mut sent = false;
    loop {
        // A retry waits for Redis's answer until the deadline rather than the command
        // timeout: a slow Redis (answering 3 s late, say) then confirms the batch instead of
        // every attempt timing out.
        let wait = sent.then(|| until.saturating_duration_since(Instant::now()));
        match attempt(shared, batch, wait).await {
            Attempt::Answered(results) => {
                for (job, result) in batch.iter_mut().zip(results) {
                    match result {
                        // An error reply: the script did not run (or failed before storing).
                        Err(error) => shared.failed(job, error),
                        Ok(published) => job.answer(Ok(published)),
                    }
                }
                break;
            }
            Attempt::NotSent(error) if !sent => {
                for job in batch.iter_mut() {
                    shared.failed(job, error.clone());
                }
                break;
            }
            Attempt::NotSent(error) | Attempt::Unknown(error) => {
                sent = true;
                if Instant::now() >= until {
                    tracing::warn!(publishes = batch.len(), %error, "backplane: publishes unconfirmed; their outcome is unknown");
                    shared
                        .publish_unknown
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for job in batch.iter_mut() {
                        job.answer(Err(BackplaneError::Unknown));
                    }
                    break;
                }
                shared.publish_retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(publishes = batch.len(), %error, "backplane: outcome unknown; sending the batch again");
                wait_to_retry(shared, until).await;
            }
        }
    }
    batch.clear();
}

/// Waits before a retry: until the link is up again (if it is not), and a short pause.
async fn wait_to_retry(shared: &Shared, until: Instant) {
    let mut status = shared.status.subscribe();
    let _ = tokio::time::timeout_at(until, status.wait_for(|s| s.link == Link::Connected)).await;
    let pause = shared
        .config
        .reconnect_min
        .min(shared.config.command_timeout);
    tokio::time::sleep_until(until.min(Instant::now() + pause)).await;
}

/// How long Redis must keep this node's publish mark after a publish ran: while a copy of it
/// may still arrive. Every copy is sent before the batch's retry deadline (`publish_retry`
/// after its first send, which is before the first run), so it arrives within `publish_retry`
/// of the mark unless the network held it: the margin (another `publish_retry`, and a
/// minute) covers a copy held in flight, and clocks that differ after a failover. Validated
/// durations are at most a week: no overflow.
fn mark_ttl(publish_retry: Duration) -> Duration {
    publish_retry * 2 + Duration::from_secs(60)
}

/// Sends the batch as one pipeline; one result per job, in order. `wait` is set for a retry,
/// which the script then also looks for in the history (see the publish script).
async fn attempt(shared: &Shared, batch: &[Job], wait: Option<Duration>) -> Attempt {
    let Some((mut command, link)) = shared.command_of_link() else {
        return Attempt::NotSent(BackplaneError::Disconnected);
    };
    if let Some(wait) = wait {
        // This handle's own timeout; the node's other commands keep theirs.
        command.set_response_timeout(wait.max(shared.config.command_timeout));
    }
    let hash = shared.publish_script.get_hash();
    let mark_ttl = mark_ttl(shared.config.publish_retry);
    let fresh = shared.fresh_generation();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for job in batch {
        let keep = job.channels.history_len() as u64;
        let command = pipe.cmd("EVALSHA").arg(hash);
        match job.thread.as_deref() {
            None => command.arg(3).arg(&job.history).arg(&job.marks),
            Some((_, threads, recency)) => command
                .arg(5)
                .arg(&job.history)
                .arg(&job.marks)
                .arg(threads)
                .arg(recency),
        };
        command.arg(&shared.generation_key);
        command
            .arg(&job.feed)
            .arg(&job.head[..])
            .arg(keep)
            .arg((keep / 8).clamp(1, 64))
            .arg(shared.config.history_ttl.as_millis() as u64)
            .arg(&shared.node)
            .arg(job.counter.unwrap_or(0))
            .arg(job.channels.history_age().as_millis() as u64)
            .arg(
                job.thread
                    .as_deref()
                    .map_or("", |(thread, _, _)| thread.as_str()),
            )
            .arg(job.channels.max_threads())
            .arg(mark_ttl.as_millis() as u64)
            .arg(&fresh)
            .arg(u8::from(wait.is_some()));
    }
    for _ in 0..2 {
        let results = match pipe
            .query_async::<Vec<RedisResult<Value>>>(&mut command)
            .await
        {
            Ok(results) => results,
            Err(error) => {
                let error = classify(&error);
                shared.command_failed(&error, link);
                return Attempt::Unknown(error);
            }
        };
        let noscript = results
            .iter()
            .all(|r| matches!(r, Err(e) if e.code() == Some("NOSCRIPT")));
        if noscript {
            // The script cache was flushed (a restarted Redis): nothing ran. Load the script
            // and send the whole batch again.
            if let Err(error) = shared.publish_script.load_async(&mut command).await {
                return Attempt::NotSent(classify(&error));
            }
            continue;
        }
        return Attempt::Answered(
            results
                .into_iter()
                .map(|result| match result {
                    Ok(value) => parse_published(value).ok_or_else(|| {
                        BackplaneError::Failed("unexpected reply to the publish script".into())
                    }),
                    Err(error) => Err(classify(&error)),
                })
                .collect(),
        );
    }
    Attempt::NotSent(BackplaneError::Failed(
        "the publish script cannot be loaded".into(),
    ))
}
