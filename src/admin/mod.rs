//! The admin API on `admin.address`: JSON views of this instance's cluster member,
//! pools and routing, and upstream changes proposed through the cluster. It serves
//! operators only: instances never call each other's admin API (a follower hands a
//! change to the leader over the cluster transport, see [`crate::cluster::forward`]),
//! so each instance may have its own token and `admin.tls`.
//!
//! - `GET /` (or `/status`): the status page, with `/status.js` and `/status.css`
//!   (see [`status`]); it reads the views below.
//! - `GET /healthz`: `ok` while the process serves.
//! - `GET /api/cluster`: this node's id, role, term, leader, commit and applied index,
//!   members and (on the leader) their replication progress and lag.
//! - `GET /api/pools`: pools, upstreams and a digest of each pool's ring; instances that
//!   applied the same state show the same digests. Also where the file and the cluster
//!   differ (drift), and this instance's wall clock (`now_ms`) to read breakers against.
//!   An upstream in slow start shows its step (`slow_start: {step, steps}`) on the
//!   ring the digest is of, and `ejected` as that same routing snapshot skips it.
//! - `GET /api/pools/NAME/ring`: the pool's ring as arcs of the hash space and each
//!   upstream's share of it (see [`status::ring_json`]).
//! - `GET /api/route?pool=NAME&key=KEY`: the upstream that key goes to on this instance
//!   and the key's point on the ring.
//! - `GET /metrics`: every metric in the Prometheus text format (see [`crate::metrics`]).
//! - `PUT /api/pools/NAME/upstreams/ID` (JSON body: `address`, optional `weight` and
//!   `draining`) and `DELETE /api/pools/NAME/upstreams/ID`: proposed through Raft from
//!   any node (a follower forwards the change to the leader over the cluster
//!   transport), answered once committed and applied. They require
//!   `Authorization: Bearer TOKEN` with the token of this instance's
//!   `admin.token_file`; with no token configured they are refused.
//! - `POST /api/batch` (JSON body: `{"changes": [...]}`, pool and upstream changes in
//!   the replicated command format): applied together or not at all. Same token and
//!   forwarding.
//! - `GET /api/config`: the config file, its reloads, the last error and what needs
//!   a restart.
//! - `PUT /api/cluster/nodes/NAME` (JSON body: `address`, the member's peer address,
//!   and `role`, `voter` by default or `learner`) and `DELETE /api/cluster/nodes/NAME`:
//!   add, promote, demote or remove a cluster member, one change at a time (a new
//!   voter joins as a learner, catches up, then is promoted; one that cannot catch up
//!   within `JOIN_TIMEOUT` is removed again; see [`members`]). Same token and
//!   forwarding as upstream changes.
//! - `DELETE /api/cache?pool=NAME&key=KEY` (or `&prefix=PREFIX`): a cache purge agreed
//!   by the cluster (see [`cache`]). Same token and forwarding.

mod cache;
pub mod client;
mod members;
pub mod parse;
pub mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::driver::{ProposeFailure, StorageHealth};
use crate::cluster::raft_id;
use crate::cluster::state::{Command, Refused};
use crate::config::{Config, HeaderWork};
use crate::control::{Instance, Proposer, Reloader};
use crate::proxy::listener::{self, Discipline};
use crate::proxy::Proxy;
use crate::raft::{ConfChange, ConfChangeKind, NodeId, Role};
use crate::ring;
use parse::{batch_command, command, decode, decode_segment, node_change, NodeChange};

/// What the admin API reads.
pub struct Admin {
    /// The config in force (it changes on reload).
    pub config: watch::Receiver<Arc<Config>>,
    pub reloader: Option<Arc<Reloader>>,
    pub proxy: Arc<Proxy>,
    /// Changes go to the cluster through it (the leader proposes, a follower forwards).
    pub proposer: Proposer,
    /// Raft id to node name.
    pub names: BTreeMap<NodeId, String>,
    /// The bearer token mutations require; `None` refuses them all.
    pub token: Option<String>,
    /// The peer transport (once it runs): whether peers say this node is not a member.
    pub transport: Arc<std::sync::OnceLock<crate::cluster::transport::Transport>>,
    /// What DNS discovery did on this instance.
    pub discovery: Arc<crate::control::discover::Board>,
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

/// Admin connections open at once: operators, scrapers and peers forwarding changes
/// need a handful; the cap keeps a flood of admin sockets from taking the file
/// descriptors the proxy listeners need.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Largest admin request head: a token and a few short headers.
const MAX_ADMIN_HEADER_BYTES: usize = 16 * 1024;
/// From accept (TLS included) to a complete request head on the admin port.
pub const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An admin connection with no request in flight for this long is closed.
pub const ADMIN_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time admin requests in flight get to finish once shutdown begins (a change waits
/// at most [`PROPOSE_TIMEOUT`] to commit).
pub const ADMIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

type Body = Full<Bytes>;

impl listener::Service for Admin {
    type Body = Body;

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        _origin: Arc<crate::proxy::Origin>,
    ) -> Response<Body> {
        self.answer(req).await
    }
}

impl Admin {
    /// Serves on `listener` until `shutdown` turns true.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        self.serve_with_tls(listener, None, shutdown).await
    }

    /// Like [`Admin::serve`], over TLS when `tls` is given. Served through the
    /// proxy's listener discipline with the admin bounds: at most
    /// [`MAX_ADMIN_CONNECTIONS`] connections, a request head within
    /// [`ADMIN_HEADER_READ_TIMEOUT`] of accept, idle connections closed after
    /// [`ADMIN_KEEP_ALIVE_TIMEOUT`], backoff on accept errors, and a drain of at most
    /// [`ADMIN_SHUTDOWN_GRACE`] once `shutdown` turns true.
    pub async fn serve_with_tls(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<crate::tls::ServerTls>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let discipline = Discipline {
            max_connections: MAX_ADMIN_CONNECTIONS,
            max_header_bytes: MAX_ADMIN_HEADER_BYTES,
            first_request_timeout: ADMIN_HEADER_READ_TIMEOUT,
            keep_alive_timeout: ADMIN_KEEP_ALIVE_TIMEOUT,
            shutdown_grace: ADMIN_SHUTDOWN_GRACE,
        };
        let stop = async move {
            let _ = shutdown.wait_for(|&s| s).await;
        };
        let counted = self.proxy.metrics().connections("admin");
        let bound = listener::Bound {
            listener,
            tls,
            headers: HeaderWork::default(),
        };
        listener::serve(vec![bound], self, discipline, counted, stop).await
    }

    /// Starts the admin API of `instance` on its `admin.address`, if the file has an
    /// `admin` section; it stops when the instance does.
    pub async fn start(instance: &Instance) -> Result<(), String> {
        let Some(settings) = &instance.config.admin else {
            return Ok(());
        };
        let token = match &settings.token_file {
            Some(path) => Some(crate::control::read_token(path)?),
            None => None,
        };
        let tls = match &settings.tls {
            Some(pair) => Some(
                crate::tls::ServerTls::from_pairs(
                    std::slice::from_ref(pair),
                    crate::config::DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                )
                .map_err(|e| format!("admin.tls.{}: {e}", e.field))?,
            ),
            None => None,
        };
        let listener = Admin::bind(settings.address)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(addr = %settings.address, "admin API listening");
        let admin = Arc::new(Admin {
            config: instance.reloader.subscribe(),
            reloader: Some(instance.reloader.clone()),
            proxy: instance.proxy.clone(),
            proposer: instance.proposer.clone(),
            names: instance.member.names.clone(),
            token,
            transport: instance.member.transport.clone(),
            discovery: instance.discovery.clone(),
        });
        tokio::spawn(admin.serve_with_tls(listener, tls, instance.stopping()));
        Ok(())
    }

    /// Binds `addr`, naming it in the error.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
        TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {addr} (admin): {e}"))
        })
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<Body> {
        // HEAD is answered as GET: hyper sends the head alone (monitors and `curl -I`).
        if req.method() == Method::HEAD {
            *req.method_mut() = Method::GET;
        }
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
            (&Method::DELETE, ["api", "cache"]) => self.purge(req).await,
            (&Method::GET, ["api", "pools", pool, "ring"]) => match decode_segment(pool) {
                Ok(pool) => self.ring(&pool),
                Err(why) => text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
            },
            (&Method::GET, ["api", "route"]) => self.route(req.uri().query().unwrap_or("")),
            (&Method::PUT | &Method::DELETE, ["api", "pools", pool, "upstreams", id]) => {
                let target = match (decode_segment(pool), decode_segment(id)) {
                    (Ok(pool), Ok(id)) => Target::Upstream { pool, id },
                    (Err(why), _) | (_, Err(why)) => {
                        return text(StatusCode::BAD_REQUEST, &format!("{why}\n"))
                    }
                };
                self.change(req, target).await
            }
            (&Method::PUT | &Method::DELETE, ["api", "cluster", "nodes", name]) => {
                match decode_segment(name) {
                    Ok(name) => self.change(req, Target::Node(name)).await,
                    Err(why) => text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
                }
            }
            (method, _) => match (method, status::asset(&segments)) {
                (&Method::GET, Some(page)) => page,
                _ => text(
                    StatusCode::NOT_FOUND,
                    &format!("no admin endpoint {method} {path}\n"),
                ),
            },
        }
    }

    /// A change: authorised, parsed, proposed (through the leader), answered once applied.
    async fn change(&self, req: Request<Incoming>, target: Target) -> Response<Body> {
        // The (bounded) body is read before any answer, a refusal included: a client
        // still sending when the connection closed would lose the answer to a reset.
        let refusal = self.refusal(&req);
        let method = req.method().clone();
        let body = read_body(req).await;
        if let Some(refusal) = refusal {
            return refusal;
        }
        let Some(body) = body else {
            let too_big = format!("admin bodies are at most {MAX_ADMIN_BODY} bytes\n");
            return text(StatusCode::PAYLOAD_TOO_LARGE, &too_big);
        };
        let outcome = match target {
            Target::Upstream { pool, id } => match command(&method, pool, id, &body) {
                Ok(cmd) => self.propose(self.with_slow_start(cmd)).await,
                Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
            },
            Target::Batch => match batch_command(&body) {
                Ok(cmd) => self.propose(self.with_slow_start(cmd)).await,
                Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
            },
            Target::Node(name) => match node_change(&method, &name, &body) {
                Ok(NodeChange::Put { address, role }) => {
                    self.put_node(&name, address.as_deref(), role).await
                }
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
            Outcome::Failed(e) => failure(&e),
            Outcome::Stuck(status, why) => text(status, &format!("{why}\n")),
        }
    }

    /// `cmd` with the slow start of the pools it adds upstreams to, as this
    /// instance's config in force sets it (see [`Command::with_slow_start`]).
    fn with_slow_start(&self, cmd: Command) -> Command {
        let config = self.config.borrow().clone();
        cmd.with_slow_start(
            |p| config.slow_start(p),
            crate::control::breakers::wall_ms(),
        )
    }

    /// Proposes `cmd` (through the leader when this instance follows), waiting at
    /// most [`PROPOSE_TIMEOUT`] for it to apply.
    async fn propose(&self, cmd: Command) -> Outcome {
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.proposer.propose(cmd)).await {
            Err(_) => Outcome::TimedOut,
            Ok(Ok(index)) => Outcome::Done(json!({"applied": index})),
            Ok(Err(e)) => Outcome::Failed(e),
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
        let _ = tokio::time::timeout(PROPOSE_TIMEOUT, self.proposer.propose(forget)).await;
        Outcome::Done(json!({"node": name, "removed": true, "applied": index}))
    }

    /// Proposes a membership change, retrying while it cannot be made yet, until
    /// `within` has passed.
    async fn membership(&self, cc: ConfChange, within: Duration) -> Result<u64, Outcome> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.proposer.change_membership(cc)).await {
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

    /// A member's name: from the file, else from the replicated peer addresses.
    fn name_of(&self, id: NodeId) -> Option<String> {
        if let Some(n) = self.names.get(&id) {
            return Some(n.clone());
        }
        let view = self.proposer.cluster().view();
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
        let v = self.proposer.cluster().view();
        let member = |id: &NodeId, role: &str| {
            let matched = v.matched.get(id);
            let lag = matched.map(|m| v.commit.saturating_sub(*m));
            json!({"id": self.name(*id), "role": role, "matched": matched, "lag": lag})
        };
        let members: Vec<Value> = v
            .voters
            .iter()
            .map(|id| member(id, "voter"))
            .chain(v.learners.iter().map(|id| member(id, "learner")))
            .collect();
        // Removed: its own configuration says so, or the members it dials refuse it.
        let refused = self.transport.get().is_some_and(|t| t.not_a_member());
        let removed = v.removed || refused;
        let role = match removed {
            true => "removed",
            false => role_name(v.role),
        };
        json!({
            "id": self.name(v.id),
            "role": role,
            "membership": membership(&v),
            "vote": v.vote.map(|n| self.name(n)),
            "votes_granted": v.votes_granted,
            "removed": removed,
            "lost_data": v.lost_data,
            "term": v.term,
            "leader": v.leader.map(|l| self.name(l)),
            "commit": v.commit,
            "applied": v.applied,
            "snapshot_index": v.snapshot,
            "members": members,
            "storage": storage_json(&v.storage),
        })
    }

    fn pools_json(&self) -> Value {
        let snapshot = self.proxy.snapshot();
        let view = self.proposer.cluster().view();
        let config = self.config.borrow().clone();
        let pools: Vec<Value> = snapshot
            .pools
            .iter()
            .map(|p| {
                let discover = config
                    .pools
                    .iter()
                    .find(|c| *c.name == *p.name)
                    .and_then(|c| c.discover.as_ref())
                    .map(|d| self.discovery.json(&p.name, d));
                let ids: Vec<&str> = p.upstreams.iter().map(|u| &*u.id).collect();
                let breakers = view.state.breakers(&p.name);
                let now = crate::health::detector::now_ms();
                let upstreams: Vec<Value> = p
                    .upstreams
                    .iter()
                    .zip(&p.health.slots)
                    .enumerate()
                    .map(|(i, (u, slot))| {
                        let breaker = breakers.and_then(|b| b.upstreams.get(&*u.id));
                        // The share the ring in force gives it, so it reads
                        // together with `ring_digest`.
                        let share = p.ring.share(i);
                        let slow_start = (!share.is_full())
                            .then(|| json!({"step": share.step, "steps": share.steps}));
                        json!({
                            "id": &*u.id,
                            "address": u.addr.to_string(),
                            "breaker": breaker_json(breaker),
                            "slow_start": slow_start,
                            // Skipped by the routing in force (the same snapshot as
                            // the ring), where `breaker` is the latest applied state.
                            "ejected": p.health.ejected.get(i).copied().unwrap_or(false),
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
                    "discover": discover,
                })
            })
            .collect();
        let drift: Vec<String> = view
            .state
            .drift(&config)
            .iter()
            .map(|d| d.to_string())
            .collect();
        // The breakers' times are the proposers' wall clocks: `now_ms` is this
        // instance's, so a reader can tell how long an ejection has left.
        let now_ms = crate::control::breakers::wall_ms();
        json!({"applied": view.applied, "pools": pools, "drift": drift, "now_ms": now_ms})
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
        let params: Result<BTreeMap<String, String>, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
            .collect();
        let params = match params {
            Ok(p) => p,
            Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
        };
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
        let point = ring::point(key.as_bytes());
        let upstream = p.ring.lookup(point).map(|i| &*p.upstreams[i].id);
        json_response(
            StatusCode::OK,
            json!({"pool": pool, "key": key, "upstream": upstream, "point": point}),
        )
    }

    fn ring(&self, pool: &str) -> Response<Body> {
        let snapshot = self.proxy.snapshot();
        match snapshot.pool(pool) {
            Some(p) => status::compact_json(&status::ring_json(p)),
            None => text(StatusCode::NOT_FOUND, &format!("no pool named {pool:?}\n")),
        }
    }
}

/// What a change request is about.
enum Target {
    Upstream { pool: String, id: String },
    Batch,
    Node(String),
}

/// How a change ended, before it becomes a response.
enum Outcome {
    Done(Value),
    Failed(ProposeFailure),
    TimedOut,
    Stuck(StatusCode, String),
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

/// Whether this node can write its Raft log, and why not.
fn storage_json(s: &StorageHealth) -> Value {
    match s {
        StorageHealth::Writable => json!({"state": "writable"}),
        StorageHealth::Full { error } => json!({"state": "full", "error": error}),
        StorageHealth::Failed { error } => json!({"state": "failed", "error": error}),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// This node's kind of membership in its own configuration.
fn membership(v: &crate::cluster::driver::ClusterView) -> &'static str {
    if v.voters.contains(&v.id) {
        "voter"
    } else if v.learners.contains(&v.id) {
        "learner"
    } else {
        "none"
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
