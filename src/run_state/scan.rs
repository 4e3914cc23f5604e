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
        Some(match ty {
            "TEXT_MESSAGE_CONTENT" => Self::TextContent,
            "TEXT_MESSAGE_END" => Self::TextEnd,
            "TOOL_CALL_ARGS" => Self::ToolArgs,
            "TOOL_CALL_END" => Self::ToolEnd,
            "REASONING_MESSAGE_CONTENT" => Self::ReasoningContent,
            "TEXT_MESSAGE_CHUNK" => Self::TextChunk,
            "TOOL_CALL_CHUNK" => Self::ToolChunk,
            "REASONING_MESSAGE_CHUNK" => Self::ReasoningChunk,
            _ => return None,
        })
    }
}

/// One streaming event, its strings borrowed from the input where possible.
#[derive(Debug, Default)]
pub(crate) struct Hot<'a> {
    /// `messageId` or `toolCallId`, unescaped.
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

/// Reads a streaming event from its bytes; `None` sends it to the slow path.
pub(crate) fn scan(bytes: &[u8]) -> Option<(HotKind, Hot<'_>)> {
    // One pass of UTF-8 validation up front: every slice handed out below is then a `&str`.
    let text = std::str::from_utf8(bytes).ok()?;
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut kind = None;
    let mut hot = Hot::default();
    i = skip_ws(b, i);
    if b.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        i = skip_ws(b, i);
        let (key, key_escaped, next) = string(text, i)?;
        if key_escaped {
            return None;
        }
        i = skip_ws(b, next);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if key == "timestamp" {
            i = number(b, i)?;
        } else {
            let (value, escaped, next) = string(text, i)?;
            i = next;
            match key {
                "type" => kind = Some(HotKind::from_type(value)?),
                "messageId" | "toolCallId" => hot.id = Some(unescape(value, escaped)?),
                "delta" => hot.delta = Some(Cow::Borrowed(value)),
                "role" => hot.role = Some(unescape(value, escaped)?),
                "name" => hot.name = Some(unescape(value, escaped)?),
                "toolCallName" => hot.tool_call_name = Some(unescape(value, escaped)?),
                "parentMessageId" => hot.parent_message_id = Some(unescape(value, escaped)?),
                _ => return None,
            }
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return None,
        }
    }
    if skip_ws(b, i) != b.len() {
        return None;
    }
    Some((kind?, hot))
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

/// A JSON string starting at `i` (its opening quote): its raw contents, whether it holds an
/// escape, and the index after its closing quote. `None` if it is not a valid JSON string.
#[inline]
fn string(text: &str, i: usize) -> Option<(&str, bool, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut j = start;
    let mut escaped = false;
    loop {
        j = next_stop(b, j)?;
        let c = b[j];
        match c {
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
    // `start` and `j` sit next to ASCII quotes, so both are char boundaries.
    Some((text.get(start..j)?, escaped, j + 1))
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
                    let ours = string(&quoted, 0);
                    let json = serde_json::from_str::<String>(&quoted[..quoted.len() - 1]).ok();
                    assert_eq!(ours.is_some(), json.is_some(), "{quoted:?}");
                    if let Some((raw, escaped, next)) = ours {
                        assert_eq!(raw, contents);
                        assert_eq!(escaped, contents.contains('\\'));
                        assert_eq!(next, quoted.len() - 1);
                    }
                    // Without its closing quote it is no string.
                    assert!(
                        string(&quoted[..quoted.len() - 2], 0).is_none(),
                        "{quoted:?}"
                    );
                }
            }
        }
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
