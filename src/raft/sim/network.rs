//! The simulated network: per-link blocking (one-way, symmetric, partial partitions) and
//! a fault profile that drops, duplicates, delays and thereby reorders messages.

use std::collections::BTreeSet;

use crate::raft::rng::SplitMix64;
use crate::raft::NodeId;

/// How hostile the network is right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultProfile {
    pub drop_permille: u64,
    pub dup_permille: u64,
    /// Delivery delay is uniform in `min_delay..max_delay` time units...
    pub min_delay: u64,
    pub max_delay: u64,
    /// ...plus, with this probability, an extra long delay (strong reordering).
    pub long_delay_permille: u64,
}

/// Extra delay of a "long" message, in time units (up to ~30 ticks).
const LONG_DELAY_MAX: u64 = 300;

impl FaultProfile {
    /// A clean network with a small fixed latency window (used once faults heal).
    pub fn calm() -> FaultProfile {
        FaultProfile {
            drop_permille: 0,
            dup_permille: 0,
            min_delay: 1,
            max_delay: 6,
            long_delay_permille: 0,
        }
    }

    /// A random hostile profile.
    pub fn random(rng: &mut SplitMix64) -> FaultProfile {
        let min_delay = rng.range(1, 5);
        FaultProfile {
            drop_permille: rng.range(0, 200),
            dup_permille: rng.range(0, 60),
            min_delay,
            max_delay: min_delay + rng.range(1, 40),
            long_delay_permille: rng.range(0, 40),
        }
    }

    /// Delays (time units) at which copies of one message arrive; empty if dropped.
    pub fn deliveries(&self, rng: &mut SplitMix64) -> Vec<u64> {
        if rng.chance(self.drop_permille) {
            return Vec::new();
        }
        let mut out = vec![self.delay(rng)];
        if rng.chance(self.dup_permille) {
            out.push(self.delay(rng));
        }
        out
    }

    fn delay(&self, rng: &mut SplitMix64) -> u64 {
        let mut d = rng.range(self.min_delay, self.max_delay);
        if rng.chance(self.long_delay_permille) {
            d += rng.range(1, LONG_DELAY_MAX);
        }
        d
    }
}

/// Which directed links are cut.
#[derive(Clone, Debug, Default)]
pub struct Links {
    blocked: BTreeSet<(NodeId, NodeId)>,
}

impl Links {
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    pub fn block_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Cuts every link between `a` and `b` in both directions.
    pub fn split(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Two sides that cannot talk except through `bridge`, which reaches both.
    pub fn bridge(&mut self, a: &[NodeId], b: &[NodeId], bridge: NodeId) {
        let a: Vec<NodeId> = a.iter().copied().filter(|&n| n != bridge).collect();
        let b: Vec<NodeId> = b.iter().copied().filter(|&n| n != bridge).collect();
        self.split(&a, &b);
    }

    pub fn describe(&self) -> String {
        let links: Vec<String> = self
            .blocked
            .iter()
            .map(|(a, b)| format!("{a}->{b}"))
            .collect();
        format!("[{}]", links.join(" "))
    }
}
