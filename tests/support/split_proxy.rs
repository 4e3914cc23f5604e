//! A proxy that can black-hole one connection (by accept order) and leave the others alone: a
//! TCP connection silently dropped by a stateful firewall or NAT on the way, while another
//! connection to the same Redis, kept busy by PINGs, stays up. It can also hold what one
//! connection sends until told to let it through (a round trip as long as the test wants, on
//! that connection only), cut one connection (both sides closed), and counts the bytes each
//! connection sent towards Redis. Or it holds what Redis sends on one connection
//! ([`Mode::HoldReceive`]: on the pub/sub connection, the node's live feed lags while its
//! commands flow), or slows what one connection sends ([`Mode::Slow`]): a link with a long
//! round trip that still carries everything.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sse_hub::Config;
use sse_hub::backplane::RedisConfig;
use tokio::time::timeout;

use crate::support::{Node, RedisServer, WAIT};

/// How late [`Mode::Slow`] carries each chunk the node sends.
pub const SLOW: Duration = Duration::from_millis(25);

/// What the proxy does to one connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Carries nothing either way, and stays open.
    Hole,
    /// Holds what the node sends (in order, none dropped) until the mode changes; carries what
    /// Redis sends. Every command sent meanwhile waits for its answer until then.
    HoldSend,
    /// Holds what Redis sends (in order, none dropped) until the mode changes; carries what the
    /// node sends. On the pub/sub connection: the node's feed lags while its commands flow.
    HoldReceive,
    /// Closed, both sides.
    Cut,
    /// Carries everything, what the node sends each chunk [`SLOW`] late: a long round trip.
    Slow,
}

/// The proxy: see the module docs. Connections are numbered in accept order, from 0.
pub struct SplitProxy {
    pub addr: std::net::SocketAddr,
    #[allow(clippy::type_complexity)]
    connections: Arc<
        std::sync::Mutex<
            Vec<(
                tokio::sync::watch::Sender<Mode>,
                Arc<std::sync::atomic::AtomicU64>,
            )>,
        >,
    >,
    /// The mode of the connections accepted from now on.
    first_mode: Arc<std::sync::Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl SplitProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<std::sync::Mutex<Vec<_>>> = Arc::default();
        let first_mode = Arc::new(std::sync::Mutex::new(Mode::Pass));
        let task = {
            let connections = connections.clone();
            let first_mode = first_mode.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let first = *first_mode.lock().unwrap();
                    let (mode, _) = tokio::sync::watch::channel(first);
                    let rx = mode.subscribe();
                    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
                    connections.lock().unwrap().push((mode, sent.clone()));
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (mut cr, mut cw) = client.into_split();
                        let (mut sr, mut sw) = server.into_split();
                        let mut rx2 = rx.clone();
                        let mut cut = rx.clone();
                        let mut rx = rx;
                        let up = async move {
                            let mut buf = vec![0u8; 65536];
                            loop {
                                let n = match cr.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                sent.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                                // Held bytes wait here; what the node sends next waits in the
                                // socket behind them.
                                if rx.wait_for(|m| *m != Mode::HoldSend).await.is_err() {
                                    return;
                                }
                                let mode = *rx.borrow();
                                if mode == Mode::Slow {
                                    tokio::time::sleep(SLOW).await;
                                }
                                if matches!(mode, Mode::Pass | Mode::Slow | Mode::HoldReceive)
                                    && sw.write_all(&buf[..n]).await.is_err()
                                {
                                    return;
                                }
                            }
                        };
                        let down = async move {
                            let mut buf = vec![0u8; 65536];
                            loop {
                                let n = match sr.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                if rx2.wait_for(|m| *m != Mode::HoldReceive).await.is_err() {
                                    return;
                                }
                                if matches!(*rx2.borrow(), Mode::Pass | Mode::HoldSend | Mode::Slow)
                                    && cw.write_all(&buf[..n]).await.is_err()
                                {
                                    return;
                                }
                            }
                        };
                        // Returning drops both sockets: the cut closes both sides.
                        tokio::select! {
                            () = up => {},
                            () = down => {},
                            _ = cut.wait_for(|m| *m == Mode::Cut) => {},
                        }
                    });
                }
            })
        };
        Self {
            addr,
            connections,
            first_mode,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn set(&self, nth: usize, mode: Mode) {
        self.connections.lock().unwrap()[nth].0.send_replace(mode);
    }

    /// From now on, the `nth` connection accepted carries nothing either way, and stays open.
    pub fn black_hole(&self, nth: usize) {
        self.set(nth, Mode::Hole);
    }

    /// From now on, what the `nth` connection accepted sends is held, until [`pass`](Self::pass).
    pub fn hold_send(&self, nth: usize) {
        self.set(nth, Mode::HoldSend);
    }

    /// From now on, what Redis sends on the `nth` connection accepted is held, until
    /// [`pass`](Self::pass).
    pub fn hold_receive(&self, nth: usize) {
        self.set(nth, Mode::HoldReceive);
    }

    /// The `nth` connection accepted carries everything again, what it held first.
    pub fn pass(&self, nth: usize) {
        self.set(nth, Mode::Pass);
    }

    /// From now on, what the `nth` connection accepted sends goes on [`SLOW`] late.
    pub fn slow(&self, nth: usize) {
        self.set(nth, Mode::Slow);
    }

    /// The connections accepted from now on are [`Mode::Slow`] from the start.
    pub fn slow_new(&self) {
        *self.first_mode.lock().unwrap() = Mode::Slow;
    }

    /// Closes the `nth` connection accepted, both sides.
    pub fn cut(&self, nth: usize) {
        self.set(nth, Mode::Cut);
    }

    /// The bytes the `nth` connection sent towards Redis, carried or not.
    pub fn sent(&self, nth: usize) -> u64 {
        self.connections.lock().unwrap()[nth]
            .1
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.connections.lock().unwrap().len()
    }
}

impl Drop for SplitProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (bounded) until `proxy`'s `nth` connection sent more than `than` bytes towards Redis.
pub async fn wait_sent(proxy: &SplitProxy, nth: usize, than: u64) {
    let sent = timeout(WAIT, async {
        while proxy.sent(nth) <= than {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(sent.is_ok(), "connection {nth} sent nothing more");
}

/// Holds what connection `i` sends next; returns how much it had sent.
pub fn hold_next(proxy: &SplitProxy, i: usize) -> u64 {
    proxy.hold_send(i);
    proxy.sent(i)
}

/// A node of `config` reaching `redis` through a new [`SplitProxy`], with the settings
/// `settings` makes of the proxy's URL. Once connected, the node has opened its command
/// connection first (connection 0), then its pub/sub one (1), and no other: what the tests
/// hold, slow or cut by number.
pub async fn node_behind_split_proxy(
    redis: &RedisServer,
    settings: impl FnOnce(String) -> RedisConfig,
    config: Config,
) -> (SplitProxy, Node) {
    let proxy = SplitProxy::start(redis.addr()).await;
    let node = Node::start(settings(proxy.url()), config).await;
    assert_eq!(
        proxy.accepted(),
        2,
        "one command and one pub/sub connection"
    );
    (proxy, node)
}
