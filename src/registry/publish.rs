//! Publishing: encode once, check the limits, then the user's channel, or the backplane's
//! queue in multi-node mode.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::Broadcaster;
use crate::backplane::{Backplane, BackplaneError, LocalChannels, Outcome, PublishRequest};
use crate::encode::{Payload, ToSse};
use crate::error::PublishError;
use crate::stats::{Delivery, Published};
use crate::thread::ThreadId;
use crate::user_id::UserId;

impl<E> Broadcaster<E> {
    /// Encodes `event` once and publishes it to every connection of `user` but those
    /// subscribed to a thread, which receive only their thread's events.
    ///
    /// Publishing to a user with no connection is `Ok` with 0 connections reached; if the user's channel
    /// is retained, the event is kept in its window for the client's reconnect.
    pub fn broadcast(&self, user: &UserId, event: &E) -> Result<Published, PublishError>
    where
        E: ToSse,
    {
        let payload =
            Payload::encode(event).inspect_err(|_| self.inner.shared.metrics.encode_failed())?;
        self.broadcast_payload(user, payload)
    }

    /// Encodes `event` once and publishes it into `thread` of `user`: every connection of the
    /// user receives it, except those subscribed to another thread.
    ///
    /// Unlike [`broadcast`](Self::broadcast), a publish into a thread creates the user's
    /// channel if there is none, so that the event is kept (in the window, and folded into the
    /// thread's state if the broadcaster keeps one) for the retention: an agent often starts a
    /// run before its page is open. A full registry then refuses it with
    /// [`PublishError::AtCapacity`].
    pub fn broadcast_in_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        event: &E,
    ) -> Result<Published, PublishError>
    where
        E: ToSse,
    {
        let payload =
            Payload::encode(event).inspect_err(|_| self.inner.shared.metrics.encode_failed())?;
        self.broadcast_payload_in_thread(user, thread, payload)
    }

    /// [`broadcast_in_thread`](Self::broadcast_in_thread) for an already encoded event.
    pub fn broadcast_payload_in_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        payload: Payload,
    ) -> Result<Published, PublishError> {
        self.publish(user, payload, Some(thread))
    }

    /// Publishes an already encoded event. The payload should be an encoding of an `E`: this is
    /// how one serialisation serves several channels (see [`EventRouter`](crate::EventRouter)).
    pub fn broadcast_payload(
        &self,
        user: &UserId,
        payload: Payload,
    ) -> Result<Published, PublishError> {
        self.publish(user, payload, None)
    }

    fn publish(
        &self,
        user: &UserId,
        payload: Payload,
        thread: Option<&ThreadId>,
    ) -> Result<Published, PublishError> {
        let shared = &self.inner.shared;
        self.check_payload(&payload)?;
        let started = Instant::now();
        if self.inner.expiry.is_due(started) {
            self.sweep();
        }
        if let Some(backplane) = &self.inner.backplane {
            if thread.is_some() {
                self.keep_thread_channel(user)?;
            }
            let outcome = hand_to_backplane(backplane, &self.inner.local, user, &payload, thread);
            return queued(self.count_handed(outcome));
        }
        // A user without a channel (no connection, none retained) is published to all the same:
        // the event reaches nobody and is counted. A thread's event is kept: it makes the channel.
        //
        // The channel is published to under the map shard's read guard rather than with its
        // `Arc` cloned out: one atomic increment and decrement less on a line that is cold for
        // a user published to now and then. Nothing under the guard takes a map lock; the lock
        // order is the sweep's, the shard's then the channel's.
        let outcome = match (self.inner.channels.get(user), thread) {
            (Some(channel), _) => channel.publish(payload, thread, started),
            (None, None) => None,
            (None, Some(_)) => self
                .create_channel(user)
                .map_err(|_| PublishError::AtCapacity {
                    max: shared.config.max_channels,
                })?
                .publish(payload, thread, started),
        };
        let published = match outcome {
            Some((id, receivers)) => Published {
                id: Some(id),
                delivery: Delivery::Connections(receivers),
            },
            None => Published::default(),
        };
        shared.count_published(started);
        Ok(published)
    }

    /// Before a publish into a thread: this node keeps a channel for the user (the publish
    /// would make it), and with a backplane, the backplane must carry threads; the node then
    /// listens to the user's feed, folds the thread and writes its snapshots, as a single node
    /// does (see the [backplane docs](crate::backplane#threads)). The router calls it for every
    /// target first, so that a full registry refuses an event before it is published anywhere.
    pub(crate) fn keep_thread_channel(&self, user: &UserId) -> Result<(), PublishError> {
        if let Some(backplane) = &self.inner.backplane
            && !backplane.supports_threads()
        {
            return Err(PublishError::ThreadsNeedOneNode);
        }
        if self.channel(user).is_none() {
            self.create_channel(user)
                .map_err(|_| PublishError::AtCapacity {
                    max: self.inner.shared.config.max_channels,
                })?;
        }
        Ok(())
    }

    /// `payload`'s publish to `user` (into `thread`) on this channel, for
    /// [`Backplane::publish_all`]: what the router hands the backplane when one event goes to
    /// several channels. The payload must have been checked ([`check_payload`](Self::check_payload)),
    /// and for a thread, the channel kept ([`keep_thread_channel`](Self::keep_thread_channel)).
    pub(crate) fn publish_request(
        &self,
        user: &UserId,
        thread: Option<&ThreadId>,
        payload: &Payload,
    ) -> PublishRequest {
        self.maybe_sweep();
        PublishRequest {
            channels: self.inner.local.clone(),
            user: user.clone(),
            thread: thread.cloned(),
            head: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    /// Whether `payload` may be published now: the broadcaster is not shutting down and the
    /// frame is within [`Config::max_frame_bytes`](crate::Config::max_frame_bytes).
    pub fn check_payload(&self, payload: &Payload) -> Result<(), PublishError> {
        let shared = &self.inner.shared;
        if shared.is_shutting_down() {
            return Err(PublishError::ShuttingDown);
        }
        let max = shared.config.max_frame_bytes;
        if payload.frame_len() > max {
            let size = payload.frame_len();
            tracing::debug!(channel = %shared.config.name, size, max, "publish refused: frame too large");
            return Err(PublishError::FrameTooLarge { size, max });
        }
        Ok(())
    }

    /// Counts an event of this channel whose encoding failed elsewhere (the router's).
    pub(crate) fn count_encode_failure(&self) {
        self.inner.shared.metrics.encode_failed();
    }
}

/// Hands the event to the backplane (into `thread`, if any): the publish is queued by the call.
fn hand_to_backplane(
    backplane: &Arc<dyn Backplane>,
    local: &LocalChannels,
    user: &UserId,
    payload: &Payload,
    thread: Option<&ThreadId>,
) -> Outcome {
    let head = Bytes::copy_from_slice(payload.as_bytes());
    match thread {
        None => backplane.publish(local, user, head),
        Some(thread) => backplane.publish_in_thread(local, user, thread, head),
    }
}

impl<E> Broadcaster<E> {
    /// Counts a publish handed to the backplane as published by this node, unless the backplane
    /// refused it (a refusal to queue is ready at once: see [`queued`]). Counted here, on the
    /// publishing node, and not where the feed delivers it: every node serving the user
    /// delivers it, and a node that serves nobody delivers it nowhere.
    pub(crate) fn count_handed(&self, mut outcome: Outcome) -> Outcome {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let first = outcome.as_mut().poll(&mut cx);
        let refused = matches!(
            first,
            std::task::Poll::Ready(Err(BackplaneError::Overloaded | BackplaneError::Closed))
        );
        if !refused {
            self.inner.shared.count_handed();
        }
        match first {
            std::task::Poll::Ready(result) => Box::pin(std::future::ready(result)),
            std::task::Poll::Pending => outcome,
        }
    }
}

/// What a sync publish returns for a publish the backplane was given: queued, with no id yet,
/// unless the backplane refused it at once.
pub(crate) fn queued(mut outcome: Outcome) -> Result<Published, PublishError> {
    // The publish is queued by the call; one poll reports a refusal to queue, which is ready at
    // once. Dropping the future does not cancel the publish.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match outcome.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(error)) => Err(PublishError::Backplane(error)),
        std::task::Poll::Ready(Ok(published)) => Ok(published),
        std::task::Poll::Pending => Ok(Published {
            id: None,
            delivery: Delivery::Queued,
        }),
    }
}

/// Publishing and subscribing that wait for the [backplane](crate::backplane). Without a
/// backplane they are the sync methods.
impl<E> Broadcaster<E> {
    /// Encodes `event` once and publishes it to every connection of `user` on every node, but
    /// those subscribed to a thread.
    ///
    /// With a backplane, this waits for it: the result has the event's id in the shared
    /// history, and its [`Delivery::Nodes`] counts the *nodes* that received it (each delivers it to its
    /// own connections); no id means that nothing was stored, since no node serves the user
    /// and the user has no history, or (rarely) that the publish was sent again after its
    /// answer was lost, had run once, and its entry had left the history by then. When
    /// the backplane is unreachable the error is [`PublishError::Backplane`], and this node's
    /// connections still received the event, without an id (the loss is counted in
    /// [`Stats::backplane_failures`](crate::Stats::backplane_failures)); when its outcome is unknown (sent, never confirmed) the
    /// error is `Backplane(BackplaneError::Unknown)` and the event was not delivered locally
    /// (see the [backplane docs](crate::backplane#faults)). Without a backplane, this is
    /// [`broadcast`](Self::broadcast).
    pub async fn broadcast_async(&self, user: &UserId, event: &E) -> Result<Published, PublishError>
    where
        E: ToSse,
    {
        let payload =
            Payload::encode(event).inspect_err(|_| self.inner.shared.metrics.encode_failed())?;
        self.broadcast_payload_async(user, payload).await
    }

    /// [`broadcast_async`](Self::broadcast_async) for an already encoded event.
    pub async fn broadcast_payload_async(
        &self,
        user: &UserId,
        payload: Payload,
    ) -> Result<Published, PublishError> {
        let Some(backplane) = &self.inner.backplane else {
            return self.broadcast_payload(user, payload);
        };
        self.check_payload(&payload)?;
        self.maybe_sweep();
        let outcome = hand_to_backplane(backplane, &self.inner.local, user, &payload, None);
        self.count_handed(outcome)
            .await
            .map_err(PublishError::Backplane)
    }

    /// [`broadcast_in_thread`](Self::broadcast_in_thread), waiting for the backplane as
    /// [`broadcast_async`](Self::broadcast_async) does. With a backplane, the thread travels
    /// with the event to every node (see the [backplane docs](crate::backplane#threads)), and
    /// the event is stored even if no node serves the user yet. Without one, this is
    /// [`broadcast_in_thread`](Self::broadcast_in_thread).
    pub async fn broadcast_in_thread_async(
        &self,
        user: &UserId,
        thread: &ThreadId,
        event: &E,
    ) -> Result<Published, PublishError>
    where
        E: ToSse,
    {
        let payload =
            Payload::encode(event).inspect_err(|_| self.inner.shared.metrics.encode_failed())?;
        self.broadcast_payload_in_thread_async(user, thread, payload)
            .await
    }

    /// [`broadcast_in_thread_async`](Self::broadcast_in_thread_async) for an already encoded
    /// event.
    pub async fn broadcast_payload_in_thread_async(
        &self,
        user: &UserId,
        thread: &ThreadId,
        payload: Payload,
    ) -> Result<Published, PublishError> {
        let Some(backplane) = &self.inner.backplane else {
            return self.broadcast_payload_in_thread(user, thread, payload);
        };
        self.check_payload(&payload)?;
        self.maybe_sweep();
        self.keep_thread_channel(user)?;
        let outcome = hand_to_backplane(backplane, &self.inner.local, user, &payload, Some(thread));
        self.count_handed(outcome)
            .await
            .map_err(PublishError::Backplane)
    }
}
