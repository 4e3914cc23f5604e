//! What the AG-UI tests across nodes share (`tests/agui_nodes.rs`, `tests/agui_node_faults.rs`):
//! whether they can run, the bound of one wait, demo servers as nodes, and the scene of the
//! tests that break one node's link to Redis.
//!
//! Each including crate declares `mod support;`, `mod support_agui;` and the backplane support
//! as `mod backplane;`, which this module uses.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use crate::backplane::{FaultProxy, RedisServer, redis_available};
use crate::support::DemoServer;
use crate::support_agui::judge_available;

/// The bound of one wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// Whether everything the tests need is here (panics under `CI=true` when not).
pub fn available() -> bool {
    redis_available() && judge_available()
}

/// One demo server sharing the test's Redis (killed on drop).
pub struct DemoNode {
    pub name: &'static str,
    pub demo: DemoServer,
}

impl DemoNode {
    pub fn start(name: &'static str, redis_url: &str) -> Self {
        Self {
            name,
            demo: DemoServer::start_with_env(&[("REDIS_URL", redis_url)]),
        }
    }

    /// The URL of `user`'s stream of `thread` (`GET`), and of publishing into it (`POST`).
    pub fn url(&self, user: &str, thread: &str) -> String {
        format!("{}/events/agui/{user}?thread={thread}", self.demo.base)
    }

    /// The URL of `user`'s plain (unthreaded) stream, and of publishing to it.
    pub fn plain_url(&self, user: &str) -> String {
        format!("{}/events/agui/{user}", self.demo.base)
    }
}

/// The scene of the tests that break one node's link: a `redis-server`, node A on it, and node
/// B on it through a fault proxy, so that only B's link breaks. `N` is the kind of node (a demo
/// server, or an in-process router), started by name and Redis URL.
pub struct ProxiedPair<N> {
    pub redis: RedisServer,
    pub proxy: FaultProxy,
    pub a: N,
    pub b: N,
}

impl<N> ProxiedPair<N> {
    pub async fn start(start: impl AsyncFn(&'static str, String) -> N) -> Self {
        let redis = RedisServer::start().await;
        let proxy = FaultProxy::start(redis.addr()).await;
        let a = start("A", redis.url()).await;
        let b = start("B", proxy.url()).await;
        Self { redis, proxy, a, b }
    }
}

impl ProxiedPair<DemoNode> {
    /// The nodes as demo servers.
    pub async fn demo_servers() -> Self {
        Self::start(async |name, url| DemoNode::start(name, &url)).await
    }
}
