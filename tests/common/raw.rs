//! [`Raw`]: an HTTP/1.1 connection written and read as bytes, for what a library client hides
//! or refuses to send: the exact response head, the chunks, several requests on one
//! connection, request heads that are too long or malformed.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{WAIT, bounded, find};

/// A raw HTTP/1.1 connection. Every read is bounded by [`WAIT`].
pub struct Raw {
    pub stream: tokio::net::TcpStream,
    input: Vec<u8>,
}

impl From<tokio::net::TcpStream> for Raw {
    fn from(stream: tokio::net::TcpStream) -> Self {
        Self {
            stream,
            input: Vec::new(),
        }
    }
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = bounded("connect", WAIT, tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect");
        Self::from(stream)
    }

    pub async fn send(&mut self, request: &str) {
        self.send_bytes(request.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, request: &[u8]) {
        self.stream.write_all(request).await.expect("write");
    }

    /// Reads the response head, lowercased, so that header names can be matched as text.
    pub async fn read_head_lowercase(&mut self) -> String {
        let head = self.read_through(b"\r\n\r\n").await;
        String::from_utf8_lossy(&head).to_ascii_lowercase()
    }

    /// Reads until `needle` has arrived; returns everything up to and including it.
    pub async fn read_through(&mut self, needle: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = find(&self.input, needle) {
                return self.input.drain(..at + needle.len()).collect();
            }
            let mut buf = [0u8; 4096];
            let n = bounded(
                &format!("{:?}", String::from_utf8_lossy(needle)),
                WAIT,
                self.stream.read(&mut buf),
            )
            .await
            .expect("read");
            assert!(
                n > 0,
                "closed before {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.input)
            );
            self.input.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads until the server closes the connection (a read returns nothing, or fails: a
    /// server that closes with bytes of ours unread resets the connection); returns what
    /// came before the close.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        bounded("the server's close", WAIT, async {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = self.stream.read(&mut buf).await {
                self.input.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        std::mem::take(&mut self.input)
    }
}
