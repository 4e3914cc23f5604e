//! What the Redis backplane says to Redis and reads back, with no I/O (the Lua scripts are in
//! the sibling `scripts`): the key and
//! feed names, the messages on a feed, the replies, the server version, and the planning of
//! `SUBSCRIBE`/`UNSUBSCRIBE` batches. Unit-tested here; the tasks in the sibling modules do the
//! I/O.
//!
//! Names: a user's *feed* is the Redis pub/sub channel that carries the user's finished frames
//! on one event channel; "channel" is kept for the crate's named event channels
//! ([`Config::name`](crate::Config::name)).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

use crate::backplane::{History, ThreadHistory, ThreadSnapshot};
use crate::event_id::EventId;
use crate::stats::{Delivery, Published};
use crate::thread::ThreadId;
use crate::user_id::UserId;

/// The oldest Redis that keeps the guarantees: 7.0 added the stream's `max-deleted-entry-id`,
/// without which an expired resume cannot be told from a valid one.
pub(crate) const MIN_VERSION: (u64, u64) = (7, 0);

/// Feeds per `SUBSCRIBE` or `UNSUBSCRIBE` command, and publishes per pipeline.
pub(crate) const BATCH: usize = 256;

/// The keys of a (channel, user): the history, the publish marks, and the feed.
pub(crate) struct Keys {
    pub(crate) history: String,
    pub(crate) marks: String,
    pub(crate) feed: String,
}

pub(crate) fn keys(prefix: &str, channel: &str, user: &UserId) -> Keys {
    Keys {
        history: format!("{prefix}:{channel}:{user}"),
        marks: format!("{prefix}:marks:{channel}:{user}"),
        feed: format!("{prefix}:live:{channel}:{user}"),
    }
}

/// The thread keys of a (channel, user): the thread snapshots (a hash: `s:<thread>` → the
/// snapshot, `n:<thread>` → the events published into it) and the threads' recency (a sorted
/// set: thread → the time of its last event, in ms).
pub(crate) fn thread_keys(prefix: &str, channel: &str, user: &UserId) -> (String, String) {
    (
        format!("{prefix}:threads:{channel}:{user}"),
        format!("{prefix}:thread-age:{channel}:{user}"),
    )
}

/// A thread snapshot as stored: `<covers> <count>\n` and the opening.
pub(crate) fn snapshot_blob(snapshot: &ThreadSnapshot) -> Vec<u8> {
    let mut blob = format!("{} {}\n", snapshot.covers, snapshot.count).into_bytes();
    blob.extend_from_slice(&snapshot.opening);
    blob
}

fn parse_snapshot(blob: &[u8]) -> Option<ThreadSnapshot> {
    let newline = memchr::memchr(b'\n', blob)?;
    let first = std::str::from_utf8(&blob[..newline]).ok()?;
    let (covers, count) = first.split_once(' ')?;
    Some(ThreadSnapshot {
        covers: EventId::parse(covers)?,
        count: count.parse().ok()?,
        opening: Bytes::copy_from_slice(&blob[newline + 1..]),
        from_before_loss: false,
    })
}

/// What came on a feed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// An event: the publish token (`node:counter`), the finished frame, and the thread it was
    /// published into with its ordinal there, if any.
    Event {
        token: Bytes,
        frame: Bytes,
        thread: Option<(ThreadId, u64)>,
    },
    /// `disconnect_user` on another node: end the local streams of the user.
    Disconnect { origin: Bytes },
}

/// The feed message that ends a user's streams on every node but `origin`.
pub(crate) fn disconnect_message(origin: &str) -> String {
    format!("!disconnect {origin}\n")
}

pub(crate) fn parse_message(payload: Bytes) -> Option<Message> {
    let newline = memchr::memchr(b'\n', &payload)?;
    let first = payload.slice(..newline);
    if let Some(origin) = first.strip_prefix(b"!disconnect ") {
        let origin = first.slice_ref(origin);
        return Some(Message::Disconnect { origin });
    }
    // `token` alone, or `token ordinal length` followed by the thread's name.
    let Some(space) = memchr::memchr(b' ', &first) else {
        return Some(Message::Event {
            token: first,
            frame: payload.slice(newline + 1..),
            thread: None,
        });
    };
    let meta = std::str::from_utf8(&first[space + 1..]).ok()?;
    let (ordinal, len) = meta.split_once(' ')?;
    let (ordinal, len): (u64, usize) = (ordinal.parse().ok()?, len.parse().ok()?);
    let start = newline + 1;
    let name = payload.get(start..start.checked_add(len)?)?;
    let thread = ThreadId::from_bytes(name).ok()?;
    Some(Message::Event {
        token: first.slice(..space),
        frame: payload.slice(start + len..),
        thread: Some((thread, ordinal)),
    })
}

fn parse_id(value: &Value) -> Option<EventId> {
    match value {
        Value::BulkString(bytes) => EventId::parse(std::str::from_utf8(bytes).ok()?),
        Value::SimpleString(text) => EventId::parse(text),
        _ => None,
    }
}

/// The publish script's reply.
pub(crate) fn parse_published(value: Value) -> Option<Published> {
    let nodes = |n: &Value| match n {
        Value::Int(n) => Some(Delivery::Nodes(usize::try_from(*n).unwrap_or(0))),
        _ => None,
    };
    match value {
        Value::Nil | Value::Boolean(false) => Some(Published {
            id: None,
            delivery: Delivery::Nodes(0),
        }),
        Value::Array(items) => match items.as_slice() {
            [id, n] => Some(Published {
                id: Some(parse_id(id)?),
                delivery: nodes(n)?,
            }),
            // Ran before: the id, or none if the history no longer holds it.
            [id, n, Value::Int(1)] => Some(Published {
                id: parse_id(id),
                delivery: nodes(n)?,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// The catch-up script's reply.
pub(crate) fn parse_history(value: Value) -> Option<History> {
    let Value::Array(items) = value else {
        return None;
    };
    let [last, deleted, Value::Array(entries)] = <[Value; 3]>::try_from(items).ok()? else {
        return None;
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(entry) = entry else {
            return None;
        };
        let [id, Value::Array(fields)] = <[Value; 2]>::try_from(entry).ok()? else {
            return None;
        };
        // `f` head `t` token, and `h` thread for an event published into one.
        let mut fields = fields.into_iter();
        let Some(Value::BulkString(head)) = fields.nth(1) else {
            return None;
        };
        let thread = match (fields.nth(2), fields.next()) {
            (Some(Value::BulkString(key)), Some(Value::BulkString(name))) if key == b"h" => {
                Some(ThreadId::from_bytes(&name).ok()?)
            }
            _ => None,
        };
        let Value::BulkString(id_text) = &id else {
            return None;
        };
        let mut frame = head;
        frame.reserve_exact(id_text.len() + 6);
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(id_text);
        frame.extend_from_slice(b"\n\n");
        events.push((parse_id(&id)?, Bytes::from(frame), thread));
    }
    Some(History {
        last_id: parse_id(&last)?,
        deleted_through: parse_id(&deleted)?,
        events,
    })
}

/// A `{id, head}` entry as a finished frame.
fn entry_frame(id: &Value, head: Vec<u8>) -> Option<(EventId, Bytes)> {
    let Value::BulkString(id_text) = id else {
        return None;
    };
    let mut frame = head;
    frame.reserve_exact(id_text.len() + 6);
    frame.extend_from_slice(b"id: ");
    frame.extend_from_slice(id_text);
    frame.extend_from_slice(b"\n\n");
    Some((parse_id(id)?, Bytes::from(frame)))
}

/// The thread catch-up script's reply: the read, and the generation marker it was read under.
pub(crate) fn parse_thread_history(value: Value) -> Option<(ThreadHistory, String)> {
    let Value::Array(items) = value else {
        return None;
    };
    let [
        last,
        Value::Int(count),
        snapshot,
        Value::Array(entries),
        Value::BulkString(marker),
        Value::Int(before),
    ] = <[Value; 6]>::try_from(items).ok()?
    else {
        return None;
    };
    let snapshot = match snapshot {
        Value::BulkString(blob) if blob.is_empty() => None,
        Value::BulkString(blob) => Some(ThreadSnapshot {
            from_before_loss: before == 1,
            ..parse_snapshot(&blob)?
        }),
        _ => return None,
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(entry) = entry else {
            return None;
        };
        let [id, Value::BulkString(head)] = <[Value; 2]>::try_from(entry).ok()? else {
            return None;
        };
        events.push(entry_frame(&id, head)?);
    }
    let read = ThreadHistory {
        last_id: parse_id(&last)?,
        count: u64::try_from(count).ok()?,
        snapshot,
        events,
    };
    Some((read, String::from_utf8(marker).ok()?))
}

/// The `redis_version` of an `INFO server` reply, as (major, minor) and as written.
pub(crate) fn parse_version(info: &str) -> Option<((u64, u64), String)> {
    let line = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))?
        .trim();
    let mut parts = line.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some(((major, minor), line.to_owned()))
}

/// The `maxmemory_policy` of an `INFO memory` reply.
pub(crate) fn parse_eviction_policy(info: &str) -> Option<String> {
    let policy = info
        .lines()
        .find_map(|line| line.strip_prefix("maxmemory_policy:"))?;
    Some(policy.trim().to_owned())
}

/// Feed names.
pub(crate) type Feeds = Vec<Arc<str>>;

/// One reconciliation step: the next `BATCH` dirty feeds, and of those the ones to subscribe
/// (wanted, not subscribed) and to unsubscribe (subscribed, no longer wanted). The caller
/// removes `batch` from the dirty set, and `unsubscribe` from the subscribed set.
pub(crate) struct Plan {
    pub(crate) batch: Feeds,
    pub(crate) subscribe: Feeds,
    pub(crate) unsubscribe: Feeds,
}

pub(crate) fn plan_reconcile(
    dirty: &HashSet<Arc<str>>,
    is_wanted: impl Fn(&str) -> bool,
    subscribed: &HashSet<Arc<str>>,
) -> Plan {
    let batch: Feeds = dirty.iter().take(BATCH).cloned().collect();
    let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
    for feed in &batch {
        match (is_wanted(feed), subscribed.contains(feed)) {
            (true, false) => subscribe.push(feed.clone()),
            (false, true) => unsubscribe.push(feed.clone()),
            _ => {}
        }
    }
    Plan {
        batch,
        subscribe,
        unsubscribe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn publish_replies() {
        assert_eq!(
            parse_published(Value::Array(vec![bulk("5-1"), Value::Int(2)])),
            Some(Published {
                id: Some(EventId::new(5, 1)),
                delivery: Delivery::Nodes(2)
            })
        );
        assert_eq!(
            parse_published(Value::Nil).map(|p| p.id),
            Some(None),
            "nothing stored"
        );
        let again = parse_published(Value::Array(vec![bulk(""), Value::Int(1), Value::Int(1)]));
        assert_eq!(again.map(|p| p.id), Some(None));
        assert_eq!(parse_published(Value::Array(vec![bulk("x")])), None);
    }

    #[test]
    fn history_replies_become_frames_with_their_id_line() {
        let entry = Value::Array(vec![
            bulk("7-0"),
            Value::Array(vec![bulk("f"), bulk("data: 1\n"), bulk("t"), bulk("n:1")]),
        ]);
        let history = parse_history(Value::Array(vec![
            bulk("7-0"),
            bulk("3-0"),
            Value::Array(vec![entry]),
        ]))
        .unwrap();
        assert_eq!(history.last_id, EventId::new(7, 0));
        assert_eq!(history.deleted_through, EventId::new(3, 0));
        assert_eq!(
            history.events[0].1,
            Bytes::from_static(b"data: 1\nid: 7-0\n\n")
        );
        assert_eq!(history.events[0].2, None);
        assert!(parse_history(Value::Array(vec![bulk("7-0")])).is_none());
    }

    #[test]
    fn feed_messages() {
        let message = parse_message(Bytes::from_static(b"ab:3\ndata: x\nid: 1-0\n\n")).unwrap();
        assert_eq!(
            message,
            Message::Event {
                token: Bytes::from_static(b"ab:3"),
                frame: Bytes::from_static(b"data: x\nid: 1-0\n\n"),
                thread: None,
            }
        );
        let message =
            parse_message(Bytes::from_static(b"ab:4 7 5\nt 1\n2data: x\nid: 1-1\n\n")).unwrap();
        assert_eq!(
            message,
            Message::Event {
                token: Bytes::from_static(b"ab:4"),
                frame: Bytes::from_static(b"data: x\nid: 1-1\n\n"),
                thread: Some((ThreadId::new("t 1\n2").unwrap(), 7)),
            }
        );
        assert_eq!(parse_message(Bytes::from_static(b"ab:4 7 99\nshort")), None);
        let message = parse_message(Bytes::from(disconnect_message("n1"))).unwrap();
        assert_eq!(
            message,
            Message::Disconnect {
                origin: Bytes::from_static(b"n1")
            }
        );
        assert_eq!(parse_message(Bytes::from_static(b"no newline")), None);
    }

    #[test]
    fn server_versions() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(parse_version(info), Some(((7, 0), "7.0.15".to_owned())));
        assert!(parse_version("redis_version:6.2.14\r\n").unwrap().0 < MIN_VERSION);
        assert!(parse_version("redis_version:7.4.1").unwrap().0 >= MIN_VERSION);
        assert_eq!(parse_version("nothing"), None);
        let memory = "# Memory\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(
            parse_eviction_policy(memory).as_deref(),
            Some("allkeys-lru")
        );
        assert_eq!(parse_eviction_policy("nothing"), None);
    }

    #[test]
    fn reconcile_plans_only_what_changed() {
        let feed = |s: &str| -> Arc<str> { s.into() };
        let dirty: HashSet<Arc<str>> = [feed("a"), feed("b"), feed("c")].into();
        let subscribed: HashSet<Arc<str>> = [feed("b"), feed("c")].into();
        let plan = plan_reconcile(&dirty, |f| f == "a" || f == "c", &subscribed);
        assert_eq!(plan.batch.len(), 3);
        assert_eq!(plan.subscribe, [feed("a")]);
        assert_eq!(plan.unsubscribe, [feed("b")]);
        let many: HashSet<Arc<str>> = (0..1000).map(|i| feed(&i.to_string())).collect();
        let plan = plan_reconcile(&many, |_| true, &HashSet::new());
        assert_eq!((plan.batch.len(), plan.subscribe.len()), (BATCH, BATCH));
    }
}
