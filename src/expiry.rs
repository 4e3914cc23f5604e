//! [`ExpiryQueue`]: idle things in the order they expire, cheap to check from hot paths.
//!
//! A broadcaster keeps a user's channel for the retention after its last connection leaves.
//! The queue holds each idle channel once, weakly, keyed by when it is due; whoever pops an
//! entry decides, under the channel's own lock, whether it really expired (it may have become
//! active, or idle again later, meanwhile). Three drains share it: publishes and subscribes,
//! which look at one atomic ([`ExpiryQueue::is_due`]) and sweep only when something is due;
//! one sweeper task per broadcaster; and an explicit `sweep()`.
//!
//! Why not `tokio_util::time::DelayQueue`: it is driven by `&mut` polling from one task, while
//! this queue is pushed to from `Drop` (a subscription leaving) on any thread and drained
//! lazily from sync publish paths that may run outside a runtime. A heap behind a short mutex,
//! with its next deadline mirrored in an atomic, serves both.

use std::cmp::{Ordering as Order, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// Idle entries by expiry, soonest first. The caller keeps at most one entry per item.
pub(crate) struct ExpiryQueue<T> {
    retention: Duration,
    heap: Mutex<BinaryHeap<Reverse<Due<T>>>>,
    /// When the front of the heap is due, in milliseconds since `started`; `u64::MAX` when
    /// empty. Lets the hot paths skip the sweep with one relaxed load.
    next_due_ms: AtomicU64,
    started: Instant,
}

impl<T> ExpiryQueue<T> {
    pub(crate) fn new(retention: Duration) -> Self {
        Self {
            retention,
            heap: Mutex::new(BinaryHeap::new()),
            next_due_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    /// When an item idle since `idle_since` expires; a retention too long to add (one that
    /// means "keep forever") gives a date about a century away.
    pub(crate) fn expiry(&self, idle_since: Instant) -> Instant {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        idle_since
            .checked_add(self.retention)
            .or_else(|| idle_since.checked_add(CENTURY))
            .unwrap_or(idle_since)
    }

    /// Queues `item`, idle since `idle_since`, to be looked at once its retention has passed.
    pub(crate) fn push(&self, item: &Arc<T>, idle_since: Instant) {
        let due = self.expiry(idle_since);
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        heap.push(Reverse(Due(due, Arc::downgrade(item))));
        self.store_next_due(&heap);
    }

    /// Whether the front entry is due at `now`: one relaxed load.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.next_due_ms.load(Ordering::Relaxed) <= self.millis(now)
    }

    /// Pops the front entry if it is due at `now`.
    pub(crate) fn pop_due(&self, now: Instant) -> Option<Weak<T>> {
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        let popped = match heap.peek() {
            Some(Reverse(Due(due, _))) if *due <= now => heap.pop().map(|Reverse(Due(_, t))| t),
            _ => None,
        };
        self.store_next_due(&heap);
        popped
    }

    fn store_next_due(&self, heap: &BinaryHeap<Reverse<Due<T>>>) {
        let next = heap
            .peek()
            .map_or(u64::MAX, |Reverse(Due(due, _))| self.millis(*due));
        self.next_due_ms.store(next, Ordering::Relaxed);
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }
}

/// An entry, ordered by its due time alone.
struct Due<T>(Instant, Weak<T>);

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T> Eq for Due<T> {}

impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Due<T> {
    fn cmp(&self, other: &Self) -> Order {
        self.0.cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pops_in_due_order_and_only_when_due() {
        let queue = ExpiryQueue::new(Duration::from_secs(10));
        let (a, b) = (Arc::new('a'), Arc::new('b'));
        let now = Instant::now();
        queue.push(&b, now + Duration::from_secs(5));
        queue.push(&a, now);
        assert!(!queue.is_due(now + Duration::from_secs(9)));
        assert!(queue.pop_due(now + Duration::from_secs(9)).is_none());
        let later = now + Duration::from_secs(16);
        assert!(queue.is_due(later));
        let first = queue.pop_due(later).and_then(|w| w.upgrade());
        assert_eq!(first.as_deref(), Some(&'a'));
        let second = queue.pop_due(later).and_then(|w| w.upgrade());
        assert_eq!(second.as_deref(), Some(&'b'));
        assert!(!queue.is_due(later));
    }

    #[test]
    fn a_retention_too_long_to_add_does_not_panic() {
        let queue = ExpiryQueue::<()>::new(Duration::MAX);
        let now = Instant::now();
        assert!(queue.expiry(now) > now);
    }
}
