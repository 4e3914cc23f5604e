//! What the node listens to: the connection task (un)subscribes the feeds its users need, one
//! batch per round trip, and records Redis's answers, each before any message read after it is
//! dispatched (see [`link`](super::link)).
//!
//! Redis may refuse a `SUBSCRIBE` (an error reply: an ACL that does not grant the node's Redis
//! user that user's channel, say). That concerns the user, not the link: the feed is recorded
//! as refused, its streams are served degraded at once (their catch-up fails without waiting
//! for the subscribe timeout), the refusal is in the health's `last_error` and `refused`, and
//! the feed is asked again with backoff, at the link checks; the other users are served as
//! usual. Redis 7 refuses a `SUBSCRIBE` of several channels as a whole when it refuses one of
//! them (one `NOPERM` error, none subscribed): such a batch is sent again one `SUBSCRIBE` per
//! feed, pipelined (one more round trip), so that only the refused feeds are refused.

use std::sync::Arc;

use futures_util::future::try_join_all;
use redis::aio::PubSubSink;
use redis::{ErrorKind, RedisError};
use tokio::time::Instant;

use crate::backplane::redis::feeds::Refused;
use crate::backplane::redis::state::{Shared, State};
use crate::backplane::redis::wire::plan_reconcile;

/// (Un)subscribes what changed, until none of the feeds to do when called is left (those of
/// the users who came meanwhile may be).
pub(crate) async fn reconcile_wanted_now(
    shared: &Shared,
    sink: &mut PubSubSink,
) -> Result<(), String> {
    let mut pending: Vec<Arc<str>> = shared.lock().dirty.iter().cloned().collect();
    while !pending.is_empty() {
        reconcile_pass(shared, sink).await?;
        let state = shared.lock();
        pending.retain(|feed| state.dirty.contains(feed));
    }
    Ok(())
}

/// (Un)subscribes the next batch of what changed; `Ok(true)` if more is left to do. `Err` if
/// the link failed: a timeout, a broken connection. Not for a refused `SUBSCRIBE`, which is
/// the user's (see the module docs).
pub(crate) async fn reconcile_pass(shared: &Shared, sink: &mut PubSubSink) -> Result<bool, String> {
    let timeout = shared.config.command_timeout;
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
            return Ok(false);
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
        let answer = tokio::time::timeout(timeout, sink.subscribe(&names))
            .await
            .map_err(|_| "SUBSCRIBE timed out".to_owned())?;
        match answer {
            Ok(()) => confirmed(shared, &subscribe),
            Err(error) if !is_refusal(&error) => return Err(format!("SUBSCRIBE failed: {error}")),
            Err(error) if subscribe.len() == 1 => refused(shared, &subscribe[0], &error),
            Err(_) => {
                let each = subscribe
                    .iter()
                    .map(|feed| subscribe_one(shared, sink, feed));
                tokio::time::timeout(timeout, try_join_all(each))
                    .await
                    .map_err(|_| "SUBSCRIBE timed out".to_owned())??;
            }
        }
    }
    Ok(!shared.lock().dirty.is_empty())
}

/// Subscribes `feed` alone, and records the answer as soon as it comes: a confirmation, or a
/// refusal. `Err` if the link failed.
async fn subscribe_one(shared: &Shared, sink: &PubSubSink, feed: &Arc<str>) -> Result<(), String> {
    let mut sink = sink.clone();
    match sink.subscribe(&**feed).await {
        Ok(()) => confirmed(shared, std::slice::from_ref(feed)),
        Err(error) if is_refusal(&error) => refused(shared, feed, &error),
        Err(error) => return Err(format!("SUBSCRIBE failed: {error}")),
    }
    Ok(())
}

/// Whether Redis answered with an error (it refused the command) rather than the link failing.
fn is_refusal(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// Redis confirmed the node's `SUBSCRIBE` to `feeds`.
fn confirmed(shared: &Shared, feeds: &[Arc<str>]) {
    let mut state = shared.lock();
    for feed in feeds {
        if let Some(wanted) = state.wanted.get_mut(feed) {
            wanted.confirmed = true;
        }
        if state.refused.remove(feed).is_some() {
            tracing::info!(%feed, "backplane: Redis accepted a SUBSCRIBE it had refused");
        }
        state.subscribed.insert(feed.clone());
    }
    drop(state);
    shared.confirmed();
}

/// Redis refused the node's `SUBSCRIBE` to `feed`: recorded, for the user's streams, the
/// health, and the next attempt.
fn refused(shared: &Shared, feed: &Arc<str>, error: &RedisError) {
    let config = &shared.config;
    let message = format!("Redis refused to SUBSCRIBE the node to the feed {feed}: {error}");
    let mut state = shared.lock();
    if !state.wanted.contains_key(feed) {
        // The user left meanwhile: nothing to serve, nothing to retry.
        return;
    }
    let previous = state.refused.get(feed);
    let first = previous.is_none();
    let refusal = Refused::after(
        previous,
        message.clone(),
        config.reconnect_min,
        config.reconnect_max,
    );
    let backoff = refusal.backoff;
    state.refused.insert(feed.clone(), refusal);
    state.last_error = Some(message);
    drop(state);
    if first {
        tracing::warn!(%feed, %error, "backplane: Redis refused the SUBSCRIBE to a user's feed: the user's streams are served degraded; asking again with backoff");
    } else {
        tracing::debug!(%feed, %error, ?backoff, "backplane: Redis refused the SUBSCRIBE again");
    }
    // The streams waiting for the feed are served degraded now, not at their timeout.
    shared.confirmed();
}

/// Marks the refused feeds whose backoff ran out to be subscribed again, and wakes the task if
/// there are any: called at each link check.
pub(crate) fn retry_refused(shared: &Shared) {
    let now = Instant::now();
    let mut state = shared.lock();
    let State { refused, dirty, .. } = &mut *state;
    let mut due = false;
    for (feed, refusal) in refused.iter() {
        if refusal.retry_at <= now {
            due |= dirty.insert(feed.clone());
        }
    }
    drop(state);
    if due {
        shared.wake.notify_one();
    }
}

/// Ends the streams served degraded whose feed the node now listens to: their clients resume
/// properly. Those of a feed Redis refused stay until it accepts it (ending them would only
/// bring their clients back, degraded again, in a loop).
pub(crate) fn kick_degraded(shared: &Shared) {
    let kick: Vec<Arc<str>> = {
        let mut state = shared.lock();
        let State {
            to_kick, wanted, ..
        } = &mut *state;
        to_kick
            .extract_if(|feed| wanted.get(feed).is_none_or(|w| w.confirmed))
            .collect()
    };
    if !kick.is_empty() {
        shared.end_degraded(&kick);
    }
}
