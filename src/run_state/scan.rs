//! The fast path: the streaming event types (token deltas) read straight from their bytes.
//!
//! A `TEXT_MESSAGE_CONTENT` is a small flat object such as
//! `{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hello"}`. Building a
//! `serde_json::Value` for it would cost more than the publish itself, so this scanner walks the
//! object once and hands out the string members as slices of the input. The `delta` is kept
//! *escaped* (the text between its quotes, exactly as it was written): escaped JSON string
//! contents concatenate into escaped JSON string contents, so the fold appends it as is and the
//! opening copies the assembled text without escaping it again.
//!
//! The scanner only accepts what it fully understands: string members, plus a numeric
//! `timestamp`. Anything else (an object member such as `metadata`, an attribution, an unknown
//! member, a malformed document) makes it return `None`, and the event takes the slow path,
//! which parses it completely. Both paths end in the same fold code.
//!
//! The tokens of one answer differ only from their `delta` on, so a [`Scanner`] remembers where
//! the last event's `delta` began and what it had read before: an event that starts with the
//! same bytes is read from there. UTF-8 is checked on the strings handed out, not on the whole
//! event: every other byte is JSON's own or compared with an ASCII name.

use std::borrow::Cow;

/// The streaming event types the scanner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HotKind {
    TextContent,
    TextEnd,
    ToolArgs,
    ToolEnd,
    ReasoningContent,
    TextChunk,
    ToolChunk,
    ReasoningChunk,
}

impl HotKind {
    pub(crate) fn from_type(ty: &str) -> Option<Self> {
        Self::from_bytes(ty.as_bytes())
    }

    /// Whether the event names its entity by `toolCallId` (else by `messageId`). An event may
    /// carry the other id too (a `TOOL_CALL_ARGS` naming its message: a member the protocol
    /// does not define); the client reads only this one, and so does the fold.
    pub(crate) fn by_tool_call_id(self) -> bool {
        matches!(self, Self::ToolArgs | Self::ToolEnd | Self::ToolChunk)
    }

    fn from_bytes(ty: &[u8]) -> Option<Self> {
        Some(match ty {
            b"TEXT_MESSAGE_CONTENT" => Self::TextContent,
            b"TEXT_MESSAGE_END" => Self::TextEnd,
            b"TOOL_CALL_ARGS" => Self::ToolArgs,
            b"TOOL_CALL_END" => Self::ToolEnd,
            b"REASONING_MESSAGE_CONTENT" => Self::ReasoningContent,
            b"TEXT_MESSAGE_CHUNK" => Self::TextChunk,
            b"TOOL_CALL_CHUNK" => Self::ToolChunk,
            b"REASONING_MESSAGE_CHUNK" => Self::ReasoningChunk,
            _ => return None,
        })
    }
}

/// One streaming event, its strings borrowed from the input where possible.
#[derive(Debug, Default)]
pub(crate) struct Hot<'a> {
    /// The id the event's type names its entity by (`toolCallId` for the tool events,
    /// `messageId` for the others: see [`HotKind::by_tool_call_id`]), unescaped.
    pub(crate) id: Option<Cow<'a, str>>,
    /// `delta`, still escaped (JSON string contents without the quotes).
    pub(crate) delta: Option<Cow<'a, str>>,
    pub(crate) role: Option<Cow<'a, str>>,
    pub(crate) name: Option<Cow<'a, str>>,
    pub(crate) tool_call_name: Option<Cow<'a, str>>,
    pub(crate) parent_message_id: Option<Cow<'a, str>>,
    /// `subagentRunId` (slow path only).
    pub(crate) subagent: Option<String>,
    /// `metadata` (slow path only): merged into the message or tool call, as the client does.
    pub(crate) metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A string member's contents in the scanned bytes, between its quotes.
#[derive(Debug, Clone, Copy)]
struct Raw {
    start: u32,
    end: u32,
    escaped: bool,
}

impl Raw {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The contents, if they are UTF-8.
    fn text(self, b: &[u8]) -> Option<&str> {
        let s = &b[self.range()];
        if s.is_ascii() {
            // SAFETY: ASCII is UTF-8. Ids and tokens are mostly ASCII and a few bytes long,
            // where `from_utf8`'s set-up costs more than the rest of a token's scan.
            Some(unsafe { std::str::from_utf8_unchecked(s) })
        } else {
            std::str::from_utf8(s).ok()
        }
    }
}

/// What the scan has read of an event so far: its type and where its string members are.
#[derive(Debug, Clone, Copy, Default)]
struct Read {
    kind: Option<HotKind>,
    /// Both ids are read, each in its own slot: which one the event means depends on its type,
    /// which may come after them.
    message_id: Option<Raw>,
    tool_call_id: Option<Raw>,
    delta: Option<Raw>,
    role: Option<Raw>,
    name: Option<Raw>,
    tool_call_name: Option<Raw>,
    parent_message_id: Option<Raw>,
}

/// The longest start of an event that a [`Scanner`] remembers.
const MAX_PREFIX: usize = 256;

/// Reads streaming events, remembering the last one's bytes up to its `delta`'s value.
///
/// The tokens of one answer are events that differ only from their `delta` on
/// (`{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":` ...): an event that starts with
/// the same bytes as the last one read is read from its `delta` on, with what the last scan
/// read before it. Nothing is assumed about the event's shape: the same bytes read the same, so
/// the result is the whole scan's, at a fraction of its cost. At most [`MAX_PREFIX`] bytes are
/// kept.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scanner {
    prefix: Vec<u8>,
    read: Read,
}

impl Scanner {
    /// Reads a streaming event from its bytes; `None` sends it to the slow path.
    pub(crate) fn scan<'a>(&mut self, bytes: &'a [u8]) -> Option<(HotKind, Hot<'a>)> {
        let read = if !self.prefix.is_empty() && bytes.starts_with(&self.prefix) {
            // The bytes before are the last event's: its scan went on from here.
            members(bytes, self.prefix.len(), self.read, true, &mut None)?
        } else {
            let mut at_delta = None;
            let read = members(bytes, open(bytes)?, Read::default(), false, &mut at_delta)?;
            self.prefix.clear();
            if let Some((at, before)) = at_delta.filter(|(at, _)| *at <= MAX_PREFIX) {
                self.prefix.extend_from_slice(&bytes[..at]);
                self.read = before;
            }
            read
        };
        hot(bytes, read)
    }

    /// The bytes it holds, for the thread's accounting.
    pub(crate) fn bytes(&self) -> usize {
        self.prefix.capacity()
    }
}

/// A fresh scanner's read of one event, which the tests compare a used scanner's with.
#[cfg(test)]
fn scan(bytes: &[u8]) -> Option<(HotKind, Hot<'_>)> {
    Scanner::default().scan(bytes)
}

/// The index after an object's `{`, if the bytes hold one with members.
fn open(b: &[u8]) -> Option<usize> {
    let i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let i = skip_ws(b, i + 1);
    (b.get(i) != Some(&b'}')).then_some(i)
}

/// Reads the members of an object from `i` (the start of a member, or with `at_value` the start
/// of `delta`'s value) to its end, which must be the end of the bytes. `at_delta` is set to
/// where `delta`'s value starts and what was read before it.
///
/// Nothing is checked to be UTF-8 here: every byte is either JSON's own, a key or a type
/// compared with ASCII names, a number's, or inside a string member that [`hot`] checks.
fn members(
    b: &[u8],
    mut i: usize,
    mut read: Read,
    mut at_value: bool,
    at_delta: &mut Option<(usize, Read)>,
) -> Option<Read> {
    loop {
        if at_value {
            at_value = false;
            let (value, next) = string(b, i)?;
            read.delta = Some(value);
            i = next;
        } else {
            i = skip_ws(b, i);
            let (key, next) = string(b, i)?;
            if key.escaped {
                return None;
            }
            let key = &b[key.range()];
            i = skip_ws(b, next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            if key == b"timestamp" {
                i = number(b, i)?;
            } else {
                if key == b"delta" {
                    *at_delta = Some((i, read));
                }
                let (value, next) = string(b, i)?;
                match key {
                    b"type" => read.kind = Some(HotKind::from_bytes(&b[value.range()])?),
                    b"messageId" => read.message_id = Some(value),
                    b"toolCallId" => read.tool_call_id = Some(value),
                    b"delta" => read.delta = Some(value),
                    b"role" => read.role = Some(value),
                    b"name" => read.name = Some(value),
                    b"toolCallName" => read.tool_call_name = Some(value),
                    b"parentMessageId" => read.parent_message_id = Some(value),
                    _ => return None,
                }
                i = next;
            }
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {
                return (skip_ws(b, i + 1) == b.len()).then_some(read);
            }
            _ => return None,
        }
    }
}

/// The event `read` found in `b`, its strings checked to be UTF-8.
fn hot(b: &[u8], read: Read) -> Option<(HotKind, Hot<'_>)> {
    let kind = read.kind?;
    let id = if kind.by_tool_call_id() {
        read.tool_call_id
    } else {
        read.message_id
    };
    let mut hot = Hot::default();
    for (raw, field) in [
        (id, &mut hot.id),
        (read.role, &mut hot.role),
        (read.name, &mut hot.name),
        (read.tool_call_name, &mut hot.tool_call_name),
        (read.parent_message_id, &mut hot.parent_message_id),
    ] {
        if let Some(raw) = raw {
            *field = Some(unescape(raw.text(b)?, raw.escaped)?);
        }
    }
    if let Some(raw) = read.delta {
        hot.delta = Some(Cow::Borrowed(raw.text(b)?));
    }
    Some((kind, hot))
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// The bytes that stop the walk over a string: its closing quote, an escape, and the raw
/// control characters, which JSON refuses.
const STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        stops[c] = true;
        c += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// The index of the first byte at or after `j` that stops the walk over a string (see
/// [`STOPS`]), if any. Eight bytes at a time: tokens and ids are a few bytes long, where the
/// set-up of a vectorised search costs more than the walk, and a long string still goes fast.
#[inline]
fn next_stop(b: &[u8], mut j: usize) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // Flags (in its high bit) the lowest byte of `word` below `n` exactly; a flag above the
    // lowest may be wrong, so only the lowest is used.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    while let Some(chunk) = b.get(j..j + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let flags = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if flags != 0 {
            return Some(j + flags.trailing_zeros() as usize / 8);
        }
        j += 8;
    }
    (j..b.len()).find(|&k| STOPS[usize::from(b[k])])
}

/// A JSON string starting at `i` (its opening quote): where its raw contents are, whether they
/// hold an escape, and the index after its closing quote. `None` if it is not a valid JSON
/// string (UTF-8 aside: see [`members`]).
#[inline]
fn string(b: &[u8], i: usize) -> Option<(Raw, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut j = start;
    let mut escaped = false;
    loop {
        j = next_stop(b, j)?;
        match b[j] {
            b'"' => break,
            b'\\' => {
                escaped = true;
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' => {
                        let hex = b.get(j + 2..j + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        j += 6;
                    }
                    _ => return None,
                }
            }
            // Raw control characters are not JSON.
            _ => return None,
        }
    }
    let raw = Raw {
        start: u32::try_from(start).ok()?,
        end: u32::try_from(j).ok()?,
        escaped,
    };
    Some((raw, j + 1))
}

/// Skips a JSON number (loosely: its characters), refusing anything else.
fn number(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    while let Some(c) = b.get(j) {
        if !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            break;
        }
        j += 1;
    }
    (j > i).then_some(j)
}

fn unescape(raw: &str, escaped: bool) -> Option<Cow<'_, str>> {
    if !escaped {
        return Some(Cow::Borrowed(raw));
    }
    let mut quoted = String::with_capacity(raw.len() + 2);
    quoted.push('"');
    quoted.push_str(raw);
    quoted.push('"');
    serde_json::from_str::<String>(&quoted).ok().map(Cow::Owned)
}

/// Escapes `s` as JSON string contents (without the quotes).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or(""));
    }
    out
}

/// The first index at or after `at` that starts a character of the escaped contents `s`
/// (never inside an escape sequence or a UTF-8 sequence). Scans from the start: O(len).
pub(crate) fn boundary_at_or_after(s: &str, at: usize) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    while i < at && i < b.len() {
        i += if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'u') { 6 } else { 2 }
        } else {
            1
        };
    }
    let mut i = i.min(b.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_content_event() {
        let (kind, hot) =
            scan(br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m\u0031","delta":"a\"b\u00e9","timestamp":17}"#)
                .unwrap();
        assert_eq!(kind, HotKind::TextContent);
        assert_eq!(hot.id.as_deref(), Some("m1"));
        assert_eq!(hot.delta.as_deref(), Some(r#"a\"b\u00e9"#));
    }

    /// An event carrying both ids is read by the one its type names its entity by, wherever
    /// the members stand.
    #[test]
    fn reads_the_id_its_type_means() {
        for (event, id) in [
            (&br#"{"type":"TOOL_CALL_ARGS","toolCallId":"tc1","delta":"x","messageId":"a1"}"#[..], "tc1"),
            (br#"{"messageId":"a1","type":"TOOL_CALL_ARGS","toolCallId":"tc1","delta":"x"}"#, "tc1"),
            (br#"{"type":"TOOL_CALL_END","messageId":"a1","toolCallId":"tc1"}"#, "tc1"),
            (br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"a1","delta":"x","toolCallId":"tc1"}"#, "a1"),
            (br#"{"toolCallId":"tc1","type":"TEXT_MESSAGE_END","messageId":"a1"}"#, "a1"),
        ] {
            let (_, hot) = scan(event).unwrap();
            assert_eq!(hot.id.as_deref(), Some(id), "{}", String::from_utf8_lossy(event));
        }
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for input in [
            &br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x","metadata":{}}"#[..],
            br#"{"type":"RUN_STARTED"}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x"} x"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x\q"}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x"#,
            b"{\"type\":\"TEXT_MESSAGE_CONTENT\",\"delta\":\"\x01\"}",
            b"\xff",
            b"",
            b"{}",
        ] {
            assert!(scan(input).is_none(), "{}", String::from_utf8_lossy(input));
        }
    }

    /// Strings are walked eight bytes at a time, then byte by byte: the walk agrees with
    /// serde_json on where a string ends and whether it is valid, wherever the quote, the escape
    /// or the control character falls.
    #[test]
    fn strings_are_read_as_json_reads_them_at_every_length() {
        for len in 0..40 {
            for at in 0..=len {
                for inserted in ["", "\\\"", "\\u00e9", "\\n", "\x01", "\\q", "é"] {
                    let mut contents = "x".repeat(len);
                    contents.insert_str(at, inserted);
                    let quoted = format!("\"{contents}\",");
                    let b = quoted.as_bytes();
                    let ours = string(b, 0);
                    let json = serde_json::from_str::<String>(&quoted[..quoted.len() - 1]).ok();
                    assert_eq!(ours.is_some(), json.is_some(), "{quoted:?}");
                    if let Some((raw, next)) = ours {
                        assert_eq!(&b[raw.range()], contents.as_bytes());
                        assert_eq!(raw.escaped, contents.contains('\\'));
                        assert_eq!(next, quoted.len() - 1);
                    }
                    // Without its closing quote it is no string.
                    assert!(string(&b[..b.len() - 2], 0).is_none(), "{quoted:?}");
                }
            }
        }
    }

    /// A scanner that read one event reads the next exactly as a fresh scan does, whether or not
    /// the next starts with the same bytes up to its `delta`.
    #[test]
    fn a_scanner_reads_every_event_as_a_fresh_scan_does() {
        let events: Vec<&[u8]> = vec![
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"Hel"}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"lo \"x\""}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"a","timestamp":17}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"a","messageId":"m-2"}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"a","metadata":{}}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"a"} x"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"a"#,
            b"{\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m-1\",\"delta\":\"\xff\"}",
            b"{\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m-1\",\"delta\":\"\xc3\xa9\"}",
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-2","delta":"Hel"}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","delta":"x","messageId":"m-1"}"#,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"a","delta":"b"}"#,
            br#"{"type":"TOOL_CALL_ARGS","toolCallId":"t\u0031","delta":"{\"a\":"}"#,
            br#"{"type":"TOOL_CALL_CHUNK","toolCallId":"t1","toolCallName":"f","delta":"x"}"#,
            br#"{"type":"TEXT_MESSAGE_END","messageId":"m-1"}"#,
            br#"{"type":"RUN_STARTED","delta":"x"}"#,
            br#"{"delta":"x","type":"TEXT_MESSAGE_CONTENT","messageId":"m-1"}"#,
        ];
        let fresh = |e: &[u8]| format!("{:?}", scan(e));
        for first in &events {
            for second in &events {
                let mut scanner = Scanner::default();
                assert_eq!(format!("{:?}", scanner.scan(first)), fresh(first));
                assert_eq!(
                    format!("{:?}", scanner.scan(second)),
                    fresh(second),
                    "after {}: {}",
                    String::from_utf8_lossy(first),
                    String::from_utf8_lossy(second)
                );
                assert!(scanner.bytes() <= 2 * MAX_PREFIX);
            }
        }
        // The tokens of an answer are read from their delta on.
        let mut scanner = Scanner::default();
        scanner.scan(events[0]).unwrap();
        assert_eq!(
            scanner.prefix,
            br#"{"type":"TEXT_MESSAGE_CONTENT","messageId":"m-1","delta":"#
        );
    }

    #[test]
    fn boundaries_skip_escapes() {
        let s = r#"a\u00e9\nb"#;
        assert_eq!(boundary_at_or_after(s, 0), 0);
        assert_eq!(boundary_at_or_after(s, 2), 7);
        assert_eq!(boundary_at_or_after(s, 8), 9);
        assert_eq!(boundary_at_or_after("éa", 1), 2);
    }
}
