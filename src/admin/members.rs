//! `PUT /api/cluster/nodes/NAME`: a member with the role asked for. A node that is
//! not a member is added (as a learner, then promoted if it is to vote); a learner is
//! promoted, a voter demoted. Every step is idempotent, so a caller that timed out can
//! send the same request again.

use http::StatusCode;
use serde_json::json;

use super::parse::MemberRole;
use super::{Admin, Outcome, JOIN_TIMEOUT, PROPOSE_TIMEOUT};
use crate::cluster::raft_id;
use crate::cluster::state::Command;
use crate::raft::{ConfChange, ConfChangeKind, NodeId};

impl Admin {
    /// Records `address` (when given), then makes `name` a member with `role`.
    pub(super) async fn put_node(
        &self,
        name: &str,
        address: Option<&str>,
        role: MemberRole,
    ) -> Outcome {
        if let Some(address) = address {
            let set_peer = Command::SetPeer {
                node: name.to_owned(),
                address: address.to_owned(),
            };
            match tokio::time::timeout(PROPOSE_TIMEOUT, self.proposer.propose(set_peer)).await {
                Err(_) => return Outcome::TimedOut,
                Ok(Err(e)) => return Outcome::Failed(e),
                Ok(Ok(_)) => {}
            }
        }
        let id = raft_id(name);
        let view = self.proposer.cluster().view();
        let (voter, learner) = (view.voters.contains(&id), view.learners.contains(&id));
        let done =
            |index| Outcome::Done(json!({"node": name, "role": role.as_str(), "applied": index}));
        match role {
            MemberRole::Voter if voter => done(view.applied),
            MemberRole::Learner if learner => done(view.applied),
            MemberRole::Learner if voter => {
                self.step(ConfChangeKind::DemoteVoter, id, name, role).await
            }
            _ if address.is_none() && !learner => Outcome::Stuck(
                StatusCode::BAD_REQUEST,
                format!("{name} is not a member: give its peer address (\"address\") to add it"),
            ),
            MemberRole::Learner => self.step(ConfChangeKind::AddLearner, id, name, role).await,
            MemberRole::Voter => self.add_voter(id, name, learner, address).await,
        }
    }

    /// One membership change, answered with the role it gave.
    async fn step(
        &self,
        kind: ConfChangeKind,
        node: NodeId,
        name: &str,
        role: MemberRole,
    ) -> Outcome {
        match self
            .membership(ConfChange { kind, node }, PROPOSE_TIMEOUT)
            .await
        {
            Ok(index) => {
                Outcome::Done(json!({"node": name, "role": role.as_str(), "applied": index}))
            }
            Err(outcome) => outcome,
        }
    }

    /// Adds the node as a learner unless it is one, then promotes it once it caught up.
    /// A node that was added here and cannot catch up within [`JOIN_TIMEOUT`] is
    /// removed again; a learner that was already there stays one.
    async fn add_voter(
        &self,
        id: NodeId,
        name: &str,
        learner: bool,
        address: Option<&str>,
    ) -> Outcome {
        if !learner {
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
            Err(Outcome::TimedOut) => {
                let undone = if learner {
                    "it stays a learner".to_owned()
                } else {
                    match self.remove_node(name).await {
                        Outcome::Done(_) => "it was removed again".to_owned(),
                        _ => format!("removing the learner failed too: remove it with `ringway cluster remove-node {name}`"),
                    }
                };
                let reach =
                    address.map_or(String::new(), |a| format!(" and that {a} is reachable"));
                Outcome::Stuck(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "{name} is a learner but did not catch up within {} s, so {undone}; check that it runs with cluster.join: true{reach}, then repeat this request",
                        JOIN_TIMEOUT.as_secs()
                    ),
                )
            }
            Err(other) => other,
        }
    }
}
