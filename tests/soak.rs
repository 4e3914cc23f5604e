//! Soak and churn on a multi-thread runtime.
//!
//! Many tasks subscribe (fresh or resuming), read, stall, drop and publish across thousands of
//! users, while others kick users and sweep. Every subscription checks what it reads: only its
//! user's events, sequence numbers that follow one another, a gap only right after a `lagged`
//! marker that counts it, a `reset` only first and only on a resume. At the end nothing is left:
//! no connection, and after the retention no channel and no buffered byte.
//!
//! A second test hammers the race between the sweep removing a channel whose last connection
//! just went and a new subscribe of the same user: a subscriber must always land on the live
//! channel, which a publish made right after it subscribed proves by reaching it.
//!
//! Runs about 3 s in CI; set `SSE_HUB_SOAK_SECS` for longer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::unconstrained;

use futures_util::{FutureExt, StreamExt};
use serde_json::{Value, json};
use sse_hub::{
    Broadcaster, Config, EndReason, EventId, Frame, FrameKind, LagPolicy, ResetReason,
    SubscribeError, Subscription, UserId,
};
use tokio::time::{Instant, timeout};

const USERS: usize = 3000;
/// Users most of the traffic goes to, so that subscribers see events and collide.
const HOT: usize = 48;

fn soak_time() -> Duration {
    std::env::var("SSE_HUB_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::from_secs(3), Duration::from_secs_f64)
}

fn pick_user(rng: &mut fastrand::Rng) -> usize {
    if rng.u8(..10) < 7 {
        rng.usize(..HOT)
    } else {
        rng.usize(..USERS)
    }
}

fn data(frame: &Frame) -> Value {
    let text = std::str::from_utf8(frame.bytes()).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    serde_json::from_str(line).unwrap()
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    subscriptions: u64,
    resumed: u64,
    /// Resumes served from the window (no reset).
    replayed: u64,
    resets: u64,
    events: u64,
    lagged: u64,
    missed: u64,
    lag_ends: u64,
    kick_ends: u64,
    rejected: u64,
    published: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.subscriptions += o.subscriptions;
        self.resumed += o.resumed;
        self.replayed += o.replayed;
        self.resets += o.resets;
        self.events += o.events;
        self.lagged += o.lagged;
        self.missed += o.missed;
        self.lag_ends += o.lag_ends;
        self.kick_ends += o.kick_ends;
        self.rejected += o.rejected;
        self.published += o.published;
    }
}

/// Checks one subscription's frames as they come.
struct Checker {
    user: String,
    start: EventId,
    last: EventId,
    resumed: bool,
    policy: LagPolicy,
    read: u64,
    gap: Option<u64>,
    ended: bool,
}

impl Checker {
    fn new(sub: &Subscription<Value>, resumed_from: Option<EventId>, policy: LagPolicy) -> Self {
        Self {
            user: sub.user().to_string(),
            start: sub.start_id(),
            last: sub.start_id(),
            resumed: resumed_from.is_some(),
            policy,
            read: 0,
            gap: None,
            ended: false,
        }
    }

    fn frame(&mut self, frame: &Frame, tally: &mut Tally) -> Result<(), String> {
        let ctx = || format!("user {} from {}", self.user, self.start);
        if self.ended {
            return Err(format!("{}: a frame after the end", ctx()));
        }
        let first = self.read == 0;
        self.read += 1;
        match frame.kind() {
            FrameKind::Reset(reason) => {
                if !(first && self.resumed) {
                    return Err(format!("{}: a reset that is not first on a resume", ctx()));
                }
                if !matches!(reason, ResetReason::Stale | ResetReason::Expired) {
                    return Err(format!(
                        "{}: reset {reason:?} for an id we were given",
                        ctx()
                    ));
                }
                tally.resets += 1;
            }
            FrameKind::Lagged { missed } => {
                if missed == 0 || self.gap.is_some() {
                    return Err(format!("{}: lagged {missed} after {:?}", ctx(), self.gap));
                }
                self.gap = Some(missed);
                tally.lagged += 1;
                tally.missed += missed;
            }
            FrameKind::Event(id) => {
                let skip = self.gap.take().unwrap_or(0);
                if id.epoch() != self.start.epoch() || id.seq() != self.last.seq() + 1 + skip {
                    return Err(format!(
                        "{}: event {id} after {} (lagged {skip})",
                        ctx(),
                        self.last
                    ));
                }
                let data = data(frame);
                if data["user"].as_str() != Some(&self.user) {
                    return Err(format!("{}: ISOLATION: got {data}", ctx()));
                }
                self.last = id;
                tally.events += 1;
            }
            other => return Err(format!("{}: unexpected {other:?}", ctx())),
        }
        Ok(())
    }

    fn end(&mut self, reason: Option<EndReason>, tally: &mut Tally) -> Result<(), String> {
        self.ended = true;
        match reason {
            Some(EndReason::Lagged)
                if self.policy == LagPolicy::Disconnect && self.gap.is_some() =>
            {
                // The marker said how many were lost; the client resumes from `last`.
                self.gap = None;
                tally.lag_ends += 1;
                Ok(())
            }
            Some(EndReason::Disconnected) => {
                tally.kick_ends += 1;
                Ok(())
            }
            other => Err(format!(
                "user {} from {}: ended with {other:?} under {:?}, lagged {:?}",
                self.user, self.start, self.policy, self.gap
            )),
        }
    }
}

async fn subscriber(
    hub: Broadcaster<Value>,
    users: Arc<Vec<UserId>>,
    deadline: Instant,
    seed: u64,
) -> Result<Tally, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    let mut last_ids: HashMap<usize, EventId> = HashMap::new();
    let mut previous = None;
    while Instant::now() < deadline {
        // Half the time, reconnect at once to the same user, as a browser does.
        let user = match previous {
            Some(user) if rng.bool() => user,
            _ => pick_user(&mut rng),
        };
        let from = if rng.u8(..4) > 0 {
            last_ids.get(&user).copied()
        } else {
            None
        };
        let policy = [LagPolicy::Recover, LagPolicy::Notify, LagPolicy::Disconnect][rng.usize(..3)];
        let sub = match hub.subscribe_from(&users[user], from.map(|id| id.to_string()).as_deref()) {
            Ok(sub) => sub.with_lag_policy(policy),
            Err(SubscribeError::TooManyConnections { .. }) => {
                tally.rejected += 1;
                continue;
            }
            Err(e) => return Err(format!("subscribe: {e}")),
        };
        let mut sub = sub;
        let mut check = Checker::new(&sub, from, policy);
        if let Some(from) = from {
            tally.resumed += 1;
            if sub.start_id() != from {
                // A resume that cannot be served says so first.
                let first = unconstrained(sub.next()).now_or_never().flatten();
                match &first {
                    Some(frame) if matches!(frame.kind(), FrameKind::Reset(_)) => {
                        check.frame(frame, &mut tally)?
                    }
                    other => {
                        return Err(format!(
                            "resume from {from} started at {} with {other:?}",
                            sub.start_id()
                        ));
                    }
                }
            } else {
                tally.replayed += 1;
            }
        }
        tally.subscriptions += 1;
        for _ in 0..rng.usize(1..40) {
            if rng.u8(..8) == 0 {
                // Stall, so that the ring overflows.
                tokio::time::sleep(Duration::from_millis(rng.u64(1..4))).await;
            }
            match timeout(Duration::from_millis(rng.u64(1..10)), sub.next()).await {
                Ok(Some(frame)) => check.frame(&frame, &mut tally)?,
                Ok(None) => {
                    check.end(sub.end_reason(), &mut tally)?;
                    break;
                }
                Err(_) => {}
            }
        }
        // Read what is ready, so that a pending marker is seen before the id is kept.
        while !check.ended {
            match unconstrained(sub.next()).now_or_never() {
                Some(Some(frame)) => check.frame(&frame, &mut tally)?,
                Some(None) => check.end(sub.end_reason(), &mut tally)?,
                None => break,
            }
        }
        if check.gap.is_some() {
            return Err("a lagged marker with no event after it".into());
        }
        last_ids.insert(user, check.last);
        previous = Some(user);
        drop(sub);
    }
    Ok(tally)
}

async fn publisher(
    hub: Broadcaster<Value>,
    users: Arc<Vec<UserId>>,
    deadline: Instant,
    seed: u64,
) -> Result<Tally, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        // Mostly a steady trickle; now and then a burst to one user, past its ring (and
        // sometimes past its window), so that readers lag.
        let burst = if rng.u8(..6) == 0 {
            let user = rng.usize(..HOT);
            vec![user; rng.usize(10..100)]
        } else {
            (0..8).map(|_| pick_user(&mut rng)).collect()
        };
        for user in burst {
            let user = &users[user];
            let event = json!({ "user": user.as_str(), "p": seed, "n": n });
            n += 1;
            hub.broadcast(user, &event)
                .map_err(|e| format!("publish: {e}"))?;
            tally.published += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(tally)
}

#[test]
fn churn_across_thousands_of_users_delivers_exactly_and_leaves_nothing_behind() {
    let soak = soak_time();
    let mut config = Config::named("soak");
    config.capacity = 8;
    config.replay_events = 64;
    config.retention = Duration::from_millis(50);
    let retention = config.retention;
    let hub: Broadcaster<Value> = Broadcaster::new(config);
    let users: Arc<Vec<UserId>> = Arc::new(
        (0..USERS)
            .map(|u| UserId::from(format!("user-{u}")))
            .collect(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let total = runtime.block_on(async {
        let deadline = Instant::now() + soak;
        let mut tasks = Vec::new();
        for seed in 0..32 {
            tasks.push(tokio::spawn(subscriber(
                hub.clone(),
                users.clone(),
                deadline,
                seed,
            )));
        }
        for seed in 100..103 {
            tasks.push(tokio::spawn(publisher(
                hub.clone(),
                users.clone(),
                deadline,
                seed,
            )));
        }
        let (kicker_hub, kicker_users) = (hub.clone(), users.clone());
        let kicker = tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(7);
            let mut kicks = 0u64;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(3)).await;
                kicker_hub.disconnect_user(&kicker_users[rng.usize(..HOT)]);
                kicker_hub.sweep();
                kicks += 1;
            }
            kicks
        });
        let mut total = Tally::default();
        for task in tasks {
            let result = timeout(soak + Duration::from_secs(20), task)
                .await
                .expect("a task did not finish in time")
                .expect("a task panicked");
            total.add(result.unwrap_or_else(|e| panic!("{e}")));
        }
        assert!(kicker.await.unwrap() > 0);
        total
    });
    println!("{total:?}\n{:?}", hub.stats());

    // Every path was exercised.
    // (Thresholds far below what a run does, so that a loaded machine passes too.)
    assert!(total.subscriptions > 200, "{total:?}");
    assert!(total.events > 1000, "{total:?}");
    assert!(total.resumed > 50, "{total:?}");
    assert!(
        total.replayed > total.resumed / 4 && total.resets > 0,
        "{total:?}"
    );
    assert!(total.lagged > 0 && total.lag_ends > 0, "{total:?}");
    assert!(total.kick_ends > 0, "{total:?}");

    // Counts are exact as soon as every subscription is dropped.
    let stats = hub.stats();
    assert_eq!(stats.connections, 0, "{stats:?}");
    assert_eq!(stats.users, 0, "{stats:?}");
    assert_eq!(hub.total_connections(), 0);
    assert!(hub.connected_users().is_empty());
    assert!(
        stats.events_missed >= total.missed,
        "markers the clients saw ({}) are counted ({})",
        total.missed,
        stats.events_missed
    );

    // Once the retention has passed, one sweep removes every channel and every buffered byte.
    // The runtime goes first, so its sweeper task cannot race the sweep here.
    let idle_since = Instant::now();
    drop(runtime);
    std::thread::sleep(retention.saturating_sub(idle_since.elapsed()));
    hub.sweep();
    let stats = hub.stats();
    assert_eq!(stats.retained_channels, 0, "{stats:?}");
    assert_eq!(stats.buffered_bytes, 0, "{stats:?}");
    assert!(hub.buffered_by_user().is_empty());
}

/// Retention zero, a sweep in a loop, and two tasks per user subscribing and dropping in a
/// loop: a last drop makes the channel removable at once, and the next subscribe races its
/// removal. A subscriber that landed on a removed channel would not get the publish made right
/// after its subscribe, and that publish's id would be of another channel.
#[test]
fn a_subscribe_racing_the_removal_of_its_channel_lands_on_the_live_one() {
    let run_for = (soak_time() / 3).max(Duration::from_millis(500));
    let mut config = Config::named("race");
    config.retention = Duration::ZERO;
    config.capacity = 256;
    config.replay_events = 1024;
    let hub: Broadcaster<Value> = Broadcaster::new(config);
    const RACE_USERS: usize = 6;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (rounds, epochs) = runtime.block_on(async {
        let deadline = Instant::now() + run_for;
        let mut tasks = Vec::new();
        for task in 0..RACE_USERS * 2 {
            let hub = hub.clone();
            tasks.push(tokio::spawn(async move {
                let user = UserId::from(format!("user-{}", task % RACE_USERS));
                let mut epochs = HashSet::new();
                let mut rounds = 0u64;
                while Instant::now() < deadline {
                    let mut sub = hub.subscribe(&user).map_err(|e| e.to_string())?;
                    let epoch = sub.start_id().epoch();
                    epochs.insert(epoch);
                    let probe = format!("{task}-{rounds}");
                    let published = hub
                        .broadcast(&user, &json!({ "user": user.as_str(), "probe": probe }))
                        .map_err(|e| e.to_string())?;
                    let id = published.id.ok_or("published to no channel")?;
                    if id.epoch() != epoch || published.connections() == Some(0) {
                        return Err(format!(
                            "subscribed on {epoch}, published {published:?}: stranded"
                        ));
                    }
                    // The probe arrives; or, if this task was descheduled long enough for the
                    // other one to overflow the ring and the window, a `lagged` marker covers it.
                    // (Awaited, not `now_or_never`: a backlog can exceed tokio's cooperative
                    // budget, and only a yield renews it.)
                    let (mut reached, mut last, mut gap) = (false, sub.start_id().seq(), 0);
                    while !reached {
                        let Ok(Some(frame)) = timeout(Duration::from_secs(5), sub.next()).await
                        else {
                            return Err(format!("the publish {id} did not reach its subscriber"));
                        };
                        match frame.kind() {
                            FrameKind::Lagged { missed } => gap = missed,
                            FrameKind::Event(got) => {
                                if got.seq() != last + 1 + gap {
                                    return Err(format!("{got} after {last} (lagged {gap})"));
                                }
                                if got == id {
                                    assert_eq!(data(&frame)["probe"], probe.as_str());
                                    reached = true;
                                } else if got.seq() > id.seq() {
                                    if !(last < id.seq() && gap > 0) {
                                        return Err(format!("{id} skipped without a marker"));
                                    }
                                    reached = true;
                                }
                                (last, gap) = (got.seq(), 0);
                            }
                            FrameKind::Reset(_) => {
                                return Err("a reset on a fresh subscribe".into());
                            }
                            other => return Err(format!("unexpected {other:?}")),
                        }
                    }
                    drop(sub);
                    rounds += 1;
                    if rounds.is_multiple_of(4) {
                        tokio::task::yield_now().await;
                    }
                }
                Ok::<_, String>((rounds, epochs.len() as u64))
            }));
        }
        for _ in 0..2 {
            let hub = hub.clone();
            tasks.push(tokio::spawn(async move {
                let mut removed = 0;
                while Instant::now() < deadline {
                    removed += hub.sweep() as u64;
                    tokio::task::yield_now().await;
                }
                Ok((0, removed))
            }));
        }
        let mut rounds = 0;
        let mut epochs = 0;
        for task in tasks {
            let (r, e) = timeout(run_for + Duration::from_secs(20), task)
                .await
                .expect("a task did not finish in time")
                .expect("a task panicked")
                .unwrap_or_else(|e| panic!("{e}"));
            rounds += r;
            epochs += e;
        }
        (rounds, epochs)
    });
    drop(runtime);
    println!("{rounds} subscribe rounds; channels created or removed: {epochs}");
    assert!(rounds > 500, "{rounds}");
    // Channels really were removed and recreated under the subscribers, many times.
    assert!(epochs > 100, "{epochs}");
    let stats = hub.stats();
    assert_eq!((stats.connections, stats.users), (0, 0), "{stats:?}");
    hub.sweep();
    let stats = hub.stats();
    assert_eq!(
        (stats.retained_channels, stats.buffered_bytes),
        (0, 0),
        "{stats:?}"
    );
}
