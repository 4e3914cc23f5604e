//! Routing that waits for the [backplane](crate::backplane): the `_async` routes, which report
//! each target's id or the backplane's error.

use std::sync::Arc;

use serde::Serialize;

use super::{Channel, EventRouter, Route, Routed, routed};
use crate::backplane::Backplane;
use crate::encode::Payload;
use crate::error::PublishError;
use crate::models::{A2AEvent, AgUiEvent, AnalyticsEvent, SystemEvent};
use crate::registry::Broadcaster;
use crate::thread::ThreadId;
use crate::user_id::UserId;

/// Routing that waits for the [backplane](crate::backplane), if there is one.
impl EventRouter {
    /// Routes any event that implements [`Route`], waiting for the backplane so that the
    /// result has the events' ids (see [`Broadcaster::broadcast_async`]). If the backplane is
    /// unreachable, the error is [`PublishError::Backplane`], after every target channel was
    /// tried: this node's connections received the event on all of them, without an id. The
    /// other backplane errors deliver nothing locally: a full publish queue
    /// ([`Overloaded`](crate::backplane::BackplaneError::Overloaded)) refuses the event (on
    /// every target at once when they share the backplane), and a publish whose outcome stays
    /// [`Unknown`](crate::backplane::BackplaneError::Unknown) may have reached every node (see
    /// the [backplane docs](crate::backplane#faults)). Without a backplane this is
    /// [`route`](Self::route).
    pub async fn route_async<R: Route + Sync>(
        &self,
        user: &UserId,
        event: &R,
    ) -> Result<Routed, PublishError> {
        event.route_async(self, user).await
    }

    pub(super) async fn route_agui_async(
        &self,
        user: &UserId,
        event: &AgUiEvent,
    ) -> Result<Routed, PublishError> {
        event.validate()?;
        self.route_with_context_async(user, event, &self.agui, "agui", None)
            .await
    }

    /// [`route_agui_in_thread`](Self::route_agui_in_thread), waiting for the backplane if
    /// there is one (see [`Broadcaster::broadcast_in_thread_async`]): the thread travels with
    /// the event to every node, and a connection to the thread on any node opens with the run
    /// so far (see the [backplane docs](crate::backplane#threads)). A backplane that does not
    /// carry threads gives [`PublishError::ThreadsNeedOneNode`].
    pub async fn route_agui_in_thread_async(
        &self,
        user: &UserId,
        thread: &ThreadId,
        event: &AgUiEvent,
    ) -> Result<Routed, PublishError> {
        event.validate()?;
        if self.agui.backplane().is_none() {
            return self.route_with_context(user, event, &self.agui, "agui", Some(thread));
        }
        self.route_with_context_async(user, event, &self.agui, "agui", Some(thread))
            .await
    }

    pub(super) async fn route_a2a_async(
        &self,
        user: &UserId,
        event: &A2AEvent,
    ) -> Result<Routed, PublishError> {
        event.validate()?;
        self.route_with_context_async(user, event, &self.a2a, "a2a", None)
            .await
    }

    pub(super) async fn route_system_async(
        &self,
        user: &UserId,
        event: &SystemEvent,
    ) -> Result<Routed, PublishError> {
        let wrapped = self.system_payload(event)?;
        let mut routed = Routed::default();
        let published = self.context.broadcast_payload_async(user, wrapped).await?;
        routed.push(Channel::Context.as_str(), published);
        Ok(routed)
    }

    pub(super) async fn route_analytics_async(
        &self,
        user: &UserId,
        event: &AnalyticsEvent,
    ) -> Result<Routed, PublishError> {
        event.validate()?;
        let mut routed = Routed::default();
        let published = self.analytics.broadcast_async(user, event).await?;
        routed.push(Channel::Analytics.as_str(), published);
        Ok(routed)
    }

    async fn route_with_context_async<E: Serialize>(
        &self,
        user: &UserId,
        event: &E,
        primary: &Broadcaster<E>,
        protocol: &'static str,
        thread: Option<&ThreadId>,
    ) -> Result<Routed, PublishError> {
        let (direct, wrapped) = self.payloads_with_context(event, primary, protocol)?;
        if thread.is_some() {
            self.prepare_thread_channels(user, primary)?;
        }
        if let Some(backplane) = self.backplane_of_both(primary) {
            return self
                .publish_both_async(
                    &backplane,
                    user,
                    thread,
                    (primary, direct, protocol),
                    wrapped,
                )
                .await;
        }
        // Both targets are tried even if the first fails, so that a backplane failure delivers
        // the event locally on both, as the sync route would.
        let (direct, wrapped) = match thread {
            None => (
                primary.broadcast_payload_async(user, direct).await,
                self.context.broadcast_payload_async(user, wrapped).await,
            ),
            Some(thread) => (
                primary
                    .broadcast_payload_in_thread_async(user, thread, direct)
                    .await,
                self.context
                    .broadcast_payload_in_thread_async(user, thread, wrapped)
                    .await,
            ),
        };
        routed([(protocol, direct), (Channel::Context.as_str(), wrapped)])
    }

    /// [`publish_both`](Self::publish_both), waiting for both outcomes.
    async fn publish_both_async<E>(
        &self,
        backplane: &Arc<dyn Backplane>,
        user: &UserId,
        thread: Option<&ThreadId>,
        (primary, direct, protocol): (&Broadcaster<E>, Payload, &'static str),
        wrapped: Payload,
    ) -> Result<Routed, PublishError> {
        let outcomes = self.publish_both(backplane, user, thread, (primary, &direct), &wrapped)?;
        // Every outcome is waited for, so that the result reports on all of them.
        let mut results = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            results.push(outcome.await.map_err(PublishError::Backplane));
        }
        routed(
            [protocol, Channel::Context.as_str()]
                .into_iter()
                .zip(results),
        )
    }
}
