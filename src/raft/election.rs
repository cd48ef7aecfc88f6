//! Elections: PreVote and Vote rounds, vote granting, tallying, and becoming leader.

use super::core::{Raft, Role};
use super::message::{MessageBody, VoteKind};
use super::progress::Progress;
use super::storage::BOOTSTRAP_INDEX;
use super::types::{EntryPayload, FounderVote, Index, NodeId, Term, NO_NODE};

impl Raft {
    /// Starts a PreVote or Vote round. `transfer` marks an election asked for by the leader.
    pub(crate) fn campaign(&mut self, kind: VoteKind, transfer: bool) {
        // Every caller checks first; this keeps a learner from ever standing, whatever
        // path a later change adds.
        if !self.promotable() {
            self.stats.refused_campaigns_as_learner += 1;
            if self.role != Role::Follower {
                self.become_follower(self.term, NO_NODE);
            }
            return;
        }
        let term = match kind {
            VoteKind::PreVote => {
                self.role = Role::PreCandidate;
                self.term + 1
            }
            VoteKind::Vote => {
                self.term += 1;
                self.vote = self.id;
                self.role = Role::Candidate;
                self.term
            }
        };
        self.leader = NO_NODE;
        self.transferee = NO_NODE;
        self.campaign_transfer = transfer;
        self.progress.clear();
        self.votes.clear();
        self.founder_votes.clear();
        self.reset_election_timer();
        self.votes.insert(self.id, true);
        if self.tally_decides(kind) {
            return;
        }
        self.send_vote_requests(kind, term, transfer);
    }

    /// Retries the round's requests to voters that have not answered (requests or
    /// answers may have been lost); granting is idempotent, so duplicates are harmless.
    pub(crate) fn resend_vote_requests(&mut self) {
        let (kind, term) = match self.role {
            Role::PreCandidate => (VoteKind::PreVote, self.term + 1),
            Role::Candidate => (VoteKind::Vote, self.term),
            _ => return,
        };
        self.send_vote_requests(kind, term, self.campaign_transfer);
    }

    fn send_vote_requests(&mut self, kind: VoteKind, term: Term, transfer: bool) {
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.id && !self.votes.contains_key(v))
            .collect();
        for v in voters {
            let body = MessageBody::Vote {
                kind,
                last_index,
                last_term,
                transfer,
                life: self.recorded_life(v),
            };
            self.send_with_term(v, term, body);
        }
    }

    /// Acts on the votes so far; true if the round is decided.
    fn tally_decides(&mut self, kind: VoteKind) -> bool {
        let voters = &self.conf.voters;
        let count = |want: bool| {
            self.votes
                .iter()
                .filter(|(id, &g)| g == want && voters.contains(id))
                .count()
        };
        let (granted, rejected) = (count(true), count(false));
        let (needed, total) = (self.votes_needed(), voters.len());
        if granted >= needed {
            match kind {
                VoteKind::PreVote => self.campaign(VoteKind::Vote, false),
                VoteKind::Vote => self.become_leader(),
            }
            return true;
        }
        if rejected > total - needed {
            self.become_follower(self.term, NO_NODE);
            return true;
        }
        false
    }

    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        msg_term: Term,
        kind: VoteKind,
        last_index: Index,
        last_term: Term,
    ) {
        let bugs = self.cfg.bugs;
        let can_vote = match kind {
            VoteKind::Vote => {
                self.vote == from
                    || (self.vote == NO_NODE && self.leader == NO_NODE)
                    || (bugs.vote_twice_in_term() && self.role == Role::Follower)
            }
            VoteKind::PreVote => msg_term > self.term,
        };
        let up_to_date =
            self.log.is_up_to_date(last_index, last_term) || bugs.vote_for_shorter_log();
        if !self.learner_may_vote(last_index, last_term) {
            self.stats.refused_votes_as_learner += 1;
            let body = MessageBody::VoteResponse {
                kind,
                granted: false,
                life: 0,
            };
            self.send(from, body);
            return;
        }
        if !(can_vote && up_to_date && self.may_grant(last_index)) {
            self.send(
                from,
                MessageBody::VoteResponse {
                    kind,
                    granted: false,
                    life: 0,
                },
            );
            return;
        }
        let mut life = 0;
        if kind == VoteKind::Vote {
            self.vote = from;
            self.election_elapsed = 0;
            // A fresh founder grants only first-election votes (`may_grant`): it names
            // the life of its data dir, persisted with the vote, for entry 2.
            if self.fresh_founder {
                if self.life == 0 {
                    self.life = self.draw_life();
                }
                life = self.life;
            }
        }
        self.stats.votes_granted += 1;
        let body = MessageBody::VoteResponse {
            kind,
            granted: true,
            life,
        };
        self.send_with_term(from, msg_term, body);
    }

    /// The life entry 2 records for founder `node`, or 0 if our log does not hold it.
    fn recorded_life(&self, node: NodeId) -> u64 {
        let entry2 = self.log.entry(BOOTSTRAP_INDEX + 1);
        entry2
            .and_then(|e| e.payload.founder_life(node))
            .unwrap_or(0)
    }

    /// A nonzero life from `cfg.life_seed`, distinct per node id.
    fn draw_life(&self) -> u64 {
        let life = super::rng::SplitMix64::for_stream(self.cfg.life_seed, self.id).next_u64();
        life.max(1)
    }

    /// A node that is not a voter of its own configuration (a learner, or a member
    /// demoted by an entry it already holds) answers a vote request only when the
    /// candidate's log is strictly ahead of its own: only such a candidate can hold a
    /// configuration naming this node a voter that this node has not received yet (its
    /// promotion), and in that case the vote is needed for the group to elect anyone.
    /// A candidate with the same last entry holds the same configuration, which makes
    /// this node a learner, so its request is stray and refused. See `docs/raft.md`,
    /// "Learners".
    fn learner_may_vote(&self, last_index: Index, last_term: Term) -> bool {
        if self.conf.is_voter(self.id) {
            return true;
        }
        let ours = (self.log.last_term(), self.log.last_index());
        (last_term, last_index) > ours
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        msg_term: Term,
        kind: VoteKind,
        granted: bool,
        life: u64,
    ) {
        let expected = match (self.role, kind) {
            (Role::PreCandidate, VoteKind::PreVote) if granted => self.term + 1,
            (Role::PreCandidate, VoteKind::PreVote) | (Role::Candidate, VoteKind::Vote) => {
                self.term
            }
            _ => {
                self.stats.dropped_wrong_role += 1;
                return;
            }
        };
        let stale_grant_counted = self.cfg.bugs.count_stale_vote_grant() && msg_term < expected;
        if msg_term != expected && !stale_grant_counted {
            self.stats.dropped_stale_response += 1;
            return;
        }
        if !self.conf.is_voter(from) {
            self.stats.dropped_unknown_peer += 1;
            return;
        }
        let counted = granted || self.cfg.bugs.count_denied_vote();
        let first_election = self.log.last_index() == BOOTSTRAP_INDEX;
        if granted && kind == VoteKind::Vote && first_election && !self.votes.contains_key(&from) {
            self.founder_votes.push(FounderVote { node: from, life });
        }
        self.votes.entry(from).or_insert(counted);
        self.tally_decides(kind);
    }

    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || !self.promotable() || from != self.leader {
            self.stats.dropped_wrong_role += 1;
            return;
        }
        self.campaign(VoteKind::Vote, true);
    }

    pub(crate) fn become_leader(&mut self) {
        // Elected: either by the whole group (its first election) or by a majority of
        // members that never voted for us before; our state is sound either way.
        self.fresh_founder = false;
        self.role = Role::Leader;
        self.leader = self.id;
        self.transferee = NO_NODE;
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next = self.log.last_index() + 1;
        let members: Vec<NodeId> = self.conf.members().collect();
        self.progress = members
            .into_iter()
            .map(|m| (m, Progress::new(next)))
            .collect();
        // Our own match is what our disk holds; entries still being written count once
        // their write completes.
        let durable = self.log.durable_index().min(self.log.last_index());
        if let Some(pr) = self.progress.get_mut(&self.id) {
            pr.maybe_update(durable);
        }
        self.term_start = next;
        // The group's first leader writes, as entry 2, which life of each founder
        // elected it; every later leader opens its term with an empty entry.
        let mut votes = std::mem::take(&mut self.founder_votes);
        votes.sort_by_key(|v| v.node);
        let payload = if next == BOOTSTRAP_INDEX + 1 {
            EntryPayload::Formed(votes)
        } else {
            EntryPayload::Empty
        };
        self.append_entry(payload);
        self.broadcast_append();
        self.maybe_commit();
    }
}
