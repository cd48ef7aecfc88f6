//! The discipline every HTTP listener of ringway keeps (the proxy's and the admin
//! API's): a cap on open connections, a deadline from accept to the first complete
//! request head whatever the protocol, an idle timeout between requests, backoff when
//! `accept` fails, and a drain bounded by a grace period on shutdown.
//!
//! A connection's life: a permit of the connection cap is taken *before* `accept`
//! (so a full listener leaves further clients in the kernel's backlog, not in
//! ringway's memory); from accept, the TLS handshake (when the listener has TLS), the
//! HTTP/1-or-HTTP/2 sniff and the first request head must all complete within
//! [`Discipline::first_request_timeout`], or the socket is closed. After that, a
//! connection with no request in flight for [`Discipline::keep_alive_timeout`] (up
//! to twice that: the deadline looks once per keep-alive period) is told to close
//! (HTTP/2 gets a GOAWAY), and hyper's own header-read timeout bounds
//! each later HTTP/1 head. On shutdown, accept loops stop, open connections are told
//! to finish, and [`serve`] returns once all have closed or the grace period is over.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::body::BoxError;
use super::Origin;
use crate::config::Limits;
use crate::metrics::ConnectionMetrics;
use crate::tls::ServerTls;

/// HTTP/2 streams one client connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Interval of HTTP/2 keep-alive pings: finds dead clients that hold streams open.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// An HTTP/2 client that does not answer a keep-alive ping within this is dropped.
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams an HTTP/2 client may open and reset before ringway has even looked at
/// them ("rapid reset", CVE-2023-44487): past this the connection gets a GOAWAY. A
/// browser cancelling navigation resets a handful.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams ringway may reset for a client's protocol errors on one connection before
/// it closes the connection: a well-behaved client causes none.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Pause after an accept error (such as running out of file descriptors) before
/// accepting again, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// What a listener serves: one request in, one response out.
pub trait Service: Send + Sync + 'static {
    type Body: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;

    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        origin: Arc<Origin>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static;
}

/// The bounds and deadlines of one listener's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discipline {
    pub max_connections: usize,
    /// HTTP/1 read buffer, and HTTP/2 header list size.
    pub max_header_bytes: usize,
    /// From accept to the first complete request head (TLS and sniff included);
    /// also the limit on each later HTTP/1 head.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub keep_alive_timeout: Duration,
    /// Time open connections get to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Discipline {
    /// The proxy listeners' discipline, from `limits`.
    pub fn of(limits: &Limits) -> Discipline {
        Discipline {
            max_connections: limits.max_connections,
            max_header_bytes: limits.max_header_bytes,
            first_request_timeout: limits.header_read_timeout,
            keep_alive_timeout: limits.keep_alive_timeout,
            shutdown_grace: limits.shutdown_grace,
        }
    }
}

/// Serves `service` on every listener (each with its TLS, or plain) until `shutdown`
/// resolves, then drains open connections within the grace period.
pub async fn serve<S: Service>(
    listeners: Vec<(TcpListener, Option<ServerTls>)>,
    service: Arc<S>,
    discipline: Discipline,
    counted: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(discipline.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        builder: http_builder(&discipline),
        discipline,
        service,
        counted,
        stop: stop_rx,
    });
    let mut loops = tokio::task::JoinSet::new();
    for (listener, tls) in listeners {
        loops.spawn(accept_loop(listener, tls, shared.clone(), permits.clone()));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    let d = &shared.discipline;
    let open = d.max_connections - permits.available_permits();
    tracing::info!(open_connections = open, grace = ?d.shutdown_grace, "shutting down: draining connections");
    // Every connection holds a permit until it closes: all permits back means
    // every connection has drained.
    let all = u32::try_from(d.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(d.shutdown_grace, permits.acquire_many_owned(all)).await;
    match drained {
        Ok(_) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// What every connection of one [`serve`] call shares.
struct Shared<S> {
    builder: auto::Builder<TokioExecutor>,
    discipline: Discipline,
    service: Arc<S>,
    counted: ConnectionMetrics,
    stop: watch::Receiver<bool>,
}

fn http_builder(d: &Discipline) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(d.first_request_timeout)
        .max_buf_size(d.max_header_bytes)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(d.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    b
}

/// Resolves once shutdown has begun (at once if it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

async fn accept_loop<S: Service>(
    listener: TcpListener,
    tls: Option<ServerTls>,
    shared: Arc<Shared<S>>,
    permits: Arc<Semaphore>,
) {
    let mut stop = shared.stop.clone();
    loop {
        let permit = tokio::select! {
            _ = stopped(&mut stop) => return,
            p = permits.clone().acquire_owned() => match p {
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
                shared.counted.accepted.inc();
                let stream = Held {
                    stream,
                    _permit: permit,
                    _open: Open::new(&shared.counted.open),
                };
                let first_request_by = Instant::now() + shared.discipline.first_request_timeout;
                tokio::spawn(connection(
                    stream,
                    peer,
                    tls.clone(),
                    shared.clone(),
                    first_request_by,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff = ?ACCEPT_ERROR_BACKOFF, "accept failed");
                drop(permit);
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// One client connection: the TLS handshake (if any) within the first-request
/// deadline, then HTTP. A handshake that fails or times out closes the connection
/// (logged at debug: scanners do this all day).
async fn connection<S: Service>(
    stream: Held,
    peer: SocketAddr,
    tls: Option<ServerTls>,
    shared: Arc<Shared<S>>,
    first_request_by: Instant,
) {
    let mut stop = shared.stop.clone();
    let Some(tls) = tls else {
        return http(stream, peer, "http", &shared, first_request_by).await;
    };
    let handshake = tokio::time::timeout_at(first_request_by, tls.accept(stream));
    let done = tokio::select! {
        done = handshake => done,
        _ = stopped(&mut stop) => return,
    };
    match done {
        Ok(Ok(stream)) => http(stream, peer, "https", &shared, first_request_by).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "no TLS handshake before the first-request deadline"),
    }
}

/// Serves HTTP on a connection, watching its deadlines: the first request head by
/// `first_request_by`, then no longer idle than the keep-alive timeout, and once
/// told to close (shutdown or idle) gone within the grace period.
async fn http<S, IO>(
    stream: IO,
    peer: SocketAddr,
    proto: &'static str,
    shared: &Shared<S>,
    first_request_by: Instant,
) where
    S: Service,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let origin = Arc::new(Origin::new(peer.ip(), proto));
    let service = shared.service.clone();
    let seen = activity.clone();
    let svc = service_fn(move |req| {
        let guard = seen.begin();
        let response = service.clone().call(req, origin.clone());
        async move { Ok::<_, std::convert::Infallible>(response.await.map(|b| Tracked::new(b, guard))) }
    });
    let io = TokioIo::new(stream);
    let d = &shared.discipline;
    // A protocol switch happens only when the service answers 101 (the proxy does for
    // WebSocket; the admin API never does).
    let conn = shared.builder.serve_connection_with_upgrades(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut stop = shared.stop.clone();
    let mut deadline = first_request_by.min(Instant::now() + d.keep_alive_timeout);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stopped(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
                deadline = Instant::now() + d.shutdown_grace;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if closing {
                    tracing::debug!(%peer, "connection still open after being told to close; dropped");
                    return;
                }
                match activity.check(Instant::now(), d.keep_alive_timeout, first_request_by) {
                    Check::NeverAsked => {
                        tracing::debug!(%peer, "no request head before the first-request deadline; closed");
                        return;
                    }
                    Check::Idle => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        // Idle: the goodbye needs a round trip, not a grace period.
                        deadline = Instant::now() + d.keep_alive_timeout.min(d.shutdown_grace);
                    }
                    Check::Later(at) => deadline = at,
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// What a connection is doing, for its deadlines: whether a request ever arrived, how
/// many are in flight (a response body counts until it ends or is dropped), and when
/// the last one started or ended.
struct Activity {
    opened: Instant,
    asked: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the last request start or end.
    last_ms: AtomicU64,
}

/// What a connection's deadline found.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// No request head arrived before the first-request deadline.
    NeverAsked,
    /// No request in flight for the keep-alive timeout.
    Idle,
    /// Look again then.
    Later(Instant),
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            asked: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// A request head arrived: in flight until the returned guard drops.
    fn begin(self: &Arc<Self>) -> InFlightGuard {
        self.asked.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlightGuard(self.clone())
    }

    /// What the deadline finds at `now`. Looks are at most `keep_alive` apart, so an
    /// idle connection is closed between one and two keep-alive timeouts after its
    /// last request ended.
    fn check(&self, now: Instant, keep_alive: Duration, first_request_by: Instant) -> Check {
        if !self.asked.load(Ordering::Acquire) {
            return match now >= first_request_by {
                true => Check::NeverAsked,
                false => Check::Later(first_request_by.min(now + keep_alive)),
            };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Check::Later(now + keep_alive);
        }
        let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        match last + keep_alive {
            at if at <= now => Check::Idle,
            at => Check::Later(at),
        }
    }
}

/// One request in flight on a connection.
struct InFlightGuard(Arc<Activity>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// A response body that keeps its request counted in flight on its connection until
/// it ends or is dropped.
struct Tracked<B> {
    inner: B,
    _guard: InFlightGuard,
}

impl<B> Tracked<B> {
    fn new(inner: B, guard: InFlightGuard) -> Self {
        Tracked {
            inner,
            _guard: guard,
        }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client socket holding its connection permit: an upgraded connection (a WebSocket
/// tunnel) still counts against the cap, and the shutdown drain waits for it.
struct Held {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _open: Open,
}

/// One open connection in `ringway_connections_open`, for as long as it lives.
struct Open(prometheus::IntGauge);

impl Open {
    fn new(gauge: &prometheus::IntGauge) -> Open {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl tokio::io::AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_with_nothing_in_flight_for_the_keep_alive_time() {
        let keep_alive = Duration::from_secs(10);
        let a = Arc::new(Activity::new());
        let t0 = Instant::now();
        let first_by = t0 + Duration::from_secs(25);
        let check = |now| a.check(now, keep_alive, first_by);
        assert_eq!(check(t0), Check::Later(t0 + keep_alive));
        assert_eq!(check(t0 + Duration::from_secs(20)), Check::Later(first_by));
        assert_eq!(check(first_by), Check::NeverAsked);
        let guard = a.begin();
        // However long a request runs, its connection is not idle.
        let late = t0 + Duration::from_secs(600);
        assert_eq!(check(late), Check::Later(late + keep_alive));
        drop(guard);
        match check(t0 + Duration::from_secs(4)) {
            Check::Later(at) => assert!(at >= t0 + keep_alive - Duration::from_millis(1)),
            other => panic!("expected Later, got {other:?}"),
        }
        let idle = check(Instant::now() + keep_alive + Duration::from_secs(1));
        assert_eq!(idle, Check::Idle);
    }
}
