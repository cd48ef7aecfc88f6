//! Client-facing listeners: accept within the connection limit, serve HTTP/1.1 and
//! HTTP/2 (prior knowledge) on each connection, and drain on shutdown. A listener
//! with TLS runs the handshake first (bounded by its handshake timeout); ALPN `h2`
//! makes the client open with the HTTP/2 preface, which the same builder serves.
//!
//! Shutdown: the future given to [`Server::run`] resolving stops every accept loop;
//! open connections are told to finish (HTTP/1 closes after the response in flight,
//! HTTP/2 sends GOAWAY) and get `limits.shutdown_grace` to do so.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::{Origin, Proxy};
use crate::config::Limits;
use crate::tls::ServerTls;

/// HTTP/2 streams one client connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Interval of HTTP/2 keep-alive pings: finds dead clients that hold streams open.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Pause after an accept error (such as running out of file descriptors) before
/// accepting again, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<TcpListener>,
    /// Indexed like `listeners`; `None` serves plain HTTP.
    tls: Vec<Option<ServerTls>>,
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

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` resolves, then drains within the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let builder = Arc::new(http_builder(&self.limits));
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();
        for (listener, tls) in self.listeners.into_iter().zip(self.tls) {
            let ctx = AcceptCtx {
                proxy: self.proxy.clone(),
                builder: builder.clone(),
                permits: permits.clone(),
                stop: stop_rx.clone(),
                tls,
            };
            loops.spawn(accept_loop(listener, ctx));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        while loops.join_next().await.is_some() {}
        let open = self.limits.max_connections - permits.available_permits();
        tracing::info!(open_connections = open, grace = ?self.limits.shutdown_grace, "shutting down: draining connections");
        // Every connection holds a permit until it closes: all permits back means
        // every connection has drained.
        let all = self.limits.max_connections as u32;
        let drained = tokio::time::timeout(
            self.limits.shutdown_grace,
            permits.clone().acquire_many_owned(all),
        )
        .await;
        match drained {
            Ok(_) => tracing::info!("all connections drained"),
            Err(_) => tracing::warn!("grace period over; closing remaining connections"),
        }
    }
}

/// Resolves once shutdown has begun (at once if it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

#[derive(Clone)]
struct AcceptCtx {
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    tls: Option<ServerTls>,
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL);
    b
}

async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
    let mut stop = ctx.stop.clone();
    loop {
        let permit = tokio::select! {
            _ = stopped(&mut stop) => return,
            p = ctx.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                // The permit lives as long as the socket: through a protocol switch
                // too, until the tunnel closes.
                let stream = Held {
                    stream,
                    _permit: permit,
                };
                match &ctx.tls {
                    None => {
                        tokio::spawn(serve(stream, peer, &ctx, "http"));
                    }
                    Some(tls) => {
                        tokio::spawn(handshake_then_serve(tls.clone(), stream, peer, &ctx));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// The TLS handshake, then [`serve`] over the TLS stream. A handshake that fails or
/// times out closes the connection (logged at debug: scanners do this all day).
fn handshake_then_serve(
    tls: ServerTls,
    stream: Held,
    peer: SocketAddr,
    ctx: &AcceptCtx,
) -> impl Future<Output = ()> + Send + 'static {
    let mut stop = ctx.stop.clone();
    let ctx = ctx.clone();
    async move {
        let done = tokio::select! {
            done = tls.accept(stream) => done,
            _ = stopped(&mut stop) => return,
        };
        match done {
            Ok(stream) => serve(stream, peer, &ctx, "https").await,
            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        }
    }
}

fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: &AcceptCtx,
    proto: &'static str,
) -> impl Future<Output = ()> + Send + 'static
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let proxy = ctx.proxy.clone();
    let builder = ctx.builder.clone();
    let mut stop = ctx.stop.clone();
    let origin = Arc::new(Origin::new(peer.ip(), proto));
    async move {
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let origin = origin.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, &origin).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
    }
}

/// A client socket holding its connection permit: an upgraded connection (a WebSocket
/// tunnel) still counts against `max_connections`, and the shutdown drain waits for it.
struct Held {
    stream: TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Held {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Held {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
