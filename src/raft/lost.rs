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
use super::types::{EntryPayload, Index, NodeId, Term};

/// Events the core keeps for the driver, at most this many between two
/// [`super::Node::take_events`] calls; beyond it the oldest are dropped. They are rare
/// (a loss is reported once per node, a regression once per follower and term), so 64
/// only matters if a driver stops draining them.
pub const MAX_PENDING_EVENTS: usize = 64;

/// How a node learned that it lost state it had acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostState {
    /// A founder that started from an empty data dir met a group whose first leader
    /// was not elected by a vote from this data dir (entry 2 records another life, or
    /// nothing left could show which): since the first election needs every founder's
    /// vote, it voted in a life it has forgotten.
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

    /// Detections that only need the message itself, before the term rules act on it.
    pub(crate) fn screen_for_lost_state(&mut self, m: &Message) {
        if self.lost_data {
            return;
        }
        if matches!(m.body, MessageBody::Vote { .. }) && self.conf.voters.is_empty() {
            self.mark_lost(LostState::MemberWithoutLog { from: m.from });
            return;
        }
        if !self.fresh_founder {
            return;
        }
        // Entry 2 names the life of every founder's data dir that elected the first
        // leader: ours, and we took part and lost nothing; another, and the group
        // formed on a vote we no longer remember. Entry 2 is the same in every log that
        // holds it (only a first leader writes it), so a message of any term may show
        // it: a leader's append carries it, a candidate holding it names our life.
        if let Some(recorded) = recorded_life(&m.body, self.id) {
            if self.life != 0 && recorded == Some(self.life) {
                self.fresh_founder = false;
            } else {
                self.mark_lost(LostState::FormedWithoutUs {
                    from: m.from,
                    term: m.term,
                });
            }
            return;
        }
        if m.term < self.term || !formed_group_evidence(&m.body) {
            return;
        }
        // The group formed. With no first-election vote granted from this data dir, the
        // first leader had our vote from a forgotten life: lost. Otherwise a leader's
        // append or heartbeat only makes us wait, neither voting for a candidate with
        // entries nor acknowledging any, until the leader sends entry 2, which it does
        // as soon as our rejections show our log ends at the bootstrap snapshot. But a
        // snapshot past entry 2, or a candidate with entries that cannot name our life
        // (its log no longer holds entry 2, or entry 2 does not list us), leaves nothing
        // that could prove we took part: lost.
        let waits = self.life != 0
            && matches!(
                m.body,
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
            );
        if !waits {
            self.mark_lost(LostState::FormedWithoutUs {
                from: m.from,
                term: m.term,
            });
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

/// What a message shows of entry 2's record for founder `id`: `Some(life)` as a
/// leader's append right after the bootstrap snapshot carries the record or a candidate
/// holding it names our life, `Some(None)` when the record does not list us, `None`
/// when the message does not show the record.
fn recorded_life(body: &MessageBody, id: NodeId) -> Option<Option<u64>> {
    match body {
        MessageBody::Vote { life, .. } if *life != 0 => Some(Some(*life)),
        MessageBody::Append {
            prev_index: BOOTSTRAP_INDEX,
            entries,
            ..
        } => {
            let payload = &entries.first()?.payload;
            matches!(payload, EntryPayload::Formed(_)).then(|| payload.founder_life(id))
        }
        _ => None,
    }
}

/// Whether the message proves the group has had a leader: a leader's own message, or a
/// candidate holding entries after the bootstrap snapshot.
fn formed_group_evidence(body: &MessageBody) -> bool {
    match body {
        MessageBody::Vote { last_index, .. } => *last_index > BOOTSTRAP_INDEX,
        MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => true,
        MessageBody::Snapshot { snapshot } => snapshot.meta.index > BOOTSTRAP_INDEX,
        _ => false,
    }
}
