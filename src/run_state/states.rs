//! [`RunStates`]: the AG-UI run state as a broadcaster's per-thread state.

use crate::thread::{Folded, HoldBack, ThreadId, ThreadState, ThreadStates};

use super::ThreadRun;

/// Makes a broadcaster fold a [`ThreadRun`] per thread: set it as
/// [`ThreadConfig::state`](crate::ThreadConfig) (the [`EventRouter`](crate::EventRouter)'s
/// AG-UI channel has it by default).
///
/// ```
/// use std::sync::Arc;
/// use sse_hub::{Broadcaster, Config, run_state::RunStates};
///
/// let mut config = Config::named("agui");
/// config.threads.state = Some(Arc::new(RunStates::default()));
/// let hub: Broadcaster<serde_json::Value> = Broadcaster::new(config);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunStates {
    /// How many bytes one thread keeps ([`ThreadRun::bytes`]); past it the oldest state goes.
    /// Default 1 MiB.
    pub max_thread_bytes: usize,
}

impl Default for RunStates {
    fn default() -> Self {
        Self {
            max_thread_bytes: 1 << 20,
        }
    }
}

impl RunStates {
    /// Threads that keep at most `max_thread_bytes` each.
    pub fn new(max_thread_bytes: usize) -> Self {
        Self { max_thread_bytes }
    }
}

impl ThreadStates for RunStates {
    fn create(&self, _thread: &ThreadId) -> Box<dyn ThreadState> {
        Box::new(ThreadRun::new(self.max_thread_bytes))
    }
}

impl ThreadState for ThreadRun {
    fn fold(&mut self, data: &[u8]) -> Folded {
        let outcome = ThreadRun::fold(self, data);
        if outcome.state_unknown || outcome.run_unknown {
            Folded::Unknown
        } else if outcome.trimmed_bytes > 0 {
            Folded::Trimmed
        } else if outcome.folded() {
            Folded::Applied
        } else {
            Folded::Ignored
        }
    }

    fn write_opening(&self, out: &mut Vec<u8>) {
        let opening = self.opening();
        out.reserve(opening.as_bytes().len() + opening.len() * 8);
        for event in opening.events() {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(event);
            out.extend_from_slice(b"\n\n");
        }
    }

    fn bytes(&self) -> usize {
        ThreadRun::bytes(self)
    }

    /// 0 before the first run, 1 while a run is open, 2 once it ended.
    fn checkpoint(&self) -> u8 {
        match &self.run {
            None => 0,
            Some(run) if run.ended.is_none() => 1,
            Some(_) => 2,
        }
    }

    /// Until the next `RUN_STARTED` when the run cannot be rebuilt: the opening is its
    /// `RUN_ERROR`, after which the official client refuses the rest of the run (and would
    /// stop reading the connection, the next run with it).
    fn holds_back_until(&self) -> Option<HoldBack> {
        self.run_unknown.then_some(starts_a_run as HoldBack)
    }
}

/// Whether an event (its JSON) is a `RUN_STARTED`. Read only while a connection waits for one,
/// and parsed only when its bytes name the type.
fn starts_a_run(data: &[u8]) -> bool {
    memchr::memmem::find(data, b"RUN_STARTED").is_some()
        && serde_json::from_slice::<serde_json::Value>(data)
            .is_ok_and(|event| event["type"] == "RUN_STARTED")
}
