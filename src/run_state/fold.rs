//! [`ThreadRun`]: one thread's state, folded from its AG-UI events as the official client
//! folds them (`defaultApplyEvents` after `transformChunks`).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::message::{Content, Message, ToolCall, merge_metadata};
use super::open::{Lane, LaneKind, Open};
use super::scan::{Hot, HotKind, Scanner, escape};
use super::{FoldOutcome, Ignored, RunStates};

/// The run a thread is in, or was last in.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// The `RUN_STARTED` event, verbatim.
    pub(crate) started: Value,
    /// The `RUN_FINISHED` or `RUN_ERROR` that ended it.
    pub(crate) ended: Option<Value>,
    pub(super) bytes: usize,
}

/// The thread's shared state.
#[derive(Debug, Clone, Default)]
pub(crate) enum State {
    /// No state event yet: the client keeps whatever state it has.
    #[default]
    Untouched,
    /// The state, as the client has it.
    Known(Value),
    /// A `STATE_DELTA` did not apply (or the state was dropped for the byte cap): unknown
    /// until the next `STATE_SNAPSHOT`.
    Unknown,
}

/// The folded state of one thread: its current (or last) run, its messages, its shared state
/// and what is open, as the official AG-UI client would have them after seeing every event so
/// far. See the [module documentation](super) for the model.
#[derive(Debug, Clone)]
pub struct ThreadRun {
    pub(crate) run: Option<Run>,
    pub(crate) messages: Vec<Message>,
    pub(crate) state: State,
    pub(crate) open: Open,
    pub(super) messages_bytes: usize,
    pub(super) state_bytes: usize,
    /// Bytes of deltas folded since `state_bytes` was last measured exactly.
    pub(super) state_drift: usize,
    pub(super) max_bytes: usize,
    /// An event of a run came with no run started: the run began before what the thread holds
    /// (the channel forgot the thread, or the backplane lost it), so it cannot be rebuilt. The
    /// opening says so with a `RUN_ERROR` until the next `RUN_STARTED`.
    pub(crate) run_unknown: bool,
    /// Reads the streaming events, remembering the start of the last one.
    pub(super) scanner: Scanner,
}

impl Default for ThreadRun {
    fn default() -> Self {
        Self::new(RunStates::default().max_thread_bytes)
    }
}

pub(super) type Folded = Result<(), Ignored>;

/// Whether an event the thread holds no run for, folded to `result`, is part of a run whose
/// `RUN_STARTED` the thread does not hold. Garbage and a malformed event say nothing of a run;
/// nor does a `RUN_ERROR` alone: an agent that fails before its run starts sends just that,
/// and the client takes it as a stream's first event, a whole (failed) run. Its opening stays
/// empty, as for a thread with no run, rather than a `run_unknown` in place of the agent's own
/// error. The `run_unknown` opening itself, folded back (a backplane's snapshot), still marks
/// the run unknown. Read only while the thread holds no run, which is rare.
fn of_a_run(result: &Folded, event: &[u8]) -> bool {
    match result {
        Err(Ignored::NotJson | Ignored::NotAnEvent | Ignored::UnknownType | Ignored::Malformed) => {
            false
        }
        // `RUN_ERROR` with no run is `NoTarget`.
        Err(Ignored::NoTarget) => !serde_json::from_slice::<Value>(event)
            .is_ok_and(|e| e["type"] == "RUN_ERROR" && e["code"] != super::RUN_UNKNOWN_CODE),
        _ => true,
    }
}

pub(super) fn str_of<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    obj.get(key).and_then(Value::as_str)
}

pub(super) fn metadata_of(obj: &Map<String, Value>) -> Option<Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object).cloned()
}

/// The compact JSON of an opener event, without `metadata`.
pub(super) fn opener_bytes(obj: &Map<String, Value>) -> Vec<u8> {
    let mut o = obj.clone();
    o.remove("metadata");
    serde_json::to_vec(&Value::Object(o)).unwrap_or_default()
}

pub(super) fn owned(c: Option<Cow<'_, str>>) -> Option<String> {
    c.map(Cow::into_owned)
}

impl ThreadRun {
    /// An empty thread that keeps at most `max_bytes` (see [`ThreadRun::bytes`]).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            run: None,
            messages: Vec::new(),
            state: State::Untouched,
            open: Open::default(),
            messages_bytes: 0,
            state_bytes: 0,
            state_drift: 0,
            max_bytes,
            run_unknown: false,
            scanner: Scanner::default(),
        }
    }

    /// What the thread holds, in bytes: about the JSON size of its messages, state, run events
    /// and open entities. This is what the byte cap bounds; an opening is about this size.
    pub fn bytes(&self) -> usize {
        self.run.as_ref().map_or(0, |r| r.bytes)
            + self.messages_bytes
            + self.state_bytes
            + self.state_drift
            + self.open.bytes()
            + self.scanner.bytes()
    }

    /// Whether a run has started and not yet finished or errored.
    pub fn run_open(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.ended.is_none())
    }

    /// Whether the thread holds nothing to show: no run was seen (nor an event of a run it
    /// cannot rebuild, see [`ThreadRun::run_unknown`]).
    pub fn is_empty(&self) -> bool {
        self.run.is_none() && !self.run_unknown
    }

    /// Whether the thread's current run cannot be rebuilt: events of a run came, but not its
    /// `RUN_STARTED` (the thread was forgotten mid-run, or its start never reached the hub).
    /// The opening is then a `RUN_ERROR` with the code [`RUN_UNKNOWN_CODE`](super::RUN_UNKNOWN_CODE),
    /// until the next `RUN_STARTED`.
    pub fn run_unknown(&self) -> bool {
        self.run_unknown
    }

    /// Whether the shared state is unknown (a `STATE_DELTA` did not apply, or the state was
    /// dropped for the byte cap) until the next `STATE_SNAPSHOT`.
    pub fn state_unknown(&self) -> bool {
        matches!(self.state, State::Unknown)
    }

    /// The number of messages the thread holds.
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// Folds ONE AG-UI event, given as its JSON (the `data:` of its SSE frame).
    ///
    /// Never panics: input that is not JSON, not an AG-UI event, of an unknown type or that
    /// names nothing the thread holds is ignored and reported as such.
    pub fn fold(&mut self, event: &[u8]) -> FoldOutcome {
        let mut outcome = FoldOutcome::default();
        let result = match self.scanner.scan(event) {
            Some((kind, hot)) => self.fold_hot(kind, hot),
            None => self.fold_slow(event, &mut outcome),
        };
        // Every AG-UI event but `RUN_STARTED` belongs to a run: one that comes while the thread
        // holds none means the run started before what the thread holds.
        if self.run.is_none() && !self.run_unknown && of_a_run(&result, event) {
            self.run_unknown = true;
            outcome.run_unknown = true;
        }
        if let Err(reason) = result {
            outcome.ignored = Some(reason);
        }
        if self.bytes() > self.max_bytes {
            self.trim(&mut outcome);
        }
        outcome
    }

    // ----- the streaming events ---------------------------------------------------------------

    pub(super) fn fold_hot(&mut self, kind: HotKind, hot: Hot<'_>) -> Folded {
        let owner = hot.subagent.clone();
        match kind {
            HotKind::TextContent | HotKind::ReasoningContent => {
                self.close_lane(&owner);
                let (id, delta) = (
                    hot.id.ok_or(Ignored::Malformed)?,
                    hot.delta.ok_or(Ignored::Malformed)?,
                );
                self.append_content(&id, &delta, hot.metadata.as_ref())
            }
            HotKind::TextEnd => {
                self.close_lane(&owner);
                let id = hot.id.ok_or(Ignored::Malformed)?;
                self.open.texts.retain(|o| o.key != id);
                self.merge_message_metadata(&id, hot.metadata.as_ref());
                Ok(())
            }
            HotKind::ToolArgs => {
                self.close_lane(&owner);
                let (id, delta) = (
                    hot.id.ok_or(Ignored::Malformed)?,
                    hot.delta.ok_or(Ignored::Malformed)?,
                );
                self.append_args(&id, &delta, hot.metadata.as_ref())
            }
            HotKind::ToolEnd => {
                self.close_lane(&owner);
                let id = hot.id.ok_or(Ignored::Malformed)?;
                self.open.tool_calls.retain(|o| o.key != id);
                self.merge_tool_call_metadata(&id, hot.metadata.as_ref());
                Ok(())
            }
            HotKind::TextChunk | HotKind::ReasoningChunk => {
                let lane_kind = if kind == HotKind::TextChunk {
                    LaneKind::Text
                } else {
                    LaneKind::Reasoning
                };
                let lane = self.resolve_lane(lane_kind, hot.id.as_deref(), &owner)?;
                let continues = self.lane(&lane).is_some_and(|l| {
                    l.kind == lane_kind && hot.id.as_deref().is_none_or(|id| id == l.id)
                });
                let id = if continues {
                    let l = self.lane(&lane).ok_or(Ignored::Malformed)?;
                    let agrees = |incoming: &Option<Cow<'_, str>>, established: &Option<String>| {
                        incoming
                            .as_deref()
                            .is_none_or(|i| Some(i) == established.as_deref())
                    };
                    if lane_kind == LaneKind::Text
                        && (!agrees(&hot.role, &l.role) || !agrees(&hot.name, &l.name))
                    {
                        return Err(Ignored::Malformed);
                    }
                    l.id.clone()
                } else {
                    self.close_lane(&lane);
                    let id = owned(hot.id).ok_or(Ignored::Malformed)?;
                    let role = match lane_kind {
                        LaneKind::Text => {
                            Some(hot.role.as_deref().unwrap_or("assistant").to_owned())
                        }
                        _ => None,
                    };
                    let opened = Lane {
                        owner: lane,
                        kind: lane_kind,
                        id: id.clone(),
                        role,
                        name: owned(hot.name),
                        parent: None,
                    };
                    self.may_open(opened.bytes())?;
                    let created = match lane_kind {
                        LaneKind::Text => self.start_text(
                            &id,
                            opened.role.as_deref().unwrap_or("assistant"),
                            opened.name.as_deref(),
                            owner.as_deref(),
                        ),
                        _ => self.start_reasoning(&id, owner.as_deref()),
                    };
                    created?;
                    self.open.lanes.push(opened);
                    id
                };
                match hot.delta {
                    Some(delta) => self.append_content(&id, &delta, hot.metadata.as_ref()),
                    None => {
                        self.merge_message_metadata(&id, hot.metadata.as_ref());
                        Ok(())
                    }
                }
            }
            HotKind::ToolChunk => {
                let lane = self.resolve_lane(LaneKind::Tool, hot.id.as_deref(), &owner)?;
                let continues = self.lane(&lane).is_some_and(|l| {
                    l.kind == LaneKind::Tool && hot.id.as_deref().is_none_or(|id| id == l.id)
                });
                let id = if continues {
                    let l = self.lane(&lane).ok_or(Ignored::Malformed)?;
                    let agrees = |incoming: &Option<Cow<'_, str>>, established: &Option<String>| {
                        incoming
                            .as_deref()
                            .is_none_or(|i| Some(i) == established.as_deref())
                    };
                    if !agrees(&hot.tool_call_name, &l.name)
                        || !agrees(&hot.parent_message_id, &l.parent)
                    {
                        return Err(Ignored::Malformed);
                    }
                    l.id.clone()
                } else {
                    self.close_lane(&lane);
                    let id = owned(hot.id).ok_or(Ignored::Malformed)?;
                    let name = owned(hot.tool_call_name).ok_or(Ignored::Malformed)?;
                    let opened = Lane {
                        owner: lane,
                        kind: LaneKind::Tool,
                        id: id.clone(),
                        role: None,
                        name: Some(name.clone()),
                        parent: owned(hot.parent_message_id),
                    };
                    self.may_open(opened.bytes())?;
                    // The client's `TOOL_CALL_START` made of the chunk carries its metadata.
                    self.start_tool_call(
                        &id,
                        &name,
                        opened.parent.as_deref(),
                        owner.as_deref(),
                        hot.metadata.as_ref(),
                    );
                    self.open.lanes.push(opened);
                    id
                };
                match hot.delta {
                    Some(delta) => self.append_args(&id, &delta, hot.metadata.as_ref()),
                    // The client makes an empty `TOOL_CALL_ARGS` of it, metadata included.
                    None => {
                        self.merge_tool_call_metadata(&id, hot.metadata.as_ref());
                        Ok(())
                    }
                }
            }
        }
    }

    pub(super) fn find(&self, id: &str) -> Option<usize> {
        self.messages.iter().rposition(|m| m.id == id)
    }

    pub(super) fn append_content(
        &mut self,
        id: &str,
        delta: &str,
        metadata: Option<&Map<String, Value>>,
    ) -> Folded {
        let i = self.find(id).ok_or(Ignored::NoTarget)?;
        let m = &mut self.messages[i];
        if m.role == "activity" {
            return Err(Ignored::NoTarget);
        }
        // A token: counted by its length alone, on the path every streamed token takes.
        if let (Content::Text(t), None) = (&mut m.content, metadata) {
            t.push_str(delta);
            self.messages_bytes += delta.len();
            return Ok(());
        }
        self.change_message(i, |m| {
            match &mut m.content {
                Content::Text(t) => t.push_str(delta),
                other => *other = Content::Text(delta.to_owned()),
            }
            if let Some(meta) = metadata {
                merge_metadata(&mut m.extra, meta);
            }
        });
        Ok(())
    }

    pub(super) fn append_args(
        &mut self,
        id: &str,
        delta: &str,
        metadata: Option<&Map<String, Value>>,
    ) -> Folded {
        let i = self
            .messages
            .iter()
            .rposition(|m| m.has_tool_call(id))
            .ok_or(Ignored::NoTarget)?;
        let Some(meta) = metadata else {
            // A token of the arguments: counted by its length alone.
            if let Some(call) = self.messages[i].tool_call_mut(id) {
                call.arguments.push_str(delta);
                self.messages_bytes += delta.len();
            }
            return Ok(());
        };
        self.change_message(i, |m| {
            if let Some(call) = m.tool_call_mut(id) {
                call.arguments.push_str(delta);
                merge_metadata(&mut call.extra, meta);
            }
        });
        Ok(())
    }

    pub(super) fn merge_message_metadata(
        &mut self,
        id: &str,
        metadata: Option<&Map<String, Value>>,
    ) {
        if let Some(meta) = metadata
            && let Some(i) = self.find(id)
        {
            self.change_message(i, |m| merge_metadata(&mut m.extra, meta));
        }
    }

    pub(super) fn merge_tool_call_metadata(
        &mut self,
        id: &str,
        metadata: Option<&Map<String, Value>>,
    ) {
        if let Some(meta) = metadata
            && let Some(i) = self.messages.iter().rposition(|m| m.has_tool_call(id))
        {
            self.change_message(i, |m| {
                if let Some(call) = m.tool_call_mut(id) {
                    merge_metadata(&mut call.extra, meta);
                }
            });
        }
    }

    /// `TEXT_MESSAGE_START` as the client applies it.
    pub(super) fn start_text(
        &mut self,
        id: &str,
        role: &str,
        name: Option<&str>,
        owner: Option<&str>,
    ) -> Folded {
        match self.find(id) {
            Some(i) if self.messages[i].role == "activity" => Err(Ignored::NoTarget),
            Some(_) => Ok(()),
            None => {
                let mut m = Message::text(id.to_owned(), role.to_owned());
                if let Some(name) = name {
                    m.extra
                        .insert("name".into(), Value::String(name.to_owned()));
                }
                if let Some(owner) = owner {
                    m.extra
                        .insert("subagentRunId".into(), Value::String(owner.to_owned()));
                }
                self.push_message(m);
                Ok(())
            }
        }
    }

    /// `REASONING_MESSAGE_START` as the client applies it.
    pub(super) fn start_reasoning(&mut self, id: &str, owner: Option<&str>) -> Folded {
        self.start_text(id, "reasoning", None, owner)
    }

    /// `TOOL_CALL_START` as the client applies it.
    pub(super) fn start_tool_call(
        &mut self,
        id: &str,
        name: &str,
        parent: Option<&str>,
        owner: Option<&str>,
        metadata: Option<&Map<String, Value>>,
    ) {
        if let Some(i) = self.messages.iter().position(|m| m.has_tool_call(id)) {
            self.change_message(i, |m| {
                if let Some(call) = m.tool_call_mut(id) {
                    call.name = name.to_owned();
                    if let Some(meta) = metadata {
                        merge_metadata(&mut call.extra, meta);
                    }
                }
            });
            return;
        }
        let found = parent.map(|p| (p, self.find(p)));
        let target = match found {
            Some((_, Some(i))) if self.messages[i].role == "assistant" => Some(i),
            // A parent that is not an assistant message: the call gets its own message.
            Some((_, Some(_))) | None => {
                self.push_assistant(id, owner);
                None
            }
            Some((parent, None)) => {
                self.push_assistant(parent, owner);
                None
            }
        };
        let i = target.unwrap_or(self.messages.len().saturating_sub(1));
        if i < self.messages.len() {
            let mut call = ToolCall::new(id.to_owned(), name.to_owned());
            if let Some(meta) = metadata {
                merge_metadata(&mut call.extra, meta);
            }
            self.change_message(i, |m| m.tool_calls.get_or_insert_with(Vec::new).push(call));
        }
    }

    pub(super) fn push_assistant(&mut self, id: &str, owner: Option<&str>) {
        let mut extra = Map::new();
        if let Some(owner) = owner {
            extra.insert("subagentRunId".into(), Value::String(owner.to_owned()));
        }
        self.push_message(Message {
            id: id.to_owned(),
            role: "assistant".into(),
            content: Content::Absent,
            tool_calls: Some(Vec::new()),
            extra,
        });
    }

    /// Adds a message at the end, counting it.
    pub(super) fn push_message(&mut self, m: Message) {
        self.messages_bytes += m.bytes();
        self.messages.push(m);
    }

    /// Changes message `i`, re-measuring that message alone: measuring every message on each
    /// change made a long thread's fold quadratic, under its channel's lock.
    pub(super) fn change_message<R>(
        &mut self,
        i: usize,
        change: impl FnOnce(&mut Message) -> R,
    ) -> R {
        let before = self.messages[i].bytes();
        let out = change(&mut self.messages[i]);
        self.remeasured(i, before);
        out
    }

    /// Counts message `i` anew, where it measured `before`.
    pub(super) fn remeasured(&mut self, i: usize, before: usize) {
        self.messages_bytes = self.messages_bytes - before + self.messages[i].bytes();
    }
}

/// A streaming event read by the slow path (it had `metadata`, an attribution or an unknown
/// member), in the fast path's form.
pub(super) fn hot_from(kind: HotKind, obj: &Map<String, Value>) -> Result<Hot<'static>, Ignored> {
    let s = |k: &str| str_of(obj, k).map(|v| Cow::Owned(v.to_owned()));
    let delta = match obj.get("delta") {
        None => None,
        Some(Value::String(d)) => Some(Cow::Owned(escape(d))),
        Some(_) => return Err(Ignored::Malformed),
    };
    Ok(Hot {
        // The id the type means, as the scanner reads it (see `HotKind::by_tool_call_id`).
        id: s(if kind.by_tool_call_id() {
            "toolCallId"
        } else {
            "messageId"
        }),
        delta,
        role: s("role"),
        name: s("name"),
        tool_call_name: s("toolCallName"),
        parent_message_id: s("parentMessageId"),
        subagent: str_of(obj, "subagentRunId").map(str::to_owned),
        metadata: metadata_of(obj),
    })
}
