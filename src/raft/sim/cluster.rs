//! A fault-free, lock-step cluster for unit tests and benchmarks: every node's `Ready` is
//! processed at once and messages are delivered in rounds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::raft::{ConfState, Config, Entry, MemStorage, Message, Node, NodeId, Role};

/// Upper bound on delivery rounds in [`Cluster::settle`]; a healthy group goes quiet in a few.
const SETTLE_MAX_ROUNDS: usize = 1000;

/// N nodes wired by a perfect network, with per-node isolation.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub storages: BTreeMap<NodeId, MemStorage>,
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub isolated: BTreeSet<NodeId>,
    queue: VecDeque<Message>,
    /// Messages delivered so far.
    pub delivered: u64,
}

impl Cluster {
    /// Voters `1..=n`, each configured by `tweak`.
    pub fn new(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let voters: Vec<NodeId> = (1..=n).collect();
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            storages: BTreeMap::new(),
            applied: BTreeMap::new(),
            isolated: BTreeSet::new(),
            queue: VecDeque::new(),
            delivered: 0,
        };
        for &id in &voters {
            let storage = MemStorage::new_with_conf(ConfState::with_voters(&voters));
            let mut cfg = Config::try_new(id).expect("ids start at 1");
            cfg.seed = id;
            tweak(&mut cfg);
            let node = Node::try_new(cfg, &storage).expect("valid config");
            c.nodes.insert(id, node);
            c.storages.insert(id, storage);
            c.applied.insert(id, Vec::new());
        }
        c
    }

    pub fn node(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("node exists")
    }

    /// Persists, sends and applies every node's pending `Ready`.
    pub fn process_ready(&mut self) {
        for (&id, node) in self.nodes.iter_mut() {
            while let Some(rd) = node.ready() {
                let storage = self.storages.get_mut(&id).expect("storage exists");
                let mut done = rd
                    .persist(storage)
                    .expect("MemStorage accepts core batches");
                self.queue.extend(done.take_messages());
                if let Some(applied) = self.applied.get_mut(&id) {
                    applied.extend(done.committed_entries().iter().cloned());
                }
                node.advance(done).expect("same Ready");
            }
        }
    }

    /// Delivers every message queued now (one round trip leg); returns how many arrived.
    pub fn deliver_round(&mut self) -> usize {
        self.process_ready();
        let batch: Vec<Message> = self.queue.drain(..).collect();
        let mut n = 0;
        for m in batch {
            if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
                continue;
            }
            if let Some(node) = self.nodes.get_mut(&m.to) {
                node.step(m);
                n += 1;
            }
        }
        self.delivered += n as u64;
        self.process_ready();
        n
    }

    /// Delivers rounds until no message is in flight.
    pub fn settle(&mut self) {
        for _ in 0..SETTLE_MAX_ROUNDS {
            if self.deliver_round() == 0 && self.queue.is_empty() {
                return;
            }
        }
    }

    pub fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
        }
    }

    /// Ticks only `id` until it campaigns, then settles: `id` becomes leader on a healthy group.
    pub fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            self.node(id).tick();
            self.settle();
            if self.node(id).role() == Role::Leader {
                return;
            }
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .find(|n| n.role() == Role::Leader)
            .map(|n| n.id())
    }

    /// Takes the queued messages without delivering them (for tests that inspect them).
    pub fn take_queue(&mut self) -> Vec<Message> {
        self.process_ready();
        self.queue.drain(..).collect()
    }
}
