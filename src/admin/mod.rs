//! The admin API on `admin.address`: read-only JSON views of this instance's cluster
//! member, pools and routing.
//!
//! - `GET /healthz`: `ok` while the process serves.
//! - `GET /api/cluster`: this node's id, role, term, leader, commit and applied index,
//!   members and (on the leader) their replication progress.
//! - `GET /api/pools`: pools, upstreams and a digest of each pool's ring; instances that
//!   applied the same state show the same digests. Also where the file and the cluster
//!   differ (drift).
//! - `GET /api/route?pool=NAME&key=KEY`: the upstream that key goes to on this instance.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::driver::ClusterHandle;
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
}

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
                    async move { Ok::<_, Infallible>(admin.answer(&req)) }
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

    fn answer(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the admin API is read-only here: use GET\n",
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/api/cluster" => json_response(StatusCode::OK, self.cluster_json()),
            "/api/pools" => json_response(StatusCode::OK, self.pools_json()),
            "/api/route" => self.route(req.uri().query().unwrap_or("")),
            other => text(
                StatusCode::NOT_FOUND,
                &format!("no admin endpoint {other}\n"),
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
