//! Threads with a backplane: reading a thread back from the shared history into a node's
//! state (a *sync*), so that its subscriptions open from it and it writes the thread's
//! snapshots. See [`UserChannel::thread_install`] for what a sync installs.

use std::sync::Arc;

use crate::backplane::Backplane;
use crate::channel::{SyncBegin, SyncStart, UserChannel};
use crate::error::BackplaneError;
use crate::thread::ThreadId;

/// How many syncs a subscription waits for before it gives up (each bounded by the
/// backplane's timeouts): one may fail because the window lost frames meanwhile, or because
/// the feed was interrupted.
const SYNC_ATTEMPTS: usize = 3;

/// Reads `thread` back from the backplane and installs it in `channel`; stores the snapshot the
/// install returns, if the stored one does not cover the state.
async fn sync_thread(
    backplane: Arc<dyn Backplane>,
    channel: Arc<UserChannel>,
    thread: ThreadId,
    start: SyncStart,
) {
    let name = channel.shared.config.name.clone();
    let read = backplane
        .catch_up_thread(&name, &channel.user, &thread, start.kept)
        .await;
    if let Err(error) = &read {
        tracing::debug!(channel = %name, user = %channel.user, %thread, %error, "thread sync: the backplane could not be read");
    }
    if let Some(snapshot) = channel.thread_install(&thread, &start, read.ok()) {
        backplane.store_thread_snapshot(&name, &channel.user, &thread, snapshot);
    }
}

/// Runs a sync in the background (it must not depend on the subscription that wants it, which
/// may go away). Without a tokio runtime it fails at once.
pub(crate) fn spawn_sync(
    backplane: Arc<dyn Backplane>,
    channel: Arc<UserChannel>,
    thread: ThreadId,
    start: SyncStart,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(sync_thread(backplane, channel, thread, start));
        }
        Err(_) => {
            channel.thread_install(&thread, &start, None);
        }
    }
}

/// Makes `thread`'s state on `channel` exact: at once if it is, else after a sync (this one's,
/// or one already running).
pub(crate) async fn ensure_exact(
    backplane: Arc<dyn Backplane>,
    channel: Arc<UserChannel>,
    thread: ThreadId,
) -> Result<(), BackplaneError> {
    for _ in 0..SYNC_ATTEMPTS {
        let done = match channel.thread_sync_begin(&thread) {
            SyncBegin::Exact => return Ok(()),
            SyncBegin::Closed => {
                return Err(BackplaneError::Failed(
                    "the user's channel was removed".into(),
                ));
            }
            SyncBegin::Wait(done) => done,
            SyncBegin::Start(start) => {
                let done = start.done.clone();
                spawn_sync(backplane.clone(), channel.clone(), thread.clone(), start);
                done
            }
        };
        let notified = done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if channel.thread_syncing(&thread, &done) {
            notified.await;
        }
    }
    if channel.thread_exact(&thread) {
        return Ok(());
    }
    Err(BackplaneError::Failed(
        "the thread could not be read back from the backplane".into(),
    ))
}
