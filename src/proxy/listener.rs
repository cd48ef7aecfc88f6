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
//! (HTTP/2 gets a GOAWAY). Each later HTTP/1 head must be whole within the same
//! first-request timeout of its first byte, or the connection is dropped (found
//! within twice that). On shutdown, accept loops stop, open connections are told
//! to finish, and [`serve`] returns once all have closed or the grace period is over.
//!
//! All of a connection's deadlines are one timer, re-armed only when it fires: a
//! request costs two clock reads and a few atomic stores, never a timer of its own.

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
use crate::config::{HeaderWork, Limits};
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

/// One bound socket to serve: its TLS (`None`: plain HTTP/1.1 and h2c) and the header
/// work its requests get (the admin API's listener ignores it).
pub struct Bound {
    pub listener: TcpListener,
    pub tls: Option<ServerTls>,
    pub headers: HeaderWork,
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
    listeners: Vec<Bound>,
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
    for bound in listeners {
        loops.spawn(accept_loop(bound, shared.clone(), permits.clone()));
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
    // No HTTP/1 timer: hyper's header-read timeout re-arms a timer for every request;
    // the connection's own deadline (see `http`) bounds heads instead.
    b.http1()
        .header_read_timeout(None)
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

async fn accept_loop<S: Service>(bound: Bound, shared: Arc<Shared<S>>, permits: Arc<Semaphore>) {
    let Bound {
        listener,
        tls,
        headers,
    } = bound;
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
                    headers,
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
    work: HeaderWork,
    shared: Arc<Shared<S>>,
    first_request_by: Instant,
) {
    let mut stop = shared.stop.clone();
    let origin = |proto| Arc::new(Origin::with_work(peer.ip(), proto, work));
    let Some(tls) = tls else {
        return http(stream, peer, origin("http"), &shared, first_request_by).await;
    };
    let handshake = tokio::time::timeout_at(first_request_by, tls.accept(stream));
    let done = tokio::select! {
        done = handshake => done,
        _ = stopped(&mut stop) => return,
    };
    match done {
        Ok(Ok(stream)) => http(stream, peer, origin("https"), &shared, first_request_by).await,
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
    origin: Arc<Origin>,
    shared: &Shared<S>,
    first_request_by: Instant,
) where
    S: Service,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let stream = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    let service = shared.service.clone();
    let seen = activity.clone();
    let svc = service_fn(move |req| {
        let guard = seen.begin();
        // Boxed: a request's whole state (the upstream exchange included) is large,
        // and hyper moves the future it is given several times (HTTP/2 spawns each
        // stream as a task); moved as one pointer, none of it is copied.
        let response = Box::pin(service.clone().call(req, origin.clone()));
        async move { Ok::<_, std::convert::Infallible>(response.await.map(|b| Tracked::new(b, guard))) }
    });
    let io = TokioIo::new(stream);
    let d = &shared.discipline;
    // A protocol switch happens only when the service answers 101 (the proxy does for
    // WebSocket; the admin API never does).
    let conn = shared.builder.serve_connection_with_upgrades(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut stop = shared.stop.clone();
    let bounds = Bounds {
        keep_alive: d.keep_alive_timeout,
        head: d.first_request_timeout,
    };
    // One stop signal and one timer for the connection's life, made once: the loop
    // below runs every time the connection wakes (twice a request), and a future
    // made anew there would cost a timer registration each time.
    let stop_signal = stopped(&mut stop);
    let mut stop_signal = std::pin::pin!(stop_signal);
    let timer =
        tokio::time::sleep_until(first_request_by.min(Instant::now() + d.keep_alive_timeout));
    let mut timer = std::pin::pin!(timer);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            // The connection first: it is what wakes this task nearly every time.
            biased;
            r = conn.as_mut() => break r,
            _ = &mut stop_signal, if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
                timer.as_mut().reset(Instant::now() + d.shutdown_grace);
            }
            _ = &mut timer => {
                if closing {
                    tracing::debug!(%peer, "connection still open after being told to close; dropped");
                    return;
                }
                match activity.check(Instant::now(), bounds, first_request_by) {
                    Check::NeverAsked => {
                        tracing::debug!(%peer, "no request head before the first-request deadline; closed");
                        return;
                    }
                    Check::SlowHead => {
                        tracing::debug!(%peer, "a request head not whole within the header-read timeout; closed");
                        return;
                    }
                    Check::Idle => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        // Idle: the goodbye needs a round trip, not a grace period.
                        let bye = d.keep_alive_timeout.min(d.shutdown_grace);
                        timer.as_mut().reset(Instant::now() + bye);
                    }
                    Check::Later(at) => timer.as_mut().reset(at),
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
    /// Milliseconds from `opened` to the first byte read while no request was in
    /// flight (the start of the next head), or [`NO_HEAD`].
    head_ms: AtomicU64,
    /// The client opened with the HTTP/2 preface: its idle bytes (pings, settings)
    /// start no head.
    h2: AtomicBool,
}

/// `Activity::head_ms` when no head is being read.
const NO_HEAD: u64 = u64::MAX;

/// The deadlines `Activity::check` holds a connection to.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// No request in flight for this long: idle.
    keep_alive: Duration,
    /// A later HTTP/1 head must be whole within this of its first byte.
    head: Duration,
}

/// What a connection's deadline found.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// No request head arrived before the first-request deadline.
    NeverAsked,
    /// No request in flight for the keep-alive timeout.
    Idle,
    /// A later HTTP/1 head began and was not whole in time.
    SlowHead,
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
            head_ms: AtomicU64::new(NO_HEAD),
            h2: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
    }

    /// A request head arrived: in flight until the returned guard drops.
    fn begin(self: &Arc<Self>) -> InFlightGuard {
        self.asked.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_ms.store(NO_HEAD, Ordering::Release);
        self.touch();
        InFlightGuard(self.clone())
    }

    /// Bytes arrived from the client (`first` holds the start of what was read).
    fn read(&self, first: &[u8]) {
        if !self.asked.load(Ordering::Relaxed) {
            // The first head is the first-request deadline's; note only the protocol.
            if first.starts_with(b"PRI ") {
                self.h2.store(true, Ordering::Relaxed);
            }
            return;
        }
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_ms.load(Ordering::Relaxed) == NO_HEAD
            && !self.h2.load(Ordering::Relaxed)
        {
            self.head_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// What the deadline finds at `now`. Looks are at most the shorter of the two
    /// bounds apart, so an idle connection is closed within two keep-alive timeouts
    /// of its last request, and a slow later head within two header-read timeouts of
    /// its first byte.
    fn check(&self, now: Instant, bounds: Bounds, first_request_by: Instant) -> Check {
        let every = bounds.keep_alive.min(bounds.head);
        if !self.asked.load(Ordering::Acquire) {
            return match now >= first_request_by {
                true => Check::NeverAsked,
                false => Check::Later(first_request_by.min(now + every)),
            };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Check::Later(now + every);
        }
        let at = |ms: u64| self.opened + Duration::from_millis(ms);
        let head_by = match self.head_ms.load(Ordering::Acquire) {
            NO_HEAD => None,
            ms => Some(at(ms) + bounds.head),
        };
        if head_by.is_some_and(|by| by <= now) {
            return Check::SlowHead;
        }
        let idle_at = at(self.last_ms.load(Ordering::Acquire)) + bounds.keep_alive;
        if idle_at <= now {
            return Check::Idle;
        }
        let next = idle_at.min(now + every);
        Check::Later(head_by.map_or(next, |by| by.min(next)))
    }
}

/// A client stream whose reads tell the connection's [`Activity`] when a head begins.
struct Watched<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.activity.read(new);
            }
        }
        polled
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
        let bounds = Bounds {
            keep_alive,
            head: Duration::from_secs(30),
        };
        let a = Arc::new(Activity::new());
        let t0 = Instant::now();
        let first_by = t0 + Duration::from_secs(25);
        let check = |now| a.check(now, bounds, first_by);
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

    #[test]
    fn a_later_http1_head_must_be_whole_in_time_and_http2_bytes_start_none() {
        let bounds = Bounds {
            keep_alive: Duration::from_secs(60),
            head: Duration::from_secs(5),
        };
        let a = Arc::new(Activity::new());
        let first_by = Instant::now() + Duration::from_secs(5);
        a.read(b"GET / HTTP/1.1\r\n");
        drop(a.begin());
        // Idle, nothing read: looked at again within the head bound, never cut early.
        let now = Instant::now();
        assert_eq!(
            a.check(now, bounds, first_by),
            Check::Later(now + bounds.head)
        );
        // The first byte of the next head starts its clock.
        a.read(b"G");
        let started = Instant::now();
        match a.check(started, bounds, first_by) {
            Check::Later(at) => assert!(at <= started + bounds.head),
            other => panic!("expected Later, got {other:?}"),
        }
        let late = started + bounds.head + Duration::from_millis(5);
        assert_eq!(a.check(late, bounds, first_by), Check::SlowHead);
        // The head completing (a request begins) clears it.
        let guard = a.begin();
        drop(guard);
        assert_ne!(a.check(late, bounds, first_by), Check::SlowHead);

        // A connection that opened with the HTTP/2 preface: idle frames start no head.
        let h2 = Arc::new(Activity::new());
        h2.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        drop(h2.begin());
        h2.read(b"\x00\x00\x08\x06");
        let late = Instant::now() + bounds.head + Duration::from_secs(1);
        assert_ne!(h2.check(late, bounds, first_by), Check::SlowHead);
    }
}
