//! Wire tests of sse-hub's axum layer (issue 3, "SSE over axum").
//!
//! Every test runs a real axum server on `127.0.0.1:0`, talks to it with reqwest and decodes the
//! byte stream with `eventsource-stream`, an SSE parser independent of ours; events are published
//! straight through the [`Broadcaster`]. Raw bytes are checked only for what a conforming parser
//! hides: comments, and frames that carry no data (the priming `id:`, `retry:` hints).

mod common;

use std::time::Duration;

use common::{
    End, SseClient, TestServer, WAIT, bounded, count, find, http_client, router, wait_until,
};
use eventsource_stream::Event;
use futures_util::future::join_all;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sse_hub::{Broadcaster, Config, EventId, Heartbeat, Payload, UserId};
use tokio::time::Instant;

/// Publishes the JSON event `{"type":"note","n":n}` for `user` and returns its id as sent on the
/// wire. Panics if the user has no channel (the event would be neither delivered nor kept).
fn publish(hub: &Broadcaster<Value>, user: &UserId, n: u64) -> String {
    let published = hub
        .broadcast(user, &json!({"type": "note", "n": n}))
        .expect("publish");
    published
        .id
        .unwrap_or_else(|| panic!("{user:?} has no channel: event {n} went nowhere"))
        .to_string()
}

/// Asserts that `event` is the note `n` published with id `id`.
fn assert_note(event: &Event, id: &str, n: u64) {
    assert_eq!(event.event, "message", "event name of note {n}: {event:?}");
    assert_eq!(event.id, id, "id of note {n}: {event:?}");
    let data: Value = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("note {n} data is not JSON ({e}): {event:?}"));
    assert_eq!(data, json!({"type": "note", "n": n}), "data of note {n}");
}

/// Asserts that `event` is a `reset` control event with `reason`.
fn assert_reset(event: &Event, reason: &str) {
    assert_eq!(event.event, "reset", "expected a reset, got {event:?}");
    let data: Value = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("reset data is not JSON ({e}): {event:?}"));
    assert_eq!(data, json!({"type": "reset", "reason": reason}));
}

fn json_hub(config: Config) -> Broadcaster<Value> {
    Broadcaster::new(config)
}

fn parse_id(id: &str) -> EventId {
    EventId::parse(id).unwrap_or_else(|| panic!("{id:?} is not an event id"))
}

/// The bytes of the opening frame of `raw`, and what follows it.
fn split_opening(raw: &[u8]) -> (&[u8], &[u8]) {
    let end = find(raw, b"\n\n").expect("an opening frame") + 2;
    raw.split_at(end)
}

// 1. Delivery and per-user isolation.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_connection_of_their_user_in_order_and_nobody_else() {
    let hub = json_hub(Config::default());
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));

    let mut alices = Vec::new();
    for _ in 0..3 {
        alices.push(SseClient::open(&http, &server.events_url("alice"), None).await);
    }
    let mut bobs = Vec::new();
    for _ in 0..2 {
        bobs.push(SseClient::open(&http, &server.events_url("bob"), None).await);
    }
    for client in alices.iter().chain(&bobs) {
        assert_eq!(client.status, StatusCode::OK);
    }
    // The handler subscribed before the response head went out.
    assert_eq!(hub.connection_count(&alice), 3);
    assert_eq!(hub.connection_count(&bob), 2);
    assert_eq!(hub.total_connections(), 5);

    let mut ids = Vec::new();
    for n in 0..5 {
        let published = hub
            .broadcast(&alice, &json!({"type": "note", "n": n}))
            .unwrap();
        assert_eq!(
            published.connections(),
            Some(3),
            "note {n} reached every alice tab"
        );
        ids.push(published.id.unwrap().to_string());
    }
    for pair in ids.windows(2) {
        let (a, b) = (parse_id(&pair[0]), parse_id(&pair[1]));
        assert_eq!((b.epoch(), b.seq()), (a.epoch(), a.seq() + 1));
    }

    for (tab, client) in alices.iter_mut().enumerate() {
        for (n, id) in ids.iter().enumerate() {
            let event = client.expect_event().await;
            assert_note(&event, id, n as u64);
        }
        assert_eq!(client.parser_last_event_id(), ids[4], "alice tab {tab}");
    }

    // Nothing of alice's reaches bob: the first event bob's connections dispatch is bob's own.
    let for_bob = hub
        .broadcast(&bob, &json!({"type": "note", "n": 100}))
        .unwrap();
    assert_eq!(for_bob.connections(), Some(2));
    let bob_id = for_bob.id.unwrap();
    assert_ne!(
        bob_id.epoch(),
        parse_id(&ids[0]).epoch(),
        "one channel each"
    );
    for client in &mut bobs {
        let event = client.expect_event().await;
        assert_note(&event, &bob_id.to_string(), 100);
    }
    // And nothing of bob's reaches alice: her next event is her next note.
    let next = publish(&hub, &alice, 5);
    for client in &mut alices {
        assert_note(&client.expect_event().await, &next, 5);
    }
}

// 2. Resume after a dropped connection.

#[derive(Debug, Clone, Copy)]
enum Via {
    /// `Last-Event-ID` header, as `EventSource` sends on a reconnect.
    Header,
    /// `?last_event_id=`, as a first `EventSource` request can.
    Query,
    /// Both: the header wins over a garbage query parameter.
    HeaderOverQuery,
}

async fn resume_after_drop(via: Via) {
    let hub = json_hub(Config::default());
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let carol = UserId::from("carol");
    let url = server.events_url("carol");

    let mut first = SseClient::open(&http, &url, None).await;
    let mut ids: Vec<String> = (0..6).map(|n| publish(&hub, &carol, n)).collect();
    for (n, id) in ids.iter().enumerate().take(3) {
        assert_note(&first.expect_event().await, id, n as u64);
    }
    let last_seen = first.parser_last_event_id().to_owned();
    assert_eq!(last_seen, ids[2]);
    // Notes 3..6 were sent to this connection but are never read: the client goes away.
    drop(first);

    ids.extend((6..9).map(|n| publish(&hub, &carol, n)));

    let mut second = match via {
        Via::Header => SseClient::resume(&http, &url, &last_seen).await,
        Via::Query => {
            SseClient::open(&http, &format!("{url}?last_event_id={last_seen}"), None).await
        }
        Via::HeaderOverQuery => {
            let url = format!("{url}?last_event_id=garbage");
            SseClient::resume(&http, &url, &last_seen).await
        }
    };
    assert_eq!(second.status, StatusCode::OK, "{via:?}");
    // Every missed note exactly once, in order, with no reset before them...
    for (n, id) in ids.iter().enumerate().skip(3) {
        assert_note(&second.expect_event().await, id, n as u64);
    }
    // ...then live ones, right after them.
    for n in 9..12 {
        let id = publish(&hub, &carol, n);
        assert_note(&second.expect_event().await, &id, n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_header_delivers_every_missed_event_once_then_live() {
    resume_after_drop(Via::Header).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_query_delivers_every_missed_event_once_then_live() {
    resume_after_drop(Via::Query).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_event_id_header_wins_over_the_query_parameter() {
    resume_after_drop(Via::HeaderOverQuery).await;
}

// 3. Priming.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_saw_no_event_is_primed_and_resumes_without_loss() {
    let mut config = Config::default();
    // The heartbeat is the first event dispatched: it has no id of its own, so the parser
    // reports the last id it holds, the priming one (what a browser's `lastEventId` shows).
    config.sse.heartbeat_interval = Duration::from_millis(200);
    let hub = json_hub(config);
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let dave = UserId::from("dave");
    let url = server.events_url("dave");

    // A fresh channel: nothing published yet.
    let mut tab = SseClient::open(&http, &url, None).await;
    tab.read_opening().await;
    let heartbeat = tab.expect_event().await;
    assert_eq!(heartbeat.event, "heartbeat");
    let primed = heartbeat.id.clone();
    assert!(!primed.is_empty(), "the opening bytes set no id");
    let (opening, _) = split_opening(tab.raw());
    let opening = String::from_utf8(opening.to_vec()).unwrap();
    assert!(
        opening.lines().any(|line| line == format!("id: {primed}")),
        "the id is in the opening frame: {opening:?}"
    );
    drop(tab);

    // Events published after the client went away (the channel is retained for it).
    let ids: Vec<String> = (0..4).map(|n| publish(&hub, &dave, n)).collect();
    assert_eq!(
        parse_id(&primed),
        EventId::new(parse_id(&ids[0]).epoch(), 0),
        "primed at the position before the first event"
    );
    let mut back = SseClient::resume(&http, &url, &primed).await;
    for (n, id) in ids.iter().enumerate() {
        assert_note(&back.expect_event().await, id, n as u64);
    }
    drop(back);

    // A channel with history primes a newcomer at its head: it resumes with what came after,
    // and nothing from before it joined.
    let mut late = SseClient::open(&http, &url, None).await;
    let heartbeat = late.expect_event().await;
    assert_eq!(heartbeat.event, "heartbeat");
    assert_eq!(heartbeat.id, ids[3], "primed at the channel's last event");
    drop(late);
    let after: Vec<String> = (4..6).map(|n| publish(&hub, &dave, n)).collect();
    let mut back = SseClient::resume(&http, &url, &heartbeat.id).await;
    for (n, id) in after.iter().enumerate() {
        assert_note(&back.expect_event().await, id, n as u64 + 4);
    }
    let live = publish(&hub, &dave, 6);
    assert_note(&back.expect_event().await, &live, 6);
}

// 4. Ids that cannot be resumed: a `reset`, then live events, never an HTTP error.

/// Checks a stream that must start with a reset for `reason`, then carry the live events:
/// returns the reset event.
async fn expect_reset_then_live(
    client: &mut SseClient,
    hub: &Broadcaster<Value>,
    user: &UserId,
    reason: &str,
    n: u64,
) -> Event {
    assert_eq!(client.status, StatusCode::OK, "a bad id is no HTTP error");
    assert_eq!(
        client.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    let reset = client.expect_event().await;
    assert_reset(&reset, reason);
    let live = publish(hub, user, n);
    assert_note(&client.expect_event().await, &live, n);
    reset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_from_an_expired_channel_is_reset_as_stale() {
    let mut config = Config::default();
    config.retention = Duration::ZERO;
    let hub = json_hub(config);
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let erin = UserId::from("erin");
    let url = server.events_url("erin");

    let mut tab = SseClient::open(&http, &url, None).await;
    let ids: Vec<String> = (0..2).map(|n| publish(&hub, &erin, n)).collect();
    for (n, id) in ids.iter().enumerate() {
        assert_note(&tab.expect_event().await, id, n as u64);
    }
    let old = tab.parser_last_event_id().to_owned();
    drop(tab);
    // The server drops the subscription when hyper sees the socket closed, asynchronously; the
    // channel is then idle with a zero retention, and a sweep removes it. Poll for that.
    wait_until("erin's channel is removed", WAIT, || {
        hub.sweep();
        hub.buffered_by_user()
            .iter()
            .all(|(user, _, _)| *user != erin)
    })
    .await;

    let mut back = SseClient::resume(&http, &url, &old).await;
    let reset = expect_reset_then_live(&mut back, &hub, &erin, "stale", 10).await;
    let new_epoch = parse_id(back.parser_last_event_id()).epoch();
    assert_ne!(new_epoch, parse_id(&old).epoch(), "a new channel");
    // The reset leaves the client primed on the new channel, before its first event.
    assert_eq!(reset.id, EventId::new(new_epoch, 0).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_of_another_users_channel_is_reset_as_stale() {
    let hub = json_hub(Config::default());
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let (rita, sam) = (UserId::from("rita"), UserId::from("sam"));

    let _rita = SseClient::open(&http, &server.events_url("rita"), None).await;
    let _sam = SseClient::open(&http, &server.events_url("sam"), None).await;
    let ritas = publish(&hub, &rita, 0);
    publish(&hub, &rita, 1);
    publish(&hub, &sam, 0);
    // Rita's id on sam's stream replays nothing of either channel.
    let mut client = SseClient::resume(&http, &server.events_url("sam"), &ritas).await;
    expect_reset_then_live(&mut client, &hub, &sam, "stale", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ids_are_reset_as_malformed() {
    let hub = json_hub(Config::default());
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let frank = UserId::from("frank");
    let url = server.events_url("frank");

    // A channel with history, so a reset can be told from a resume.
    let _keep = SseClient::open(&http, &url, None).await;
    let valid = publish(&hub, &frank, 0);

    let headers: Vec<(&str, HeaderValue)> = vec![
        ("garbage", HeaderValue::from_static("garbage")),
        (
            "10 KB of text",
            HeaderValue::from_str(&"a".repeat(10 * 1024)).unwrap(),
        ),
        (
            "a valid id followed by 10 KB of digits",
            HeaderValue::from_str(&format!("{valid}{}", "0".repeat(10 * 1024))).unwrap(),
        ),
        (
            "bytes that are not UTF-8",
            HeaderValue::from_bytes(b"\xff\xfe\x801-1").unwrap(),
        ),
        (
            "a valid id with a suffix",
            HeaderValue::from_str(&format!("{valid}x")).unwrap(),
        ),
    ];
    let mut n = 1;
    for (what, value) in headers {
        let mut client = SseClient::open(&http, &url, Some(value)).await;
        let reset = expect_reset_then_live(&mut client, &hub, &frank, "malformed", n).await;
        // Primed at the channel's head when it joined: the event before the live one.
        let head = parse_id(client.parser_last_event_id());
        assert_eq!(
            reset.id,
            EventId::new(head.epoch(), head.seq() - 1).to_string(),
            "{what}"
        );
        n += 1;
    }
    for query in ["garbage", "%FF%FE", "1-1-1"] {
        let mut client =
            SseClient::open(&http, &format!("{url}?last_event_id={query}"), None).await;
        expect_reset_then_live(&mut client, &hub, &frank, "malformed", n).await;
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_outside_a_small_replay_window_are_reset_as_expired_or_unknown() {
    let mut config = Config::default();
    config.replay_events = 3;
    let hub = json_hub(config);
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let gina = UserId::from("gina");
    let url = server.events_url("gina");

    let _keep = SseClient::open(&http, &url, None).await;
    // Notes 0..6 have seqs 1..=6; the window keeps the last three, seqs 4, 5 and 6.
    let ids: Vec<String> = (0..6).map(|n| publish(&hub, &gina, n)).collect();
    let mut n = 6;

    // Seq 3 is the boundary: everything after it is still in the window.
    let mut client = SseClient::resume(&http, &url, &ids[2]).await;
    assert_eq!(client.status, StatusCode::OK);
    for (k, id) in ids.iter().enumerate().skip(3) {
        assert_note(&client.expect_event().await, id, k as u64);
    }
    drop(client);

    // Seq 1 and seq 2 are followed by events the window lost. Each live note published here
    // slides the window on.
    for old in &ids[..2] {
        let mut client = SseClient::resume(&http, &url, old).await;
        let reset = expect_reset_then_live(&mut client, &hub, &gina, "expired", n).await;
        assert_eq!(
            parse_id(&reset.id).seq(),
            parse_id(client.parser_last_event_id()).seq() - 1,
            "primed at the head"
        );
        n += 1;
    }
    // Two more notes were published (seqs 7 and 8): seq 3 has now expired as well.
    let mut client = SseClient::resume(&http, &url, &ids[2]).await;
    expect_reset_then_live(&mut client, &hub, &gina, "expired", n).await;
    n += 1;

    // An id of this channel ahead of anything it published.
    let epoch = parse_id(&ids[0]).epoch();
    let ahead = EventId::new(epoch, 1_000).to_string();
    let mut client = SseClient::resume(&http, &url, &ahead).await;
    expect_reset_then_live(&mut client, &hub, &gina, "unknown", n).await;
}

// 5. Heartbeats.

fn heartbeat_config(heartbeat: Heartbeat, interval: Duration) -> Config {
    let mut config = Config::default();
    config.sse.heartbeat = heartbeat;
    config.sse.heartbeat_interval = interval;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_heartbeat_events() {
    let interval = Duration::from_millis(200);
    let hub = json_hub(heartbeat_config(Heartbeat::Event, interval));
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();

    let opened = Instant::now();
    let mut tab = SseClient::open(&http, &server.events_url("hana"), None).await;
    let mut beats = Vec::new();
    for _ in 0..2 {
        let event = tab.expect_event().await;
        beats.push(opened.elapsed());
        assert_eq!(event.event, "heartbeat");
        assert_eq!(event.data, r#"{"type":"heartbeat"}"#);
    }
    // Not before a whole idle interval, each time (the server's timer starts after `opened`).
    assert!(beats[0] >= interval, "first heartbeat after {:?}", beats[0]);
    assert!(
        beats[1] >= interval * 2,
        "second heartbeat after {:?}",
        beats[1]
    );
    let (_, rest) = split_opening(tab.raw());
    assert_eq!(
        rest,
        b"event: heartbeat\ndata: {\"type\":\"heartbeat\"}\n\n".repeat(2),
        "a heartbeat carries no id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_comment_heartbeats_that_parsers_ignore() {
    let interval = Duration::from_millis(200);
    let hub = json_hub(heartbeat_config(Heartbeat::Comment, interval));
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();

    let opened = Instant::now();
    let mut tab = SseClient::open(&http, &server.events_url("ivan"), None).await;
    tab.read_raw_until(WAIT, |raw| count(raw, b": heartbeat\n\n") == 2)
        .await;
    assert!(opened.elapsed() >= interval * 2);
    let (_, rest) = split_opening(tab.raw());
    assert_eq!(rest, b": heartbeat\n\n: heartbeat\n\n");
    // The parser was fed those bytes and dispatches nothing for them.
    assert_eq!(tab.event_within(Duration::from_millis(50)).await, Err(()));
    assert_eq!(
        split_opening(tab.raw()).1,
        b": heartbeat\n\n: heartbeat\n\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_off_sends_nothing_on_an_idle_stream() {
    let interval = Duration::from_millis(100);
    let hub = json_hub(heartbeat_config(Heartbeat::Off, interval));
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();

    let mut tab = SseClient::open(&http, &server.events_url("jana"), None).await;
    tab.read_opening().await;
    // Five intervals of silence: this window is the assertion, not a wait for something.
    assert_eq!(tab.event_within(interval * 5).await, Err(()));
    let (_, rest) = split_opening(tab.raw());
    assert!(rest.is_empty(), "bytes after the opening: {rest:?}");
    assert_eq!(hub.connection_count(&UserId::from("jana")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_events_gets_no_heartbeat() {
    // Long enough that a scheduling hiccup of the publisher on a busy machine is not idleness.
    let interval = Duration::from_millis(500);
    let hub = json_hub(heartbeat_config(Heartbeat::Event, interval));
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let kim = UserId::from("kim");

    let mut tab = SseClient::open(&http, &server.events_url("kim"), None).await;
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let event = tab.expect_event().await;
            let heartbeat = event.event == "heartbeat";
            seen.push((Instant::now(), event));
            if heartbeat {
                return seen;
            }
        }
    });
    // An event every 25 ms for 1.5 s: three heartbeat intervals, never idle. (The sleep paces
    // the publisher; it waits for nothing.)
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(publish(&hub, &kim, n));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seen = bounded("the heartbeat after the events", WAIT, reader)
        .await
        .unwrap();
    assert_eq!(seen.len(), 61, "60 notes then one heartbeat: {seen:?}");
    for (n, ((_, event), id)) in seen.iter().zip(&ids).enumerate() {
        assert_note(event, id, n as u64);
    }
    let (last_note, _) = seen[59];
    let (beat, heartbeat) = &seen[60];
    assert_eq!(heartbeat.event, "heartbeat");
    // Idle means idle: the heartbeat comes a whole interval after the last event, not before
    // (a little slack for the reader's own scheduling).
    assert!(
        beat.duration_since(last_note) >= interval - Duration::from_millis(50),
        "heartbeat {:?} after the last event",
        beat.duration_since(last_note)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_comes_one_interval_after_the_last_event_not_two() {
    // The timer is armed when the stream opens; an event a third of an interval later makes it
    // due while the wire has been idle for only two thirds of one. A proxy that cuts idle
    // connections after a little more than the interval must still see the heartbeat in time.
    let interval = Duration::from_millis(1_000);
    let hub = json_hub(heartbeat_config(Heartbeat::Event, interval));
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let mona = UserId::from("mona");

    let mut tab = SseClient::open(&http, &server.events_url("mona"), None).await;
    tab.read_opening().await;
    // Paces the publish into the first interval; it waits for nothing.
    tokio::time::sleep(interval / 3).await;
    let id = publish(&hub, &mona, 1);
    let note = tab.expect_event().await;
    let written = Instant::now();
    assert_note(&note, &id, 1);
    let heartbeat = tab.expect_event().await;
    let silence = written.elapsed();
    assert_eq!(heartbeat.event, "heartbeat");
    // Re-armed from when the timer fired, it came 5/3 of an interval after the event.
    assert!(
        silence <= interval * 13 / 10,
        "the wire was idle for {silence:?}, with a heartbeat interval of {interval:?}"
    );
    assert!(
        silence >= interval - Duration::from_millis(50),
        "a heartbeat {silence:?} after the event, before an idle interval"
    );
}

/// The same, exact to the millisecond on tokio's paused clock, through the body itself.
#[tokio::test(start_paused = true)]
async fn the_heartbeat_timer_counts_from_the_last_write() {
    use futures_util::StreamExt;
    let interval = Duration::from_secs(15);
    let hub = json_hub(heartbeat_config(Heartbeat::Comment, interval));
    let nina = UserId::from("nina");
    let mut body = hub
        .sse_response(&nina, &sse_hub::LastEventId::default())
        .expect("subscribe")
        .into_stream();
    let opening = bounded("the opening", WAIT, body.next())
        .await
        .unwrap()
        .unwrap();
    assert!(opening.starts_with(b"id: "), "{opening:?}");
    for wait in [Duration::from_millis(100), Duration::from_secs(9)] {
        tokio::time::sleep(wait).await;
        publish(&hub, &nina, 1);
        let event = bounded("the event", WAIT, body.next())
            .await
            .unwrap()
            .unwrap();
        assert!(event.starts_with(b"data: "), "{event:?}");
    }
    let written = Instant::now();
    let beat = bounded("the heartbeat", interval * 3, body.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&beat[..], b": heartbeat\n\n");
    assert_eq!(written.elapsed(), interval);
}

// 6. Headers and the first bytes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_has_sse_headers_and_its_first_bytes_come_at_once() {
    let hub = json_hub(Config::default());
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();

    let mut tab = SseClient::open(&http, &server.events_url("lena"), None).await;
    assert_eq!(tab.status, StatusCode::OK);
    let header = |name: &str| {
        tab.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(header("content-encoding"), None);
    assert_eq!(header("content-length"), None, "a stream has no length");

    // Nothing is published: the opening frame must come by itself, well within a second.
    tab.read_raw_until(Duration::from_secs(1), |raw| find(raw, b"\n\n").is_some())
        .await;
    let text = tab.raw_text();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 4, "one frame, nothing else: {text:?}");
    let id = lines[0].strip_prefix("id: ").expect("an id line first");
    assert_eq!(parse_id(id).seq(), 0, "a fresh channel primes before seq 1");
    assert_eq!(&lines[1..], ["retry: 1000", "", ""]);
}

// 7. Data round-trips exactly through the parser.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_and_cr_lf_data_round_trips_through_the_parser() {
    let hub: Broadcaster<String> = Broadcaster::new(Config::default());
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let mia = UserId::from("mia");
    let mut tab = SseClient::open(&http, &server.events_url("mia"), None).await;

    let cases = [
        "one line",
        "two\nlines",
        "crlf\r\nbreak",
        "lone\rcr",
        "mixed\r\n\n\r\r\nbreaks",
        "trailing newline\n",
        "trailing crlf\r\n",
        "trailing cr\r",
        "\n",
        "\r\n\r\n",
        "",
        "  two leading spaces",
        " one leading space\n  and two",
        ": looks like a comment",
        "data: looks like a field\n\nevent: x\nid: 99\nretry: 1\n",
        "ünïcødé — 日本語 — 🎉\r\nzweite Zeile",
        "tab\tand nul\0inside",
    ];
    let mut sent = Vec::new();
    for (i, data) in cases.iter().enumerate() {
        for name in [None, Some("note")] {
            let payload = Payload::from_text(name, data).unwrap();
            let published = hub.broadcast_payload(&mia, payload).unwrap();
            assert_eq!(published.connections(), Some(1));
            sent.push((i, name, published.id.unwrap().to_string()));
        }
    }
    for (i, name, id) in sent {
        let data = cases[i];
        // CRLF and a lone CR are each one line break: the client sees LF.
        let expected = data.replace("\r\n", "\n").replace('\r', "\n");
        let event = tab.expect_event().await;
        assert_eq!(event.data, expected, "case {i} {data:?} named {name:?}");
        assert_eq!(event.event, name.unwrap_or("message"), "case {i}");
        assert_eq!(event.id, id, "case {i}");
    }
}

// 8. Refusals: 429 at the per-user cap, 503 after shutdown, with JSON bodies.

async fn json_error(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body = bounded("the error body", WAIT, response.bytes())
        .await
        .unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_is_429_and_shutdown_is_503_with_json_bodies() {
    let mut config = Config::default();
    config.max_connections_per_user = 2;
    let hub = json_hub(config);
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let nina = UserId::from("nina");
    let url = server.events_url("nina");

    let first = SseClient::open(&http, &url, None).await;
    let mut second = SseClient::open(&http, &url, None).await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );

    let third = bounded("the third response", WAIT, http.get(&url).send())
        .await
        .unwrap();
    let (status, body) = json_error(third).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "too_many_connections");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        hub.connection_count(&nina),
        2,
        "the refused one left no trace"
    );

    // The cap is per user.
    let other = SseClient::open(&http, &server.events_url("omar"), None).await;
    assert_eq!(other.status, StatusCode::OK);

    // A slot frees when a connection goes: the server notices the closed socket
    // asynchronously, so poll the count.
    drop(first);
    wait_until("nina has one connection", WAIT, || {
        hub.connection_count(&nina) == 1
    })
    .await;
    let mut again = SseClient::open(&http, &url, None).await;
    assert_eq!(again.status, StatusCode::OK);

    hub.shutdown();
    let refused = bounded("the response after shutdown", WAIT, http.get(&url).send())
        .await
        .unwrap();
    let (status, body) = json_error(refused).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "shutting_down");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    // The open streams ended.
    for client in [&mut second, &mut again] {
        assert_eq!(client.read_to_end(WAIT).await, Vec::<Event>::new());
        assert_eq!(client.end(), Some(&End::Complete));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_cap_is_503_with_a_json_body() {
    let mut config = Config::default();
    config.max_channels = 1;
    let hub = json_hub(config);
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();

    let first = SseClient::open(&http, &server.events_url("tom"), None).await;
    assert_eq!(first.status, StatusCode::OK);
    let refused = bounded(
        "the response at capacity",
        WAIT,
        http.get(server.events_url("uma")).send(),
    )
    .await
    .unwrap();
    let (status, body) = json_error(refused).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "at_capacity");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    // The user who holds the one channel may still open more connections.
    let second = SseClient::open(&http, &server.events_url("tom"), None).await;
    assert_eq!(second.status, StatusCode::OK);
}

// 9. The count falls when a client disconnects.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_count_falls_when_clients_disconnect() {
    // Default heartbeat (15 s): the server must notice a closed socket by itself, not through a
    // failed heartbeat write.
    let hub = json_hub(Config::default());
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let omar = UserId::from("omar");
    let url = server.events_url("omar");

    let mut tabs = Vec::new();
    for _ in 0..3 {
        let mut tab = SseClient::open(&http, &url, None).await;
        tab.read_opening().await;
        tabs.push(tab);
    }
    assert_eq!(hub.connection_count(&omar), 3);
    assert_eq!(hub.total_connections(), 3);
    assert_eq!(hub.user_count(), 1);

    // Dropping the response closes its TCP connection; the server sees it when hyper next reads
    // the socket, asynchronously: poll the count, bounded.
    drop(tabs.pop());
    wait_until("omar has 2 connections", WAIT, || {
        hub.connection_count(&omar) == 2
    })
    .await;
    assert_eq!(hub.total_connections(), 2);

    drop(tabs);
    wait_until("omar has no connection", WAIT, || {
        hub.connection_count(&omar) == 0 && hub.total_connections() == 0
    })
    .await;
    assert_eq!(hub.user_count(), 0);
    assert_eq!(hub.stats().connections, 0);
}

// 10. Graceful shutdown with many idle clients.

/// Lets this process hold a few thousand sockets: the soft descriptor limit may be 1 024.
fn raise_descriptor_limit() {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_2000_idle_clients_is_prompt_and_ends_every_stream_with_retry() {
    const TASKS: usize = 10;
    const PER_TASK: usize = 200;
    const USERS: usize = 200;
    raise_descriptor_limit();
    let hub = json_hub(Config::default());
    let server = TestServer::start(router(hub.clone())).await;

    let (ready, mut all_ready) = tokio::sync::mpsc::channel::<()>(TASKS);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let http = http_client();
        let urls: Vec<String> = (0..PER_TASK)
            .map(|i| server.events_url(&format!("user-{}", (task * PER_TASK + i) % USERS)))
            .collect();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            let mut clients = join_all(urls.iter().map(|url| {
                let http = &http;
                async move {
                    let mut client = SseClient::open(http, url, None).await;
                    assert_eq!(client.status, StatusCode::OK);
                    client.read_opening().await;
                    client
                }
            }))
            .await;
            ready.send(()).await.unwrap();
            let mut ends = Vec::new();
            for client in &mut clients {
                let events = client.read_to_end(WAIT).await;
                ends.push((events, client.end().cloned(), client.raw().to_vec()));
            }
            ends
        }));
    }
    drop(ready);
    bounded("2000 open streams", Duration::from_secs(30), async {
        for _ in 0..TASKS {
            all_ready.recv().await.unwrap();
        }
    })
    .await;
    assert_eq!(hub.total_connections(), TASKS * PER_TASK);

    let started = Instant::now();
    hub.shutdown();
    server.shut_down(WAIT).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "axum::serve took {elapsed:?} to return"
    );
    assert_eq!(hub.total_connections(), 0);

    let mut checked = 0;
    for task in tasks {
        for (events, end, raw) in bounded("a client task", WAIT, task).await.unwrap() {
            assert_eq!(end, Some(End::Complete), "the body completed cleanly");
            assert_eq!(events, Vec::<Event>::new());
            // The last frame before the end is the jittered retry hint (default jitter 5 s).
            let (_, rest) = split_opening(&raw);
            let rest = std::str::from_utf8(rest).unwrap();
            let delay = rest
                .strip_prefix("retry: ")
                .and_then(|r| r.strip_suffix("\n\n"))
                .unwrap_or_else(|| panic!("the stream ended with {rest:?}"));
            let delay: u64 = delay.parse().unwrap();
            assert!(delay <= 5_000, "retry {delay} ms");
            checked += 1;
        }
    }
    assert_eq!(checked, TASKS * PER_TASK);
}

// 11. disconnect_user.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_user_ends_only_that_users_streams_and_a_reconnect_loses_nothing() {
    let hub = json_hub(Config::default());
    let server = TestServer::start(router(hub.clone())).await;
    let http = http_client();
    let (pia, quinn) = (UserId::from("pia"), UserId::from("quinn"));
    let pia_url = server.events_url("pia");

    let mut pias = Vec::new();
    for _ in 0..2 {
        pias.push(SseClient::open(&http, &pia_url, None).await);
    }
    let mut quinns = SseClient::open(&http, &server.events_url("quinn"), None).await;
    let mut ids: Vec<String> = (0..3).map(|n| publish(&hub, &pia, n)).collect();
    for tab in &mut pias {
        for (n, id) in ids.iter().enumerate() {
            assert_note(&tab.expect_event().await, id, n as u64);
        }
    }

    assert_eq!(hub.disconnect_user(&pia), 2);
    for tab in &mut pias {
        assert_eq!(tab.read_to_end(WAIT).await, Vec::<Event>::new());
        assert_eq!(tab.end(), Some(&End::Complete), "the body completed");
        assert_eq!(tab.parser_last_event_id(), ids[2]);
    }
    // The server drops each subscription once hyper has finished the response: poll.
    wait_until("pia has no connection", WAIT, || {
        hub.connection_count(&pia) == 0
    })
    .await;

    // Quinn's stream is still open and live.
    assert_eq!(hub.connection_count(&quinn), 1);
    let for_quinn = hub
        .broadcast(&quinn, &json!({"type": "note", "n": 50}))
        .unwrap();
    assert_eq!(for_quinn.connections(), Some(1));
    assert_note(
        &quinns.expect_event().await,
        &for_quinn.id.unwrap().to_string(),
        50,
    );

    // Published while pia is away: kept in the window of her retained channel.
    ids.extend((3..5).map(|n| publish(&hub, &pia, n)));
    let mut backs = Vec::new();
    for tab in &pias {
        backs.push(SseClient::resume(&http, &pia_url, tab.parser_last_event_id()).await);
    }
    ids.push(publish(&hub, &pia, 5));
    for back in &mut backs {
        assert_eq!(back.status, StatusCode::OK);
        for (n, id) in ids.iter().enumerate().skip(3) {
            assert_note(&back.expect_event().await, id, n as u64);
        }
    }
    assert_eq!(hub.connection_count(&pia), 2);
}
