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
//! - `POST /api/batch` (JSON body: `{"changes": [...]}`, pool and upstream changes in
//!   the replicated command format): applied together or not at all. Same token and
//!   forwarding; this is also how a follower hands a reloaded file's changes to the
//!   leader.
//! - `GET /api/config`: the config file, its reloads, the last error and what needs
//!   a restart.
//! - `PUT /api/cluster/nodes/NAME` (JSON body: `address`, the new member's peer
//!   address) and `DELETE /api/cluster/nodes/NAME`: add or remove a cluster member,
//!   one voter at a time (a new member joins as a learner, catches up, then is
//!   promoted). Same token and forwarding as upstream changes.
//! - `POST /api/breakers` (JSON body: one breaker command): how a follower's health
//!   task hands its detector's report to the leader. Same token, same forwarding.

pub mod client;

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
use crate::cluster::raft_id;
use crate::cluster::state::{Command, Refused, UpstreamSpec};
use crate::config::reload::{Forward, Reloader};
use crate::config::{valid_node_id, Config};
use crate::proxy::Proxy;
use crate::raft::{ConfChange, ConfChangeKind, NodeId, Role};
use crate::ring;

/// What the admin API reads.
pub struct Admin {
    /// The config in force (it changes on reload).
    pub config: watch::Receiver<Arc<Config>>,
    pub reloader: Option<Arc<Reloader>>,
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
/// How long a new member may take to catch up (from a snapshot) before it is
/// promoted to voter; past it the caller is told it stays a learner.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between attempts at a membership change that cannot be made yet.
const MEMBERSHIP_RETRY: Duration = Duration::from_millis(50);
/// Header marking a request a follower forwarded: it is never forwarded again.
const FORWARDED: &str = "x-ringway-forwarded";

type Body = Full<Bytes>;

impl Admin {
    /// Serves on `listener` until `shutdown` turns true.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        self.serve_with_tls(listener, None, shutdown).await
    }

    /// Like [`Admin::serve`], over TLS when `tls` is given.
    pub async fn serve_with_tls(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<crate::tls::ServerTls>,
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
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.answer(req).await) }
                });
                let _ = match tls {
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Err(_) => Ok(()),
                    },
                };
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
            (&Method::GET, ["api", "config"]) => match &self.reloader {
                Some(r) => json_response(StatusCode::OK, json!(r.status())),
                None => text(
                    StatusCode::NOT_FOUND,
                    "this instance does not reload its file\n",
                ),
            },
            (&Method::POST, ["api", "batch"]) => self.change(req, Target::Batch).await,
            (&Method::GET, ["api", "route"]) => self.route(req.uri().query().unwrap_or("")),
            (&Method::POST, ["api", "breakers"]) => self.breaker_command(req).await,
            (&Method::PUT | &Method::DELETE, ["api", "pools", pool, "upstreams", id]) => {
                let target = Target::Upstream {
                    pool: decode(pool),
                    id: decode(id),
                };
                self.change(req, target).await
            }
            (&Method::PUT | &Method::DELETE, ["api", "cluster", "nodes", name]) => {
                self.change(req, Target::Node(decode(name))).await
            }
            _ => text(
                StatusCode::NOT_FOUND,
                &format!("no admin endpoint {} {path}\n", req.method()),
            ),
        }
    }

    /// A change: authorised, parsed, proposed (or forwarded), answered once applied.
    async fn change(&self, req: Request<Incoming>, target: Target) -> Response<Body> {
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
        // How long the leader may take: a new member may first have to catch up.
        let wait = match target {
            Target::Node(_) => JOIN_TIMEOUT + PROPOSE_TIMEOUT,
            Target::Upstream { .. } | Target::Batch => PROPOSE_TIMEOUT,
        };
        let outcome = match target {
            Target::Upstream { pool, id } => match command(&method, pool, id, &body) {
                Ok(cmd) => self.propose(cmd).await,
                Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
            },
            Target::Batch => match batch_command(&body) {
                Ok(cmd) => self.propose(cmd).await,
                Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
            },
            Target::Node(name) => match node_change(&method, &name, &body) {
                Ok(NodeChange::Add(address)) => self.add_node(&name, &address).await,
                Ok(NodeChange::Remove) => self.remove_node(&name).await,
                Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
            },
        };
        match outcome {
            Outcome::TimedOut => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the change did not commit in time; check /api/pools or /api/cluster before retrying\n",
            ),
            Outcome::Done(answer) => json_response(StatusCode::OK, answer),
            Outcome::Failed(ProposeFailure::NotLeader { leader: Some(l) }) if !forwarded => {
                self.forward(l, &method, &path, auth, body, wait).await
            }
            Outcome::Failed(e) => failure(&e),
            Outcome::Stuck(status, why) => text(status, &format!("{why}\n")),
        }
    }

    /// Proposes `cmd`, waiting at most [`PROPOSE_TIMEOUT`] for it to apply.
    async fn propose(&self, cmd: Command) -> Outcome {
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.cluster.propose(cmd)).await {
            Err(_) => Outcome::TimedOut,
            Ok(Ok(index)) => Outcome::Done(json!({"applied": index})),
            Ok(Err(e)) => Outcome::Failed(e),
        }
    }

    /// Adds `name` at `address`: its address into the replicated state, then the node
    /// as a learner, then, once it has caught up, its promotion to voter. Each step
    /// is idempotent, so a caller that timed out can run the same request again.
    async fn add_node(&self, name: &str, address: &str) -> Outcome {
        let set_peer = Command::SetPeer {
            node: name.to_owned(),
            address: address.to_owned(),
        };
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.cluster.propose(set_peer)).await {
            Err(_) => return Outcome::TimedOut,
            Ok(Err(e)) => return Outcome::Failed(e),
            Ok(Ok(_)) => {}
        }
        let id = raft_id(name);
        let view = self.cluster.view();
        if view.voters.contains(&id) {
            return Outcome::Done(json!({"node": name, "role": "voter", "applied": view.applied}));
        }
        if !view.learners.contains(&id) {
            let add = ConfChange {
                kind: ConfChangeKind::AddLearner,
                node: id,
            };
            if let Err(outcome) = self.membership(add, PROPOSE_TIMEOUT).await {
                return outcome;
            }
        }
        let promote = ConfChange {
            kind: ConfChangeKind::PromoteLearner,
            node: id,
        };
        match self.membership(promote, JOIN_TIMEOUT).await {
            Ok(index) => Outcome::Done(json!({"node": name, "role": "voter", "applied": index})),
            Err(Outcome::TimedOut) => Outcome::Stuck(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "{name} was added as a learner but has not caught up within {} s; check that it runs with cluster.join: true and that {address} is reachable, then repeat this request",
                    JOIN_TIMEOUT.as_secs()
                ),
            ),
            Err(other) => other,
        }
    }

    /// Removes `name` from the Raft configuration, then forgets its address.
    async fn remove_node(&self, name: &str) -> Outcome {
        let remove = ConfChange {
            kind: ConfChangeKind::RemoveNode,
            node: raft_id(name),
        };
        let index = match self.membership(remove, PROPOSE_TIMEOUT).await {
            Ok(index) => index,
            Err(outcome) => return outcome,
        };
        // Best effort: a leader that removed itself is no longer leader here; its address
        // is no longer used either way, since only members are dialled.
        let forget = Command::RemovePeer {
            node: name.to_owned(),
        };
        let _ = tokio::time::timeout(PROPOSE_TIMEOUT, self.cluster.propose(forget)).await;
        Outcome::Done(json!({"node": name, "removed": true, "applied": index}))
    }

    /// Proposes a membership change, retrying while it cannot be made yet, until
    /// `within` has passed.
    async fn membership(&self, cc: ConfChange, within: Duration) -> Result<u64, Outcome> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.cluster.change_membership(cc)).await {
                Err(_) => return Err(Outcome::TimedOut),
                Ok(Ok(index)) => return Ok(index),
                Ok(Err(ProposeFailure::NotYet(_))) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(MEMBERSHIP_RETRY.min(left)).await;
                }
                Ok(Err(ProposeFailure::NotYet(_))) => return Err(Outcome::TimedOut),
                Ok(Err(e)) => return Err(Outcome::Failed(e)),
            }
        }
    }

    /// A breaker command from another instance's health task: proposed here, or
    /// forwarded once to the leader.
    async fn breaker_command(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(refusal) = self.refusal(&req) {
            return refusal;
        }
        let forwarded = req.headers().contains_key(FORWARDED);
        let auth = req.headers().get(header::AUTHORIZATION).cloned();
        let Some(body) = read_body(req).await else {
            let too_big = format!("admin bodies are at most {MAX_ADMIN_BODY} bytes\n");
            return text(StatusCode::PAYLOAD_TOO_LARGE, &too_big);
        };
        let cmd = match serde_json::from_slice::<Command>(&body) {
            Ok(
                cmd @ (Command::BreakerReport { .. }
                | Command::BreakerHalfOpen { .. }
                | Command::BreakerProbe { .. }),
            ) => cmd,
            Ok(_) => return text(StatusCode::BAD_REQUEST, "only breaker commands\n"),
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad command: {e}\n")),
        };
        let outcome = tokio::time::timeout(PROPOSE_TIMEOUT, self.cluster.propose(cmd)).await;
        match outcome {
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "did not commit in time\n"),
            Ok(Ok(index)) => json_response(StatusCode::OK, json!({"applied": index})),
            Ok(Err(ProposeFailure::NotLeader { leader: Some(l) })) if !forwarded => {
                self.forward(
                    l,
                    &Method::POST,
                    "/api/breakers",
                    auth,
                    body,
                    PROPOSE_TIMEOUT,
                )
                .await
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
        wait: Duration,
    ) -> Response<Body> {
        let name = self.name_of(leader).unwrap_or_else(|| leader.to_string());
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
        match tokio::time::timeout(wait, forward_to(addr, method, path, auth, body)).await {
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

    /// A member's name: from the file, else from the replicated peer addresses.
    fn name_of(&self, id: NodeId) -> Option<String> {
        if let Some(n) = self.names.get(&id) {
            return Some(n.clone());
        }
        let view = self.cluster.view();
        let found = view
            .state
            .peers()
            .keys()
            .find(|n| raft_id(n) == id)
            .cloned();
        found
    }

    fn name(&self, id: NodeId) -> Value {
        self.name_of(id)
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
            "snapshot_index": v.snapshot,
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
                let breakers = view.state.breakers(&p.name);
                let now = crate::health::detector::now_ms();
                let upstreams: Vec<Value> = p
                    .upstreams
                    .iter()
                    .zip(&p.health.slots)
                    .map(|(u, slot)| {
                        let breaker = breakers.and_then(|b| b.upstreams.get(&*u.id));
                        json!({
                            "id": &*u.id,
                            "address": u.addr.to_string(),
                            "breaker": breaker_json(breaker),
                            "local": {"suspect": slot.is_suspect(now), "inflight": slot.inflight()},
                        })
                    })
                    .collect();
                json!({
                    "name": &*p.name,
                    "panic": breakers.is_some_and(|b| b.panic),
                    "upstreams": upstreams,
                    "ring_points": p.ring.len(),
                    "ring_digest": p.ring.digest(&ids),
                    "replicated": view.state.pool(&p.name),
                })
            })
            .collect();
        let config = self.config.borrow().clone();
        let drift: Vec<String> = view
            .state
            .drift(&config)
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

/// What a change request is about.
enum Target {
    Upstream { pool: String, id: String },
    Batch,
    Node(String),
}

/// The body of `POST /api/batch`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    changes: Vec<Command>,
}

/// The command an `/api/batch` body asks for, validated as a whole.
pub fn batch_command(body: &[u8]) -> Result<Command, String> {
    let b: BatchBody = serde_json::from_slice(body).map_err(|e| {
        format!("body must be JSON like {{\"changes\": [{{\"op\": \"delete_upstream\", \"pool\": \"web\", \"id\": \"a\"}}]}}: {e}")
    })?;
    let cmd = Command::Batch {
        commands: b.changes,
    };
    cmd.validate().map_err(|e| e.to_string())?;
    Ok(cmd)
}

/// How a follower's reloader hands a batch to the leader: through the leader's admin
/// API, with this instance's admin token.
pub fn batch_forwarder(
    cluster: ClusterHandle,
    names: BTreeMap<NodeId, String>,
    token: String,
) -> Forward {
    Arc::new(move |cmd: Command| {
        let (cluster, names, token) = (cluster.clone(), names.clone(), token.clone());
        Box::pin(async move {
            let view = cluster.view();
            let leader = view.leader.ok_or("no leader is known")?;
            let name = names
                .get(&leader)
                .cloned()
                .or_else(|| {
                    view.state
                        .peers()
                        .keys()
                        .find(|n| raft_id(n) == leader)
                        .cloned()
                })
                .ok_or("the leader's name is unknown")?;
            let addr: SocketAddr = view
                .state
                .admin_of(&name)
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| {
                    format!("the leader ({name}) has not announced its admin address")
                })?;
            let Command::Batch { commands } = cmd else {
                return Err("only batches are forwarded".to_owned());
            };
            let body =
                serde_json::to_vec(&json!({ "changes": commands })).map_err(|e| e.to_string())?;
            let headers = [
                client::bearer(&token)?,
                (FORWARDED, HeaderValue::from_static("1")),
            ];
            let call = client::call(addr, Method::POST, "/api/batch", &headers, body.into());
            let (parts, bytes) = tokio::time::timeout(PROPOSE_TIMEOUT, call)
                .await
                .map_err(|_| format!("the leader ({name} at {addr}) did not answer in time"))??;
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            match answer["applied"].as_u64() {
                Some(index) if parts.status.is_success() => Ok(index),
                _ => Err(format!(
                    "the leader ({name} at {addr}) answered {}: {}",
                    parts.status,
                    String::from_utf8_lossy(&bytes).trim()
                )),
            }
        })
    })
}

/// How a change ended, before it becomes a response.
enum Outcome {
    Done(Value),
    Failed(ProposeFailure),
    TimedOut,
    Stuck(StatusCode, String),
}

/// What a request on `/api/nodes/NAME` asks for.
pub enum NodeChange {
    Add(String),
    Remove,
}

/// The body of a node addition.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    address: String,
}

/// The membership change a request on `/api/nodes/NAME` asks for.
pub fn node_change(method: &Method, name: &str, body: &[u8]) -> Result<NodeChange, String> {
    if !valid_node_id(name) {
        return Err(format!(
            "node id must be 1 to {} letters, digits, '-', '_' or '.', got {name:?}",
            crate::config::MAX_NODE_ID_BYTES
        ));
    }
    if method == Method::DELETE {
        return Ok(NodeChange::Remove);
    }
    let b: NodeBody = serde_json::from_slice(body).map_err(|e| {
        format!("body must be JSON like {{\"address\": \"10.0.0.4:7000\"}} (the new member's peer address): {e}")
    })?;
    b.address
        .parse::<SocketAddr>()
        .map_err(|_| format!("address must be IP:port, got {:?}", b.address))?;
    Ok(NodeChange::Add(b.address))
}

/// An upstream's breaker as the cluster holds it: the same on every instance.
fn breaker_json(b: Option<&crate::health::breaker::Breaker>) -> Value {
    match b {
        None => json!({"state": "closed", "ejections": 0}),
        Some(b) => json!({
            "state": b.phase,
            "since_ms": b.since_ms,
            "until_ms": (b.phase == crate::health::breaker::Phase::Open).then_some(b.until_ms),
            "ejections": b.ejections,
            "reporters": b.reports.keys().collect::<Vec<_>>(),
            "evidence": b.evidence,
        }),
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

/// The command a PUT or DELETE on `/api/pools/POOL/upstreams/ID` asks for.
pub fn command(method: &Method, pool: String, id: String, body: &[u8]) -> Result<Command, String> {
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

/// Sends one breaker command (JSON) to the admin API at `addr` (the leader's), as
/// a forwarded request: `Ok` once it applied there.
pub async fn send_breaker_command(
    addr: SocketAddr,
    token: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let auth = HeaderValue::try_from(format!("Bearer {token}")).map_err(|e| e.to_string())?;
    let resp = forward_to(
        addr,
        &Method::POST,
        "/api/breakers",
        Some(auth),
        body.into(),
    )
    .await?;
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    Err(format!(
        "{status}: {}",
        String::from_utf8_lossy(&bytes).trim()
    ))
}

async fn forward_to(
    addr: SocketAddr,
    method: &Method,
    path: &str,
    auth: Option<HeaderValue>,
    body: Bytes,
) -> Result<Response<Body>, String> {
    let mut headers = vec![(FORWARDED, HeaderValue::from_static("1"))];
    if let Some(auth) = auth {
        headers.push((header::AUTHORIZATION.as_str(), auth));
    }
    let (parts, bytes) = client::call(addr, method.clone(), path, &headers, body).await?;
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
