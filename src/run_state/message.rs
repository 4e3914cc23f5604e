//! The thread's messages, as the official client builds them.
//!
//! A message is kept as the client's `Message` object would be, with the two members that
//! grow token by token (a text `content` and a tool call's `function.arguments`) held as
//! escaped JSON string contents, appended to without re-escaping. Every other member is kept
//! verbatim as JSON, so a message the fold did not build itself (from a run input or a
//! `MESSAGES_SNAPSHOT`) round-trips unchanged.

use serde_json::{Map, Value};

use super::scan::escape;

/// A message's `content`.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// No `content` member (an assistant message made for a tool call).
    Absent,
    /// A string `content`, escaped.
    Text(String),
    /// Any other `content` (content parts, an activity's object), verbatim.
    Other(Value),
}

/// One tool call of an assistant message.
#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    pub(crate) id: String,
    pub(crate) name: String,
    /// `function.arguments`, escaped.
    pub(crate) arguments: String,
    /// The members of the tool call other than `id` and `function` (`type`, `metadata`…).
    pub(crate) extra: Map<String, Value>,
    /// The members of `function` other than `name` and `arguments`.
    pub(crate) function_extra: Map<String, Value>,
}

impl ToolCall {
    pub(crate) fn new(id: String, name: String) -> Self {
        let mut extra = Map::new();
        extra.insert("type".into(), Value::String("function".into()));
        Self {
            id,
            name,
            arguments: String::new(),
            extra,
            function_extra: Map::new(),
        }
    }

    fn from_value(value: &Value) -> Option<Self> {
        let mut obj = value.as_object()?.clone();
        let id = match obj.remove("id") {
            Some(Value::String(id)) => id,
            _ => return None,
        };
        let mut function = match obj.remove("function") {
            Some(Value::Object(f)) => f,
            _ => return None,
        };
        let name = match function.remove("name") {
            Some(Value::String(n)) => n,
            _ => return None,
        };
        let arguments = match function.remove("arguments") {
            Some(Value::String(a)) => escape(&a),
            _ => return None,
        };
        Some(Self {
            id,
            name,
            arguments,
            extra: obj,
            function_extra: function,
        })
    }

    pub(crate) fn bytes(&self) -> usize {
        64 + self.id.len()
            + self.name.len()
            + self.arguments.len()
            + map_bytes(&self.extra)
            + map_bytes(&self.function_extra)
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &self.id);
        write_members(out, &self.extra, &["id", "function"]);
        out.extend_from_slice(b",\"function\":{\"name\":");
        write_str(out, &self.name);
        out.extend_from_slice(b",\"arguments\":\"");
        out.extend_from_slice(self.arguments.as_bytes());
        out.push(b'"');
        write_members(out, &self.function_extra, &["name", "arguments"]);
        out.extend_from_slice(b"}}");
    }
}

/// One message of the thread.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) id: String,
    pub(crate) role: String,
    pub(crate) content: Content,
    /// `toolCalls`, when the message has that member.
    pub(crate) tool_calls: Option<Vec<ToolCall>>,
    /// Every other member (`name`, `toolCallId`, `activityType`, `metadata`…), verbatim.
    pub(crate) extra: Map<String, Value>,
}

impl Message {
    /// A message as the client makes it for `TEXT_MESSAGE_START` or `REASONING_MESSAGE_START`.
    pub(crate) fn text(id: String, role: String) -> Self {
        Self {
            id,
            role,
            content: Content::Text(String::new()),
            tool_calls: None,
            extra: Map::new(),
        }
    }

    /// A message from its JSON (a run input's or a snapshot's); `None` without a string `id`.
    pub(crate) fn from_value(value: &Value) -> Option<Self> {
        let mut obj = value.as_object()?.clone();
        let id = match obj.remove("id") {
            Some(Value::String(id)) => id,
            _ => return None,
        };
        let role = match obj.remove("role") {
            Some(Value::String(role)) => role,
            _ => return None,
        };
        // The client drops a null attribution from the messages it takes in.
        if obj.get("subagentRunId") == Some(&Value::Null) {
            obj.remove("subagentRunId");
        }
        let content = match obj.remove("content") {
            None => Content::Absent,
            Some(Value::String(s)) => Content::Text(escape(&s)),
            Some(other) => Content::Other(other),
        };
        let tool_calls = match obj.get("toolCalls") {
            Some(Value::Array(calls)) => {
                let parsed: Option<Vec<ToolCall>> =
                    calls.iter().map(ToolCall::from_value).collect();
                match parsed {
                    Some(parsed) => {
                        obj.remove("toolCalls");
                        Some(parsed)
                    }
                    // Kept verbatim in `extra`: later events cannot extend it.
                    None => None,
                }
            }
            _ => None,
        };
        Some(Self {
            id,
            role,
            content,
            tool_calls,
            extra: obj,
        })
    }

    /// What the message holds, approximately its JSON size.
    pub(crate) fn bytes(&self) -> usize {
        let content = match &self.content {
            Content::Absent => 0,
            Content::Text(t) => t.len(),
            Content::Other(v) => value_bytes(v),
        };
        let calls: usize = self.tool_calls.iter().flatten().map(ToolCall::bytes).sum();
        48 + self.id.len() + self.role.len() + content + calls + map_bytes(&self.extra)
    }

    /// Writes the message as compact JSON.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &self.id);
        out.extend_from_slice(b",\"role\":");
        write_str(out, &self.role);
        match &self.content {
            Content::Absent => {}
            Content::Text(t) => {
                out.extend_from_slice(b",\"content\":\"");
                out.extend_from_slice(t.as_bytes());
                out.push(b'"');
            }
            Content::Other(v) => {
                out.extend_from_slice(b",\"content\":");
                write_value(out, v);
            }
        }
        if let Some(calls) = &self.tool_calls {
            out.extend_from_slice(b",\"toolCalls\":[");
            for (i, call) in calls.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                call.write(out);
            }
            out.push(b']');
        }
        write_members(out, &self.extra, &["id", "role", "content", "toolCalls"]);
        out.push(b'}');
    }

    /// The tool call `id` of this message, if it has it.
    pub(crate) fn tool_call_mut(&mut self, id: &str) -> Option<&mut ToolCall> {
        self.tool_calls.as_mut()?.iter_mut().find(|c| c.id == id)
    }

    pub(crate) fn has_tool_call(&self, id: &str) -> bool {
        self.tool_calls
            .as_ref()
            .is_some_and(|calls| calls.iter().any(|c| c.id == id))
    }

    /// The escaped text this message grows by (its content or its open tool call's
    /// arguments), for trimming.
    pub(crate) fn growing_text_mut(&mut self) -> Vec<&mut String> {
        let mut out = Vec::new();
        if let Content::Text(t) = &mut self.content {
            out.push(t);
        }
        for call in self.tool_calls.iter_mut().flatten() {
            out.push(&mut call.arguments);
        }
        out
    }
}

/// `metadata` merged as the client merges it: a shallow merge, incoming members winning.
pub(crate) fn merge_metadata(extra: &mut Map<String, Value>, incoming: &Map<String, Value>) {
    match extra.get_mut("metadata") {
        Some(Value::Object(existing)) => {
            for (k, v) in incoming {
                existing.insert(k.clone(), v.clone());
            }
        }
        _ => {
            extra.insert("metadata".into(), Value::Object(incoming.clone()));
        }
    }
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value) {
    let _ = serde_json::to_writer(&mut *out, v);
}

fn write_members(out: &mut Vec<u8>, map: &Map<String, Value>, skip: &[&str]) {
    for (k, v) in map {
        if skip.contains(&k.as_str()) {
            continue;
        }
        out.push(b',');
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
}

/// The compact JSON size of `v`.
pub(crate) fn value_bytes(v: &Value) -> usize {
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, v);
    counter.0
}

fn map_bytes(map: &Map<String, Value>) -> usize {
    map.iter().map(|(k, v)| k.len() + 4 + value_bytes(v)).sum()
}

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
