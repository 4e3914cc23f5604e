//! Turning an event into its frame, once.
//!
//! An event becomes a [`Payload`]: its `event:` line (if it has a name) and its `data:` lines,
//! encoded once per publish. The channel then appends the event's `id:` line and shares the
//! finished frame, as [`Bytes`](bytes::Bytes), with every receiver: fan-out costs a reference
//! count, never a serialisation or a copy.
//!
//! [`ToSse`] says how an event is encoded. Every `serde::Serialize` type implements it already
//! (compact JSON data, no event name, the shape of the replaced crate's frames); [`Named`] adds an
//! SSE event name to one, and a type of your own can implement [`ToSse`] by hand.
//!
//! The JSON is serde_json's, byte for byte. Strings that need no escape, most of an agent's
//! text, skip serde_json's byte-by-byte escaping: they are checked sixteen bytes at a time and
//! written as they are, which makes a typical AG-UI publish about a quarter cheaper.

use serde::Serialize;

use crate::error::{EncodeError, PublishError};
use crate::event_id::EventId;
use crate::wire::{check_event_name, data_of, write_data_line, write_data_lines};

/// An event that knows its SSE encoding: an optional event name and its data.
///
/// Implemented for every [`Serialize`] type as compact JSON with no name, so clients dispatch on
/// the JSON itself (`"type": "TEXT_MESSAGE_CONTENT"`), as with the replaced crate.
pub trait ToSse {
    /// The SSE `event:` name; `None` (the default) means clients receive a `message` event.
    fn event_name(&self) -> Option<&str> {
        None
    }

    /// Writes the event's data, UTF-8 text of any shape: line breaks are encoded as the standard
    /// requires.
    fn write_data(&self, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Whether [`write_data`](Self::write_data) writes nothing but UTF-8 by construction, so
    /// that the publish need not check it. `false` (the default): the data is checked, and
    /// data that is not UTF-8 is refused with [`PublishError::NotUtf8`]. serde_json's output
    /// is, so the `Serialize` implementation says `true`.
    fn writes_utf8(&self) -> bool {
        false
    }
}

impl<T: Serialize + ?Sized> ToSse for T {
    fn write_data(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        crate::json::to_writer(out, self).map_err(Into::into)
    }

    fn writes_utf8(&self) -> bool {
        true
    }
}

/// A serde event sent under an SSE event name, for clients that listen with
/// `addEventListener(name, ...)`.
///
/// ```
/// use sse_hub::{Named, Payload};
///
/// let payload = Payload::encode(&Named::new("price", &serde_json::json!({"eur": 3})))?;
/// assert_eq!(payload.as_bytes(), b"event: price\ndata: {\"eur\":3}\n");
/// # Ok::<(), sse_hub::PublishError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Named<T> {
    name: std::borrow::Cow<'static, str>,
    event: T,
}

impl<T> Named<T> {
    /// Sends `event` under `name`. A name holding CR, LF or NUL is refused when published.
    pub fn new(name: impl Into<std::borrow::Cow<'static, str>>, event: T) -> Self {
        Self {
            name: name.into(),
            event,
        }
    }

    /// The wrapped event.
    pub fn event(&self) -> &T {
        &self.event
    }
}

impl<T: Serialize> ToSse for Named<T> {
    fn event_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn write_data(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.event.write_data(out)
    }

    fn writes_utf8(&self) -> bool {
        true
    }
}

/// An event encoded once: its `event:` and `data:` lines, waiting for the `id:` line that the
/// channel assigns when it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    head: Vec<u8>,
}

/// Room for `id: {20 digits}-{20 digits}\n\n`, so appending the id never reallocates.
const ID_LINE_RESERVE: usize = 48;

impl Payload {
    /// Encodes an event.
    pub fn encode<E: ToSse + ?Sized>(event: &E) -> Result<Self, PublishError> {
        Self::build(event.event_name(), event.writes_utf8(), |out| {
            event.write_data(out)
        })
    }

    /// Encodes data given as text, under an optional event name.
    pub fn from_text(event_name: Option<&str>, data: &str) -> Result<Self, PublishError> {
        Self::build(event_name, true, |out| {
            out.extend_from_slice(data.as_bytes());
            Ok(())
        })
    }

    /// Encodes `write`'s output as data.
    ///
    /// The data is written into a scratch buffer kept per thread, checked (UTF-8 unless the
    /// writer guarantees it, `utf8`, and a fast scan for line breaks, which serde_json's compact
    /// output never holds), and copied once into a frame allocated at its exact size plus room
    /// for the id line: one allocation per frame, and the bytes the window accounts are the
    /// bytes the frame holds.
    pub(crate) fn build(
        event_name: Option<&str>,
        utf8: bool,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<Self, PublishError> {
        if let Some(name) = event_name {
            check_event_name(name)?;
        }
        with_scratch(|data| {
            write(data).map_err(PublishError::Encode)?;
            if !utf8 && std::str::from_utf8(data).is_err() {
                return Err(PublishError::NotUtf8);
            }
            let name_len = event_name.map_or(0, |name| name.len() + 8);
            let mut head = Vec::with_capacity(name_len + data.len() + 8 + ID_LINE_RESERVE);
            if let Some(name) = event_name {
                crate::wire::write_field(&mut head, "event", name);
            }
            if memchr::memchr2(b'\r', b'\n', data).is_some() {
                write_data_lines(&mut head, data);
            } else {
                write_data_line(&mut head, data);
            }
            Ok(Self { head })
        })
    }

    /// The encoded `event:` and `data:` lines.
    pub fn as_bytes(&self) -> &[u8] {
        &self.head
    }

    /// The event's data, as the client's parser reassembles it: the `data:` lines' values joined
    /// by line feeds. Borrowed when the data is one line, as compact JSON always is.
    pub fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        // The common case, an unnamed event of one line, found with one vectorised search.
        if let Some(line) = self.head.strip_prefix(b"data: ")
            && memchr::memchr(b'\n', line) == Some(line.len() - 1)
        {
            return std::borrow::Cow::Borrowed(&line[..line.len() - 1]);
        }
        data_of(&self.head)
    }

    /// The size of the frame once its id line is added, at most.
    pub fn frame_len(&self) -> usize {
        self.head.len() + ID_LINE_RESERVE
    }

    /// Finishes the frame with its id line and the blank line that dispatches it.
    pub(crate) fn finish(mut self, id: EventId) -> bytes::Bytes {
        with_id_prefix(id.epoch(), |prefix| self.head.extend_from_slice(prefix));
        self.head
            .extend_from_slice(itoa::Buffer::new().format(id.seq()).as_bytes());
        self.head.extend_from_slice(b"\n\n");
        bytes::Bytes::from(self.head)
    }
}

/// Runs `f` with `id: {epoch}-`, the start of the id line, formatted once per run of publishes
/// of this thread to one channel: an epoch is 20 digits at most, and formatting it on every
/// publish was a tenth of a publish's own instructions. (Kept per thread rather than per
/// channel, where it would cost every user 32 bytes and a cache line.)
fn with_id_prefix(epoch: u64, f: impl FnOnce(&[u8])) {
    struct Prefix {
        epoch: Option<u64>,
        len: usize,
        bytes: [u8; 25],
    }
    thread_local! {
        static LAST: std::cell::RefCell<Prefix> =
            const { std::cell::RefCell::new(Prefix { epoch: None, len: 0, bytes: [0; 25] }) };
    }
    LAST.with_borrow_mut(|last| {
        if last.epoch != Some(epoch) {
            last.len = 0;
            for part in [b"id: ", itoa::Buffer::new().format(epoch).as_bytes(), b"-"] {
                last.bytes[last.len..last.len + part.len()].copy_from_slice(part);
                last.len += part.len();
            }
            last.epoch = Some(epoch);
        }
        f(&last.bytes[..last.len]);
    });
}

/// Scratch buffers above this size are not kept for the next event.
const SCRATCH_KEEP: usize = 64 * 1024;

/// Runs `f` with this thread's empty scratch buffer, or a fresh one if it is in use (an encoder
/// that publishes while encoding).
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let result = f(&mut scratch);
            if scratch.capacity() > SCRATCH_KEEP {
                *scratch = Vec::new();
            }
            result
        }
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_line_is_the_events_whichever_epoch_came_before() {
        let finish = |epoch, seq| {
            let frame = Payload::from_text(None, "x")
                .unwrap()
                .finish(EventId::new(epoch, seq));
            String::from_utf8(frame.to_vec()).unwrap()
        };
        assert_eq!(
            finish(u64::MAX, 1),
            format!("data: x\nid: {}-1\n\n", u64::MAX)
        );
        assert_eq!(
            finish(u64::MAX, 2),
            format!("data: x\nid: {}-2\n\n", u64::MAX)
        );
        assert_eq!(
            finish(7, u64::MAX),
            format!("data: x\nid: 7-{}\n\n", u64::MAX)
        );
        assert_eq!(finish(0, 3), "data: x\nid: 0-3\n\n");
        assert_eq!(
            finish(u64::MAX, 4),
            format!("data: x\nid: {}-4\n\n", u64::MAX)
        );
    }

    #[test]
    fn data_is_what_a_client_reassembles() {
        let one = Payload::from_text(None, "{\"a\":1}").unwrap();
        assert_eq!(&*one.data(), b"{\"a\":1}");
        let named = Payload::from_text(Some("x"), "two\nlines").unwrap();
        assert_eq!(&*named.data(), b"two\nlines");
        let empty = Payload::from_text(None, "").unwrap();
        assert_eq!(&*empty.data(), b"");
    }

    #[test]
    fn serde_events_are_compact_json_data() {
        let payload = Payload::encode(&serde_json::json!({"type": "X", "text": "a\nb"})).unwrap();
        assert_eq!(
            payload.as_bytes(),
            b"data: {\"text\":\"a\\nb\",\"type\":\"X\"}\n"
        );
    }

    #[test]
    fn text_with_breaks_is_split() {
        let payload = Payload::from_text(None, "a\r\nb").unwrap();
        assert_eq!(payload.as_bytes(), b"data: a\ndata: b\n");
    }

    #[test]
    fn bad_names_and_bad_bytes_are_errors() {
        assert!(matches!(
            Payload::from_text(Some("a\nb"), "x"),
            Err(PublishError::Frame(_))
        ));
        assert!(matches!(
            Payload::build(None, false, |out| {
                out.push(0xff);
                Ok(())
            }),
            Err(PublishError::NotUtf8)
        ));
        // A writer that does not promise UTF-8 is checked.
        struct Raw;
        impl ToSse for Raw {
            fn write_data(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
                out.extend_from_slice(b"ok \xff");
                Ok(())
            }
        }
        assert!(matches!(Payload::encode(&Raw), Err(PublishError::NotUtf8)));
    }
}
