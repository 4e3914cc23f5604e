//! Reading an HTTP/1.1 request head on the lean path, and the heads hyper would refuse.
//!
//! The lean path reads every request head of a connection until one that is not for it (see
//! [`lean`](super::lean)), so it sees the heads that hyper answers before any handler runs:
//! one whose end is not within `max_buf_size` bytes, or with more than 100 header lines
//! (`431`), one whose target is over 65 534 bytes (`414`), and one that cannot be parsed
//! (`400`: the request line, a header line, `Content-Length` or `Transfer-Encoding`). hyper's
//! answer has an empty body, since no handler sees the request; the lean path answers them
//! itself, with the same status and the library's JSON error body
//! ([`error_response`](crate::sse::error_response)), then closes the connection, as hyper does.
//!
//! The checks are hyper's own ([`refusal`]), in hyper's order, so that the status is the one
//! hyper would give and a head hyper takes is never refused: httparse with hyper's settings
//! (its default parser config, at most [`HYPER_MAX_HEADERS`] headers), then what hyper checks
//! of a parsed head. Edge cases kept:
//!
//! * A head that is still arriving is refused as soon as httparse finds an error in what came,
//!   as hyper does (httparse errors on the first bad byte, whatever follows).
//! * "Too long" is the lean path's reading, as it was before these answers: a head whose end
//!   (the empty line) is within the first `max_buf_size` bytes is handed on, a longer one is
//!   refused. hyper on its own reads in chunks of growing size and may take a head that ends
//!   a little past the limit.
//! * A head over `max_buf_size` that also has a bad byte within the limit is `400`, not `431`:
//!   hyper parses what it read before it looks at the length.
//! * Only heads the lean path reads: once a connection is handed to hyper (a request that is
//!   not an SSE stream, HTTP/2, or [`Serve::lean_http1(false)`](super::Serve::lean_http1)),
//!   hyper reads its later heads and answers a bad one itself, with an empty body.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use tokio::io::{AsyncRead, ReadBuf};

/// The longest request head served on the lean path: a longer one is handed to hyper, which
/// has its own limit (once read whole, see [`read_to_end_of_head`]).
pub(super) const MAX_HEAD: usize = 8 * 1024;

/// The most headers a request served on the lean path may have.
pub(super) const MAX_HEADERS: usize = 64;

/// hyper's limit on a request's header lines (its `DEFAULT_MAX_HEADERS`, which `serve` keeps):
/// more is `431`.
const HYPER_MAX_HEADERS: usize = 100;

/// hyper's limit on a request target (its `MAX_URI_LEN`): a longer one is `414`.
const HYPER_MAX_URI: usize = u16::MAX as usize - 1;

/// hyper's limit on a header name: a longer one is `431`.
const HYPER_MAX_NAME: usize = 1 << 16;

/// hyper's limit on a `Content-Length` (its `DecodedLength::MAX_LEN`): a larger one is `431`.
const HYPER_MAX_LENGTH: u64 = u64::MAX - 2;

/// What came of reading a request head.
pub(super) enum Head {
    /// A whole head, this long (it may be for hyper still: see [`super::lean`]'s `parse`).
    Whole(usize),
    /// Not a head for the lean path, and not one hyper refuses: hyper serves the connection.
    Hyper,
    /// A head hyper would refuse: answer this and close the connection.
    Refused(Refusal),
}

/// A head refused before any handler runs: its status and the JSON error's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn malformed(problem: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "malformed_request",
            message: format!("the request head cannot be parsed: {problem}"),
        }
    }

    fn too_large(problem: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "request_head_too_large",
            message: format!("the request head is too large: {problem}"),
        }
    }

    /// The answer: `{"error": code, "message": text}`, as every JSON error of the library.
    pub(super) fn into_response(self) -> Response {
        crate::sse::error_response(self.status, self.code, self.message)
    }
}

/// Reads until `buffered` holds a whole request head. `Err` when the connection closes or
/// fails first.
pub(super) async fn read_head<I>(
    io: &mut I,
    buffered: &mut Vec<u8>,
    max_head: usize,
) -> io::Result<Head>
where
    I: AsyncRead + Unpin,
{
    loop {
        if buffered.starts_with(super::HTTP2_PREFACE) {
            return Ok(Head::Hyper);
        }
        // Nothing yet, or the start of the HTTP/2 preface: read on, under the caller's timeout,
        // until all of it has come (or a byte that is not its), so that hyper is not left
        // waiting for the rest with no timeout. httparse would take it for a head it cannot
        // parse.
        if !super::protocol_unknown(buffered) {
            // httparse finds the end of the head as hyper does, lines ending in a bare LF
            // included (RFC 9112, 2.2).
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::Request::new(&mut headers).parse(buffered) {
                Ok(httparse::Status::Complete(len)) => return Ok(Head::Whole(len)),
                Ok(httparse::Status::Partial) => {}
                // hyper takes more headers than this path.
                Err(httparse::Error::TooManyHeaders) => {
                    return read_past_lean(io, buffered, max_head).await;
                }
                // The error hyper would find too, told with hyper's limits.
                Err(_) => {
                    return Ok(refusal(buffered, max_head).map_or(Head::Hyper, Head::Refused));
                }
            }
            if buffered.len() >= MAX_HEAD {
                return read_past_lean(io, buffered, max_head).await;
            }
        }
        read_more(io, buffered, MAX_HEAD).await?;
    }
}

/// A head not for the lean path, still coming: read to its end (or `max_head`), then hyper's
/// verdict on it.
async fn read_past_lean<I>(io: &mut I, buffered: &mut Vec<u8>, max_head: usize) -> io::Result<Head>
where
    I: AsyncRead + Unpin,
{
    read_to_end_of_head(io, buffered, max_head).await?;
    Ok(refusal(buffered, max_head).map_or(Head::Hyper, Head::Refused))
}

/// Reads on until `buffered` holds the end of a request head (an empty line) or `max_head`
/// bytes. A head that is not for this path but still coming is handed to hyper only once it
/// is whole (or too long for hyper too), under the caller's timeout: hyper's own head timer
/// would start afresh, and a client trickling a long head would get twice the timeout.
async fn read_to_end_of_head<I>(
    io: &mut I,
    buffered: &mut Vec<u8>,
    max_head: usize,
) -> io::Result<()>
where
    I: AsyncRead + Unpin,
{
    // Empty lines before the request line are not its end (RFC 9112, 2.2).
    let start = buffered
        .iter()
        .position(|byte| !matches!(byte, b'\r' | b'\n'))
        .unwrap_or(buffered.len());
    let mut scanned = start;
    loop {
        // Only what came since the last look (and the two bytes before it): a head trickled a
        // byte at a time is not searched again from its start each time.
        let from = scanned.saturating_sub(2).max(start);
        let fresh = &buffered[from..];
        if fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n") {
            return Ok(());
        }
        scanned = buffered.len();
        if buffered.len() >= max_head {
            return Ok(());
        }
        read_more(io, buffered, max_head).await?;
    }
}

/// Reads once into `buffered`, growing it (to at most `limit`) when it is full. `Err` when the
/// connection closes or fails.
async fn read_more<I>(io: &mut I, buffered: &mut Vec<u8>, limit: usize) -> io::Result<()>
where
    I: AsyncRead + Unpin,
{
    if buffered.capacity() == buffered.len() {
        let grow = if buffered.is_empty() {
            1024
        } else {
            buffered.len()
        };
        buffered.reserve_exact(grow.min(limit.saturating_sub(buffered.len()).max(1)));
    }
    let read = poll_fn(|cx| {
        let spare = buffered.spare_capacity_mut();
        let mut buf = ReadBuf::uninit(spare);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    if read == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    // SAFETY: `poll_read` initialised `read` bytes of the spare capacity.
    unsafe { buffered.set_len(buffered.len() + read) };
    Ok(())
}

/// What hyper answers to `buffered`, the start of a request head (a whole head, or as much as
/// the lean path read of one) before any handler runs; `None` when it takes the head, or
/// waits for more of it. hyper's checks, in its order (hyper 1.x, `proto::h1::role`).
pub(super) fn refusal(buffered: &[u8], max_head: usize) -> Option<Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let error = match request.parse(buffered) {
        Ok(httparse::Status::Complete(_)) => return refusal_of_whole(&request),
        Ok(httparse::Status::Partial) => {
            // hyper parses before it looks at the length: a head that is still coming is
            // refused once this much of it has come.
            return (buffered.len() >= max_head).then(|| {
                Refusal::too_large(format_args!(
                    "it does not end within the limit of {max_head} bytes"
                ))
            });
        }
        Err(error) => error,
    };
    Some(match error {
        httparse::Error::TooManyHeaders => {
            Refusal::too_large(format_args!("more than {HYPER_MAX_HEADERS} header lines"))
        }
        // As hyper tells them apart: the method, or else the target, is not a token.
        httparse::Error::Token if request.method.is_none() => {
            Refusal::malformed("the request line does not start with a method")
        }
        httparse::Error::Token => Refusal::malformed(
            "the request target is not valid, or no space and HTTP version follow it",
        ),
        httparse::Error::Version => {
            Refusal::malformed("the request line does not end with the version HTTP/1.x")
        }
        httparse::Error::HeaderName => {
            Refusal::malformed("a header name is not valid (a header line without a colon?)")
        }
        httparse::Error::HeaderValue => Refusal::malformed("a header value is not valid"),
        httparse::Error::NewLine => Refusal::malformed("a line does not end in CRLF or LF"),
        httparse::Error::Status => Refusal::malformed("it is not a request"),
    })
}

/// hyper's checks of a head httparse took whole.
fn refusal_of_whole(request: &httparse::Request<'_, '_>) -> Option<Refusal> {
    let path = request.path.unwrap_or_default();
    if path.len() > HYPER_MAX_URI {
        return Some(Refusal {
            status: StatusCode::URI_TOO_LONG,
            code: "uri_too_long",
            message: format!(
                "the request target is {} bytes long, over the limit of {HYPER_MAX_URI}",
                path.len()
            ),
        });
    }
    if Method::from_bytes(request.method.unwrap_or_default().as_bytes()).is_err() {
        return Some(Refusal::malformed("the method is not valid"));
    }
    if request
        .headers
        .iter()
        .any(|h| h.name.len() >= HYPER_MAX_NAME)
    {
        return Some(Refusal::too_large(format_args!(
            "a header name is over {HYPER_MAX_NAME} bytes"
        )));
    }
    if Uri::try_from(path.as_bytes()).is_err() {
        return Some(Refusal::malformed("the request target is not a valid URI"));
    }
    // How hyper finds the body's length (RFC 9112, 6.3), and what it refuses on the way.
    let http_1_1 = request.version == Some(1);
    let (mut is_te, mut is_te_chunked) = (false, false);
    let mut length: Option<u64> = None;
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http_1_1 {
                return Some(Refusal::malformed(
                    "Transfer-Encoding on an HTTP/1.0 request",
                ));
            }
            is_te = true;
            // Transfer-Encoding overrides Content-Length.
            length = None;
            is_te_chunked = ends_in_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if is_te {
                continue;
            }
            let Some(len) = decimal(h.value) else {
                return Some(Refusal::malformed("Content-Length is not a number"));
            };
            match length {
                Some(earlier) if earlier != len => {
                    return Some(Refusal::malformed("two Content-Length values differ"));
                }
                Some(_) => {}
                None if len > HYPER_MAX_LENGTH => {
                    return Some(Refusal::too_large("Content-Length is too large"));
                }
                None => length = Some(len),
            }
        }
    }
    if is_te && !is_te_chunked {
        return Some(Refusal::malformed(
            "Transfer-Encoding does not end in chunked",
        ));
    }
    None
}

/// hyper's reading of a `Content-Length` value: decimal digits only, no sign, no spaces.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// hyper's reading of a `Transfer-Encoding` line: its last coding is `chunked`. A value that is
/// not visible ASCII does not end in it.
fn ends_in_chunked(value: &[u8]) -> bool {
    let visible = value
        .iter()
        .all(|&byte| byte == b'\t' || (0x20..0x7f).contains(&byte));
    visible
        && std::str::from_utf8(value)
            .ok()
            .and_then(|value| value.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: &str) -> Option<u16> {
        refusal(head.as_bytes(), 64 * 1024).map(|refusal| refusal.status.as_u16())
    }

    #[test]
    fn the_heads_hyper_refuses_get_hypers_status() {
        let get = |extra: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        for (head, expected) in [
            (get(""), None),
            (get("Content-Length: 5\r\n"), None),
            (get("Content-Length: 5\r\nContent-Length: 5\r\n"), None),
            (get("Content-Length: 5, 5\r\n"), Some(400)),
            (get("Content-Length: 5\r\nContent-Length: 6\r\n"), Some(400)),
            (get("Content-Length: +5\r\n"), Some(400)),
            (get("Content-Length: 99999999999999999999\r\n"), Some(400)),
            (get("Content-Length: 18446744073709551614\r\n"), Some(431)),
            (get("Transfer-Encoding: gzip, chunked\r\n"), None),
            (get("Transfer-Encoding: chunked, gzip\r\n"), Some(400)),
            // Transfer-Encoding overrides Content-Length, even a bad one after it.
            (
                get("Transfer-Encoding: chunked\r\nContent-Length: x\r\n"),
                None,
            ),
            (
                get("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"),
                None,
            ),
            (
                "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
                Some(400),
            ),
            ("GET / HTTP/1.0\r\n\r\n".to_owned(), None),
            ("GET / HTTP/2.0\r\n\r\n".to_owned(), Some(400)),
            ("GET /\r\n\r\n".to_owned(), Some(400)),
            ("G(T / HTTP/1.1\r\n\r\n".to_owned(), Some(400)),
            ("GET /a b HTTP/1.1\r\n\r\n".to_owned(), Some(400)),
            (get("Bad Name: x\r\n"), Some(400)),
            (get("Value: \x01\r\n"), Some(400)),
            // Still coming, and nothing wrong yet.
            ("GET / HTTP/1.1\r\nHost: x".to_owned(), None),
        ] {
            assert_eq!(status(&head), expected, "{head:?}");
        }
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(HYPER_MAX_URI));
        assert_eq!(
            refusal(long_target.as_bytes(), 1 << 20).map(|r| r.status.as_u16()),
            Some(414)
        );
        let many: String = (0..=HYPER_MAX_HEADERS)
            .map(|n| format!("X-{n}: {n}\r\n"))
            .collect();
        assert_eq!(status(&get(&many)), Some(431));
        let unended = "GET / HTTP/1.1\r\nCookie: ".to_owned() + &"c".repeat(64 * 1024);
        assert_eq!(status(&unended), Some(431));
    }
}
