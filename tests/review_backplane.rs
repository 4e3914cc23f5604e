//! Review of the Redis backplane under faults: each test here reproduces one suspected bug
//! against real `redis-server` processes on loopback. Every wait is bounded.
#![cfg(feature = "redis")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_hub::backplane::{RedisBackplane, RedisConfig};
use sse_hub::{Broadcaster, Config, EventId, Frame, FrameKind, Subscription, UserId};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;

use support::{Fault, FaultProxy, RedisServer, free_port, redis_available};

const WAIT: Duration = Duration::from_secs(10);

type Hub = Broadcaster<Value>;

fn settings(url: String) -> RedisConfig {
    let mut settings = RedisConfig::new(url);
    settings.reconnect_min = Duration::from_millis(20);
    settings.reconnect_max = Duration::from_millis(200);
    settings.command_timeout = Duration::from_secs(1);
    settings.ping_interval = Duration::from_millis(100);
    settings
}

struct Node {
    hub: Hub,
    backplane: RedisBackplane,
}

impl Node {
    async fn start(url: String) -> Self {
        Self::with_settings(settings(url)).await
    }

    async fn with_settings(settings: RedisConfig) -> Self {
        let backplane = RedisBackplane::new(settings).expect("backplane");
        assert!(
            backplane.wait_connected(WAIT).await,
            "not connected: {:?}",
            backplane.health()
        );
        let hub = Broadcaster::with_backplane(Config::default(), Arc::new(backplane.clone()));
        Self { hub, backplane }
    }

    async fn publish(&self, user: &str, n: u64) -> EventId {
        self.hub
            .broadcast_async(&UserId::from(user), &json!({ "n": n }))
            .await
            .expect("publish")
            .id
            .expect("an id: the event is stored")
    }

    async fn wait_connected(&self) {
        let ok = timeout(WAIT, async {
            // Disconnected first (the fault was seen), then connected again.
            while self.backplane.health().reconnects == 0 || !self.backplane.is_connected() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(ok.is_ok(), "did not reconnect: {:?}", self.backplane.health());
    }
}

/// The `n` of an event frame.
fn n_of(frame: &Frame) -> Option<u64> {
    let text = std::str::from_utf8(frame.bytes()).ok()?;
    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str::<Value>(data).ok()?["n"].as_u64()
}

/// What a subscription yields within `within`: (kind, n).
async fn drain<E>(sub: &mut Subscription<E>, within: Duration) -> Vec<(FrameKind, Option<u64>)> {
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + within;
    while let Ok(Some(frame)) = tokio::time::timeout_at(until, sub.next()).await {
        out.push((frame.kind(), n_of(&frame)));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A redis-server with RDB persistence in a temporary directory, as Redis runs by default.

struct PersistentRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PersistentRedis {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("sse-hub-review-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
        };
        server.launch().await;
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn launch(&mut self) {
        // No automatic save points: the test takes the snapshot itself (`SAVE`), as a save
        // point would; the server loads `dump.rdb` when it starts.
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--dbfilename", "dump.rdb"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        let up = timeout(WAIT, async {
            loop {
                if let Ok(client) = redis::Client::open(url.as_str())
                    && let Ok(mut c) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(up.is_ok(), "redis-server did not come up");
    }

    async fn save(&self) {
        let mut c = redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("SAVE").query_async(&mut c).await.unwrap();
    }

    /// SIGKILL (a crash, an OOM kill, a node lost), then a restart that loads the last
    /// snapshot.
    async fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.launch().await;
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Redis restarts from a snapshot older than the last events (RDB persistence, Redis's default,
/// after a crash; or a failover to a replica that lagged): the history comes back *without its
/// tail*. A client whose last id is inside the lost tail resumes, after new publishes, with no
/// `reset` and no `lagged`: the confirmed events of the lost tail after its id are skipped
/// silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_restored_without_its_tail_skips_confirmed_events_silently() {
    if !redis_available() {
        return;
    }
    let mut redis = PersistentRedis::start().await;
    let a = Node::start(redis.url()).await;
    let b = Node::start(redis.url()).await;
    let alice = UserId::from("alice");
    // B serves alice (a tab), so that A's publishes are stored.
    let mut tab = b.hub.subscribe_async(&alice, None).await.unwrap();

    let _id1 = a.publish("alice", 1).await;
    redis.save().await; // the last snapshot holds event 1 only
    let id2 = a.publish("alice", 2).await;
    let id3 = a.publish("alice", 3).await;
    let got = drain(&mut tab, Duration::from_millis(500)).await;
    assert_eq!(
        got.iter().filter_map(|(_, n)| *n).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // The client saw 2, then its connection dropped (it will resume with id2); 3 was
    // confirmed to the publisher with an id.
    drop(tab);
    assert!(id3 > id2);

    redis.crash_and_restart().await;
    a.wait_connected().await;
    b.wait_connected().await;
    // Publishing goes on after the restart.
    let id4 = a.publish("alice", 4).await;
    assert!(id4 > id3, "ids still grow: {id4} > {id3}");

    // The client resumes with its last id, on either node.
    let mut resumed = b
        .hub
        .subscribe_async(&alice, Some(&id2.to_string()))
        .await
        .unwrap();
    let got = drain(&mut resumed, Duration::from_millis(500)).await;
    let told = got
        .iter()
        .any(|(kind, _)| matches!(kind, FrameKind::Reset(_) | FrameKind::Lagged { .. }));
    let numbers: Vec<u64> = got.iter().filter_map(|(_, n)| *n).collect();
    assert!(
        told || numbers == [3, 4],
        "event 3 (confirmed as {id3}) was skipped silently: the resume from {id2} yielded {got:?}"
    );
}
