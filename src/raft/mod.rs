//! The Raft consensus core (sans-IO) and its deterministic simulator.
//!
//! [`Node`] is driven by a caller that owns time, network and disk: it calls
//! [`Node::tick`], [`Node::step`] and [`Node::propose`], then takes a [`Ready`],
//! sends its early messages (a leader's replication traffic, [`Ready::take_early_messages`]),
//! persists it ([`Ready::persist`] is the only way to reach the other messages), sends
//! the rest, applies, and hands the result back to [`Node::advance`]. See `docs/raft.md`.

pub mod codec;
mod config;
mod core;
mod election;
mod follow;
mod log;
mod lost;
mod membership;
mod message;
mod node;
mod progress;
mod replicate;
pub mod rng;
/// The seeded simulator, for tests and benches only (`testkit` feature).
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod sim;
mod stats;
mod storage;
mod types;

pub use self::config::{
    BugInjection, Config, ConfigError, DEFAULT_ELECTION_TICK, DEFAULT_HEARTBEAT_TICK,
    DEFAULT_MAX_BYTES_PER_MSG, DEFAULT_MAX_ENTRIES_PER_MSG, DEFAULT_MAX_INFLIGHT_MSGS,
    MAX_ELECTION_TICK,
};
pub use self::core::{Role, MAX_WIRE_VALUE, SNAPSHOT_RETRY_TICKS};
pub use self::lost::{Event, LostState, MAX_PENDING_EVENTS};
pub use self::membership::{
    ProposeError, Proposed, TransferError, MAX_LEARNERS, PROMOTION_MAX_LAG,
};
pub use self::message::{Message, MessageBody, VoteKind};
pub use self::node::{AdvanceError, CompactError, Node, NodeError, Persisted, Ready, Status};
pub use self::progress::{Progress, ProgressState};
pub use self::stats::Stats;
pub use self::storage::{
    bootstrap_meta, InitialState, MemStorage, PersistBatch, Storage, StorageError, BOOTSTRAP_INDEX,
    BOOTSTRAP_TERM,
};
pub use self::types::{
    ConfChange, ConfChangeError, ConfChangeKind, ConfState, Entry, EntryPayload, FounderVote,
    HardState, Index, NodeId, Snapshot, SnapshotMeta, Term, ENTRY_OVERHEAD_BYTES, NO_NODE,
};
