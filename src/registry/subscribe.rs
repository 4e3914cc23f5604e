//! Subscribing: joining a user's channel (created on first use, within the caps), resuming
//! from a `Last-Event-ID`, and with a backplane, catching up with the shared history.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dashmap::mapref::entry::Entry;
use tokio::time::Instant;

use super::{Broadcaster, threads};
use crate::backplane::BoxFuture;
use crate::channel::{JoinRefused, UserChannel};
use crate::error::SubscribeError;
use crate::subscription::{Remote, Subscription};
use crate::thread::ThreadId;
use crate::user_id::UserId;

impl<E> Broadcaster<E> {
    /// Subscribes a new connection of `user` to live events.
    pub fn subscribe(&self, user: &UserId) -> Result<Subscription<E>, SubscribeError> {
        self.subscribe_from(user, None)
    }

    /// Subscribes a connection that may resume: with the client's `Last-Event-ID`, the events
    /// after it that the replay window still holds come first, then live events, with no
    /// duplicate and no gap. An id that cannot be resumed (malformed, from an earlier channel,
    /// or older than the window) is never an error: the subscription starts with a `reset`
    /// control event and continues live.
    pub fn subscribe_from(
        &self,
        user: &UserId,
        last_event_id: Option<&str>,
    ) -> Result<Subscription<E>, SubscribeError> {
        self.join(user, last_event_id, None)
    }

    /// Subscribes a connection to one thread of `user`: it receives only the events published
    /// into `thread` (see the [`thread`](crate::ThreadId) docs).
    ///
    /// If the broadcaster keeps a state per thread ([`ThreadConfig::state`](crate::ThreadConfig::state)),
    /// the subscription starts with the state's opening, which rebuilds the thread so far, then
    /// the live tail, with no gap and no duplicate; `last_event_id` is then not needed (the
    /// opening covers it) and ignored. Otherwise it resumes from `last_event_id` as
    /// [`subscribe_from`](Self::subscribe_from) does, replaying only the thread's events; an id
    /// older than the window is `expired` only if an event of the thread left the window after
    /// it (the user's other threads may have pushed it out without taking anything of its own).
    pub fn subscribe_in_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        last_event_id: Option<&str>,
    ) -> Result<Subscription<E>, SubscribeError> {
        self.join(user, last_event_id, Some(thread))
    }

    fn join(
        &self,
        user: &UserId,
        last_event_id: Option<&str>,
        thread: Option<&ThreadId>,
    ) -> Result<Subscription<E>, SubscribeError> {
        let shared = &self.inner.shared;
        let refused = |error: SubscribeError, reason: &'static str| {
            shared.metrics.rejected(reason);
            // A full registry is an operational alarm; a user over their cap is routine.
            if matches!(error, SubscribeError::AtCapacity { .. }) {
                tracing::warn!(channel = %shared.config.name, user = %user, %error, "subscribe refused");
            } else {
                tracing::debug!(channel = %shared.config.name, user = %user, %error, "subscribe refused");
            }
            error
        };
        if shared.is_shutting_down() {
            return Err(refused(SubscribeError::ShuttingDown, "shutting_down"));
        }
        self.maybe_sweep();
        self.ensure_sweeper();
        // With a backplane, the client's id is a position in the shared history, not in the
        // local window: the local join starts live, and the subscription catches up remotely.
        let local_last_event_id = match self.inner.backplane {
            None => last_event_id,
            Some(_) => None,
        };
        loop {
            let channel = match self.channel(user) {
                Some(channel) => channel,
                None => self
                    .create_channel(user)
                    .map_err(|e| refused(e, "at_capacity"))?,
            };
            let remote = self.inner.backplane.is_some();
            match channel.join(local_last_event_id, thread, remote) {
                Ok(joined) => {
                    shared.connection_opened();
                    if let Some(reason) = joined.reset {
                        shared.resets.fetch_add(1, Ordering::Relaxed);
                        shared.metrics.reset(reason);
                        tracing::debug!(channel = %shared.config.name, user = %user, reason = reason.as_str(), "resume reset");
                    } else if local_last_event_id.is_some() {
                        tracing::debug!(channel = %shared.config.name, user = %user, replayed = joined.replay.len(), "resumed");
                    } else {
                        tracing::trace!(channel = %shared.config.name, user = %user, "subscribed");
                    }
                    let (needs_sync, remote_id, covered, degraded_kicks) = (
                        joined.needs_sync,
                        joined.remote_id,
                        joined.covered,
                        joined.degraded_kicks,
                    );
                    let thread_id = joined.thread.clone();
                    let thread_state = thread.is_some() && shared.config.threads.state.is_some();
                    let subscription =
                        Subscription::new(channel.clone(), joined, shared.config.lag_policy);
                    return Ok(match (&self.inner.backplane, thread_id) {
                        (None, _) => subscription,
                        // A thread with a state opens from it, once it is exact on this node:
                        // see the backplane docs.
                        (Some(backplane), Some(thread_id)) if thread_state => {
                            let sync = needs_sync.then(|| {
                                let sync =
                                    threads::ensure_exact(backplane.clone(), channel, thread_id);
                                Box::pin(sync) as BoxFuture<'static, _>
                            });
                            subscription.with_remote(Remote::thread_state(remote_id, covered, sync))
                        }
                        (Some(backplane), thread_id) => subscription.with_remote(
                            Remote::new(
                                backplane,
                                &shared.config.name,
                                user,
                                last_event_id,
                                degraded_kicks,
                            )
                            .in_thread(thread_id),
                        ),
                    });
                }
                Err(JoinRefused::Closed) => continue,
                Err(JoinRefused::ShuttingDown) => {
                    return Err(refused(SubscribeError::ShuttingDown, "shutting_down"));
                }
                Err(JoinRefused::TooManyConnections) => {
                    let max = shared.config.max_connections_per_user;
                    return Err(refused(
                        SubscribeError::TooManyConnections { max },
                        "too_many_connections",
                    ));
                }
            }
        }
    }

    pub(super) fn channel(&self, user: &UserId) -> Option<Arc<UserChannel>> {
        self.inner.channel(user)
    }

    pub(super) fn create_channel(&self, user: &UserId) -> Result<Arc<UserChannel>, SubscribeError> {
        let shared = &self.inner.shared;
        match self.inner.channels.entry(user.clone()) {
            Entry::Occupied(entry) => Ok(entry.get().clone()),
            Entry::Vacant(entry) => {
                let max = shared.config.max_channels;
                let reserved =
                    shared
                        .channels
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            (n < max).then_some(n + 1)
                        });
                let Ok(_) = reserved else {
                    return Err(SubscribeError::AtCapacity { max });
                };
                shared.metrics.channels.increment(1.0);
                // Born idle: retained until its first subscriber joins.
                shared.metrics.retained_channels.increment(1.0);
                let channel = Arc::new(UserChannel::new(
                    user.clone(),
                    shared.clone(),
                    self.inner.expiry.clone(),
                ));
                // Queued at birth, so that a channel whose first subscribe fails still expires.
                self.inner.expiry.push(&channel, Instant::now());
                entry.insert(channel.clone());
                if let Some(backplane) = &self.inner.backplane {
                    backplane.channel_created(&shared.config.name, user);
                }
                // A publish into a thread makes channels too, maybe before anyone subscribed:
                // the sweeper must run to expire them.
                self.ensure_sweeper();
                Ok(channel)
            }
        }
    }
}

impl<E> Broadcaster<E> {
    /// Subscribes a connection that may resume, and returns once it is caught up: with a
    /// backplane, once the node listens to the user's live events and the history after
    /// `last_event_id` has been read, so that [`Subscription::start_id`] is final and a `reset`
    /// or the replay are its first frames. If the backplane cannot be reached in time, the
    /// subscription is *degraded*: live local events only, ended as soon as the backplane is
    /// back (see the [backplane docs](crate::backplane#faults)). Without a backplane, this is
    /// [`subscribe_from`](Self::subscribe_from).
    pub async fn subscribe_async(
        &self,
        user: &UserId,
        last_event_id: Option<&str>,
    ) -> Result<Subscription<E>, SubscribeError> {
        let mut subscription = self.subscribe_from(user, last_event_id)?;
        std::future::poll_fn(|cx| subscription.poll_caught_up(cx)).await;
        Ok(subscription)
    }
}
