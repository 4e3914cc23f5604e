//! [`Route`]: an event type that knows which channels it goes to.

use std::future::Future;

use super::{EventRouter, Routed};
use crate::error::PublishError;
use crate::models::{A2AEvent, AgUiEvent, AnalyticsEvent, SystemEvent};
use crate::user_id::UserId;

/// An event type that knows which channels it goes to. Implemented by the four standard event
/// types; implement it for your own to route them through [`EventRouter::route`].
///
/// ```
/// use serde::Serialize;
/// use sse_hub::{EventRouter, Payload, PublishError, Route, Routed, UserId};
///
/// /// A notification shown in the UI and logged in analytics.
/// #[derive(Serialize)]
/// struct Toast { text: String }
///
/// impl Route for Toast {
///     fn route(&self, router: &EventRouter, user: &UserId) -> Result<Routed, PublishError> {
///         let payload = Payload::encode(self)?;
///         let mut routed = Routed::default();
///         routed.push("agui", router.agui().broadcast_payload(user, payload.clone())?);
///         routed.push("analytics", router.analytics().broadcast_payload(user, payload)?);
///         Ok(routed)
///     }
/// }
///
/// let router = EventRouter::default();
/// let routed = router.route(&UserId::from("alice"), &Toast { text: "hi".into() })?;
/// assert_eq!(routed.connections(), 0);
/// # Ok::<(), PublishError>(())
/// ```
pub trait Route {
    /// Publishes `self` for `user` to its channels.
    fn route(&self, router: &EventRouter, user: &UserId) -> Result<Routed, PublishError>;

    /// Publishes `self` for `user` to its channels, waiting for the
    /// [backplane](crate::backplane) if there is one, so that the ids and the errors are
    /// reported (see [`Broadcaster::broadcast_async`](crate::Broadcaster::broadcast_async)). The four standard event types
    /// implement it; the default calls [`route`](Self::route), which with a backplane queues
    /// the events and reports no ids.
    fn route_async<'a>(
        &'a self,
        router: &'a EventRouter,
        user: &'a UserId,
    ) -> impl Future<Output = Result<Routed, PublishError>> + Send + 'a
    where
        Self: Sized + Sync,
    {
        async move { self.route(router, user) }
    }
}

impl Route for AgUiEvent {
    fn route(&self, router: &EventRouter, user: &UserId) -> Result<Routed, PublishError> {
        router.route_agui(user, self)
    }

    fn route_async<'a>(
        &'a self,
        router: &'a EventRouter,
        user: &'a UserId,
    ) -> impl Future<Output = Result<Routed, PublishError>> + Send + 'a {
        router.route_agui_async(user, self)
    }
}

impl Route for A2AEvent {
    fn route(&self, router: &EventRouter, user: &UserId) -> Result<Routed, PublishError> {
        router.route_a2a(user, self)
    }

    fn route_async<'a>(
        &'a self,
        router: &'a EventRouter,
        user: &'a UserId,
    ) -> impl Future<Output = Result<Routed, PublishError>> + Send + 'a {
        router.route_a2a_async(user, self)
    }
}

impl Route for SystemEvent {
    fn route(&self, router: &EventRouter, user: &UserId) -> Result<Routed, PublishError> {
        router.route_system(user, self)
    }

    fn route_async<'a>(
        &'a self,
        router: &'a EventRouter,
        user: &'a UserId,
    ) -> impl Future<Output = Result<Routed, PublishError>> + Send + 'a {
        router.route_system_async(user, self)
    }
}

impl Route for AnalyticsEvent {
    fn route(&self, router: &EventRouter, user: &UserId) -> Result<Routed, PublishError> {
        router.route_analytics(user, self)
    }

    fn route_async<'a>(
        &'a self,
        router: &'a EventRouter,
        user: &'a UserId,
    ) -> impl Future<Output = Result<Routed, PublishError>> + Send + 'a {
        router.route_analytics_async(user, self)
    }
}
