//! Faults that make stale state common, and the bookkeeping checks that look for it:
//! responses held back and delivered after later elections (stale and duplicated
//! answers across term changes), leaders sending their snapshot to followers that
//! still hold the snapshot's last entry and more after it, and the leader-follower
//! pair checks run after every event.

use super::{Check, Event, World, TICK};
use crate::raft::{Message, MessageBody, NodeId, Role, Term};

/// Per-seed chance (permille, drawn from `0..this`) that a response (append, heartbeat
/// or vote answer) is also held back and delivered only after one to three later
/// leader elections: stale and duplicated answers across term changes.
pub(super) const MAX_HOLD_RESPONSE_PERMILLE: u64 = 120;
/// Responses held back at once; beyond this new ones travel normally. A few dozen are
/// enough to reach every leader change; more would only pile up in long partitions.
const MAX_HELD_RESPONSES: usize = 64;
/// Per-seed chance (permille, drawn from `0..this`) that a newly elected leader soon
/// compacts and sends its snapshot to its followers, some of which still hold the
/// snapshot's last entry and more after it (a stale suffix, or entries they acked).
pub(super) const MAX_SNAPSHOT_AFTER_ELECTION_PERMILLE: u64 = 600;

impl World {
    /// The leader's bookkeeping against every live node of its term, for the pairs
    /// that include node `i`.
    pub(super) fn check_bookkeeping(&self, i: usize) -> Check {
        let (id, Some(node)) = (self.nodes[i].id, self.nodes[i].node.as_ref()) else {
            return Ok(());
        };
        let term = node.term();
        for other in &self.nodes {
            let Some(o) = other.node.as_ref() else {
                continue;
            };
            if other.id == id || o.term() != term {
                continue;
            }
            if node.role() == Role::Leader {
                self.checker.check_pair(id, node, other.id, o)?;
            } else if o.role() == Role::Leader {
                self.checker.check_pair(other.id, o, id, node)?;
            }
        }
        Ok(())
    }

    /// A leader was elected in a term newer than any before: held-back responses whose
    /// wait is over are delivered (now stale), and the leader may be made to send its
    /// snapshot to followers soon.
    pub(super) fn on_new_leader(&mut self, id: NodeId, term: Term) {
        self.newest_leader_term = term;
        let mut released = Vec::new();
        self.held.retain_mut(|(m, wait)| {
            *wait -= 1;
            if *wait == 0 {
                released.push(m.clone());
            }
            *wait > 0
        });
        for m in released {
            let delay = self.rng.range(1, 4 * TICK);
            self.schedule(delay, Event::Deliver(m));
        }
        if !self.healed && self.rng.chance(self.snapshot_after_election_permille) {
            let delay = self.rng.range(0, 3 * TICK);
            self.schedule(delay, Event::SnapshotBehind(id, term));
        }
    }

    /// Node `id`, if it still leads `term`, compacts up to what it applied and sends its
    /// snapshot to followers (each with even odds), whatever it believes they hold.
    pub(super) fn snapshot_behind(&mut self, id: NodeId, term: Term) -> Check {
        let i = self.idx(id);
        let n = &mut self.nodes[i];
        let Some(node) = n.node.as_mut() else {
            return Ok(());
        };
        if node.role() != Role::Leader || node.term() != term {
            return Ok(());
        }
        let _ = node.compact(n.machine.applied, n.machine.encode());
        let peers: Vec<NodeId> = node.conf().members().filter(|&p| p != id).collect();
        let mut sent = Vec::new();
        for p in peers {
            if self.rng.chance(500) && node.resend_snapshot(p) {
                sent.push(p);
            }
        }
        self.log(|| format!("leader {id} sends its snapshot to {sent:?}"));
        self.after_touch(i)
    }

    /// Holds back a copy of a response to deliver after later elections; true if the
    /// original is not to be delivered now either (otherwise it arrives twice).
    pub(super) fn maybe_hold(&mut self, m: &Message) -> bool {
        let response = matches!(
            m.body,
            MessageBody::AppendResponse { .. }
                | MessageBody::HeartbeatResponse
                | MessageBody::VoteResponse { .. }
        );
        if !response
            || self.healed
            || self.held.len() >= MAX_HELD_RESPONSES
            || !self.rng.chance(self.hold_response_permille)
        {
            return false;
        }
        let wait = self.rng.range(1, 4);
        self.held.push((m.clone(), wait));
        self.rng.chance(500)
    }
}
