//! [`ThreadRuns`]: the folded threads of one user, bounded in count and in bytes.

use std::collections::HashMap;

use super::{FoldOutcome, Opening, RunStateConfig, ThreadRun};

/// What [`ThreadRuns::fold`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreOutcome {
    /// What folding the event into its thread did.
    pub fold: FoldOutcome,
    /// The thread evicted to make room for this one (the least recently updated), if any.
    pub evicted: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    run: ThreadRun,
    /// When the thread was last updated, on the store's own clock.
    touched: u64,
}

/// The folded threads of one user on the AG-UI channel, keyed by thread name.
///
/// At most [`RunStateConfig::max_threads`] threads: folding into a new thread past that evicts
/// the least recently updated one. Each thread holds at most
/// [`RunStateConfig::max_thread_bytes`] (see [`ThreadRun::fold`] for what goes first). So a
/// user's store holds at most `max_threads · max_thread_bytes` bytes of folded state.
#[derive(Debug, Clone, Default)]
pub struct ThreadRuns {
    config: RunStateConfig,
    threads: HashMap<String, Entry>,
    clock: u64,
}

impl ThreadRuns {
    /// An empty store with these limits.
    pub fn new(config: RunStateConfig) -> Self {
        Self {
            config,
            threads: HashMap::new(),
            clock: 0,
        }
    }

    /// The limits.
    pub fn config(&self) -> &RunStateConfig {
        &self.config
    }

    /// Folds one AG-UI event (its JSON) into `thread`, creating the thread if needed.
    ///
    /// An event that is not an AG-UI event does not create a thread.
    pub fn fold(&mut self, thread: &str, event: &[u8]) -> StoreOutcome {
        self.clock += 1;
        let now = self.clock;
        if let Some(entry) = self.threads.get_mut(thread) {
            entry.touched = now;
            return StoreOutcome {
                fold: entry.run.fold(event),
                evicted: None,
            };
        }
        let mut run = ThreadRun::new(self.config.max_thread_bytes);
        let fold = run.fold(event);
        if run.is_empty() && run.message_count() == 0 && !fold.folded() {
            return StoreOutcome {
                fold,
                evicted: None,
            };
        }
        let mut evicted = None;
        if self.threads.len() >= self.config.max_threads.max(1) {
            let oldest = self
                .threads
                .iter()
                .min_by_key(|(_, e)| e.touched)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.threads.remove(&oldest);
                evicted = Some(oldest);
            }
        }
        self.threads
            .insert(thread.to_owned(), Entry { run, touched: now });
        StoreOutcome { fold, evicted }
    }

    /// The folded state of `thread`.
    pub fn get(&self, thread: &str) -> Option<&ThreadRun> {
        self.threads.get(thread).map(|e| &e.run)
    }

    /// The snapshot opening of `thread`: empty for a thread the store does not hold.
    pub fn opening(&self, thread: &str) -> Opening {
        self.get(thread).map(ThreadRun::opening).unwrap_or_default()
    }

    /// Forgets `thread`, returning its state.
    pub fn remove(&mut self, thread: &str) -> Option<ThreadRun> {
        self.threads.remove(thread).map(|e| e.run)
    }

    /// The number of threads held.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether no thread is held.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// What all threads hold, in bytes (the sum of [`ThreadRun::bytes`]).
    pub fn bytes(&self) -> usize {
        self.threads.values().map(|e| e.run.bytes()).sum()
    }

    /// The names of the threads held, in no particular order.
    pub fn threads(&self) -> impl Iterator<Item = &str> + '_ {
        self.threads.keys().map(String::as_str)
    }
}
