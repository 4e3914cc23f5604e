//! What the Redis backplane tests share: `redis-server` child processes on loopback (with or
//! without persistence, or over TLS with certificates made for the test), the test nodes (a hub with its own backplane, and its own axum server
//! when a test needs HTTP) and their settings, a fault-injecting TCP proxy to put between a
//! node and Redis, and a client that behaves like a browser's `EventSource` (reconnects with
//! its last event id, follows `retry:`) and records everything it was told.
//!
//! Every wait is bounded; servers are killed (and their data directories removed), node servers
//! and proxy tasks aborted on drop.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_hub::backplane::{BackplaneHealth, RedisBackplane, RedisConfig};
use sse_hub::{
    Broadcaster, Config, EventId, LastEventId, PublishError, Published, ThreadId, UserId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream as TokioStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

/// The bound of one wait on a server.
pub const SERVER_WAIT: Duration = Duration::from_secs(10);

/// The bound of one wait on a node or a stream.
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// redis-server

/// Whether `redis-server` can run here; prints that the test skips, or panics under `CI=true`.
pub fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!(
                "redis-server is missing, and CI=true: install it (apt-get install redis-server)"
            );
        }
        eprintln!(
            "SKIPPED: the Redis backplane tests need redis-server (apt-get install redis-server)"
        );
    }
    found
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A `redis-server` child process on a loopback port, killed on drop. Without persistence,
/// unless started [`persistent`](Self::start_persistent); plain TCP, unless started
/// [with TLS](Self::start_tls).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// The data directory of a persistent server (its RDB snapshot), or of a TLS server (its
    /// certificates and its log), removed on drop.
    dir: Option<PathBuf>,
    #[cfg(feature = "redis-tls")]
    pub tls: Option<tls::ServerTls>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: None,
            #[cfg(feature = "redis-tls")]
            tls: None,
        };
        server.launch().await;
        server
    }

    /// A server with RDB persistence in a temporary directory, as Redis runs by default, but
    /// with no automatic save points: the test takes the snapshot itself ([`save`](Self::save)),
    /// as a save point would, and the server loads it when it [restarts](Self::restart).
    pub async fn start_persistent() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sse-hub-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            child: None,
            dir: Some(dir),
            #[cfg(feature = "redis-tls")]
            tls: None,
        };
        server.launch().await;
        server
    }

    pub fn url(&self) -> String {
        #[cfg(feature = "redis-tls")]
        if self.tls.is_some() {
            return format!("rediss://127.0.0.1:{}/", self.port);
        }
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A client of the server, for the test's own commands (with the test CA and client
    /// certificate over TLS).
    fn client(&self) -> redis::Client {
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = &self.tls {
            return tls.client(&self.url());
        }
        redis::Client::open(self.url()).unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the process, and waits until it answers a `PING` (after loading its snapshot, if
    /// it has one).
    async fn launch(&mut self) {
        if let Err(output) = self.try_launch().await {
            panic!("redis-server exited at start: {output}");
        }
    }

    /// [`launch`](Self::launch), or what the server wrote if it exited before it answered.
    async fn try_launch(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        #[cfg(feature = "redis-tls")]
        let log = self
            .tls
            .as_ref()
            .map(|tls| tls.args(&mut command, self.port));
        #[cfg(not(feature = "redis-tls"))]
        let log: Option<PathBuf> = None;
        if log.is_none() {
            command.args(["--port", &self.port.to_string()]);
        }
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(dir) = &self.dir {
            command
                .arg("--dir")
                .arg(dir)
                .args(["--dbfilename", "dump.rdb"]);
        }
        // A TLS server's output says why it did not start, if it does not: built without TLS
        // (a "Bad directive" for `tls-port`), or a certificate it refused.
        let output = || match &log {
            Some(log) => Stdio::from(std::fs::File::create(log).expect("redis-server log")),
            None => Stdio::null(),
        };
        let child = command
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        let client = self.client();
        let up = timeout(SERVER_WAIT, async {
            loop {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok()
                {
                    return Ok(());
                }
                if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                    let said = log
                        .as_ref()
                        .and_then(|log| std::fs::read_to_string(log).ok());
                    return Err(format!("{status}: {}", said.unwrap_or_default()));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            up.is_ok(),
            "redis-server did not answer on {url} within {SERVER_WAIT:?}"
        );
        up.unwrap()
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Kills the server and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new server on the same port: with no data, or, for a persistent one, with the data of
    /// its last [`save`](Self::save). After [`kill`](Self::kill), this is a crash (an OOM kill,
    /// a node lost) and its recovery.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// `SAVE`: the snapshot a persistent server restarts from.
    pub async fn save(&self) {
        let mut connection = self.connection().await;
        let _: () = redis::cmd("SAVE")
            .query_async(&mut connection)
            .await
            .expect("SAVE");
    }

    /// `SIGSTOP`s the server: it holds every connection and answers nothing.
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: a plain kill(2) of our own child.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        }
    }

    /// `SIGCONT`s it.
    pub fn cont(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: a plain kill(2) of our own child.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// `PUBSUB NUMSUB` of `user`'s feed on the `events` channel.
    pub async fn listeners(&self, user: &str) -> i64 {
        let mut connection = self.connection().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("sse-hub:live:events:{user}"))
            .query_async(&mut connection)
            .await
            .expect("PUBSUB NUMSUB");
        n
    }

    /// Kills the pub/sub connections that listen to some user's feed (every node's listens to
    /// the generation marker's channel too): breaks the live feed of the nodes that serve a
    /// user, and only theirs, while Redis stays up; returns how many connections were killed.
    pub async fn kill_feed_listeners(&self) -> i64 {
        let mut connection = self.connection().await;
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut connection)
            .await
            .expect("CLIENT LIST TYPE pubsub");
        let field = |line: &str, name: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(name))
                .map(str::to_owned)
        };
        let mut killed = 0;
        for line in clients.lines() {
            let subscriptions: u64 = field(line, "sub=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if subscriptions < 2 {
                continue;
            }
            let id = field(line, "id=").expect("a client id");
            let gone: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(&mut connection)
                .await
                .expect("CLIENT KILL ID");
            killed += gone;
        }
        killed
    }

    /// `CLIENT KILL TYPE pubsub`: breaks every node's live feed while Redis stays up; returns
    /// how many connections were killed.
    pub async fn kill_pubsub_clients(&self) -> i64 {
        let mut connection = self.connection().await;
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut connection)
            .await
            .expect("CLIENT KILL TYPE pubsub")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped server cannot die of SIGKILL until it is continued on some systems.
        self.cont();
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// redis-server over TLS

#[cfg(feature = "redis-tls")]
pub mod tls {
    use std::path::PathBuf;
    use std::process::Command;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use redis::{ClientTlsConfig, TlsCertificates};
    use sse_hub::backplane::RedisTls;

    use super::{RedisServer, free_port};

    /// A certificate authority made for one test (ECDSA P-256, as rcgen makes them).
    pub struct TestCa {
        pub cert_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate a [`TestCa`] issued, and its private key, both PEM.
    pub struct Issued {
        pub cert_pem: String,
        pub key_pem: String,
    }

    impl TestCa {
        pub fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            Self {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A server certificate for `127.0.0.1` (the tests' URLs) and `localhost`.
        pub fn server(&self) -> Issued {
            self.issue(
                "redis-server",
                vec!["127.0.0.1".into(), "localhost".into()],
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        }

        /// A client certificate, for mutual TLS.
        pub fn client(&self) -> Issued {
            self.issue(
                "sse-hub node",
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        }

        fn issue(&self, name: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Issued {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Issued {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    }

    /// Whether a TLS server asks its clients for a certificate (`--tls-auth-clients`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ClientAuth {
        No,
        Required,
    }

    /// The TLS of a [`RedisServer`]: its CA, and a client certificate the CA issued.
    pub struct ServerTls {
        pub ca: TestCa,
        pub client: Issued,
        auth: ClientAuth,
        dir: PathBuf,
    }

    impl ServerTls {
        /// The arguments of a TLS-only server on `port`; returns the file for its output.
        pub(super) fn args(&self, command: &mut Command, port: u16) -> PathBuf {
            let auth = match self.auth {
                ClientAuth::No => "no",
                ClientAuth::Required => "yes",
            };
            command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.join("ca.pem"))
                .args(["--tls-auth-clients", auth]);
            self.dir.join("redis-server.log")
        }

        /// A client of the server for the test's own commands: trusts the CA, shows the client
        /// certificate.
        pub(super) fn client(&self, url: &str) -> redis::Client {
            redis::Client::build_with_tls(
                url,
                TlsCertificates {
                    client_tls: Some(ClientTlsConfig {
                        client_cert: self.client.cert_pem.clone().into_bytes(),
                        client_key: self.client.key_pem.clone().into_bytes(),
                    }),
                    root_cert: Some(self.ca.cert_pem.clone().into_bytes()),
                },
            )
            .unwrap()
        }

        /// The file of the server's CA certificate, PEM.
        pub fn ca_file(&self) -> PathBuf {
            self.dir.join("ca.pem")
        }

        /// A node's TLS settings that trust the server's CA.
        pub fn trusting(&self) -> RedisTls {
            let mut tls = RedisTls::default();
            tls.root_certs = Some(self.ca.cert_pem.clone().into_bytes());
            tls
        }

        /// [`trusting`](Self::trusting), showing the client certificate the CA issued.
        pub fn trusting_with_client_cert(&self) -> RedisTls {
            let mut tls = self.trusting();
            tls.client_cert = Some(self.client.cert_pem.clone().into_bytes());
            tls.client_key = Some(self.client.key_pem.clone().into_bytes());
            tls
        }
    }

    impl RedisServer {
        /// A `redis-server` that speaks only TLS (`--port 0`, `--tls-port`), with a CA and a
        /// server certificate made for it, that asks clients for a certificate if `auth` says
        /// so. `None`, after a `SKIPPED` line, when this redis-server was built without TLS,
        /// except under `CI=true`, where that is a failure; any other start failure panics.
        pub async fn start_tls(auth: ClientAuth) -> Option<Self> {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("sse-hub-redis-tls-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ca = TestCa::new("sse-hub test CA");
            let server = ca.server();
            for (file, pem) in [
                ("ca.pem", &ca.cert_pem),
                ("server.pem", &server.cert_pem),
                ("server.key", &server.key_pem),
            ] {
                std::fs::write(dir.join(file), pem).unwrap();
            }
            let client = ca.client();
            let mut redis = Self {
                port,
                child: None,
                dir: Some(dir.clone()),
                tls: Some(ServerTls {
                    ca,
                    client,
                    auth,
                    dir,
                }),
            };
            let Err(output) = redis.try_launch().await else {
                return Some(redis);
            };
            // A build without TLS does not know the `tls-*` directives (Redis 7.2 and later:
            // does not have the `tls` connection type built in).
            let without_tls = output.contains("Bad directive") || output.contains("not builtin");
            if !without_tls {
                panic!("redis-server did not start with TLS: {output}");
            }
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("redis-server is built without TLS, and CI=true: {output}");
            }
            eprintln!("SKIPPED: this redis-server is built without TLS: {output}");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nodes

/// The hub of a test node: JSON events.
pub type Hub = Broadcaster<Value>;

/// Backplane settings that reconnect quickly (20 ms, up to 200 ms); the rest are the defaults.
pub fn quick_settings(url: String) -> RedisConfig {
    let mut settings = RedisConfig::new(url);
    settings.reconnect_min = Duration::from_millis(20);
    settings.reconnect_max = Duration::from_millis(200);
    settings
}

/// The backplane settings of most test nodes: quick reconnects and checks, a 1 s command
/// timeout, and the idle connection checks every 100 ms, so that every test runs through them
/// too.
pub fn settings(url: String) -> RedisConfig {
    let mut settings = quick_settings(url);
    settings.command_timeout = Duration::from_secs(1);
    settings.ping_interval = Duration::from_millis(100);
    settings
}

/// One node: a hub with its own backplane (its own connections to Redis), and, once
/// [`serve`](Self::serve)d, its own axum server on `127.0.0.1:0` (`GET /events/{user}`),
/// aborted on drop.
pub struct Node {
    pub hub: Hub,
    pub backplane: RedisBackplane,
    http: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
}

async fn events(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    last_event_id: LastEventId,
) -> Response {
    hub.sse_response(&UserId::from(user), &last_event_id)
        .into_response()
}

impl Node {
    /// A node that connects in the background: it may serve before it is connected.
    pub fn new(settings: RedisConfig, config: Config) -> Self {
        let backplane = RedisBackplane::new(settings).expect("backplane");
        let hub = Broadcaster::with_backplane(config, Arc::new(backplane.clone()));
        Self {
            hub,
            backplane,
            http: None,
        }
    }

    /// A node, once its backplane is connected (within [`WAIT`]).
    pub async fn start(settings: RedisConfig, config: Config) -> Self {
        let node = Self::new(settings, config);
        assert!(
            node.backplane.wait_connected(WAIT).await,
            "the backplane did not connect: {:?}",
            node.backplane.health()
        );
        node
    }

    /// Serves the node's streams over HTTP: see [`url`](Self::url).
    pub async fn serve(mut self) -> Self {
        let app = Router::new()
            .route("/events/{user}", get(events))
            .with_state(self.hub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.http = Some((addr, server));
        self
    }

    /// The URL of `user`'s stream on a [served](Self::serve) node.
    pub fn url(&self, user: &str) -> String {
        let (addr, _) = self.http.as_ref().expect("the node serves HTTP");
        format!("http://{addr}/events/{user}")
    }

    /// Publishes `{"n": n}` to `user` and waits for the backplane's answer.
    pub async fn publish(&self, user: &str, n: u64) -> Result<Published, PublishError> {
        self.hub
            .broadcast_async(&UserId::from(user), &json!({ "n": n }))
            .await
    }

    /// [`publish`](Self::publish), which must go through and be stored: its id.
    pub async fn publish_stored(&self, user: &str, n: u64) -> EventId {
        self.publish(user, n)
            .await
            .expect("publish")
            .id
            .expect("an id: the event is stored")
    }

    /// Publishes `event` into `thread`, which must go through (a thread's event is always
    /// stored).
    pub async fn publish_in_thread(&self, user: &UserId, thread: &ThreadId, event: &Value) {
        let published = self
            .hub
            .broadcast_in_thread_async(user, thread, event)
            .await
            .expect("publish into the thread");
        assert!(published.id.is_some(), "a thread event is always stored");
    }

    /// Waits until the backplane says it is `connected` (or not).
    pub async fn wait_connected(&self, connected: bool) {
        self.wait_for(
            &format!("the backplane did not become connected={connected}"),
            |b| b.is_connected() == connected,
        )
        .await;
    }

    /// Waits until the backplane reconnected after a fault: it saw the fault (a reconnect is
    /// counted) and is connected again.
    pub async fn wait_reconnected(&self) {
        self.wait_for("did not reconnect", |b| {
            b.health().reconnects > 0 && b.is_connected()
        })
        .await;
    }

    /// Waits until `ready` holds of the backplane; fails with `what` and its health after
    /// [`WAIT`].
    async fn wait_for(&self, what: &str, ready: impl Fn(&RedisBackplane) -> bool) {
        let waited = timeout(WAIT, async {
            while !ready(&self.backplane) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{what}: {:?}", self.backplane.health());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((_, server)) = &self.http {
            server.abort();
        }
    }
}

/// The health of `backplane` once it reported a connection error (within [`WAIT`]).
pub async fn first_error(backplane: &RedisBackplane) -> BackplaneHealth {
    timeout(WAIT, async {
        loop {
            let health = backplane.health();
            if health.last_error.is_some() {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no connection error within {WAIT:?}: {:?}",
            backplane.health()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// fault-injecting proxy

/// What the proxy does to the bytes it carries, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards at once.
    None,
    /// Forwards each chunk this long after it arrived (in order).
    Latency(Duration),
    /// Holds every byte, of old and new connections, until the fault ends; then forwards
    /// them, as TCP would retransmit them. A short hold is a pause; one longer than the
    /// node's timeouts is a black hole (the node gives up on its connections, and its new
    /// ones hang too).
    Hold,
}

/// A TCP proxy between a node and `redis-server` that injects faults: latency, holds (pause,
/// black hole), cuts of every connection, and a cut in the middle of a reply.
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    inner: Arc<ProxyInner>,
    _accept: tokio::task::JoinHandle<()>,
}

struct ProxyInner {
    connections: Mutex<JoinSet<()>>,
    /// How many cuts so far. A connection's tasks end asynchronously after a cut (an abort
    /// takes effect when the runtime next polls them), so a pump that the end of a fault wakes
    /// first could still forward what it held: each pump checks, before it forwards anything,
    /// that no cut came since its connection was accepted.
    cuts: AtomicU64,
    cut_mid_reply: AtomicBool,
    /// Bytes read from the nodes' side, held or not.
    from_nodes: AtomicU64,
}

impl ProxyInner {
    /// Closes every connection, dropping what it held: see [`cuts`](Self::cuts).
    fn cut(&self) {
        let mut connections = self.connections.lock().unwrap();
        self.cuts.fetch_add(1, Ordering::SeqCst);
        connections.abort_all();
    }

    /// Whether a cut came since a connection accepted after `cuts` cuts.
    fn cut_since(&self, cuts: u64) -> bool {
        self.cuts.load(Ordering::SeqCst) != cuts
    }
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, _) = watch::channel(Fault::None);
        let inner = Arc::new(ProxyInner {
            connections: Mutex::new(JoinSet::new()),
            cuts: AtomicU64::new(0),
            cut_mid_reply: AtomicBool::new(false),
            from_nodes: AtomicU64::new(0),
        });
        let accept = {
            let inner = inner.clone();
            let fault = fault.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let inner2 = inner.clone();
                    let rx = fault.subscribe();
                    // Under the lock that a cut takes: counted before the cut, or after it and
                    // not aborted by it.
                    let mut connections = inner.connections.lock().unwrap();
                    let cuts = inner.cuts.load(Ordering::SeqCst);
                    connections.spawn(carry(client, upstream, rx, inner2, cuts));
                }
            })
        };
        Self {
            addr,
            fault,
            inner,
            _accept: accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Closes every connection now (both sides), dropping what it held: nothing it held is
    /// forwarded afterwards, even if the fault ends at once.
    pub fn cut(&self) {
        self.inner.cut();
    }

    /// How many bytes the nodes have sent towards Redis so far, including those held.
    pub fn bytes_from_nodes(&self) -> u64 {
        self.inner.from_nodes.load(Ordering::SeqCst)
    }

    /// The next reply from Redis is forwarded half, then every connection is cut.
    pub fn cut_mid_reply(&self) {
        self.inner.cut_mid_reply.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self._accept.abort();
        self.cut();
    }
}

/// One proxied connection, accepted after `cuts` cuts: two pumps; when either side closes,
/// both close.
async fn carry(
    client: TokioStream,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    inner: Arc<ProxyInner>,
    cuts: u64,
) {
    // Even the connect is held while the fault lasts.
    let mut wait = fault.clone();
    let _ = wait.wait_for(|f| *f != Fault::Hold).await;
    if inner.cut_since(cuts) {
        return;
    }
    let Ok(server) = TokioStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut pumps = JoinSet::new();
    pumps.spawn(pump(
        client_read,
        server_write,
        fault.clone(),
        Side::Node,
        inner.clone(),
        cuts,
    ));
    pumps.spawn(pump(
        server_read,
        client_write,
        fault,
        Side::Redis,
        inner,
        cuts,
    ));
    // The first pump to end (a close, an error, a cut) ends the connection: dropping the
    // set aborts the other.
    let _ = pumps.join_next().await;
}

/// Which side a pump reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The node's: its bytes are counted.
    Node,
    /// Redis's: its replies may be cut midway.
    Redis,
}

/// Carries what `from` (on `side`) sends to `to`, as the fault says, for a connection accepted
/// after `cuts` cuts.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: watch::Receiver<Fault>,
    side: Side,
    inner: Arc<ProxyInner>,
    cuts: u64,
) {
    let counted = (side == Side::Node).then(|| inner.clone());
    let (queue, mut chunks) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let writer = async move {
        let mut fault = fault;
        while let Some((arrived, chunk)) = chunks.recv().await {
            loop {
                let current = *fault.borrow_and_update();
                match current {
                    Fault::None => break,
                    Fault::Latency(delay) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(arrived + delay) => break,
                            _ = fault.changed() => {}
                        }
                    }
                    Fault::Hold => {
                        if fault.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
            // Cut while this chunk waited (or was about to be written): it is dropped, as a
            // closed socket drops it, not forwarded by a pump that runs before its abort.
            if inner.cut_since(cuts) {
                return;
            }
            if side == Side::Redis
                && chunk.len() > 1
                && inner.cut_mid_reply.swap(false, Ordering::SeqCst)
            {
                let _ = to.write_all(&chunk[..chunk.len() / 2]).await;
                let _ = to.flush().await;
                inner.cut();
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Some(inner) = &counted {
                        inner.from_nodes.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    let chunk = Bytes::copy_from_slice(&buffer[..n]);
                    if queue.send((Instant::now(), chunk)).is_err() {
                        return;
                    }
                }
            }
        }
    };
    // Ends when the reader sees the close (then what is held is dropped, as a closed socket
    // drops it) or the writer fails.
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}

// ---------------------------------------------------------------------------------------------
// an EventSource-like client

/// What a client was told, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A stream opened; `primed` is the id of its opening frame, if any.
    Opened { resumed_from: Option<String> },
    /// A published event: its id (`None` without an `id:` line) and its `n`.
    Event { id: Option<String>, n: u64 },
    /// A `reset` control event and its reason.
    Reset(String),
    /// A `lagged` control event and its count.
    Lagged(u64),
    /// The stream ended (cleanly or not), or a connection attempt failed with this status.
    Ended { status: u16 },
}

/// A client that behaves like `EventSource`: it reconnects after the last `retry:` delay with
/// `Last-Event-ID` set to the last id it saw (priming ids included), and records what it saw.
pub struct EsClient {
    pub log: Arc<Mutex<Vec<Seen>>>,
    last_id: Arc<Mutex<Option<String>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The `n` of an event's data: `{"n": N}` or an AG-UI `CUSTOM` with `{"value": {"n": N}}`.
pub fn number_of(data: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    value["n"].as_u64().or_else(|| value["value"]["n"].as_u64())
}

impl EsClient {
    /// Starts following `url` (from `last_event_id`, if any). `max_retry` caps the
    /// reconnection delay the server asks for, to keep tests short.
    pub fn spawn(url: String, last_event_id: Option<String>, max_retry: Duration) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let last_id = Arc::new(Mutex::new(last_event_id));
        let (stop, mut stopped) = watch::channel(false);
        let task = {
            let log = log.clone();
            let last_id = last_id.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::builder().no_proxy().build().unwrap();
                let mut retry = Duration::from_millis(1000).min(max_retry);
                loop {
                    let resumed_from = last_id.lock().unwrap().clone();
                    let mut request = http.get(&url);
                    if let Some(id) = &resumed_from {
                        request = request.header("last-event-id", id);
                    }
                    let follow = async {
                        let response = match request.send().await {
                            Ok(response) => response,
                            Err(_) => return 0,
                        };
                        let status = response.status().as_u16();
                        if status != 200 {
                            return status;
                        }
                        log.lock().unwrap().push(Seen::Opened {
                            resumed_from: resumed_from.clone(),
                        });
                        let mut parser = Parser::default();
                        let mut body = response.bytes_stream();
                        while let Some(Ok(chunk)) = body.next().await {
                            for line in parser.feed(&chunk) {
                                match line {
                                    Parsed::Retry(ms) => {
                                        retry = Duration::from_millis(ms).min(max_retry)
                                    }
                                    Parsed::Id(id) => *last_id.lock().unwrap() = Some(id),
                                    Parsed::Dispatch { event, data, id } => {
                                        let seen = match event.as_str() {
                                            "reset" => Seen::Reset(
                                                serde_json::from_str::<serde_json::Value>(&data)
                                                    .ok()
                                                    .and_then(|v| {
                                                        v["reason"].as_str().map(str::to_owned)
                                                    })
                                                    .unwrap_or_default(),
                                            ),
                                            "lagged" => Seen::Lagged(
                                                serde_json::from_str::<serde_json::Value>(&data)
                                                    .ok()
                                                    .and_then(|v| v["missed"].as_u64())
                                                    .unwrap_or(0),
                                            ),
                                            "heartbeat" => continue,
                                            _ => match number_of(&data) {
                                                Some(n) => Seen::Event { id, n },
                                                None => continue,
                                            },
                                        };
                                        log.lock().unwrap().push(seen);
                                    }
                                }
                            }
                        }
                        200
                    };
                    let status = tokio::select! {
                        status = follow => status,
                        _ = stopped.changed() => return,
                    };
                    log.lock().unwrap().push(Seen::Ended { status });
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        _ = stopped.changed() => return,
                    }
                }
            })
        };
        Self {
            log,
            last_id,
            stop,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    pub fn last_id(&self) -> Option<String> {
        self.last_id.lock().unwrap().clone()
    }

    /// The numbers of the events seen, in order.
    pub fn numbers(&self) -> Vec<u64> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Event { n, .. } => Some(n),
                _ => None,
            })
            .collect()
    }

    /// Waits (bounded) until `done` holds for what was seen.
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&[Seen]) -> bool) -> bool {
        let until = Instant::now() + within;
        loop {
            if done(&self.log.lock().unwrap()) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until a client spawned without a last event id got its stream's
    /// priming `id:`, which the stream sends once it caught up: the node listens to the user's
    /// feed and read the history. That id is the stream's horizon: an event published before
    /// its catch-up read is not the stream's to receive (it is neither replayed to a fresh
    /// client nor delivered live), even one published after Redis counted the node as a
    /// listener; every event published once this returns `true` reaches the stream.
    pub async fn wait_primed(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.last_id().is_none() {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Waits (bounded) until the event numbered `n` was seen.
    pub async fn wait_for_event(&self, within: Duration, n: u64) -> bool {
        self.wait_for(within, |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Event { n: got, .. } if *got == n))
        })
        .await
    }

    pub async fn stop(self) -> Vec<Seen> {
        let _ = self.stop.send(true);
        let seen = self.log.clone();
        let _ = self.task.await;
        seen.lock().unwrap().clone()
    }
}

/// A client of `user` on `node`, the only node that serves `user`, once Redis says the node
/// listens to the user's feed and the stream is primed ([`EsClient::wait_primed`]): from then
/// on, every event published to `user` reaches it. Redis counting the listener is not enough:
/// the stream's catch-up reads the history after that, and an event published in between is
/// before the stream's start.
pub async fn listening_client(redis: &RedisServer, node: &Node, user: &str) -> EsClient {
    let client = EsClient::spawn(node.url(user), None, Duration::from_millis(100));
    timeout(WAIT, async {
        while redis.listeners(user).await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the node listens to the user's feed");
    assert!(
        client.wait_primed(WAIT).await,
        "the stream was not primed: {:?}",
        client.seen()
    );
    client
}

enum Parsed {
    Retry(u64),
    /// The last event id changed (on any `id:` line, dispatched or not: priming).
    Id(String),
    Dispatch {
        event: String,
        data: String,
        id: Option<String>,
    },
}

/// An SSE parser as the WHATWG spec reads a stream (LF line ends, which is what sse-hub sends).
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    event: String,
    data: Option<String>,
    /// The `id:` of the event being read, if it has one.
    id: Option<String>,
}

impl Parser {
    fn feed(&mut self, chunk: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        for &byte in chunk {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
            if line.is_empty() {
                // The last event id is set at the end of an event, dispatched or not
                // (an event with no data, like a priming `id:`, still sets it).
                if let Some(id) = &self.id {
                    out.push(Parsed::Id(id.clone()));
                }
                if let Some(data) = self.data.take() {
                    out.push(Parsed::Dispatch {
                        event: std::mem::take(&mut self.event),
                        data,
                        id: self.id.take(),
                    });
                }
                self.event.clear();
                self.id = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = value.to_owned(),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    out.push(Parsed::Retry(value.parse().unwrap_or(u64::MAX)))
                }
                _ => {}
            }
        }
        out
    }
}

/// A Redis stream id, `ms-seq`, as a comparable pair.
pub fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("not an id: {id:?}"));
    (ms.parse().unwrap(), seq.parse().unwrap())
}
