//! One path for every change this instance asks of the cluster: the admin API, the
//! reloader and the breaker controller all call [`Proposer`]. The leader proposes;
//! a follower hands the change to the leader and relays its answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::cluster::driver::{ClusterHandle, ProposeFailure};
use crate::cluster::raft_id;
use crate::cluster::state::Command;
use crate::raft::{ConfChange, Index, NodeId};

/// Largest answer read back from the leader.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long a change handed to the leader may take before it is reported as not
/// answered.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Proposes a change, on this instance when it leads, through the leader otherwise.
#[derive(Clone)]
pub struct Proposer {
    cluster: ClusterHandle,
    names: Arc<std::collections::BTreeMap<NodeId, String>>,
    token: Option<Arc<str>>,
}

impl Proposer {
    pub fn new(
        cluster: ClusterHandle,
        names: std::collections::BTreeMap<NodeId, String>,
        token: Option<String>,
    ) -> Proposer {
        Proposer {
            cluster,
            names: Arc::new(names),
            token: token.map(Into::into),
        }
    }

    /// The cluster member this proposer serves.
    pub fn cluster(&self) -> &ClusterHandle {
        &self.cluster
    }

    /// Proposes `cmd` and answers once it applied (here, or on the leader).
    pub async fn propose(&self, cmd: Command) -> Result<Index, ProposeFailure> {
        match self.cluster.propose(cmd.clone()).await {
            Err(ProposeFailure::NotLeader { leader: Some(l) }) => {
                let (path, body) = forwarded(cmd);
                self.forward(l, path, body).await
            }
            other => other,
        }
    }

    /// Proposes a one-step membership change.
    pub async fn change_membership(&self, cc: ConfChange) -> Result<Index, ProposeFailure> {
        self.cluster.change_membership(cc).await
    }

    async fn forward(
        &self,
        leader: NodeId,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Index, ProposeFailure> {
        let unavailable = |why: String| Err(ProposeFailure::NotYet(why));
        let Some(token) = &self.token else {
            return unavailable("this instance has no admin.token_file to reach the leader".into());
        };
        let view = self.cluster.view();
        let name = self.names.get(&leader).cloned().or_else(|| {
            let peers = view.state.peers();
            peers.keys().find(|n| raft_id(n) == leader).cloned()
        });
        let Some(name) = name else {
            return unavailable(format!("the leader ({leader}) is not a known member"));
        };
        let Some(addr) = view
            .state
            .admin_of(&name)
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            return unavailable(format!("the leader ({name}) has not announced its admin address"));
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, call(addr, path, token, body)).await {
            Err(_) => unavailable(format!("the leader ({name}) did not answer in time")),
            Ok(Err(e)) => unavailable(format!("the leader ({name} at {addr}): {e}")),
            Ok(Ok(index)) => Ok(index),
        }
    }
}

fn forwarded(cmd: Command) -> (&'static str, Vec<u8>) {
    match cmd {
        Command::Batch { commands } => {
            let body = serde_json::json!({ "changes": commands });
            ("/api/batch", serde_json::to_vec(&body).unwrap_or_default())
        }
        breaker => ("/api/breakers", serde_json::to_vec(&breaker).unwrap_or_default()),
    }
}

async fn call(addr: SocketAddr, path: &str, token: &str, body: Vec<u8>) -> Result<Index, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-ringway-forwarded", "1")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    match answer["applied"].as_u64() {
        Some(index) if status.is_success() => Ok(index),
        _ => Err(format!("{status}: {}", String::from_utf8_lossy(&bytes).trim())),
    }
}
