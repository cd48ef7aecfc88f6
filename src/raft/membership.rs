//! Membership changes (one node at a time, applied at commit), learner promotion,
//! a leader removing itself, and leader transfer.

use super::core::{Raft, Role};
use super::message::MessageBody;
use super::progress::{Progress, ProgressState};
use super::types::{
    ConfChange, ConfChangeError, ConfChangeKind, EntryPayload, Index, NodeId, Term, NO_NODE,
};

/// A learner may be promoted only when at most this many entries behind the leader:
/// a voter that far behind would stall commits while it catches up.
pub const PROMOTION_MAX_LAG: Index = 32;

/// Most learners a leader feeds. The leader sends every entry and every heartbeat to
/// each learner itself (no relaying), so each one adds a connection, a send queue, an
/// in-flight window and its share of the leader's CPU and bandwidth per change (see
/// "Learners" in ARCHITECTURE.md for the measured cost). 64 learners plus 5 voters keep
/// a change's fan-out under 70 messages, which one leader core sends in well under a
/// heartbeat interval; a fleet past that needs learners that follow a voter instead.
pub const MAX_LEARNERS: usize = 64;

/// A proposal accepted by the leader: it will commit at `index` unless `term` is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    pub term: Term,
    pub index: Index,
}

/// Why a proposal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Not the leader; forward to `leader` if known.
    NotLeader { leader: Option<NodeId> },
    /// Leadership is being handed to `to`; retry there shortly.
    TransferInProgress { to: NodeId },
    /// The payload exceeds the per-message byte bound and could never be replicated in one message.
    TooLarge { size: usize, max: usize },
    /// A configuration change must wait until the leader committed an entry of its own term.
    OwnTermNotCommitted,
    /// A configuration change at `index` is not committed yet; one change at a time.
    ConfChangePending { index: Index },
    /// The change does not apply to the current configuration.
    InvalidConfChange(ConfChangeError),
    /// The learner is `lag` entries behind; promote it once it caught up.
    LearnerBehind { lag: Index },
    /// Adding (or demoting to) one more learner would exceed `max` ([`MAX_LEARNERS`]).
    TooManyLearners { max: usize },
}

/// Why a leader transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    NotLeader {
        leader: Option<NodeId>,
    },
    /// The target is this node.
    TargetIsSelf,
    /// Only voters can lead.
    NotAVoter(NodeId),
}

impl Raft {
    fn leader_hint(&self) -> Option<NodeId> {
        (self.leader != NO_NODE).then_some(self.leader)
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        if self.transferee != NO_NODE {
            return Err(ProposeError::TransferInProgress {
                to: self.transferee,
            });
        }
        Ok(())
    }

    pub(crate) fn propose(&mut self, data: Vec<u8>) -> Result<Proposed, ProposeError> {
        self.check_can_propose()?;
        let max = self.cfg.max_bytes_per_msg;
        if data.len() > max {
            return Err(ProposeError::TooLarge {
                size: data.len(),
                max,
            });
        }
        Ok(self.append_and_replicate(EntryPayload::Normal(data)))
    }

    fn append_and_replicate(&mut self, payload: EntryPayload) -> Proposed {
        let index = self.append_entry(payload);
        let proposed = Proposed {
            term: self.term,
            index,
        };
        self.pending_flush = true;
        self.maybe_commit();
        proposed
    }

    pub(crate) fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Proposed, ProposeError> {
        self.check_can_propose()?;
        if self.log.commit < self.term_start {
            return Err(ProposeError::OwnTermNotCommitted);
        }
        if self.pending_conf > self.log.commit {
            return Err(ProposeError::ConfChangePending {
                index: self.pending_conf,
            });
        }
        let next = self
            .conf
            .apply(&cc)
            .map_err(ProposeError::InvalidConfChange)?;
        if cc.kind == ConfChangeKind::PromoteLearner {
            self.check_learner_caught_up(cc.node)?;
        }
        // Checked by the proposing leader only: replicas apply whatever committed, so a
        // different bound on another version never makes two nodes disagree.
        if next.learners.len() > MAX_LEARNERS && next.learners.len() > self.conf.learners.len() {
            return Err(ProposeError::TooManyLearners { max: MAX_LEARNERS });
        }
        // The new configuration is in effect from the moment it is in the log.
        let index = self.append_entry(EntryPayload::ConfChange(cc));
        self.conf = next;
        self.pending_conf = index;
        self.on_conf_changed();
        self.pending_flush = true;
        self.maybe_commit();
        Ok(Proposed {
            term: self.term,
            index,
        })
    }

    /// A learner is promoted only once this leader has confirmed where its log matches
    /// (Replicate state) and it is at most [`PROMOTION_MAX_LAG`] entries behind.
    fn check_learner_caught_up(&self, node: NodeId) -> Result<(), ProposeError> {
        let Some(pr) = self.progress.get(&node) else {
            return Err(ProposeError::InvalidConfChange(
                ConfChangeError::NotALearner,
            ));
        };
        let lag = self.log.last_index().saturating_sub(pr.matched);
        if pr.state != ProgressState::Replicate || lag > PROMOTION_MAX_LAG {
            return Err(ProposeError::LearnerBehind { lag });
        }
        Ok(())
    }

    /// Leader: track exactly the members of the new configuration. A leader that removed
    /// itself keeps leading (without counting itself) until the change commits.
    fn on_conf_changed(&mut self) {
        let next = self.log.last_index() + 1;
        let conf = self.conf.clone();
        self.progress.retain(|id, _| conf.contains(*id));
        for m in conf.members() {
            self.progress
                .entry(m)
                .or_insert_with(|| Progress::new(next));
        }
        if !conf.is_voter(self.transferee) {
            self.transferee = NO_NODE;
        }
    }

    /// The leader committed its own removal: tell the others the commit index, hand
    /// leadership to the most caught-up voter, and step down.
    pub(crate) fn step_down_removed(&mut self) {
        self.broadcast_append();
        self.broadcast_heartbeat();
        let last = self.log.last_index();
        let successor = self
            .conf
            .voters
            .iter()
            .copied()
            .find(|v| self.progress.get(v).is_some_and(|p| p.matched == last));
        if let Some(to) = successor {
            self.send(to, MessageBody::TimeoutNow);
        }
        self.become_follower(self.term, NO_NODE);
    }

    pub(crate) fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        if to == self.id {
            return Err(TransferError::TargetIsSelf);
        }
        if !self.conf.is_voter(to) {
            return Err(TransferError::NotAVoter(to));
        }
        self.transferee = to;
        self.election_elapsed = 0;
        if !self.send_append(to, false) {
            self.maybe_send_timeout_now(to);
        }
        Ok(())
    }
}
