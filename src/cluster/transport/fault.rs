//! A fault switch for tests: cut traffic to and from chosen peers so a partition
//! really drops messages on real sockets. Off by default, and then costs one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::raft::NodeId;

#[derive(Clone, Copy, Debug, Default)]
struct Block {
    outbound: bool,
    inbound: bool,
}

/// Which peers' traffic this transport discards (see [`Transport::faults`](super::Transport::faults)).
#[derive(Debug, Default)]
pub struct FaultSwitch {
    any: AtomicBool,
    blocks: Mutex<HashMap<NodeId, Block>>,
}

impl FaultSwitch {
    /// Discards everything to and from `peer`.
    pub fn block(&self, peer: NodeId) {
        self.update(peer, |b| {
            *b = Block {
                outbound: true,
                inbound: true,
            }
        });
    }

    /// Discards messages this node sends to `peer`.
    pub fn block_outbound(&self, peer: NodeId) {
        self.update(peer, |b| b.outbound = true);
    }

    /// Discards messages this node receives from `peer`.
    pub fn block_inbound(&self, peer: NodeId) {
        self.update(peer, |b| b.inbound = true);
    }

    /// Restores traffic with `peer` in both directions.
    pub fn unblock(&self, peer: NodeId) {
        self.update(peer, |b| *b = Block::default());
    }

    /// Restores traffic with every peer.
    pub fn heal(&self) {
        let mut blocks = self.lock();
        blocks.clear();
        self.any.store(false, Ordering::Release);
    }

    /// Whether messages to `peer` are discarded.
    pub fn blocks_outbound(&self, peer: NodeId) -> bool {
        self.is_active() && self.lock().get(&peer).is_some_and(|b| b.outbound)
    }

    /// Whether messages from `peer` are discarded.
    pub fn blocks_inbound(&self, peer: NodeId) -> bool {
        self.is_active() && self.lock().get(&peer).is_some_and(|b| b.inbound)
    }

    fn is_active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    fn update(&self, peer: NodeId, f: impl FnOnce(&mut Block)) {
        let mut blocks = self.lock();
        f(blocks.entry(peer).or_default());
        blocks.retain(|_, b| b.outbound || b.inbound);
        self.any.store(!blocks.is_empty(), Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Block>> {
        // The map is always left consistent, so a panic elsewhere cannot poison its meaning.
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}
