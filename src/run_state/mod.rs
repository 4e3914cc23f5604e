//! The state of AG-UI runs so far, folded from their events, to open a connection mid-run.
//!
//! # Why
//!
//! An agent answers token by token: one `TEXT_MESSAGE_CONTENT` per token, up to tens of
//! thousands per answer. A replay window counted in events cannot rebuild such an answer for a
//! tab that reconnects late or opens mid-answer. And the official AG-UI client validates every
//! connection from zero: `RUN_STARTED` first, a message opened before its content. So a
//! connection made while a run is open must be a complete run stream on its own.
//!
//! # The model
//!
//! For each (user, thread) the hub keeps a [`ThreadRun`]: what the official client would hold
//! after every event of the thread so far, **folded from the events themselves** (their JSON,
//! the `data:` of their frames, whatever form they were published in):
//!
//! * the current (or last) run: its `RUN_STARTED` (with its input) and, once over, its
//!   `RUN_FINISHED` or `RUN_ERROR`;
//! * the thread's messages, built exactly as the client's `defaultApplyEvents` builds them
//!   (same objects, same order): the run input's messages, text assembled from
//!   `TEXT_MESSAGE_*`, reasoning from `REASONING_MESSAGE_*`, tool calls with their arguments
//!   from `TOOL_CALL_*`, results (`TOOL_CALL_RESULT`, a `tool` message inserted after its
//!   call), activities (`ACTIVITY_SNAPSHOT` / `ACTIVITY_DELTA`), `MESSAGES_SNAPSHOT` merged
//!   in as the client merges it; `*_CHUNK` events as the client's `transformChunks` turns them
//!   into start / content / end;
//! * the shared state: `STATE_SNAPSHOT`, then each `STATE_DELTA` applied as JSON Patch;
//! * what is open: subagents, steps, reasoning spans and messages, text messages, tool calls,
//!   and chunk streams (which the client closes at the next event of most types).
//!
//! [`ThreadRun::opening`] turns it into a **snapshot opening**: `RUN_STARTED`, the running
//! subagents' `SUBAGENT_STARTED`, `MESSAGES_SNAPSHOT` (partial text and arguments included), `STATE_SNAPSHOT`, then the open
//! entities re-opened with their ids; after it, the live tail continues where the fold
//! stopped. A finished run opens with its start, the snapshots and its end; a thread with no
//! run opens with nothing.
//!
//! [`RunStates`] plugs it into a broadcaster ([`ThreadConfig::state`](crate::ThreadConfig)):
//! the user channel then folds every event published into a thread as it passes, under the
//! lock a join takes, keeps at most [`max_threads_per_user`](crate::ThreadConfig) threads,
//! and opens each thread subscription with the thread's opening. [`EventRouter`](crate::EventRouter)
//! does this for its AG-UI channel.
//!
//! # Cost
//!
//! Streaming events (`TEXT_MESSAGE_CONTENT`, `TOOL_CALL_ARGS`, `REASONING_MESSAGE_CONTENT`,
//! the `*_CHUNK`s, the `*_END`s) are read by a one-pass scanner, without building a
//! `serde_json::Value`, and their `delta` is appended still escaped: the opening copies the
//! assembled text without escaping it again. An event with members the scanner does not know
//! (`metadata`, `subagentRunId`…) and every other type take a full parse; they are rare.
//!
//! # Edge cases
//!
//! * **A delta that does not apply.** A `STATE_DELTA` that is not a valid patch or fails
//!   makes the state *unknown* ([`FoldOutcome::state_unknown`]); the opening then omits
//!   `STATE_SNAPSHOT` rather than invent one, until the next `STATE_SNAPSHOT`. (The client
//!   itself warns and keeps its state: a client that saw everything and one that joined then
//!   differ, which is why it is reported.) Deltas while unknown are ignored
//!   ([`Ignored::StateUnknown`]). A patch is applied without the undo `json_patch::patch` does
//!   (which panics on some valid patches): a failed one drops the document it was applied to.
//!   A `test` operation compares numbers by value, as the client does (`1` equals `1.0`).
//! * **Untouched state.** Before any state event the opening sends no `STATE_SNAPSHOT`: the
//!   client keeps the state it has, as one that saw the run would.
//! * **The byte cap.** Past [`RunStates::max_thread_bytes`] the thread is trimmed to
//!   3/4 of it, oldest first: completed messages, then the completed tool calls of messages
//!   still being written (a later result for one is appended, as the client appends it), then
//!   the oldest text of messages still being written (cut on a character boundary), then
//!   their `metadata` and their tool calls' (which events may keep adding keys to), then the
//!   run's input (the opening's `RUN_STARTED` goes without it: the client takes only its
//!   messages, kept as the thread's), then the state (which becomes unknown).
//!   [`FoldOutcome::trimmed_bytes`] reports it; a connection then gets what remains. What is
//!   open is never trimmed (an opening must re-open it), so it may take at most a quarter of
//!   the cap: past it, a new step, message, tool call, reasoning, chunk stream or subagent is
//!   ignored ([`Ignored::TooManyOpen`]).
//! * **Run input.** A `RUN_STARTED` input's messages become the thread's messages and are
//!   kept only there: the opening's `RUN_STARTED` carries its input with `messages: []`, and
//!   the `MESSAGES_SNAPSHOT` carries them, so they are sent, counted by the byte cap and
//!   trimmed once. The client ends with the same messages either way: it appends the input's
//!   missing messages before merging the snapshot, which appends its missing ones in its own
//!   order, where a run input's come in the order the input had them (a second run's input
//!   holding only the new user message included).
//! * **Reconnects.** The client keeps its messages across connections and the snapshot merge
//!   keeps their order, so the opening rebuilds the exact order for a new tab and for a tab
//!   that reconnects, except when a `TOOL_CALL_RESULT` was inserted before a message that tab
//!   already had (it then lands after it).
//! * **Subagents.** The client refuses a `SUBAGENT_FINISHED` or `SUBAGENT_ERROR` for a subagent
//!   it did not see start, and a `parentSubagentRunId` it did not see start, within the
//!   connection: the opening re-opens every running subagent, parents before children (the
//!   order they started in). A child whose parent ended is re-opened without its parent; a
//!   subagent started later under a parent that ended before a tab joined is refused by that
//!   tab (only what runs is re-opened). At most 64 run at once ([`Ignored::TooManyOpen`]);
//!   they count in the thread's bytes and end with the run.
//! * **A run that began before what the thread holds.** The user's channel forgets the thread
//!   it published to least recently past [`max_threads_per_user`](crate::ThreadConfig), and a
//!   backplane may lose a thread whole; the run's next events then come to a thread with no
//!   `RUN_STARTED`, and no opening can rebuild the run (the official client refuses anything
//!   but a run's start first). The fold marks the run unknown ([`ThreadRun::run_unknown`],
//!   [`FoldOutcome::run_unknown`]; counted in
//!   [`Stats::thread_states_unknown`](crate::Stats::thread_states_unknown) and logged), and the
//!   opening says so in-band, with the one event the client accepts first besides
//!   `RUN_STARTED`: `{"type":"RUN_ERROR","message":…,"code":"run_unknown"}`
//!   ([`RUN_UNKNOWN_CODE`]). The client reports the run as failed, and after a `RUN_ERROR`
//!   refuses anything but a `RUN_STARTED` (it would stop reading the connection, the next run
//!   with it): so a connection that opens so is not sent the rest of that run
//!   ([`ThreadState::holds_back_until`](crate::ThreadState::holds_back_until)), but the thread's
//!   next `RUN_STARTED` and what follows, which the client takes as a new run; that run opens
//!   whole, as its input has the thread's messages.
//!   A `RUN_ERROR` alone is no such event: an agent that fails before its run starts sends
//!   just that, and the client takes it first, as a whole (failed) run; the thread then opens
//!   with nothing, as one with no run, and nothing is counted.
//! * **Garbage.** Input that is not JSON, not an object with a `type`, of an unknown type
//!   (including 0.x `THINKING_*`), missing a required member, or naming a message or tool call
//!   the thread does not hold is ignored and reported ([`FoldOutcome::ignored`]). Nothing
//!   panics.

mod fold;
mod message;
mod opening;
mod open;
mod patch;
mod scan;
mod slow;
mod states;
mod trim;
#[cfg(test)]
mod tests;

pub use fold::ThreadRun;
pub use opening::Opening;
pub use states::RunStates;

/// Why an event was not folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ignored {
    /// Not JSON.
    NotJson,
    /// JSON, but not an object with a string `type`.
    NotAnEvent,
    /// A `type` that is not an AG-UI 1.0 event type.
    UnknownType,
    /// A required member is missing or of the wrong kind, or a chunk contradicts its stream.
    Malformed,
    /// It names a message, tool call or run the thread does not hold.
    NoTarget,
    /// A `STATE_DELTA` while the state is unknown.
    StateUnknown,
    /// An `ACTIVITY_DELTA` that did not apply (the activity is unchanged, as in the client).
    PatchFailed,
    /// Something that opens (a step, a text message, a tool call, reasoning, a chunk stream, a
    /// subagent) while what the run has open already takes a quarter of the thread's byte cap,
    /// or a `SUBAGENT_STARTED` while 64 subagents run: what is open is never trimmed, so the
    /// thread could not stay within its cap. An opening will not re-open it, so a tab that
    /// joins while it is open refuses what follows for it.
    TooManyOpen,
}

/// What folding one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FoldOutcome {
    /// Why the event was not folded, if it was not.
    pub ignored: Option<Ignored>,
    /// The state became unknown with this event: a `STATE_DELTA` did not apply, or the byte
    /// cap dropped the state.
    pub state_unknown: bool,
    /// Bytes dropped to bring the thread back under its cap (0 if none).
    pub trimmed_bytes: usize,
    /// The thread's current run cannot be rebuilt from this event on
    /// ([`ThreadRun::run_unknown`]): it is an event of a run whose `RUN_STARTED` the thread
    /// does not hold.
    pub run_unknown: bool,
}

/// The `code` of the `RUN_ERROR` that opens a thread whose current run cannot be rebuilt
/// ([`ThreadRun::run_unknown`]).
pub const RUN_UNKNOWN_CODE: &str = "run_unknown";

impl FoldOutcome {
    /// Whether the event was folded.
    pub fn folded(&self) -> bool {
        self.ignored.is_none()
    }
}
