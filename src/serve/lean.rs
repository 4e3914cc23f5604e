//! The lean HTTP/1.1 path of [`serve`](super::serve): a request that can only be an SSE stream
//! (`GET`, `Accept: text/event-stream`, no body, no upgrade) is read, routed and answered here,
//! with no buffer kept between writes. hyper keeps everything else: any other request, HTTP/2,
//! and whatever follows on the connection once such a request is not for this path.
//!
//! Why: hyper's HTTP/1.1 connection keeps an 8 KiB read buffer and an 8 KiB write buffer (more
//! when the request head is still referenced when it reads again) for as long as the connection
//! is open. For an SSE stream, which reads nothing after its head and writes a frame now and
//! then, those buffers are most of the memory of an idle connection.
//!
//! What goes on the wire is what hyper would write: the status line, the response's headers,
//! `transfer-encoding: chunked` (or `content-length` when the body's size is known) and `date`,
//! then the body in chunks, each frame or group of frames as one chunk, and the last chunk when
//! the body ends. While the body is written, the connection is read too, so a client that goes
//! away is noticed at once (as hyper does), and a request pipelined behind the stream is kept
//! for afterwards; unlike hyper, the reading goes on past it (up to [`MAX_PIPELINED`]), so a
//! client that pipelined a request, or sent a stray empty line, is still noticed going away.
//!
//! The heads read here (see [`head`]) are every head of the connection until one that is not
//! for this path, so a head hyper would refuse before any handler runs (too long, or one it
//! cannot parse) is answered here too: with hyper's status, and the library's JSON error body
//! where hyper's is empty.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{
    HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
};
use bytes::{Buf, Bytes};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tower_service::Service;

use super::head::{self, Head, MAX_HEADERS, Refusal, read_head};

/// Bytes the client may send while its stream is written (a pipelined request, a stray empty
/// line) that are read and kept for after the response; past them the socket is no longer read
/// until the response ends (as hyper stops after one read), and a close is not seen at once.
const MAX_PIPELINED: usize = 8 * 1024;

/// What became of a connection served on the lean path.
pub(super) enum Outcome {
    /// Not for this path: hyper serves the connection, starting with these bytes.
    Hyper(Bytes),
    /// The connection is closed (or must be).
    Close,
}

/// Serves requests of the lean kind on `io` one after another, until the connection closes or
/// a request of another kind comes (then handed to hyper with the bytes read). `max_head` is
/// hyper's limit on a request head; `draining` is true once graceful shutdown began. Each request
/// gets `peer` as axum's `ConnectInfo` (see `peer`).
pub(super) async fn serve<I>(
    io: &mut I,
    router: &Router,
    peer: Option<std::net::SocketAddr>,
    header_read_timeout: Option<Duration>,
    max_head: usize,
    draining: &mut tokio::sync::watch::Receiver<bool>,
) -> Outcome
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffered: Vec<u8> = Vec::new();
    loop {
        // The next request head, within the timeout, unless shutdown begins first (a keep-alive
        // connection between requests is closed then, as hyper does).
        let read = read_head(io, &mut buffered, max_head);
        let read = async {
            match header_read_timeout {
                Some(timeout) => tokio::time::timeout(timeout, read)
                    .await
                    .unwrap_or(Err(io::ErrorKind::TimedOut.into())),
                None => read.await,
            }
        };
        let head = tokio::select! {
            head = read => head,
            _ = draining.wait_for(|draining| *draining) => {
                // Nothing read, or only the start of the HTTP/2 preface: nothing to answer.
                return if super::protocol_unknown(&buffered) {
                    Outcome::Close
                } else {
                    Outcome::Hyper(buffered.into())
                };
            }
        };
        let end = match head {
            Err(_) => return Outcome::Close,
            Ok(Head::Hyper) => return Outcome::Hyper(Bytes::from(buffered)),
            Ok(Head::Refused(refusal)) => return refuse(io, refusal).await,
            Ok(Head::Whole(end)) => end,
        };
        let Some((mut request, close)) = parse(&buffered[..end]) else {
            // Not a stream: hyper's, unless hyper would refuse the head before any handler.
            return match head::refusal(&buffered[..end], max_head) {
                Some(refusal) => refuse(io, refusal).await,
                None => Outcome::Hyper(Bytes::from(buffered)),
            };
        };
        buffered.drain(..end);
        buffered.shrink_to_fit();
        super::peer::insert(&mut request, peer);
        let mut router = router.clone();
        let Ok(response) = router.call(request).await;
        let keep_alive = !close && !*draining.borrow();
        match respond(io, response, keep_alive, &mut buffered).await {
            Ok(true) if !*draining.borrow() => continue,
            _ => return Outcome::Close,
        }
    }
}

/// Answers a head hyper would refuse as hyper does (the same status, then the connection
/// closes, with whatever the client sent after the head unread), but with the JSON error body
/// every other error of the library has, where hyper's is empty.
async fn refuse<I>(io: &mut I, refusal: Refusal) -> Outcome
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!(?refusal, "request head refused");
    let mut unread = Vec::new();
    let _ = respond(io, refusal.into_response(), false, &mut unread).await;
    Outcome::Close
}

/// Parses a request head: a request for this path becomes a `Request` with an empty body, and
/// whether the client asked to close the connection after it; anything else is `None` (hyper
/// serves it).
fn parse(head: &[u8]) -> Option<(Request<Body>, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(head) else {
        return None;
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let uri = parsed.path.and_then(|path| Uri::try_from(path).ok())?;
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .version(Version::HTTP_11);
    let mut event_stream = false;
    let mut close = false;
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return None;
        };
        if name == header::ACCEPT {
            event_stream |= value
                .to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("text/event-stream"));
        } else if name == header::CONTENT_LENGTH {
            if value.as_bytes() != b"0" {
                return None;
            }
        } else if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return None;
        } else if name == header::CONNECTION {
            let value = value.to_str().unwrap_or("").to_ascii_lowercase();
            if value.contains("upgrade") {
                return None;
            }
            close |= value.contains("close");
        }
        builder = builder.header(name, value);
    }
    if !event_stream {
        return None;
    }
    builder
        .body(Body::empty())
        .ok()
        .map(|request| (request, close))
}

/// Writes `response`; returns whether the connection may serve another request. Bytes the
/// client sends meanwhile are appended to `pipelined`.
async fn respond<I>(
    io: &mut I,
    response: Response<Body>,
    keep_alive: bool,
    pipelined: &mut Vec<u8>,
) -> io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (mut parts, mut body) = response.into_parts();
    // As hyper: a 1xx, 204 or 304 response has no body, so no framing; 1xx and 204 may not even
    // say `content-length` (RFC 9110, 8.6), and a handler's is dropped, as is a handler's
    // `transfer-encoding` on all three.
    let status = parts.status;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    if bodiless {
        parts.headers.remove(header::TRANSFER_ENCODING);
    }
    // A handler's own `transfer-encoding` (one that copies an upstream's headers, say) frames
    // the body as chunked, as with hyper: whatever the body's size, with no `content-length`
    // beside it (RFC 9112, 6.1), and on one `transfer-encoding` line however many the handler
    // gave, with `chunked` added when it is not the last coding. A second line makes nginx
    // answer 502 ("upstream sent duplicate header line").
    let coded = parts.headers.contains_key(header::TRANSFER_ENCODING);
    if coded {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let coded_chunked = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
    let length = if bodiless || coded {
        None
    } else {
        body.size_hint().exact()
    };
    let chunked = !bodiless
        && (coded || (length.is_none() && !parts.headers.contains_key(header::CONTENT_LENGTH)));
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("<none>")
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: ");
        for value in parts.headers.get_all(header::TRANSFER_ENCODING) {
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b", ");
        }
        if coded_chunked {
            head.truncate(head.len() - 2);
        } else {
            head.extend_from_slice(b"chunked");
        }
        head.extend_from_slice(b"\r\n");
    } else if let Some(length) = length
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // A handler that says `connection: close` closes it, as with hyper.
    let closes = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("close"))
        });
    let keep_alive = keep_alive && !closes;
    if !keep_alive && !closes {
        head.extend_from_slice(b"connection: close\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    drop(parts);
    if bodiless {
        io.write_all(&head).await?;
        io.flush().await?;
        return Ok(keep_alive);
    }

    // The head goes out with the first chunk when the body has one ready (an SSE body's
    // opening always is), as hyper does.
    let mut head = Some(head);
    let mut reading = pipelined.len() < MAX_PIPELINED;
    let mut probe = [0u8; 64];
    loop {
        let flush_head = head.is_some();
        let event = poll_fn(
            |cx| match poll_event(cx, &mut body, io, reading, &mut probe) {
                Event::Pending if !flush_head => Poll::Pending,
                event => Poll::Ready(event),
            },
        )
        .await;
        match event {
            Event::Data(data) => write_chunk(io, head.take(), data, chunked).await?,
            Event::Other => {}
            Event::End => break,
            // As hyper: a body that fails ends the connection without the last chunk, so the
            // client sees the response was cut short; one that fails before anything was
            // written ends it with nothing written, not even the head, so that a proxy answers
            // 502 rather than pass on a status the response never made good.
            Event::Failed => return Ok(false),
            Event::Pending => {
                // Nothing ready yet: the head goes out alone.
                if let Some(head) = head.take() {
                    io.write_all(&head).await?;
                    io.flush().await?;
                }
            }
            Event::Read(0) | Event::ReadFailed => return Ok(false),
            Event::Read(n) => pipelined.extend_from_slice(&probe[..n]),
        }
        // A pipelined request waits for this response, but the socket is still read (bounded):
        // hyper stops at the first byte past the head, and then a client that goes away is
        // found only when a heartbeat fails to go out, 15 s or more later.
        reading = pipelined.len() < MAX_PIPELINED;
    }
    let mut last: Vec<u8> = head.unwrap_or_default();
    if chunked {
        last.extend_from_slice(b"0\r\n\r\n");
    }
    if !last.is_empty() {
        io.write_all(&last).await?;
    }
    io.flush().await?;
    Ok(keep_alive)
}

enum Event {
    Data(Bytes),
    Other,
    End,
    Failed,
    Pending,
    Read(usize),
    ReadFailed,
}

/// Polls the body for its next frame, and the connection for bytes (so that a client that
/// goes away is noticed while its stream is idle).
fn poll_event<I>(
    cx: &mut Context<'_>,
    body: &mut Body,
    io: &mut I,
    reading: bool,
    probe: &mut [u8; 64],
) -> Event
where
    I: AsyncRead + Unpin,
{
    match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => {
            return match frame.into_data() {
                Ok(data) => Event::Data(data),
                Err(_) => Event::Other,
            };
        }
        Poll::Ready(Some(Err(_))) => return Event::Failed,
        Poll::Ready(None) => return Event::End,
        Poll::Pending => {}
    }
    if reading {
        let mut buf = ReadBuf::new(probe);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => return Event::Read(buf.filled().len()),
            Poll::Ready(Err(_)) => return Event::ReadFailed,
            Poll::Pending => {}
        }
    }
    Event::Pending
}

/// Writes `data` as one chunk (or as it is, when the body has a length), after `head` if
/// given, with one vectored write where the socket takes it all.
async fn write_chunk<I>(
    io: &mut I,
    head: Option<Vec<u8>>,
    mut data: Bytes,
    chunked: bool,
) -> io::Result<()>
where
    I: AsyncWrite + Unpin,
{
    if data.is_empty() {
        if let Some(head) = head {
            io.write_all(&head).await?;
        }
        return Ok(());
    }
    let mut size = [0u8; 20];
    let size_len = if chunked {
        chunk_size_line(data.len(), &mut size)
    } else {
        0
    };
    let head = head.unwrap_or_default();
    let mut size = &size[..size_len];
    let mut head = &head[..];
    let mut end: &[u8] = if chunked { b"\r\n" } else { b"" };
    while !(head.is_empty() && size.is_empty() && data.is_empty() && end.is_empty()) {
        let slices = [
            IoSlice::new(head),
            IoSlice::new(size),
            IoSlice::new(&data),
            IoSlice::new(end),
        ];
        let mut written = io.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for part in [&mut head, &mut size] {
            let n = written.min(part.len());
            *part = &part[n..];
            written -= n;
        }
        let n = written.min(data.len());
        data.advance(n);
        written -= n;
        let n = written.min(end.len());
        end = &end[n..];
    }
    io.flush().await
}

/// Writes `len` in hexadecimal followed by CRLF into `out`; returns the length written.
fn chunk_size_line(len: usize, out: &mut [u8; 20]) -> usize {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digits = ((usize::BITS - len.leading_zeros()).div_ceil(4)).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xF];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_upper_case_hexadecimal() {
        for (len, text) in [
            (0usize, "0"),
            (1, "1"),
            (15, "F"),
            (16, "10"),
            (263, "107"),
            (16384, "4000"),
        ] {
            let mut out = [0u8; 20];
            let n = chunk_size_line(len, &mut out);
            assert_eq!(&out[..n], format!("{text}\r\n").as_bytes());
        }
    }

    #[test]
    fn only_bodiless_event_stream_gets_are_lean() {
        let lean = |head: &str| parse(head.as_bytes()).is_some();
        assert!(lean(
            "GET /events/u HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        ));
        assert!(!lean("GET /events/u HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!lean(
            "POST /events/u HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 2\r\n\r\n"
        ));
        assert!(!lean(
            "GET /events/u HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n"
        ));
        assert!(!lean(
            "GET /ws HTTP/1.1\r\nAccept: text/event-stream\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!lean(
            "GET /events/u HTTP/1.1\r\nAccept: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }
}
