//! The client's address as axum's [`ConnectInfo`]: what `axum::serve` gives a router made with
//! `into_make_service_with_connect_info`, given by [`serve`](super::serve) to every request
//! of a TCP connection, on the lean path and hyper's alike.
//!
//! Why always: `serve` takes a [`Router`], not a make-service, so an application has no other
//! way to get the address, and a handler or middleware that takes `ConnectInfo<SocketAddr>`
//! (a rate limiter, an audit log) would otherwise fail every request with a `500`. It costs
//! nothing while the connection is idle: the address is put in each request's extensions,
//! which are dropped with the request once the handler has run.

use std::any::Any;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use tower_service::Service;

/// The peer of a connection whose listener's address is a [`SocketAddr`] (a
/// `tokio::net::TcpListener`, or one adapted with `axum::serve::ListenerExt`); `None` for
/// other listeners (a Unix socket's address is no `SocketAddr`).
pub(super) fn socket_addr<A: Any>(addr: &A) -> Option<SocketAddr> {
    (addr as &dyn Any).downcast_ref::<SocketAddr>().copied()
}

/// Gives `request` its connection's peer, if known.
pub(super) fn insert<B>(request: &mut Request<B>, peer: Option<SocketAddr>) {
    if let Some(peer) = peer {
        request.extensions_mut().insert(ConnectInfo(peer));
    }
}

/// The router as hyper serves one connection: each request gets the connection's peer first.
#[derive(Clone)]
pub(super) struct WithPeer {
    pub(super) router: Router,
    pub(super) peer: Option<SocketAddr>,
}

impl<B> Service<Request<B>> for WithPeer
where
    Router: Service<Request<B>>,
{
    type Response = <Router as Service<Request<B>>>::Response;
    type Error = <Router as Service<Request<B>>>::Error;
    type Future = <Router as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        insert(&mut request, self.peer);
        self.router.call(request)
    }
}
