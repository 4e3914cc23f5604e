//! The connection task of the Redis backplane: connects (checking the server's version, and
//! reading its generation marker, which tells a Redis that lost its data),
//! subscribes the node to the feeds it wants, dispatches what comes on them, checks the link
//! (and the generation marker, whose loss no reconnect shows when Redis loses its data
//! without cutting a connection), and reconnects with capped, jittered, exponential backoff.
//! What the node's streams ask of the command connection it installs is in
//! [`commands`](super::commands).
//!
//! Once a connection serves, the task dispatches while its own round trips (a `SUBSCRIBE`, the
//! link checks) are in flight, so that no live event waits for them: not for the `SUBSCRIBE` of
//! a user who just connected, nor for a check queued on a slow or stalled command connection
//! (behind a long history read, say), which may take up to
//! [`RedisConfig::command_timeout`](crate::backplane::RedisConfig::command_timeout). Only while a
//! new connection subscribes to every feed again are messages held back (see [`serve`]). Once
//! serving, the (un)subscribes and the link checks are two kinds of round trips, each one at a
//! time, and neither waits for the other: users who keep connecting never hold the checks off,
//! so a dead connection is still replaced within a check, and a check stalled on the command
//! connection does not hold off the `SUBSCRIBE` of a user who connects meanwhile, which goes on
//! the pub/sub connection (its catch-up read then waits on the command connection, within the
//! command timeout). A round trip (un)subscribes one batch of feeds at most, recording Redis's
//! answers (see [`reconcile`](super::reconcile)), a refusal included.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Value};
use tokio_stream::StreamExt;

use crate::backplane::redis::reconcile::{
    kick_degraded, reconcile_pass, reconcile_wanted_now, retry_refused,
};
use crate::backplane::redis::state::{Link, Shared};
use crate::backplane::redis::wire::{MIN_VERSION, parse_eviction_policy, parse_version};
use crate::error::BackplaneError;

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
    eviction_policy(shared, &mut command).await.map_err(io)?;
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

/// Reads the server's `maxmemory-policy`, and warns if Redis may evict the backplane's keys:
/// every one of them has a time to live, so even a `volatile-*` policy may. Redis then drops
/// keys without losing the rest of its data, which the generation marker does not show (see
/// the [module docs](super#eviction)).
async fn eviction_policy(
    shared: &Shared,
    command: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(command)
        .await?;
    let policy = parse_eviction_policy(&info);
    if let Some(policy) = policy.as_deref().filter(|p| *p != "noeviction") {
        tracing::warn!(
            policy,
            "Redis may evict the backplane's keys (its maxmemory-policy is not noeviction): an evicted history loses its replay, evicted publish marks let a retried publish be stored twice once the history no longer holds it, and a thread whose keys go starts over; run Redis with maxmemory-policy noeviction"
        );
    }
    shared.lock().eviction_policy = policy;
    Ok(())
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
                // A link that served (every feed subscribed, or refused: see `reconcile`) is
                // retried at once, the backoff reset. One lost before it served (its
                // `SUBSCRIBE`s timed out, its connection cut) is a failed attempt, and waits as
                // one: else the task would reconnect at once, again and again.
                let served = shared.link() == Link::Connected;
                shared.lost(error);
                if served {
                    backoff = config.reconnect_min;
                } else {
                    backoff = wait(backoff, config.reconnect_max).await;
                }
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
                backoff = wait(backoff, config.reconnect_max).await;
            }
        }
    }
}

/// Sleeps `backoff`, with up to 20 % of jitter; returns the next backoff: doubled, at most
/// `max`.
async fn wait(backoff: Duration, max: Duration) -> Duration {
    let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
    tokio::time::sleep(backoff + jitter).await;
    // Both are at most a week (validated): no overflow.
    (backoff * 2).min(max)
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

/// Reads the generation marker on the command connection, within the command timeout: `Err`
/// (why) if it does not answer. Commands on a connection that went silently dead only ever
/// time out, and a timeout alone does not mean the connection is dead (Redis may just be slow:
/// a publish then waits for its answer, see the publisher), so without this probe nothing
/// would replace it: the node would say it is connected while every publish ends
/// [`BackplaneError::Unknown`](crate::error::BackplaneError::Unknown).
///
/// The probe runs the generation script so that a loss no reconnect shows (a `FLUSHALL`) is
/// found even while nothing runs a script: each script that creates keys sets a missing marker
/// and says so on its channel first, but none may run for a while. The probe's reply is not
/// where the node learns of it: the announcement on the node's feed is, in the feed's order
/// (see [`Shared::generation_seen`]).
async fn ping_command(shared: &Shared, command: &MultiplexedConnection) -> Result<(), String> {
    // A clone of the connection the node uses, with its own response timeout: a probe queued
    // behind a publish pipeline waits for it, as any command would.
    let mut command = command.clone();
    command.set_response_timeout(shared.config.command_timeout);
    let probe = generation(shared, &mut command);
    match tokio::time::timeout(shared.config.command_timeout, probe).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!(
            "reading the generation marker on the command connection failed: {error}"
        )),
        Err(_) => {
            Err("reading the generation marker on the command connection timed out".to_owned())
        }
    }
}

/// A round trip the connection task makes on its link while it dispatches: a pass of
/// [`reconcile_pass`], or the [`ping`] of both connections. One of each at a time.
type RoundTrip<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// A round trip, polled as the connection task's own work: exempt from tokio's cooperative
/// budget, so that [`settle`] sees a reply that has come even when the task spent its budget
/// on the messages that followed it.
fn round_trip<'a>(
    future: impl Future<Output = Result<(), String>> + Send + 'a,
) -> Option<RoundTrip<'a>> {
    Some(Box::pin(tokio::task::coop::unconstrained(future)))
}

/// `PING`s both connections, together: either can die silently while the other lives, and
/// together, a check takes one command timeout at most.
async fn ping(
    shared: &Shared,
    mut sink: PubSubSink,
    command: &MultiplexedConnection,
) -> Result<(), String> {
    let pubsub = async {
        let pong = tokio::time::timeout(shared.config.command_timeout, sink.ping::<Value>());
        match pong.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("PING failed: {error}")),
            Err(_) => Err("PING timed out".to_owned()),
        }
    };
    let (pubsub, command) = tokio::join!(pubsub, ping_command(shared, command));
    pubsub.and(command)
}

/// Polls a round trip in flight once more, before a message is dispatched: `Some(why)` if it
/// ended and failed. The `redis` driver answers a request before it queues the messages it
/// reads after the reply, so a reply read before the message has reached its round trip: a
/// `SUBSCRIBE`'s confirmation is recorded (its feed marked confirmed) before any message read
/// after it is dispatched, as when the task awaited its round trips.
async fn settle(round_trip: &mut Option<RoundTrip<'_>>) -> Option<String> {
    let pending = round_trip.as_mut()?;
    let polled = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
    match polled {
        Poll::Pending => None,
        Poll::Ready(done) => {
            *round_trip = None;
            done.err()
        }
    }
}

/// The end of a round trip in flight; never, if none is.
async fn round_trip_done(round_trip: &mut Option<RoundTrip<'_>>) -> Result<(), String> {
    match round_trip {
        Some(pending) => pending.await,
        None => std::future::pending().await,
    }
}

/// Serves one connection until it fails; returns why. `reconnected` if the node was connected
/// before.
///
/// Once connected, the pub/sub messages are dispatched while a round trip is in flight (a
/// `SUBSCRIBE` for a user who just connected, the periodic link checks): a live event waits for
/// none of them, however slow the link or the command connection.
async fn serve(
    shared: &Shared,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    command: MultiplexedConnection,
    reconnected: bool,
) -> String {
    let link = shared.set_command(command.clone());
    // Messages that arrive meanwhile wait in the connection's buffer, not dispatched: after a
    // reconnect, to streams that missed what was published while the node did not listen, and
    // that the kick below ends so that they resume from the history; a newer event delivered
    // first would move their last id past that gap. Only the feeds wanted now, not those of
    // users who connect meanwhile (round trips, once the link serves): under a steady stream of
    // them, "until none is left" would never end, with the messages piling up in that buffer,
    // which is unbounded.
    if let Err(error) = reconcile_wanted_now(shared, &mut sink).await {
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
    let mut ping_tick = tokio::time::interval(shared.config.ping_interval);
    ping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping_tick.tick().await;
    let mut refresh =
        tokio::time::interval((shared.config.history_ttl / 3).max(Duration::from_millis(10)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    // Two kinds of round trips, each one at a time, as when the task awaited them in turn: the
    // passes that (un)subscribe, on the pub/sub connection, and the link checks, on both. A
    // wake that comes while a pass is in flight is taken when it ends (the `Notify` keeps it),
    // a tick while a check is, when it ends (the interval delays it): so PINGs never pile up
    // behind a slow one, and a PING left unanswered still ends the connection one command
    // timeout after it was sent. Neither kind waits for the other: a new user's `SUBSCRIBE`
    // does not wait for a check stalled on the command connection (the user would be served
    // degraded while the pub/sub connection answers at once), nor a check for users who keep
    // connecting.
    let mut pass: Option<RoundTrip<'_>> = None;
    let mut check: Option<RoundTrip<'_>> = None;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    for round_trip in [&mut pass, &mut check] {
                        if let Some(error) = settle(round_trip).await {
                            return error;
                        }
                    }
                    let payload = bytes::Bytes::copy_from_slice(message.get_payload_bytes());
                    shared.dispatch(message.get_channel_name(), payload);
                }
                None => return "the pub/sub connection closed".to_owned(),
            },
            done = round_trip_done(&mut pass), if pass.is_some() => {
                pass = None;
                if let Err(error) = done {
                    return error;
                }
            }
            done = round_trip_done(&mut check), if check.is_some() => {
                check = None;
                if let Err(error) = done {
                    return error;
                }
            }
            () = shared.wake.notified(), if pass.is_none() => {
                if shared.link_broken(link) {
                    return "the command connection failed".to_owned();
                }
                let mut sink = sink.clone();
                // One batch per pass, what is left waking the task again: users who keep
                // connecting would otherwise keep one pass going for as long as they come, and
                // a broken command connection (which the wake looks for) would not be taken
                // meanwhile.
                pass = round_trip(async move {
                    if reconcile_pass(shared, &mut sink).await? {
                        shared.wake.notify_one();
                    }
                    kick_degraded(shared);
                    Ok(())
                });
            }
            _ = ping_tick.tick(), if check.is_none() => {
                retry_refused(shared);
                check = round_trip(ping(shared, sink.clone(), &command));
            }
            _ = refresh.tick() => refresh_ttls(shared),
        }
    }
}
