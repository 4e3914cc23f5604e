//! The slow path of the fold: every event read with a full parse (the run's lifecycle, steps,
//! snapshots, deltas, results, activities, and streaming events that carry members the scanner
//! does not know).

use serde_json::{Map, Value};

use super::fold::{Folded, Run, State, hot_from, metadata_of, opener_bytes, str_of};
use super::message::{Content, Message, merge_metadata, value_bytes};
use super::open::{MAX_OPEN_SUBAGENTS, Opener};
use super::scan::{HotKind, escape};
use super::{FoldOutcome, Ignored, ThreadRun, patch};

impl ThreadRun {
    pub(super) fn fold_slow(&mut self, bytes: &[u8], outcome: &mut FoldOutcome) -> Folded {
        let value: Value = serde_json::from_slice(bytes).map_err(|_| Ignored::NotJson)?;
        let Value::Object(obj) = value else {
            return Err(Ignored::NotAnEvent);
        };
        let ty = str_of(&obj, "type").ok_or(Ignored::NotAnEvent)?;
        if let Some(kind) = HotKind::from_type(ty) {
            return self.fold_hot(kind, hot_from(kind, &obj)?);
        }
        let owner = str_of(&obj, "subagentRunId").map(str::to_owned);
        match ty {
            "RUN_STARTED" => {
                let mut obj = obj;
                let input = obj.get_mut("input").and_then(|i| i.get_mut("messages"));
                let fresh: Option<Vec<Message>> = match input.as_deref() {
                    Some(Value::Array(input)) => Some(
                        input
                            .iter()
                            .map(Message::from_value)
                            .collect::<Option<_>>()
                            .ok_or(Ignored::Malformed)?,
                    ),
                    _ => None,
                };
                if self.run_unknown {
                    // What the thread folded of the run it could not rebuild is fragments: the
                    // new run opens as its input has it.
                    let scanner = std::mem::take(&mut self.scanner);
                    *self = Self::new(self.max_bytes);
                    self.scanner = scanner;
                }
                self.open.clear();
                if let (Some(fresh), Some(Value::Array(input))) = (fresh, input) {
                    for m in fresh {
                        if self.find(&m.id).is_none() {
                            self.messages.push(m);
                        }
                    }
                    self.recount_messages();
                    // Kept once, as the thread's messages: the opening sends them in its
                    // snapshot, and its `RUN_STARTED` with an input without them (see
                    // `opening`), so the cap counts them once and trims what is sent.
                    input.clear();
                }
                let value = Value::Object(obj);
                let bytes = value_bytes(&value);
                self.run = Some(Run {
                    started: value,
                    ended: None,
                    bytes,
                });
                Ok(())
            }
            "RUN_FINISHED" | "RUN_ERROR" => {
                let run = self
                    .run
                    .as_mut()
                    .filter(|r| r.ended.is_none())
                    .ok_or(Ignored::NoTarget)?;
                let value = Value::Object(obj);
                run.bytes += value_bytes(&value);
                run.ended = Some(value);
                self.open.clear();
                Ok(())
            }
            "STEP_STARTED" | "STEP_FINISHED" => {
                self.close_lane(&owner);
                let name = str_of(&obj, "stepName")
                    .ok_or(Ignored::Malformed)?
                    .to_owned();
                self.open
                    .steps
                    .retain(|o| !(o.key == name && o.owner == owner));
                if ty == "STEP_STARTED" {
                    let opener = Opener {
                        key: name,
                        owner,
                        event: opener_bytes(&obj),
                    };
                    self.may_open(opener.bytes())?;
                    self.open.steps.push(opener);
                }
                Ok(())
            }
            "TEXT_MESSAGE_START" => {
                self.close_lane(&owner);
                let id = str_of(&obj, "messageId")
                    .ok_or(Ignored::Malformed)?
                    .to_owned();
                let role = str_of(&obj, "role").unwrap_or("assistant");
                self.open.texts.retain(|o| o.key != id);
                let opener = Opener {
                    key: id.clone(),
                    owner: owner.clone(),
                    event: opener_bytes(&obj),
                };
                self.may_open(opener.bytes())?;
                self.start_text(&id, role, str_of(&obj, "name"), owner.as_deref())?;
                self.merge_message_metadata(&id, metadata_of(&obj).as_ref());
                self.open.texts.push(opener);
                Ok(())
            }
            "TOOL_CALL_START" => {
                self.close_lane(&owner);
                let id = str_of(&obj, "toolCallId")
                    .ok_or(Ignored::Malformed)?
                    .to_owned();
                let name = str_of(&obj, "toolCallName").ok_or(Ignored::Malformed)?;
                let meta = metadata_of(&obj);
                self.open.tool_calls.retain(|o| o.key != id);
                let opener = Opener {
                    key: id.clone(),
                    owner: owner.clone(),
                    event: opener_bytes(&obj),
                };
                self.may_open(opener.bytes())?;
                self.start_tool_call(
                    &id,
                    name,
                    str_of(&obj, "parentMessageId"),
                    owner.as_deref(),
                    meta.as_ref(),
                );
                self.open.tool_calls.push(opener);
                Ok(())
            }
            "TOOL_CALL_RESULT" => {
                self.close_lane(&owner);
                self.tool_result(&obj)
            }
            "REASONING_START"
            | "REASONING_END"
            | "REASONING_MESSAGE_START"
            | "REASONING_MESSAGE_END" => {
                self.close_lane(&owner);
                let id = str_of(&obj, "messageId")
                    .ok_or(Ignored::Malformed)?
                    .to_owned();
                let spans = ty == "REASONING_START" || ty == "REASONING_END";
                let list = if spans {
                    &mut self.open.reasoning_spans
                } else {
                    &mut self.open.reasoning_messages
                };
                list.retain(|o| o.key != id);
                let opener = (!ty.ends_with("_END")).then(|| Opener {
                    key: id.clone(),
                    owner: owner.clone(),
                    event: opener_bytes(&obj),
                });
                if let Some(opener) = &opener {
                    self.may_open(opener.bytes())?;
                }
                if ty == "REASONING_MESSAGE_START" {
                    self.start_reasoning(&id, owner.as_deref())?;
                }
                if !spans {
                    self.merge_message_metadata(&id, metadata_of(&obj).as_ref());
                }
                if let Some(opener) = opener {
                    if spans {
                        self.open.reasoning_spans.push(opener);
                    } else {
                        self.open.reasoning_messages.push(opener);
                    }
                }
                Ok(())
            }
            "REASONING_ENCRYPTED_VALUE" => {
                let entity = str_of(&obj, "entityId").ok_or(Ignored::Malformed)?;
                let value = obj
                    .get("encryptedValue")
                    .cloned()
                    .ok_or(Ignored::Malformed)?;
                if str_of(&obj, "subtype") == Some("tool-call") {
                    let i = self
                        .messages
                        .iter()
                        .position(|m| m.role == "assistant" && m.has_tool_call(entity))
                        .ok_or(Ignored::NoTarget)?;
                    self.change_message(i, |m| {
                        if let Some(call) = m.tool_call_mut(entity) {
                            call.extra.insert("encryptedValue".into(), value);
                        }
                    });
                } else {
                    let i = self
                        .messages
                        .iter()
                        .position(|m| m.id == entity)
                        .ok_or(Ignored::NoTarget)?;
                    if self.messages[i].role == "activity" {
                        return Err(Ignored::NoTarget);
                    }
                    self.change_message(i, |m| m.extra.insert("encryptedValue".into(), value));
                }
                Ok(())
            }
            "STATE_SNAPSHOT" => {
                self.close_lane(&owner);
                let snapshot = obj.get("snapshot").cloned().ok_or(Ignored::Malformed)?;
                self.state_bytes = value_bytes(&snapshot);
                self.state_drift = 0;
                self.state = State::Known(snapshot);
                Ok(())
            }
            "STATE_DELTA" => {
                self.close_lane(&owner);
                let delta = obj.get("delta").ok_or(Ignored::Malformed)?;
                self.state_delta(delta, bytes.len(), outcome)
            }
            "MESSAGES_SNAPSHOT" => {
                self.open.lanes.clear();
                self.messages_snapshot(&obj)
            }
            "ACTIVITY_SNAPSHOT" => self.activity_snapshot(&obj),
            "ACTIVITY_DELTA" => self.activity_delta(&obj),
            "CUSTOM" => {
                self.close_lane(&owner);
                Ok(())
            }
            "SUBAGENT_STARTED" => self.subagent_started(obj),
            "SUBAGENT_FINISHED" | "SUBAGENT_ERROR" => {
                if owner.is_some() {
                    self.close_lane(&owner);
                }
                self.subagent_ended(owner.as_deref())
            }
            "RAW" => Ok(()),
            _ => Err(Ignored::UnknownType),
        }
    }

    /// `SUBAGENT_STARTED`: the subagent is open until its `SUBAGENT_FINISHED` or
    /// `SUBAGENT_ERROR` (or the run's end), and an opening re-opens it, since the client
    /// refuses the end of a subagent, and its attributed events, that it did not see start.
    pub(super) fn subagent_started(&mut self, mut obj: Map<String, Value>) -> Folded {
        let id = str_of(&obj, "subagentRunId")
            .ok_or(Ignored::Malformed)?
            .to_owned();
        str_of(&obj, "name").ok_or(Ignored::Malformed)?;
        // The client refuses a subagent started twice.
        if self.open.subagents.iter().any(|o| o.key == id) {
            return Err(Ignored::Malformed);
        }
        if self.open.subagents.len() >= MAX_OPEN_SUBAGENTS {
            return Err(Ignored::TooManyOpen);
        }
        let parent = str_of(&obj, "parentSubagentRunId").map(str::to_owned);
        let parent_open = parent
            .as_ref()
            .is_some_and(|p| self.open.subagents.iter().any(|o| &o.key == p));
        if parent.is_some() && !parent_open {
            // Its parent already ended: an opening cannot name it (see `subagent_ended`).
            obj.remove("parentSubagentRunId");
        }
        let opener = Opener {
            key: id,
            owner: parent.filter(|_| parent_open),
            event: serde_json::to_vec(&Value::Object(obj)).unwrap_or_default(),
        };
        self.may_open(opener.bytes())?;
        self.open.subagents.push(opener);
        Ok(())
    }

    /// `SUBAGENT_FINISHED` or `SUBAGENT_ERROR` of `id`.
    pub(super) fn subagent_ended(&mut self, id: Option<&str>) -> Folded {
        let id = id.ok_or(Ignored::Malformed)?;
        let at = self
            .open
            .subagents
            .iter()
            .position(|o| o.key == id)
            .ok_or(Ignored::NoTarget)?;
        self.open.subagents.remove(at);
        // Its children that still run are re-opened without their parent from now on: the
        // client refuses a `parentSubagentRunId` it did not see start in the connection, and
        // an opening re-opens only what runs. (A subagent started later under this finished
        // parent is refused by a tab that joined after the parent ended: a limit of re-opening
        // only what runs.)
        for child in &mut self.open.subagents {
            if child.owner.as_deref() == Some(id) {
                child.owner = None;
                if let Ok(Value::Object(mut event)) = serde_json::from_slice(&child.event) {
                    event.remove("parentSubagentRunId");
                    child.event = serde_json::to_vec(&Value::Object(event)).unwrap_or_default();
                }
            }
        }
        Ok(())
    }

    pub(super) fn tool_result(&mut self, obj: &Map<String, Value>) -> Folded {
        let id = str_of(obj, "messageId").ok_or(Ignored::Malformed)?;
        let call_id = str_of(obj, "toolCallId").ok_or(Ignored::Malformed)?;
        let content = obj.get("content").cloned().ok_or(Ignored::Malformed)?;
        let mut m = Map::new();
        m.insert("id".into(), Value::String(id.to_owned()));
        m.insert("toolCallId".into(), Value::String(call_id.to_owned()));
        let role = str_of(obj, "role")
            .filter(|r| !r.is_empty())
            .unwrap_or("tool");
        m.insert("role".into(), Value::String(role.to_owned()));
        m.insert("content".into(), content);
        if let Some(owner) = str_of(obj, "subagentRunId") {
            m.insert("subagentRunId".into(), Value::String(owner.to_owned()));
        }
        if let Some(meta) = metadata_of(obj) {
            m.insert("metadata".into(), Value::Object(meta));
        }
        let message = Message::from_value(&Value::Object(m)).ok_or(Ignored::Malformed)?;
        self.messages_bytes += message.bytes();
        match self
            .messages
            .iter()
            .position(|m| m.role == "assistant" && m.has_tool_call(call_id))
        {
            None => self.messages.push(message),
            Some(i) => {
                let mut at = i + 1;
                while at < self.messages.len() && self.messages[at].role == "tool" {
                    at += 1;
                }
                self.messages.insert(at, message);
            }
        }
        Ok(())
    }

    pub(super) fn state_delta(
        &mut self,
        delta: &Value,
        event_len: usize,
        outcome: &mut FoldOutcome,
    ) -> Folded {
        let state = match &mut self.state {
            State::Unknown => return Err(Ignored::StateUnknown),
            State::Untouched => {
                self.state = State::Known(Value::Object(Map::new()));
                self.state_bytes = 2;
                match &mut self.state {
                    State::Known(v) => v,
                    _ => return Err(Ignored::StateUnknown),
                }
            }
            State::Known(v) => v,
        };
        // Applied in place without undo (see `patch`): on failure the state is dropped.
        if patch::apply(state, delta).is_err() {
            self.state = State::Unknown;
            self.state_bytes = 0;
            self.state_drift = 0;
            outcome.state_unknown = true;
            return Ok(());
        }
        // Measured exactly once the deltas since the last measure outweigh it: amortized O(1).
        self.state_drift += event_len;
        if self.state_drift > self.state_bytes {
            self.state_bytes = value_bytes(state);
            self.state_drift = 0;
        }
        Ok(())
    }

    pub(super) fn messages_snapshot(&mut self, obj: &Map<String, Value>) -> Folded {
        let Some(Value::Array(list)) = obj.get("messages") else {
            return Err(Ignored::Malformed);
        };
        let incoming: Vec<Message> = list
            .iter()
            .map(Message::from_value)
            .collect::<Option<_>>()
            .ok_or(Ignored::Malformed)?;
        // The client's `authoritativeActivityTypes`: absent (None), null (Some(None)) or a list.
        let authority: Option<Option<Vec<String>>> =
            match obj.get("metadata").and_then(|m| m.get("@ag-ui/client")) {
                None => None,
                Some(Value::Object(o)) => match o.get("authoritativeActivityTypes") {
                    None => None,
                    Some(Value::Null) => Some(None),
                    Some(Value::Array(a)) if a.iter().all(Value::is_string) => Some(Some(
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                    )),
                    Some(_) => Some(Some(Vec::new())),
                },
                Some(_) => Some(Some(Vec::new())),
            };
        let has_activity = incoming.iter().any(|m| m.role == "activity");
        let has_reasoning = incoming.iter().any(|m| m.role == "reasoning");
        let keep = |m: &Message| -> bool {
            if m.role == "activity" {
                let ty = m
                    .extra
                    .get("activityType")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match &authority {
                    Some(Some(list)) => !list.iter().any(|t| t == ty),
                    Some(None) => false,
                    None => !has_activity,
                }
            } else {
                m.role == "reasoning" && !has_reasoning
            }
        };
        let old = std::mem::take(&mut self.messages);
        let mut kept = Vec::with_capacity(old.len() + incoming.len());
        for m in old {
            // The last of the snapshot's messages with this id, as the client's Map keeps it.
            if let Some(new) = incoming.iter().rev().find(|n| n.id == m.id) {
                kept.push(new.clone());
            } else if keep(&m) {
                kept.push(m);
            }
        }
        let present: std::collections::HashSet<String> =
            kept.iter().map(|m| m.id.clone()).collect();
        for m in incoming {
            if !present.contains(&m.id) {
                kept.push(m);
            }
        }
        self.messages = kept;
        self.recount_messages();
        Ok(())
    }

    pub(super) fn activity_snapshot(&mut self, obj: &Map<String, Value>) -> Folded {
        let id = str_of(obj, "messageId").ok_or(Ignored::Malformed)?;
        let ty = str_of(obj, "activityType").ok_or(Ignored::Malformed)?;
        let content = obj.get("content").cloned().ok_or(Ignored::Malformed)?;
        let replace = obj.get("replace").and_then(Value::as_bool).unwrap_or(true);
        let owner = str_of(obj, "subagentRunId");
        let mut fresh = Map::new();
        fresh.insert("id".into(), Value::String(id.to_owned()));
        fresh.insert("role".into(), Value::String("activity".into()));
        fresh.insert("activityType".into(), Value::String(ty.to_owned()));
        fresh.insert("content".into(), content.clone());
        if let Some(owner) = owner {
            fresh.insert("subagentRunId".into(), Value::String(owner.to_owned()));
        }
        let fresh = Message::from_value(&Value::Object(fresh)).ok_or(Ignored::Malformed)?;
        let target = match self.messages.iter().position(|m| m.id == id) {
            None => {
                self.push_message(fresh);
                Some(self.messages.len() - 1)
            }
            Some(i) if self.messages[i].role == "activity" => {
                if replace {
                    self.change_message(i, |m| {
                        m.extra
                            .insert("activityType".into(), Value::String(ty.to_owned()));
                        m.content = fresh.content;
                        match owner {
                            Some(owner) => m
                                .extra
                                .insert("subagentRunId".into(), Value::String(owner.to_owned())),
                            None => m.extra.remove("subagentRunId"),
                        };
                    });
                }
                Some(i)
            }
            Some(i) => {
                if replace {
                    self.change_message(i, |m| *m = fresh);
                    Some(i)
                } else {
                    None
                }
            }
        };
        if let (Some(i), Some(meta)) = (target, metadata_of(obj)) {
            self.change_message(i, |m| merge_metadata(&mut m.extra, &meta));
        }
        Ok(())
    }

    pub(super) fn activity_delta(&mut self, obj: &Map<String, Value>) -> Folded {
        let id = str_of(obj, "messageId").ok_or(Ignored::Malformed)?;
        let i = self
            .messages
            .iter()
            .position(|m| m.id == id)
            .ok_or(Ignored::NoTarget)?;
        if self.messages[i].role != "activity" {
            return Err(Ignored::NoTarget);
        }
        let before = self.messages[i].bytes();
        if let Some(meta) = metadata_of(obj) {
            merge_metadata(&mut self.messages[i].extra, &meta);
        }
        let m = &mut self.messages[i];
        let mut content = match &m.content {
            Content::Absent => Value::Object(Map::new()),
            Content::Other(v) => v.clone(),
            Content::Text(t) => serde_json::from_str(&format!("\"{t}\"")).unwrap_or(Value::Null),
        };
        let patch = obj
            .get("patch")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        // `content` is a copy: on failure it is dropped and the activity stays as it was, as
        // in the client.
        if patch::apply(&mut content, &patch).is_err() {
            self.remeasured(i, before);
            return Err(Ignored::PatchFailed);
        }
        m.content = match content {
            Value::String(s) => Content::Text(escape(&s)),
            other => Content::Other(other),
        };
        match obj.get("activityType") {
            Some(ty) => m.extra.insert("activityType".into(), ty.clone()),
            None => m.extra.remove("activityType"),
        };
        self.remeasured(i, before);
        Ok(())
    }

    pub(super) fn recount_messages(&mut self) {
        self.messages_bytes = self.messages.iter().map(Message::bytes).sum();
    }
}
