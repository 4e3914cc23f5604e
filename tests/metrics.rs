//! The metrics of `src/metrics.rs`, observed through a `metrics_util::debugging::DebuggingRecorder`.
//!
//! Every test installs its own recorder with `metrics::with_local_recorder` around the creation of
//! its broadcaster (the handles are registered then) and around the operations. The recorder's
//! snapshots are destructive (counters and gauges are swapped to zero), so [`Probe`] adds the
//! counters up across snapshots, and a gauge is only read in the snapshot taken right after an
//! operation that sets it.
//!
//! Every metric must carry the label `channel` (the broadcaster's name) and never the user.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use tokio::task::unconstrained;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};
use sse_hub::backplane::{Backplane, BackplaneError, BoxFuture, History, LocalChannels};
use sse_hub::metrics::{
    BUFFERED_BYTES, CONNECTIONS, ENCODE_FAILURES, EVENTS_MISSED, EVENTS_PUBLISHED,
    EVENTS_RECOVERED, FRAMES_DELIVERED, LAG_EVENTS, PUBLISH_SECONDS, RESETS, RETAINED_CHANNELS,
    SUBSCRIBES_REJECTED, THREAD_STATE_BYTES, THREAD_STATES_TRIMMED, THREAD_STATES_UNKNOWN,
    THREADS_EVICTED, USER_CHANNELS,
};
use sse_hub::models::AgUiEvent;
use sse_hub::{
    Broadcaster, Config, Delivery, EventId, EventRouter, Frame, FrameKind, LagPolicy, Named,
    PublishError, Published, SubscribeError, Subscription, UserId,
};

const ALL_METRICS: [&str; 17] = [
    EVENTS_PUBLISHED,
    FRAMES_DELIVERED,
    LAG_EVENTS,
    EVENTS_MISSED,
    EVENTS_RECOVERED,
    RESETS,
    SUBSCRIBES_REJECTED,
    ENCODE_FAILURES,
    CONNECTIONS,
    USER_CHANNELS,
    RETAINED_CHANNELS,
    BUFFERED_BYTES,
    PUBLISH_SECONDS,
    THREAD_STATE_BYTES,
    THREADS_EVICTED,
    THREAD_STATES_UNKNOWN,
    THREAD_STATES_TRIMMED,
];

/// A series: the metric name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// Reads a [`DebuggingRecorder`]: counters summed over every snapshot taken, gauges and
/// histograms as of the last snapshot.
struct Probe {
    snapshotter: Snapshotter,
    counters: BTreeMap<Series, u64>,
    gauges: BTreeMap<Series, f64>,
    histograms: BTreeMap<Series, Vec<f64>>,
    seen: BTreeSet<Series>,
}

impl Probe {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
            histograms: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Takes a snapshot. The debugging recorder resets counters and gauges to 0 when it takes
    /// one, and sse-hub moves its gauges by deltas, so both are summed across snapshots.
    fn take(&mut self) -> &mut Self {
        self.histograms.clear();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let series = (key.name().to_owned(), labels);
            self.seen.insert(series.clone());
            match value {
                DebugValue::Counter(n) => *self.counters.entry(series).or_default() += n,
                DebugValue::Gauge(v) => *self.gauges.entry(series).or_default() += v.into_inner(),
                DebugValue::Histogram(values) => {
                    self.histograms
                        .insert(series, values.into_iter().map(|v| v.into_inner()).collect());
                }
            }
        }
        self
    }

    fn series(name: &str, channel: &str, reason: Option<&str>) -> Series {
        let mut labels = vec![("channel".to_owned(), channel.to_owned())];
        if let Some(reason) = reason {
            labels.push(("reason".to_owned(), reason.to_owned()));
        }
        labels.sort();
        (name.to_owned(), labels)
    }

    /// A counter's total so far; panics if the series was never registered.
    fn counter(&self, name: &str, channel: &str) -> u64 {
        self.counter_with(name, channel, None)
    }

    fn counter_with(&self, name: &str, channel: &str, reason: Option<&str>) -> u64 {
        let series = Self::series(name, channel, reason);
        assert!(self.seen.contains(&series), "{series:?} is not registered");
        self.counters.get(&series).copied().unwrap_or(0)
    }

    /// A gauge's value in the last snapshot.
    fn gauge(&self, name: &str, channel: &str) -> f64 {
        let series = Self::series(name, channel, None);
        *self
            .gauges
            .get(&series)
            .unwrap_or_else(|| panic!("{series:?} missing from the last snapshot"))
    }

    /// A histogram's samples in the last snapshot.
    fn histogram(&self, name: &str, channel: &str) -> Vec<f64> {
        let series = Self::series(name, channel, None);
        self.histograms.get(&series).cloned().unwrap_or_default()
    }
}

/// The defaults, with a retention long enough that no channel expires unless a test says so.
fn config(name: &'static str) -> Config {
    let mut config = Config::named(name);
    config.retention = Duration::from_secs(3600);
    config
}

/// Everything a subscription yields right now, without waiting.
fn drain<E>(sub: &mut Subscription<E>) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(Some(frame)) = unconstrained(sub.next()).now_or_never() {
        frames.push(frame);
    }
    frames
}

fn event_seqs(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| f.id())
        .map(|id| id.seq())
        .collect()
}

fn lagged(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f.kind() {
            FrameKind::Lagged { missed } => Some(missed),
            _ => None,
        })
        .collect()
}

fn publish(hub: &Broadcaster<Value>, user: &UserId, n: usize) {
    for i in 0..n {
        hub.broadcast(user, &json!({ "n": i })).unwrap();
    }
}

#[test]
fn every_metric_is_registered_at_creation_labelled_by_channel_only() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let hub: Broadcaster<Value> = Broadcaster::new(config("orders"));
        probe.take();
        let names: BTreeSet<&str> = probe.seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ALL_METRICS.into_iter().collect());
        for reason in ["malformed", "stale", "expired", "unknown"] {
            assert_eq!(probe.counter_with(RESETS, "orders", Some(reason)), 0);
        }
        for reason in ["too_many_connections", "at_capacity", "shutting_down"] {
            assert_eq!(
                probe.counter_with(SUBSCRIBES_REJECTED, "orders", Some(reason)),
                0
            );
        }
        // 15 plain series plus 4 reset reasons and 3 rejection reasons.
        assert_eq!(probe.seen.len(), 15 + 4 + 3, "{:?}", probe.seen);

        // Exercise everything with users whose ids must never show up as a label.
        let users: Vec<UserId> = (0..5)
            .map(|i| UserId::from(format!("user-secret-{i}")))
            .collect();
        let mut subs: Vec<_> = users.iter().map(|u| hub.subscribe(u).unwrap()).collect();
        for user in &users {
            publish(&hub, user, 3);
        }
        let _reset = hub.subscribe_from(&users[0], Some("garbage")).unwrap();
        for sub in &mut subs {
            drain(sub);
        }
        drop(subs);
        hub.sweep();
        probe.take();
        for (name, labels) in &probe.seen {
            assert!(
                labels.iter().any(|(k, v)| k == "channel" && v == "orders"),
                "{name} lacks channel=orders: {labels:?}"
            );
            for (key, value) in labels {
                assert!(
                    key == "channel" || key == "reason",
                    "{name} has label {key}"
                );
                assert!(!value.contains("user-secret"), "{name} carries a user id");
            }
        }
    });
}

#[test]
fn two_broadcasters_keep_separate_series() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let agui: Broadcaster<Value> = Broadcaster::new(config("agui"));
        let context: Broadcaster<Value> = Broadcaster::new(config("context"));
        let alice = UserId::from("alice");
        let _a = agui.subscribe(&alice).unwrap();
        let _b = context.subscribe(&alice).unwrap();
        let _c = context.subscribe(&alice).unwrap();
        publish(&agui, &alice, 2);
        publish(&context, &alice, 5);
        probe.take();
        assert_eq!(probe.counter(EVENTS_PUBLISHED, "agui"), 2);
        assert_eq!(probe.counter(EVENTS_PUBLISHED, "context"), 5);
        assert_eq!(probe.gauge(CONNECTIONS, "agui"), 1.0);
        assert_eq!(probe.gauge(CONNECTIONS, "context"), 2.0);
    });
}

#[test]
fn published_counter_and_publish_histogram_count_every_publish_to_a_channel() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let cfg = config("pub");
        let hub: Broadcaster<Value> = Broadcaster::new(cfg);
        let (alice, bob, carol) = (UserId::from("alice"), UserId::from("bob"), "carol".into());
        let _tab1 = hub.subscribe(&alice).unwrap();
        let _tab2 = hub.subscribe(&alice).unwrap();
        drop(hub.subscribe(&bob).unwrap()); // bob's channel is retained, with no connection

        publish(&hub, &alice, 7);
        publish(&hub, &bob, 2); // kept in bob's window for his reconnect: published
        probe.take();
        assert_eq!(probe.counter(EVENTS_PUBLISHED, "pub"), 9);
        let samples = probe.histogram(PUBLISH_SECONDS, "pub");
        assert_eq!(samples.len(), 9, "one fan-out time per publish");
        assert!(
            samples
                .iter()
                .all(|s| s.is_finite() && *s >= 0.0 && *s < 1.0)
        );
        assert_eq!(hub.stats().published, 9);

        // A user without any channel: nobody to deliver to, nothing stored (`id: None`), but
        // the publish was accepted, so it counts, in the metric and in `Stats::published` alike.
        let nobody = hub.broadcast(&carol, &json!({})).unwrap();
        assert_eq!(nobody.id, None);
        probe.take();
        assert_eq!(probe.counter(EVENTS_PUBLISHED, "pub"), 10);
        assert_eq!(probe.histogram(PUBLISH_SECONDS, "pub").len(), 1);
        assert_eq!(hub.stats().published, 10);

        // A refused publish is neither published nor timed.
        let big = "x".repeat(hub.config().max_frame_bytes);
        assert!(matches!(
            hub.broadcast(&alice, &json!(big)),
            Err(PublishError::FrameTooLarge { .. })
        ));
        probe.take();
        assert_eq!(probe.counter(EVENTS_PUBLISHED, "pub"), 10);
    });
}

#[test]
fn frames_delivered_counts_events_read_flushed_every_256_and_on_drop() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let mut cfg = config("deliver");
        cfg.capacity = 512;
        cfg.replay_events = 1024;
        cfg.replay_bytes = 1 << 20;
        let hub: Broadcaster<Value> = Broadcaster::new(cfg);
        let alice = UserId::from("alice");
        let mut tab1 = hub.subscribe(&alice).unwrap();
        let mut tab2 = hub.subscribe(&alice).unwrap();
        publish(&hub, &alice, 300);

        // A batch is added once the next frame is read: the count of the last frame read
        // stays with the subscription, which an SSE body that never sent it takes back.
        for _ in 0..256 {
            unconstrained(tab1.next()).now_or_never().unwrap().unwrap();
        }
        probe.take();
        assert_eq!(probe.counter(FRAMES_DELIVERED, "deliver"), 0, "batched");
        unconstrained(tab1.next()).now_or_never().unwrap().unwrap();
        probe.take();
        assert_eq!(probe.counter(FRAMES_DELIVERED, "deliver"), 256);
        assert_eq!(drain(&mut tab1).len(), 43);
        assert_eq!(drain(&mut tab2).len(), 300);
        // Read but not yet flushed: 44 + 300 - 256 (tab2's first batch).
        probe.take();
        assert_eq!(probe.counter(FRAMES_DELIVERED, "deliver"), 512);
        drop(tab1);
        drop(tab2);
        probe.take();
        assert_eq!(probe.counter(FRAMES_DELIVERED, "deliver"), 600);

        // Replayed events count; the control frame of a reset does not.
        let mut resumed = hub.subscribe_from(&alice, Some("garbage")).unwrap();
        let id = {
            let mut probe_tab = hub.subscribe(&alice).unwrap();
            publish(&hub, &alice, 1);
            unconstrained(probe_tab.next())
                .now_or_never()
                .unwrap()
                .unwrap()
                .id()
                .unwrap()
        };
        let resume_from = format!("{}-{}", id.epoch(), id.seq() - 10);
        let mut replayed = hub.subscribe_from(&alice, Some(&resume_from)).unwrap();
        assert_eq!(drain(&mut replayed).len(), 10);
        let frames = drain(&mut resumed);
        assert!(matches!(frames[0].kind(), FrameKind::Reset(_)));
        assert_eq!(frames.len(), 2);
        drop(resumed);
        drop(replayed);
        probe.take();
        // 1 (probe_tab) + 10 (replayed) + 1 (the event after the reset).
        assert_eq!(probe.counter(FRAMES_DELIVERED, "deliver"), 612);
    });
}

#[test]
fn lag_metrics_match_the_markers_under_every_policy() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let mut cfg = config("lag");
        cfg.capacity = 4;
        cfg.replay_events = 8;
        let hub: Broadcaster<Value> = Broadcaster::new(cfg);
        let alice = UserId::from("alice");
        let check = |probe: &mut Probe, lag: u64, missed: u64, recovered: u64| {
            probe.take();
            assert_eq!(probe.counter(LAG_EVENTS, "lag"), lag, "lag events");
            assert_eq!(probe.counter(EVENTS_MISSED, "lag"), missed, "missed");
            assert_eq!(
                probe.counter(EVENTS_RECOVERED, "lag"),
                recovered,
                "recovered"
            );
            let stats = hub.stats();
            assert_eq!(
                (
                    stats.lag_events,
                    stats.events_missed,
                    stats.events_recovered
                ),
                (lag, missed, recovered)
            );
        };
        check(&mut probe, 0, 0, 0);

        // Recover within the window: the ring (4) overflows, the window (8) has it all.
        let mut sub = hub.subscribe(&alice).unwrap();
        publish(&hub, &alice, 7);
        let frames = drain(&mut sub);
        assert_eq!(event_seqs(&frames), (1..=7).collect::<Vec<_>>());
        assert!(lagged(&frames).is_empty());
        check(&mut probe, 1, 0, 3);

        // Recover beyond the window: 20 published, the window holds 20..27 (seq 8..27 overall).
        publish(&hub, &alice, 20);
        let frames = drain(&mut sub);
        assert_eq!(lagged(&frames), vec![12], "8..19 are gone");
        assert_eq!(event_seqs(&frames), (20..=27).collect::<Vec<_>>());
        // The ring gave 24..27; 20..23 came from the window.
        check(&mut probe, 2, 12, 3 + 4);
        drop(sub);

        // Notify: a marker for the whole gap, never a back-fill.
        let mut sub = hub
            .subscribe(&alice)
            .unwrap()
            .with_lag_policy(LagPolicy::Notify);
        publish(&hub, &alice, 10); // 28..37; the ring keeps 34..37
        let frames = drain(&mut sub);
        assert_eq!(lagged(&frames), vec![6]);
        assert_eq!(event_seqs(&frames), (34..=37).collect::<Vec<_>>());
        check(&mut probe, 3, 18, 7);

        // Disconnect: the marker, then the end.
        let mut sub = sub.with_lag_policy(LagPolicy::Disconnect);
        publish(&hub, &alice, 5); // 38..42; the ring keeps 39..42
        let frames = drain(&mut sub);
        assert_eq!(lagged(&frames), vec![1]);
        assert!(event_seqs(&frames).is_empty());
        assert!(
            matches!(unconstrained(sub.next()).now_or_never(), Some(None)),
            "the stream ended"
        );
        assert_eq!(sub.end_reason(), Some(sse_hub::EndReason::Lagged));
        check(&mut probe, 4, 19, 7);
    });
}

#[test]
fn resets_are_counted_by_reason() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let mut cfg = config("resets");
        cfg.replay_events = 2;
        let hub: Broadcaster<Value> = Broadcaster::new(cfg);
        let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));
        let mut tab = hub.subscribe(&alice).unwrap();
        publish(&hub, &alice, 5);
        let last = drain(&mut tab).last().unwrap().id().unwrap();
        let _bob = hub.subscribe(&bob).unwrap();
        hub.broadcast(&bob, &json!({})).unwrap();

        let cases = [
            ("garbage".to_owned(), "malformed"),
            ("x".repeat(65), "malformed"),
            (format!("{}-1", last.epoch() + 1_000_000), "stale"),
            (format!("{}-1", last.epoch()), "expired"),
            (format!("{}-{}", last.epoch(), last.seq() + 1), "unknown"),
        ];
        for (id, reason) in &cases {
            let mut sub = hub.subscribe_from(&alice, Some(id)).unwrap();
            let first = unconstrained(sub.next()).now_or_never().unwrap().unwrap();
            match first.kind() {
                FrameKind::Reset(r) => assert_eq!(r.as_str(), *reason, "{id}"),
                other => panic!("{id}: {other:?}"),
            }
        }
        // Not a reset: the window still has what follows.
        let ok = format!("{}-{}", last.epoch(), last.seq() - 1);
        let frames = drain(&mut hub.subscribe_from(&alice, Some(&ok)).unwrap());
        assert_eq!(event_seqs(&frames), vec![last.seq()]);

        probe.take();
        let by_reason = |r| probe.counter_with(RESETS, "resets", Some(r));
        assert_eq!(by_reason("malformed"), 2);
        assert_eq!(by_reason("stale"), 1);
        assert_eq!(by_reason("expired"), 1);
        assert_eq!(by_reason("unknown"), 1);
        assert_eq!(hub.stats().resets, 5);
    });
}

#[test]
fn rejected_subscribes_are_counted_by_reason() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let mut cfg = config("rejects");
        cfg.max_connections_per_user = 2;
        cfg.max_channels = 1;
        let hub: Broadcaster<Value> = Broadcaster::new(cfg);
        let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));
        let _tabs = [
            hub.subscribe(&alice).unwrap(),
            hub.subscribe(&alice).unwrap(),
        ];
        for _ in 0..3 {
            assert_eq!(
                hub.subscribe(&alice).unwrap_err(),
                SubscribeError::TooManyConnections { max: 2 }
            );
        }
        for _ in 0..2 {
            assert_eq!(
                hub.subscribe(&bob).unwrap_err(),
                SubscribeError::AtCapacity { max: 1 }
            );
        }
        hub.shutdown();
        assert_eq!(
            hub.subscribe(&alice).unwrap_err(),
            SubscribeError::ShuttingDown
        );
        probe.take();
        let by_reason = |r| probe.counter_with(SUBSCRIBES_REJECTED, "rejects", Some(r));
        assert_eq!(by_reason("too_many_connections"), 3);
        assert_eq!(by_reason("at_capacity"), 2);
        assert_eq!(by_reason("shutting_down"), 1);
        // A refused subscribe opened no connection.
        assert_eq!(probe.gauge(CONNECTIONS, "rejects"), 2.0);
        assert_eq!(hub.stats().connections, 2);
    });
}

/// An event whose serialisation always fails.
struct Unserialisable;

impl serde::Serialize for Unserialisable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot serialise this"))
    }
}

#[test]
fn encode_failures_are_counted_and_nothing_is_published() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let failing: Broadcaster<Unserialisable> = Broadcaster::new(config("enc"));
        let named: Broadcaster<Named<Value>> = Broadcaster::new(config("named"));
        let alice = UserId::from("alice");
        let mut sub = failing.subscribe(&alice).unwrap();
        let mut named_sub = named.subscribe(&alice).unwrap();

        for _ in 0..3 {
            assert!(matches!(
                failing.broadcast(&alice, &Unserialisable),
                Err(PublishError::Encode(_))
            ));
        }
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert!(matches!(
                named.broadcast(&alice, &Named::new(bad.to_owned(), json!(1))),
                Err(PublishError::Frame(_))
            ));
        }
        // Too large is a refusal, not an encoding failure.
        let big = "x".repeat(named.config().max_frame_bytes);
        assert!(matches!(
            named.broadcast(&alice, &Named::new("ok", json!(big))),
            Err(PublishError::FrameTooLarge { .. })
        ));
        probe.take();
        assert_eq!(probe.counter(ENCODE_FAILURES, "enc"), 3);
        assert_eq!(probe.counter(ENCODE_FAILURES, "named"), 3);
        assert_eq!(probe.counter(EVENTS_PUBLISHED, "enc"), 0);
        assert_eq!(probe.counter(EVENTS_PUBLISHED, "named"), 0);
        assert!(drain(&mut sub).is_empty());
        assert!(drain(&mut named_sub).is_empty());
        assert_eq!(failing.stats().buffered_bytes, 0);
    });
}

#[test]
fn gauges_follow_connections_channels_and_buffered_bytes() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let mut cfg = config("gauges");
        cfg.replay_events = 4;
        cfg.retention = Duration::ZERO;
        let hub: Broadcaster<Value> = Broadcaster::new(cfg);
        let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));

        let mut a1 = hub.subscribe(&alice).unwrap();
        let a2 = hub.subscribe(&alice).unwrap();
        probe.take();
        assert_eq!(probe.gauge(CONNECTIONS, "gauges"), 2.0);
        assert_eq!(probe.gauge(USER_CHANNELS, "gauges"), 1.0);
        let b1 = hub.subscribe(&bob).unwrap();
        probe.take();
        assert_eq!(probe.gauge(CONNECTIONS, "gauges"), 3.0);
        assert_eq!(probe.gauge(USER_CHANNELS, "gauges"), 2.0);
        assert_eq!(probe.gauge(RETAINED_CHANNELS, "gauges"), 0.0);

        // Buffered bytes: exactly the frames the windows hold.
        let mut sizes = Vec::new();
        for i in 0..6 {
            hub.broadcast(&alice, &json!({ "pad": "x".repeat(i * 10) }))
                .unwrap();
            sizes.push(
                unconstrained(a1.next())
                    .now_or_never()
                    .unwrap()
                    .unwrap()
                    .bytes()
                    .len(),
            );
            probe.take();
            let held: usize = sizes.iter().rev().take(4).sum();
            assert_eq!(probe.gauge(BUFFERED_BYTES, "gauges"), held as f64);
            assert_eq!(hub.stats().buffered_bytes, held);
        }
        let held: usize = sizes.iter().rev().take(4).sum();

        drop(a2);
        probe.take();
        assert_eq!(probe.gauge(CONNECTIONS, "gauges"), 2.0);
        drop(a1);
        drop(b1);
        probe.take();
        assert_eq!(probe.gauge(CONNECTIONS, "gauges"), 0.0);
        assert_eq!(hub.stats().connections, 0);
        // Retained, not yet swept: the channels and alice's window stay.
        assert_eq!(hub.stats().retained_channels, 2);
        assert_eq!(probe.gauge(RETAINED_CHANNELS, "gauges"), 2.0);
        assert_eq!(hub.stats().buffered_bytes, held);

        assert_eq!(hub.sweep(), 2);
        probe.take();
        assert_eq!(probe.gauge(USER_CHANNELS, "gauges"), 0.0);
        assert_eq!(probe.gauge(RETAINED_CHANNELS, "gauges"), 0.0);
        assert_eq!(probe.gauge(BUFFERED_BYTES, "gauges"), 0.0);
        assert_eq!(hub.stats().buffered_bytes, 0);
    });
}

/// A broadcaster dropped with channels still held (a hub rebuilt on reconfiguration, a test
/// server torn down) gives back everything its channels counted in the gauges, also when a
/// connection outlives it: a new broadcaster under the same name starts from zero.
#[test]
fn gauges_return_to_zero_when_a_broadcaster_is_dropped() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let mut cfg = config("dropped");
        cfg.replay_events = 4;
        cfg.retention = Duration::from_secs(3600);
        let hub: Broadcaster<Value> = Broadcaster::new(cfg.clone());
        let (alice, bob, carol) = (
            UserId::from("alice"),
            UserId::from("bob"),
            UserId::from("carol"),
        );
        let outliving = hub.subscribe(&alice).unwrap();
        drop(hub.subscribe(&bob).unwrap());
        for user in [&alice, &bob, &carol] {
            hub.broadcast(user, &json!({ "pad": "x".repeat(40) }))
                .unwrap();
        }
        probe.take();
        assert_eq!(probe.gauge(USER_CHANNELS, "dropped"), 2.0);
        assert_eq!(probe.gauge(RETAINED_CHANNELS, "dropped"), 1.0);
        assert!(probe.gauge(BUFFERED_BYTES, "dropped") > 0.0);

        drop(hub);
        probe.take();
        // alice's connection still holds her channel: it counts until it goes.
        assert_eq!(probe.gauge(CONNECTIONS, "dropped"), 1.0);
        assert_eq!(probe.gauge(USER_CHANNELS, "dropped"), 1.0);
        assert_eq!(probe.gauge(RETAINED_CHANNELS, "dropped"), 0.0);
        drop(outliving);
        probe.take();
        for gauge in [
            CONNECTIONS,
            USER_CHANNELS,
            RETAINED_CHANNELS,
            BUFFERED_BYTES,
        ] {
            assert_eq!(probe.gauge(gauge, "dropped"), 0.0, "{gauge}");
        }

        let again: Broadcaster<Value> = Broadcaster::new(cfg);
        let _tab = again.subscribe(&alice).unwrap();
        probe.take();
        assert_eq!(probe.gauge(USER_CHANNELS, "dropped"), 1.0);
        assert_eq!(probe.gauge(CONNECTIONS, "dropped"), 1.0);
    });
}

/// A recorder whose gauges remember every value they were set to, to check bounds that a
/// scrape at the wrong moment could see.
#[derive(Default)]
struct GaugeHistory {
    values: Mutex<BTreeMap<String, Arc<GaugeLog>>>,
    /// Up to how long each `set` takes (a random share of it), as an exporter doing real work
    /// may: it stands for the thread being preempted between the atomic update and the `set`.
    set_takes: Duration,
}

#[derive(Default)]
struct GaugeLog {
    last: AtomicU64,
    max: AtomicU64,
    set_takes: Duration,
}

impl metrics::GaugeFn for GaugeLog {
    /// Atomic, as a real exporter's is; the delay stands for preemption before the update.
    fn increment(&self, value: f64) {
        self.delay();
        let mut now = 0.0;
        let _ = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
                now = f64::from_bits(bits) + value;
                Some(now.to_bits())
            });
        self.max.fetch_max(now.max(0.0) as u64, Ordering::SeqCst);
    }
    fn decrement(&self, value: f64) {
        self.increment(-value);
    }
    fn set(&self, value: f64) {
        self.delay();
        self.last.store(value.to_bits(), Ordering::SeqCst);
        self.max.fetch_max(value.max(0.0) as u64, Ordering::SeqCst);
    }
}

impl GaugeLog {
    fn delay(&self) {
        let started = Instant::now();
        let takes = self.set_takes.mul_f64(fastrand::f64());
        while started.elapsed() < takes {
            std::hint::spin_loop();
        }
    }
}

impl GaugeHistory {
    fn log(&self, name: &str) -> Arc<GaugeLog> {
        self.values.lock().unwrap()[name].clone()
    }
}

impl Recorder for GaugeHistory {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let log = Arc::new(GaugeLog {
            set_takes: self.set_takes,
            ..GaugeLog::default()
        });
        self.values
            .lock()
            .unwrap()
            .insert(key.name().to_owned(), log.clone());
        Gauge::from_arc(log)
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The crate docs: "`buffered_bytes ≤ U·W`". The gauge (and `Stats::buffered_bytes`) must never
/// report more, not even for the instant between a publish adding its frame and evicting.
#[test]
fn buffered_bytes_gauge_never_exceeds_the_documented_bound() {
    let recorder = GaugeHistory::default();
    metrics::with_local_recorder(&recorder, || {
        let mut cfg = config("bound");
        cfg.replay_bytes = 1000;
        let hub: Broadcaster<Value> = Broadcaster::new(cfg);
        let alice = UserId::from("alice");
        let _tab = hub.subscribe(&alice).unwrap();
        for _ in 0..50 {
            hub.broadcast(&alice, &json!({ "pad": "x".repeat(100) }))
                .unwrap();
            assert!(hub.stats().buffered_bytes <= 1000);
        }
        let log = recorder.log(BUFFERED_BYTES);
        let max = log.max.load(Ordering::SeqCst);
        assert!(max <= 1000, "the gauge was set to {max} > U·W = 1000");
    });
}

/// Were gauges set from the value an atomic returned, after the atomic operation, two threads
/// could set them in the opposite order, leaving the gauge stale until the next change. Here two
/// threads each open a connection, publish and close it, per round; after every round the
/// gauges must equal `stats()`.
#[test]
fn gauges_are_exact_after_concurrent_changes() {
    let recorder = GaugeHistory {
        set_takes: Duration::from_micros(50),
        ..GaugeHistory::default()
    };
    let hub: Broadcaster<Value> = metrics::with_local_recorder(&recorder, || {
        let mut cfg = config("race");
        cfg.replay_events = 1;
        cfg.retention = Duration::ZERO;
        Broadcaster::new(cfg)
    });
    const ROUNDS: usize = 2000;
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (hub, barrier) = (hub.clone(), barrier.clone());
            std::thread::spawn(move || {
                let user = UserId::from(format!("user-{t}"));
                for _ in 0..ROUNDS {
                    barrier.wait();
                    let sub = hub.subscribe(&user).unwrap();
                    hub.broadcast(&user, &json!(t)).unwrap();
                    drop(sub);
                    barrier.wait();
                }
            })
        })
        .collect();
    let (connections, buffered) = (recorder.log(CONNECTIONS), recorder.log(BUFFERED_BYTES));
    let read = |log: &GaugeLog| f64::from_bits(log.last.load(Ordering::SeqCst));
    let (mut stale_connections, mut stale_buffered) = (0, 0);
    for _ in 0..ROUNDS {
        barrier.wait();
        barrier.wait();
        let stats = hub.stats();
        assert_eq!(stats.connections, 0);
        if read(&connections) != 0.0 {
            stale_connections += 1;
        }
        if read(&buffered) != stats.buffered_bytes as f64 {
            stale_buffered += 1;
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        (stale_connections, stale_buffered),
        (0, 0),
        "rounds out of {ROUNDS} after which the connections / buffered-bytes gauge was stale"
    );
}

/// A backplane between the broadcasters of one process, each standing for a node: a publish
/// gets the next id and is delivered from a task, on every node whose broadcaster has the
/// channel's name, as a real backplane's feed delivers it. While `refuse` is set, it refuses
/// every publish at once, as a full queue does.
#[derive(Default)]
struct LoopBackplane {
    nodes: Mutex<Vec<LocalChannels>>,
    last: Arc<AtomicU64>,
    refuse: AtomicBool,
}

impl Backplane for LoopBackplane {
    fn attach(&self, channels: LocalChannels) {
        self.nodes.lock().unwrap().push(channels);
    }
    fn channel_created(&self, _: &str, _: &UserId) {}
    fn channel_removed(&self, _: &str, _: &UserId) {}
    fn publish(
        &self,
        channels: &LocalChannels,
        user: &UserId,
        head: Bytes,
    ) -> BoxFuture<'static, Result<Published, BackplaneError>> {
        if self.refuse.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(BackplaneError::Overloaded)));
        }
        let id = EventId::new(1, self.last.fetch_add(1, Ordering::SeqCst) + 1);
        let frame = Bytes::from([&head[..], format!("id: {id}\n\n").as_bytes()].concat());
        let nodes: Vec<LocalChannels> = self
            .nodes
            .lock()
            .unwrap()
            .iter()
            .filter(|node| node.name() == channels.name())
            .cloned()
            .collect();
        let user = user.clone();
        let delivered = tokio::spawn(async move {
            for node in &nodes {
                node.deliver(&user, frame.clone());
            }
            Published {
                id: Some(id),
                delivery: Delivery::Nodes(nodes.len()),
            }
        });
        Box::pin(async move { Ok(delivered.await.unwrap()) })
    }
    fn catch_up(
        &self,
        _: &str,
        _: &UserId,
        _: Option<EventId>,
    ) -> BoxFuture<'static, Result<History, BackplaneError>> {
        let last_id = EventId::new(1, self.last.load(Ordering::SeqCst));
        Box::pin(std::future::ready(Ok(History {
            last_id,
            deleted_through: EventId::new(0, 0),
            events: Vec::new(),
        })))
    }
    fn is_connected(&self) -> bool {
        true
    }
}

/// The next frame of a subscription, within a bound.
async fn next_frame<E>(sub: &mut Subscription<E>) -> Frame {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a frame within 5 s")
        .expect("the stream goes on")
}

/// With a backplane, `sse_hub_events_published_total` and `Stats::published` count the
/// publishes a node accepted, as on a single node: not the events the feed brought to its
/// channels, which every node serving the user counts once more (and a node serving nobody,
/// never), so that neither a node's figure nor a sum over nodes was the events published.
#[tokio::test]
async fn with_a_backplane_published_counts_the_publishes_a_node_accepted() {
    let backplane = Arc::new(LoopBackplane::default());
    let (recorder_a, recorder_b) = (DebuggingRecorder::new(), DebuggingRecorder::new());
    let (mut probe_a, mut probe_b) = (Probe::new(&recorder_a), Probe::new(&recorder_b));
    let node = |recorder: &DebuggingRecorder| -> Broadcaster<Value> {
        metrics::with_local_recorder(recorder, || {
            Broadcaster::with_backplane(config("bp"), backplane.clone())
        })
    };
    let (a, b) = (node(&recorder_a), node(&recorder_b));
    let alice = UserId::from("alice");

    // Alice is served by node B only; node A publishes to her.
    let mut on_b = b.subscribe_async(&alice, None).await.unwrap();
    a.broadcast(&alice, &json!(1)).unwrap();
    a.broadcast(&alice, &json!(2)).unwrap();
    a.broadcast_async(&alice, &json!(3)).await.unwrap();
    for _ in 0..3 {
        assert!(next_frame(&mut on_b).await.id().is_some());
    }
    probe_a.take();
    probe_b.take();
    assert_eq!((a.stats().published, b.stats().published), (3, 0));
    assert_eq!(probe_a.counter(EVENTS_PUBLISHED, "bp"), 3);
    assert_eq!(probe_b.counter(EVENTS_PUBLISHED, "bp"), 0);
    // Each node times its own deliveries: B delivered three, A none.
    assert_eq!(probe_b.histogram(PUBLISH_SECONDS, "bp").len(), 3);
    assert_eq!(probe_a.histogram(PUBLISH_SECONDS, "bp").len(), 0);

    // Served by both nodes now: one publish on B is one event published, delivered twice.
    let mut on_a = a.subscribe_async(&alice, None).await.unwrap();
    b.broadcast_async(&alice, &json!(4)).await.unwrap();
    assert_eq!(
        next_frame(&mut on_a).await.id(),
        next_frame(&mut on_b).await.id()
    );
    probe_a.take();
    probe_b.take();
    assert_eq!((a.stats().published, b.stats().published), (3, 1));
    assert_eq!(probe_a.counter(EVENTS_PUBLISHED, "bp"), 3);
    assert_eq!(probe_b.counter(EVENTS_PUBLISHED, "bp"), 1);

    // A publish the backplane refuses is not published, sync or async.
    backplane.refuse.store(true, Ordering::SeqCst);
    assert!(a.broadcast(&alice, &json!(5)).is_err());
    assert!(a.broadcast_async(&alice, &json!(6)).await.is_err());
    probe_a.take();
    assert_eq!(a.stats().published, 3);
    assert_eq!(probe_a.counter(EVENTS_PUBLISHED, "bp"), 3);
}

/// The router's publish of one event to two channels through one backplane call
/// (`Backplane::publish_all`) counts it once on each channel of the publishing node.
#[tokio::test]
async fn with_a_backplane_a_routed_event_is_published_once_per_channel_on_its_node() {
    let backplane = Arc::new(LoopBackplane::default());
    let (a, b) = (
        EventRouter::with_backplane(config("unused"), backplane.clone()),
        EventRouter::with_backplane(config("unused"), backplane.clone()),
    );
    let alice = UserId::from("alice");
    let mut agui_on_b = b.agui().subscribe_async(&alice, None).await.unwrap();
    let event: AgUiEvent =
        serde_json::from_value(json!({"type": "RUN_STARTED", "threadId": "t", "runId": "r"}))
            .unwrap();
    a.route_agui(&alice, &event).unwrap();
    a.route_async(&alice, &event).await.unwrap();
    for _ in 0..2 {
        next_frame(&mut agui_on_b).await;
    }
    let (on_a, on_b) = (a.stats(), b.stats());
    assert_eq!((on_a.agui.published, on_a.context.published), (2, 2));
    assert_eq!((on_b.agui.published, on_b.context.published), (0, 0));
}
