//! One path to propose a change, from any instance: [`Proposer`] proposes through the
//! local driver when this instance leads, and otherwise forwards the change to the
//! leader over the cluster transport ([`Transport::call`]); the leader's
//! [`ForwardServer`] proposes it and answers with the applied index or a typed
//! refusal.
//!
//! Every replicated change gets a [`ChangeId`] and travels as [`Command::Once`], so
//! it applies at most once however often it is retried: after a leader change, an
//! answer lost with a connection, or a timeout, the proposer retries (within
//! [`FORWARD_DEADLINE`] and [`MAX_FORWARD_ATTEMPTS`]) against the leader its
//! [`ClusterView`](super::driver::ClusterView) names, and a retry of a change that
//! already applied is answered with the index where it applied. Membership steps
//! carry no id: a step retried after it applied is refused by Raft itself (already a
//! member, not a member), so it never applies twice either.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::driver::{ClusterHandle, ProposeFailure};
use super::state::{ChangeId, Command, Refused};
use super::transport::{BoxFuture, RequestHandler, Transport};
use crate::raft::{ConfChange, ConfChangeKind, Index, NodeId};

/// Longest one forwarded attempt waits for the leader's answer: a commit takes a few
/// round trips and an fsync (milliseconds); this leaves room for a slow disk while a
/// dead leader is noticed well within the overall deadline.
pub const FORWARD_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a proposal is retried in all, across leader changes: several election
/// timeouts at the default settings, short enough for an operator's request.
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(10);
/// Most attempts one proposal makes (locally or forwarded).
pub const MAX_FORWARD_ATTEMPTS: u32 = 8;
/// Pause before retrying when no leader is known or the leader was just lost, while
/// waiting for the view to name a new one.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Longest the leader spends proposing one forwarded change before answering: below
/// the transport's own bound on a handler and the asker's attempt timeout.
pub const SERVE_PROPOSE_TIMEOUT: Duration = Duration::from_millis(2500);

/// What a follower asks the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case", deny_unknown_fields)]
pub enum ForwardRequest {
    /// A replicated change; always a [`Command::Once`].
    Propose { command: Command },
    /// A one-step membership change.
    Membership { kind: MembershipStep, node: NodeId },
}

/// The kind of a membership step, as it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipStep {
    AddLearner,
    Promote,
    Remove,
    Demote,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case", deny_unknown_fields)]
pub enum ForwardReply {
    Applied { index: Index },
    NotLeader { leader: Option<NodeId> },
    Refused { refused: Refused },
    Lost,
    Busy,
    Stopped,
    Invalid { reason: String },
    NotYet { reason: String },
    Unavailable { reason: String },
}

impl From<Result<Index, ProposeFailure>> for ForwardReply {
    fn from(r: Result<Index, ProposeFailure>) -> ForwardReply {
        match r {
            Ok(index) => ForwardReply::Applied { index },
            Err(ProposeFailure::NotLeader { leader }) => ForwardReply::NotLeader { leader },
            Err(ProposeFailure::Refused(refused)) => ForwardReply::Refused { refused },
            Err(ProposeFailure::Lost) => ForwardReply::Lost,
            Err(ProposeFailure::Busy) => ForwardReply::Busy,
            Err(ProposeFailure::Stopped) => ForwardReply::Stopped,
            Err(ProposeFailure::Invalid(reason)) => ForwardReply::Invalid { reason },
            Err(ProposeFailure::NotYet(reason)) => ForwardReply::NotYet { reason },
            Err(ProposeFailure::Unavailable(reason)) => ForwardReply::Unavailable { reason },
        }
    }
}

impl From<ForwardReply> for Result<Index, ProposeFailure> {
    fn from(r: ForwardReply) -> Self {
        match r {
            ForwardReply::Applied { index } => Ok(index),
            ForwardReply::NotLeader { leader } => Err(ProposeFailure::NotLeader { leader }),
            ForwardReply::Refused { refused } => Err(ProposeFailure::Refused(refused)),
            ForwardReply::Lost => Err(ProposeFailure::Lost),
            ForwardReply::Busy => Err(ProposeFailure::Busy),
            ForwardReply::Stopped => Err(ProposeFailure::Stopped),
            ForwardReply::Invalid { reason } => Err(ProposeFailure::Invalid(reason)),
            ForwardReply::NotYet { reason } => Err(ProposeFailure::NotYet(reason)),
            ForwardReply::Unavailable { reason } => Err(ProposeFailure::Unavailable(reason)),
        }
    }
}

fn step_of(kind: ConfChangeKind) -> MembershipStep {
    match kind {
        ConfChangeKind::AddLearner => MembershipStep::AddLearner,
        ConfChangeKind::PromoteLearner => MembershipStep::Promote,
        ConfChangeKind::RemoveNode => MembershipStep::Remove,
        ConfChangeKind::DemoteVoter => MembershipStep::Demote,
    }
}

fn kind_of(step: MembershipStep) -> ConfChangeKind {
    match step {
        MembershipStep::AddLearner => ConfChangeKind::AddLearner,
        MembershipStep::Promote => ConfChangeKind::PromoteLearner,
        MembershipStep::Remove => ConfChangeKind::RemoveNode,
        MembershipStep::Demote => ConfChangeKind::DemoteVoter,
    }
}

/// Proposes changes from any instance: locally when it leads, forwarded otherwise.
/// Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    handle: ClusterHandle,
    transport: Arc<OnceLock<Transport>>,
    next_seq: Arc<AtomicU64>,
}

impl Proposer {
    /// A proposer over this instance's driver and (once it runs) its transport.
    pub fn new(handle: ClusterHandle, transport: Arc<OnceLock<Transport>>) -> Proposer {
        // A random start keeps ids unique across restarts of the same node.
        let start = fastrand::u64(..u64::MAX / 2);
        Proposer {
            handle,
            transport,
            next_seq: Arc::new(AtomicU64::new(start)),
        }
    }

    /// Proposes `cmd` and waits until it applied (on the leader, and on this instance
    /// when it leads): the applied index, or why not. Retried across leader changes
    /// within [`FORWARD_DEADLINE`]; applied at most once.
    pub async fn propose(&self, cmd: Command) -> Result<Index, ProposeFailure> {
        self.propose_once(self.next_id(), cmd).await
    }

    /// The cluster member this proposer serves (its view, its local proposals).
    pub fn cluster(&self) -> &ClusterHandle {
        &self.handle
    }

    /// A fresh change id from this instance.
    pub fn next_id(&self) -> ChangeId {
        ChangeId {
            origin: self.handle.view().id,
            seq: self.next_seq.fetch_add(1, Relaxed),
        }
    }

    /// Like [`Proposer::propose`] with a caller-chosen id: proposing the same id again
    /// (say, after an answer was lost) answers with the index where it first applied.
    pub async fn propose_once(&self, id: ChangeId, cmd: Command) -> Result<Index, ProposeFailure> {
        cmd.validate().map_err(ProposeFailure::Refused)?;
        let once = Command::Once {
            id,
            command: Box::new(cmd),
        };
        let request = ForwardRequest::Propose {
            command: once.clone(),
        };
        let res = self
            .attempts(request, || self.handle.propose(once.clone()))
            .await;
        match res {
            Err(ProposeFailure::Refused(Refused::Duplicate { index })) => Ok(index),
            other => other,
        }
    }

    /// Proposes a one-step membership change and waits until it applied; forwarded
    /// to the leader when this instance does not lead.
    pub async fn change_membership(&self, cc: ConfChange) -> Result<Index, ProposeFailure> {
        let request = ForwardRequest::Membership {
            kind: step_of(cc.kind),
            node: cc.node,
        };
        self.attempts(request, || self.handle.change_membership(cc))
            .await
    }

    /// Tries locally or at the leader until an answer is final, the attempts run out
    /// or the deadline passes.
    async fn attempts<F, Fut>(
        &self,
        request: ForwardRequest,
        local: F,
    ) -> Result<Index, ProposeFailure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Index, ProposeFailure>>,
    {
        let deadline = Instant::now() + FORWARD_DEADLINE;
        let payload = serde_json::to_vec(&request)
            .map_err(|e| ProposeFailure::Invalid(format!("cannot encode the change: {e}")))?;
        let mut last = ProposeFailure::NotLeader { leader: None };
        for _ in 0..MAX_FORWARD_ATTEMPTS {
            let view = self.handle.view();
            let res = match view.leader {
                Some(leader) if leader == view.id => {
                    match tokio::time::timeout(FORWARD_ATTEMPT_TIMEOUT, local()).await {
                        Ok(res) => res,
                        Err(_) => Err(ProposeFailure::Unavailable(
                            "this leader did not commit the change in time".into(),
                        )),
                    }
                }
                Some(leader) => self.forward(leader, payload.clone(), deadline).await,
                None => Err(ProposeFailure::NotLeader { leader: None }),
            };
            match res {
                Err(e) if retriable(&e) && Instant::now() + RETRY_PAUSE < deadline => {
                    tracing::debug!(error = %e, "proposal not decided; retrying");
                    last = e;
                    self.await_leader(view.leader, deadline).await;
                }
                other => return other,
            }
        }
        Err(match last {
            ProposeFailure::NotLeader { .. } => ProposeFailure::Unavailable(
                "no leader answered within the forwarding deadline".into(),
            ),
            other => other,
        })
    }

    /// One forwarded attempt at `leader`.
    async fn forward(
        &self,
        leader: NodeId,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<Index, ProposeFailure> {
        let Some(transport) = self.transport.get() else {
            return Err(ProposeFailure::Unavailable(
                "the cluster transport is not running".into(),
            ));
        };
        let wait = FORWARD_ATTEMPT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        let name = transport
            .peer_name(leader)
            .unwrap_or_else(|| format!("{leader:016x}"));
        if transport.peer_connected(leader) == Some(false) {
            // Probably dead: no use queueing a request it cannot read. The retry waits
            // for a new leader or for this one to be reachable again.
            return Err(ProposeFailure::Unavailable(format!(
                "the leader ({name}) is unreachable"
            )));
        }
        match transport.call(leader, payload, wait).await {
            Ok(bytes) => match serde_json::from_slice::<ForwardReply>(&bytes) {
                Ok(reply) => reply.into(),
                Err(e) => Err(ProposeFailure::Unavailable(format!(
                    "the leader ({name}) sent an unreadable answer: {e}"
                ))),
            },
            Err(e) => Err(ProposeFailure::Unavailable(format!(
                "forwarding to the leader ({name}) failed: {e}"
            ))),
        }
    }

    /// Before a retry: waits until the view names a leader other than `old`, or
    /// [`RETRY_PAUSE`]; while `old` is another node this one cannot reach (it died, so
    /// asking it again is pointless until an election or its return), keeps waiting
    /// in such pauses, up to `deadline`.
    async fn await_leader(&self, old: Option<NodeId>, deadline: Instant) {
        let mut views = self.handle.subscribe();
        loop {
            let until = (Instant::now() + RETRY_PAUSE).min(deadline);
            let changed = views.wait_for(|v| v.leader.is_some() && v.leader != old);
            if tokio::time::timeout_at(until, changed).await.is_ok() {
                return;
            }
            let me = self.handle.view().id;
            let unreachable = match (old, self.transport.get()) {
                (Some(leader), Some(t)) if leader != me => t.peer_connected(leader) == Some(false),
                _ => false,
            };
            if !unreachable || Instant::now() >= deadline {
                return;
            }
        }
    }
}

/// Whether an attempt's failure may be retried: the change did not apply (lost,
/// no leader, not the leader), or its fate is unknown and the id makes a retry safe.
fn retriable(e: &ProposeFailure) -> bool {
    matches!(
        e,
        ProposeFailure::NotLeader { .. }
            | ProposeFailure::Lost
            | ProposeFailure::Unavailable(_)
            | ProposeFailure::NotYet(_)
    )
}

/// The leader's side: proposes what followers forward.
pub struct ForwardServer {
    handle: ClusterHandle,
}

impl ForwardServer {
    pub fn new(handle: ClusterHandle) -> ForwardServer {
        ForwardServer { handle }
    }

    async fn serve(handle: ClusterHandle, payload: Vec<u8>) -> ForwardReply {
        let request = match serde_json::from_slice::<ForwardRequest>(&payload) {
            Ok(r) => r,
            Err(e) => {
                return ForwardReply::Invalid {
                    reason: format!("unreadable forwarded change: {e}"),
                }
            }
        };
        let proposed = async {
            match request {
                ForwardRequest::Propose {
                    command: command @ Command::Once { .. },
                } => handle.propose(command).await,
                ForwardRequest::Propose { .. } => Err(ProposeFailure::Invalid(
                    "a forwarded change must carry an id".into(),
                )),
                ForwardRequest::Membership { kind, node } => {
                    let cc = ConfChange {
                        kind: kind_of(kind),
                        node,
                    };
                    handle.change_membership(cc).await
                }
            }
        };
        match tokio::time::timeout(SERVE_PROPOSE_TIMEOUT, proposed).await {
            Ok(res) => res.into(),
            Err(_) => ForwardReply::Unavailable {
                reason: "the leader did not commit the change in time".into(),
            },
        }
    }
}

impl RequestHandler for ForwardServer {
    fn handle(&self, _from: NodeId, name: &str, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let handle = self.handle.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let reply = ForwardServer::serve(handle, payload).await;
            tracing::debug!(peer = %name, answer = ?reply, "forwarded change answered");
            // Plain data always serializes.
            serde_json::to_vec(&reply).unwrap_or_default()
        })
    }
}
