//! Memory figures, counted by a counting global allocator (heap bytes requested and not yet
//! freed; allocator overhead and RSS are not included), for sse-hub and for the design it
//! replaces, without HTTP:
//!
//! * an idle user channel with one connection, averaged over 100 000 users, and the total;
//! * each extra connection on the same user;
//! * growth while one connection is stalled (never read) and 100 000 events are published.
//!
//! ```text
//! cargo run --release --example memory
//! ```
//!
//! Prints one `memory ...` line per figure, then a table.

#[path = "../benches/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sse_hub::models::AgUiEvent;
use sse_hub::{Broadcaster, Config, UserId};

use common::replaced;

/// Counts the bytes every allocation asked for, minus those freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const USERS: usize = 100_000;
/// Users that get extra connections, and how many each (16 per user is the default cap).
const EXTRA_USERS: usize = 1_000;
const EXTRA_PER_USER: usize = 15;
const STALL_EVENTS: u64 = 100_000;
/// Events after which the stalled figures are taken as the starting point: past the ring
/// (16) and the replay window (256 events), so what follows can only be growth.
const STALL_WARMUP: u64 = 1_000;

struct Figures {
    per_user: f64,
    total_users: isize,
    per_extra: f64,
    stalled_before: isize,
    stalled_after_warmup: isize,
    stalled_after: isize,
}

impl Figures {
    fn growth_per_event(&self) -> f64 {
        (self.stalled_after - self.stalled_after_warmup) as f64
            / (STALL_EVENTS - STALL_WARMUP) as f64
    }
}

fn hub_figures(frame_len: &mut usize) -> Figures {
    let names: Vec<UserId> = (0..USERS)
        .map(|i| UserId::from(format!("user-{i:06}")))
        .collect();

    // 100 000 users, one connection each.
    let hub: Broadcaster<AgUiEvent> = Broadcaster::new(Config::named("memory"));
    let before = live();
    let mut connections = Vec::with_capacity(USERS);
    for user in &names {
        connections.push(hub.subscribe(user).expect("subscribe"));
    }
    let total_users = live() - before;
    drop(connections);
    drop(hub);

    // Extra connections on the same users.
    let hub: Broadcaster<AgUiEvent> = Broadcaster::new(Config::named("memory"));
    let first: Vec<_> = names[..EXTRA_USERS]
        .iter()
        .map(|u| hub.subscribe(u).expect("subscribe"))
        .collect();
    let before = live();
    let mut extra = Vec::with_capacity(EXTRA_USERS * EXTRA_PER_USER);
    for user in &names[..EXTRA_USERS] {
        for _ in 0..EXTRA_PER_USER {
            extra.push(hub.subscribe(user).expect("subscribe"));
        }
    }
    let per_extra = (live() - before) as f64 / (EXTRA_USERS * EXTRA_PER_USER) as f64;
    drop(extra);
    drop(first);
    drop(hub);

    // One stalled connection, 100 000 events.
    let hub: Broadcaster<AgUiEvent> = Broadcaster::new(Config::named("memory"));
    let user = UserId::from("stalled");
    let event = common::text_event(1);
    let stalled_before = live();
    let stalled = hub.subscribe(&user).expect("subscribe");
    let mut stalled_after_warmup = 0;
    for n in 1..=STALL_EVENTS {
        hub.broadcast(&user, &event).expect("publish");
        if n == STALL_WARMUP {
            stalled_after_warmup = live() - stalled_before;
        }
    }
    let stalled_after = live() - stalled_before;
    *frame_len = hub.buffered_by_user()[0].1 / hub.buffered_by_user()[0].2.max(1);
    drop(stalled);

    Figures {
        per_user: total_users as f64 / USERS as f64,
        total_users,
        per_extra,
        stalled_before: 0,
        stalled_after_warmup,
        stalled_after,
    }
}

fn replaced_figures() -> Figures {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let names: Vec<String> = (0..USERS).map(|i| format!("user-{i:06}")).collect();

    let broadcaster = replaced::GenericBroadcaster::default();
    let before = live();
    let mut connections = Vec::with_capacity(USERS);
    for user in &names {
        connections.push(rt.block_on(broadcaster.connect(user)));
    }
    let total_users = live() - before;
    drop(connections);
    drop(broadcaster);

    let broadcaster = replaced::GenericBroadcaster::default();
    let first: Vec<_> = names[..EXTRA_USERS]
        .iter()
        .map(|u| rt.block_on(broadcaster.connect(u)))
        .collect();
    let before = live();
    let mut extra = Vec::with_capacity(EXTRA_USERS * EXTRA_PER_USER);
    for user in &names[..EXTRA_USERS] {
        for _ in 0..EXTRA_PER_USER {
            extra.push(rt.block_on(broadcaster.connect(user)));
        }
    }
    let per_extra = (live() - before) as f64 / (EXTRA_USERS * EXTRA_PER_USER) as f64;
    drop(extra);
    drop(first);
    drop(broadcaster);

    let broadcaster = replaced::GenericBroadcaster::default();
    let event = common::text_event(1);
    let stalled_before = live();
    let stalled = rt.block_on(broadcaster.connect("stalled"));
    let mut stalled_after_warmup = 0;
    for n in 1..=STALL_EVENTS {
        rt.block_on(broadcaster.broadcast("stalled", &event));
        if n == STALL_WARMUP {
            stalled_after_warmup = live() - stalled_before;
        }
    }
    let stalled_after = live() - stalled_before;
    drop(stalled);

    Figures {
        per_user: total_users as f64 / USERS as f64,
        total_users,
        per_extra,
        stalled_before: 0,
        stalled_after_warmup,
        stalled_after,
    }
}

fn main() {
    let mut frame_len = 0;
    let hub = hub_figures(&mut frame_len);
    let old = replaced_figures();
    let config = Config::default();

    // The crate docs' bound for one channel with one connection, with F the frame actually
    // published: 64·C + 500 + W + C·F + 48·N, plus 250 + 48·N for the connection.
    let c = config.capacity.next_power_of_two();
    let n = config.replay_events;
    let w = (n * frame_len).min(config.replay_bytes);
    let bound = 80 * c + 500 + w + c * frame_len + 64 * n + 250 + 64 * n;

    for (name, f) in [("sse-hub", &hub), ("replaced", &old)] {
        println!(
            "memory {name} per_user_one_connection_bytes={:.0} users={USERS} total_users_bytes={} per_extra_connection_bytes={:.0} stalled_after_{STALL_WARMUP}_events_bytes={} stalled_after_{STALL_EVENTS}_events_bytes={} stalled_growth_per_event_bytes={:.2}",
            f.per_user,
            f.total_users,
            f.per_extra,
            f.stalled_after_warmup - f.stalled_before,
            f.stalled_after - f.stalled_before,
            f.growth_per_event(),
        );
    }
    println!(
        "memory sse-hub frame_bytes={frame_len} documented_bound_one_user_one_connection_bytes={bound}"
    );
    println!();
    println!("| heap bytes (counting allocator) | sse-hub | replaced | ratio |");
    println!("|---|---:|---:|---:|");
    let row = |what: &str, a: f64, b: f64| {
        println!("| {what} | {a:.0} | {b:.0} | {:.1}x |", b / a);
    };
    row(
        "idle user channel with one connection (mean of 100 000)",
        hub.per_user,
        old.per_user,
    );
    row(
        "each extra connection on the same user",
        hub.per_extra,
        old.per_extra,
    );
    row(
        "100 000 users, one connection each (total)",
        hub.total_users as f64,
        old.total_users as f64,
    );
    println!(
        "| one stalled connection, after {STALL_WARMUP} events | {} | {} | |",
        hub.stalled_after_warmup, old.stalled_after_warmup
    );
    println!(
        "| one stalled connection, after {STALL_EVENTS} events | {} | {} | |",
        hub.stalled_after, old.stalled_after
    );
    println!(
        "| growth per event from event {STALL_WARMUP} to {STALL_EVENTS} | {:.2} | {:.2} | |",
        hub.growth_per_event(),
        old.growth_per_event()
    );
}
