//! Safety invariants checked after every simulated event: election safety, vote
//! counting, leader append-only, log matching, leader completeness, state-machine
//! safety, monotonicity, and the leader's bookkeeping of each follower.

use std::collections::{BTreeMap, HashMap};

use crate::raft::rng::hash_bytes;
use crate::raft::{
    Entry, EntryPayload, HardState, Index, MemStorage, Node, NodeId, PersistBatch, Role, Term,
};

/// What the checker remembers about one node incarnation.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub term: Term,
    pub commit: Index,
    /// While leader: (term, last index, last term) at the previous observation.
    pub leader_mark: Option<(Term, Index, Term)>,
}

/// Global knowledge accumulated over a run.
#[derive(Debug, Default)]
pub struct Checker {
    durable_vote_check: bool,
    leaders: BTreeMap<Term, NodeId>,
    /// `committed[i]` = the entry committed at index `i`.
    committed: Vec<Option<Committed>>,
    /// `chain[i]` = state-machine digest after applying index `i` (chain[0] = 0).
    chain: Vec<u64>,
    /// (index, term) -> (payload hash, term of the previous entry).
    entries: HashMap<(Index, Term), (u64, Option<Term>)>,
    /// (term, voter) -> every candidate the voter sent a vote grant to in that term (one,
    /// unless a wiped node or a planted bug voted again).
    votes: HashMap<(Term, NodeId), Vec<NodeId>>,
    /// node -> the highest term any node had reached when its storage was last replaced:
    /// what a leader of that term or an earlier one learned from it may no longer hold.
    wiped_through: BTreeMap<NodeId, Term>,
}

pub type Check = Result<(), String>;

/// An entry known committed, and the term in which that was first seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Committed {
    term: Term,
    hash: u64,
    /// Term of the node that first reported it committed: an upper bound on the term in
    /// which it was committed (the committing leader reports in the same event).
    seen_in: Term,
}

pub fn payload_hash(e: &Entry) -> u64 {
    match &e.payload {
        EntryPayload::Empty => 1,
        EntryPayload::Normal(d) => hash_bytes(2, d),
        EntryPayload::ConfChange(cc) => hash_bytes(3, &[cc.kind as u8]) ^ cc.node,
        EntryPayload::Formed(votes) => votes.iter().fold(5, |h, v| {
            let mut b = [0u8; 24];
            b[..8].copy_from_slice(&h.to_le_bytes());
            b[8..16].copy_from_slice(&v.node.to_le_bytes());
            b[16..].copy_from_slice(&v.life.to_le_bytes());
            hash_bytes(5, &b)
        }),
    }
}

/// The simulated state machine's digest after applying `e` on top of `chain`.
pub fn chain_step(chain: u64, e: &Entry) -> u64 {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&chain.to_le_bytes());
    b[8..16].copy_from_slice(&e.index.to_le_bytes());
    b[16..24].copy_from_slice(&e.term.to_le_bytes());
    b[24..].copy_from_slice(&payload_hash(e).to_le_bytes());
    hash_bytes(4, &b)
}

impl Checker {
    pub fn new(durable_vote_check: bool) -> Checker {
        Checker {
            durable_vote_check,
            chain: vec![0],
            committed: vec![None],
            ..Default::default()
        }
    }

    /// Highest index known committed.
    pub fn committed_len(&self) -> Index {
        self.committed.len() as Index - 1
    }

    pub fn committed_term(&self, index: Index) -> Option<Term> {
        let c = self.committed.get(index as usize).copied().flatten();
        c.map(|c| c.term)
    }

    /// Called after every event that touched `node`.
    pub fn observe(&mut self, id: NodeId, node: &Node, obs: &mut Observed) -> Check {
        let term = node.term();
        if term < obs.term {
            return Err(format!(
                "node {id}: term went back from {} to {term}",
                obs.term
            ));
        }
        obs.term = term;
        self.observe_commit(id, node, obs)?;
        if node.role() == Role::Leader {
            self.observe_leader(id, node, obs)?;
        } else {
            obs.leader_mark = None;
        }
        Ok(())
    }

    fn observe_commit(&mut self, id: NodeId, node: &Node, obs: &mut Observed) -> Check {
        let commit = node.commit_index();
        if commit > node.last_index() {
            return Err(format!(
                "node {id}: commit {commit} beyond its last entry {}",
                node.last_index()
            ));
        }
        if commit < obs.commit {
            return Err(format!(
                "node {id}: commit went back from {} to {commit}",
                obs.commit
            ));
        }
        for i in obs.commit + 1..=commit {
            if let Some(e) = node.entry(i) {
                let c = Committed {
                    term: e.term,
                    hash: payload_hash(e),
                    seen_in: node.term(),
                };
                self.record_committed(id, i, c)?;
            }
        }
        obs.commit = commit;
        Ok(())
    }

    fn record_committed(&mut self, id: NodeId, index: Index, c: Committed) -> Check {
        let i = index as usize;
        if self.committed.len() <= i {
            self.committed.resize(i + 1, None);
        }
        match self.committed[i] {
            Some(prev) if (prev.term, prev.hash) != (c.term, c.hash) => Err(format!(
                "state machine safety: node {id} committed (index {index}, term {}) but (term {}) was committed there before",
                c.term, prev.term
            )),
            Some(_) => Ok(()),
            None => {
                self.committed[i] = Some(c);
                Ok(())
            }
        }
    }

    fn observe_leader(&mut self, id: NodeId, node: &Node, obs: &mut Observed) -> Check {
        let term = node.term();
        let holder = match self.leaders.get(&term) {
            Some(&holder) => holder,
            None => {
                self.check_votes(id, node)?;
                self.leaders.insert(term, id);
                id
            }
        };
        if holder != id {
            return Err(format!(
                "election safety: nodes {holder} and {id} are both leader in term {term}"
            ));
        }
        let last = node.status().last_index;
        match obs.leader_mark {
            Some((t, mark, mark_term)) if t == term => {
                if mark >= node.snapshot_index() && node.term_at(mark) != Some(mark_term) {
                    return Err(format!(
                        "leader append-only: leader {id} of term {term} changed its entry {mark}"
                    ));
                }
            }
            _ => self.check_leader_completeness(id, node)?,
        }
        obs.leader_mark = Some((term, last, node.term_at(last).unwrap_or(0)));
        Ok(())
    }

    /// A new leader was sent vote grants of its term by a quorum of its configuration's
    /// voters (its own vote counts: its requests left only once it was written). Every
    /// grant it counted was sent, so every one is on record here.
    fn check_votes(&self, id: NodeId, node: &Node) -> Check {
        let (term, conf) = (node.term(), node.conf());
        let voted_for_us = |v: &NodeId| {
            *v == id
                || self
                    .votes
                    .get(&(term, *v))
                    .is_some_and(|cands| cands.contains(&id))
        };
        let votes = conf.voters.iter().filter(|v| voted_for_us(v)).count();
        if votes < conf.quorum() {
            return Err(format!(
                "vote counting: node {id} became leader of term {term} with grants from {votes} of voters {:?}",
                conf.voters
            ));
        }
        Ok(())
    }

    /// Node `from` sends a grant of its vote in `term` to `to`, its durable state being
    /// `durable`: that state must already keep it from voting for anyone else in `term`
    /// (the vote is written, or a later term is). Part of the durable-vote check.
    pub fn note_grant(
        &mut self,
        from: NodeId,
        to: NodeId,
        term: Term,
        durable: HardState,
    ) -> Check {
        let kept = durable.term > term || (durable.term == term && durable.vote == to);
        if !kept && self.durable_vote_check {
            return Err(format!(
                "vote durability: node {from} sent its term-{term} vote to {to} with durable term {} and vote {}",
                durable.term, durable.vote
            ));
        }
        let cands = self.votes.entry((term, from)).or_default();
        if !cands.contains(&to) {
            cands.push(to);
        }
        Ok(())
    }

    /// Node `id`'s storage was replaced (wiped) while the highest term anywhere was `term`.
    pub fn note_wipe(&mut self, id: NodeId, term: Term) {
        let t = self.wiped_through.entry(id).or_insert(0);
        *t = (*t).max(term);
    }

    /// The leader's bookkeeping against a node in its term, checked after every event
    /// that touched either of them. Followers acknowledge only what is durable, so this
    /// holds across crashes; a node whose storage was replaced is skipped for every term
    /// reached before that.
    ///
    /// - the leader's match index for the node is within the node's log, and the node's
    ///   entry there carries the leader's term for that index (if both still hold it);
    /// - the node's commit index names an entry the leader holds, with the same term:
    ///   whatever it committed, it learned from this leader or one before it, and the
    ///   leader holds every committed entry.
    pub fn check_pair(&self, lid: NodeId, leader: &Node, fid: NodeId, f: &Node) -> Check {
        let term = leader.term();
        if lid == fid || f.term() != term {
            return Ok(());
        }
        if self.wiped_through.get(&fid).is_some_and(|&t| t >= term) {
            return Ok(());
        }
        let commit = f.commit_index();
        if commit >= leader.snapshot_index() && leader.term_at(commit) != f.term_at(commit) {
            return Err(format!(
                "follower commit: node {fid} committed index {commit} (term {:?}) that leader {lid} of term {term} holds as {:?}",
                f.term_at(commit),
                leader.term_at(commit)
            ));
        }
        let Some(pr) = leader.progress(fid) else {
            return Ok(());
        };
        let m = pr.matched;
        if m > f.last_index() {
            return Err(format!(
                "leader bookkeeping: leader {lid} of term {term} has match {m} for node {fid}, whose log ends at {}",
                f.last_index()
            ));
        }
        let floor = leader.snapshot_index().max(f.snapshot_index());
        if m >= floor && leader.term_at(m) != f.term_at(m) {
            return Err(format!(
                "leader bookkeeping: leader {lid} of term {term} has match {m} for node {fid}, whose entry there has term {:?}, the leader's {:?}",
                f.term_at(m),
                leader.term_at(m)
            ));
        }
        Ok(())
    }

    /// Leader completeness: a leader holds every entry committed in an earlier term. (A
    /// leader of an older term may still be elected after a newer term committed more,
    /// e.g. under a configuration that a newer one replaced; it cannot commit anything.)
    fn check_leader_completeness(&self, id: NodeId, node: &Node) -> Check {
        let (floor, term) = (node.snapshot_index(), node.term());
        for (i, c) in self.committed.iter().enumerate().skip(floor as usize + 1) {
            let Some(c) = *c else { continue };
            if c.seen_in >= term {
                continue;
            }
            let held = node.entry(i as Index).map(|e| (e.term, payload_hash(e)));
            if held != Some((c.term, c.hash)) {
                return Err(format!(
                    "leader completeness: leader {id} of term {term} lacks entry (index {i}, term {}) committed by term {}, has {held:?}",
                    c.term, c.seen_in
                ));
            }
        }
        Ok(())
    }

    /// Checks a batch about to be persisted against the node's durable state.
    pub fn check_persist(
        &mut self,
        id: NodeId,
        storage: &MemStorage,
        batch: &PersistBatch,
    ) -> Check {
        if let Some(hs) = batch.hard_state {
            check_hard_state(id, storage.hard_state(), hs, self.durable_vote_check)?;
        }
        let Some(first) = batch.entries.first() else {
            return Ok(());
        };
        let prev = first.index - 1;
        let mut prev_term = match &batch.snapshot {
            Some(s) if s.meta.index == prev => Some(s.meta.term),
            Some(_) => None,
            None => storage.term(prev),
        };
        for e in &batch.entries {
            self.check_log_matching(id, e, prev_term)?;
            prev_term = Some(e.term);
        }
        Ok(())
    }

    /// Log matching, inductively: an (index, term) pair always names the same payload
    /// and follows the same previous term.
    fn check_log_matching(&mut self, id: NodeId, e: &Entry, prev_term: Option<Term>) -> Check {
        let hash = payload_hash(e);
        let known = self
            .entries
            .entry((e.index, e.term))
            .or_insert((hash, prev_term));
        if known.0 != hash {
            return Err(format!(
                "log matching: node {id} stores a different payload at (index {}, term {})",
                e.index, e.term
            ));
        }
        match (known.1, prev_term) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "log matching: node {id} has (index {}, term {}) after term {b}, elsewhere after term {a}",
                e.index, e.term
            )),
            (None, Some(b)) => {
                known.1 = Some(b);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A node applied entry `index`, reaching digest `chain`.
    pub fn check_apply(&mut self, id: NodeId, index: Index, chain: u64) -> Check {
        let i = index as usize;
        match self.chain.get(i) {
            Some(&c) if c != chain => Err(format!(
                "state machine safety: node {id} applied a different entry at {index}"
            )),
            Some(_) => Ok(()),
            None if i == self.chain.len() => {
                self.chain.push(chain);
                Ok(())
            }
            None => Err(format!(
                "node {id} applied {index} beyond the known sequence {}",
                self.chain.len() - 1
            )),
        }
    }
}

fn check_hard_state(id: NodeId, old: HardState, new: HardState, vote_check: bool) -> Check {
    if new.term < old.term {
        return Err(format!(
            "node {id}: durable term went back from {} to {}",
            old.term, new.term
        ));
    }
    if new.commit < old.commit {
        return Err(format!(
            "node {id}: durable commit went back from {} to {}",
            old.commit, new.commit
        ));
    }
    if vote_check && new.term == old.term && old.vote != 0 && new.vote != old.vote {
        return Err(format!(
            "node {id}: durable vote in term {} changed from {} to {}",
            new.term, old.vote, new.vote
        ));
    }
    Ok(())
}
