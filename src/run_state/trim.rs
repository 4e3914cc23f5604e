//! The byte cap: what a thread gives up, oldest first, to stay within
//! [`RunStates::max_thread_bytes`](super::RunStates::max_thread_bytes), always leaving a state
//! that is valid to open with.

use serde_json::Value;

use super::fold::State;
use super::message::value_bytes;
use super::scan::boundary_at_or_after;
use super::{FoldOutcome, ThreadRun};

impl ThreadRun {
    /// Brings the thread back under its cap, to 3/4 of it so that trimming is rare: completed
    /// messages go first, oldest first; then the completed tool calls of the messages still
    /// being written; then their oldest text; then their metadata; then the run's input; then
    /// the state. What remains is always valid to open with.
    pub(super) fn trim(&mut self, outcome: &mut FoldOutcome) {
        let before = self.bytes();
        let target = self.max_bytes / 4 * 3;
        let mut excess = before.saturating_sub(target);
        if excess == 0 {
            return;
        }
        // 1. Completed messages, oldest first.
        let open = &self.open;
        let drop: Vec<bool> = self
            .messages
            .iter()
            .map(|m| {
                if excess == 0 || open.holds(m) {
                    return false;
                }
                excess = excess.saturating_sub(m.bytes());
                true
            })
            .collect();
        let mut flags = drop.into_iter();
        self.messages.retain(|_| !flags.next().unwrap_or(false));
        self.recount_messages();
        // 2. The completed tool calls of what is still being written, oldest first: a message
        //    stays open while calls keep being attached to it, and an opening need not
        //    re-open them (a later result for one is appended, as the client does).
        let mut excess = self.bytes().saturating_sub(target);
        let open = &self.open;
        for m in &mut self.messages {
            if excess == 0 {
                break;
            }
            if let Some(calls) = &mut m.tool_calls {
                calls.retain(|c| {
                    if excess == 0 || open.writes_tool_call(&c.id) {
                        return true;
                    }
                    excess = excess.saturating_sub(c.bytes());
                    false
                });
            }
        }
        self.recount_messages();
        // 3. The oldest text of what is still being written.
        let mut excess = self.bytes().saturating_sub(target);
        for m in &mut self.messages {
            for text in m.growing_text_mut() {
                if excess == 0 {
                    break;
                }
                let cut = boundary_at_or_after(text, excess.min(text.len()));
                text.drain(..cut);
                excess = excess.saturating_sub(cut);
            }
        }
        self.recount_messages();
        // 4. The metadata of what is still being written: every event may merge new keys
        //    into it, and the text alone cannot make room for them.
        let mut excess = self.bytes().saturating_sub(target);
        if excess > 0 {
            for m in &mut self.messages {
                if excess == 0 {
                    break;
                }
                let before = m.bytes();
                m.extra.remove("metadata");
                for call in m.tool_calls.iter_mut().flatten() {
                    call.extra.remove("metadata");
                }
                excess = excess.saturating_sub(before - m.bytes());
            }
            self.recount_messages();
        }
        // 5. The run's input (its messages are kept as the thread's): the client takes
        //    nothing else from it, and it may hold a copy of the state, as the client sends it.
        if self.bytes() > target
            && let Some(run) = &mut self.run
            && let Value::Object(started) = &mut run.started
            && started.remove("input").is_some()
        {
            run.bytes = value_bytes(&run.started) + run.ended.as_ref().map_or(0, value_bytes);
        }
        // 6. The state.
        if self.bytes() > target && matches!(self.state, State::Known(_)) {
            self.state = State::Unknown;
            self.state_bytes = 0;
            self.state_drift = 0;
            outcome.state_unknown = true;
        }
        outcome.trimmed_bytes = before.saturating_sub(self.bytes());
    }
}
