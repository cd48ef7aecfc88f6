//! Counters for messages the core dropped instead of acting on (stale, malformed, misrouted).

/// What happened to messages handed to `step`; every dropped message is counted once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handed to `step`.
    pub stepped: u64,
    /// Dropped: addressed to another node, or sent by node 0 or by ourselves.
    pub dropped_misrouted: u64,
    /// Dropped: structurally invalid (non-contiguous entries, impossible indexes or terms).
    pub dropped_malformed: u64,
    /// Dropped: from an older term (a reply telling the sender our term may be sent).
    pub dropped_stale_term: u64,
    /// Dropped: a response that no longer matches what we are waiting for.
    pub dropped_stale_response: u64,
    /// Dropped: about a peer we are not tracking (not a member, or we are not leader).
    pub dropped_unknown_peer: u64,
    /// Dropped: a vote request while we hear from a live leader (CheckQuorum lease).
    pub dropped_in_lease: u64,
    /// Dropped: a message that is not meant for our current role.
    pub dropped_wrong_role: u64,
    /// Dropped: an AppendEntries that would truncate committed entries (should never happen).
    pub refused_committed_truncation: u64,
    /// Events dropped because the driver did not take them (see `MAX_PENDING_EVENTS`).
    pub dropped_events: u64,
    /// Vote and pre-vote requests granted (this node's own vote for itself not counted).
    pub votes_granted: u64,
    /// Vote and pre-vote requests refused because this node is not a voter of its own
    /// configuration and the candidate's log is not ahead of its own (see
    /// `docs/raft.md`, "Learners").
    pub refused_votes_as_learner: u64,
    /// Campaigns not started because this node is not a voter of its own configuration.
    pub refused_campaigns_as_learner: u64,
}
