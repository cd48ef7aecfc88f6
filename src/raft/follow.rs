//! Follower-side handling of AppendEntries, heartbeats and InstallSnapshot.

use super::core::{Raft, Role};
use super::lost::LostState;
use super::message::MessageBody;
use super::storage::BOOTSTRAP_INDEX;
use super::types::{Entry, EntryPayload, Index, NodeId, Snapshot, Term};

impl Raft {
    /// Accepts `from` as this term's leader; false if we are leader ourselves.
    fn accept_leader(&mut self, from: NodeId) -> bool {
        match self.role {
            Role::Leader => {
                self.stats.dropped_wrong_role += 1;
                return false;
            }
            Role::Follower => self.leader = from,
            Role::PreCandidate | Role::Candidate => self.become_follower(self.term, from),
        }
        self.election_elapsed = 0;
        true
    }

    fn respond_append(&mut self, to: NodeId, index: Index) {
        // A node that lost state acknowledges nothing: its acknowledgements were
        // counted in quorums it no longer remembers, and a new one could complete a
        // quorum for a leader the group has deposed (docs/raft.md, "Lost state").
        // Nor does a founder from an empty data dir that has not yet seen entry 2 (see
        // `screen_for_lost_state`); its log ends at the bootstrap snapshot until then.
        if self.lost_data || (self.fresh_founder && index > BOOTSTRAP_INDEX) {
            return;
        }
        let body = MessageBody::AppendResponse {
            success: true,
            index,
            hint_index: 0,
            hint_term: 0,
        };
        self.send(to, body);
    }

    fn reject_append(&mut self, to: NodeId, prev_index: Index) {
        let (hint_index, hint_term) = if prev_index > self.log.last_index() {
            (self.log.last_index() + 1, 0)
        } else {
            let term = self.log.term(prev_index).unwrap_or(0);
            let floor = self.log.commit + 1;
            (self.log.first_index_of_term_at(prev_index, floor), term)
        };
        let body = MessageBody::AppendResponse {
            success: false,
            index: prev_index,
            hint_index,
            hint_term,
        };
        self.send(to, body);
    }

    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: Vec<Entry>,
    ) {
        if !self.accept_leader(from) {
            return;
        }
        if prev_index < self.log.commit {
            self.respond_append(from, self.log.commit);
            return;
        }
        let prev_ok = self.log.matches(prev_index, prev_term)
            || (self.cfg.bugs.skip_prev_term_check() && prev_index <= self.log.last_index());
        if !prev_ok {
            self.reject_append(from, prev_index);
            return;
        }
        if let Some(conflict) = self.log.find_conflict(&entries) {
            if conflict <= self.log.commit {
                self.stats.refused_committed_truncation += 1;
                return;
            }
            let offset = (conflict - prev_index - 1) as usize;
            let new = &entries[offset..];
            let touches_conf = conflict <= self.pending_conf
                || new
                    .iter()
                    .any(|e| matches!(e.payload, EntryPayload::ConfChange(_)));
            self.log.truncate_and_append(new);
            if touches_conf {
                self.refresh_conf();
            }
        }
        let last_new = prev_index + entries.len() as Index;
        // Only what this message verified may commit: entries after it may be a stale
        // suffix from an older leader that the next AppendEntries would truncate.
        let verified = if self.cfg.bugs.commit_past_verified() {
            self.log.last_index()
        } else {
            last_new
        };
        self.commit_to(commit.min(verified));
        self.respond_append(from, last_new);
    }

    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: Index) {
        if !self.accept_leader(from) {
            return;
        }
        let last = self.log.last_index();
        if commit > last && !self.lost_data {
            self.mark_lost(LostState::CommitBeyondLog { from, commit, last });
        }
        self.commit_to(commit.min(last));
        self.send(from, MessageBody::HeartbeatResponse);
    }

    pub(crate) fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        if !self.accept_leader(from) {
            return;
        }
        if self.conf.voters.is_empty() && snapshot.meta.conf.is_voter(self.id) {
            self.mark_lost(LostState::MemberWithoutLog { from });
        }
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index <= self.log.commit {
            self.respond_append(from, self.log.commit);
            return;
        }
        // A log holding the snapshot's last entry keeps the entries after it: they match
        // the leader's and may already be acknowledged (counted in its commit quorum).
        if self.log.matches(index, term) && !self.cfg.bugs.discard_log_on_matching_snapshot() {
            self.commit_to(index);
            self.respond_append(from, index);
            return;
        }
        self.log.install(snapshot.clone());
        self.refresh_conf();
        self.pending_snapshot = Some(snapshot);
        self.respond_append(from, index);
    }
}
