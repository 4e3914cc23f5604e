//! The router: which channels each event reaches, the context wrapping, and all-or-nothing
//! publishing.

use futures_util::FutureExt;
use serde_json::{Value, json};
use sse_hub::models::{A2AEvent, AgUiEvent, AnalyticsEvent, ContextEvent, SystemEvent};
use sse_hub::{
    AGUI_BROADCASTER, Channel, Config, EventRouter, Frame, PublishError, Subscription, UserId,
};
use tokio::task::unconstrained;
use tokio_stream::StreamExt;

fn data(frame: &Frame) -> Value {
    let text = std::str::from_utf8(frame.bytes()).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    serde_json::from_str(line).unwrap()
}

fn ready<E>(sub: &mut Subscription<E>) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Some(Some(frame)) = unconstrained(sub.next()).now_or_never() {
        frames.push(data(&frame));
    }
    frames
}

struct Tabs {
    agui: Subscription<AgUiEvent>,
    a2a: Subscription<A2AEvent>,
    context: Subscription<ContextEvent>,
    analytics: Subscription<AnalyticsEvent>,
}

impl Tabs {
    fn open(router: &EventRouter, user: &UserId) -> Self {
        Self {
            agui: router.agui().subscribe(user).unwrap(),
            a2a: router.a2a().subscribe(user).unwrap(),
            context: router.context().subscribe(user).unwrap(),
            analytics: router.analytics().subscribe(user).unwrap(),
        }
    }

    /// What each channel received, in the order agui, a2a, context, analytics.
    fn received(&mut self) -> [Vec<Value>; 4] {
        [
            ready(&mut self.agui),
            ready(&mut self.a2a),
            ready(&mut self.context),
            ready(&mut self.analytics),
        ]
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn agui_goes_to_agui_and_wrapped_to_context() {
    let router = EventRouter::default();
    let alice = UserId::from("alice");
    let mut tabs = Tabs::open(&router, &alice);
    let mut bob = Tabs::open(&router, &UserId::from("bob"));
    let event: AgUiEvent =
        parse(r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hello"}"#);

    let routed = router.route_agui(&alice, &event).unwrap();
    assert_eq!(routed.get("agui").unwrap().connections(), Some(1));
    assert_eq!(routed.get("context").unwrap().connections(), Some(1));
    assert_eq!(routed.connections(), 2);
    assert_eq!(
        routed.targets().map(|(c, _)| c).collect::<Vec<_>>(),
        ["agui", "context"]
    );

    let inner = json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hello"});
    let [agui, a2a, context, analytics] = tabs.received();
    assert_eq!(agui, vec![inner.clone()]);
    assert_eq!(context, [json!({"protocol": "agui", "event": inner})]);
    assert_eq!(
        context[0],
        serde_json::to_value(ContextEvent::from(event)).unwrap()
    );
    assert!(a2a.is_empty() && analytics.is_empty());
    assert!(
        bob.received().iter().all(Vec::is_empty),
        "only alice's connections"
    );
}

#[tokio::test]
async fn a2a_goes_to_a2a_and_wrapped_to_context() {
    let router = EventRouter::default();
    let alice = UserId::from("alice");
    let mut tabs = Tabs::open(&router, &alice);
    let json =
        r#"{"type":"TASK_STATUS_UPDATE","taskId":"t-1","contextId":"c-1","state":"working"}"#;
    let event: A2AEvent = parse(json);
    let routed = router.route(&alice, &event).unwrap();
    assert_eq!(
        routed.targets().map(|(c, _)| c).collect::<Vec<_>>(),
        ["a2a", "context"]
    );
    let inner: Value = parse(json);
    let [agui, a2a, context, analytics] = tabs.received();
    assert_eq!(a2a, vec![inner.clone()]);
    assert_eq!(context, [json!({"protocol": "a2a", "event": inner})]);
    assert!(agui.is_empty() && analytics.is_empty());
}

#[tokio::test]
async fn system_goes_to_context_only_and_analytics_to_analytics_only() {
    let router = EventRouter::default();
    let alice = UserId::from("alice");
    let mut tabs = Tabs::open(&router, &alice);

    let system = r#"{"type":"CONTEXT_CREATED","contextId":"c-1","name":"Demo"}"#;
    let routed = router
        .route_system(&alice, &parse::<SystemEvent>(system))
        .unwrap();
    assert_eq!(
        routed.targets().map(|(c, _)| c).collect::<Vec<_>>(),
        ["context"]
    );
    let [agui, a2a, context, analytics] = tabs.received();
    assert_eq!(
        context,
        [json!({"protocol": "system", "event": parse::<Value>(system)})]
    );
    assert!(agui.is_empty() && a2a.is_empty() && analytics.is_empty());

    let view = r#"{"type":"PAGE_VIEW","session_id":"s-1","page":"/home"}"#;
    let routed = router
        .route_analytics(&alice, &parse::<AnalyticsEvent>(view))
        .unwrap();
    assert_eq!(
        routed.targets().map(|(c, _)| c).collect::<Vec<_>>(),
        ["analytics"]
    );
    let [agui, a2a, context, analytics] = tabs.received();
    assert_eq!(analytics, [parse::<Value>(view)]);
    assert!(agui.is_empty() && a2a.is_empty() && context.is_empty());
}

#[tokio::test]
async fn an_event_too_large_for_one_target_goes_to_none() {
    let mut config = Config::default();
    config.max_frame_bytes = 200;
    let router = EventRouter::new(config);
    let alice = UserId::from("alice");
    let mut tabs = Tabs::open(&router, &alice);
    // Fits the AG-UI channel's limit, but not once wrapped for the context channel.
    let delta = "x".repeat(100);
    let event: AgUiEvent = parse(&format!(
        r#"{{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"{delta}"}}"#
    ));
    let err = router.route_agui(&alice, &event).unwrap_err();
    assert!(
        matches!(err, PublishError::FrameTooLarge { max: 200, .. }),
        "{err}"
    );
    assert!(tabs.received().iter().all(Vec::is_empty));
}

#[tokio::test]
async fn the_global_router_is_the_statics() {
    let user = UserId::from("global-router-test");
    let mut tab = AGUI_BROADCASTER.subscribe(&user).unwrap();
    let event: AgUiEvent = parse(r#"{"type":"RUN_STARTED","threadId":"t-1","runId":"r-1"}"#);
    let routed = EventRouter::global().route_agui(&user, &event).unwrap();
    assert_eq!(routed.get("agui").unwrap().connections(), Some(1));
    assert_eq!(
        ready(&mut tab),
        [json!({"type":"RUN_STARTED","threadId":"t-1","runId":"r-1"})]
    );
    assert_eq!(EventRouter::global().agui().name(), "agui");
}

#[test]
fn channel_names_parse_and_print() {
    for channel in Channel::ALL {
        assert_eq!(channel.as_str().parse::<Channel>().unwrap(), channel);
    }
    assert_eq!("nope".parse::<Channel>().unwrap_err().0, "nope");
    let from_json: Channel = serde_json::from_str("\"context\"").unwrap();
    assert_eq!(from_json, Channel::Context);
    let err = serde_json::from_str::<Channel>("\"nope\"").unwrap_err();
    assert!(
        err.to_string()
            .contains("expected agui, a2a, context or analytics"),
        "{err}"
    );
    let router = EventRouter::default();
    assert_eq!(
        [
            router.agui().name(),
            router.a2a().name(),
            router.context().name(),
            router.analytics().name()
        ],
        ["agui", "a2a", "context", "analytics"]
    );
}

/// A config that brings its own AG-UI run state (to set `RunStates::max_thread_bytes`, say) is
/// for the AG-UI channel: the context channel carries wrapped events that no run state can
/// fold, so its thread streams must still resume by event id, as with the default config.
#[tokio::test]
async fn a_run_state_in_the_config_is_the_agui_channels_only() {
    use sse_hub::ThreadId;
    use sse_hub::run_state::RunStates;
    use std::sync::Arc;

    let mut config = Config::default();
    config.threads.state = Some(Arc::new(RunStates::new(64 * 1024)));
    let router = EventRouter::new(config);
    let alice = UserId::from("alice");
    let thread = ThreadId::new("t-1").unwrap();
    let events = [
        r#"{"type":"RUN_STARTED","threadId":"t-1","runId":"r-1"}"#,
        r#"{"type":"TEXT_MESSAGE_START","messageId":"m-1","role":"assistant"}"#,
        r#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hello"}"#,
    ];
    let mut ids = Vec::new();
    for event in events {
        let routed = router
            .route_agui_in_thread(&alice, &thread, &parse(event))
            .unwrap();
        ids.push(routed.get("context").unwrap().id.unwrap());
    }
    // A context tab of the thread saw the first event, then reconnects with its id.
    let mut tab = router
        .context()
        .subscribe_in_thread(&alice, &thread, Some(&ids[0].to_string()))
        .unwrap();
    let wrapped: Vec<Value> = events[1..]
        .iter()
        .map(|event| json!({"protocol": "agui", "event": parse::<Value>(event)}))
        .collect();
    assert_eq!(ready(&mut tab), wrapped, "the context stream resumes by id");
    // The AG-UI channel keeps the config's run state: a thread stream opens with the run.
    let mut view = router
        .agui()
        .subscribe_in_thread(&alice, &thread, None)
        .unwrap();
    let opening = ready(&mut view);
    assert_eq!(
        opening.first().map(|e| e["type"].clone()),
        Some(json!("RUN_STARTED"))
    );
}

/// The global router's AG-UI channel folds each thread's run, as every router's does: a tab
/// that joins the thread after the run started opens with it.
#[tokio::test]
async fn the_global_routers_agui_channel_opens_thread_streams_with_the_run() {
    use sse_hub::ThreadId;

    let user = UserId::from("global-router-thread-test");
    let thread = ThreadId::new("t-1").unwrap();
    let started = r#"{"type":"RUN_STARTED","threadId":"t-1","runId":"r-1"}"#;
    EventRouter::global()
        .route_agui_in_thread(&user, &thread, &parse(started))
        .unwrap();
    let mut late = AGUI_BROADCASTER
        .subscribe_in_thread(&user, &thread, None)
        .unwrap();
    let opening = ready(&mut late);
    assert_eq!(
        opening.first().map(|event| event["type"].clone()),
        Some(json!("RUN_STARTED")),
        "{opening:?}"
    );
}
