//! Plain-data types shared by the core, storage and wire: ids, entries, hard state, membership, snapshots.

/// A node's identity in the group; `0` ([`NO_NODE`]) means "nobody".
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log (the first entry has index 1).
pub type Index = u64;

/// The "no node" id: no vote cast, no leader known.
pub const NO_NODE: NodeId = 0;

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// The entry a new leader appends at once to commit something of its own term.
    Empty,
    /// An opaque command defined by the cluster layer.
    Normal(Vec<u8>),
    /// A membership change the core applies itself when the entry commits.
    ConfChange(ConfChange),
    /// Entry 2, written by the group's first leader in place of `Empty`: the founders'
    /// votes that elected it, each with the life of the data dir that cast it. A founder
    /// that starts from an empty data dir reads here whether the group formed on its
    /// vote or on one from a life it has forgotten (`docs/raft.md`, "Lost state").
    Formed(Vec<FounderVote>),
}

impl EntryPayload {
    /// The life entry 2 records for founder `node` (`None`: not entry 2's record, or
    /// `node` is not in it).
    pub fn founder_life(&self, node: NodeId) -> Option<u64> {
        match self {
            EntryPayload::Formed(votes) => votes.iter().find(|v| v.node == node).map(|v| v.life),
            _ => None,
        }
    }
}

/// A founder's vote in the group's first election, as the first leader counted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FounderVote {
    pub node: NodeId,
    /// [`HardState::life`] of the founder when it granted the vote.
    pub life: u64,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: EntryPayload,
}

/// Fixed per-entry overhead counted against the bytes-per-message bound (term, index, tag).
pub const ENTRY_OVERHEAD_BYTES: usize = 24;

impl Entry {
    /// Approximate encoded size, used to bound AppendEntries batches by bytes.
    pub fn size_hint(&self) -> usize {
        let body = match &self.payload {
            EntryPayload::Empty => 0,
            EntryPayload::Normal(data) => data.len(),
            EntryPayload::ConfChange(_) => 9,
            EntryPayload::Formed(votes) => 16 * votes.len(),
        };
        ENTRY_OVERHEAD_BYTES + body
    }
}

/// The kind of a single-step membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeKind {
    /// Add a non-voting member that receives the log.
    AddLearner,
    /// Turn a caught-up learner into a voter.
    PromoteLearner,
    /// Remove a voter or a learner.
    RemoveNode,
    /// Turn a voter into a learner: it keeps receiving the log but no longer votes.
    /// For quorums this is a voter's removal, so one at a time is safe.
    DemoteVoter,
}

/// A single-step membership change: one node added, promoted or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub node: NodeId,
}

/// Why a membership change cannot apply to a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// Node id 0 is reserved for "nobody".
    ZeroNodeId,
    /// The node is already a voter or a learner.
    AlreadyMember,
    /// Only learners can be promoted.
    NotALearner,
    /// The node is neither voter nor learner.
    NotAMember,
    /// Removing the only voter would leave a group that can never elect a leader.
    LastVoter,
    /// Only voters can be demoted.
    NotAVoter,
}

/// A membership configuration: sorted voters and sorted learners, disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A configuration with the given voters and no learners.
    pub fn with_voters(voters: &[NodeId]) -> ConfState {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        ConfState {
            voters,
            learners: Vec::new(),
        }
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Voter or learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Voters and learners, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Number of voters that form a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration after `cc`, or why `cc` does not apply.
    pub fn apply(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        if cc.node == NO_NODE {
            return Err(ConfChangeError::ZeroNodeId);
        }
        let mut next = self.clone();
        match cc.kind {
            ConfChangeKind::AddLearner => {
                if self.contains(cc.node) {
                    return Err(ConfChangeError::AlreadyMember);
                }
                insert_sorted(&mut next.learners, cc.node);
            }
            ConfChangeKind::PromoteLearner => {
                if !self.is_learner(cc.node) {
                    return Err(ConfChangeError::NotALearner);
                }
                next.learners.retain(|&n| n != cc.node);
                insert_sorted(&mut next.voters, cc.node);
            }
            ConfChangeKind::RemoveNode => next.remove(cc.node)?,
            ConfChangeKind::DemoteVoter => {
                if !self.is_voter(cc.node) {
                    return Err(ConfChangeError::NotAVoter);
                }
                next.remove(cc.node)?;
                insert_sorted(&mut next.learners, cc.node);
            }
        }
        Ok(next)
    }

    fn remove(&mut self, node: NodeId) -> Result<(), ConfChangeError> {
        if self.is_learner(node) {
            self.learners.retain(|&n| n != node);
            return Ok(());
        }
        if !self.is_voter(node) {
            return Err(ConfChangeError::NotAMember);
        }
        if self.voters.len() == 1 {
            return Err(ConfChangeError::LastVoter);
        }
        self.voters.retain(|&n| n != node);
        Ok(())
    }
}

fn insert_sorted(v: &mut Vec<NodeId>, id: NodeId) {
    if let Err(pos) = v.binary_search(&id) {
        v.insert(pos, id);
    }
}

/// State that must be durable before any message that depends on it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: NodeId,
    pub commit: Index,
    /// A founding member whose data dir was created empty and which has not yet seen
    /// entry 2 name its `life`: it cannot tell a new group from one that formed before
    /// its state was lost, so it votes only in the group's first (unanimous) election
    /// and acknowledges nothing past the bootstrap snapshot. See `docs/raft.md`, "Lost
    /// state".
    pub fresh_founder: bool,
    /// This node lost state it had acknowledged (its data dir was wiped, or restored
    /// from an older copy): it neither campaigns nor grants votes until it is removed
    /// from the group and added back with an empty data dir.
    pub lost_data: bool,
    /// A fresh founder's life: a random nonzero number drawn when it first grants a vote
    /// in the group's first election and kept while its data dir lasts. The first leader
    /// records it in [`EntryPayload::Formed`]; a wiped founder draws a new one, so the
    /// record tells its new life from the one that elected the leader. 0 until drawn.
    pub life: u64,
}

/// Where a snapshot sits in the log and the membership at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub conf: ConfState,
}

/// A state-machine image covering the log up to `meta.index`; `data` is opaque to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}
