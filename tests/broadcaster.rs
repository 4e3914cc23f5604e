//! The broadcaster's behaviour as a user of the library relies on it, without HTTP: delivery
//! and isolation, exact counts, retention, resume, lag policies, caps and bounds.

use std::time::Duration;
use tokio::task::unconstrained;

use futures_util::FutureExt;
use serde_json::{Value, json};
use sse_hub::{
    Broadcaster, Config, EndReason, Frame, FrameKind, LagPolicy, Named, PublishError, ResetReason,
    SubscribeError, Subscription, UserId,
};
use tokio_stream::StreamExt;

type Hub = Broadcaster<Value>;

fn hub(config: Config) -> Hub {
    Broadcaster::new(config)
}

/// The JSON data of an event frame.
fn data(frame: &Frame) -> Value {
    let text = std::str::from_utf8(frame.bytes()).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    serde_json::from_str(line).unwrap()
}

/// Every frame the subscription has ready now, without waiting.
fn ready(sub: &mut Subscription<Value>) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(Some(frame)) = unconstrained(sub.next()).now_or_never() {
        frames.push(frame);
    }
    frames
}

/// The `n` values of the event frames, and the control frames as strings.
fn summary(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f.kind() {
            FrameKind::Event(_) => data(f)["n"].to_string(),
            FrameKind::Lagged { missed } => format!("lagged {missed}"),
            FrameKind::Reset(reason) => format!("reset {}", reason.as_str()),
            other => format!("{other:?}"),
        })
        .collect()
}

fn numbers(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|n| n.to_string()).collect()
}

fn publish_n(hub: &Hub, user: &UserId, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        hub.broadcast(user, &json!({ "n": n })).unwrap();
    }
}

#[tokio::test]
async fn every_connection_of_the_user_gets_the_event_and_nobody_else() {
    let hub = hub(Config::default());
    let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));
    let mut tabs = [
        hub.subscribe(&alice).unwrap(),
        hub.subscribe(&alice).unwrap(),
    ];
    let mut other = hub.subscribe(&bob).unwrap();

    let published = hub.broadcast(&alice, &json!({"n": 1})).unwrap();
    assert_eq!(published.connections(), Some(2));

    for tab in &mut tabs {
        let frames = ready(tab);
        assert_eq!(summary(&frames), ["1"]);
        assert_eq!(frames[0].id(), published.id);
    }
    assert!(ready(&mut other).is_empty());

    // The frame is encoded once: both connections hold the same bytes.
    hub.broadcast(&alice, &json!({"n": 2})).unwrap();
    let [a, b] = &mut tabs;
    let (fa, fb) = (ready(a).remove(0), ready(b).remove(0));
    assert_eq!(fa.bytes().as_ptr(), fb.bytes().as_ptr());
}

#[tokio::test]
async fn publishing_to_a_user_without_connections_reaches_nobody() {
    let hub = hub(Config::default());
    let published = hub
        .broadcast(&UserId::from("nobody"), &json!({"n": 1}))
        .unwrap();
    assert_eq!(published.connections(), Some(0));
    assert_eq!(published.id, None);
    assert_eq!(hub.stats().published, 1, "counted all the same");
}

#[tokio::test]
async fn counts_are_exact_the_moment_a_subscription_is_dropped() {
    let hub = hub(Config::default());
    let alice = UserId::from("alice");
    let first = hub.subscribe(&alice).unwrap();
    let second = hub.subscribe(&alice).unwrap();
    let bob = hub.subscribe(&UserId::from("bob")).unwrap();
    assert_eq!(hub.connection_count(&alice), 2);
    assert_eq!((hub.total_connections(), hub.user_count()), (3, 2));

    drop(first);
    assert_eq!(hub.connection_count(&alice), 1);
    assert_eq!(hub.total_connections(), 2);
    drop(second);
    assert_eq!(hub.connection_count(&alice), 0);
    assert_eq!((hub.total_connections(), hub.user_count()), (1, 1));
    let stats = hub.stats();
    assert_eq!(
        (stats.users, stats.connections, stats.retained_channels),
        (1, 1, 1)
    );
    drop(bob);
    assert_eq!(hub.stats().retained_channels, 2);
}

#[tokio::test(start_paused = true)]
async fn an_idle_channel_is_retained_then_removed() {
    let mut config = Config::default();
    config.retention = Duration::from_secs(30);
    let hub = hub(config);
    let alice = UserId::from("alice");

    let mut tab = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=3);
    let last = ready(&mut tab).last().unwrap().id().unwrap();
    drop(tab);

    // Within the retention, events published meanwhile wait in the window for the reconnect.
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(hub.sweep(), 0);
    publish_n(&hub, &alice, 4..=5);
    let mut back = hub.subscribe_from(&alice, Some(&last.to_string())).unwrap();
    assert_eq!(summary(&ready(&mut back)), ["4", "5"]);
    drop(back);

    // Then the channel goes, and with it the epoch: the old id is stale.
    tokio::time::advance(Duration::from_secs(31)).await;
    hub.sweep(); // the sweeper task may have been first
    assert_eq!(hub.stats().retained_channels, 0);
    assert_eq!(hub.stats().buffered_bytes, 0);
    let mut fresh = hub.subscribe_from(&alice, Some(&last.to_string())).unwrap();
    assert_eq!(summary(&ready(&mut fresh)), ["reset stale"]);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_task_removes_expired_channels_by_itself() {
    let mut config = Config::default();
    config.retention = Duration::from_secs(10);
    let hub = hub(config);
    drop(hub.subscribe(&UserId::from("alice")).unwrap());
    assert_eq!(hub.stats().retained_channels, 1);
    // Paused time: the runtime advances the clock when idle, so the sweeper's ticks run in
    // order; this waits in virtual time for the retention and two sweeper periods.
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(hub.stats().retained_channels, 0);
}

#[tokio::test(start_paused = true)]
async fn a_subscribe_before_the_sweep_keeps_the_channel() {
    let mut config = Config::default();
    config.retention = Duration::from_secs(1);
    let hub = hub(config);
    let alice = UserId::from("alice");
    drop(hub.subscribe(&alice).unwrap());
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut tab = hub.subscribe(&alice).unwrap();
    assert_eq!(hub.sweep(), 0, "an active channel is never removed");
    assert_eq!(
        hub.broadcast(&alice, &json!({"n": 1}))
            .unwrap()
            .connections(),
        Some(1)
    );
    assert_eq!(summary(&ready(&mut tab)), ["1"]);
}

#[test]
fn removal_races_with_subscribe_without_losing_a_subscriber() {
    let mut config = Config::default();
    config.retention = Duration::ZERO;
    let hub = hub(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sweeping = tokio::spawn({
            let hub = hub.clone();
            async move {
                let mut removed = 0;
                for _ in 0..20_000 {
                    removed += hub.sweep();
                    tokio::task::yield_now().await;
                }
                removed
            }
        });
        let users: Vec<UserId> = (0..8).map(|i| UserId::from(format!("u{i}"))).collect();
        // Every epoch a user's channels had: more than one means a channel was removed (by
        // the sweeping task, the broadcaster's own sweeper, or a lazy sweep) and made again.
        let mut epochs = std::collections::HashSet::new();
        for round in 0..2_000u64 {
            let user = &users[round as usize % users.len()];
            let mut tab = hub.subscribe(user).unwrap();
            let published = hub.broadcast(user, &json!({"n": round})).unwrap();
            epochs.insert(published.id.unwrap().epoch());
            assert_eq!(
                published.connections(),
                Some(1),
                "the subscriber is on the live channel"
            );
            assert_eq!(summary(&ready(&mut tab)), [round.to_string()]);
            drop(tab);
            if round % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        sweeping.await.unwrap();
        assert!(
            epochs.len() > users.len(),
            "the race was exercised: channels were removed and made again"
        );
        hub.sweep();
        let stats = hub.stats();
        assert_eq!(
            (
                stats.connections,
                stats.users,
                stats.retained_channels,
                stats.buffered_bytes
            ),
            (0, 0, 0, 0)
        );
    });
}

fn lag_config(policy: LagPolicy) -> Config {
    let mut config = Config::default();
    config.capacity = 4;
    config.replay_events = 64;
    config.lag_policy = policy;
    config
}

#[tokio::test]
async fn recover_backfills_a_slow_receiver_from_the_window() {
    let hub = hub(lag_config(LagPolicy::Recover));
    let alice = UserId::from("alice");
    let mut slow = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=50);
    assert_eq!(
        summary(&ready(&mut slow)),
        numbers(1..=50),
        "within the window: nothing lost"
    );
    assert_eq!(hub.stats().events_missed, 0);
    assert!(hub.stats().events_recovered > 0);
}

#[tokio::test]
async fn recover_signals_what_the_window_no_longer_has() {
    let hub = hub(lag_config(LagPolicy::Recover));
    let alice = UserId::from("alice");
    let mut slow = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=200);
    // The window holds the last 64 (137..=200): 136 are gone.
    let mut expected = vec!["lagged 136".to_owned()];
    expected.extend(numbers(137..=200));
    assert_eq!(summary(&ready(&mut slow)), expected);
    assert_eq!(hub.stats().events_missed, 136);
}

#[tokio::test]
async fn notify_skips_and_says_how_many() {
    let hub = hub(lag_config(LagPolicy::Notify));
    let alice = UserId::from("alice");
    let mut slow = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=20);
    // The ring keeps the last 4 (17..=20).
    let mut expected = vec!["lagged 16".to_owned()];
    expected.extend(numbers(17..=20));
    assert_eq!(summary(&ready(&mut slow)), expected);
    let frames = ready(&mut slow);
    assert!(frames.is_empty());
    let lagged = hub.stats();
    assert_eq!((lagged.lag_events, lagged.events_missed), (1, 16));
}

#[tokio::test]
async fn disconnect_ends_the_stream_and_the_reconnect_resumes() {
    let hub = hub(lag_config(LagPolicy::Disconnect));
    let alice = UserId::from("alice");
    let mut slow = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=2);
    let frames = ready(&mut slow);
    let last = frames.last().unwrap().id().unwrap();
    publish_n(&hub, &alice, 3..=30);
    assert_eq!(summary(&ready(&mut slow)), ["lagged 24"]);
    assert_eq!(
        slow.next().await.map(|f| f.kind()),
        None,
        "the stream ended"
    );
    assert_eq!(slow.end_reason(), Some(EndReason::Lagged));
    drop(slow);

    let mut back = hub.subscribe_from(&alice, Some(&last.to_string())).unwrap();
    assert_eq!(
        summary(&ready(&mut back)),
        numbers(3..=30),
        "the window had it all"
    );
}

#[tokio::test]
async fn the_policy_can_be_overridden_per_subscription() {
    let hub = hub(lag_config(LagPolicy::Recover));
    let alice = UserId::from("alice");
    let mut slow = hub
        .subscribe(&alice)
        .unwrap()
        .with_lag_policy(LagPolicy::Notify);
    publish_n(&hub, &alice, 1..=20);
    assert_eq!(summary(&ready(&mut slow))[0], "lagged 16");
}

#[tokio::test]
async fn a_stalled_receiver_never_grows_memory_past_the_window() {
    let mut config = lag_config(LagPolicy::Recover);
    config.replay_bytes = 4096;
    let hub = hub(config);
    let alice = UserId::from("alice");
    let _stalled = hub.subscribe(&alice).unwrap();
    let mut most = 0;
    for n in 0..10_000u64 {
        hub.broadcast(
            &alice,
            &json!({ "n": n, "pad": "x".repeat((n % 100) as usize) }),
        )
        .unwrap();
        most = most.max(hub.stats().buffered_bytes);
    }
    assert!(
        most <= 4096,
        "buffered {most} bytes, over the 4096 the window allows"
    );
    assert!(most > 2048, "the window is used");
}

#[tokio::test]
async fn buffered_bytes_never_exceed_channels_times_the_window() {
    let mut config = Config::default();
    config.replay_bytes = 2000;
    config.replay_events = 1000;
    let hub = hub(config);
    let users: Vec<UserId> = (0..50).map(|i| UserId::from(format!("user-{i}"))).collect();
    let _subs: Vec<_> = users.iter().map(|u| hub.subscribe(u).unwrap()).collect();
    for round in 0..200u64 {
        for user in &users {
            hub.broadcast(
                user,
                &json!({ "n": round, "pad": "y".repeat((round % 64) as usize) }),
            )
            .unwrap();
        }
        assert!(hub.stats().buffered_bytes <= users.len() * 2000);
    }
    for (_, bytes, _) in hub.buffered_by_user() {
        assert!(bytes <= 2000);
    }
}

#[tokio::test]
async fn resume_delivers_what_was_missed_then_live() {
    let hub = hub(Config::default());
    let alice = UserId::from("alice");
    let mut tab = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=3);
    let frames = ready(&mut tab);
    let second = frames[1].id().unwrap();
    drop(tab);
    publish_n(&hub, &alice, 4..=5);
    let mut back = hub
        .subscribe_from(&alice, Some(&second.to_string()))
        .unwrap();
    assert_eq!(back.start_id(), second);
    publish_n(&hub, &alice, 6..=6);
    assert_eq!(summary(&ready(&mut back)), numbers(3..=6));
}

#[test]
fn resume_at_the_seam_under_concurrent_publishing_has_no_duplicate_and_no_gap() {
    let mut config = Config::default();
    config.replay_events = 100_000;
    config.replay_bytes = 64 << 20;
    let hub = hub(config);
    let alice = UserId::from("alice");
    let total = 20_000u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let first = hub.subscribe(&alice).unwrap();
        let publisher = tokio::spawn({
            let (hub, alice) = (hub.clone(), alice.clone());
            async move {
                for n in 1..=total {
                    hub.broadcast(&alice, &json!({ "n": n })).unwrap();
                    if n % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        let mut received = Vec::new();
        let mut last = None;
        let mut tab = Some(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while received.last() != Some(&total) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stuck at {:?}",
                received.last()
            );
            let sub = match tab.as_mut() {
                Some(sub) => sub,
                None => tab.insert(hub.subscribe_from(&alice, last.as_deref()).unwrap()),
            };
            // Read a few events, then drop the connection and resume from the last id.
            for _ in 0..fastrand_like(received.len()) {
                let frame = tokio::time::timeout(Duration::from_secs(5), sub.next())
                    .await
                    .unwrap()
                    .unwrap();
                assert!(
                    matches!(frame.kind(), FrameKind::Event(_)),
                    "no loss to signal: {:?}",
                    frame.kind()
                );
                received.push(data(&frame)["n"].as_u64().unwrap());
                last = frame.id().map(|id| id.to_string());
                if received.last() == Some(&total) {
                    break;
                }
            }
            tab = None;
        }
        publisher.await.unwrap();
        assert_eq!(received, (1..=total).collect::<Vec<_>>());
    });
}

/// A varying batch size from 1 to 97, deterministic.
fn fastrand_like(seed: usize) -> usize {
    (seed.wrapping_mul(2654435761) % 97) + 1
}

#[tokio::test]
async fn ids_that_cannot_be_resumed_start_with_a_reset() {
    let mut config = Config::default();
    config.replay_events = 4;
    config.capacity = 16; // the reader below takes all ten from the ring
    let hub = hub(config);
    let alice = UserId::from("alice");
    let mut tab = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=10);
    let frames = ready(&mut tab);
    let (oldest, mut newest) = (frames[0].id().unwrap(), frames[9].id().unwrap());
    let ahead = sse_hub::EventId::new(newest.epoch(), newest.seq() + 1000);
    let other_epoch = sse_hub::EventId::new(newest.epoch().wrapping_add(1), 3);
    let long = "1".repeat(100);
    for (id, reason) in [
        ("garbage", ResetReason::Malformed),
        ("", ResetReason::Malformed),
        (long.as_str(), ResetReason::Malformed),
        (&other_epoch.to_string(), ResetReason::Stale),
        (&oldest.to_string(), ResetReason::Expired),
        (&ahead.to_string(), ResetReason::Unknown),
    ] {
        let mut sub = hub.subscribe_from(&alice, Some(id)).unwrap();
        let frames = ready(&mut sub);
        assert_eq!(frames.len(), 1, "{id:?}: only the reset, then live");
        assert_eq!(frames[0].kind(), FrameKind::Reset(reason), "{id:?}");
        let text = std::str::from_utf8(frames[0].bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "event: reset\ndata: {{\"type\":\"reset\",\"reason\":\"{}\"}}\n\n",
                reason.as_str()
            )
        );
        assert_eq!(
            sub.start_id(),
            newest,
            "a reset subscription starts at the head"
        );
        newest = hub.broadcast(&alice, &json!({"n": 0})).unwrap().id.unwrap();
        assert_eq!(summary(&ready(&mut sub)), ["0"]);
        ready(&mut tab);
    }
    assert_eq!(hub.stats().resets, 6);
}

#[tokio::test]
async fn caps_give_typed_errors() {
    let mut config = Config::default();
    config.max_connections_per_user = 2;
    config.max_channels = 2;
    let hub = hub(config);
    let (a, b, c) = (UserId::from("a"), UserId::from("b"), UserId::from("c"));
    let _a1 = hub.subscribe(&a).unwrap();
    let _a2 = hub.subscribe(&a).unwrap();
    assert_eq!(
        hub.subscribe(&a).unwrap_err(),
        SubscribeError::TooManyConnections { max: 2 }
    );
    let _b1 = hub.subscribe(&b).unwrap();
    assert_eq!(
        hub.subscribe(&c).unwrap_err(),
        SubscribeError::AtCapacity { max: 2 }
    );
    assert_eq!(
        hub.connection_count(&a),
        2,
        "a refused subscribe leaves nothing behind"
    );

    hub.shutdown();
    assert_eq!(hub.subscribe(&b).unwrap_err(), SubscribeError::ShuttingDown);
    assert!(matches!(
        hub.broadcast(&a, &json!({})),
        Err(PublishError::ShuttingDown)
    ));
}

#[tokio::test]
async fn bad_events_are_typed_errors_and_nothing_is_sent() {
    let mut config = Config::default();
    config.max_frame_bytes = 1024;
    let hub = hub(config);
    let alice = UserId::from("alice");
    let mut tab = hub.subscribe(&alice).unwrap();

    let big = json!({ "pad": "z".repeat(2000) });
    assert!(matches!(
        hub.broadcast(&alice, &big),
        Err(PublishError::FrameTooLarge { max: 1024, .. })
    ));

    let named: Broadcaster<Named<Value>> = Broadcaster::new(Config::default());
    let _named_tab = named.subscribe(&alice).unwrap();
    let bad_name = Named::new("a\nb", json!({}));
    assert!(matches!(
        named.broadcast(&alice, &bad_name),
        Err(PublishError::Frame(_))
    ));

    // serde_json refuses maps whose keys are not strings.
    let unserialisable: Broadcaster<std::collections::HashMap<Vec<u8>, u8>> =
        Broadcaster::new(Config::default());
    let _t = unserialisable.subscribe(&alice).unwrap();
    let map = std::collections::HashMap::from([(vec![1u8], 1u8)]);
    assert!(matches!(
        unserialisable.broadcast(&alice, &map),
        Err(PublishError::Encode(_))
    ));

    assert!(ready(&mut tab).is_empty());
    assert_eq!(hub.stats().published, 0);
    // The next good event still gets the next id: nothing was consumed by the failures.
    let published = hub.broadcast(&alice, &json!({"n": 1})).unwrap();
    assert_eq!(published.id.unwrap().seq(), 1);
}

#[tokio::test]
async fn disconnect_user_ends_its_streams_and_keeps_the_channel() {
    let hub = hub(Config::default());
    let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));
    let mut tabs = [
        hub.subscribe(&alice).unwrap(),
        hub.subscribe(&alice).unwrap(),
    ];
    let mut other = hub.subscribe(&bob).unwrap();
    publish_n(&hub, &alice, 1..=1);
    assert_eq!(hub.disconnect_user(&alice), 2);
    let mut last = None;
    for tab in &mut tabs {
        let frames: Vec<Frame> = tab.collect().await;
        assert_eq!(
            summary(&frames),
            ["1"],
            "what was published before still arrives"
        );
        last = frames[0].id();
        assert_eq!(tab.end_reason(), Some(EndReason::Disconnected));
    }
    publish_n(&hub, &alice, 2..=3);
    let mut back = hub
        .subscribe_from(&alice, Some(&last.unwrap().to_string()))
        .unwrap();
    assert_eq!(summary(&ready(&mut back)), ["2", "3"]);
    hub.broadcast(&bob, &json!({"n": 9})).unwrap();
    assert_eq!(
        summary(&ready(&mut other)),
        ["9"],
        "other users are untouched"
    );
    assert_eq!(other.end_reason(), None);
}

#[tokio::test]
async fn shutdown_ends_every_stream() {
    let hub = hub(Config::default());
    let subs: Vec<_> = (0..10)
        .map(|i| hub.subscribe(&UserId::from(format!("u{i}"))).unwrap())
        .collect();
    hub.shutdown();
    for mut sub in subs {
        assert!(
            tokio::time::timeout(Duration::from_secs(1), sub.next())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(sub.end_reason(), Some(EndReason::Shutdown));
    }
    assert_eq!(hub.total_connections(), 0);
}

#[test]
fn many_tasks_subscribing_dropping_and_publishing_leave_nothing_behind() {
    let mut config = Config::default();
    config.retention = Duration::ZERO;
    config.capacity = 8;
    let hub = hub(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..16u64)
            .map(|t| {
                let hub = hub.clone();
                tokio::spawn(async move {
                    let mut seen = 0;
                    for round in 0..500u64 {
                        let user = UserId::from(format!("user-{}", (t * 7 + round) % 40));
                        let mut sub = hub.subscribe(&user).unwrap();
                        for n in 0..(round % 5) {
                            hub.broadcast(&user, &json!({ "n": n, "from": t })).unwrap();
                        }
                        seen += ready(&mut sub).len();
                        if round % 10 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut seen = 0;
        for task in tasks {
            seen += task.await.unwrap();
        }
        assert!(seen > 0);
    });
    assert_eq!(hub.total_connections(), 0);
    hub.sweep();
    let stats = hub.stats();
    assert_eq!(
        (
            stats.users,
            stats.connections,
            stats.retained_channels,
            stats.buffered_bytes
        ),
        (0, 0, 0, 0)
    );
}

/// An event larger than the whole window is sent but cannot be kept: the window is emptied
/// rather than left with a hole, so a resume or a back-fill across it is signalled.
#[tokio::test]
async fn an_event_too_big_for_the_window_is_never_skipped_silently() {
    let mut config = lag_config(LagPolicy::Recover);
    config.replay_bytes = 1000;
    let hub = hub(config);
    let alice = UserId::from("alice");
    let big = json!({ "n": 2, "pad": "x".repeat(1200) });

    // Resume across it: a reset, not a replay that jumps from 1 to 3.
    let mut tab = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=1);
    let first = ready(&mut tab)[0].id().unwrap();
    drop(tab);
    hub.broadcast(&alice, &big).unwrap();
    publish_n(&hub, &alice, 3..=3);
    let mut back = hub
        .subscribe_from(&alice, Some(&first.to_string()))
        .unwrap();
    assert_eq!(summary(&ready(&mut back)), ["reset expired"]);

    // Lag across it: the back-fill says what it could not recover.
    let mut slow = hub.subscribe(&alice).unwrap();
    hub.broadcast(&alice, &json!({ "n": 4, "pad": "x".repeat(1200) }))
        .unwrap();
    publish_n(&hub, &alice, 5..=12);
    let got = summary(&ready(&mut slow));
    assert_eq!(got[0], "lagged 1", "{got:?}");
    assert_eq!(got[1..], numbers(5..=12)[..]);
}

/// The same with a window bounded by bytes only (`replay_events` at `usize::MAX`): the window
/// is still emptied, so the frames after the big event keep their own ids and the resume is
/// a reset, never a replay that skips the big event and numbers the next one as it.
#[tokio::test]
async fn a_window_bounded_by_bytes_only_never_skips_an_event_too_big_for_it() {
    let mut config = lag_config(LagPolicy::Recover);
    config.replay_events = usize::MAX;
    config.replay_bytes = 1000;
    let hub = hub(config);
    let alice = UserId::from("alice");
    let mut tab = hub.subscribe(&alice).unwrap();
    publish_n(&hub, &alice, 1..=1);
    let first = ready(&mut tab)[0].id().unwrap();
    drop(tab);
    hub.broadcast(&alice, &json!({ "n": 2, "pad": "x".repeat(1200) }))
        .unwrap();
    let third = hub.broadcast(&alice, &json!({ "n": 3 })).unwrap().id;
    let mut back = hub
        .subscribe_from(&alice, Some(&first.to_string()))
        .unwrap();
    assert_eq!(summary(&ready(&mut back)), ["reset expired"]);

    // A resume from just before the kept frame gets it, under its own id.
    let second = sse_hub::EventId::new(first.epoch(), first.seq() + 1);
    let mut back = hub
        .subscribe_from(&alice, Some(&second.to_string()))
        .unwrap();
    let frames = ready(&mut back);
    assert_eq!(summary(&frames), ["3"]);
    assert_eq!(frames[0].id(), third);
}

#[tokio::test]
async fn a_retention_of_forever_is_kept_not_a_panic() {
    let mut config = Config::default();
    config.retention = Duration::MAX;
    let hub = hub(config);
    let alice = UserId::from("alice");
    drop(hub.subscribe(&alice).unwrap());
    assert_eq!(hub.sweep(), 0);
    assert_eq!(hub.stats().retained_channels, 1);
    assert_eq!(hub.subscribe(&alice).unwrap().user(), &alice);
}

/// A channel re-queued for its later expiry is removed on time, not after channels queued
/// meanwhile with later deadlines.
#[tokio::test(start_paused = true)]
async fn expiry_follows_each_channels_own_deadline() {
    let mut config = Config::default();
    config.retention = Duration::from_secs(10);
    let hub = hub(config);
    let (a, b) = (UserId::from("a"), UserId::from("b"));
    let tab = hub.subscribe(&a).unwrap(); // a's channel is queued at birth, due at 10 s
    tokio::time::advance(Duration::from_secs(5)).await;
    drop(tab); // idle from 5 s: really due at 15 s
    tokio::time::advance(Duration::from_millis(4900)).await;
    drop(hub.subscribe(&b).unwrap()); // b: idle from 9.9 s, due at 19.9 s
    tokio::time::advance(Duration::from_millis(200)).await;
    hub.sweep(); // at 10.1 s: a is not due yet and goes back in the queue, due at 15 s
    assert_eq!(hub.stats().retained_channels, 2);
    tokio::time::advance(Duration::from_secs(6)).await;
    hub.sweep(); // at 16.1 s: a is gone, b stays
    assert_eq!(hub.stats().retained_channels, 1);
    assert_eq!(hub.connection_info(), (0, 0));
    let mut b_again = hub.subscribe_from(&b, None).unwrap();
    assert!(ready(&mut b_again).is_empty());
}
