//! Lost state: how a node finds out that its durable state was wiped (or restored from
//! an older copy) after it took part in the group, and the events the driver reports.
//!
//! A node that lost state must not vote: its old votes and acknowledgements were
//! counted in quorums it no longer remembers, so a vote now could elect a second leader
//! in a term or a leader missing committed entries; an acknowledgement now could
//! complete a quorum for a deposed leader. Such a node takes what a leader sends but
//! neither campaigns, grants votes nor acknowledges entries (so it learns no new
//! commit), and says so in its durable state, until an operator removes it and adds it
//! back with an empty data dir. The rules, and why they are safe, are in `docs/raft.md` ("Lost state").

use super::core::{Raft, Role};
use super::message::{Message, MessageBody};
use super::storage::BOOTSTRAP_INDEX;
use super::types::{Index, NodeId, Term, NO_NODE};

/// Events the core keeps for the driver, at most this many between two
/// [`super::Node::take_events`] calls; beyond it the oldest are dropped. They are rare
/// (a loss is reported once per node, a regression once per follower and term), so 64
/// only matters if a driver stops draining them.
pub const MAX_PENDING_EVENTS: usize = 64;

/// How a node learned that it lost state it had acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostState {
    /// A founder that started from an empty data dir heard from a group that had
    /// elected a leader without its vote: since the first election needs every
    /// founder's vote, it must have voted before and forgotten it.
    FormedWithoutUs { from: NodeId, term: Term },
    /// The leader's heartbeat carried a commit index, which it caps at what this node
    /// acknowledged, beyond this node's last entry.
    CommitBeyondLog {
        from: NodeId,
        commit: Index,
        last: Index,
    },
    /// Asked for a vote, or sent a snapshot naming this node a voter, while it holds no
    /// configuration at all: only a voter whose log was lost is in that position
    /// (a new node is a learner until it has the leader's snapshot).
    MemberWithoutLog { from: NodeId },
}

/// Something the driver should tell the operator; the core itself does no logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// This node lost state (reported once; the state is persisted).
    LostState(LostState),
    /// Leader: a follower rejected an append at the index it had acknowledged this
    /// term, so its log went backwards. The leader forgets its match and replays the
    /// log (or a snapshot) to it instead of probing the same index forever.
    FollowerRegressed {
        peer: NodeId,
        matched: Index,
        hint: Index,
    },
}

impl Raft {
    /// Records that this node lost state. Persisted with the next `Ready`.
    pub(crate) fn mark_lost(&mut self, why: LostState) {
        if self.lost_data {
            return;
        }
        self.lost_data = true;
        self.fresh_founder = false;
        self.push_event(Event::LostState(why));
        if matches!(self.role, Role::Candidate | Role::PreCandidate) {
            self.become_follower(self.term, self.leader);
        }
    }

    pub(crate) fn push_event(&mut self, ev: Event) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.remove(0);
            self.stats.dropped_events += 1;
        }
        self.events.push(ev);
    }

    /// Detections that only need the message itself, before the term rules (which may
    /// replace the term and vote a fresh founder's proof rests on).
    pub(crate) fn screen_for_lost_state(&mut self, m: &Message) {
        if self.lost_data {
            return;
        }
        if matches!(m.body, MessageBody::Vote { .. }) && self.conf.voters.is_empty() {
            self.mark_lost(LostState::MemberWithoutLog { from: m.from });
            return;
        }
        if !self.fresh_founder || m.term < self.term {
            return;
        }
        let Some(evidence) = formed_group_evidence(&m.body) else {
            return;
        };
        // Entry 2 of term T was written by the leader of T with a log still at the
        // bootstrap snapshot: the group's first leader, elected with every founder's
        // vote. If we voted in T for another node, that vote is what elected it: we did
        // take part. A vote for ourselves proves nothing: we are still fresh, so we did
        // not win T in the life we remember, and the first leader of T had our vote, so
        // that leader was a forgotten life of ours or got a vote we no longer remember.
        let voted_first_leader =
            self.vote != NO_NODE && self.vote != self.id && evidence.entry2_term == Some(self.term);
        let sender_is_our_leader =
            self.vote == m.from && m.term == self.term && evidence.from_leader;
        let sender_wrote_our_term = self.vote == m.from && evidence.last_term == Some(self.term);
        if voted_first_leader || sender_is_our_leader || sender_wrote_our_term {
            self.fresh_founder = false;
            return;
        }
        let why = LostState::FormedWithoutUs {
            from: m.from,
            term: m.term,
        };
        self.mark_lost(why);
    }

    /// A leader's message reached a fresh founder after the term rules: it is the
    /// leader we voted for in this term, or the group formed without our vote.
    pub(crate) fn check_founder_leader(&mut self, from: NodeId) {
        if !self.fresh_founder || self.lost_data {
            return;
        }
        if self.vote == from {
            self.fresh_founder = false;
        } else {
            let why = LostState::FormedWithoutUs {
                from,
                term: self.term,
            };
            self.mark_lost(why);
        }
    }

    /// Whether this node may grant a vote (or pre-vote) to a candidate whose log ends
    /// at `last_index`.
    pub(crate) fn may_grant(&self, last_index: Index) -> bool {
        if self.lost_data || self.conf.voters.is_empty() {
            return false;
        }
        !self.fresh_founder || last_index == BOOTSTRAP_INDEX
    }

    /// Votes a candidate needs: a majority, except in the group's first election (our
    /// log still ends at the bootstrap snapshot), which needs every voter. That is what
    /// lets a founder with an empty data dir tell a new group from a formed one.
    pub(crate) fn votes_needed(&self) -> usize {
        if self.log.last_index() == BOOTSTRAP_INDEX {
            self.conf.voters.len()
        } else {
            self.conf.quorum()
        }
    }
}

/// What a message shows of a group that has elected a leader.
struct Evidence {
    from_leader: bool,
    /// Term of the group's entry at index 2, when the message shows it.
    entry2_term: Option<Term>,
    /// Term of the sender's last entry (vote requests).
    last_term: Option<Term>,
}

/// `Some` when the message proves the group has had a leader: a leader's own message,
/// or a candidate holding entries after the bootstrap snapshot.
fn formed_group_evidence(body: &MessageBody) -> Option<Evidence> {
    match body {
        MessageBody::Vote {
            last_index,
            last_term,
            ..
        } if *last_index > BOOTSTRAP_INDEX => Some(Evidence {
            from_leader: false,
            entry2_term: (*last_index == BOOTSTRAP_INDEX + 1).then_some(*last_term),
            last_term: Some(*last_term),
        }),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } => {
            let entry2_term = match *prev_index {
                i if i == BOOTSTRAP_INDEX + 1 => Some(*prev_term),
                BOOTSTRAP_INDEX => entries.first().map(|e| e.term),
                _ => None,
            };
            Some(Evidence {
                from_leader: true,
                entry2_term,
                last_term: None,
            })
        }
        MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => Some(Evidence {
            from_leader: true,
            entry2_term: None,
            last_term: None,
        }),
        _ => None,
    }
}
