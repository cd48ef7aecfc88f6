//! The data plane: per request, pick a pool, hash the key, walk the ring, forward over
//! a pooled connection and stream the answer back.
//!
//! The request path reads one [`Snapshot`] and never waits on anything else: no lock
//! is held across an `.await`, and every retry is bounded by the pool's `max_attempts`.

pub mod access;
pub mod body;
pub mod cache;
pub mod error;
pub mod grpc;
mod h2_gauges;
pub mod headers;
pub mod listener;
pub mod replay;
pub mod retry;
pub mod server;
pub mod snapshot;
pub mod upstream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::balance::{request_host, KeyInput, MissingKey};
use crate::config::AtLimit;
use crate::health::detector::{self, InFlight, Outcome};
use crate::metrics::{Metrics, PoolMetrics, PoolShape};
use access::AccessLog;
use body::{IdleBody, ProxyBody, Tally, Target};
use error::{ConnectError, HeadFault, ProxyError};
pub use headers::Origin;
use replay::{Resend, UpBody};
pub use snapshot::{PoolState, Snapshot};
use upstream::{PooledConn, SendError, Sender, UpstreamClient};

/// A response head and the connection it came on.
type Exchange = (Response<Incoming>, PooledConn);

/// The shared state of the data plane.
#[derive(Debug)]
pub struct Proxy {
    /// Shared with the HTTP/2 gauges, which read it at scrape time.
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Held while a snapshot gets its metric handles and is stored, so the series
    /// exported always match the snapshot in force.
    swapping: Mutex<()>,
}

/// A response head from an upstream, and which upstream sent it.
struct Forwarded {
    upstream: usize,
    response: Response<Incoming>,
    conn: PooledConn,
    /// Counts the request in flight until its response body ends.
    inflight: Option<InFlight>,
}

impl Proxy {
    /// A proxy serving `snapshot`, with a metrics registry of its own.
    pub fn new(snapshot: Snapshot) -> Self {
        let proxy = Proxy {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            metrics: Arc::new(Metrics::new()),
            swapping: Mutex::new(()),
        };
        let gauges = h2_gauges::H2Gauges::new(proxy.snapshot.clone());
        proxy.metrics.register(Box::new(gauges));
        let cached = cache::metrics::CacheMetrics::new(proxy.snapshot.clone());
        proxy.metrics.register(Box::new(cached));
        proxy.swap(snapshot);
        proxy
    }

    /// The metrics registry requests are counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The snapshot requests use now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot, resolving its metric handles first; requests already
    /// running finish on the old one.
    pub fn swap(&self, mut next: Snapshot) {
        let _one_at_a_time = self.swapping.lock().unwrap_or_else(|p| p.into_inner());
        let shapes: Vec<PoolShape<'_>> = next
            .pools
            .iter()
            .map(|pool| {
                let points = pool.ring.points_per_member();
                let ids = pool.upstreams.iter().enumerate();
                PoolShape {
                    name: &pool.name,
                    upstreams: ids
                        .map(|(i, up)| (&*up.id, points.get(i).copied().unwrap_or(0)))
                        .collect(),
                }
            })
            .collect();
        let handles = self.metrics.handles_for(&shapes);
        next.metrics = handles;
        self.snapshot.store(Arc::new(next));
    }

    /// Serves one request from a client connection.
    pub async fn handle(&self, req: Request<Incoming>, origin: &Origin) -> Response<ProxyBody> {
        let mut tally = Tally::start(self.snapshot.load_full());
        let request_id = origin
            .work
            .request_id
            .then(|| headers::RequestId::of(req.headers()));
        // The record costs an allocation; make it only when the line will be written.
        let spec = &tally.snapshot().access_log;
        let mut log = access::wanted(spec).then(|| {
            let mut log = Box::new(AccessLog::new(&req, origin.client_ip, spec.clone()));
            log.request_id = match &request_id {
                Some(id) => Some(id.value()),
                None => req.headers().get(&headers::X_REQUEST_ID).cloned(),
            };
            log
        });
        let mut target = Target::default();
        let call = GrpcCall::of(&req);
        let result = {
            let ctx = RequestCtx {
                request_id: request_id.as_ref(),
                log: &mut log,
                target: &mut target,
            };
            // Pinned where it is made: handing the future itself to `deadline` would
            // copy all of its state once per request.
            let forwarded = self.route_and_forward(tally.snapshot(), req, origin, ctx);
            tokio::pin!(forwarded);
            call.deadline(forwarded).await
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                if let Some(log) = log.as_mut() {
                    log.fault = Some(e.fault().label());
                    log.error = Some(e.metric_label());
                }
                error_response(&e, call.is_some())
            }
        };
        let (mut parts, body) = resp.into_parts();
        if call.is_some() {
            tally.grpc(grpc::head_status(parts.status, &parts.headers));
        }
        if let Some(id) = &request_id {
            parts
                .headers
                .insert(headers::X_REQUEST_ID.clone(), id.value());
        }
        let status = parts.status.as_u16();
        tally.answered(target, status);
        let body = body.with_tally(tally);
        let Some(mut log) = log else {
            return Response::from_parts(parts, body);
        };
        log.status = status;
        Response::from_parts(parts, body.with_log(log))
    }

    async fn route_and_forward(
        &self,
        snapshot: &Snapshot,
        req: Request<Incoming>,
        origin: &Origin,
        ctx: RequestCtx<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let RequestCtx {
            request_id,
            log,
            target,
        } = ctx;
        let (head, body) = req.into_parts();
        headers::check_request(&head).map_err(ProxyError::BadHead)?;
        let mut req = Request::from_parts(head, body);
        let host = request_host(req.uri(), req.headers());
        let pool_index = snapshot
            .router
            .route(host, req.uri().path())
            .ok_or_else(|| ProxyError::NoPool {
                host: host.map(str::to_owned),
                path: req.uri().path().to_owned(),
            })?;
        let pool = &snapshot.pools[pool_index];
        target.set_pool(pool_index);
        if let Some(log) = log.as_mut() {
            log.pool = Some(pool.name.clone());
        }
        let metrics = snapshot.metrics.pool(pool_index);
        let hash = key_hash(pool, &req, origin)?;
        let cache_key = match &pool.cache {
            Some(store) => match &store.settings.key {
                None => Some(cache::key(req.uri(), host)),
                Some(template) => cache::key_of(template, &req, origin.client_ip),
            },
            None => None,
        };
        let upgrade = headers::upgrade_requested(req.headers());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::prepare_request(&mut parts, origin, upgrade);
        headers::set_tracing(&mut parts.headers, request_id, origin.work.traceparent);
        if let Some(log) = log.as_mut() {
            log.traceparent = headers::traceparent(&parts.headers).cloned();
        }
        let mut plan = None;
        if let (Some(store), Some(primary)) = (&pool.cache, cache_key) {
            match cache::consult(store, &mut parts, primary).await {
                cache::Consult::Serve(resp, refresh) => {
                    if let Some(refresh) = refresh {
                        self.revalidate(pool.name.clone(), hash, refresh, origin.work.via);
                    }
                    return Ok(resp);
                }
                cache::Consult::Forward(p) => plan = Some(p),
                cache::Consult::Bypass => {}
            }
        }
        let mut body = match body.is_end_stream() {
            true => IdleBody::new(body, pool.timeouts.idle),
            false => {
                let total = snapshot.request_body_timeout();
                IdleBody::from_client(body, pool.timeouts.idle, total).0
            }
        };
        if let (false, Some(m)) = (body.is_end_stream(), metrics) {
            body = body.counting(m.request_bytes().clone());
        }
        // Kept for a second attempt when one may follow the request being sent.
        let keep = (pool.may_refuse_streams() || pool.retry.may_resend(&parts.method))
            .then_some(pool.retry.max_body_bytes);
        let body = UpBody::new(body, keep);
        let req = Request::from_parts(parts, body);
        let forwarded = forward(pool, metrics, hash, req, target).await;
        let Forwarded {
            upstream,
            mut response,
            conn,
            inflight,
        } = match forwarded {
            Ok(f) => f,
            // A stale copy within its stale-if-error allowance stands in.
            Err(e) => return plan.as_ref().and_then(|p| p.failed()).ok_or(e),
        };
        if let Some(log) = log.as_mut() {
            log.upstream = Some(pool.upstreams[upstream].id.clone());
        }
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client)) = (switching, client_upgrade) {
            tunnel(
                client,
                hyper::upgrade::on(&mut response),
                pool.upstreams[upstream].id.clone(),
            );
        }
        headers::prepare_response(response.headers_mut(), switching, origin.work.via);
        // The client's connection speaks ringway's HTTP version, whatever the upstream
        // answered in (an HTTP/1.0 answer would otherwise close a keep-alive client).
        *response.version_mut() = http::Version::HTTP_11;
        let (parts, body) = response.into_parts();
        // A switched connection belongs to the tunnel, never to the pool.
        let mut body = ProxyBody::upstream(body, pool.timeouts.idle, (!switching).then_some(conn))
            .with_inflight(inflight);
        if let (Some(plan), false) = (plan, switching) {
            match plan.answered(parts.status, &parts.headers) {
                cache::Answered::Replace(resp) => return Ok(*resp),
                cache::Answered::Store(fill) => body = body.with_fill(fill),
                cache::Answered::Pass => {}
            }
        }
        Ok(Response::from_parts(parts, body))
    }

    /// Refreshes a stale entry served under stale-while-revalidate, in the
    /// background and within [`cache::REVALIDATE_TIMEOUT`]: the pool's answer is
    /// stored (or a 304 refreshes the entry) through `refresh`'s plan, which holds
    /// the key's fill until it ends.
    fn revalidate(&self, pool: Arc<str>, hash: u32, refresh: Box<cache::Revalidate>, via: bool) {
        let snapshot = self.snapshot.load_full();
        tokio::spawn(async move {
            let Some(index) = snapshot.pools.iter().position(|p| p.name == pool) else {
                return;
            };
            let (pool, metrics) = (&snapshot.pools[index], snapshot.metrics.pool(index));
            let cache::Revalidate { parts, plan } = *refresh;
            let work = async {
                let req = Request::from_parts(parts, UpBody::Empty);
                let mut target = Target::default();
                let Ok(f) = forward(pool, metrics, hash, req, &mut target).await else {
                    return;
                };
                let mut response = f.response;
                headers::prepare_response(response.headers_mut(), false, via);
                let (parts, body) = response.into_parts();
                let body = ProxyBody::upstream(body, pool.timeouts.idle, Some(f.conn))
                    .with_inflight(f.inflight);
                if let cache::Answered::Store(fill) = plan.answered(parts.status, &parts.headers) {
                    let mut body = body.with_fill(fill);
                    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                        if frame.is_err() {
                            break;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(cache::REVALIDATE_TIMEOUT, work).await;
        });
    }
}

/// What the request path notes besides the response: the request id it forwards, the
/// access-log record (when the line will be written), and where the request went.
struct RequestCtx<'a> {
    /// `None` when the listener makes no request ids.
    request_id: Option<&'a headers::RequestId>,
    log: &'a mut Option<Box<AccessLog>>,
    target: &'a mut Target,
}

/// The ring position for a request, applying the pool's missing-key policy.
fn key_hash(pool: &PoolState, req: &Request<Incoming>, origin: &Origin) -> Result<u32, ProxyError> {
    let input = KeyInput {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
        client_ip: origin.client_ip,
    };
    if let Some(hash) = pool.hash_key.hash(&input) {
        return Ok(hash);
    }
    match pool.on_missing_key {
        MissingKey::ClientIp => Ok(crate::ring::point(origin.client_ip_text.as_bytes())),
        MissingKey::Random => Ok(fastrand::u32(..)),
        MissingKey::Reject => Err(ProxyError::MissingKey {
            pool: pool.name.to_string(),
            key: pool.hash_key.to_string(),
        }),
    }
}

/// Sends `req` to the key's upstream, walking the ring to the next distinct upstream
/// while an attempt fails in a way the pool retries: at most `max_attempts` upstreams.
/// A connect failure (nothing sent) and a stream an HTTP/2 upstream refused go on at
/// once; a reset, a response-head timeout or a retryable status go on only for the
/// policy's methods, when the request can be sent again whole, after a backoff, and
/// within the pool's retry budget. `target.upstream` becomes the upstream that
/// answered, or that failed once the request was sent.
async fn forward(
    pool: &PoolState,
    metrics: Option<&PoolMetrics>,
    hash: u32,
    req: Request<UpBody>,
    target: &mut Target,
) -> Result<Forwarded, ProxyError> {
    if pool.ring.is_empty() {
        return Err(ProxyError::EmptyPool {
            pool: pool.name.to_string(),
        });
    }
    let mut req = req;
    let grpc_call = grpc::is_grpc(req.headers());
    let policy = &pool.retry;
    // Whether outcomes after sending may be retried for this request at all.
    let resendable = policy.may_resend(req.method());
    let mut attempts = 0;
    let mut timeouts = 0;
    let mut backoffs = 0;
    // Upstreams passed over at one of their `upstream_limits`, and the last such cap.
    let mut at_limit = 0;
    let mut limit_met = ("max_inflight", 0);
    let mut last = String::new();
    // Held while a retry that costs the upstreams is in flight.
    let mut _permit: Option<retry::RetryPermit> = None;
    let now = detector::now_ms();
    let mut candidates = pool
        .health
        .candidates(&pool.ring, hash, pool.max_attempts, now)
        .peekable();
    while let Some(index) = candidates.next() {
        let upstream = &pool.upstreams[index];
        let counted = metrics.and_then(|m| m.upstream(index));
        let inflight = match pool.inflight_cap {
            None => pool.health.begin(index),
            Some(max) => match pool.health.try_begin(index, max) {
                Some(f) => Some(f),
                None if pool.limits.at_limit == AtLimit::Spill => {
                    if let Some(m) = counted {
                        m.spilled();
                    }
                    at_limit += 1;
                    limit_met = ("max_inflight", max);
                    continue;
                }
                None => {
                    if let Some(m) = counted {
                        m.queued();
                    }
                    let wait = pool.limits.queue_timeout;
                    match pool.health.begin_within(index, max, wait).await {
                        Some(f) => Some(f),
                        None => {
                            if let Some(m) = counted {
                                m.rejected();
                            }
                            return Err(ProxyError::AtLimit {
                                pool: pool.name.to_string(),
                                limit: "max_inflight",
                                max,
                            });
                        }
                    }
                }
            },
        };
        // `max_connections` (HTTP/1.1): every connection open to the upstream is busy.
        if !upstream.has_room() {
            let max = pool.limits.max_connections.unwrap_or_default();
            if pool.limits.at_limit == AtLimit::Spill {
                if let Some(m) = counted {
                    m.spilled();
                }
                at_limit += 1;
                limit_met = ("max_connections", max);
                continue;
            }
            if let Some(m) = counted {
                m.queued();
            }
            if !upstream.wait_for_room(pool.limits.queue_timeout).await {
                if let Some(m) = counted {
                    m.rejected();
                }
                return Err(ProxyError::AtLimit {
                    pool: pool.name.to_string(),
                    limit: "max_connections",
                    max,
                });
            }
        }
        if let (true, Some(m)) = (attempts > 0, counted) {
            m.retried();
        }
        attempts += 1;
        let resend = match req.body() {
            UpBody::Direct(_) => None,
            _ if resendable || upstream.may_refuse_streams() => Resend::of(&req),
            _ => None,
        };
        // A stream refused by a connection its upstream is recycling (`GOAWAY`) takes
        // a stream on another connection to the same upstream, a bounded number of
        // times: the key keeps its upstream.
        let mut retakes = 0;
        let result = loop {
            match attempt(pool, upstream, req).await {
                Err(Attempt::Refused(why, true)) if retakes < H2_GOAWAY_RETAKES => {
                    match resend.as_ref().and_then(Resend::request) {
                        Some(again) => {
                            retakes += 1;
                            req = again;
                        }
                        None => break Err(Attempt::Refused(why, true)),
                    }
                }
                other => break other,
            }
        };
        let known = outcome(&result, grpc_call);
        if let Some(outcome) = known {
            pool.health.record(index, outcome, detector::now_ms());
        }
        let more = candidates.peek().is_some();
        // A retry that costs the upstreams, if the policy, the request and the budget
        // all allow one: the request again, and how long to wait first.
        let mut retry_costly = |reason: retry::Reason, wait: Option<Duration>| {
            if !(resendable && more) {
                return None;
            }
            let next = resend.as_ref()?.request()?;
            let requests = pool
                .health
                .inflight
                .load(std::sync::atomic::Ordering::Relaxed);
            let Some(permit) = pool.retry_budget.try_acquire(policy, requests) else {
                if let Some(m) = metrics {
                    m.retry_budget_exhausted();
                }
                return None;
            };
            _permit = Some(permit);
            backoffs += 1;
            let wait = wait.unwrap_or_else(|| retry::backoff(policy, backoffs));
            Some((next, reason, wait))
        };
        let (next, reason, wait) = match result {
            Ok((response, conn)) => {
                let reason = retry_reason(policy, grpc_call, &response);
                let wait = match reason {
                    Some(retry::Reason::Status503) => {
                        match retry::retry_after(response.headers()) {
                            retry::RetryAfter::Absent => Some(None),
                            retry::RetryAfter::Wait(w) => Some(Some(w)),
                            retry::RetryAfter::TooLong => None,
                        }
                    }
                    Some(_) => Some(None),
                    None => None,
                };
                let again = match (reason, wait) {
                    (Some(reason), Some(wait)) => retry_costly(reason, wait),
                    _ => None,
                };
                let Some(again) = again else {
                    target.set_upstream(index);
                    return Ok(Forwarded {
                        upstream: index,
                        response,
                        conn,
                        // A gRPC call's status may come only in the trailers: the
                        // response body records the outcome then.
                        inflight: inflight.map(|f| f.pending(known.is_none())),
                    });
                };
                // The answer is dropped unread: its connection is not reused.
                drop((response, conn));
                last = format!("{}: answered {}", upstream.id, again.1.label());
                again
            }
            // The client failed its own request: nothing is held against the upstream,
            // and the answer is ringway's, not the upstream's.
            Err(Attempt::Client(e)) => return Err(e),
            Err(Attempt::Refused(why, _)) => {
                tracing::debug!(pool = %pool.name, upstream = %upstream.id, error = %why, "stream refused before processing, trying the next on the ring");
                let again = match more {
                    true => resend.as_ref().and_then(Resend::request),
                    false => None,
                };
                match again {
                    Some(next) => (next, retry::Reason::RefusedStream, Duration::ZERO),
                    None => {
                        target.set_upstream(index);
                        return Err(ProxyError::UpstreamFailed {
                            upstream: upstream.id.to_string(),
                            reason: format!("stream refused before processing ({why}); no upstream left to send it to, or its body was too long to send again"),
                        });
                    }
                }
            }
            Err(Attempt::Fatal(e)) => {
                if let (ProxyError::ResponseTimedOut { .. }, Some(m)) = (&e, counted) {
                    m.response_timed_out();
                }
                let reason = match &e {
                    ProxyError::ResponseTimedOut { .. } if policy.on.timeout => {
                        Some(retry::Reason::Timeout)
                    }
                    ProxyError::UpstreamFailed { .. } if policy.on.reset => {
                        Some(retry::Reason::Reset)
                    }
                    _ => None,
                };
                match reason.and_then(|r| retry_costly(r, None)) {
                    Some(again) => {
                        tracing::warn!(pool = %pool.name, upstream = %upstream.id, error = %e, "upstream failed, retrying on the next on the ring");
                        last = format!("{}: {e}", upstream.id);
                        again
                    }
                    None => {
                        target.set_upstream(index);
                        return Err(e);
                    }
                }
            }
            // Another request took the last connection under `max_connections` first:
            // the request passes to the next upstream, as a spill.
            Err(Attempt::Retry(back, ConnectError::AtConnections(max))) => {
                if let Some(m) = counted {
                    m.spilled();
                }
                attempts -= 1;
                at_limit += 1;
                limit_met = ("max_connections", max);
                req = *back;
                continue;
            }
            Err(Attempt::Retry(back, why)) => {
                let timed_out = matches!(why, ConnectError::TimedOut);
                if let Some(m) = counted {
                    m.connect_failed(timed_out);
                }
                timeouts += timed_out as usize;
                last = format!("{}: {why}", upstream.id);
                let reason = match why {
                    ConnectError::StreamRefused(_) => retry::Reason::RefusedStream,
                    _ => retry::Reason::Connect,
                };
                if !policy.on.connect && reason == retry::Reason::Connect {
                    break;
                }
                tracing::warn!(pool = %pool.name, upstream = %upstream.id, error = %why, "upstream unreachable, trying the next on the ring");
                (*back, reason, Duration::ZERO)
            }
        };
        if let Some(m) = metrics {
            m.retried_for(reason.index());
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        req = next;
    }
    if attempts == 0 && at_limit > 0 {
        return Err(ProxyError::AtLimit {
            pool: pool.name.to_string(),
            limit: limit_met.0,
            max: limit_met.1,
        });
    }
    if timeouts == attempts {
        return Err(ProxyError::ConnectTimedOut {
            pool: pool.name.to_string(),
            attempts,
        });
    }
    Err(ProxyError::Unreachable {
        pool: pool.name.to_string(),
        attempts,
        last,
    })
}

/// Why the pool would retry this answer, if it would: a 502, 503 or 504 the policy
/// names, or a gRPC call answered UNAVAILABLE in its head (a trailers-only answer).
fn retry_reason(
    policy: &crate::config::RetryPolicy,
    grpc_call: bool,
    response: &Response<Incoming>,
) -> Option<retry::Reason> {
    let status = response.status().as_u16();
    if policy.on.status(status) {
        return retry::Reason::of_status(status);
    }
    let unavailable = policy.on.grpc_unavailable
        && grpc_call
        && status == 200
        && response.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"14");
    unavailable.then_some(retry::Reason::GrpcUnavailable)
}

/// What detection learns from one attempt: nothing when the client was at fault, or
/// yet when a gRPC call's head leaves its status to the trailers.
fn outcome(result: &Result<Exchange, Attempt>, grpc_call: bool) -> Option<Outcome> {
    Some(match result {
        Ok((response, _)) if grpc_call && response.status() == StatusCode::OK => {
            Outcome::Grpc(grpc::status_in(response.headers())?)
        }
        Ok((response, _)) => Outcome::Response(response.status().as_u16()),
        // A local bound, or an upstream shedding or draining streams: neither says
        // the upstream is unwell.
        Err(Attempt::Retry(
            _,
            ConnectError::Busy(_) | ConnectError::StreamRefused(_) | ConnectError::AtConnections(_),
        )) => return None,
        Err(Attempt::Retry(_, why)) => Outcome::Connect {
            suspect: matches!(why, ConnectError::Refused | ConnectError::TimedOut),
        },
        Err(Attempt::Client(_) | Attempt::Refused(..)) => return None,
        Err(Attempt::Fatal(ProxyError::ResponseTimedOut { .. })) => Outcome::Timeout,
        Err(Attempt::Fatal(_)) => Outcome::Reset,
    })
}

enum Attempt {
    /// Nothing was sent: the request comes back for the next upstream.
    Retry(Box<Request<UpBody>>, ConnectError),
    /// An HTTP/2 upstream refused the stream before processing it; the request went
    /// with it (it is sent again from what [`Resend`] kept). `true` when the upstream
    /// was draining that connection (`GOAWAY`): another connection to it will do.
    Refused(String, bool),
    /// The upstream failed after the request was (perhaps) sent.
    Fatal(ProxyError),
    /// The client failed while its request was being sent (its body broke, stalled
    /// or came too slowly).
    Client(ProxyError),
}

/// One upstream: pooled connections first (a stale one hands the request back),
/// then one new connection.
async fn attempt(
    pool: &PoolState,
    upstream: &Arc<UpstreamClient>,
    mut req: Request<UpBody>,
) -> Result<Exchange, Attempt> {
    while let Some(sender) = upstream.checkout() {
        match send(pool, upstream, sender, req).await? {
            Ok(resp) => return Ok(resp),
            Err(back) => req = back,
        }
    }
    // An HTTP/2 connection can close (a GOAWAY) between lending a stream and taking
    // the request: the request comes back unsent and takes a stream on another.
    let tries = match pool.may_refuse_streams() {
        true => 1 + H2_RETAKES,
        false => 1,
    };
    for _ in 0..tries {
        let sender = match upstream.connect().await {
            Ok(s) => s,
            Err(e) => return Err(Attempt::Retry(Box::new(req), e)),
        };
        match send(pool, upstream, sender, req).await? {
            Ok(resp) => return Ok(resp),
            Err(back) => req = back,
        }
    }
    Err(Attempt::Retry(
        Box::new(req),
        ConnectError::Other("connection closed before the request was sent".into()),
    ))
}

/// Further HTTP/2 streams a request takes on its upstream after a stream was refused
/// by a connection the upstream is draining (`GOAWAY`): a new connection takes it, so
/// more than two refusals in a row mean the upstream drains every connection at once
/// (shutting down), and the next upstream is the better try.
const H2_GOAWAY_RETAKES: usize = 2;

/// Further HTTP/2 streams a request takes on the same upstream when the connection it
/// was lent closed before taking it: one, since a closing connection leaves the set at
/// once and the next stream comes from another (or a new) connection.
const H2_RETAKES: usize = 1;

/// Sends on one connection. While the request body is going up, each step of it gets
/// the idle timeout (an upstream that stops reading cannot hold the request; a pause
/// while the body waits on the client is the client's, and the body's own timers end
/// it); once the whole request is written, the response head must arrive within the
/// response-header timeout. A send that fails because the client's body failed is
/// the client's fault. `Ok(Err(req))` hands back a request that was never written.
async fn send(
    pool: &PoolState,
    upstream: &Arc<UpstreamClient>,
    sender: Sender,
    mut req: Request<UpBody>,
) -> Result<Result<Exchange, Request<UpBody>>, Attempt> {
    // A request without a body (most GETs) is written at once: nothing to watch.
    let mut body_sent = match req.body().is_end_stream() {
        true => None,
        false => req.body_mut().track_sent(),
    };
    let client = req.body().client_side();
    let response = upstream.send(sender, req);
    tokio::pin!(response);
    let mut early = None;
    if let Some(body_sent) = body_sent.as_mut() {
        while early.is_none() && !*body_sent.borrow_and_update() {
            tokio::select! {
                r = &mut response => early = Some(r),
                step = tokio::time::timeout(pool.timeouts.idle, body_sent.changed()) => match step {
                    Ok(Ok(())) => {}
                    // The body was dropped: hyper is done with it, one way or another.
                    Ok(Err(_)) => break,
                    Err(_) if client.as_ref().is_some_and(|c| c.waiting_on_client()) => {}
                    Err(_) => {
                        return Err(Attempt::Fatal(ProxyError::ResponseTimedOut {
                            upstream: upstream.id.to_string(),
                        }))
                    }
                },
            }
        }
    }
    let sent = match early {
        Some(r) => Ok(r),
        None => tokio::time::timeout(pool.timeouts.response_header, response).await,
    };
    match sent {
        Ok(Ok(resp)) => Ok(Ok(resp)),
        Ok(Err(SendError::NotSent(req, _))) => Ok(Err(*req)),
        Ok(Err(SendError::Refused { error, draining })) => {
            Err(Attempt::Refused(describe(&error), draining))
        }
        Ok(Err(SendError::Failed(e))) => match client_fault(&client) {
            Some(fault) => Err(Attempt::Client(ProxyError::ClientBody(fault))),
            None => Err(Attempt::Fatal(ProxyError::UpstreamFailed {
                upstream: upstream.id.to_string(),
                reason: describe(&e),
            })),
        },
        Err(_) => Err(Attempt::Fatal(ProxyError::ResponseTimedOut {
            upstream: upstream.id.to_string(),
        })),
    }
}

fn client_fault(client: &Option<Arc<body::ClientSide>>) -> Option<error::BodyFault> {
    client.as_ref()?.fault().cloned()
}

fn describe(e: &hyper::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Joins the client and upstream connections once both have switched protocols.
fn tunnel(client: OnUpgrade, upstream: OnUpgrade, id: Arc<str>) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(upstream = %id, error = %e, "protocol switch failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(upstream = %id, error = %e, "tunnel closed");
        }
    });
}

/// A gRPC call, known by its request's `content-type` before the request is
/// consumed: its answers are gRPC-shaped, and its `grpc-timeout` bounds the wait for
/// a response head. `None` for any other request.
struct GrpcCall(Option<Result<Option<Duration>, HeadFault>>);

impl GrpcCall {
    fn of(req: &Request<Incoming>) -> GrpcCall {
        let headers = req.headers();
        GrpcCall(grpc::is_grpc(headers).then(|| {
            grpc::grpc_timeout(headers)
                .transpose()
                .map_err(HeadFault::GrpcTimeout)
        }))
    }

    fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Runs `forwarded` within the call's deadline; a malformed `grpc-timeout`
    /// refuses the call before anything is routed.
    async fn deadline<F>(&self, forwarded: F) -> Result<Response<ProxyBody>, ProxyError>
    where
        F: std::future::Future<Output = Result<Response<ProxyBody>, ProxyError>>,
    {
        match &self.0 {
            Some(Err(bad)) => Err(ProxyError::BadHead(bad.clone())),
            Some(Ok(Some(timeout))) => tokio::time::timeout(*timeout, forwarded)
                .await
                .unwrap_or(Err(ProxyError::DeadlineExceeded { timeout: *timeout })),
            _ => forwarded.await,
        }
    }
}

/// ringway's own answer: a line of text, or for a gRPC call a trailers-only answer
/// with the same text as its `grpc-message`.
fn error_response(e: &ProxyError, grpc_call: bool) -> Response<ProxyBody> {
    if grpc_call {
        return grpc::trailers_only(e.grpc_status(), &e.to_string(), ProxyBody::empty());
    }
    let mut resp = Response::new(ProxyBody::text(format!("ringway: {e}\n")));
    *resp.status_mut() = e.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
