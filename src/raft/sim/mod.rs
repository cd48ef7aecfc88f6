//! A seeded, deterministic simulator that drives real [`Node`](crate::raft::Node)s with
//! simulated time, a faulty network, crash-restarts, snapshots, membership changes and
//! leader transfers, checking the safety invariants after every event.
//!
//! The same [`SimConfig`] gives the same run, byte for byte.

mod checker;
pub mod cluster;
mod network;
mod world;

pub use self::checker::{chain_step, payload_hash};
pub use self::network::FaultProfile;

use crate::raft::rng::SplitMix64;
use crate::raft::BugInjection;

/// Simulated time units per tick.
pub const TICK: u64 = 10;
/// Default length of the fault phase, in ticks (about 30 election timeouts).
pub const DEFAULT_CHAOS_TICKS: u64 = 2000;
/// After faults heal, a leader must commit a new entry on every member within this many
/// ticks: a few election rounds plus catching up by snapshot.
pub const DEFAULT_HEAL_TICKS: u64 = 150;

/// One simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Founding voters (3 or 5); one extra empty node is available to be added.
    pub nodes: usize,
    pub chaos_ticks: u64,
    pub heal_ticks: u64,
    pub bugs: BugInjection,
    /// Record a human-readable trace of every event.
    pub trace: bool,
    /// Also check that a durable vote never changes within a term. Switching this off
    /// leaves only the symptom checks (e.g. two leaders in one term), to show that they
    /// too catch vote bugs.
    pub durable_vote_check: bool,
    /// Membership chaos also demotes voters to learners (the leader included). Off in
    /// the default run, so the seeds of the default run, the soak and the planted-bug
    /// tests keep their runs; `tests/raft_sim.rs` runs its own seeds with it on.
    pub demotions: bool,
}

impl SimConfig {
    /// The default run for `seed`: even seeds simulate 3 nodes, odd seeds 5.
    pub fn for_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: if seed.is_multiple_of(2) { 3 } else { 5 },
            chaos_ticks: DEFAULT_CHAOS_TICKS,
            heal_ticks: DEFAULT_HEAL_TICKS,
            bugs: BugInjection::default(),
            trace: false,
            durable_vote_check: true,
            demotions: false,
        }
    }
}

/// A broken invariant, with what is needed to replay it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub seed: u64,
    pub time: u64,
    pub event: u64,
    pub what: String,
    /// The last trace lines (only when tracing).
    pub trace_tail: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed={} t={} event={}: {}",
            self.seed, self.time, self.event, self.what
        )?;
        write!(
            f,
            "replay: RINGWAY_SIM_SEED={} cargo test --test raft_sim -- replay --nocapture",
            self.seed
        )
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub events: u64,
    pub end_time: u64,
    /// Highest committed index seen.
    pub committed: u64,
    pub proposals_accepted: u64,
    pub crashes: u64,
    pub conf_changes: u64,
    pub transfers: u64,
    pub snapshots_installed: u64,
    /// Storage wipes (a node's durable state replaced by an empty founder's or joiner's).
    pub wipes: u64,
    /// Nodes that found out they lost state (wiped, or a founder that missed the
    /// leader it voted for) and were removed and re-added with empty storage.
    pub readmissions: u64,
    /// The run ended with fewer healthy voters than a quorum (see `docs/raft.md`).
    pub stalled_by_lost_state: bool,
    pub leader_terms: u64,
    pub messages_delivered: u64,
    /// Digest of the whole event sequence.
    pub trace_hash: u64,
    pub trace: Vec<String>,
}

/// Runs one simulation; `Err` carries the first violated invariant.
pub fn run(cfg: &SimConfig) -> Result<SimReport, Violation> {
    world::World::new(cfg).run()
}

/// Per-seed variation of the core's knobs: batching off and on, pipelining off and on,
/// election timeouts from a few message delays to many, and one run in four with
/// PreVote/CheckQuorum off (classic Raft, where split votes and term races abound).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Knobs {
    pub max_entries: usize,
    pub max_inflight: usize,
    pub election_tick: u32,
    pub heartbeat_tick: u32,
    pub pre_vote_check_quorum: bool,
}

pub(crate) fn knobs(rng: &mut SplitMix64) -> Knobs {
    let election_tick = rng.range(4, 13) as u32;
    Knobs {
        max_entries: rng.pick(&[1usize, 2, 8, 64]).unwrap_or(64),
        max_inflight: rng.pick(&[1usize, 2, 4, 32]).unwrap_or(32),
        election_tick,
        heartbeat_tick: rng.range(1, u64::from(election_tick / 3).max(1) + 1) as u32,
        pre_vote_check_quorum: !rng.chance(250),
    }
}
