//! The strict points of `@ag-ui/core` 1.0.0's schemas for the members carried as JSON values
//! (run input, messages, content parts, outcomes, token usage, JSON Patch), checked in place:
//! nothing is copied, and the error names the member by its path (`messages[1].toolCalls[0].id`).

use std::fmt;

use serde_json::{Map, Value};

use super::InvalidEvent;
use super::members::{MAX_SAFE_INTEGER, kind};

/// Where a value sits in the event, built on the stack and written out only for an error.
#[derive(Clone, Copy)]
pub(crate) enum Path<'a> {
    /// A member of the event.
    Member(&'a str),
    /// A member of an object.
    Key(&'a Path<'a>, &'a str),
    /// An element of an array.
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Member(name) => f.write_str(name),
            Self::Key(parent, key) => write!(f, "{parent}.{key}"),
            Self::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

impl<'a> Path<'a> {
    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }

    fn error(&self, reason: impl Into<String>) -> InvalidEvent {
        InvalidEvent::new(self.to_string(), reason)
    }
}

type Checked<T = ()> = Result<T, InvalidEvent>;

fn object<'v>(value: &'v Value, path: &Path<'_>) -> Checked<&'v Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| path.error(format!("must be an object, got {}", kind(value))))
}

fn array<'v>(value: &'v Value, path: &Path<'_>) -> Checked<&'v [Value]> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| path.error(format!("must be an array, got {}", kind(value))))
}

fn string<'v>(value: &'v Value, path: &Path<'_>) -> Checked<&'v str> {
    value
        .as_str()
        .ok_or_else(|| path.error(format!("must be a string, got {}", kind(value))))
}

fn required<'v>(object: &'v Map<String, Value>, path: &Path<'_>, key: &str) -> Checked<&'v Value> {
    object
        .get(key)
        .ok_or_else(|| path.key(key).error("is required"))
}

fn req_str<'v>(object: &'v Map<String, Value>, path: &Path<'_>, key: &str) -> Checked<&'v str> {
    string(required(object, path, key)?, &path.key(key))
}

/// An optional member: absent is fine, `null` is not (the 1.0 schemas reject it).
fn optional<'v>(
    object: &'v Map<String, Value>,
    path: &Path<'_>,
    key: &str,
) -> Checked<Option<&'v Value>> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::Null) => Err(path
            .key(key)
            .error("must be absent rather than null when it has no value")),
        Some(value) => Ok(Some(value)),
    }
}

fn opt_str(object: &Map<String, Value>, path: &Path<'_>, keys: &[&str]) -> Checked {
    for key in keys {
        if let Some(value) = optional(object, path, key)? {
            string(value, &path.key(key))?;
        }
    }
    Ok(())
}

fn opt_object(object: &Map<String, Value>, path: &Path<'_>, key: &str) -> Checked {
    if let Some(value) = optional(object, path, key)? {
        self::object(value, &path.key(key))?;
    }
    Ok(())
}

fn literal(object: &Map<String, Value>, path: &Path<'_>, key: &str, expected: &str) -> Checked {
    let value = req_str(object, path, key)?;
    if value == expected {
        Ok(())
    } else {
        Err(path
            .key(key)
            .error(format!("must be {expected:?}, got {value:?}")))
    }
}

fn opt_strings(object: &Map<String, Value>, path: &Path<'_>, key: &str) -> Checked {
    if let Some(value) = optional(object, path, key)? {
        let path = path.key(key);
        for (i, item) in array(value, &path)?.iter().enumerate() {
            string(item, &path.index(i))?;
        }
    }
    Ok(())
}

/// The `type` of a discriminated union, and the error listing the accepted ones.
fn discriminant<'v>(
    object: &'v Map<String, Value>,
    path: &Path<'_>,
    key: &str,
    accepted: &[&str],
) -> Checked<&'v str> {
    let value = req_str(object, path, key)?;
    if accepted.contains(&value) {
        Ok(value)
    } else {
        Err(path.key(key).error(format!(
            "must be one of {}, got {value:?}",
            accepted.join(", ")
        )))
    }
}

/// A JSON Patch (RFC 6902) document: each operation an object with a known `op`, a JSON Pointer
/// `path` (RFC 6901), a `from` pointer for `move` and `copy`, and a `value` for `add`, `replace`
/// and `test`.
///
/// Checked in place rather than by deserialising each operation with the `json-patch` crate
/// (which applies the patches where the run state folds them): that allocated every pointer
/// and cloned every value, and made a typed `STATE_DELTA` publish 2.1x slower than before the
/// check, against a budget of 1.2x (benches/router.rs).
pub(crate) fn json_patch(operations: &[Value], member: &str) -> Checked {
    let path = Path::Member(member);
    for (i, operation) in operations.iter().enumerate() {
        let at = path.index(i);
        let Value::Object(operation) = operation else {
            return Err(at.error("not a JSON Patch operation: must be an object"));
        };
        let op = match operation.get("op") {
            Some(Value::String(op)) => op.as_str(),
            _ => return Err(at.error("not a JSON Patch operation: `op` must be a string")),
        };
        let (needs_from, needs_value) = match op {
            "add" | "replace" | "test" => (false, true),
            "remove" => (false, false),
            "move" | "copy" => (true, false),
            other => {
                return Err(at.error(format!(
                    "not a JSON Patch operation: `op` must be one of add, remove, replace, \
                     move, copy, test, got {other:?}"
                )));
            }
        };
        json_pointer(operation.get("path"), "path", &at)?;
        if needs_from {
            json_pointer(operation.get("from"), "from", &at)?;
        }
        if needs_value && !operation.contains_key("value") {
            return Err(at.error(format!(
                "not a JSON Patch operation: `value` is required by {op:?}"
            )));
        }
    }
    Ok(())
}

/// The operation's `name` member, a JSON Pointer (RFC 6901): empty, or `/`-separated tokens
/// where `~` is only `~0` or `~1`.
fn json_pointer(value: Option<&Value>, name: &str, operation: &Path<'_>) -> Checked {
    let Some(Value::String(pointer)) = value else {
        return Err(operation.error(format!(
            "not a JSON Patch operation: `{name}` must be a JSON Pointer string"
        )));
    };
    let malformed = |why: &str| {
        operation.error(format!(
            "not a JSON Patch operation: `{name}` {why}, got {pointer:?}"
        ))
    };
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(malformed("must be empty or start with '/'"));
    }
    let mut bytes = pointer.bytes();
    while let Some(b) = bytes.next() {
        if b == b'~' && !matches!(bytes.next(), Some(b'0' | b'1')) {
            return Err(malformed("has a '~' not followed by 0 or 1"));
        }
    }
    Ok(())
}

/// MESSAGES_SNAPSHOT `messages`, RUN_STARTED `input.messages`.
pub(crate) fn messages(messages: &[Value], path: &Path<'_>) -> Checked {
    for (i, message) in messages.iter().enumerate() {
        self::message(message, &path.index(i))?;
    }
    Ok(())
}

fn message(value: &Value, path: &Path<'_>) -> Checked {
    let message = object(value, path)?;
    let role = discriminant(
        message,
        path,
        "role",
        &[
            "developer",
            "system",
            "assistant",
            "user",
            "tool",
            "activity",
            "reasoning",
        ],
    )?;
    req_str(message, path, "id")?;
    opt_str(message, path, &["subagentRunId"])?;
    opt_object(message, path, "metadata")?;
    match role {
        "developer" | "system" => {
            opt_str(message, path, &["name", "encryptedValue"])?;
            req_str(message, path, "content")?;
        }
        "assistant" => {
            opt_str(message, path, &["name", "encryptedValue", "content"])?;
            if let Some(calls) = optional(message, path, "toolCalls")? {
                let path = path.key("toolCalls");
                for (i, call) in array(calls, &path)?.iter().enumerate() {
                    tool_call(call, &path.index(i))?;
                }
            }
        }
        "user" => {
            opt_str(message, path, &["name", "encryptedValue"])?;
            content(required(message, path, "content")?, &path.key("content"))?;
        }
        "tool" => {
            opt_str(message, path, &["error", "encryptedValue"])?;
            req_str(message, path, "toolCallId")?;
            content(required(message, path, "content")?, &path.key("content"))?;
        }
        "activity" => {
            req_str(message, path, "activityType")?;
            object(required(message, path, "content")?, &path.key("content"))?;
        }
        _ => {
            opt_str(message, path, &["encryptedValue"])?;
            req_str(message, path, "content")?;
        }
    }
    Ok(())
}

fn tool_call(value: &Value, path: &Path<'_>) -> Checked {
    let call = object(value, path)?;
    req_str(call, path, "id")?;
    literal(call, path, "type", "function")?;
    let function_path = path.key("function");
    let function = object(required(call, path, "function")?, &function_path)?;
    req_str(function, &function_path, "name")?;
    req_str(function, &function_path, "arguments")?;
    opt_str(call, path, &["encryptedValue"])?;
    opt_object(call, path, "metadata")
}

/// A message body: a string, or an array of content parts.
pub(crate) fn content(value: &Value, path: &Path<'_>) -> Checked {
    match value {
        Value::String(_) => Ok(()),
        Value::Array(parts) => content_parts(parts, path),
        other => Err(path.error(format!(
            "must be a string or an array of content parts, got {}",
            kind(other)
        ))),
    }
}

/// An array of content parts (text, image, audio, video, document).
pub(crate) fn content_parts(parts: &[Value], path: &Path<'_>) -> Checked {
    for (i, part) in parts.iter().enumerate() {
        let path = path.index(i);
        let part = object(part, &path)?;
        let kind = discriminant(
            part,
            &path,
            "type",
            &["text", "image", "audio", "video", "document"],
        )?;
        opt_str(part, &path, &["id"])?;
        optional(part, &path, "metadata")?;
        if kind == "text" {
            req_str(part, &path, "text")?;
            continue;
        }
        let source_path = path.key("source");
        let source = object(required(part, &path, "source")?, &source_path)?;
        let source_kind = discriminant(source, &source_path, "type", &["data", "url", "file"])?;
        req_str(source, &source_path, "value")?;
        match source_kind {
            "data" => {
                req_str(source, &source_path, "mimeType")?;
            }
            "url" => opt_str(source, &source_path, &["mimeType"])?,
            _ => opt_str(source, &source_path, &["provider", "mimeType"])?,
        }
    }
    Ok(())
}

/// RUN_STARTED `input`: a full run input (`RunAgentInput`).
pub(crate) fn run_input(value: &Value, member: &str) -> Checked {
    let path = Path::Member(member);
    let input = object(value, &path)?;
    req_str(input, &path, "threadId")?;
    req_str(input, &path, "runId")?;
    opt_str(input, &path, &["protocolVersion", "parentRunId"])?;
    let messages_path = path.key("messages");
    messages(
        array(required(input, &path, "messages")?, &messages_path)?,
        &messages_path,
    )?;
    // `state` may be null (read as absent); `forwardedProps` may not.
    optional(input, &path, "forwardedProps")?;
    if let Some(tools) = optional(input, &path, "tools")? {
        let path = path.key("tools");
        for (i, tool) in array(tools, &path)?.iter().enumerate() {
            let path = path.index(i);
            let tool = object(tool, &path)?;
            req_str(tool, &path, "name")?;
            req_str(tool, &path, "description")?;
            optional(tool, &path, "parameters")?;
            opt_object(tool, &path, "metadata")?;
        }
    }
    if let Some(context) = optional(input, &path, "context")? {
        let path = path.key("context");
        for (i, entry) in array(context, &path)?.iter().enumerate() {
            let path = path.index(i);
            let entry = object(entry, &path)?;
            req_str(entry, &path, "description")?;
            req_str(entry, &path, "value")?;
        }
    }
    if let Some(resume) = optional(input, &path, "resume")? {
        let path = path.key("resume");
        for (i, entry) in array(resume, &path)?.iter().enumerate() {
            let path = path.index(i);
            let entry = object(entry, &path)?;
            req_str(entry, &path, "interruptId")?;
            discriminant(entry, &path, "status", &["resolved", "cancelled"])?;
            optional(entry, &path, "payload")?;
            opt_object(entry, &path, "metadata")?;
        }
    }
    Ok(())
}

/// RUN_FINISHED `outcome`: success, interrupt or cancelled.
pub(crate) fn run_outcome(value: &Value, member: &str) -> Checked {
    let path = Path::Member(member);
    let outcome = object(value, &path)?;
    match discriminant(
        outcome,
        &path,
        "type",
        &["success", "interrupt", "cancelled"],
    )? {
        "success" => opt_strings(outcome, &path, "pendingToolCallIds"),
        "interrupt" => {
            let path = path.key("interrupts");
            let interrupts = array(
                required(outcome, &Path::Member(member), "interrupts")?,
                &path,
            )?;
            if interrupts.is_empty() {
                return Err(path.error("must hold at least one interrupt"));
            }
            for (i, interrupt) in interrupts.iter().enumerate() {
                let path = path.index(i);
                let interrupt = object(interrupt, &path)?;
                req_str(interrupt, &path, "id")?;
                req_str(interrupt, &path, "reason")?;
                opt_str(
                    interrupt,
                    &path,
                    &["message", "toolCallId", "expiresAt", "subagentRunId"],
                )?;
                opt_object(interrupt, &path, "responseSchema")?;
                opt_object(interrupt, &path, "metadata")?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// SUBAGENT_FINISHED `outcome`: success or suspended.
pub(crate) fn subagent_outcome(value: &Value, member: &str) -> Checked {
    let path = Path::Member(member);
    let outcome = object(value, &path)?;
    match discriminant(outcome, &path, "type", &["success", "suspended"])? {
        "suspended" => opt_strings(outcome, &path, "interruptIds"),
        _ => Ok(()),
    }
}

/// RUN_FINISHED and RUN_ERROR `usage`: token counts per provider and model.
pub(crate) fn usage(entries: &[Value], member: &str) -> Checked {
    let path = Path::Member(member);
    for (i, entry) in entries.iter().enumerate() {
        let path = path.index(i);
        let entry = object(entry, &path)?;
        opt_str(entry, &path, &["provider", "model"])?;
        for key in [
            "inputTokens",
            "outputTokens",
            "totalTokens",
            "reasoningTokens",
            "cachedInputTokens",
            "cacheWriteInputTokens",
        ] {
            if let Some(count) = optional(entry, &path, key)? {
                // By value, as the official schema checks it: `5.0` is a count too.
                let ok = count.as_u64().is_some_and(|n| n <= MAX_SAFE_INTEGER as u64)
                    || count.as_f64().is_some_and(|f| {
                        f.fract() == 0.0 && (0.0..=MAX_SAFE_INTEGER as f64).contains(&f)
                    });
                if !ok {
                    return Err(path.key(key).error(format!(
                        "must be an integer from 0 to 2^53 − 1, got {count}"
                    )));
                }
            }
        }
    }
    Ok(())
}
