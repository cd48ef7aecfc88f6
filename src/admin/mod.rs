//! The admin API on `admin.address`: JSON views of this instance's cluster member,
//! pools and routing, and upstream changes proposed through the cluster.
//!
//! - `GET /healthz`: `ok` while the process serves.
//! - `GET /api/cluster`: this node's id, role, term, leader, commit and applied index,
//!   members and (on the leader) their replication progress.
//! - `GET /api/pools`: pools, upstreams and a digest of each pool's ring; instances that
//!   applied the same state show the same digests. Also where the file and the cluster
//!   differ (drift).
//! - `GET /api/route?pool=NAME&key=KEY`: the upstream that key goes to on this instance.
//! - `GET /metrics`: every metric in the Prometheus text format (see [`crate::metrics`]).
//! - `PUT /api/pools/NAME/upstreams/ID` (JSON body: `address`, optional `weight` and
//!   `draining`) and `DELETE /api/pools/NAME/upstreams/ID`: proposed through Raft from
//!   any node (a follower forwards to the leader's admin API, which the leader
//!   announces in the replicated state), answered once committed and applied. They
//!   require `Authorization: Bearer TOKEN` with the token of `admin.token_file`; with
//!   no token configured they are refused.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::driver::{ClusterHandle, ProposeFailure};
use crate::cluster::state::{Command, Refused, UpstreamSpec};
use crate::config::Config;
use crate::proxy::Proxy;
use crate::raft::{NodeId, Role};
use crate::ring;

/// What the admin API reads.
pub struct Admin {
    pub config: Arc<Config>,
    pub proxy: Arc<Proxy>,
    pub cluster: ClusterHandle,
    /// Raft id to node name.
    pub names: BTreeMap<NodeId, String>,
    /// The bearer token mutations require; `None` refuses them all.
    pub token: Option<String>,
}

/// Largest admin request body: an upstream is a few dozen bytes of JSON.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;
/// How long a change may take to commit before the caller is told to retry.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Header marking a request a follower forwarded: it is never forwarded again.
const FORWARDED: &str = "x-ringway-forwarded";

type Body = Full<Bytes>;

impl Admin {
    /// Serves on `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|&s| s) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let admin = self.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.answer(req).await) }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Binds `addr`, naming it in the error.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
        TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {addr} (admin): {e}"))
        })
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
            (&Method::GET, ["metrics"]) => self.metrics(),
            (&Method::GET, ["api", "cluster"]) => {
                json_response(StatusCode::OK, self.cluster_json())
            }
            (&Method::GET, ["api", "pools"]) => json_response(StatusCode::OK, self.pools_json()),
            (&Method::GET, ["api", "route"]) => self.route(req.uri().query().unwrap_or("")),
            (&Method::PUT | &Method::DELETE, ["api", "pools", pool, "upstreams", id]) => {
                let (pool, id) = (decode(pool), decode(id));
                self.change(req, pool, id).await
            }
            _ => text(
                StatusCode::NOT_FOUND,
                &format!("no admin endpoint {} {path}\n", req.method()),
            ),
        }
    }

    /// A membership change: authorised, parsed, proposed (or forwarded), answered once
    /// applied.
    async fn change(&self, req: Request<Incoming>, pool: String, id: String) -> Response<Body> {
        if let Some(refusal) = self.refusal(&req) {
            return refusal;
        }
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let forwarded = req.headers().contains_key(FORWARDED);
        let auth = req.headers().get(header::AUTHORIZATION).cloned();
        let Some(body) = read_body(req).await else {
            let too_big = format!("admin bodies are at most {MAX_ADMIN_BODY} bytes\n");
            return text(StatusCode::PAYLOAD_TOO_LARGE, &too_big);
        };
        let cmd = match command(&method, pool, id, &body) {
            Ok(c) => c,
            Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
        };
        let outcome = tokio::time::timeout(PROPOSE_TIMEOUT, self.cluster.propose(cmd)).await;
        match outcome {
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the change did not commit in time; check /api/pools before retrying\n",
            ),
            Ok(Ok(index)) => json_response(StatusCode::OK, json!({"applied": index})),
            Ok(Err(ProposeFailure::NotLeader { leader: Some(l) })) if !forwarded => {
                self.forward(l, &method, &path, auth, body).await
            }
            Ok(Err(e)) => failure(&e),
        }
    }

    /// The answer to a change that lacks the bearer token, if it does.
    fn refusal(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let Some(token) = &self.token else {
            let off = "changes are disabled: set admin.token_file\n";
            return Some(text(StatusCode::FORBIDDEN, off));
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => None,
            _ => {
                let need = "a valid Authorization: Bearer token is required\n";
                Some(text(StatusCode::UNAUTHORIZED, need))
            }
        }
    }

    /// Sends the change to the leader's admin API and relays its answer.
    async fn forward(
        &self,
        leader: NodeId,
        method: &Method,
        path: &str,
        auth: Option<HeaderValue>,
        body: Bytes,
    ) -> Response<Body> {
        let name = self
            .names
            .get(&leader)
            .cloned()
            .unwrap_or_else(|| leader.to_string());
        let view = self.cluster.view();
        let Some(addr) = view
            .state
            .admin_of(&name)
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the leader ({name}) has not announced its admin address yet; retry\n"),
            );
        };
        match tokio::time::timeout(PROPOSE_TIMEOUT, forward_to(addr, method, path, auth, body))
            .await
        {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => text(
                StatusCode::BAD_GATEWAY,
                &format!("forwarding to the leader ({name} at {addr}) failed: {e}\n"),
            ),
            Err(_) => text(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("the leader ({name} at {addr}) did not answer in time\n"),
            ),
        }
    }

    fn name(&self, id: NodeId) -> Value {
        self.names
            .get(&id)
            .map_or_else(|| json!(id.to_string()), |n| json!(n))
    }

    fn cluster_json(&self) -> Value {
        let v = self.cluster.view();
        let member = |id: &NodeId, role: &str| json!({"id": self.name(*id), "role": role, "matched": v.matched.get(id)});
        let members: Vec<Value> = v
            .voters
            .iter()
            .map(|id| member(id, "voter"))
            .chain(v.learners.iter().map(|id| member(id, "learner")))
            .collect();
        json!({
            "id": self.name(v.id),
            "role": role_name(v.role),
            "term": v.term,
            "leader": v.leader.map(|l| self.name(l)),
            "commit": v.commit,
            "applied": v.applied,
            "members": members,
        })
    }

    fn pools_json(&self) -> Value {
        let snapshot = self.proxy.snapshot();
        let view = self.cluster.view();
        let pools: Vec<Value> = snapshot
            .pools
            .iter()
            .map(|p| {
                let ids: Vec<&str> = p.upstreams.iter().map(|u| &*u.id).collect();
                let upstreams: Vec<Value> = p
                    .upstreams
                    .iter()
                    .map(|u| json!({"id": &*u.id, "address": u.addr.to_string()}))
                    .collect();
                json!({
                    "name": &*p.name,
                    "upstreams": upstreams,
                    "ring_points": p.ring.len(),
                    "ring_digest": p.ring.digest(&ids),
                    "replicated": view.state.pool(&p.name),
                })
            })
            .collect();
        let drift: Vec<String> = view
            .state
            .drift(&self.config)
            .iter()
            .map(|d| d.to_string())
            .collect();
        json!({"applied": view.applied, "pools": pools, "drift": drift})
    }

    fn metrics(&self) -> Response<Body> {
        let metrics = self.proxy.metrics();
        let mut resp = Response::new(Full::new(Bytes::from(metrics.encode())));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics.content_type()),
        );
        resp
    }

    fn route(&self, query: &str) -> Response<Body> {
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        let (Some(pool), Some(key)) = (params.get("pool"), params.get("key")) else {
            return text(
                StatusCode::BAD_REQUEST,
                "usage: /api/route?pool=NAME&key=KEY\n",
            );
        };
        let snapshot = self.proxy.snapshot();
        let Some(p) = snapshot.pool(pool) else {
            return text(StatusCode::NOT_FOUND, &format!("no pool named {pool:?}\n"));
        };
        let upstream = p
            .ring
            .lookup(ring::point(key.as_bytes()))
            .map(|i| &*p.upstreams[i].id);
        json_response(
            StatusCode::OK,
            json!({"pool": pool, "key": key, "upstream": upstream}),
        )
    }
}

/// The body of an upstream change.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamBody {
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    draining: bool,
}

fn one() -> u32 {
    1
}

fn command(method: &Method, pool: String, id: String, body: &[u8]) -> Result<Command, String> {
    if method == Method::DELETE {
        return Ok(Command::DeleteUpstream { pool, id });
    }
    let b: UpstreamBody = serde_json::from_slice(body).map_err(|e| {
        format!("body must be JSON like {{\"address\": \"10.0.0.7:80\", \"weight\": 1}}: {e}")
    })?;
    Ok(Command::PutUpstream {
        pool,
        upstream: UpstreamSpec {
            id,
            address: b.address,
            weight: b.weight,
            draining: b.draining,
        },
    })
}

/// The whole body, or `None` past [`MAX_ADMIN_BODY`] (or when the client broke off).
async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    let limited = Limited::new(req.into_body(), MAX_ADMIN_BODY);
    limited.collect().await.ok().map(|c| c.to_bytes())
}

fn failure(e: &ProposeFailure) -> Response<Body> {
    let status = match e {
        ProposeFailure::Refused(Refused::UnknownPool(_) | Refused::UnknownUpstream { .. }) => {
            StatusCode::NOT_FOUND
        }
        ProposeFailure::Refused(_) | ProposeFailure::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let msg = match e {
        ProposeFailure::NotLeader { .. } => {
            "no leader is known; the cluster may be electing one, or this node is cut off\n"
                .to_owned()
        }
        other => format!("{other}\n"),
    };
    text(status, &msg)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn forward_to(
    addr: SocketAddr,
    method: &Method,
    path: &str,
    auth: Option<HeaderValue>,
    body: Bytes,
) -> Result<Response<Body>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(FORWARDED, "1");
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let bytes = Limited::new(body, MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
    }
}

/// Percent-decoding of a query component (`+` is a space); bad escapes stay as written.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_response(status: StatusCode, value: Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(decode("%2Fuser%2F42"), "/user/42");
        assert_eq!(decode("a+b"), "a b");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%4"), "%4");
    }
}
