//! [`EventRouter`]: one event to the channels that should carry it.
//!
//! The four standard agent channels, with the routing of the crate sse-hub replaces:
//!
//! | event | [`Channel::AgUi`] | [`Channel::A2A`] | [`Channel::Context`] | [`Channel::Analytics`] |
//! |---|---|---|---|---|
//! | [`AgUiEvent`] | event | | wrapped | |
//! | [`A2AEvent`] | | event | wrapped | |
//! | [`SystemEvent`] | | | wrapped | |
//! | [`AnalyticsEvent`] | | | | event |
//!
//! *Wrapped* is the [`ContextEvent`] form `{"protocol":"agui"|"a2a"|"system","event":{...}}`, so
//! one aggregated stream per tab carries everything about the user's contexts (browsers allow
//! only six HTTP/1.1 connections per origin). The inner event is serialised once; each target's
//! frame is built from that one serialisation. Every target's frame is checked against its
//! channel's limits before any is published, so an event goes to all its targets or to none.
//! With a [backplane](crate::backplane) shared by the targets' channels, the targets are handed
//! to it together ([`Backplane::publish_all`]): a full publish queue refuses them all, so
//! that a caller who retries the event does not get it twice on one channel.
//!
//! Event types of your own get routes the same way: implement [`Route`] for them, publishing
//! to the standard channels or to broadcasters of your own with
//! [`Broadcaster::broadcast_payload`].

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use serde::Serialize;

use crate::backplane::{Backplane, Outcome};
use crate::config::Config;
use crate::encode::Payload;
use crate::error::{PublishError, SubscribeError};
use crate::models::{A2AEvent, AgUiEvent, AnalyticsEvent, ContextEvent, SystemEvent};
use crate::registry::Broadcaster;
use crate::run_state::RunStates;
use crate::sse::LastEventId;
use crate::stats::{Published, Stats};
use crate::thread::ThreadId;
use crate::user_id::UserId;

mod channel;
mod route;
mod route_async;
mod routed;

pub use channel::{Channel, UnknownChannel};
pub use route::Route;
pub use routed::Routed;

/// The broadcaster of AG-UI events.
pub type AgUiBroadcaster = Broadcaster<AgUiEvent>;
/// The broadcaster of agent-to-agent events.
pub type A2ABroadcaster = Broadcaster<A2AEvent>;
/// The broadcaster of the aggregated context stream.
pub type ContextBroadcaster = Broadcaster<ContextEvent>;
/// The broadcaster of analytics events.
pub type AnalyticsBroadcaster = Broadcaster<AnalyticsEvent>;

/// The process-wide AG-UI broadcaster, for drop-in use in place of the replaced crate's static.
/// It folds each thread's run ([`RunStates`]), as the AG-UI channel of every router does.
///
/// The four statics are created on first use, with the defaults: install the `metrics`
/// recorder before that first use, as before creating any broadcaster. They work from any
/// tokio runtime, one after another or at once (each `#[tokio::test]` has its own), but they
/// are one set per process: every test of a test binary shares their users' channels, and
/// [`shutdown`](Broadcaster::shutdown) on one refuses every later subscribe and publish on it
/// for the rest of the process. Tests, and applications that want their own [`Config`], build an
/// [`EventRouter`] and pass it in (an axum `State`).
pub static AGUI_BROADCASTER: LazyLock<AgUiBroadcaster> = LazyLock::new(|| {
    let mut config = Config::named(Channel::AgUi.as_str());
    config.threads.state = Some(Arc::new(RunStates::default()));
    Broadcaster::new(config)
});
/// The process-wide A2A broadcaster.
pub static A2A_BROADCASTER: LazyLock<A2ABroadcaster> =
    LazyLock::new(|| Broadcaster::new(Config::named(Channel::A2A.as_str())));
/// The process-wide context broadcaster.
pub static CONTEXT_BROADCASTER: LazyLock<ContextBroadcaster> =
    LazyLock::new(|| Broadcaster::new(Config::named(Channel::Context.as_str())));
/// The process-wide analytics broadcaster.
pub static ANALYTICS_BROADCASTER: LazyLock<AnalyticsBroadcaster> =
    LazyLock::new(|| Broadcaster::new(Config::named(Channel::Analytics.as_str())));

/// The four standard channels and the routing between them. Cheap to clone; construct one and
/// inject it, or use [`EventRouter::global`] over the process-wide statics.
#[derive(Debug, Clone)]
pub struct EventRouter {
    agui: AgUiBroadcaster,
    a2a: A2ABroadcaster,
    context: ContextBroadcaster,
    analytics: AnalyticsBroadcaster,
}

impl Default for EventRouter {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

/// Stats of the four channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterStats {
    /// The AG-UI channel.
    pub agui: Stats,
    /// The A2A channel.
    pub a2a: Stats,
    /// The context channel.
    pub context: Stats,
    /// The analytics channel.
    pub analytics: Stats,
}

impl EventRouter {
    /// Four new broadcasters sharing `config`, each under its channel's name. The AG-UI
    /// channel folds each thread's run ([`RunStates`], or the config's
    /// [`threads.state`](crate::ThreadConfig::state) if it has one); the other three keep no
    /// thread state, so that their thread streams resume by event id.
    pub fn new(config: Config) -> Self {
        Self::build(config, None)
    }

    /// Four new broadcasters sharing `config` (its thread state as in [`new`](Self::new)) and
    /// the `backplane`, so that routers on several nodes behave as one: see the
    /// [`backplane`](crate::backplane) module. Publish with [`route_async`](Self::route_async)
    /// to get the ids and the errors.
    pub fn with_backplane(config: Config, backplane: Arc<dyn Backplane>) -> Self {
        Self::build(config, Some(backplane))
    }

    fn build(config: Config, backplane: Option<Arc<dyn Backplane>>) -> Self {
        // A thread state folds one protocol: the AG-UI channel's. The other channels carry
        // other events (the context channel wraps them), which it cannot fold, and a channel
        // with a state opens thread streams from it instead of resuming them by id.
        let named = |channel: Channel| {
            let mut config = config.clone();
            config.name = Cow::Borrowed(channel.as_str());
            config.threads.state = None;
            config
        };
        // The AG-UI channel folds each thread's run, so that a connection to a thread opens
        // with the run so far (see `run_state`), with the config's state if it brings one.
        let mut agui = named(Channel::AgUi);
        agui.threads.state = Some(
            config
                .threads
                .state
                .clone()
                .unwrap_or_else(|| Arc::new(RunStates::default())),
        );
        Self {
            agui: Broadcaster::build(agui, backplane.clone()),
            a2a: Broadcaster::build(named(Channel::A2A), backplane.clone()),
            context: Broadcaster::build(named(Channel::Context), backplane.clone()),
            analytics: Broadcaster::build(named(Channel::Analytics), backplane),
        }
    }

    /// A router over broadcasters you configured one by one.
    pub fn from_broadcasters(
        agui: AgUiBroadcaster,
        a2a: A2ABroadcaster,
        context: ContextBroadcaster,
        analytics: AnalyticsBroadcaster,
    ) -> Self {
        Self {
            agui,
            a2a,
            context,
            analytics,
        }
    }

    /// The router over the process-wide statics ([`AGUI_BROADCASTER`] and the others).
    pub fn global() -> &'static EventRouter {
        static GLOBAL: LazyLock<EventRouter> = LazyLock::new(|| {
            EventRouter::from_broadcasters(
                AGUI_BROADCASTER.clone(),
                A2A_BROADCASTER.clone(),
                CONTEXT_BROADCASTER.clone(),
                ANALYTICS_BROADCASTER.clone(),
            )
        });
        &GLOBAL
    }

    /// The AG-UI broadcaster.
    pub fn agui(&self) -> &AgUiBroadcaster {
        &self.agui
    }

    /// The A2A broadcaster.
    pub fn a2a(&self) -> &A2ABroadcaster {
        &self.a2a
    }

    /// The context broadcaster.
    pub fn context(&self) -> &ContextBroadcaster {
        &self.context
    }

    /// The analytics broadcaster.
    pub fn analytics(&self) -> &AnalyticsBroadcaster {
        &self.analytics
    }

    /// Routes any event that implements [`Route`].
    pub fn route<R: Route + ?Sized>(
        &self,
        user: &UserId,
        event: &R,
    ) -> Result<Routed, PublishError> {
        event.route(self, user)
    }

    /// AG-UI event: to the AG-UI channel, and wrapped to the context channel. An event the
    /// AG-UI 1.0 schemas reject is [`PublishError::InvalidEvent`], naming the member, and
    /// goes nowhere (see [`AgUiEvent::validate`]).
    pub fn route_agui(&self, user: &UserId, event: &AgUiEvent) -> Result<Routed, PublishError> {
        event.validate()?;
        self.route_with_context(user, event, &self.agui, "agui", None)
    }

    /// AG-UI event into `thread`: to that thread of the AG-UI channel (folded into the thread's
    /// run state, so that a connection opened later rebuilds the run: see
    /// [`run_state`](crate::run_state)), and wrapped to the context channel, tagged with the
    /// same thread. Creates the user's channels if needed, so the event is kept even when
    /// nobody is connected yet. An invalid event is refused as by [`route_agui`](Self::route_agui).
    pub fn route_agui_in_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        event: &AgUiEvent,
    ) -> Result<Routed, PublishError> {
        event.validate()?;
        self.route_with_context(user, event, &self.agui, "agui", Some(thread))
    }

    /// A2A event: to the A2A channel, and wrapped to the context channel.
    pub fn route_a2a(&self, user: &UserId, event: &A2AEvent) -> Result<Routed, PublishError> {
        event.validate()?;
        self.route_with_context(user, event, &self.a2a, "a2a", None)
    }

    /// System event: wrapped, to the context channel only.
    pub fn route_system(&self, user: &UserId, event: &SystemEvent) -> Result<Routed, PublishError> {
        let wrapped = self.system_payload(event)?;
        let mut routed = Routed::default();
        routed.push(
            Channel::Context.as_str(),
            self.context.broadcast_payload(user, wrapped)?,
        );
        Ok(routed)
    }

    /// Analytics event: to the analytics channel only.
    pub fn route_analytics(
        &self,
        user: &UserId,
        event: &AnalyticsEvent,
    ) -> Result<Routed, PublishError> {
        event.validate()?;
        let mut routed = Routed::default();
        routed.push(
            Channel::Analytics.as_str(),
            self.analytics.broadcast(user, event)?,
        );
        Ok(routed)
    }

    fn route_with_context<E: Serialize>(
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
            let outcomes =
                self.publish_both(&backplane, user, thread, (primary, &direct), &wrapped)?;
            return routed(
                [protocol, Channel::Context.as_str()]
                    .into_iter()
                    .zip(outcomes.into_iter().map(crate::registry::queued)),
            );
        }
        // Without a backplane both channels share, each target is published on its own, and
        // both are tried even if the first fails, so that no target is skipped.
        let (direct, wrapped) = match thread {
            None => (
                primary.broadcast_payload(user, direct),
                self.context.broadcast_payload(user, wrapped),
            ),
            Some(thread) => (
                primary.broadcast_payload_in_thread(user, thread, direct),
                self.context
                    .broadcast_payload_in_thread(user, thread, wrapped),
            ),
        };
        routed([(protocol, direct), (Channel::Context.as_str(), wrapped)])
    }

    /// The backplane of `primary` if the context channel has the same one: the two targets of
    /// an event can then be queued on it together, all or none.
    fn backplane_of_both<E>(&self, primary: &Broadcaster<E>) -> Option<Arc<dyn Backplane>> {
        let backplane = primary.backplane()?;
        Arc::ptr_eq(backplane, self.context.backplane()?).then(|| backplane.clone())
    }

    /// Hands both targets of an event (`primary`'s, and the context channel's `wrapped`) to
    /// their shared `backplane` together, all or none (see [`Backplane::publish_all`]): the
    /// outcomes, in that order.
    fn publish_both<E>(
        &self,
        backplane: &Arc<dyn Backplane>,
        user: &UserId,
        thread: Option<&ThreadId>,
        (primary, direct): (&Broadcaster<E>, &Payload),
        wrapped: &Payload,
    ) -> Result<Vec<Outcome>, PublishError> {
        let outcomes = backplane
            .publish_all(vec![
                primary.publish_request(user, thread, direct),
                self.context.publish_request(user, thread, wrapped),
            ])
            .map_err(PublishError::Backplane)?;
        // Each channel counts its own publish, in the order they were requested.
        Ok(outcomes
            .into_iter()
            .enumerate()
            .map(|(at, outcome)| match at {
                0 => primary.count_handed(outcome),
                _ => self.context.count_handed(outcome),
            })
            .collect())
    }

    /// Before an event goes into a thread: both targets have (or make) the user's channel, as
    /// a publish into a thread makes it. A registry at `max_channels` refuses the event here,
    /// before it is published to either, so that it goes to all its targets or to none.
    fn prepare_thread_channels<E>(
        &self,
        user: &UserId,
        primary: &Broadcaster<E>,
    ) -> Result<(), PublishError> {
        primary.keep_thread_channel(user)?;
        self.context.keep_thread_channel(user)
    }

    /// Serialises `event` once into the primary channel's payload and the context channel's
    /// wrapped one, both checked against their channel's limits before either is published.
    fn payloads_with_context<E: Serialize>(
        &self,
        event: &E,
        primary: &Broadcaster<E>,
        protocol: &'static str,
    ) -> Result<(Payload, Payload), PublishError> {
        let json = crate::json::to_vec(event).inspect_err(|_| primary.count_encode_failure())?;
        // serde_json's output, and the envelope around it below, are UTF-8 by construction.
        let direct = Payload::build(None, true, |out| {
            out.extend_from_slice(&json);
            Ok(())
        })?;
        let wrapped = wrap(&json, protocol)?;
        primary.check_payload(&direct)?;
        self.context.check_payload(&wrapped)?;
        Ok((direct, wrapped))
    }

    /// A system event's payload for the context channel, checked against its limits.
    fn system_payload(&self, event: &SystemEvent) -> Result<Payload, PublishError> {
        event.validate()?;
        let json =
            crate::json::to_vec(event).inspect_err(|_| self.context.count_encode_failure())?;
        let wrapped = wrap(&json, "system")?;
        self.context.check_payload(&wrapped)?;
        Ok(wrapped)
    }

    /// Subscribes `user` to `channel` (resuming from `last_event_id`) and serves it as SSE:
    /// [`Broadcaster::sse_response`] for the channel chosen at run time, as an axum
    /// [`Response`](axum::response::Response), since the channels' event types differ.
    pub fn channel_response(
        &self,
        channel: Channel,
        user: &UserId,
        last_event_id: &LastEventId,
    ) -> Result<axum::response::Response, SubscribeError> {
        use axum::response::IntoResponse;
        Ok(match channel {
            Channel::AgUi => self.agui.sse_response(user, last_event_id)?.into_response(),
            Channel::A2A => self.a2a.sse_response(user, last_event_id)?.into_response(),
            Channel::Context => self
                .context
                .sse_response(user, last_event_id)?
                .into_response(),
            Channel::Analytics => self
                .analytics
                .sse_response(user, last_event_id)?
                .into_response(),
        })
    }

    /// [`channel_response`](Self::channel_response) for one thread: see
    /// [`Broadcaster::sse_response_in_thread`].
    pub fn channel_response_in_thread(
        &self,
        channel: Channel,
        user: &UserId,
        thread: &ThreadId,
        last_event_id: &LastEventId,
    ) -> Result<axum::response::Response, SubscribeError> {
        use axum::response::IntoResponse;
        Ok(match channel {
            Channel::AgUi => self
                .agui
                .sse_response_in_thread(user, thread, last_event_id)?
                .into_response(),
            Channel::A2A => self
                .a2a
                .sse_response_in_thread(user, thread, last_event_id)?
                .into_response(),
            Channel::Context => self
                .context
                .sse_response_in_thread(user, thread, last_event_id)?
                .into_response(),
            Channel::Analytics => self
                .analytics
                .sse_response_in_thread(user, thread, last_event_id)?
                .into_response(),
        })
    }

    /// The former name of [`channel_response`](Self::channel_response), which returns an axum
    /// `Response` where [`Broadcaster::sse_response`] returns an [`SseResponse`](crate::SseResponse).
    #[deprecated(since = "0.2.0", note = "renamed `channel_response`")]
    pub fn sse_response(
        &self,
        channel: Channel,
        user: &UserId,
        last_event_id: &LastEventId,
    ) -> Result<axum::response::Response, SubscribeError> {
        self.channel_response(channel, user, last_event_id)
    }

    /// Ends `user`'s open streams on `channel`; see [`Broadcaster::disconnect_user`].
    pub fn disconnect_user(&self, channel: Channel, user: &UserId) -> usize {
        match channel {
            Channel::AgUi => self.agui.disconnect_user(user),
            Channel::A2A => self.a2a.disconnect_user(user),
            Channel::Context => self.context.disconnect_user(user),
            Channel::Analytics => self.analytics.disconnect_user(user),
        }
    }

    /// Connections `user` has open on `channel`.
    pub fn connection_count(&self, channel: Channel, user: &UserId) -> usize {
        match channel {
            Channel::AgUi => self.agui.connection_count(user),
            Channel::A2A => self.a2a.connection_count(user),
            Channel::Context => self.context.connection_count(user),
            Channel::Analytics => self.analytics.connection_count(user),
        }
    }

    /// Connections open on all four channels.
    pub fn total_connections(&self) -> usize {
        self.agui.total_connections()
            + self.a2a.total_connections()
            + self.context.total_connections()
            + self.analytics.total_connections()
    }

    /// Snapshots of the four channels' stats.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            agui: self.agui.stats(),
            a2a: self.a2a.stats(),
            context: self.context.stats(),
            analytics: self.analytics.stats(),
        }
    }

    /// Shuts all four channels down; see [`Broadcaster::shutdown`].
    pub fn shutdown(&self) {
        self.agui.shutdown();
        self.a2a.shutdown();
        self.context.shutdown();
        self.analytics.shutdown();
    }
}

/// The result of publishing to several targets: each target with what it published, or the
/// first error (every target was tried).
fn routed(
    results: impl IntoIterator<Item = (&'static str, Result<Published, PublishError>)>,
) -> Result<Routed, PublishError> {
    let mut routed = Routed::default();
    let mut first_error = None;
    for (channel, result) in results {
        match result {
            Ok(published) => routed.push(channel, published),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(routed), Err)
}

/// The context channel's frame for an inner event already serialised as `json`: the same bytes
/// as serialising [`ContextEvent`], without serialising the event again.
///
/// Written by hand rather than through `serde_json::value::RawValue`: every way of making a
/// `RawValue` parses the text to check it, which would cost about what the serialisation this
/// avoids costs, for bytes serde_json has just written itself. `protocol` is one of our
/// constants, so nothing here needs escaping; `tests/router.rs` checks that the result reads as
/// the `ContextEvent` serialisation.
fn wrap(json: &[u8], protocol: &str) -> Result<Payload, PublishError> {
    Payload::build(None, true, |out| {
        out.extend_from_slice(b"{\"protocol\":\"");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\",\"event\":");
        out.extend_from_slice(json);
        out.push(b'}');
        Ok(())
    })
}
