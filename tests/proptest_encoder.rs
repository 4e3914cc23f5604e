//! The encoder against an independent SSE parser (`eventsource-stream`), for any input.
//!
//! Any Unicode data, event name and id, rich in what breaks SSE (CR, LF, CRLF, NUL, empty values,
//! trailing breaks, leading spaces, colons, a BOM), either encodes to bytes that the parser
//! decodes back exactly, or is refused with the typed error for the first bad field. Never a
//! panic. Data's CRLF and lone CR come back as LF, as the standard reads them.

use std::convert::Infallible;
use std::time::Duration;
use tokio::task::unconstrained;

use eventsource_stream::{Event, EventStream};
use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;
use sse_hub::{Broadcaster, Config, FrameError, Named, Payload, PublishError, SseFrame, UserId};

/// Text made of pieces that matter to SSE, mixed with arbitrary Unicode.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        3 => "[a-z0-9 ]{1,6}",
        1 => Just("\r".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => Just("\n\r".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just(":".to_owned()),
        1 => Just("data: x".to_owned()),
        1 => Just("id: 1".to_owned()),
        1 => Just("\u{FEFF}".to_owned()),
        1 => Just("\u{2028}\u{85}".to_owned()),
        1 => Just("é😀".to_owned()),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// Text without CR, LF or NUL, so that more cases encode.
fn single_line() -> impl Strategy<Value = String> {
    text().prop_map(|s| s.replace(['\r', '\n', '\0'], ""))
}

/// A field value: often valid, sometimes anything.
fn field() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        3 => single_line().prop_map(Some),
        2 => text().prop_map(Some),
    ]
}

fn has_break_or_nul(s: &str) -> bool {
    s.contains(['\r', '\n', '\0'])
}

/// What a client reads from data: every kind of line break is one LF.
fn normalised(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Parses a whole byte stream with the independent parser.
fn parse(bytes: &[u8]) -> Vec<Event> {
    let chunks = futures_util::stream::iter([Ok::<_, Infallible>(bytes.to_vec())]);
    EventStream::new(chunks)
        .map(|event| event.unwrap_or_else(|e| panic!("unparsable SSE {bytes:?}: {e}")))
        .collect::<Vec<_>>()
        .now_or_never()
        .expect("an in-memory stream is ready")
}

fn expected_type(name: Option<&str>) -> String {
    match name {
        None | Some("") => "message".to_owned(),
        Some(name) => name.to_owned(),
    }
}

fn check_wire_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(!bytes.contains(&b'\r'), "a CR on the wire: {:?}", bytes);
    prop_assert!(bytes.ends_with(b"\n"), "the frame does not end a line");
    prop_assert!(std::str::from_utf8(bytes).is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    /// `SseFrame` with any combination of fields.
    #[test]
    fn sse_frame_round_trips_or_is_a_typed_error(
        comment in field(),
        event in field(),
        id in field(),
        retry in prop::option::of(0u64..10_000_000),
        data in prop::option::weighted(0.8, text()),
    ) {
        let mut frame = SseFrame::new();
        if let Some(c) = &comment { frame = frame.comment(c); }
        if let Some(e) = &event { frame = frame.event(e); }
        if let Some(i) = &id { frame = frame.id(i); }
        if let Some(ms) = retry { frame = frame.retry(Duration::from_millis(ms)); }
        if let Some(d) = &data { frame = frame.data(d); }

        let expected_error = if comment.as_deref().is_some_and(has_break_or_nul) {
            Some(FrameError::Comment)
        } else if event.as_deref().is_some_and(has_break_or_nul) {
            Some(FrameError::EventName)
        } else if id.as_deref().is_some_and(has_break_or_nul) {
            Some(FrameError::Id)
        } else {
            None
        };

        let mut out = b"before".to_vec();
        let appended = frame.encode_into(&mut out);
        let encoded = frame.encode();
        if let Some(error) = expected_error {
            prop_assert_eq!(encoded.unwrap_err(), error);
            prop_assert_eq!(appended.unwrap_err(), error);
            prop_assert_eq!(&out[..], b"before", "a refused frame must leave the buffer alone");
            return Ok(());
        }
        let bytes = encoded.map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
        prop_assert!(appended.is_ok());
        prop_assert_eq!(&out[6..], &bytes[..], "encode_into appends what encode returns");
        check_wire_bytes(&bytes)?;

        // A probe event after the frame shows what the frame left in the parser: its id
        // ("priming"), even when the frame itself dispatched nothing.
        let mut stream = bytes.to_vec();
        stream.extend_from_slice(b"data: probe\n\n");
        let events = parse(&stream);
        let id = id.unwrap_or_default();
        match &data {
            Some(data) => {
                prop_assert_eq!(events.len(), 2, "{:?} -> {:?}", bytes, events);
                let got = &events[0];
                prop_assert_eq!(&got.data, &normalised(data));
                prop_assert_eq!(&got.event, &expected_type(event.as_deref()));
                prop_assert_eq!(&got.id, &id);
                prop_assert_eq!(got.retry, retry.map(Duration::from_millis));
            }
            None => prop_assert_eq!(events.len(), 1, "{:?} -> {:?}", bytes, events),
        }
        let probe = events.last().unwrap();
        prop_assert_eq!(&probe.data, "probe");
        prop_assert_eq!(&probe.event, "message", "the event type does not leak to the next event");
        prop_assert_eq!(&probe.id, &id, "the id persists as the last event id");
    }

    /// `Payload::from_text`, alone and published through a broadcaster, which adds the id.
    #[test]
    fn payload_from_text_round_trips_or_is_a_typed_error(
        name in field(),
        data in text(),
    ) {
        let payload = Payload::from_text(name.as_deref(), &data);
        if name.as_deref().is_some_and(has_break_or_nul) {
            prop_assert!(
                matches!(payload, Err(PublishError::Frame(FrameError::EventName))),
                "{:?}", payload
            );
            return Ok(());
        }
        let payload = payload.map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;

        // The lines alone, closed by the blank line that dispatches them.
        let mut bytes = payload.as_bytes().to_vec();
        bytes.push(b'\n');
        check_wire_bytes(&bytes)?;
        let events = parse(&bytes);
        prop_assert_eq!(events.len(), 1, "{:?} -> {:?}", bytes, events);
        prop_assert_eq!(&events[0].data, &normalised(&data));
        prop_assert_eq!(&events[0].event, &expected_type(name.as_deref()));
        prop_assert_eq!(&events[0].id, "");

        // Published: the frame a connection receives, with its id line.
        let hub: Broadcaster<String> = Broadcaster::new(Config::default());
        let alice = UserId::from("alice");
        let mut sub = hub.subscribe(&alice).unwrap();
        prop_assert!(payload.frame_len() <= hub.config().max_frame_bytes);
        let frame_len = payload.frame_len();
        let published = hub.broadcast_payload(&alice, payload).unwrap();
        let frame = unconstrained(sub.next()).now_or_never().flatten().expect("the frame is ready");
        prop_assert!(frame.bytes().len() <= frame_len, "frame_len is an upper bound");
        check_wire_bytes(frame.bytes())?;
        let events = parse(frame.bytes());
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(&events[0].data, &normalised(&data));
        prop_assert_eq!(&events[0].event, &expected_type(name.as_deref()));
        prop_assert_eq!(events[0].id.clone(), published.id.unwrap().to_string());
        prop_assert_eq!(frame.id(), published.id);
    }

    /// A serde event under any name: the JSON that arrives deserialises to what was sent.
    #[test]
    fn named_serde_events_round_trip_or_are_typed_errors(name in text(), data in text()) {
        let event = Named::new(name.clone(), serde_json::json!({ "text": data }));
        let payload = Payload::encode(&event);
        if has_break_or_nul(&name) {
            prop_assert!(
                matches!(payload, Err(PublishError::Frame(FrameError::EventName))),
                "{:?}", payload
            );
            return Ok(());
        }
        let mut bytes = payload.unwrap().as_bytes().to_vec();
        bytes.push(b'\n');
        check_wire_bytes(&bytes)?;
        let events = parse(&bytes);
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(&events[0].event, &expected_type(Some(&name)));
        let json: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
        prop_assert_eq!(json["text"].as_str(), Some(data.as_str()), "exact, not normalised");
    }
}

/// The cases the generators should hit, spelled out.
#[test]
fn edge_cases_round_trip() {
    for data in [
        "",
        "\n",
        "\r",
        "\r\n",
        "\n\n",
        "a\r\n",
        "\r\r\n",
        " lead",
        "  two",
        "trail ",
        "\0",
        "a\0b",
        ":",
        "data: x",
        "\u{FEFF}x",
    ] {
        for name in [
            None,
            Some(""),
            Some(" spaced"),
            Some("a:b"),
            Some("\u{FEFF}"),
        ] {
            let bytes = SseFrame::new()
                .event(name.unwrap_or("message"))
                .id(" 1")
                .data(data)
                .encode()
                .unwrap();
            let events = parse(&bytes);
            assert_eq!(events.len(), 1, "{data:?}");
            assert_eq!(events[0].data, normalised(data), "{data:?}");
            assert_eq!(events[0].id, " 1");
            assert_eq!(
                events[0].event,
                expected_type(Some(name.unwrap_or("message")))
            );
        }
    }
    for bad in ["\n", "\r", "\0", "a\r\nb", "trailing\n"] {
        assert_eq!(SseFrame::new().id(bad).encode(), Err(FrameError::Id));
        assert_eq!(
            SseFrame::new().event(bad).encode(),
            Err(FrameError::EventName)
        );
        assert_eq!(
            SseFrame::new().comment(bad).encode(),
            Err(FrameError::Comment)
        );
        assert!(matches!(
            Payload::from_text(Some(bad), "x"),
            Err(PublishError::Frame(FrameError::EventName))
        ));
    }
}
