//! The Redis backplane over TLS (`rediss://`, cargo feature `redis-tls`), against real
//! `redis-server` processes that speak only TLS, with a CA and certificates made by each test
//! (rcgen): nodes that trust the CA deliver and resume across nodes; a node that does not
//! trust it, or that shows no client certificate to a server that requires one, never connects,
//! says why in its health, and receives nothing; a handshake that is never answered times out
//! and is retried. Settings that cannot work are refused when the backplane is created. The
//! demo server reaches such a Redis with the CA in `REDIS_CA`, and refuses to start with a
//! `REDIS_CA` it cannot use.
//!
//! Without `redis-server` on the `PATH`, or with one built without TLS, the server tests print
//! `SKIPPED` and pass, except under `CI=true`, where either is a failure. Every wait is bounded.
#![cfg(feature = "redis-tls")]

use std::time::Duration;

use sse_hub::Config;
use sse_hub::backplane::{BackplaneError, RedisBackplane, RedisConfig, RedisTls};

#[path = "support/backplane.rs"]
mod support;

#[path = "support/mod.rs"]
mod demo;

use support::tls::{ClientAuth, TestCa};
use support::{
    EsClient, Node, RedisServer, Seen, WAIT, first_error, id_key, listening_client,
    redis_available, settings,
};

/// The test settings of a node of `redis`, with `tls`.
fn tls_settings(redis: &RedisServer, tls: RedisTls) -> RedisConfig {
    let mut settings = settings(redis.url());
    settings.tls = tls;
    settings
}

/// A node of `redis` that trusts its CA (and shows the CA's client certificate), connected
/// and served over HTTP.
async fn trusted_node(redis: &RedisServer) -> Node {
    let tls = redis.tls.as_ref().unwrap().trusting_with_client_cert();
    Node::start(tls_settings(redis, tls), Config::default())
        .await
        .serve()
        .await
}

/// The events `seen`: (id, n).
fn events(seen: &[Seen]) -> Vec<(String, u64)> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Event { id, n } => Some((id.clone().expect("an id"), *n)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn two_nodes_over_tls_deliver_across_nodes_and_resume_by_last_event_id() {
    if !redis_available() {
        return;
    }
    let Some(redis) = RedisServer::start_tls(ClientAuth::No).await else {
        return;
    };
    let trusting = redis.tls.as_ref().unwrap().trusting();
    let a = Node::start(tls_settings(&redis, trusting.clone()), Config::default())
        .await
        .serve()
        .await;
    let b = Node::start(tls_settings(&redis, trusting), Config::default())
        .await
        .serve()
        .await;

    let on_b = listening_client(&redis, &b, "alice").await;
    for n in 1..=2 {
        let published = a.publish("alice", n).await.expect("publish on A");
        assert_eq!(
            published.nodes(),
            Some(1),
            "B, and only B, listens to alice"
        );
    }
    assert!(on_b.wait_for_event(WAIT, 2).await, "{:?}", on_b.seen());
    let seen = events(&on_b.stop().await);
    assert_eq!(seen.iter().map(|e| e.1).collect::<Vec<_>>(), [1, 2]);
    let resume_from = seen[1].0.clone();

    // Away: two more events go to the history only; the client comes back on A.
    for n in 3..=4 {
        a.publish_stored("alice", n).await;
    }
    let on_a = EsClient::spawn(
        a.url("alice"),
        Some(resume_from.clone()),
        Duration::from_millis(100),
    );
    assert!(on_a.wait_for_event(WAIT, 4).await, "{:?}", on_a.seen());
    b.publish("alice", 5).await.expect("publish on B");
    assert!(on_a.wait_for_event(WAIT, 5).await, "{:?}", on_a.seen());
    let seen = on_a.stop().await;
    assert_eq!(
        seen.first(),
        Some(&Seen::Opened {
            resumed_from: Some(resume_from.clone())
        })
    );
    let resumed = events(&seen);
    assert_eq!(
        resumed.iter().map(|e| e.1).collect::<Vec<_>>(),
        [3, 4, 5],
        "from the history after the client's id, then live: {seen:?}"
    );
    let mut last = id_key(&resume_from);
    for (id, _) in &resumed {
        assert!(id_key(id) > last, "ids in order: {seen:?}");
        last = id_key(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn a_node_that_does_not_trust_the_servers_ca_never_connects_and_says_why() {
    if !redis_available() {
        return;
    }
    let Some(redis) = RedisServer::start_tls(ClientAuth::No).await else {
        return;
    };
    let trusted = trusted_node(&redis).await;
    // One node trusts another CA; one trusts the default roots (the platform's, or the
    // compiled-in Mozilla roots), which the test CA is not among either.
    let mut other_ca = RedisTls::default();
    other_ca.root_certs = Some(TestCa::new("another CA").cert_pem.into_bytes());
    for (tls, user) in [(other_ca, "bob"), (RedisTls::default(), "carol")] {
        let untrusting = Node::new(tls_settings(&redis, tls.clone()), Config::default())
            .serve()
            .await;
        let health = first_error(&untrusting.backplane).await;
        assert!(!health.connected, "{tls:?}: {health:?}");
        let error = health.last_error.unwrap();
        assert!(
            error.contains("certificate") && error.contains("UnknownIssuer"),
            "{tls:?}: the error says the server's certificate is not trusted: {error}"
        );

        // Its stream of the user (served degraded) gets nothing from Redis: the user's event
        // reaches the trusted node only.
        let on_untrusting = EsClient::spawn(untrusting.url(user), None, Duration::from_millis(100));
        let on_trusted = listening_client(&redis, &trusted, user).await;
        let published = trusted.publish(user, 1).await.expect("publish");
        assert_eq!(published.nodes(), Some(1), "only the trusted node listens");
        assert!(on_trusted.wait_for_event(WAIT, 1).await);
        let health = untrusting.backplane.health();
        assert_eq!(
            (
                health.connected,
                health.listening,
                health.received,
                health.version
            ),
            (false, 0, 0, None),
            "{tls:?}"
        );
        assert!(
            events(&on_untrusting.stop().await).is_empty(),
            "the untrusting node delivered an event"
        );
        on_trusted.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn mutual_tls_connects_with_the_client_certificate_and_not_without() {
    if !redis_available() {
        return;
    }
    let Some(redis) = RedisServer::start_tls(ClientAuth::Required).await else {
        return;
    };
    let a = trusted_node(&redis).await;
    let b = trusted_node(&redis).await;
    let on_b = listening_client(&redis, &b, "alice").await;
    let published = a.publish("alice", 1).await.expect("publish on A");
    assert_eq!(published.nodes(), Some(1));
    assert!(on_b.wait_for_event(WAIT, 1).await, "{:?}", on_b.seen());
    on_b.stop().await;

    // The CA trusted, but no certificate shown, or one from another CA.
    let server = redis.tls.as_ref().unwrap();
    let other = TestCa::new("another CA").client();
    let mut foreign = server.trusting();
    foreign.client_cert = Some(other.cert_pem.into_bytes());
    foreign.client_key = Some(other.key_pem.into_bytes());
    for tls in [server.trusting(), foreign] {
        let refused = RedisBackplane::new(tls_settings(&redis, tls.clone())).unwrap();
        let health = first_error(&refused).await;
        assert!(!health.connected, "{tls:?}: {health:?}");
        assert_eq!(health.version, None, "{tls:?}: no command got through");
        let error = health.last_error.unwrap();
        assert!(
            error.contains("alert"),
            "{tls:?}: the error says the server refused the handshake: {error}"
        );
    }
}

#[test]
fn tls_settings_that_cannot_work_are_refused_with_a_typed_error() {
    let ca = TestCa::new("a CA");
    let client = ca.client();
    let stranger = TestCa::new("another CA").client();
    let pem = |text: &str| Some(text.as_bytes().to_vec());
    let with = |url: &str, change: &dyn Fn(&mut RedisTls)| {
        let mut config = RedisConfig::new(url);
        config.tls.root_certs = pem(&ca.cert_pem);
        change(&mut config.tls);
        config
    };
    let url = "rediss://127.0.0.1:1/";
    let cases: [(RedisConfig, &str); 9] = [
        (
            with(url, &|t| t.root_certs = pem("not PEM")),
            "tls.root_certs",
        ),
        (
            with(url, &|t| {
                t.root_certs = pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            }),
            "tls.root_certs",
        ),
        (
            with(url, &|t| t.client_cert = pem(&client.cert_pem)),
            "tls.client_key",
        ),
        (
            with(url, &|t| t.client_key = pem(&client.key_pem)),
            "tls.client_cert",
        ),
        (
            with(url, &|t| {
                t.client_cert = pem(&client.cert_pem);
                t.client_key = pem(&client.cert_pem);
            }),
            "tls.client_key",
        ),
        (
            with(url, &|t| {
                t.client_cert = pem(&client.cert_pem);
                t.client_key = pem(&stranger.key_pem);
            }),
            "tls.client_key",
        ),
        (
            with(url, &|t| {
                t.client_cert = pem("no certificate here");
                t.client_key = pem(&client.key_pem);
            }),
            "tls.client_cert",
        ),
        (with("redis://127.0.0.1:1/", &|_| {}), "tls"),
        (with("rediss://127.0.0.1:1/#insecure", &|_| {}), "url"),
    ];
    for (config, setting) in cases {
        match RedisBackplane::new(config.clone()) {
            Err(BackplaneError::InvalidConfig {
                setting: got,
                problem,
            }) => {
                assert_eq!(got, setting, "{problem}: {config:?}");
                assert_eq!(
                    config.validate(),
                    Err(BackplaneError::InvalidConfig { setting, problem })
                );
            }
            other => panic!("{setting}: {other:?}"),
        }
    }

    let mut good = with(url, &|t| {
        t.client_cert = pem(&client.cert_pem);
        t.client_key = pem(&client.key_pem);
    });
    assert_eq!(good.validate(), Ok(()));
    assert!(
        !format!("{good:?}").contains("PRIVATE KEY"),
        "the config's Debug shows the client key"
    );
    good.tls = RedisTls::default();
    assert_eq!(good.validate(), Ok(()), "the default roots");
}

/// A server that takes the TCP connection and never answers the TLS handshake (a TLS port
/// behind a stalled proxy, say): each attempt must give up within the command timeout, say
/// why in the health, and be retried with backoff; the connection task must not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_answers_times_out_and_is_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let silent = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            // Holds every connection open, reading nothing, answering nothing.
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(socket);
            }
        }
    });
    let mut config = RedisConfig::new(format!("rediss://127.0.0.1:{port}/"));
    config.tls.root_certs = Some(TestCa::new("a CA").cert_pem.into_bytes());
    config.command_timeout = Duration::from_millis(300);
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    let backplane = RedisBackplane::new(config).unwrap();
    let health = first_error(&backplane).await;
    assert!(!health.connected, "{health:?}");
    let error = health.last_error.unwrap();
    assert!(
        error.contains("timed out"),
        "the error says the attempt timed out: {error}"
    );
    let retried = tokio::time::timeout(WAIT, async {
        while accepted.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(retried.is_ok(), "not retried: {:?}", backplane.health());
    silent.abort();
}

/// The demo server's `REDIS_CA`: with a `rediss://` `REDIS_URL` whose server certificate the
/// test CA signed, it connects (the default roots would not trust it: see
/// `a_node_that_does_not_trust_the_servers_ca_never_connects_and_says_why`), and an event
/// published over HTTP goes through Redis to an SSE client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(missing_redis, ignore = "redis-server not found (see build.rs)")]
async fn the_demo_server_trusts_the_ca_in_redis_ca() {
    if !redis_available() {
        return;
    }
    let Some(redis) = RedisServer::start_tls(ClientAuth::No).await else {
        return;
    };
    let ca = redis.tls.as_ref().unwrap().ca_file();
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let server = demo::DemoServer::start_with_env(&[
        ("REDIS_URL", url.as_str()),
        ("REDIS_CA", ca.to_str().expect("a UTF-8 path")),
    ]);
    let stream = server.url("/events/agui/ada");
    // Primed: the demo listens to ada's feed on Redis, and read its history.
    let client = EsClient::spawn(stream.clone(), None, Duration::from_millis(100));
    assert!(client.wait_primed(WAIT).await, "{:?}", client.seen());
    let event = serde_json::json!({"type": "CUSTOM", "name": "n", "value": {"n": 1}});
    let id = demo::publish(&demo::client(), &stream, &event).await;
    assert!(client.wait_for_event(WAIT, 1).await, "{:?}", client.seen());
    assert_eq!(
        events(&client.stop().await),
        [(id, 1)],
        "the event, with the id Redis gave it"
    );
}

/// A `REDIS_CA` the demo cannot use stops it at startup with a message naming `REDIS_CA`:
/// no file there, a file that holds no PEM certificate, and a CA for a `redis://` URL (which
/// would not use it) or for no `REDIS_URL` at all.
#[test]
fn the_demo_server_refuses_a_redis_ca_it_cannot_use() {
    let dir = std::env::temp_dir().join(format!("sse-hub-redis-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not-pem.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let good = dir.join("ca.pem");
    std::fs::write(&good, TestCa::new("a CA").cert_pem).unwrap();
    let missing = dir.join("missing.pem");
    let tls_url = "rediss://127.0.0.1:1/";
    for (url, ca, says) in [
        (tls_url, &missing, "cannot read REDIS_CA"),
        (tls_url, &not_pem, "no PEM certificate"),
        ("redis://127.0.0.1:1/", &good, "not a rediss:// URL"),
        ("", &good, "REDIS_URL is not:"),
    ] {
        let ca = ca.to_str().unwrap();
        let (code, stdout, stderr) = demo::run_demo(&[], &[("REDIS_URL", url), ("REDIS_CA", ca)]);
        assert_eq!(code, Some(1), "{url} {ca}: {stderr}");
        assert!(
            stderr.contains("REDIS_CA") && stderr.contains(says),
            "{url} {ca}: the message names REDIS_CA and says {says:?}: {stderr}"
        );
        assert!(stdout.is_empty(), "{url} {ca}: it started: {stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
