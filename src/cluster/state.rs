//! The replicated state machine: every pool's upstreams (id, address, weight,
//! draining), changed only by committed [`Command`]s.
//!
//! Apply is deterministic: it reads no clock, no environment and no local config, so
//! every instance that applies the same log holds the same state and builds the same
//! rings. A command that does not fit the state (an unknown pool, a bad address) is
//! refused by apply itself, identically everywhere, and changes nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::bounds;
use crate::config::slow_start::MAX_SLOW_START_STEPS;
use crate::config::{self, parse_upstream_addr, SlowStart};
use crate::health::breaker::{self, Evidence, Member, Policy, PoolBreakers, Probe};
use crate::ring::Share;

/// The bounds apply checks, shared with the file and the admin API (see
/// [`crate::config::bounds`]).
pub use crate::config::bounds::{MAX_NAME_BYTES, MAX_POOLS, MAX_UPSTREAMS_PER_POOL, MAX_WEIGHT};
/// Format version written into every encoded command and snapshot.
pub const STATE_VERSION: u32 = 1;
/// Ids of [`Command::Once`] changes remembered, oldest forgotten first. A retried
/// change comes back within seconds (the proposer's bounded retries); thousands of
/// changes in between would take minutes, so this covers every retry at ~40 bytes each.
pub const MAX_REMEMBERED_CHANGES: usize = 4096;

/// Cache purges remembered in the state, oldest forgotten first, so that an
/// instance that follows the state late (or restarts from a snapshot) still applies
/// every recent one to its cache. An instance further behind than this empties its
/// caches instead (see [`ClusterState::purges_forgotten_through`]). 1024 purges at
/// ~100 bytes each keep snapshots small.
pub const MAX_RECENT_PURGES: usize = 1024;
/// Longest key or prefix a purge names: a request line's host and URI fit (the
/// listener's header limit is of the same order).
pub const MAX_PURGE_KEY_BYTES: usize = 8192;

/// What a cache purge removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PurgeScope {
    /// One key (and every variant stored under it).
    Key(String),
    /// Every key that starts with this (empty: all of the pool's).
    Prefix(String),
}

/// A purge the cluster agreed on, and the log index it applied at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    pub index: u64,
    pub pool: String,
    pub scope: PurgeScope,
}

/// The id of a change proposed through [`crate::cluster::forward::Proposer`]: the
/// proposing node and a number it never reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeId {
    pub origin: u64,
    pub seq: u64,
}

/// One upstream as the cluster agrees on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub id: String,
    pub address: String,
    pub weight: u32,
    /// A draining upstream keeps serving requests already sent to it but takes no new
    /// ones: it is not on the ring.
    #[serde(default)]
    pub draining: bool,
}

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Replaces a pool's whole upstream list (creating the pool).
    SetPool {
        pool: String,
        upstreams: Vec<UpstreamSpec>,
    },
    /// Forgets a pool.
    RemovePool { pool: String },
    /// Adds an upstream to a pool, or updates the one with the same id in place (its
    /// position, and so which upstream wins a shared ring point, is kept).
    PutUpstream {
        pool: String,
        upstream: UpstreamSpec,
    },
    /// Removes an upstream from a pool.
    DeleteUpstream { pool: String, id: String },
    /// The first leader's copy of its file's pools. Applies once in the cluster's life:
    /// later ones (another founder's, or a re-elected leader's) are refused, so an
    /// operator who empties the cluster is not overridden by a file.
    Bootstrap {
        pools: BTreeMap<String, Vec<UpstreamSpec>>,
        /// The founding members' peer addresses.
        #[serde(default)]
        peers: BTreeMap<String, String>,
    },
    /// Records where a node serves its admin API. No longer proposed (changes reach
    /// the leader over the cluster transport); kept so that logs and snapshots written
    /// by earlier versions still decode and apply the same everywhere.
    SetAdmin { node: String, address: String },
    /// Records where a cluster member listens for its peers, so every instance can
    /// reach a member added at runtime. Proposed before the member is added to the
    /// Raft configuration.
    SetPeer { node: String, address: String },
    /// Forgets a member's peer address, after it left the Raft configuration.
    RemovePeer { node: String },
    /// Pool changes applied together or not at all (a reloaded file's changes). Holds
    /// only pool and upstream commands.
    Batch { commands: Vec<Command> },
    /// A detector on `reporter` tripped for an upstream (evidence attached). Ejects
    /// it once `policy.min_reporters` distinct instances reported within the window
    /// and the pool's caps allow; `at_ms` is the proposer's clock.
    BreakerReport {
        pool: String,
        upstream: String,
        reporter: String,
        at_ms: u64,
        evidence: Evidence,
        policy: Policy,
    },
    /// Open -> half-open, proposed by the leader once its clock passed the expiry.
    BreakerHalfOpen {
        pool: String,
        upstream: String,
        at_ms: u64,
    },
    /// The leader's half-open probes of an upstream: enough successes close it, a
    /// failure opens it again for longer.
    BreakerProbe {
        pool: String,
        upstream: String,
        at_ms: u64,
        probe: Probe,
        policy: Policy,
    },
    /// `command` (pool changes, or a breaker probe), and a slow start for every
    /// upstream it puts into service (on the ring, not draining, not ejected) in a
    /// pool listed in `pools` that already had another upstream in service: each
    /// starts at step 1 of its pool's `steps` in this same entry, so it never holds
    /// its full share. `at_ms` is the proposer's clock; the settings are the
    /// proposer's, so apply reads no local config.
    SlowStart {
        pools: BTreeMap<String, SlowStart>,
        at_ms: u64,
        command: Box<Command>,
    },
    /// The next step of an upstream's slow start, proposed by the leader once its
    /// clock passed the previous step's `at_ms` plus one step. Refused unless it is
    /// exactly the next step; the last step ends the ramp (a full share).
    SlowStartStep {
        pool: String,
        upstream: String,
        step: u32,
        at_ms: u64,
    },
    /// `command`, applied at most once per `id`: a retry of a change that already
    /// applied (its first attempt's answer was lost with a leader) is refused with
    /// [`Refused::Duplicate`] naming the index where it applied.
    Once { id: ChangeId, command: Box<Command> },
    /// Removes entries from `pool`'s response cache on every instance, at the index
    /// it commits at (the state only records it; each instance's control layer
    /// applies it to its own cache).
    PurgeCache { pool: String, scope: PurgeScope },
}

/// Most commands one batch may hold.
pub const MAX_BATCH: usize = 10_000;

/// Whether apply checks the weight bounds after a pool change, or leaves it to the end
/// of the batch the change is part of (a batch may remove before it adds).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Weights {
    Check,
    Later,
}

/// Why apply refused a command. The same on every instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    #[error("no pool named {0:?}")]
    UnknownPool(String),
    #[error("pool {pool:?} has no upstream {id:?}")]
    UnknownUpstream { pool: String, id: String },
    #[error("{0}")]
    Invalid(String),
    /// This change (by its id) already applied, at `index`.
    #[error("this change already applied at index {index}")]
    Duplicate { index: u64 },
}

/// Every pool's membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    pools: BTreeMap<String, Vec<UpstreamSpec>>,
    /// A `Bootstrap` command has applied.
    #[serde(default)]
    bootstrapped: bool,
    /// Node name to the address of its admin API.
    #[serde(default)]
    admins: BTreeMap<String, String>,
    /// Node name to its peer (Raft transport) address, for members added at runtime
    /// and the founders the bootstrap recorded.
    #[serde(default)]
    peers: BTreeMap<String, String>,
    /// Circuit breakers of pools where one ever left closed (absent: all closed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    breakers: BTreeMap<String, PoolBreakers>,
    /// Slow starts under way: pool to upstream to its ramp. Only upstreams in
    /// service (not draining, not ejected) have one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    ramps: BTreeMap<String, BTreeMap<String, Ramp>>,
    /// Ids of the latest [`Command::Once`] changes and the index each applied at,
    /// oldest first, at most [`MAX_REMEMBERED_CHANGES`].
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    applied_changes: VecDeque<(ChangeId, u64)>,
    /// The latest cache purges, oldest first, at most [`MAX_RECENT_PURGES`].
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    purges: VecDeque<Purge>,
    /// Index of the newest purge dropped from `purges` (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    purges_forgotten_through: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One upstream's slow start: it owns `step` of `steps` parts of its ring points
/// (see [`crate::ring::Share`]); `at_ms` is when that step was proposed (the
/// proposer's clock). The next step is due `duration_ms / (steps - 1)` later, so
/// the last (the full share) comes `duration_ms` after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub step: u32,
    pub steps: u32,
    pub duration_ms: u64,
    pub at_ms: u64,
}

impl Ramp {
    /// The share of its points the upstream owns at this step.
    pub fn share(&self) -> Share {
        Share {
            step: self.step,
            steps: self.steps,
        }
    }

    /// The time between two steps.
    pub fn step_ms(&self) -> u64 {
        self.settings().step_ms()
    }

    /// When the next step is due by the clock of the proposer of this one.
    pub fn next_due_ms(&self) -> u64 {
        self.at_ms.saturating_add(self.step_ms())
    }

    fn settings(&self) -> SlowStart {
        SlowStart {
            duration_ms: self.duration_ms,
            steps: self.steps,
        }
    }

    fn check(&self) -> Result<(), String> {
        self.settings().check()?;
        if self.duration_ms == 0 || self.step == 0 || self.step >= self.steps {
            return Err(format!(
                "step {} of {} over {} ms is not a slow start under way",
                self.step, self.steps, self.duration_ms
            ));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Versioned<T> {
    v: u32,
    body: T,
}

/// A command or snapshot that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct DecodeError {
    what: &'static str,
    reason: String,
}

impl Command {
    /// The bytes a Raft entry carries: versioned JSON, readable in a log dump.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Versioned {
            v: STATE_VERSION,
            body: self,
        })
        .expect("commands are plain data and always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        decode_versioned(bytes, "command")
    }

    /// Checks a command on its own (names, addresses, weights, sizes).
    pub fn validate(&self) -> Result<(), Refused> {
        match self {
            Command::SetPool { pool, upstreams } => {
                check_name("pool", pool)?;
                check_upstreams(upstreams)
            }
            Command::RemovePool { pool } => check_name("pool", pool),
            Command::PutUpstream { pool, upstream } => {
                check_name("pool", pool)?;
                check_upstream(upstream)
            }
            Command::DeleteUpstream { pool, id } => {
                check_name("pool", pool)?;
                check_name("upstream id", id)
            }
            Command::SetAdmin { node, address } => {
                check_node_id(node)?;
                check_socket_addr("admin", address)
            }
            Command::SetPeer { node, address } => {
                check_node_id(node)?;
                check_socket_addr("peer", address)
            }
            Command::RemovePeer { node } => check_node_id(node),
            Command::Batch { commands } => {
                if commands.len() > MAX_BATCH {
                    return Err(Refused::Invalid(format!(
                        "a batch holds at most {MAX_BATCH} changes, got {}",
                        commands.len()
                    )));
                }
                for (i, c) in commands.iter().enumerate() {
                    if !c.is_pool_change() {
                        return Err(Refused::Invalid(format!(
                            "change {i} of the batch: only pool and upstream changes can be batched"
                        )));
                    }
                    c.validate().map_err(|r| in_batch(i, r))?;
                }
                Ok(())
            }
            Command::Bootstrap { pools, peers } => {
                for (node, address) in peers {
                    check_node_id(node)?;
                    check_socket_addr("peer", address)?;
                }
                bounds::check_pool_count(pools.len()).map_err(Refused::Invalid)?;
                pools.iter().try_for_each(|(pool, list)| {
                    check_name("pool", pool)?;
                    check_upstreams(list).map_err(|r| in_pool(pool, r))
                })?;
                check_total_weight(pools.values().map(|l| weight_of(l)).sum())
            }
            Command::BreakerReport {
                pool,
                upstream,
                reporter,
                policy,
                ..
            } => {
                check_name("pool", pool)?;
                check_name("upstream id", upstream)?;
                check_node_id(reporter)?;
                policy.check().map_err(Refused::Invalid)
            }
            Command::BreakerHalfOpen { pool, upstream, .. } => {
                check_name("pool", pool)?;
                check_name("upstream id", upstream)
            }
            Command::BreakerProbe {
                pool,
                upstream,
                policy,
                ..
            } => {
                check_name("pool", pool)?;
                check_name("upstream id", upstream)?;
                policy.check().map_err(Refused::Invalid)
            }
            Command::SlowStart { pools, command, .. } => {
                bounds::check_pool_count(pools.len()).map_err(Refused::Invalid)?;
                for (pool, s) in pools {
                    check_name("pool", pool)?;
                    s.check()
                        .map_err(|why| in_pool(pool, Refused::Invalid(why)))?;
                    if !s.is_on() {
                        return Err(in_pool(
                            pool,
                            Refused::Invalid("a slow start needs slow_start_ms above 0".into()),
                        ));
                    }
                }
                let fits = command.is_pool_change()
                    || matches!(
                        **command,
                        Command::Batch { .. } | Command::BreakerProbe { .. }
                    );
                if !fits {
                    return Err(Refused::Invalid(
                        "a slow start wraps only pool changes, batches and breaker probes".into(),
                    ));
                }
                command.validate()
            }
            Command::SlowStartStep {
                pool,
                upstream,
                step,
                ..
            } => {
                check_name("pool", pool)?;
                check_name("upstream id", upstream)?;
                if !(2..=MAX_SLOW_START_STEPS).contains(step) {
                    return Err(Refused::Invalid(format!(
                        "a slow start step is from 2 to {MAX_SLOW_START_STEPS}, got {step}"
                    )));
                }
                Ok(())
            }
            Command::PurgeCache { pool, scope } => {
                check_name("pool", pool)?;
                let (Ok(text) | Err(text)) = match scope {
                    PurgeScope::Key(k) => Ok(k),
                    PurgeScope::Prefix(p) => Err(p),
                };
                if text.len() > MAX_PURGE_KEY_BYTES {
                    return Err(Refused::Invalid(format!(
                        "a purge key or prefix is at most {MAX_PURGE_KEY_BYTES} bytes, got {}",
                        text.len()
                    )));
                }
                if matches!(scope, PurgeScope::Key(k) if k.is_empty()) {
                    return Err(Refused::Invalid("a purge key cannot be empty".into()));
                }
                Ok(())
            }
            Command::Once { command, .. } => match **command {
                Command::Once { .. } => Err(Refused::Invalid(
                    "a once-only change cannot wrap another".into(),
                )),
                ref inner => inner.validate(),
            },
        }
    }

    /// `self` wrapped in a [`Command::SlowStart`] for the pools it may add upstreams
    /// to (`SetPool`, `PutUpstream`, in a batch too, or a passed breaker probe)
    /// whose `settings` have slow start on; unchanged when there is none.
    pub fn with_slow_start(
        self,
        settings: impl Fn(&str) -> Option<SlowStart>,
        at_ms: u64,
    ) -> Command {
        let mut touched = BTreeSet::new();
        self.pools_joined(&mut touched);
        let pools: BTreeMap<String, SlowStart> = touched
            .into_iter()
            .filter_map(|p| {
                settings(p)
                    .filter(SlowStart::is_on)
                    .map(|s| (p.to_owned(), s))
            })
            .collect();
        if pools.is_empty() {
            return self;
        }
        Command::SlowStart {
            pools,
            at_ms,
            command: Box::new(self),
        }
    }

    /// The pools where this command may put an upstream into service.
    fn pools_joined<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        match self {
            Command::SetPool { pool, .. } | Command::PutUpstream { pool, .. } => {
                out.insert(pool);
            }
            Command::BreakerProbe {
                pool,
                probe: Probe::Passed { .. },
                ..
            } => {
                out.insert(pool);
            }
            Command::Batch { commands } => commands.iter().for_each(|c| c.pools_joined(out)),
            _ => {}
        }
    }
}

impl Command {
    /// A change to pools or upstreams (what files and operators change), as opposed
    /// to the cluster's own bookkeeping.
    pub fn is_pool_change(&self) -> bool {
        matches!(
            self,
            Command::SetPool { .. }
                | Command::RemovePool { .. }
                | Command::PutUpstream { .. }
                | Command::DeleteUpstream { .. }
        )
    }
}

/// A refusal of the `i`th command of a batch, saying which.
fn in_batch(i: usize, r: Refused) -> Refused {
    match r {
        Refused::Invalid(why) => Refused::Invalid(format!("change {i} of the batch: {why}")),
        other => other,
    }
}

fn decode_versioned<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    let err = |reason: String| DecodeError { what, reason };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
    match value.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == STATE_VERSION as u64 => {}
        Some(v) => {
            return Err(err(format!(
                "format version {v}, this build reads {STATE_VERSION}"
            )))
        }
        None => return Err(err("no format version".into())),
    }
    let versioned: Versioned<T> = serde_json::from_value(value).map_err(|e| err(e.to_string()))?;
    Ok(versioned.body)
}

fn check_name(what: &str, name: &str) -> Result<(), Refused> {
    bounds::check_name(name).map_err(|why| Refused::Invalid(format!("{what} {why}")))
}

/// Node names follow the config's rule for `node.id` and `cluster.peers` keys.
fn check_node_id(node: &str) -> Result<(), Refused> {
    bounds::check_node_id(node).map_err(Refused::Invalid)
}

fn check_socket_addr(what: &str, address: &str) -> Result<(), Refused> {
    address
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| Refused::Invalid(format!("{what} address must be IP:port, got {address:?}")))
}

fn check_upstream(u: &UpstreamSpec) -> Result<(), Refused> {
    check_name("upstream id", &u.id)?;
    parse_upstream_addr(&u.address)
        .map_err(|why| Refused::Invalid(format!("upstream {:?}: address {why}", u.id)))?;
    bounds::check_weight(u.weight.into())
        .map_err(|why| Refused::Invalid(format!("upstream {:?}: {why}", u.id)))
}

fn check_upstreams(list: &[UpstreamSpec]) -> Result<(), Refused> {
    bounds::check_upstream_count(list.len()).map_err(Refused::Invalid)?;
    let mut ids = std::collections::HashSet::with_capacity(list.len());
    for u in list {
        check_upstream(u)?;
        if !ids.insert(u.id.as_str()) {
            return Err(Refused::Invalid(format!(
                "upstream id {:?} is listed twice",
                u.id
            )));
        }
    }
    bounds::check_pool_weight(weight_of(list)).map_err(Refused::Invalid)
}

/// The sum of the weights of `list` (draining upstreams included: they may return).
fn weight_of(list: &[UpstreamSpec]) -> u64 {
    list.iter().map(|u| u64::from(u.weight)).sum()
}

fn check_total_weight(sum: u64) -> Result<(), Refused> {
    bounds::check_total_weight(sum).map_err(Refused::Invalid)
}

/// A refusal about one pool's upstreams, saying which pool.
fn in_pool(pool: &str, r: Refused) -> Refused {
    match r {
        Refused::Invalid(why) => Refused::Invalid(format!("pool {pool:?}: {why}")),
        other => other,
    }
}

impl ClusterState {
    /// Applies one committed command. Deterministic: the same state and command give
    /// the same result on every instance. A [`Command::Once`] applied this way records
    /// index 0; the driver uses [`ClusterState::apply_at`].
    pub fn apply(&mut self, cmd: &Command) -> Result<(), Refused> {
        self.apply_at(0, cmd)
    }

    /// Applies the command committed at `index` (see [`ClusterState::apply`]).
    pub fn apply_at(&mut self, index: u64, cmd: &Command) -> Result<(), Refused> {
        cmd.validate()?;
        if let Command::Once { id, command } = cmd {
            if let Some(&(_, at)) = self.applied_changes.iter().find(|(seen, _)| seen == id) {
                return Err(Refused::Duplicate { index: at });
            }
            self.apply_at(index, command)?;
            if self.applied_changes.len() >= MAX_REMEMBERED_CHANGES {
                self.applied_changes.pop_front();
            }
            self.applied_changes.push_back((*id, index));
            return Ok(());
        }
        if let Command::PurgeCache { pool, scope } = cmd {
            if self.purges.len() >= MAX_RECENT_PURGES {
                if let Some(old) = self.purges.pop_front() {
                    self.purges_forgotten_through = old.index;
                }
            }
            self.purges.push_back(Purge {
                index,
                pool: pool.clone(),
                scope: scope.clone(),
            });
            return Ok(());
        }
        self.apply_valid(cmd, Weights::Check)?;
        self.settle_breakers();
        self.settle_ramps();
        Ok(())
    }

    /// The latest cache purges, oldest first.
    pub fn purges(&self) -> impl Iterator<Item = &Purge> {
        self.purges.iter()
    }

    /// Index of the newest purge no longer in [`ClusterState::purges`]: a follower
    /// that applied purges only up to an earlier index has missed some.
    pub fn purges_forgotten_through(&self) -> u64 {
        self.purges_forgotten_through
    }

    /// Applies a validated command; with [`Weights::Later`] the caller checks the
    /// weight bounds once a whole batch has applied.
    fn apply_valid(&mut self, cmd: &Command, weights: Weights) -> Result<(), Refused> {
        match cmd {
            Command::SetPool { pool, upstreams } => {
                if !self.pools.contains_key(pool) && self.pools.len() >= MAX_POOLS {
                    return Err(Refused::Invalid(format!(
                        "the cluster holds at most {MAX_POOLS} pools"
                    )));
                }
                if weights == Weights::Check {
                    self.check_total_with(pool, upstreams)?;
                }
                self.pools.insert(pool.clone(), upstreams.clone());
            }
            Command::RemovePool { pool } => {
                self.pools
                    .remove(pool)
                    .ok_or_else(|| Refused::UnknownPool(pool.clone()))?;
            }
            Command::PutUpstream { pool, upstream } => {
                let list = self
                    .pools
                    .get(pool)
                    .ok_or_else(|| Refused::UnknownPool(pool.clone()))?;
                let at = list.iter().position(|u| u.id == upstream.id);
                if at.is_none() && list.len() >= MAX_UPSTREAMS_PER_POOL {
                    return Err(Refused::Invalid(format!(
                        "a pool holds at most {MAX_UPSTREAMS_PER_POOL} upstreams"
                    )));
                }
                if weights == Weights::Check {
                    let mut next = list.clone();
                    match at {
                        Some(i) => next[i] = upstream.clone(),
                        None => next.push(upstream.clone()),
                    }
                    bounds::check_pool_weight(weight_of(&next))
                        .map_err(|why| in_pool(pool, Refused::Invalid(why)))?;
                    self.check_total_with(pool, &next)?;
                }
                let list = self.pools.get_mut(pool).expect("looked up above");
                match at {
                    Some(i) => list[i] = upstream.clone(),
                    None => list.push(upstream.clone()),
                }
            }
            Command::SetAdmin { node, address } => {
                self.admins.insert(node.clone(), address.clone());
            }
            Command::Bootstrap { pools, peers } => {
                if self.bootstrapped {
                    return Err(Refused::Invalid(
                        "the cluster is already bootstrapped".into(),
                    ));
                }
                self.pools = pools.clone();
                for (node, address) in peers {
                    self.peers.entry(node.clone()).or_insert(address.clone());
                }
                self.bootstrapped = true;
            }
            Command::SetPeer { node, address } => {
                if let Some((other, _)) =
                    self.peers.iter().find(|(n, a)| *n != node && *a == address)
                {
                    return Err(Refused::Invalid(format!(
                        "{address} is already the peer address of {other}"
                    )));
                }
                self.peers.insert(node.clone(), address.clone());
            }
            Command::RemovePeer { node } => {
                self.peers.remove(node);
            }
            Command::Batch { commands } => {
                let mut next = self.clone();
                for (i, c) in commands.iter().enumerate() {
                    next.apply_valid(c, Weights::Later)
                        .map_err(|r| in_batch(i, r))?;
                }
                if weights == Weights::Check {
                    next.check_weights()?;
                }
                *self = next;
            }
            Command::DeleteUpstream { pool, id } => {
                let list = self
                    .pools
                    .get_mut(pool)
                    .ok_or_else(|| Refused::UnknownPool(pool.clone()))?;
                let at = list.iter().position(|u| &u.id == id).ok_or_else(|| {
                    Refused::UnknownUpstream {
                        pool: pool.clone(),
                        id: id.clone(),
                    }
                })?;
                list.remove(at);
            }
            Command::BreakerReport { .. }
            | Command::BreakerHalfOpen { .. }
            | Command::BreakerProbe { .. } => self.apply_breaker(cmd)?,
            Command::SlowStart {
                pools,
                at_ms,
                command,
            } => {
                let before: BTreeMap<&str, BTreeSet<String>> = pools
                    .keys()
                    .filter_map(|p| Some((p.as_str(), self.in_service(p)?)))
                    .collect();
                self.apply_valid(command, weights)?;
                self.settle_breakers();
                self.start_ramps(&before, pools, *at_ms);
            }
            Command::SlowStartStep {
                pool,
                upstream,
                step,
                at_ms,
            } => self.step_ramp(pool, upstream, *step, *at_ms)?,
            Command::Once { .. } | Command::PurgeCache { .. } => {}
        }
        Ok(())
    }

    /// The ids of `pool`'s upstreams in service (not draining, not ejected); `None`
    /// when there is no such pool.
    fn in_service(&self, pool: &str) -> Option<BTreeSet<String>> {
        let breakers = self.breakers.get(pool);
        let list = self.pools.get(pool)?;
        let on = list
            .iter()
            .filter(|u| !u.draining && !breakers.is_some_and(|b| b.is_ejected(&u.id)))
            .map(|u| u.id.clone());
        Some(on.collect())
    }

    /// Starts a ramp, at step 1, for every upstream in service now that was not in
    /// `before`, in pools that had another upstream in service then (a new or empty
    /// pool has no traffic to shift gently).
    fn start_ramps(
        &mut self,
        before: &BTreeMap<&str, BTreeSet<String>>,
        settings: &BTreeMap<String, SlowStart>,
        at_ms: u64,
    ) {
        for (pool, s) in settings {
            let Some(was) = before.get(pool.as_str()).filter(|w| !w.is_empty()) else {
                continue;
            };
            let Some(now) = self.in_service(pool) else {
                continue;
            };
            for id in now.difference(was) {
                let ramp = Ramp {
                    step: 1,
                    steps: s.steps,
                    duration_ms: s.duration_ms,
                    at_ms,
                };
                let ramps = self.ramps.entry(pool.clone()).or_default();
                ramps.insert(id.clone(), ramp);
            }
        }
    }

    /// Moves a ramp to its next step; the last one ends it.
    fn step_ramp(&mut self, pool: &str, id: &str, step: u32, at_ms: u64) -> Result<(), Refused> {
        let ramps = self.ramps.get_mut(pool);
        let Some(ramp) = ramps.and_then(|r| r.get_mut(id)) else {
            return Err(Refused::Invalid(format!(
                "upstream {id:?} of pool {pool:?} is not in slow start"
            )));
        };
        if step != ramp.step + 1 {
            return Err(Refused::Invalid(format!(
                "step {step} is not the next of upstream {id:?} of pool {pool:?}: it is at step {} of {}",
                ramp.step, ramp.steps
            )));
        }
        ramp.step = step;
        ramp.at_ms = at_ms;
        if step >= ramp.steps {
            self.ramps.get_mut(pool).map(|r| r.remove(id));
            self.ramps.retain(|_, r| !r.is_empty());
        }
        Ok(())
    }

    /// Ends the ramps of upstreams no longer in service: removed, draining or
    /// ejected (a readmission starts a new one), and of pools that left.
    fn settle_ramps(&mut self) {
        if self.ramps.is_empty() {
            return;
        }
        let mut ramps = std::mem::take(&mut self.ramps);
        ramps.retain(|pool, r| {
            let on = self.in_service(pool).unwrap_or_default();
            r.retain(|id, _| on.contains(id));
            !r.is_empty()
        });
        self.ramps = ramps;
    }

    /// The slow start of `id` in `pool`, while one is under way.
    pub fn ramp(&self, pool: &str, id: &str) -> Option<&Ramp> {
        self.ramps.get(pool)?.get(id)
    }

    /// Every slow start under way: pool, upstream, ramp.
    pub fn ramps(&self) -> impl Iterator<Item = (&str, &str, &Ramp)> {
        self.ramps.iter().flat_map(|(p, r)| {
            r.iter()
                .map(move |(id, ramp)| (p.as_str(), id.as_str(), ramp))
        })
    }

    /// Refuses a state whose pools weigh more than the bounds allow, alone or together.
    fn check_weights(&self) -> Result<(), Refused> {
        for (pool, list) in &self.pools {
            bounds::check_pool_weight(weight_of(list))
                .map_err(|why| in_pool(pool, Refused::Invalid(why)))?;
        }
        check_total_weight(self.pools.values().map(|l| weight_of(l)).sum())
    }

    /// Refuses giving `pool` the upstreams `list` when all pools would then weigh more
    /// than the bound.
    fn check_total_with(&self, pool: &str, list: &[UpstreamSpec]) -> Result<(), Refused> {
        let others: u64 = self
            .pools
            .iter()
            .filter(|(name, _)| name.as_str() != pool)
            .map(|(_, l)| weight_of(l))
            .sum();
        check_total_weight(others + weight_of(list))
    }

    fn apply_breaker(&mut self, cmd: &Command) -> Result<(), Refused> {
        let pool = match cmd {
            Command::BreakerReport { pool, .. }
            | Command::BreakerHalfOpen { pool, .. }
            | Command::BreakerProbe { pool, .. } => pool,
            _ => return Ok(()),
        };
        let list = self
            .pools
            .get(pool)
            .ok_or_else(|| Refused::UnknownPool(pool.clone()))?;
        let members: Vec<Member> = list
            .iter()
            .map(|u| Member {
                id: &u.id,
                draining: u.draining,
            })
            .collect();
        let mut breakers = self.breakers.get(pool).cloned().unwrap_or_else(|| {
            PoolBreakers::new(match cmd {
                Command::BreakerReport { policy, .. } | Command::BreakerProbe { policy, .. } => {
                    *policy
                }
                _ => Policy::default(),
            })
        });
        let done = match cmd {
            Command::BreakerReport {
                upstream,
                reporter,
                at_ms,
                evidence,
                policy,
                ..
            } => breakers
                .report(
                    &members,
                    &breaker::Report {
                        pool,
                        upstream,
                        reporter,
                        at_ms: *at_ms,
                        evidence: *evidence,
                        policy: *policy,
                    },
                )
                .map(|_| ()),
            Command::BreakerHalfOpen {
                upstream, at_ms, ..
            } => breakers.half_open(&members, pool, upstream, *at_ms),
            Command::BreakerProbe {
                upstream,
                at_ms,
                probe,
                policy,
                ..
            } => breakers.probe(&members, pool, upstream, *at_ms, *probe, *policy),
            _ => Ok(()),
        };
        done.map_err(|r| Refused::Invalid(r.0))?;
        self.breakers.insert(pool.clone(), breakers);
        Ok(())
    }

    /// Drops breakers of pools and upstreams that left, and recomputes panic mode
    /// after any membership change (a removed upstream changes the healthy share).
    fn settle_breakers(&mut self) {
        let pools = &self.pools;
        self.breakers.retain(|name, b| match pools.get(name) {
            Some(list) => {
                let members: Vec<Member> = list
                    .iter()
                    .map(|u| Member {
                        id: &u.id,
                        draining: u.draining,
                    })
                    .collect();
                b.settle(&members);
                !b.upstreams.is_empty()
            }
            None => false,
        });
    }

    /// The breakers of `pool`, when any left closed.
    pub fn breakers(&self, pool: &str) -> Option<&PoolBreakers> {
        self.breakers.get(pool)
    }

    /// Every pool's name and upstreams.
    pub fn pools(&self) -> impl Iterator<Item = (&str, &[UpstreamSpec])> {
        self.pools.iter().map(|(n, l)| (n.as_str(), l.as_slice()))
    }

    /// The upstreams of `pool`, in pool order.
    pub fn pool(&self, pool: &str) -> Option<&[UpstreamSpec]> {
        self.pools.get(pool).map(Vec::as_slice)
    }

    /// The state as snapshot bytes (versioned JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Versioned {
            v: STATE_VERSION,
            body: self,
        })
        .expect("the state is plain data and always serializes")
    }

    /// Reads snapshot bytes; empty bytes are the empty state (the bootstrap snapshot).
    pub fn decode(bytes: &[u8]) -> Result<ClusterState, DecodeError> {
        if bytes.is_empty() {
            return Ok(ClusterState::default());
        }
        let state: ClusterState = decode_versioned(bytes, "cluster state")?;
        for (pool, list) in &state.pools {
            let bad = |r: Refused| DecodeError {
                what: "cluster state",
                reason: format!("pool {pool:?}: {r}"),
            };
            check_name("pool", pool).map_err(bad)?;
            check_upstreams(list).map_err(bad)?;
        }
        bounds::check_pool_count(state.pools.len())
            .and_then(|()| {
                bounds::check_total_weight(state.pools.values().map(|l| weight_of(l)).sum())
            })
            .map_err(|reason| DecodeError {
                what: "cluster state",
                reason,
            })?;
        if state.applied_changes.len() > MAX_REMEMBERED_CHANGES {
            return Err(DecodeError {
                what: "cluster state",
                reason: format!(
                    "{} remembered change ids, at most {MAX_REMEMBERED_CHANGES}",
                    state.applied_changes.len()
                ),
            });
        }
        for (pool, id, ramp) in state.ramps() {
            let known = state
                .pool(pool)
                .is_some_and(|l| l.iter().any(|u| u.id == id));
            let checked = if known {
                ramp.check()
            } else {
                Err("no such upstream".into())
            };
            checked.map_err(|why| DecodeError {
                what: "cluster state",
                reason: format!("slow start of upstream {id:?} of pool {pool:?}: {why}"),
            })?;
        }
        if state.purges.len() > MAX_RECENT_PURGES {
            return Err(DecodeError {
                what: "cluster state",
                reason: format!(
                    "{} remembered purges, at most {MAX_RECENT_PURGES}",
                    state.purges.len()
                ),
            });
        }
        for (pool, b) in &state.breakers {
            let bad = |why: String| DecodeError {
                what: "cluster state",
                reason: format!("breakers of pool {pool:?}: {why}"),
            };
            b.policy.check().map_err(bad)?;
            if b.upstreams
                .values()
                .any(|u| u.reports.len() > breaker::MAX_REPORTERS)
            {
                return Err(bad("too many reporters".into()));
            }
        }
        Ok(state)
    }

    /// The index where the once-only change `id` applied, if it is still remembered.
    pub fn applied_change(&self, id: &ChangeId) -> Option<u64> {
        self.applied_changes
            .iter()
            .find(|(seen, _)| seen == id)
            .map(|&(_, at)| at)
    }

    /// Every member's recorded peer address: node name to address text.
    pub fn peers(&self) -> &BTreeMap<String, String> {
        &self.peers
    }

    /// True once the cluster's first `Bootstrap` has applied.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// The command that makes an empty cluster hold the pools of `config`: how the
    /// first log is bootstrapped from the file.
    pub fn bootstrap_command(config: &config::Config) -> Command {
        let pools = config
            .pools
            .iter()
            .map(|p| (p.name.clone(), file_upstreams(p)))
            .collect();
        let peers = config
            .cluster
            .as_ref()
            .filter(|c| !c.join)
            .map(|c| {
                c.peers
                    .iter()
                    .map(|(n, a)| (n.clone(), a.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Command::Bootstrap { pools, peers }
    }

    /// Where the file and the committed state disagree, pool by pool.
    pub fn drift(&self, config: &config::Config) -> Vec<Drift> {
        let mut out = Vec::new();
        for p in &config.pools {
            match self.pools.get(&p.name) {
                // A discovered pool's upstreams are the leader's answers, never the file's.
                Some(_) if p.discover.is_some() => {}
                None => out.push(Drift::PoolOnlyInFile(p.name.clone())),
                Some(list) => {
                    let file = file_upstreams(p);
                    let differ = |a: &[UpstreamSpec], b: &[UpstreamSpec]| -> Vec<String> {
                        let ids = a.iter().filter(|u| !b.contains(u)).map(|u| u.id.clone());
                        ids.collect()
                    };
                    let (in_file, in_cluster) = (differ(&file, list), differ(list, &file));
                    if !in_file.is_empty() || !in_cluster.is_empty() {
                        out.push(Drift::UpstreamsDiffer {
                            pool: p.name.clone(),
                            in_file,
                            in_cluster,
                        });
                    }
                }
            }
        }
        for name in self.pools.keys() {
            if !config.pools.iter().any(|p| &p.name == name) {
                out.push(Drift::PoolOnlyInCluster(name.clone()));
            }
        }
        out
    }
}

/// The changes that carry an edit of the file (`old` to `new`) into the cluster's
/// `state`: only what the edit touched, and only where the cluster differs from the
/// new file, so changes made through the admin API to other upstreams stay, and an
/// edit already applied (by another instance with the same file) proposes nothing.
pub fn file_changes(
    old: &config::Config,
    new: &config::Config,
    state: &ClusterState,
) -> Vec<Command> {
    let mut out = Vec::new();
    for p in &new.pools {
        if let Some(change) = discover_change(old, p, state) {
            out.extend(change);
            continue;
        }
        let wanted = file_upstreams(p);
        let before = old
            .pools
            .iter()
            .find(|o| o.name == p.name)
            .map(file_upstreams);
        let Some(current) = state.pool(&p.name) else {
            if before.as_ref() != Some(&wanted) {
                out.push(Command::SetPool {
                    pool: p.name.clone(),
                    upstreams: wanted,
                });
            }
            continue;
        };
        let before = before.unwrap_or_default();
        for gone in before
            .iter()
            .filter(|b| !wanted.iter().any(|w| w.id == b.id))
        {
            if current.iter().any(|c| c.id == gone.id) {
                out.push(Command::DeleteUpstream {
                    pool: p.name.clone(),
                    id: gone.id.clone(),
                });
            }
        }
        for w in &wanted {
            let edited = !before.contains(w);
            let differs = !current.contains(w);
            if edited && differs {
                out.push(Command::PutUpstream {
                    pool: p.name.clone(),
                    upstream: w.clone(),
                });
            }
        }
    }
    for o in &old.pools {
        let dropped = !new.pools.iter().any(|p| p.name == o.name);
        if dropped && state.pool(&o.name).is_some() {
            out.push(Command::RemovePool {
                pool: o.name.clone(),
            });
        }
    }
    out
}

/// What an edit does to a pool that is discovered in DNS now or was before: `None`
/// when neither (the file's list applies). A discovered pool's membership is the
/// discovery leader's to propose, so the file changes nothing in it; a pool that stops
/// being discovered takes the file's list whole.
fn discover_change(
    old: &config::Config,
    p: &config::Pool,
    state: &ClusterState,
) -> Option<Vec<Command>> {
    let was = old.pools.iter().find(|o| o.name == p.name);
    let was_discovered = was.is_some_and(|o| o.discover.is_some());
    if p.discover.is_some() {
        return Some(Vec::new());
    }
    let wanted = file_upstreams(p);
    (was_discovered && state.pool(&p.name) != Some(&wanted[..])).then(|| {
        vec![Command::SetPool {
            pool: p.name.clone(),
            upstreams: wanted,
        }]
    })
}

/// The upstreams a config pool lists, as the cluster would hold them.
pub fn file_upstreams(pool: &config::Pool) -> Vec<UpstreamSpec> {
    pool.upstreams
        .iter()
        .map(|u| UpstreamSpec {
            id: u.id.clone(),
            address: u.address.to_string(),
            weight: u.weight,
            draining: false,
        })
        .collect()
}

/// A difference between this instance's file and the cluster's committed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The file has a pool the cluster does not: it is served with the file's upstreams.
    PoolOnlyInFile(String),
    /// The cluster has a pool the file does not: it has no routes here, so no traffic.
    PoolOnlyInCluster(String),
    /// Both have the pool with different upstreams: the cluster's are used. Names
    /// the upstreams whose entry (address, weight, draining) only the file has, and
    /// those only the cluster has; an upstream edited on one side is in both lists.
    UpstreamsDiffer {
        pool: String,
        in_file: Vec<String>,
        in_cluster: Vec<String>,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::PoolOnlyInFile(p) => write!(f, "pool {p} is in the file but not in the cluster"),
            Drift::PoolOnlyInCluster(p) => {
                write!(f, "pool {p} is in the cluster but not in the file")
            }
            Drift::UpstreamsDiffer {
                pool,
                in_file,
                in_cluster,
            } => write!(
                f,
                "pool {pool} differs: as in the file only [{}], as in the cluster only [{}]",
                in_file.join(", "),
                in_cluster.join(", ")
            ),
        }
    }
}
