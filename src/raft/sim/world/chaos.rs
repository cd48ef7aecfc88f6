//! Fault injection: the chaos actions the simulator draws during the fault phase
//! (partitions, crashes, membership changes, leader transfers, compactions, network moods).

use super::{Check, Event, World, MAX_DOWNTIME};
use crate::raft::sim::network::FaultProfile;
use crate::raft::MemStorage;
use crate::raft::{ConfChange, ConfChangeKind, ConfState, EntryPayload, NodeId};

impl World {
    pub(super) fn chaos(&mut self) -> Check {
        if self.healed {
            return Ok(());
        }
        let delay = self.rng.range(1, 2 * self.chaos_interval);
        self.schedule(delay, Event::Chaos);
        match self.rng.range(0, 100) {
            0..=24 => self.chaos_network(),
            25..=39 => self.chaos_crash(),
            40..=59 => self.chaos_conf_change(),
            60..=69 => self.chaos_transfer(),
            70..=74 => self.chaos_compact(),
            75..=79 => match self.leader() {
                Some(l) => {
                    let term = self.nodes[self.idx(l)]
                        .node
                        .as_ref()
                        .map_or(0, |n| n.term());
                    self.snapshot_behind(l, term)
                }
                None => Ok(()),
            },
            80..=84 => self.chaos_wipe(),
            _ => {
                self.faults = FaultProfile::random(&mut self.rng);
                Ok(())
            }
        }
    }

    fn chaos_network(&mut self) -> Check {
        let ids = self.all_ids();
        let mut shuffled = ids.clone();
        for k in (1..shuffled.len()).rev() {
            let j = self.rng.range(0, k as u64 + 1) as usize;
            shuffled.swap(k, j);
        }
        let cut = self.rng.range(1, shuffled.len() as u64) as usize;
        let (a, b) = shuffled.split_at(cut);
        match self.rng.range(0, 5) {
            0 => self.links.heal(),
            1 => self.links.split(a, b),
            2 => self.links.block_one_way(a[0], b[0]),
            3 => {
                let bridge = self.rng.pick(&ids).unwrap_or(1);
                self.links.bridge(a, b, bridge);
            }
            _ => {
                let victim = self.leader().unwrap_or(a[0]);
                self.links.split(&[victim], &ids);
            }
        }
        let d = self.links.describe();
        self.log(|| format!("network: blocked {d}"));
        Ok(())
    }

    fn chaos_crash(&mut self) -> Check {
        let live = self.live_ids();
        if !self.may_crash_another() {
            return Ok(());
        }
        // Half the crashes hit the leader: that is where the interesting races are.
        let target = match self.leader() {
            Some(l) if self.rng.chance(500) => Some(l),
            _ => self.rng.pick(&live),
        };
        if let Some(id) = target {
            self.log(|| format!("crash node {id}"));
            self.crash(id, MAX_DOWNTIME);
        }
        Ok(())
    }

    /// Wipes one voter's storage, as an operator deleting a data dir would: a founder
    /// restarts from the founders' bootstrap state, a node added later from empty
    /// storage. At most one wiped node at a time, and only while the others hold a
    /// quorum without its vote (its vote is gone until it is removed and re-added).
    fn chaos_wipe(&mut self) -> Check {
        if self.wiped.is_some() || !self.lost_members().is_empty() {
            return Ok(());
        }
        let Some(conf) = self.leader_conf() else {
            return Ok(());
        };
        // Only under a committed configuration: while a change is pending anywhere (a
        // deposed leader's too), nodes that lack it still count votes in the previous
        // one, which may need the victim.
        if conf.voters.len() < 3 || self.conf_pending() {
            return Ok(());
        }
        let Some(victim) = self.rng.pick(&conf.voters) else {
            return Ok(());
        };
        let founder = victim <= self.cfg.nodes as NodeId;
        self.log(|| format!("wipe node {victim} (founder: {founder})"));
        self.reset_storage(victim, founder);
        self.wiped = Some(victim);
        self.report.wipes += 1;
        Ok(())
    }

    /// Replaces a node's storage (crashing it first if it runs; it restarts later).
    fn reset_storage(&mut self, id: NodeId, founder: bool) {
        if self.is_up(id) {
            self.crash(id, MAX_DOWNTIME);
        }
        let newest = self
            .nodes
            .iter()
            .map(|n| {
                let live = n.node.as_ref().map_or(0, |n| n.term());
                live.max(n.storage.hard_state().term)
            })
            .max()
            .unwrap_or(0);
        self.checker.note_wipe(id, newest);
        let founders: Vec<NodeId> = (1..=self.cfg.nodes as NodeId).collect();
        let i = self.idx(id);
        self.nodes[i].storage = if founder {
            MemStorage::new_with_conf(ConfState::with_voters(&founders))
        } else {
            MemStorage::new()
        };
    }

    /// Nodes known to have lost state: the wiped one, and any that reports it (a node
    /// that is down reports it through its storage).
    fn lost_members(&self) -> Vec<NodeId> {
        let mut lost: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.lost_data())
            .map(|n| n.id)
            .collect();
        if let Some(w) = self.wiped {
            if !lost.contains(&w) {
                lost.push(w);
            }
        }
        lost
    }

    fn leader_conf(&self) -> Option<ConfState> {
        let l = self.leader()?;
        self.nodes[self.idx(l)]
            .node
            .as_ref()
            .map(|n| n.conf().clone())
    }

    /// Some live node's log holds a configuration entry above its commit index, or the
    /// leader has not yet committed an entry of its own term (so what it calls committed
    /// may not be the group's last word).
    fn conf_pending(&self) -> bool {
        let leader = self
            .leader()
            .and_then(|l| self.nodes[self.idx(l)].node.as_ref());
        let Some(l) = leader else {
            return true;
        };
        if l.term_at(l.commit_index()) != Some(l.term()) {
            return true;
        }
        self.nodes.iter().filter_map(|n| n.node.as_ref()).any(|n| {
            (n.commit_index() + 1..=n.last_index()).any(|i| {
                n.entry(i)
                    .is_some_and(|e| matches!(e.payload, EntryPayload::ConfChange(_)))
            })
        })
    }

    /// The operator's repair of a node that lost state: once the leader no longer
    /// holds it in its configuration, its storage is emptied (it restarts as a joiner)
    /// so a later `AddLearner` brings it back. Returns the removal to propose while it
    /// is still a member.
    fn repair_lost(&mut self, conf: &ConfState) -> Option<ConfChange> {
        for id in self.lost_members() {
            if conf.contains(id) {
                return Some(ConfChange {
                    kind: ConfChangeKind::RemoveNode,
                    node: id,
                });
            }
            self.log(|| format!("node {id} removed after losing state: emptying its storage"));
            self.reset_storage(id, false);
            if self.wiped == Some(id) {
                self.wiped = None;
            }
            self.report.readmissions += 1;
        }
        None
    }

    fn chaos_conf_change(&mut self) -> Check {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let Some(conf) = self.nodes[self.idx(l)]
            .node
            .as_ref()
            .map(|n| n.conf().clone())
        else {
            return Ok(());
        };
        let repair = self.repair_lost(&conf);
        let lost_in_conf = repair.is_some();
        let Some(cc) = repair.or_else(|| self.pick_conf_change(&conf)) else {
            return Ok(());
        };
        if lost_in_conf && cc.kind != ConfChangeKind::RemoveNode {
            return Ok(());
        }
        let res = self.with_node(l, |n| n.propose_conf_change(cc))?;
        if let Some(Ok(_)) = res {
            self.report.conf_changes += 1;
        }
        self.log(|| format!("conf change {cc:?} at leader {l}: {res:?}"));
        Ok(())
    }

    fn pick_conf_change(&mut self, conf: &ConfState) -> Option<ConfChange> {
        let outsiders: Vec<NodeId> = self
            .all_ids()
            .into_iter()
            .filter(|&i| !conf.contains(i))
            .collect();
        let min_voters = if self.cfg.nodes >= 5 { 3 } else { 2 };
        let mut options = Vec::new();
        if let Some(n) = self.rng.pick(&outsiders) {
            options.push(ConfChange {
                kind: ConfChangeKind::AddLearner,
                node: n,
            });
        }
        if let Some(n) = self.rng.pick(&conf.learners) {
            options.push(ConfChange {
                kind: ConfChangeKind::PromoteLearner,
                node: n,
            });
            options.push(ConfChange {
                kind: ConfChangeKind::RemoveNode,
                node: n,
            });
        }
        if conf.voters.len() > min_voters {
            if let Some(n) = self.rng.pick(&conf.voters) {
                options.push(ConfChange {
                    kind: ConfChangeKind::RemoveNode,
                    node: n,
                });
                if self.cfg.demotions {
                    options.push(ConfChange {
                        kind: ConfChangeKind::DemoteVoter,
                        node: n,
                    });
                }
            }
        }
        self.rng.pick(&options)
    }

    fn chaos_transfer(&mut self) -> Check {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let Some(voters) = self.nodes[self.idx(l)]
            .node
            .as_ref()
            .map(|n| n.conf().voters.clone())
        else {
            return Ok(());
        };
        let Some(to) = self.rng.pick(&voters) else {
            return Ok(());
        };
        let res = self.with_node(l, |n| n.transfer_leader(to))?;
        if let Some(Ok(())) = res {
            self.report.transfers += 1;
        }
        self.log(|| format!("transfer {l} -> {to}: {res:?}"));
        Ok(())
    }

    fn chaos_compact(&mut self) -> Check {
        let Some(id) = self.rng.pick(&self.live_ids()) else {
            return Ok(());
        };
        let i = self.idx(id);
        let n = &mut self.nodes[i];
        if let Some(node) = n.node.as_mut() {
            let _ = node.compact(n.machine.applied, n.machine.encode());
        }
        self.after_touch(i)
    }
}
