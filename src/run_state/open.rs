//! What is open in a thread's current run: the steps, messages, tool calls, reasoning and
//! subagents an opening must re-open for a tab that joins mid-run, and the *lanes* of the
//! `*_CHUNK` events, which the official client keeps one per producer.

use super::Ignored;
use super::fold::ThreadRun;
use super::message::Message;

/// Something open in the run, to re-open in an opening: the event that opened it, compact,
/// without its `metadata` (already merged into the message; merging it again could undo a
/// later merge).
#[derive(Debug, Clone)]
pub(crate) struct Opener {
    pub(crate) key: String,
    pub(crate) owner: Option<String>,
    pub(crate) event: Vec<u8>,
}

/// What kind of entity a chunk lane streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneKind {
    Text,
    Tool,
    Reasoning,
}

/// A message or tool call being streamed as `*_CHUNK` events: the client keeps one open per
/// producer (the parent agent or a subagent) and closes it at the next event of most types.
#[derive(Debug, Clone)]
pub(crate) struct Lane {
    pub(crate) owner: Option<String>,
    pub(crate) kind: LaneKind,
    pub(crate) id: String,
    pub(crate) role: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) parent: Option<String>,
}

/// The most subagents a run keeps open: each costs an opener in every opening, and a run
/// that leaves them open without bound would grow the thread past its cap unseen by the trim
/// (which never drops what is open). Past it, see [`Ignored::TooManyOpen`].
pub(crate) const MAX_OPEN_SUBAGENTS: usize = 64;

/// What is open may take at most this fraction (1/N) of a thread's byte cap. The trim never
/// drops what is open, nor the message each open entity writes, so without a share a run that
/// keeps opening without closing (steps never finished, messages never ended, chunk streams of
/// ever new producers) would grow its thread past the cap. A quarter leaves the rest of the cap
/// to those messages and to what the trim can drop.
const OPEN_SHARE: usize = 4;

/// What is open in the current run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Open {
    /// The running subagents, in the order they started: a child starts after its parent, so
    /// this order re-opens parents first. `owner` is the parent (`parentSubagentRunId`) while
    /// it runs.
    pub(crate) subagents: Vec<Opener>,
    pub(crate) steps: Vec<Opener>,
    pub(crate) reasoning_spans: Vec<Opener>,
    pub(crate) reasoning_messages: Vec<Opener>,
    pub(crate) texts: Vec<Opener>,
    pub(crate) tool_calls: Vec<Opener>,
    pub(crate) lanes: Vec<Lane>,
}

impl Opener {
    pub(super) fn bytes(&self) -> usize {
        48 + self.key.len() + self.event.len()
    }
}

impl Lane {
    pub(super) fn bytes(&self) -> usize {
        let len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        128 + self.id.len()
            + len(&self.owner)
            + len(&self.role)
            + len(&self.name)
            + len(&self.parent)
    }
}

impl Open {
    pub(super) fn bytes(&self) -> usize {
        let openers = [
            &self.subagents,
            &self.steps,
            &self.reasoning_spans,
            &self.reasoning_messages,
            &self.texts,
            &self.tool_calls,
        ];
        let o: usize = openers
            .iter()
            .flat_map(|v| v.iter())
            .map(Opener::bytes)
            .sum();
        o + self.lanes.iter().map(Lane::bytes).sum::<usize>()
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Whether the message `m` is still being written (it must survive trimming).
    pub(super) fn holds(&self, m: &Message) -> bool {
        let id = |o: &Opener| o.key == m.id;
        self.texts.iter().any(id)
            || self.reasoning_messages.iter().any(id)
            || self.lanes.iter().any(|l| l.id == m.id)
            || m.tool_calls
                .iter()
                .flatten()
                .any(|c| self.writes_tool_call(&c.id))
    }

    /// Whether the tool call `id` is still being written (an opening re-opens it).
    pub(super) fn writes_tool_call(&self, id: &str) -> bool {
        self.tool_calls.iter().any(|o| o.key == id)
            || self
                .lanes
                .iter()
                .any(|l| l.kind == LaneKind::Tool && l.id == id)
    }
}

impl ThreadRun {
    /// Whether something costing `bytes` may open now (see [`OPEN_SHARE`]); else it is
    /// ignored as [`Ignored::TooManyOpen`], before anything is folded.
    pub(super) fn may_open(&self, bytes: usize) -> Result<(), Ignored> {
        if self.open.bytes() + bytes > self.max_bytes / OPEN_SHARE {
            return Err(Ignored::TooManyOpen);
        }
        Ok(())
    }

    pub(super) fn lane(&self, owner: &Option<String>) -> Option<&Lane> {
        self.open.lanes.iter().find(|l| &l.owner == owner)
    }

    /// Which lane a chunk continues or opens (the client's `resolveLane`).
    pub(super) fn resolve_lane(
        &self,
        kind: LaneKind,
        id: Option<&str>,
        tag: &Option<String>,
    ) -> Result<Option<String>, Ignored> {
        if let Some(id) = id {
            if let Some(holder) = self
                .open
                .lanes
                .iter()
                .find(|l| l.kind == kind && l.id == id)
            {
                if tag.is_some() && tag != &holder.owner {
                    return Err(Ignored::Malformed);
                }
                return Ok(holder.owner.clone());
            }
            return Ok(tag.clone());
        }
        if tag.is_some() {
            return Ok(tag.clone());
        }
        if self.lane(&None).is_some_and(|l| l.kind == kind) {
            return Ok(None);
        }
        let mut candidates = self.open.lanes.iter().filter(|l| l.kind == kind);
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Ok(only.owner.clone()),
            (Some(_), Some(_)) => Err(Ignored::Malformed),
            _ => Ok(None),
        }
    }

    pub(super) fn close_lane(&mut self, owner: &Option<String>) {
        if !self.open.lanes.is_empty() {
            self.open.lanes.retain(|l| &l.owner != owner);
        }
    }
}
