//! Server-Sent Events frames, encoded exactly as the WHATWG HTML standard reads them.
//!
//! sse-hub writes its frames itself rather than through `axum::response::sse::Event`: axum's
//! builder panics on a bad `id` or `event` value, splits a CRLF into two line breaks, and copies
//! its buffer on every clone. Here a frame is encoded once into [`Bytes`] and shared by every
//! receiver.
//!
//! The rules this encoder keeps (section "Server-sent events" of the HTML standard):
//!
//! * Lines end with LF only; a bare CR is never emitted, since a client reads it as a line
//!   break.
//! * `data` is split into one `data:` line per line, where CRLF, LF and a lone CR each count as
//!   one break. A client joins the lines with LF and drops the final LF, so data that ends with
//!   a line break gets an empty last `data:` line and keeps its break; empty data is one empty
//!   `data:` line and still dispatches an event.
//! * `id` and `event` values cannot hold CR or LF (they would end the line), and a client ignores
//!   an `id` that holds NUL; such values are a [`FrameError`], never a panic or a broken frame.
//!   The same goes for a comment with a line break in it.
//! * `retry` is written as ASCII digits: the client's reconnection delay in milliseconds.
//! * Every field is written as `name: value`; the client strips exactly one space after the
//!   colon, so a value that starts with a space keeps it.
//!
//! A frame with neither `data` nor `event` dispatches nothing at the client, but its `id` still
//! becomes the client's last event id ("priming") and its `retry` still sets the delay.

use std::time::Duration;

use bytes::Bytes;

use crate::error::FrameError;
use crate::event_id::EventId;

/// A frame to encode: any combination of comment, `event`, `id`, `retry` and `data`.
///
/// ```
/// use sse_hub::SseFrame;
///
/// let frame = SseFrame::new().event("greeting").id("7").data("hello\nworld").encode()?;
/// assert_eq!(&frame[..], b"event: greeting\nid: 7\ndata: hello\ndata: world\n\n");
/// # Ok::<(), sse_hub::FrameError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SseFrame<'a> {
    comment: Option<&'a str>,
    event: Option<&'a str>,
    id: Option<&'a str>,
    retry: Option<Duration>,
    data: Option<&'a str>,
}

impl<'a> SseFrame<'a> {
    /// An empty frame; encoding it alone gives the lone blank line.
    pub fn new() -> Self {
        Self::default()
    }

    /// A comment line (`: text`), ignored by clients: heartbeats and padding.
    pub fn comment(mut self, text: &'a str) -> Self {
        self.comment = Some(text);
        self
    }

    /// The event type; clients without a listener for it never see the event.
    pub fn event(mut self, name: &'a str) -> Self {
        self.event = Some(name);
        self
    }

    /// The event id, which the client sends back as `Last-Event-ID` when it reconnects. An empty
    /// id resets the client's last event id.
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// The client's reconnection delay, written in whole milliseconds.
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }

    /// The event data, any text; line breaks of every kind are kept exactly.
    pub fn data(mut self, data: &'a str) -> Self {
        self.data = Some(data);
        self
    }

    /// Encodes the frame, or says which field cannot be put on the wire.
    pub fn encode(&self) -> Result<Bytes, FrameError> {
        let mut out = Vec::with_capacity(self.data.map_or(0, str::len) + 64);
        self.encode_into(&mut out)?;
        Ok(Bytes::from(out))
    }

    /// Appends the encoded frame to `out`; on error `out` is left as it was.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        if let Some(text) = self.comment {
            check_single_line(text).map_err(|_| FrameError::Comment)?;
        }
        if let Some(name) = self.event {
            check_event_name(name)?;
        }
        if let Some(id) = self.id {
            check_id(id)?;
        }
        if let Some(text) = self.comment {
            write_field(out, "", text);
        }
        if let Some(name) = self.event {
            write_field(out, "event", name);
        }
        if let Some(id) = self.id {
            write_field(out, "id", id);
        }
        if let Some(delay) = self.retry {
            write_field(out, "retry", &delay.as_millis().to_string());
        }
        if let Some(data) = self.data {
            write_data_lines(out, data.as_bytes());
        }
        out.push(b'\n');
        Ok(())
    }
}

/// Checks an `event` value: no CR or LF (they would end the line) and no NUL.
pub(crate) fn check_event_name(name: &str) -> Result<(), FrameError> {
    check_single_line(name).map_err(|_| FrameError::EventName)
}

/// Checks an `id` value: no CR or LF, and no NUL (clients ignore such an id).
pub(crate) fn check_id(id: &str) -> Result<(), FrameError> {
    check_single_line(id).map_err(|_| FrameError::Id)
}

fn check_single_line(value: &str) -> Result<(), ()> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        Err(())
    } else {
        Ok(())
    }
}

/// Writes `name: value\n`; a comment is the field with the empty name.
pub(crate) fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// Writes `data` as one `data:` line per line, where CRLF, LF and a lone CR are each one break.
pub(crate) fn write_data_lines(out: &mut Vec<u8>, data: &[u8]) {
    let mut rest = data;
    loop {
        let Some(at) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            write_data_line(out, rest);
            return;
        };
        write_data_line(out, &rest[..at]);
        let crlf = rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n');
        rest = &rest[at + if crlf { 2 } else { 1 }..];
    }
}

pub(crate) fn write_data_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// The data of encoded SSE lines (a payload, or a finished frame), as a client reassembles it:
/// the `data:` lines' values joined by line feeds. Borrowed when there is one `data:` line.
pub(crate) fn data_of(lines: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let mut values = lines
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "));
    let Some(first) = values.next() else {
        return Cow::Borrowed(&[]);
    };
    let Some(second) = values.next() else {
        return Cow::Borrowed(first);
    };
    let mut joined = [first, second].join(&b'\n');
    for value in values {
        joined.push(b'\n');
        joined.extend_from_slice(value);
    }
    Cow::Owned(joined)
}

/// The id on a finished frame's last line, `id: <id>`, if it has one.
pub(crate) fn frame_id(frame: &[u8]) -> Option<EventId> {
    let body = frame.strip_suffix(b"\n\n")?;
    let start = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let id = body[start..].strip_prefix(b"id: ")?;
    EventId::parse(std::str::from_utf8(id).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_frame(data: &str) -> String {
        String::from_utf8(SseFrame::new().data(data).encode().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn every_kind_of_line_break_is_one_break() {
        assert_eq!(
            data_frame("a\r\nb\rc\nd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn trailing_and_empty_data_survive() {
        assert_eq!(data_frame("a\n"), "data: a\ndata: \n\n");
        assert_eq!(data_frame(""), "data: \n\n");
        assert_eq!(data_frame("\r\n"), "data: \ndata: \n\n");
    }

    #[test]
    fn bad_fields_are_errors_and_leave_the_buffer_alone() {
        let mut out = b"kept".to_vec();
        for frame in [
            SseFrame::new().id("a\nb"),
            SseFrame::new().id("a\0b"),
            SseFrame::new().event("a\rb"),
            SseFrame::new().comment("a\nb"),
        ] {
            assert!(frame.data("x").encode_into(&mut out).is_err());
        }
        assert_eq!(out, b"kept");
    }

    #[test]
    fn retry_and_comment() {
        let frame = SseFrame::new()
            .comment("hi")
            .retry(Duration::from_millis(1500))
            .encode();
        assert_eq!(&frame.unwrap()[..], b": hi\nretry: 1500\n\n");
    }
}
