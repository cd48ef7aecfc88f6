//! One upstream's client side: pooled keep-alive HTTP/1.1 connections, or multiplexed
//! HTTP/2 connections ([`h2`]), over TLS when the pool says so (the TLS handshake is
//! part of connecting, bounded by the same connect timeout).
//!
//! HTTP/1.1: a request first tries idle pooled connections, then opens a new one. A
//! connection is made *before* the request is handed over, so a refused or timed-out
//! connect leaves the request (and its body) untouched for the next upstream on the
//! ring. A response comes with a [`PooledConn`]: the response body hands it back when
//! it has been read to its end, and the connection is pooled again at once. A body cut
//! short drops it instead, and hyper closes that connection.
//!
//! HTTP/2: a request takes a stream slot on a shared connection (see [`h2`]); its
//! [`PooledConn`] holds the slot until the response body ends or is dropped. A stream
//! the upstream refused before processing it (`REFUSED_STREAM`, or above the last
//! stream id of a graceful `GOAWAY`) comes back as [`SendError::Refused`]: the forward
//! path sends it again elsewhere when its body can be (see [`super::replay`]).

pub mod h2;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use self::h2::{H2Pool, Lease, Slot};
use super::error::ConnectError;
use super::replay::UpBody;
use crate::config::{Http2Settings, UpstreamAddr, UpstreamProtocol};
use crate::tls::UpstreamTls;

type H1Sender = http1::SendRequest<UpBody>;

/// Settings one upstream's client uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// Idle pooled connections older than this are closed, not reused.
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// TLS towards the upstream; `None` is plain HTTP.
    pub tls: Option<Arc<UpstreamTls>>,
    /// The HTTP version spoken.
    pub protocol: UpstreamProtocol,
    /// Bounds of HTTP/2 connections (used when the protocol may be HTTP/2).
    pub http2: Http2Settings,
    /// Connections open at once, idle ones included (`upstream_limits.max_connections`);
    /// `None`: only the idle and HTTP/2 bounds.
    pub max_connections: Option<usize>,
}

/// The client side of one upstream.
#[derive(Debug)]
pub struct UpstreamClient {
    pub id: Arc<str>,
    pub addr: UpstreamAddr,
    settings: ClientSettings,
    idle: Mutex<Vec<Idle>>,
    h2: Arc<H2Pool>,
    /// HTTP/1.1 connections open or being opened, for `max_connections`.
    open: Arc<OpenCount>,
}

/// HTTP/1.1 connections open to one upstream, and who waits for one to close or to
/// come back to the pool.
#[derive(Debug, Default)]
struct OpenCount {
    n: std::sync::atomic::AtomicUsize,
    room: tokio::sync::Notify,
}

/// One counted HTTP/1.1 connection: held by the task that drives it, so the count
/// drops when the connection has closed (or failed to open).
#[derive(Debug)]
struct OpenSlot(Arc<OpenCount>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.n.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.room.notify_one();
    }
}

impl OpenCount {
    /// A place for one more connection under `max`, if there is one.
    fn try_take(self: &Arc<Self>, max: usize) -> Option<OpenSlot> {
        use std::sync::atomic::Ordering::Relaxed;
        self.n
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| OpenSlot(self.clone()))
    }
}

#[derive(Debug)]
struct Idle {
    sender: H1Sender,
    since: Instant,
}

/// A connection ready to take one request.
pub enum Sender {
    H1(H1Sender),
    H2(Lease),
}

/// A connection lent to one exchange. [`PooledConn::release`] returns it to its
/// upstream's pool; dropping it instead lets hyper close it (HTTP/1.1) or gives its
/// stream slot back (HTTP/2, where the connection carries on).
#[derive(Debug)]
pub struct PooledConn {
    conn: Lent,
    client: Arc<UpstreamClient>,
}

#[derive(Debug)]
enum Lent {
    H1(H1Sender),
    H2(#[allow(dead_code)] Lease),
}

impl PooledConn {
    /// Pools the connection again: call only once the response body was read whole.
    pub fn release(self) {
        match self.conn {
            Lent::H1(sender) => self.client.checkin(sender),
            Lent::H2(_lease) => {}
        }
    }
}

/// How sending on one connection ended, when it did not bring a response.
pub enum SendError {
    /// The request was never written (the connection had closed): it comes back and
    /// may go elsewhere.
    NotSent(Box<Request<UpBody>>, hyper::Error),
    /// An HTTP/2 upstream refused the stream before processing it: the request may be
    /// sent again, if it can be (see `replay::Resend`). `draining` when the refusal was
    /// a `GOAWAY` (the upstream is recycling the connection: another connection to it
    /// will do), not `REFUSED_STREAM` (it sheds load: the next upstream is better).
    Refused { error: hyper::Error, draining: bool },
    /// The request may have been written: it must not be sent again.
    Failed(hyper::Error),
}

/// What a finished connect produced.
enum Connected {
    H1(H1Sender),
    H2(http2::SendRequest<UpBody>),
}

impl UpstreamClient {
    pub fn new(id: Arc<str>, addr: UpstreamAddr, settings: ClientSettings) -> Self {
        let mut http2 = settings.http2;
        if let Some(max) = settings.max_connections {
            http2.max_connections = http2.max_connections.min(max);
        }
        let h2 = H2Pool::new(http2);
        UpstreamClient {
            id,
            addr,
            settings,
            idle: Mutex::new(Vec::new()),
            h2,
            open: Arc::default(),
        }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Whether requests go over HTTP/2 connections of the [`h2`] pool first: `h2` and
    /// `h2c` always; `auto` over TLS, where ALPN decides per connection.
    fn prefers_h2(&self) -> bool {
        match self.settings.protocol {
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => self.settings.tls.is_some(),
            UpstreamProtocol::Http1 => false,
        }
    }

    /// Whether a request body should be kept for a replay (HTTP/2 may refuse a stream
    /// after taking some of its body).
    pub fn may_refuse_streams(&self) -> bool {
        self.prefers_h2()
    }

    /// An idle HTTP/1.1 connection, newest first. It may still be finishing its previous
    /// exchange; [`UpstreamClient::send`] waits for it to be ready. An `auto` pool
    /// over TLS has one only when its upstream chose HTTP/1.1 in ALPN.
    pub fn checkout(&self) -> Option<Sender> {
        if matches!(
            self.settings.protocol,
            UpstreamProtocol::H2 | UpstreamProtocol::H2c
        ) {
            return None;
        }
        self.checkout_h1().map(Sender::H1)
    }

    fn checkout_h1(&self) -> Option<H1Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < self.settings.idle_timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    /// True when an HTTP/1.1 request can have a connection now: an idle one is pooled,
    /// or fewer than `max_connections` are open. Always true for HTTP/2 pools, whose
    /// streams wait for a place themselves.
    pub fn has_room(&self) -> bool {
        let Some(max) = self.settings.max_connections else {
            return true;
        };
        // An `auto` pool's connections count here only when ALPN picked HTTP/1.1.
        matches!(
            self.settings.protocol,
            UpstreamProtocol::H2 | UpstreamProtocol::H2c
        ) || self.open.n.load(std::sync::atomic::Ordering::Relaxed) < max
            || !self
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    /// Waits up to `wait` for room under `max_connections` (see [`Self::has_room`]):
    /// a connection handed back to the pool, or one closing. False when the wait ran
    /// out. Another request may take the room first: connecting then answers
    /// [`ConnectError::AtConnections`].
    pub async fn wait_for_room(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let room = self.open.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.has_room() {
                return true;
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return false;
            }
        }
    }

    /// A connection for one request: for HTTP/1.1 a new one, for HTTP/2 a stream on a
    /// shared one (opened if needed), all within the connect timeout.
    pub async fn connect(self: &Arc<Self>) -> Result<Sender, ConnectError> {
        if !self.prefers_h2() {
            let slot = match self.settings.max_connections {
                Some(max) => Some(
                    self.open
                        .try_take(max)
                        .ok_or(ConnectError::AtConnections(max))?,
                ),
                None => None,
            };
            return match Box::pin(self.open(slot)).await? {
                Connected::H1(s) => Ok(Sender::H1(s)),
                Connected::H2(_) => Err(ConnectError::Other(
                    "upstream chose HTTP/2 where HTTP/1.1 was offered".into(),
                )),
            };
        }
        let wait = self.settings.connect_timeout;
        let opening = match self.h2.take(wait).await {
            Some(Slot::Stream(lease)) => return Ok(Sender::H2(lease)),
            Some(Slot::Open(opening)) => opening,
            None => {
                let s = self.h2.settings();
                return Err(ConnectError::Busy(format!(
                    "all {} HTTP/2 connections carry {} streams",
                    s.max_connections, s.max_streams
                )));
            }
        };
        // `auto`: ALPN may pick HTTP/1.1, whose connections `max_connections` counts;
        // the place is given back at once when the connection is HTTP/2.
        let slot = match (self.settings.protocol, self.settings.max_connections) {
            (UpstreamProtocol::Auto, Some(max)) => Some(
                self.open
                    .try_take(max)
                    .ok_or(ConnectError::AtConnections(max))?,
            ),
            _ => None,
        };
        match Box::pin(self.open(slot)).await? {
            Connected::H2(sender) => Ok(Sender::H2(opening.opened(sender))),
            // `auto` over TLS where the upstream chose HTTP/1.1.
            Connected::H1(sender) => Ok(Sender::H1(sender)),
        }
    }

    /// Opens a new connection within the connect timeout. Callers box this future: its
    /// state (TLS and HTTP/2 handshakes) is large, and would otherwise be part of every
    /// request's future, copied with it, though most requests find a pooled connection.
    /// `slot` counts an HTTP/1.1 connection under `max_connections` for as long as it
    /// stays open.
    async fn open(&self, slot: Option<OpenSlot>) -> Result<Connected, ConnectError> {
        let connect = async {
            match self.addr.ip {
                Some(ip) => TcpStream::connect((ip, self.addr.port)).await,
                None => TcpStream::connect((self.addr.host.as_str(), self.addr.port)).await,
            }
        };
        let stream = match tokio::time::timeout(self.settings.connect_timeout, connect).await {
            Err(_) => return Err(ConnectError::TimedOut),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::Refused)
            }
            Ok(Err(e)) => return Err(ConnectError::Other(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        match &self.settings.tls {
            None if self.settings.protocol == UpstreamProtocol::H2c => {
                self.handshake_h2(stream).await.map(Connected::H2)
            }
            None => self.handshake_h1(stream, slot).await.map(Connected::H1),
            Some(tls) => {
                let connect = tls.connect(&self.addr.host, stream);
                let stream =
                    match tokio::time::timeout(self.settings.connect_timeout, connect).await {
                        Err(_) => return Err(ConnectError::TimedOut),
                        Ok(Err(why)) => return Err(ConnectError::Other(why)),
                        Ok(Ok(stream)) => stream,
                    };
                let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                match (self.settings.protocol, alpn_h2) {
                    (UpstreamProtocol::H2, false) => Err(ConnectError::Other(
                        "upstream did not agree to HTTP/2 (ALPN h2)".into(),
                    )),
                    (UpstreamProtocol::H2 | UpstreamProtocol::Auto, true) => {
                        self.handshake_h2(stream).await.map(Connected::H2)
                    }
                    _ => self.handshake_h1(stream, slot).await.map(Connected::H1),
                }
            }
        }
    }

    /// Starts HTTP/1.1 on a connected stream, its connection driven by a task of its own.
    async fn handshake_h1<S>(
        &self,
        stream: S,
        slot: Option<OpenSlot>,
    ) -> Result<H1Sender, ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        let id = self.id.clone();
        tokio::spawn(async move {
            // Counted until the connection ends (for an upgrade: until it is handed
            // over; the tunnel itself is bounded by the listener's connection cap).
            let _slot = slot;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %id, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Starts HTTP/2 on a connected stream, within the connect timeout (the upstream's
    /// SETTINGS must arrive), its connection driven by a task of its own.
    async fn handshake_h2<S>(&self, stream: S) -> Result<http2::SendRequest<UpBody>, ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let s = &self.settings.http2;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(s.keepalive_interval)
            .keep_alive_timeout(s.keepalive_timeout)
            .keep_alive_while_idle(true)
            .initial_max_send_streams(s.max_streams)
            .max_concurrent_reset_streams(MAX_CONCURRENT_RESET_STREAMS)
            .max_header_list_size(MAX_RESPONSE_HEADER_LIST);
        let handshake = builder.handshake(TokioIo::new(stream));
        let (sender, conn) =
            match tokio::time::timeout(self.settings.connect_timeout, handshake).await {
                Err(_) => return Err(ConnectError::TimedOut),
                Ok(Err(e)) => return Err(ConnectError::Other(describe(&e))),
                Ok(Ok(pair)) => pair,
            };
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %id, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends `req` on `sender`. The response comes with its connection, to be handed
    /// back once the response body has been read.
    pub async fn send(
        self: &Arc<Self>,
        sender: Sender,
        req: Request<UpBody>,
    ) -> Result<(Response<Incoming>, PooledConn), SendError> {
        match sender {
            Sender::H1(s) => self.send_h1(s, req).await,
            Sender::H2(lease) => self.send_h2(lease, req).await,
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut sender: H1Sender,
        req: Request<UpBody>,
    ) -> Result<(Response<Incoming>, PooledConn), SendError> {
        // A pooled connection becomes ready as soon as hyper has finished its previous
        // exchange, or fails here if the upstream closed it meanwhile.
        if let Err(e) = sender.ready().await {
            return Err(SendError::NotSent(Box::new(req), e));
        }
        match sender.try_send_request(req).await {
            Ok(resp) => Ok((
                resp,
                PooledConn {
                    conn: Lent::H1(sender),
                    client: self.clone(),
                },
            )),
            Err(mut e) => match e.take_message() {
                Some(req) => Err(SendError::NotSent(Box::new(req), e.into_error())),
                None => Err(SendError::Failed(e.into_error())),
            },
        }
    }

    async fn send_h2(
        self: &Arc<Self>,
        lease: Lease,
        req: Request<UpBody>,
    ) -> Result<(Response<Incoming>, PooledConn), SendError> {
        let req = self.h2_form(req);
        let mut sender = lease.sender();
        match sender.try_send_request(req).await {
            Ok(resp) => Ok((
                resp,
                PooledConn {
                    conn: Lent::H2(lease),
                    client: self.clone(),
                },
            )),
            Err(mut e) => {
                if let Some(req) = e.take_message() {
                    return Err(SendError::NotSent(Box::new(req), e.into_error()));
                }
                let e = e.into_error();
                match refused_before_processing(&e) {
                    Some(Refusal::GoAway) => {
                        lease.drain();
                        Err(SendError::Refused {
                            error: e,
                            draining: true,
                        })
                    }
                    Some(Refusal::Stream) => Err(SendError::Refused {
                        error: e,
                        draining: false,
                    }),
                    None => Err(SendError::Failed(e)),
                }
            }
        }
    }

    /// The request as HTTP/2 wants it: the scheme and authority in the URI (they become
    /// `:scheme` and `:authority`; the authority is the client's `Host`, else the
    /// upstream's address), no `Host` header.
    fn h2_form(&self, mut req: Request<UpBody>) -> Request<UpBody> {
        let scheme = match self.settings.tls {
            Some(_) => Scheme::HTTPS,
            None => Scheme::HTTP,
        };
        let authority = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(|| req.uri().authority().cloned())
            .or_else(|| Authority::try_from(self.addr.to_string()).ok());
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = authority;
        parts.path_and_query = Some(path);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_2;
        req
    }

    fn checkin(&self, sender: H1Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
        drop(idle);
        // A request waiting at `max_connections` may take it.
        self.open.room.notify_one();
    }

    /// Idle HTTP/1.1 connections now pooled (for tests and the admin view).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// HTTP/2 connections open now and the streams in use on them.
    pub fn h2_usage(&self) -> (usize, usize) {
        self.h2.usage()
    }
}

/// Streams the upstream may reset before ringway stops accepting resets on one
/// connection: h2's default, which guards against a reset flood.
const MAX_CONCURRENT_RESET_STREAMS: usize = 10;

/// Largest response header list ringway accepts from an HTTP/2 upstream (the same
/// order as the client side's header limit).
const MAX_RESPONSE_HEADER_LIST: u32 = 64 * 1024;

/// Whether an HTTP/2 upstream declined the stream before doing anything with it
/// (RFC 9113 §8.7): it reset the stream with `REFUSED_STREAM`, or sent a graceful
/// `GOAWAY` (`NO_ERROR`) whose last stream id is below it (h2 reports exactly those
/// streams with the GOAWAY's error). After a `GOAWAY` with an error code the streams
/// below the last id fail the same way, so those are not taken as refused.
fn refused_before_processing(e: &hyper::Error) -> Option<Refusal> {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(h2e) = err.downcast_ref::<::h2::Error>() {
            if !h2e.is_remote() {
                return None;
            }
            return match h2e.reason() {
                Some(::h2::Reason::REFUSED_STREAM) if h2e.is_reset() => Some(Refusal::Stream),
                Some(::h2::Reason::NO_ERROR) if h2e.is_go_away() => Some(Refusal::GoAway),
                _ => None,
            };
        }
        source = err.source();
    }
    None
}

/// How an HTTP/2 upstream declined a stream it did not process.
enum Refusal {
    /// `REFUSED_STREAM`.
    Stream,
    /// Above the last stream id of a graceful `GOAWAY`.
    GoAway,
}

fn describe(e: &hyper::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
