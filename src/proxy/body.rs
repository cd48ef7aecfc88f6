//! Bodies on both sides of the proxy: streamed frame by frame, never collected.
//!
//! [`IdleBody`] aborts a body that moves no byte for the idle timeout (a stalled
//! upload or download cannot hold a connection forever). A client's request body
//! ([`RequestBody`]) also has a total deadline, and records what its client did wrong
//! in a [`ClientSide`] the forward path reads: a broken or stalled upload is the
//! client's fault, never the upstream's. [`ProxyBody`] is what clients
//! receive: an upstream's streamed body or a short text ringway wrote itself; it counts
//! the request in the metrics ([`Tally`]) and writes the access-log line when the
//! response is finished or dropped. For a gRPC call it also reads the status the
//! response ends with from its trailers (only then: other responses' frames are
//! passed on untouched), for the metrics and, when the head could not tell, for
//! passive detection.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::access::AccessLog;
use super::error::BodyFault;
use super::grpc::{self, Code};
use super::upstream::PooledConn;
use super::Snapshot;
use crate::health::detector::{self, InFlight, Outcome};

/// Error type of every body ringway produces.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that fails when no frame arrives within `idle`.
#[derive(Debug)]
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Created on the first `Pending`: bodies that arrive whole never arm a timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last armed.
    progressed: bool,
    /// Told of every frame taken, and `true` once the whole body has been taken.
    sent: Option<watch::Sender<bool>>,
    /// Counts the data bytes taken.
    bytes: Option<IntCounter>,
    /// Set on a client's request body: where its faults are recorded.
    client: Option<Arc<ClientSide>>,
    /// The whole body must have arrived by then (request bodies only).
    total: Option<(Pin<Box<Sleep>>, Duration)>,
}

/// What the forward path learns from a request body about its client: shared by the
/// body (which writes) and the forward path (which reads when the upstream send fails
/// or seems to stall).
#[derive(Debug, Default)]
pub struct ClientSide {
    fault: OnceLock<BodyFault>,
    /// The body was last asked for data and the client had none to give: a pause now
    /// is the client's, not the upstream's.
    waiting: AtomicBool,
}

impl ClientSide {
    /// The client's fault, once the body has failed because of it.
    pub fn fault(&self) -> Option<&BodyFault> {
        self.fault.get()
    }

    /// True while the body waits for the client's next bytes.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    fn failed(&self, fault: BodyFault) -> BoxError {
        let _ = self.fault.set(fault.clone());
        fault.into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}: body idle timeout")]
pub struct IdleTimeout(Duration);

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleBody {
            inner,
            idle,
            timer: None,
            progressed: false,
            sent: None,
            bytes: None,
            client: None,
            total: None,
        }
    }

    /// A client's request body: idle for at most `idle` between frames, whole
    /// within `total` from now, its faults recorded in the returned [`ClientSide`].
    pub fn from_client(inner: B, idle: Duration, total: Duration) -> (Self, Arc<ClientSide>) {
        let side = Arc::new(ClientSide::default());
        let mut body = IdleBody::new(inner, idle);
        body.client = Some(side.clone());
        body.total = Some((Box::pin(tokio::time::sleep(total)), total));
        (body, side)
    }

    /// Where this body records its client's faults (a client's body with data).
    pub fn client_side(&self) -> Option<Arc<ClientSide>> {
        self.client.clone()
    }

    /// Counts the data bytes taken from this body in `bytes`.
    pub fn counting(mut self, bytes: IntCounter) -> Self {
        self.bytes = Some(bytes);
        self
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<IdleTimeout> {
        let deadline = tokio::time::Instant::now() + self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if std::mem::take(&mut self.progressed) {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(IdleTimeout(self.idle))
    }
}

impl<B> IdleBody<B> {
    /// The error for `fault`, recorded against the client when this is a client's
    /// body; otherwise a plain error (an upstream's body).
    fn client_failed(&mut self, fault: BodyFault) -> BoxError {
        match &self.client {
            Some(side) => side.failed(fault),
            None => match fault {
                BodyFault::Stalled(idle) => IdleTimeout(idle).into(),
                other => other.into(),
            },
        }
    }
}

impl<B: Body> IdleBody<B> {
    /// Watches this body being taken: the receiver sees a change for every frame
    /// taken, and `true` once the whole body has been (at once for an empty body).
    /// A new call replaces the previous watcher.
    pub fn track_sent(&mut self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(self.inner.is_end_stream());
        self.sent = Some(tx);
        rx
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some((deadline, total)) = &mut this.total {
            if deadline.as_mut().poll(cx).is_ready() {
                let total = *total;
                return Poll::Ready(Some(Err(this.client_failed(BodyFault::TooSlow(total)))));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                match &this.client {
                    Some(side) => {
                        side.waiting.store(false, Ordering::Release);
                        Poll::Ready(Some(Err(side.failed(BodyFault::Malformed(e.to_string())))))
                    }
                    None => Poll::Ready(Some(Err(e))),
                }
            }
            Poll::Ready(frame) => {
                this.progressed = true;
                if let Some(side) = &this.client {
                    side.waiting.store(false, Ordering::Release);
                }
                if let (Some(bytes), Some(Ok(f))) = (&this.bytes, &frame) {
                    bytes.inc_by(f.data_ref().map_or(0, |d| d.len() as u64));
                }
                if let Some(sent) = &this.sent {
                    let end = frame.is_none() || this.inner.is_end_stream();
                    sent.send_modify(|done| *done |= end);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(side) = &this.client {
                    side.waiting.store(true, Ordering::Release);
                }
                let timeout = ready!(this.poll_timer(cx));
                Poll::Ready(Some(Err(this.client_failed(BodyFault::Stalled(timeout.0)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's request body on its way upstream.
pub type RequestBody = IdleBody<Incoming>;

/// Where a request went, as indexes into its snapshot: `pool` none when no pool
/// served it, `upstream` none when ringway answered it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Target {
    pool: Option<u32>,
    upstream: Option<u32>,
}

impl Target {
    pub fn set_pool(&mut self, index: usize) {
        self.pool = u32::try_from(index).ok();
    }

    pub fn set_upstream(&mut self, index: usize) {
        self.upstream = u32::try_from(index).ok();
    }

    fn exchange<'s>(&self, snapshot: &'s Snapshot) -> Option<&'s crate::metrics::Exchange> {
        let index = |i: Option<u32>| i.map(|i| i as usize);
        snapshot
            .metrics
            .exchange(index(self.pool), index(self.upstream))
    }
}

/// A request's metrics: in `ringway_requests_in_flight` from [`Tally::start`] until
/// dropped; counted once, when dropped after [`Tally::answered`] (its response ended or
/// was cut off), through the handles of the snapshot it ran on: nothing is looked up
/// by name. A tally dropped unanswered (the client left first) only leaves the
/// in-flight count.
#[derive(Debug)]
pub struct Tally {
    snapshot: Arc<Snapshot>,
    target: Target,
    start: Instant,
    status: Option<u16>,
    grpc: Option<GrpcCall>,
}

/// What the tally knows of a gRPC call: the status it ended with, once known.
#[derive(Debug, Default)]
struct GrpcCall {
    code: Option<Code>,
}

impl Tally {
    /// Starts counting a request served from `snapshot`.
    pub fn start(snapshot: Arc<Snapshot>) -> Tally {
        if let Some(g) = snapshot.metrics.in_flight() {
            g.inc();
        }
        Tally {
            snapshot,
            target: Target::default(),
            start: Instant::now(),
            status: None,
            grpc: None,
        }
    }

    /// The request is a gRPC call; its response head settled `code` (see
    /// [`grpc::head_status`]), or the trailers will.
    pub fn grpc(&mut self, code: Option<Code>) {
        self.grpc = Some(GrpcCall { code });
    }

    /// The call ended with `code`, unless an earlier status settled it.
    fn grpc_ended(&mut self, code: Code) {
        if let Some(call) = &mut self.grpc {
            call.code.get_or_insert(code);
        }
    }

    fn awaits_grpc(&self) -> bool {
        self.grpc.as_ref().is_some_and(|c| c.code.is_none())
    }

    /// The snapshot the request runs on.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The response head is ready: `status`, from `target`.
    pub fn answered(&mut self, target: Target, status: u16) {
        self.target = target;
        self.status = Some(status);
    }

    fn sent(&self, bytes: usize) {
        if let Some(e) = self.target.exchange(&self.snapshot) {
            e.sent(bytes);
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if let Some(g) = self.snapshot.metrics.in_flight() {
            g.dec();
        }
        let Some(status) = self.status else { return };
        if let Some(e) = self.target.exchange(&self.snapshot) {
            e.finished(status, self.start.elapsed());
        }
        if let Some(call) = &self.grpc {
            let pool = self.target.pool.map(|p| p as usize);
            if let Some(calls) = self.snapshot.metrics.grpc(pool) {
                calls.ended(call.code.unwrap_or(Code::Unknown));
            }
        }
    }
}

/// A response body sent to a client.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    log: Option<Box<AccessLog>>,
    /// Counts the request in flight to its upstream until the body ends or drops.
    inflight: Option<InFlight>,
    tally: Option<Tally>,
    /// A response being stored in the pool's cache as it streams.
    fill: Option<Box<super::cache::Fill>>,
}

#[derive(Debug)]
enum Kind {
    Text(Option<Bytes>),
    /// An upstream's body, and the connection it arrives on, pooled again once the
    /// body has been read to its end.
    Upstream(IdleBody<Incoming>, Option<PooledConn>),
}

impl ProxyBody {
    /// An empty body ringway wrote itself: the head says everything (a gRPC
    /// trailers-only answer).
    pub fn empty() -> Self {
        ProxyBody {
            kind: Kind::Text(None),
            log: None,
            inflight: None,
            tally: None,
            fill: None,
        }
    }

    /// A complete body ringway wrote itself.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody {
            kind: Kind::Text(Some(text.into())),
            log: None,
            inflight: None,
            tally: None,
            fill: None,
        }
    }

    /// An upstream's body, streamed; `conn` is pooled again when the body ends.
    pub fn upstream(body: Incoming, idle: Duration, conn: Option<PooledConn>) -> Self {
        ProxyBody {
            kind: Kind::Upstream(IdleBody::new(body, idle), conn),
            log: None,
            inflight: None,
            tally: None,
            fill: None,
        }
    }

    /// Keeps the request counted as in flight until this body ends.
    pub fn with_inflight(mut self, inflight: Option<InFlight>) -> Self {
        self.inflight = inflight;
        self
    }

    /// Attaches the access-log record written when this body ends.
    pub fn with_log(mut self, log: Box<AccessLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Stores this body in the cache through `fill` as it is sent.
    pub fn with_fill(mut self, fill: Box<super::cache::Fill>) -> Self {
        self.fill = Some(fill);
        self
    }

    /// Hands a data frame to the fill, which is given up past its object bound (or
    /// at trailers, which are not stored), and stored once the body is whole.
    fn fill_frame(&mut self, frame: &Frame<Bytes>) {
        let keep = match (&mut self.fill, frame.data_ref()) {
            (None, _) => return,
            (Some(fill), Some(data)) => fill.data(data),
            (Some(_), None) => false,
        };
        if !keep {
            self.fill = None;
        } else if self.is_end_stream() {
            self.fill_done();
        }
    }

    fn fill_done(&mut self) {
        if let Some(fill) = self.fill.take() {
            fill.finish();
        }
    }

    /// Attaches the request's metrics, recorded when this body ends.
    pub fn with_tally(mut self, tally: Tally) -> Self {
        self.tally = Some(tally);
        self
    }

    /// Trailers arrived: a gRPC call waiting for its status has it now (a missing or
    /// unreadable one is `UNKNOWN`).
    fn trailers(&mut self, trailers: &HeaderMap) {
        let waiting = self.tally.as_ref().is_some_and(Tally::awaits_grpc)
            || self.inflight.as_ref().is_some_and(InFlight::is_pending);
        if waiting {
            let code = grpc::status_in(trailers).unwrap_or(Code::Unknown);
            self.ended(code, Outcome::Grpc(code));
        }
    }

    /// The response ended (or broke) before any status: a gRPC call still waiting
    /// for one ends with `code`, and detection records `outcome`.
    fn ended(&mut self, code: Code, outcome: Outcome) {
        if let Some(tally) = &mut self.tally {
            tally.grpc_ended(code);
        }
        if let Some(inflight) = self.inflight.as_mut().filter(|f| f.is_pending()) {
            inflight.settle(outcome, detector::now_ms());
        }
    }

    fn finish(&mut self, failed: bool) {
        self.inflight = None;
        if let Some(mut log) = self.log.take() {
            log.failed = failed;
        }
        self.tally = None;
        if let Kind::Upstream(_, conn) = &mut self.kind {
            match conn.take() {
                Some(conn) if !failed => conn.release(),
                // A connection whose body was cut short is dropped, and closed.
                _ => {}
            }
        }
    }
}

impl Drop for ProxyBody {
    /// A body dropped before its end was cut off (the client left, or the upstream
    /// failed); one that was already complete, such as a HEAD response, was not.
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        if complete {
            self.fill_done();
            self.ended(Code::Unknown, Outcome::Grpc(Code::Unknown));
        } else if let Some(tally) = &mut self.tally {
            // The client left: nothing is held against the upstream.
            tally.grpc_ended(Code::Cancelled);
        }
        self.finish(!complete);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            Kind::Text(text) => text.take().map(|t| Ok(Frame::data(t))),
            Kind::Upstream(body, _) => ready!(Pin::new(body).poll_frame(cx)),
        };
        match &frame {
            Some(Ok(f)) => {
                let len = f.data_ref().map_or(0, Bytes::len);
                if let Some(log) = this.log.as_mut() {
                    log.bytes_out += len as u64;
                }
                if let Some(tally) = &this.tally {
                    tally.sent(len);
                }
                this.fill_frame(f);
                if let Some(trailers) = f.trailers_ref() {
                    this.trailers(trailers);
                    // Trailers are a body's last frame: the response is whole, even
                    // if its sender (an HTTP/2 stream) never asks for the end.
                    this.finish(false);
                }
            }
            Some(Err(_)) => {
                // The upstream's body broke (or stalled) mid-call.
                this.fill = None;
                this.ended(Code::Unknown, Outcome::Reset);
                this.finish(true);
            }
            None => {
                this.fill_done();
                this.ended(Code::Unknown, Outcome::Grpc(Code::Unknown));
                this.finish(false);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Text(text) => text.is_none(),
            Kind::Upstream(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Text(Some(t)) => SizeHint::with_exact(t.len() as u64),
            Kind::Text(None) => SizeHint::with_exact(0),
            Kind::Upstream(body, _) => body.size_hint(),
        }
    }
}
