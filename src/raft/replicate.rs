//! Leader-side replication: batched, pipelined AppendEntries, InstallSnapshot for followers
//! behind the compacted log, heartbeats, conflict backtracking, and the commit rule.

use super::core::{Raft, Role};
use super::lost::Event;
use super::message::MessageBody;
use super::progress::ProgressState;
use super::types::{Entry, EntryPayload, Index, NodeId, Term};

impl Raft {
    /// Appends a new entry of the current term to the leader's log.
    pub(crate) fn append_entry(&mut self, payload: EntryPayload) -> Index {
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.term,
            index,
            payload,
        });
        // The entry goes out to followers before it is on our disk: it counts toward the
        // commit quorum only once written (`on_durable`).
        if self.cfg.bugs.count_own_entries_before_durable() {
            if let Some(pr) = self.progress.get_mut(&self.id) {
                pr.maybe_update(index);
            }
        }
        index
    }

    /// Storage now holds the log through `(index, term)`. A leader's own match index
    /// follows its disk, never its memory (Raft thesis 10.2.1): an entry is committed
    /// once durable on a majority, which includes the leader only once it wrote it.
    pub(crate) fn on_durable(&mut self, index: Index, term: Term) {
        self.log.mark_durable(index, term);
        if self.role != Role::Leader {
            return;
        }
        let durable = self.log.durable_index().min(self.log.last_index());
        let Some(pr) = self.progress.get_mut(&self.id) else {
            return;
        };
        if pr.maybe_update(durable) && self.maybe_commit() {
            self.broadcast_append();
        }
    }

    pub(crate) fn peers(&self) -> Vec<NodeId> {
        self.progress
            .keys()
            .copied()
            .filter(|&p| p != self.id)
            .collect()
    }

    pub(crate) fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(peer, true);
        }
    }

    /// Sends what proposals appended since the last flush, batched per follower up to the
    /// entry/byte bounds and the in-flight window. Called when the driver takes a `Ready`.
    pub(crate) fn flush_appends(&mut self) {
        self.pending_flush = false;
        if self.role != Role::Leader {
            return;
        }
        for peer in self.peers() {
            while self.send_append(peer, false) {}
        }
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let commit = self.log.commit;
        let beats: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .filter(|(&p, _)| p != self.id)
            .map(|(&p, pr)| (p, pr.matched.min(commit)))
            .collect();
        for (peer, commit) in beats {
            self.send(peer, MessageBody::Heartbeat { commit });
        }
    }

    /// Sends the next AppendEntries (or a snapshot) to `to` unless its window is full.
    /// An empty AppendEntries goes out only if `allow_empty`. True if something was sent.
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let window = self.cfg.max_inflight_msgs;
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused(window) {
            return false;
        }
        let next = pr.next;
        let prev_index = next - 1;
        let (max_n, max_b) = (self.cfg.max_entries_per_msg, self.cfg.max_bytes_per_msg);
        let (Some(prev_term), Some(entries)) = (
            self.log.term(prev_index),
            self.log.entries_from(next, max_n, max_b),
        ) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = entries.last().map(|e| e.index);
        let commit = self.log.commit;
        let body = MessageBody::Append {
            prev_index,
            prev_term,
            commit,
            entries,
        };
        self.send(to, body);
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.on_sent(last);
        }
        true
    }

    /// See `Node::resend_snapshot`.
    #[cfg(feature = "testkit")]
    pub(crate) fn resend_snapshot(&mut self, to: NodeId) -> bool {
        if self.role != Role::Leader || to == self.id || !self.progress.contains_key(&to) {
            return false;
        }
        self.send_snapshot(to)
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let snapshot = self.log.snapshot().clone();
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(snapshot.meta.index);
        }
        self.send(to, MessageBody::Snapshot { snapshot });
        true
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        if self.role != Role::Leader {
            self.stats.dropped_wrong_role += 1;
            return;
        }
        if index > self.log.last_index() {
            self.stats.dropped_malformed += 1;
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            self.stats.dropped_unknown_peer += 1;
            return;
        };
        pr.recent_active = true;
        if !success {
            self.on_append_rejected(from, index, hint_index, hint_term);
            return;
        }
        if !on_append_success(pr, index) {
            self.stats.dropped_stale_response += 1;
            return;
        }
        self.after_ack(from);
    }

    /// After `from` acknowledged new entries: commit, refill its pipeline, finish a transfer.
    fn after_ack(&mut self, from: NodeId) {
        if self.maybe_commit() {
            self.broadcast_append();
        }
        while self.send_append(from, false) {}
        self.maybe_send_timeout_now(from);
    }

    pub(crate) fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|pr| pr.matched == self.log.last_index());
        if self.role == Role::Leader && self.transferee == to && caught_up {
            self.send(to, MessageBody::TimeoutNow);
        }
    }

    fn on_append_rejected(
        &mut self,
        from: NodeId,
        rejected: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let guess = self.next_after_rejection(rejected, hint_index, hint_term);
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if let Some(matched) = pr.regressed(rejected, guess) {
            let ev = Event::FollowerRegressed {
                peer: from,
                matched,
                hint: hint_index,
            };
            self.push_event(ev);
            self.send_append(from, true);
            return;
        }
        if pr.maybe_decrease(rejected, guess) {
            self.send_append(from, true);
        } else {
            self.stats.dropped_stale_response += 1;
        }
    }

    /// Fast backtracking: skip the follower's whole conflicting term in one step.
    fn next_after_rejection(&self, rejected: Index, hint_index: Index, hint_term: Term) -> Index {
        if hint_term > 0 {
            if let Some(j) = self.log.last_index_of_term(hint_term, rejected) {
                return j + 1;
            }
        }
        hint_index.max(1)
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId) {
        if self.role != Role::Leader {
            self.stats.dropped_wrong_role += 1;
            return;
        }
        let window = self.cfg.max_inflight_msgs;
        let Some(pr) = self.progress.get_mut(&from) else {
            self.stats.dropped_unknown_peer += 1;
            return;
        };
        pr.on_heartbeat_response(window);
        // A lagging follower may have lost appends; an empty one either gets an ack or a
        // rejection that sends the leader back to probing.
        let lagging = pr.matched < self.log.last_index();
        let probing = pr.state == ProgressState::Probe;
        self.send_append(from, probing || lagging);
        self.maybe_send_timeout_now(from);
    }

    /// Advances the commit index to what a majority of voters hold, but only to an entry
    /// of the current term: older entries commit indirectly (Raft paper, Figure 8).
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mut advanced = false;
        while self.role == Role::Leader {
            let q = self.quorum_index();
            let own_term = self.log.term(q) == Some(self.term);
            if q <= self.log.commit || !(own_term || self.cfg.bugs.commit_old_term_by_count()) {
                break;
            }
            self.commit_to(q);
            advanced = true;
        }
        advanced
    }

    /// The highest index held by a majority of voters.
    fn quorum_index(&self) -> Index {
        let mut matched: Vec<Index> = self
            .conf
            .voters
            .iter()
            .map(|v| self.progress.get(v).map_or(0, |p| p.matched))
            .collect();
        if matched.is_empty() {
            return 0;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched[self.conf.quorum() - 1]
    }
}

/// Applies an ack to `pr`; false if it carried nothing new.
fn on_append_success(pr: &mut super::progress::Progress, index: Index) -> bool {
    let updated = pr.maybe_update(index);
    match pr.state {
        ProgressState::Probe if index >= pr.matched => {
            pr.become_replicate();
            true
        }
        ProgressState::Snapshot { pending } if pr.matched >= pending => {
            pr.become_replicate();
            true
        }
        _ => updated,
    }
}
