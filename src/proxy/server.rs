//! Client-facing listeners: bound here, served through [`super::listener`] (the
//! connection cap, the deadline from accept to the first request head, the keep-alive
//! timeout, accept backoff and the shutdown drain), each request handed to
//! [`Proxy::handle`]. A listener with TLS runs the handshake first; ALPN `h2` makes
//! the client open with the HTTP/2 preface, which the same builder serves.
//!
//! Shutdown: the future given to [`Server::run`] resolving stops every accept loop;
//! open connections are told to finish (HTTP/1 closes after the response in flight,
//! HTTP/2 sends GOAWAY) and get `limits.shutdown_grace` to do so.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::body::ProxyBody;
use super::listener::{self, Discipline, Service};
use super::{Origin, Proxy};
use crate::config::{HeaderWork, Limits};
use crate::tls::ServerTls;

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<TcpListener>,
    /// Indexed like `listeners`; `None` serves plain HTTP.
    tls: Vec<Option<ServerTls>>,
    /// Indexed like `listeners`.
    headers: Vec<HeaderWork>,
    proxy: Arc<Proxy>,
    limits: Limits,
}

impl Server {
    /// Binds every address; fails naming the first that cannot be bound.
    pub async fn bind(
        addresses: &[SocketAddr],
        proxy: Arc<Proxy>,
        limits: Limits,
    ) -> io::Result<Server> {
        let mut listeners = Vec::with_capacity(addresses.len());
        for addr in addresses {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            listeners.push(l);
        }
        Ok(Server {
            tls: vec![None; listeners.len()],
            headers: vec![HeaderWork::default(); listeners.len()],
            listeners,
            proxy,
            limits,
        })
    }

    /// Terminates TLS on the listeners given a [`ServerTls`], indexed like the
    /// addresses given to [`Server::bind`].
    pub fn with_tls(mut self, tls: Vec<Option<ServerTls>>) -> Server {
        for (slot, t) in self.tls.iter_mut().zip(tls) {
            *slot = t;
        }
        self
    }

    /// The header work of each listener, indexed like the addresses given to
    /// [`Server::bind`] (all on by default).
    pub fn with_headers(mut self, work: impl IntoIterator<Item = HeaderWork>) -> Server {
        for (slot, w) in self.headers.iter_mut().zip(work) {
            *slot = w;
        }
        self
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` resolves, then drains within the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let listeners = self
            .listeners
            .into_iter()
            .zip(self.tls)
            .zip(self.headers)
            .map(|((listener, tls), headers)| listener::Bound {
                listener,
                tls,
                headers,
            })
            .collect();
        let discipline = Discipline::of(&self.limits);
        let counted = self.proxy.metrics().connections("proxy");
        listener::serve(listeners, self.proxy, discipline, counted, shutdown).await
    }
}

impl Service for Proxy {
    type Body = ProxyBody;

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        origin: Arc<Origin>,
    ) -> Response<ProxyBody> {
        self.handle(req, &origin).await
    }
}
