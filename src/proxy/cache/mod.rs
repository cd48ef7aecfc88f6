//! The response cache of a pool (`pools[].cache`): GET and HEAD answered from memory
//! by the part of RFC 9111 in [`policy`], concurrent misses of one key coalesced into
//! one upstream request, stale copies revalidated or served while the upstream fails,
//! and purges applied in the cluster's log order (see `control::follow`).
//!
//! A response being stored is streamed to its client as it arrives and copied once
//! into the entry ([`Fill`]); past `max_object_bytes` the copy is dropped and the
//! response goes on uncached. An object is served from one shared buffer: a hit
//! copies no body.

pub mod metrics;
pub mod policy;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use super::body::ProxyBody;
use policy::{Lifetime, RequestRules};
pub use store::PoolCache;
use store::{FillGuard, Freshness, Lead, Object};

/// `Warning` on a stale response served while it is revalidated in the background
/// (stale-while-revalidate).
const WARNING_STALE: HeaderValue = HeaderValue::from_static("110 ringway \"Response is Stale\"");
/// `Warning` on a stale response served because the upstream failed (stale-if-error).
const WARNING_REVALIDATION_FAILED: HeaderValue =
    HeaderValue::from_static("111 ringway \"Revalidation Failed\"");

/// What the cache makes of a request before it goes upstream.
// A hit is the common case and is returned at once: boxing its response would cost
// an allocation per hit to save a move of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum Consult {
    /// Answered from the cache; `revalidate` is a background refresh to start.
    Serve(Response<ProxyBody>, Option<Box<Revalidate>>),
    /// Goes upstream; the plan handles the answer.
    Forward(Box<Plan>),
    /// The cache stays out of it (method, `Range`, `no-store`).
    Bypass,
}

/// A refresh of a stale entry served under stale-while-revalidate: the request to
/// send (with its validators) and the plan that stores the answer.
pub struct Revalidate {
    pub parts: Parts,
    pub plan: Plan,
}

/// A request that went upstream with the cache's involvement.
pub struct Plan {
    cache: Arc<PoolCache>,
    primary: Arc<str>,
    rules: RequestRules,
    /// The request's fields, kept to file the answer under its `Vary` variant.
    request_headers: HeaderMap,
    /// Only a GET's answer is stored (a HEAD's has no body).
    store: bool,
    /// The client asked with HEAD: what it is sent has no body.
    head: bool,
    /// The stale copy, for a 304 to refresh or an error to fall back on.
    stale: Option<Arc<Object>>,
    /// Validators were added to the request from `stale`.
    revalidating: bool,
    /// Held while this request fills the key; others wait on it.
    leader: Option<FillGuard>,
    epoch: u64,
}

/// The key of a request: `GET host/path?query`. HEAD shares GET's key (it is
/// answered from a GET's entry).
pub fn key(uri: &http::Uri, host: Option<&str>) -> Arc<str> {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = host.unwrap_or("");
    let mut key = String::with_capacity(4 + host.len() + pq.len());
    key.push_str("GET ");
    key.push_str(&host.to_ascii_lowercase());
    key.push_str(pq);
    key.into()
}

/// The key of a request under a `cache.key` template: `GET ` and the template's
/// parts, or `None` (the request bypasses the cache) when one is missing or the
/// result is not UTF-8.
pub fn key_of<B>(
    template: &crate::balance::HashKey,
    req: &http::Request<B>,
    client_ip: std::net::IpAddr,
) -> Option<Arc<str>> {
    let input = crate::balance::KeyInput {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
        client_ip,
    };
    let bytes = template.extract(&input)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut key = String::with_capacity(4 + text.len());
    key.push_str("GET ");
    key.push_str(text);
    Some(key.into())
}

/// Consults `cache` for the request `parts` (already prepared for the upstream),
/// whose key is `primary`.
/// May wait, at most `coalesce_timeout`, for another request filling the same key.
pub async fn consult(cache: &Arc<PoolCache>, parts: &mut Parts, primary: Arc<str>) -> Consult {
    let Ok(rules) = policy::request_rules(&parts.method, &parts.headers) else {
        return Consult::Bypass;
    };
    let head = parts.method == Method::HEAD;
    let found = lookup(cache, &primary, &parts.headers, rules);
    let now = SystemTime::now();
    if let (Some(object), false) = (&found, rules.revalidate) {
        match object.freshness(now) {
            Freshness::Fresh => return hit(cache, object, &parts.headers, head, now, None),
            Freshness::Stale(by) if by <= object.lifetime.stale_while_revalidate => {
                let refresh = match cache.lead(&primary) {
                    Lead::Leader(guard) => {
                        let mut plan = plan(cache, primary, rules, parts, true);
                        plan.leader = Some(guard);
                        plan.stale = Some(object.clone());
                        let mut refresh = clone_parts(parts);
                        refresh.method = Method::GET;
                        plan.revalidating = add_validators(&mut refresh.headers, object);
                        Some(Box::new(Revalidate {
                            parts: refresh,
                            plan,
                        }))
                    }
                    _ => None,
                };
                return hit(
                    cache,
                    object,
                    &parts.headers,
                    head,
                    now,
                    Some(WARNING_STALE),
                )
                .with(refresh);
            }
            Freshness::Stale(_) => {}
        }
    }
    let mut plan = plan(cache, primary, rules, parts, !head);
    if found.is_none() && !rules.revalidate {
        let lead = match head {
            true => cache.join(&plan.primary),
            false => cache.lead(&plan.primary),
        };
        match lead {
            Lead::Leader(guard) => plan.leader = Some(guard),
            Lead::Alone => {}
            Lead::Wait(mut rx) => {
                cache.counters.coalesced.fetch_add(1, Relaxed);
                // Err: the fill ended (its guard dropped); Elapsed: waited long enough.
                let _ = tokio::time::timeout(cache.settings.coalesce_timeout, rx.changed()).await;
                if let Some(object) = lookup(cache, &plan.primary, &parts.headers, rules) {
                    if object.freshness(SystemTime::now()) == Freshness::Fresh {
                        return hit(
                            cache,
                            &object,
                            &parts.headers,
                            head,
                            SystemTime::now(),
                            None,
                        );
                    }
                }
                plan.epoch = cache.epoch();
            }
        }
    }
    cache.counters.misses.fetch_add(1, Relaxed);
    if let Some(object) = found {
        if !rules.revalidate {
            plan.revalidating = add_validators(&mut parts.headers, &object);
        }
        plan.stale = Some(object);
    }
    Consult::Forward(Box::new(plan))
}

use std::sync::atomic::Ordering::Relaxed;

impl Consult {
    fn with(self, refresh: Option<Box<Revalidate>>) -> Consult {
        match self {
            Consult::Serve(resp, _) => Consult::Serve(resp, refresh),
            other => other,
        }
    }
}

fn lookup(
    cache: &PoolCache,
    primary: &str,
    headers: &HeaderMap,
    rules: RequestRules,
) -> Option<Arc<Object>> {
    let object = cache.find(primary, headers)?;
    // A request with credentials gets only what was marked as shareable.
    (!rules.credentialed || object.lifetime.shared).then_some(object)
}

fn plan(
    cache: &Arc<PoolCache>,
    primary: Arc<str>,
    rules: RequestRules,
    parts: &Parts,
    store: bool,
) -> Plan {
    Plan {
        cache: cache.clone(),
        primary,
        rules,
        request_headers: parts.headers.clone(),
        store,
        head: parts.method == Method::HEAD,
        stale: None,
        revalidating: false,
        leader: None,
        epoch: cache.epoch(),
    }
}

fn clone_parts(parts: &Parts) -> Parts {
    let mut req = http::Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

/// Adds the stale copy's validators to a request that has none of its own; true
/// when any was added.
fn add_validators(headers: &mut HeaderMap, object: &Object) -> bool {
    let own = headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE);
    if own {
        return false;
    }
    let mut added = false;
    if let Some(etag) = object.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        added = true;
    }
    if let Some(lm) = object.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        added = true;
    }
    added
}

/// A hit: the stored object, or `304 Not Modified` when the request's own
/// validators (`request`) match it.
fn hit(
    cache: &PoolCache,
    object: &Object,
    request: &HeaderMap,
    head: bool,
    now: SystemTime,
    warning: Option<HeaderValue>,
) -> Consult {
    let counter = match warning {
        Some(_) => &cache.counters.stale,
        None => &cache.counters.hits,
    };
    counter.fetch_add(1, Relaxed);
    let resp = match policy::not_modified(request, object.status, &object.headers) {
        true => not_modified_response(object, now, warning),
        false => respond(object, head, now, warning),
    };
    Consult::Serve(resp, None)
}

/// Fields a `304` carries from the stored response (RFC 9110 §15.4.5: those a 200
/// would have sent that a cache updates from it, and the validators).
const NOT_MODIFIED_FIELDS: [HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::VARY,
];

/// `304 Not Modified` for a client whose copy matches the stored object: the
/// fields of [`NOT_MODIFIED_FIELDS`] it has, `Age` (and `warning`), no body.
fn not_modified_response(
    object: &Object,
    now: SystemTime,
    warning: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = resp.headers_mut();
    for name in NOT_MODIFIED_FIELDS {
        for v in object.headers.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    headers.insert(header::AGE, HeaderValue::from(object.age(now).as_secs()));
    if let Some(w) = warning {
        headers.append(header::WARNING, w);
    }
    resp
}

/// The stored object as a response: its head with `Age` (and `warning`), its body
/// shared (none for HEAD).
fn respond(
    object: &Object,
    head: bool,
    now: SystemTime,
    warning: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let body = match head {
        true => ProxyBody::empty(),
        false => ProxyBody::text(object.body.clone()),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = object.status;
    let headers = resp.headers_mut();
    headers.clone_from(&object.headers);
    headers.insert(header::AGE, HeaderValue::from(object.age(now).as_secs()));
    if let Some(w) = warning {
        headers.append(header::WARNING, w);
    }
    resp
}

/// What to do with the upstream's answer.
pub enum Answered {
    /// Send this instead (a refreshed or stale copy); the upstream's answer is dropped.
    Replace(Box<Response<ProxyBody>>),
    /// Send the upstream's answer, storing it through this fill as it streams.
    Store(Box<Fill>),
    /// Send the upstream's answer as it is.
    Pass,
}

impl Plan {
    /// The upstream could not be reached or failed: a stale copy within its
    /// `stale-if-error` allowance is served instead.
    pub fn failed(&self) -> Option<Response<ProxyBody>> {
        let object = self.stale.as_ref()?;
        let now = SystemTime::now();
        let Freshness::Stale(by) = object.freshness(now) else {
            return Some(respond(object, self.head, now, None));
        };
        (by <= object.lifetime.stale_if_error).then(|| {
            self.cache.counters.stale.fetch_add(1, Relaxed);
            respond(object, self.head, now, Some(WARNING_REVALIDATION_FAILED))
        })
    }

    /// The upstream answered `status` with `headers` (as they go to the client).
    pub fn answered(mut self, status: StatusCode, headers: &HeaderMap) -> Answered {
        let now = SystemTime::now();
        if status == StatusCode::NOT_MODIFIED && self.revalidating {
            if let Some(resp) = self.refresh(headers, now) {
                return Answered::Replace(Box::new(resp));
            }
            return Answered::Pass;
        }
        if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
            if let Some(resp) = self.failed() {
                return Answered::Replace(Box::new(resp));
            }
        }
        if !self.store {
            return Answered::Pass;
        }
        let max = self.cache.settings.max_object_bytes;
        let Ok(lifetime) = policy::storable(self.rules, status, headers, max, now) else {
            return Answered::Pass;
        };
        let vary = policy::vary_names(headers).unwrap_or_default();
        let capacity = policy::content_length(headers).unwrap_or(0).min(max) as usize;
        Answered::Store(Box::new(Fill {
            head: Some((status, headers.clone(), lifetime, now)),
            vary,
            buf: BytesMut::with_capacity(capacity),
            plan: self,
        }))
    }

    /// A 304 refreshes the stale copy: its fields are updated from the 304's
    /// (§4.3.4), its age starts again, and the client gets the whole response.
    fn refresh(&mut self, update: &HeaderMap, now: SystemTime) -> Option<Response<ProxyBody>> {
        let old = self.stale.take()?;
        let mut headers = old.headers.clone();
        for name in update.keys() {
            if *name == header::CONTENT_LENGTH {
                continue;
            }
            headers.remove(name);
            for v in update.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let max = self.cache.settings.max_object_bytes;
        let lifetime = policy::storable(self.rules, old.status, &headers, max, now).ok();
        let object = Object {
            status: old.status,
            headers,
            body: old.body.clone(),
            stored_at: now,
            lifetime: lifetime.unwrap_or(old.lifetime),
        };
        let resp = respond(&object, self.head, now, None);
        if lifetime.is_some() {
            let vary = policy::vary_names(&object.headers).unwrap_or_default();
            self.cache.store(
                &self.primary,
                &self.request_headers,
                &vary,
                object,
                self.epoch,
            );
        }
        Some(resp)
    }
}

/// A response being stored as it streams to its client: the body is copied once
/// into one buffer, and stored when it ends whole. Dropped unfinished (too large,
/// broken, trailers, the client gone), it stores nothing and frees its buffer.
pub struct Fill {
    head: Option<(StatusCode, HeaderMap, Lifetime, SystemTime)>,
    vary: Vec<HeaderName>,
    buf: BytesMut,
    plan: Plan,
}

impl Fill {
    /// Takes a data frame; false once the object is past `max_object_bytes` (the
    /// caller drops the fill).
    pub fn data(&mut self, chunk: &Bytes) -> bool {
        let max = self.plan.cache.settings.max_object_bytes;
        if (self.buf.len() + chunk.len()) as u64 > max {
            return false;
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    /// The body ended whole: the object is stored (then waiters wake).
    pub fn finish(mut self) {
        let Some((status, headers, lifetime, stored_at)) = self.head.take() else {
            return;
        };
        let object = Object {
            status,
            headers,
            body: std::mem::take(&mut self.buf).freeze(),
            stored_at,
            lifetime,
        };
        let plan = &self.plan;
        plan.cache.store(
            &plan.primary,
            &plan.request_headers,
            &self.vary,
            object,
            plan.epoch,
        );
    }
}

impl std::fmt::Debug for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fill")
            .field("key", &self.plan.primary)
            .field("bytes", &self.buf.len())
            .finish()
    }
}

/// How long a background revalidation may take, response body included, before it
/// is given up (the entry stays stale; the next request tries again).
pub const REVALIDATE_TIMEOUT: Duration = Duration::from_secs(30);
