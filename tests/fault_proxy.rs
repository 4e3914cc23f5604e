//! The fault-injecting proxy of the Redis tests (`support/backplane.rs`, [`FaultProxy`]) does
//! what the tests that use it rely on. A cut is the fault of many of them (a node's link breaks
//! while Redis goes on): what the proxy held when it cut must be gone, never forwarded once the
//! fault ends, else the node gets what the test says it missed, and the test's verdict depends
//! on how the proxy's tasks happen to be scheduled.
//!
//! No `redis-server` here: the proxy's upstream is a plain TCP listener on loopback.
#![cfg(feature = "redis")]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

#[path = "support/backplane.rs"]
mod support;

use support::{Fault, FaultProxy, WAIT};

/// A connection through `proxy` to `upstream`: the client's end, and the upstream's.
async fn connect_through(proxy: &FaultProxy, upstream: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(proxy.addr).await.unwrap();
    let (server, _) = timeout(WAIT, upstream.accept())
        .await
        .expect("the proxy connects upstream")
        .unwrap();
    (client, server)
}

/// Reads `stream` until it closes (bounded): everything it got.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let closed = timeout(WAIT, async {
        let mut buffer = [0u8; 256];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the cut closes the connection");
    got
}

/// Held bytes, both ways, then a cut, and the fault ends at once (as the tests do: `cut()`, then
/// `set(Fault::None)`): neither side gets anything the proxy held; both see the close. The
/// proxy's tasks end asynchronously after a cut, so a pump woken by the end of the fault could
/// forward what it held first: many rounds, so that such an interleaving shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_drops_what_the_proxy_held_even_when_the_fault_ends_at_once() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = FaultProxy::start(upstream.local_addr().unwrap()).await;
    for round in 0..200 {
        let (mut client, mut server) = connect_through(&proxy, &upstream).await;
        // Through while nothing is held.
        client.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        timeout(WAIT, server.read_exact(&mut pong))
            .await
            .expect("carried")
            .unwrap();
        server.write_all(b"pong").await.unwrap();
        timeout(WAIT, client.read_exact(&mut pong))
            .await
            .expect("carried")
            .unwrap();

        proxy.set(Fault::Hold);
        let from_node = proxy.bytes_from_nodes();
        client.write_all(b"held towards redis").await.unwrap();
        server.write_all(b"held towards the node").await.unwrap();
        // The proxy read what the node sent (and holds it): the write from upstream was sent
        // before, on a loopback connection, so it is in the proxy's hands too or about to be.
        let read = timeout(WAIT, async {
            while proxy.bytes_from_nodes() == from_node {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "round {round}: the proxy reads while it holds"
        );
        proxy.cut();
        proxy.set(Fault::None);
        let to_node = read_to_close(&mut client).await;
        let to_redis = read_to_close(&mut server).await;
        assert!(
            to_node.is_empty() && to_redis.is_empty(),
            "round {round}: the cut forwarded what it held: to the node {:?}, to Redis {:?}",
            String::from_utf8_lossy(&to_node),
            String::from_utf8_lossy(&to_redis)
        );
    }
}
