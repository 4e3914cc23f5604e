//! The snapshot opening: what a connection receives first, so that the official client, which
//! validates each connection from zero, rebuilds the thread and accepts the live tail.

use std::ops::Range;

use super::fold::{State, ThreadRun};
use super::message::{write_str, write_value};
use super::open::LaneKind;

/// The AG-UI events of a snapshot opening, each compact JSON (no newline), in one buffer.
///
/// The caller sends each as an SSE `data:` frame, in order, then the live tail.
/// [`Opening::into_parts`] gives the buffer and the events' ranges, to cut frames from it
/// without copying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opening {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Opening {
    /// The number of events.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the opening has no event (a thread that never saw a run).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The byte range of each event in [`Opening::as_bytes`].
    pub fn ranges(&self) -> impl ExactSizeIterator<Item = Range<usize>> + '_ {
        self.ends.iter().enumerate().map(|(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            start..end
        })
    }

    /// The events, each as its JSON.
    pub fn events(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.ranges().map(|r| self.buf.get(r).unwrap_or_default())
    }

    /// The `i`-th event's JSON.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.ranges().nth(i).and_then(|r| self.buf.get(r))
    }

    /// Every event's JSON, back to back.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer and the events' ranges in it.
    pub fn into_parts(self) -> (bytes::Bytes, Vec<Range<usize>>) {
        let ranges = self.ranges().collect();
        (bytes::Bytes::from(self.buf), ranges)
    }

    /// The heap memory the opening holds, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() + self.ends.capacity() * std::mem::size_of::<usize>()
    }

    /// The events as SSE frames, `data: <json>\n\n` each (for tests and simple callers).
    pub fn to_sse(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len() + self.len() * 8);
        for event in self.events() {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(event);
            out.extend_from_slice(b"\n\n");
        }
        out
    }

    fn event(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.ends.push(self.buf.len());
    }
}

impl ThreadRun {
    /// The snapshot opening of this thread, for a connection that joins now.
    ///
    /// * No run seen: no event.
    /// * A run open: `RUN_STARTED`, a `SUBAGENT_STARTED` for each running subagent (parents
    ///   first), `MESSAGES_SNAPSHOT`, `STATE_SNAPSHOT` (unless the state is
    ///   untouched or unknown), then what is open re-opened with its ids: `STEP_STARTED`s,
    ///   `REASONING_START`s, `REASONING_MESSAGE_START`s, `TEXT_MESSAGE_START`s,
    ///   `TOOL_CALL_START`s, and last the chunk streams (`*_CHUNK` without a delta), since any
    ///   other event would close them.
    /// * The run ended: `RUN_STARTED`, the snapshots, then its `RUN_FINISHED` or `RUN_ERROR`.
    /// * A run that cannot be rebuilt ([`ThreadRun::run_unknown`]): a `RUN_ERROR` with the code
    ///   [`RUN_UNKNOWN_CODE`](super::RUN_UNKNOWN_CODE), alone.
    pub fn opening(&self) -> Opening {
        let mut o = Opening::default();
        if self.run_unknown {
            // The one event besides `RUN_STARTED` that the client accepts first: it fails the
            // run it cannot be given, and accepts the next `RUN_STARTED` after it, and nothing
            // else (the connection is not sent the rest of the run: `holds_back_until`).
            // Folded back (a backplane's snapshot), it marks the run unknown again.
            o.event(|buf| {
                buf.extend_from_slice(br#"{"type":"RUN_ERROR","message":"#);
                write_str(
                    buf,
                    "this run began before what the server holds of the thread (it was \
                     forgotten, or its start never reached the server): it cannot be rebuilt; \
                     the thread's next run opens whole",
                );
                buf.extend_from_slice(br#","code":"#);
                write_str(buf, super::RUN_UNKNOWN_CODE);
                buf.push(b'}');
            });
            return o;
        }
        let Some(run) = &self.run else { return o };
        o.buf.reserve_exact(self.bytes() + 512);
        o.ends.reserve_exact(3 + self.open_count());

        // RUN_STARTED as published, but for its input's messages, which the fold keeps only
        // as the thread's messages (`messages: []` here): the MESSAGES_SNAPSHOT that follows
        // carries them, in the client's order, and the client ends with the same messages
        // whether the input repeats them or not (it appends the input's missing messages, and
        // the snapshot appends its missing ones in its order, where the input's come first).
        // Without its input at all once the byte cap trimmed it.
        o.event(|buf| write_value(buf, &run.started));

        // The running subagents, parents first, right after the run's start: the client
        // refuses the end of a subagent (and a child naming a parent) it did not see start.
        // (A run's end clears what is open, these included.)
        for subagent in &self.open.subagents {
            o.event(|buf| buf.extend_from_slice(&subagent.event));
        }

        o.event(|buf| {
            buf.extend_from_slice(br#"{"type":"MESSAGES_SNAPSHOT","messages":["#);
            for (i, m) in self.messages.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                m.write(buf);
            }
            buf.extend_from_slice(b"]}");
        });

        if let State::Known(state) = &self.state {
            o.event(|buf| {
                buf.extend_from_slice(br#"{"type":"STATE_SNAPSHOT","snapshot":"#);
                write_value(buf, state);
                buf.push(b'}');
            });
        }

        if let Some(ended) = &run.ended {
            o.event(|buf| write_value(buf, ended));
        } else {
            let open = &self.open;
            for opener in open
                .steps
                .iter()
                .chain(&open.reasoning_spans)
                .chain(&open.reasoning_messages)
                .chain(&open.texts)
                .chain(&open.tool_calls)
            {
                o.event(|buf| buf.extend_from_slice(&opener.event));
            }
            for lane in &open.lanes {
                o.event(|buf| {
                    let (ty, id_key) = match lane.kind {
                        LaneKind::Text => ("TEXT_MESSAGE_CHUNK", "messageId"),
                        LaneKind::Tool => ("TOOL_CALL_CHUNK", "toolCallId"),
                        LaneKind::Reasoning => ("REASONING_MESSAGE_CHUNK", "messageId"),
                    };
                    buf.extend_from_slice(br#"{"type":"#);
                    write_str(buf, ty);
                    let mut member = |k: &str, v: &Option<String>| {
                        if let Some(v) = v {
                            buf.push(b',');
                            write_str(buf, k);
                            buf.push(b':');
                            write_str(buf, v);
                        }
                    };
                    member(id_key, &Some(lane.id.clone()));
                    match lane.kind {
                        LaneKind::Text => {
                            member("role", &lane.role);
                            member("name", &lane.name);
                        }
                        LaneKind::Tool => {
                            member("toolCallName", &lane.name);
                            member("parentMessageId", &lane.parent);
                        }
                        LaneKind::Reasoning => {}
                    }
                    member("subagentRunId", &lane.owner);
                    buf.push(b'}');
                });
            }
        }
        if o.buf.capacity() > o.buf.len() + 4096 {
            o.buf.shrink_to_fit();
        }
        o
    }

    fn open_count(&self) -> usize {
        let open = &self.open;
        open.subagents.len()
            + open.steps.len()
            + open.reasoning_spans.len()
            + open.reasoning_messages.len()
            + open.texts.len()
            + open.tool_calls.len()
            + open.lanes.len()
    }
}
