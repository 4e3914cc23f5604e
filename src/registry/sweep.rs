//! Removing channels whose retention has passed: lazily from the hot paths, by one sweeper task
//! per broadcaster, and on demand with [`Broadcaster::sweep`].

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{Broadcaster, Inner};

impl<E> Broadcaster<E> {
    /// Removes the retained channels whose retention has passed, and returns how many.
    ///
    /// This runs by itself: lazily on subscribes and publishes once something is due, and in one
    /// sweeper task per broadcaster while a tokio runtime runs. Call it to make removal happen now,
    /// in a test with paused time for instance.
    pub fn sweep(&self) -> usize {
        let shared = &self.inner.shared;
        let now = Instant::now();
        let mut removed = 0;
        while let Some(weak) = self.inner.expiry.pop_due(now) {
            let Some(channel) = weak.upgrade() else {
                continue;
            };
            let gone = self
                .inner
                .channels
                .remove_if(&channel.user, |_, current| {
                    Arc::ptr_eq(current, &channel) && channel.expire(now)
                })
                .is_some();
            // The channel takes itself off the gauges when it is dropped (`UserChannel`'s
            // `Drop`), which `channel` delays to the end of this iteration at most.
            if gone {
                removed += 1;
                if let Some(backplane) = &self.inner.backplane {
                    backplane.channel_removed(&shared.config.name, &channel.user);
                }
            }
        }
        if removed > 0 {
            tracing::debug!(channel = %self.name(), removed, "expired channels removed");
        }
        removed
    }

    pub(super) fn maybe_sweep(&self) {
        if self.inner.expiry.is_due(Instant::now()) {
            self.sweep();
        }
    }

    /// Starts the broadcaster's one sweeper task, if a runtime is running and none is. The task
    /// holds only a weak reference, so it ends with the broadcaster, and it clears the flag when
    /// its runtime goes away, so the next subscribe on another runtime starts a new one.
    pub(super) fn ensure_sweeper(&self) {
        if self.inner.sweeper_running.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.sweeper_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let period = (self.inner.shared.config.retention / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        struct Running(Weak<Inner>);
        impl Drop for Running {
            fn drop(&mut self) {
                if let Some(inner) = self.0.upgrade() {
                    inner.sweeper_running.store(false, Ordering::Release);
                }
            }
        }
        // Made before the spawn and moved into the task, so that the flag is cleared even if the
        // runtime drops the task before ever polling it.
        let running = Running(weak.clone());
        runtime.spawn(async move {
            let _running = running;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                Broadcaster::<()> {
                    inner,
                    _event: PhantomData,
                }
                .sweep();
            }
        });
    }
}
