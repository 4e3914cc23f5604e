//! Delivery properties over random operation sequences, checked against a model.
//!
//! A fixed set of *clients*, each bound to one user, connect (fresh, or resuming with the last
//! event id they hold, as an `EventSource` does), disconnect, and read; the publisher publishes
//! bursts to any user. Everything runs on a current-thread runtime and every read is a
//! `now_or_never()` drain outside tokio's cooperative budget (`unconstrained`), so each case is deterministic.
//!
//! For every frame a client reads, the checker asserts:
//!
//! * isolation: an event's data names the client's user, and its id belongs to the channel of
//!   that user the client joined;
//! * exactness: an event is the one published with that id, and its sequence number is the one
//!   after the client's last, or after the last plus `missed` right after a `lagged` marker; so
//!   no duplicate, no reorder, and no gap without a marker that counts it exactly;
//! * `reset` only first, only on a resume, and for the reason the model predicts (stale epoch,
//!   expired from the window, malformed id); a resume that can be served replays from right
//!   after the client's id;
//! * completeness: after a drain, a live client is at its channel's head (it got or was told
//!   about everything); under `Disconnect` a `lagged` marker counts exactly the gap to the oldest
//!   event the ring still had, and the stream then ends;
//! * the counters: connections and users after every step, and `events_missed` equal to the sum
//!   of every `lagged` count the clients saw.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::task::unconstrained;

use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;
use serde_json::{Value, json};
use sse_hub::{
    Broadcaster, Config, EndReason, EventId, Frame, FrameKind, LagPolicy, ResetReason,
    Subscription, UserId,
};

const POLICIES: [LagPolicy; 3] = [LagPolicy::Recover, LagPolicy::Notify, LagPolicy::Disconnect];

#[derive(Debug, Clone)]
enum Op {
    /// (Re)connects the client: drops its open subscription, if any, then subscribes, resuming
    /// from the client's last event id when `resume` (and it has one).
    Connect {
        client: usize,
        resume: bool,
        policy: usize,
    },
    /// Connects with a `Last-Event-ID` that is not an id.
    ConnectWithGarbage {
        client: usize,
        garbage: String,
    },
    /// Drops the client's subscription; the client keeps its last event id.
    Disconnect {
        client: usize,
    },
    /// Publishes `count` events to a user.
    Publish {
        user: usize,
        count: u64,
    },
    /// `disconnect_user`: ends the user's open streams, keeps the channel.
    Kick {
        user: usize,
    },
    /// Reads everything the client's subscription has ready.
    Read {
        client: usize,
    },
    ReadAll,
}

#[derive(Debug, Clone)]
struct Case {
    users: usize,
    clients: usize,
    capacity: usize,
    replay_events: usize,
    /// Zero: a channel goes with its last connection (at the next subscribe or publish).
    /// Otherwise long enough never to expire during a case.
    retain: bool,
    ops: Vec<Op>,
}

fn op(users: usize, clients: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..clients, any::<bool>(), 0..POLICIES.len())
            .prop_map(|(client, resume, policy)| Op::Connect { client, resume, policy }),
        1 => (0..clients, "[ -~]{0,12}|[0-9]{1,3}-[0-9]{1,3}|-|[0-9]{25}-1")
            .prop_map(|(client, garbage)| Op::ConnectWithGarbage { client, garbage }),
        2 => (0..clients).prop_map(|client| Op::Disconnect { client }),
        6 => (0..users, prop_oneof![3 => 1..3u64, 1 => 3..12u64])
            .prop_map(|(user, count)| Op::Publish { user, count }),
        4 => (0..clients).prop_map(|client| Op::Read { client }),
        1 => Just(Op::ReadAll),
        1 => (0..users).prop_map(|user| Op::Kick { user }),
    ]
}

fn case(users: std::ops::RangeInclusive<usize>, max_ops: usize) -> impl Strategy<Value = Case> {
    (users, 1..=6usize, 0..4u32, 0..10usize, any::<bool>()).prop_flat_map(
        move |(users, clients, capacity_log2, replay_events, retain)| {
            let clients = clients.max(users);
            prop::collection::vec(op(users, clients), 1..max_ops).prop_map(move |ops| Case {
                users,
                clients,
                capacity: 1 << capacity_log2,
                replay_events,
                retain,
                ops,
            })
        },
    )
}

/// The model of one user's channel.
#[derive(Debug, Default)]
struct ChannelModel {
    /// `None` while the user has no channel.
    epoch: Option<u64>,
    head: u64,
    /// Sequence numbers the replay window holds.
    window: VecDeque<u64>,
    /// Subscriptions alive (including ended ones not yet dropped: they still hold a receiver).
    subscriptions: usize,
    /// The last `capacity` slots of the broadcast ring: events (`Some(seq)`) and kicks. tokio
    /// stores nothing that is sent while there is no receiver.
    ring: VecDeque<Option<u64>>,
}

impl ChannelModel {
    fn send(&mut self, slot: Option<u64>, capacity: u64) {
        if self.subscriptions == 0 {
            return;
        }
        self.ring.push_back(slot);
        if self.ring.len() as u64 > capacity {
            self.ring.pop_front();
        }
    }
}

struct Client {
    user: usize,
    sub: Option<Subscription<Value>>,
    /// The channel epoch the open subscription is on.
    epoch: u64,
    /// The last event id the client holds: the subscription's start id (the priming `id:` the
    /// SSE response sends first), then the id of each event it reads.
    last: Option<EventId>,
    /// The subscription was resumed from an id, so a `reset` may come first.
    resumed: bool,
    /// The reset the model predicts for the open subscription.
    expect_reset: Option<ResetReason>,
    /// Frames read from the open subscription.
    read: usize,
    /// Set by a `lagged` marker: the next event skips this many.
    gap: Option<u64>,
    /// How the open subscription's stream ended, once it has.
    ended: Option<EndReason>,
    policy: LagPolicy,
    /// `disconnect_user` was called since it subscribed.
    kicked: bool,
}

/// How often each path was taken, to check that the generated cases reach them all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    lagged: [u64; 3],
    resets: [u64; 4],
    replayed_resumes: u64,
    published_to_nobody: u64,
    published_to_retained: u64,
    new_channels_for_a_known_user: u64,
    disconnect_ends: u64,
    kicked_ends: u64,
}

struct Harness {
    case: Case,
    hub: Broadcaster<Value>,
    users: Vec<UserId>,
    channels: Vec<ChannelModel>,
    clients: Vec<Client>,
    /// What was published with each id: (user, n).
    published: HashMap<EventId, (usize, u64)>,
    next_n: u64,
    missed_seen: u64,
    ring: u64,
    tally: Tally,
}

impl Harness {
    fn new(case: Case) -> Self {
        let mut config = Config::named("prop");
        config.capacity = case.capacity;
        config.replay_events = case.replay_events;
        config.replay_bytes = 1 << 30;
        config.replay_age = Duration::from_secs(3600);
        config.retention = if case.retain {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        };
        let users = (0..case.users)
            .map(|u| UserId::from(format!("user-{u}")))
            .collect();
        let clients = (0..case.clients)
            .map(|c| Client {
                user: c % case.users,
                sub: None,
                epoch: 0,
                last: None,
                resumed: false,
                expect_reset: None,
                read: 0,
                gap: None,
                ended: None,
                policy: LagPolicy::Recover,
                kicked: false,
            })
            .collect();
        Self {
            ring: case.capacity.next_power_of_two() as u64,
            channels: (0..case.users).map(|_| ChannelModel::default()).collect(),
            hub: Broadcaster::new(config),
            users,
            clients,
            published: HashMap::new(),
            next_n: 0,
            missed_seen: 0,
            tally: Tally::default(),
            case,
        }
    }

    fn run(&mut self) -> Result<(), TestCaseError> {
        for op in self.case.ops.clone() {
            match op {
                Op::Connect {
                    client,
                    resume,
                    policy,
                } => self.connect(client, resume, POLICIES[policy], None)?,
                Op::ConnectWithGarbage { client, garbage } => {
                    self.connect(client, true, LagPolicy::Recover, Some(garbage))?
                }
                Op::Disconnect { client } => self.disconnect(client),
                Op::Publish { user, count } => {
                    for _ in 0..count {
                        self.publish(user)?;
                    }
                }
                Op::Kick { user } => self.kick(user)?,
                Op::Read { client } => self.read(client)?,
                Op::ReadAll => {
                    for client in 0..self.clients.len() {
                        self.read(client)?;
                    }
                }
            }
            self.check_counts()?;
        }
        for client in 0..self.clients.len() {
            self.read(client)?;
        }
        prop_assert_eq!(self.hub.stats().events_missed, self.missed_seen);
        for client in 0..self.clients.len() {
            self.disconnect(client);
        }
        self.check_counts()?;
        Ok(())
    }

    /// With no retention, a channel goes with its last subscription: the next subscribe or
    /// publish (of anyone) sweeps it before doing anything else.
    fn forget_idle_channels(&mut self) {
        if self.case.retain {
            return;
        }
        for channel in &mut self.channels {
            if channel.subscriptions == 0 {
                *channel = ChannelModel::default();
            }
        }
    }

    fn disconnect(&mut self, client: usize) {
        let client = &mut self.clients[client];
        if client.sub.take().is_some() {
            self.channels[client.user].subscriptions -= 1;
        }
    }

    fn connect(
        &mut self,
        index: usize,
        resume: bool,
        policy: LagPolicy,
        garbage: Option<String>,
    ) -> Result<(), TestCaseError> {
        self.disconnect(index);
        self.forget_idle_channels();
        let user = self.clients[index].user;
        let from = match garbage {
            Some(garbage) => Some(garbage),
            None if resume => self.clients[index].last.map(|id| id.to_string()),
            None => None,
        };
        let channel = &self.channels[user];
        let expect_reset = from.as_deref().and_then(|raw| {
            let Some(id) = EventId::parse(raw) else {
                return Some(ResetReason::Malformed);
            };
            let oldest = channel.window.front().copied().unwrap_or(channel.head + 1);
            match channel.epoch {
                Some(epoch) if epoch == id.epoch() && id.seq() > channel.head => {
                    Some(ResetReason::Unknown)
                }
                Some(epoch) if epoch == id.epoch() && id.seq() + 1 < oldest => {
                    Some(ResetReason::Expired)
                }
                Some(epoch) if epoch == id.epoch() => None,
                _ => Some(ResetReason::Stale),
            }
        });

        let sub = self
            .hub
            .subscribe_from(&self.users[user], from.as_deref())
            .map_err(|e| TestCaseError::fail(format!("subscribe refused: {e}")))?
            .with_lag_policy(policy);
        prop_assert_eq!(sub.user(), &self.users[user]);
        let start = sub.start_id();
        let channel = &mut self.channels[user];
        match channel.epoch {
            Some(epoch) => prop_assert_eq!(start.epoch(), epoch, "joined another channel"),
            None => {
                prop_assert!(
                    !self.published.keys().any(|id| id.epoch() == start.epoch()),
                    "a new channel reuses an epoch"
                );
                if self.published.values().any(|(u, _)| *u == user) {
                    self.tally.new_channels_for_a_known_user += 1;
                }
                channel.epoch = Some(start.epoch());
            }
        }
        channel.subscriptions += 1;
        match (&expect_reset, from.as_deref().and_then(EventId::parse)) {
            (None, Some(id)) => {
                prop_assert_eq!(start, id, "a resume starts at the client's id");
                if id.seq() < channel.head {
                    self.tally.replayed_resumes += 1;
                }
            }
            _ => prop_assert_eq!(start.seq(), channel.head, "a fresh start is at the head"),
        }
        let client = &mut self.clients[index];
        client.sub = Some(sub);
        client.epoch = start.epoch();
        client.last = Some(start);
        client.resumed = from.is_some();
        client.expect_reset = expect_reset;
        client.read = 0;
        client.gap = None;
        client.ended = None;
        client.policy = policy;
        client.kicked = false;
        Ok(())
    }

    fn kick(&mut self, user: usize) -> Result<(), TestCaseError> {
        let open = self.hub.disconnect_user(&self.users[user]);
        let channel = &mut self.channels[user];
        prop_assert_eq!(open, channel.subscriptions);
        if channel.epoch.is_some() {
            channel.send(None, self.ring);
        }
        for client in &mut self.clients {
            if client.user == user && client.sub.is_some() {
                client.kicked = true;
            }
        }
        Ok(())
    }

    fn publish(&mut self, user: usize) -> Result<(), TestCaseError> {
        self.forget_idle_channels();
        let n = self.next_n;
        self.next_n += 1;
        let user_id = &self.users[user];
        let published = self
            .hub
            .broadcast(user_id, &json!({ "user": user_id.as_str(), "n": n }))
            .map_err(|e| TestCaseError::fail(format!("publish refused: {e}")))?;
        let channel = &mut self.channels[user];
        prop_assert_eq!(published.connections(), Some(channel.subscriptions));
        let Some(epoch) = channel.epoch else {
            prop_assert_eq!(published.id, None, "published to a user with no channel");
            self.tally.published_to_nobody += 1;
            return Ok(());
        };
        if channel.subscriptions == 0 {
            self.tally.published_to_retained += 1;
        }
        channel.head += 1;
        let id = published.id.expect("the user has a channel");
        prop_assert_eq!(id, EventId::new(epoch, channel.head));
        channel.send(Some(channel.head), self.ring);
        if self.case.replay_events > 0 {
            channel.window.push_back(channel.head);
            if channel.window.len() > self.case.replay_events {
                channel.window.pop_front();
            }
        }
        self.published.insert(id, (user, n));
        Ok(())
    }

    fn read(&mut self, index: usize) -> Result<(), TestCaseError> {
        let channel = &self.channels[self.clients[index].user];
        let head = channel.head;
        let client = &mut self.clients[index];
        let Some(sub) = client.sub.as_mut() else {
            return Ok(());
        };
        let user = client.user;
        let mut frames = Vec::new();
        let mut ended = false;
        loop {
            match unconstrained(sub.next()).now_or_never() {
                Some(Some(frame)) => frames.push(frame),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        for frame in frames {
            prop_assert!(client.ended.is_none(), "a frame after the stream ended");
            let first = client.read == 0;
            client.read += 1;
            let last = client.last.expect("a connected client holds an id");
            match frame.kind() {
                FrameKind::Reset(reason) => {
                    prop_assert!(first && client.resumed, "a reset that is not first");
                    prop_assert_eq!(Some(reason), client.expect_reset);
                    client.expect_reset = None;
                    let at = [
                        ResetReason::Malformed,
                        ResetReason::Stale,
                        ResetReason::Expired,
                        ResetReason::Unknown,
                    ];
                    self.tally.resets[at.iter().position(|r| *r == reason).unwrap()] += 1;
                }
                FrameKind::Lagged { missed } => {
                    prop_assert!(missed > 0, "a lagged marker for nothing");
                    prop_assert!(client.gap.is_none(), "two markers in a row");
                    self.missed_seen += missed;
                    let policy = POLICIES.iter().position(|p| *p == client.policy).unwrap();
                    self.tally.lagged[policy] += 1;
                    if sub.end_reason() == Some(EndReason::Lagged) {
                        // Disconnect: the gap runs to the oldest event the ring still had.
                        prop_assert_eq!(client.policy, LagPolicy::Disconnect);
                        let oldest = channel.ring.iter().flatten().find(|s| **s > last.seq());
                        prop_assert_eq!(Some(missed), oldest.map(|s| s - last.seq() - 1));
                        client.ended = Some(EndReason::Lagged);
                        self.tally.disconnect_ends += 1;
                    } else {
                        client.gap = Some(missed);
                    }
                }
                FrameKind::Event(id) => {
                    prop_assert!(
                        client.expect_reset.is_none(),
                        "the predicted reset did not come"
                    );
                    let skip = client.gap.take().unwrap_or(0);
                    prop_assert_eq!(id.epoch(), client.epoch, "an event of another channel");
                    prop_assert_eq!(
                        id.seq(),
                        last.seq() + 1 + skip,
                        "out of sequence (last {}, lagged {})",
                        last,
                        skip
                    );
                    let data = event_data(&frame);
                    prop_assert_eq!(
                        data["user"].as_str(),
                        Some(self.users[user].as_str()),
                        "ISOLATION: another user's event"
                    );
                    let expected = self.published.get(&id).copied();
                    prop_assert_eq!(expected, Some((user, data["n"].as_u64().unwrap())));
                    prop_assert!(
                        frame.bytes().ends_with(format!("id: {id}\n\n").as_bytes()),
                        "the id line"
                    );
                    client.last = Some(id);
                }
                other => prop_assert!(false, "unexpected frame {:?}", other),
            }
        }
        prop_assert!(
            client.gap.is_none(),
            "a lagged marker with no event after it"
        );
        if ended {
            if client.ended.is_none() {
                prop_assert!(client.kicked, "the stream ended for no reason");
                client.ended = Some(EndReason::Disconnected);
                self.tally.kicked_ends += 1;
            }
            prop_assert_eq!(sub.end_reason(), client.ended);
        } else {
            prop_assert_eq!(client.ended, None, "the stream goes on after its end");
            prop_assert!(!client.kicked, "a kicked subscription is still open");
            prop_assert!(
                client.expect_reset.is_none(),
                "the predicted reset did not come"
            );
            let last = client.last.unwrap();
            prop_assert_eq!(last.seq(), head, "a drained client is behind its channel");
        }
        Ok(())
    }

    fn check_counts(&self) -> Result<(), TestCaseError> {
        let stats = self.hub.stats();
        let subscriptions: usize = self.channels.iter().map(|c| c.subscriptions).sum();
        let users = self.channels.iter().filter(|c| c.subscriptions > 0).count();
        prop_assert_eq!(stats.connections, subscriptions);
        prop_assert_eq!(stats.users, users);
        for (user, channel) in self.users.iter().zip(&self.channels) {
            prop_assert_eq!(self.hub.connection_count(user), channel.subscriptions);
        }
        Ok(())
    }
}

/// The JSON data of an event frame: `data: {json}\nid: …\n\n`.
fn event_data(frame: &Frame) -> Value {
    let text = std::str::from_utf8(frame.bytes()).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    serde_json::from_str(line).unwrap()
}

fn run_case(case: Case) -> Result<Tally, TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Unconstrained: the whole case is one poll, and tokio's cooperative budget would otherwise
    // make the broadcast receiver return `Pending` after 128 reads.
    runtime.block_on(tokio::task::unconstrained(async move {
        let mut harness = Harness::new(case);
        harness.run()?;
        Ok(harness.tally)
    }))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    })]

    /// Several users and clients: nobody ever gets another user's event (and every other
    /// property holds along the way).
    #[test]
    fn isolation_across_users(case in case(2..=4, 60)) {
        run_case(case)?;
    }


    /// One or two users, many reconnects: what each client receives is the published sequence
    /// for its user, in order, once, or a marker exactly where events were lost.
    #[test]
    fn resume_and_lag_deliver_the_exact_sequence(case in case(1..=2, 80)) {
        run_case(case)?;
    }
}

/// A fixed sequence through every path, so the model itself is checked on known ground.
#[test]
fn a_known_sequence_passes_the_model() {
    use Op::*;
    let ops = vec![
        Connect {
            client: 0,
            resume: false,
            policy: 0,
        },
        Connect {
            client: 1,
            resume: false,
            policy: 1,
        },
        Publish { user: 0, count: 3 },
        Read { client: 0 },
        Publish { user: 0, count: 9 }, // the ring (2) and the window (4) overflow
        Read { client: 0 },            // Recover: lagged, then the window, then the ring
        Read { client: 1 },
        Disconnect { client: 0 },
        Publish { user: 0, count: 2 },
        Connect {
            client: 0,
            resume: true,
            policy: 2,
        }, // replays 2 from the window
        Publish { user: 0, count: 5 },
        Read { client: 0 }, // Disconnect: lagged and the end
        Connect {
            client: 0,
            resume: true,
            policy: 0,
        },
        Read { client: 0 },
        Publish { user: 1, count: 2 },
        ConnectWithGarbage {
            client: 1,
            garbage: "nope".into(),
        },
        Read { client: 1 },
        Kick { user: 0 },
        Publish { user: 0, count: 1 },
        ReadAll,
        Connect {
            client: 0,
            resume: true,
            policy: 1,
        },
        Read { client: 0 },
    ];
    // More reads than tokio's cooperative budget allows in one poll.
    let many = (0..300)
        .flat_map(|_| [Publish { user: 0, count: 1 }, Read { client: 0 }])
        .collect::<Vec<_>>();
    let ops = [ops, many].concat();
    for retain in [false, true] {
        let case = Case {
            users: 2,
            clients: 2,
            capacity: 2,
            replay_events: 4,
            retain,
            ops: ops.clone(),
        };
        run_case(case).unwrap();
    }
}

/// The generators reach every path the checker knows: a lag under each policy, each reset
/// reason a client can cause, replaying resumes, publishes to nobody and to retained channels,
/// and channels recreated for a user who had one.
#[test]
fn the_generated_cases_reach_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut total = Tally::default();
    for strategy in [case(2..=4, 60).boxed(), case(1..=2, 80).boxed()] {
        for _ in 0..150 {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            let tally = run_case(case).unwrap();
            for (t, x) in total.lagged.iter_mut().zip(tally.lagged) {
                *t += x;
            }
            for (t, x) in total.resets.iter_mut().zip(tally.resets) {
                *t += x;
            }
            total.replayed_resumes += tally.replayed_resumes;
            total.published_to_nobody += tally.published_to_nobody;
            total.published_to_retained += tally.published_to_retained;
            total.new_channels_for_a_known_user += tally.new_channels_for_a_known_user;
            total.disconnect_ends += tally.disconnect_ends;
            total.kicked_ends += tally.kicked_ends;
        }
    }
    println!("{total:?}");
    assert!(total.lagged.iter().all(|n| *n > 0), "{total:?}");
    assert!(total.resets[..3].iter().all(|n| *n > 0), "{total:?}");
    assert!(total.replayed_resumes > 0, "{total:?}");
    assert!(total.published_to_nobody > 0, "{total:?}");
    assert!(total.published_to_retained > 0, "{total:?}");
    assert!(total.new_channels_for_a_known_user > 0, "{total:?}");
    assert!(total.disconnect_ends > 0, "{total:?}");
    assert!(total.kicked_ends > 0, "{total:?}");
}
