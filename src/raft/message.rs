//! Messages exchanged between Raft peers: plain data so a versioned wire encoding can carry them.

use super::types::{Entry, Index, NodeId, Snapshot, Term};

/// Which election round a vote request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteKind {
    /// A trial round at `term + 1` that changes no one's term or vote.
    PreVote,
    /// A real election round.
    Vote,
}

/// One message from `from` to `to`, sent at the sender's `term`.
///
/// For a granted pre-vote the response carries the term the candidate asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// The body of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// AppendEntries: `entries` follow the entry at `prev_index`/`prev_term`.
    Append {
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: Vec<Entry>,
    },
    /// Reply to `Append` or `Snapshot`. On success `index` is the follower's highest
    /// index known to match the leader. On rejection `index` is the rejected
    /// `prev_index`, and the hint says where the follower's log diverges:
    /// `hint_term` is the follower's term at `prev_index` (0 if its log is shorter)
    /// and `hint_index` the first index of that term in its log (or its last index + 1).
    AppendResponse {
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Leader liveness beacon carrying a commit index the follower is known to hold.
    Heartbeat { commit: Index },
    /// Reply to `Heartbeat`.
    HeartbeatResponse,
    /// RequestVote (or PreVote). `transfer` marks a leader-transfer election that may
    /// interrupt a live leader's lease.
    ///
    /// `life` is what the candidate's entry 2 ([`super::types::EntryPayload::Formed`])
    /// records for the receiver, or 0 when its log does not show one: a founder back from
    /// an empty data dir learns from it whether the group formed on its vote.
    Vote {
        kind: VoteKind,
        last_index: Index,
        last_term: Term,
        transfer: bool,
        life: u64,
    },
    /// Reply to `Vote`. `life` is the voter's [`super::types::HardState::life`] when a
    /// fresh founder grants a vote in the group's first election, else 0.
    VoteResponse {
        kind: VoteKind,
        granted: bool,
        life: u64,
    },
    /// InstallSnapshot for a follower behind the leader's compacted log.
    Snapshot { snapshot: Snapshot },
    /// Leader transfer: the receiver starts an election at once.
    TimeoutNow,
}

impl MessageBody {
    /// Short stable name, used in traces and stats.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse => "HeartbeatResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
