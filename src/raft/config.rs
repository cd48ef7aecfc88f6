//! Core configuration, its validation, and the hidden bug-injection switches used to test the checker.

use super::types::{NodeId, NO_NODE};

/// Minimum election timeout in ticks. Ten heartbeats' worth (heartbeat = 2 ticks gives
/// five chances) so one or two lost heartbeats do not start an election.
pub const DEFAULT_ELECTION_TICK: u32 = 10;
/// Heartbeat interval in ticks; must be well below the election timeout.
pub const DEFAULT_HEARTBEAT_TICK: u32 = 2;
/// Entries per AppendEntries. Large enough to amortise per-message cost, small enough
/// that one message never monopolises a connection.
pub const DEFAULT_MAX_ENTRIES_PER_MSG: usize = 64;
/// Bytes of entries per AppendEntries (approximate, see `Entry::size_hint`). A single
/// larger entry is still sent alone; proposals above this size are refused.
pub const DEFAULT_MAX_BYTES_PER_MSG: usize = 256 * 1024;
/// AppendEntries messages in flight per follower before the leader waits for acks.
/// Bounds the memory a slow follower can pin on the leader and in the network.
pub const DEFAULT_MAX_INFLIGHT_MSGS: usize = 32;
/// Upper bound on election ticks: beyond this a group takes unreasonably long to fail over.
pub const MAX_ELECTION_TICK: u32 = 10_000;

/// Deliberate protocol bugs for proving the simulator's checker finds them. All off by
/// default. The switches exist only with the `testkit` feature (which tests and
/// benches turn on); without it every accessor is a constant `false` and the release
/// binary carries none of them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BugInjection {
    /// Leader commits any index replicated on a majority, even from an older term (Figure 8).
    #[cfg(feature = "testkit")]
    pub commit_old_term_by_count: bool,
    /// A restarted node forgets whom it voted for in its current term.
    #[cfg(feature = "testkit")]
    pub forget_vote_on_restart: bool,
    /// Votes are granted without checking that the candidate's log is at least as up to date.
    #[cfg(feature = "testkit")]
    pub vote_for_shorter_log: bool,
    /// A voter grants a second vote in the same term.
    #[cfg(feature = "testkit")]
    pub vote_twice_in_term: bool,
    /// AppendEntries is accepted without checking the term of the entry at `prev_index`.
    #[cfg(feature = "testkit")]
    pub skip_prev_term_check: bool,
    /// A leader counts its own entries toward the commit quorum as soon as it appends
    /// them, before they are durable on its disk (while its AppendEntries are already out).
    #[cfg(feature = "testkit")]
    pub count_own_entries_before_durable: bool,
    /// A leader takes an AppendEntries acknowledgement sent in an earlier term as one of
    /// its own term: the follower's match index (and so the commit index) moves on an
    /// answer about some other leader's log.
    #[cfg(feature = "testkit")]
    pub accept_stale_term_ack: bool,
    /// A follower replaces its whole log with an InstallSnapshot even when the log holds
    /// the snapshot's last entry (same term) and more after it, which it may already have
    /// acknowledged.
    #[cfg(feature = "testkit")]
    pub discard_log_on_matching_snapshot: bool,
    /// A follower bounds the leader's commit index by its own last index instead of the
    /// last entry the AppendEntries verified, so an unverified stale suffix may commit.
    #[cfg(feature = "testkit")]
    pub commit_past_verified: bool,
    /// A candidate counts a refused vote as a granted one.
    #[cfg(feature = "testkit")]
    pub count_denied_vote: bool,
    /// A candidate counts a vote granted in an earlier term of its own towards this term.
    #[cfg(feature = "testkit")]
    pub count_stale_vote_grant: bool,
}

/// Reads of the switches: the field with `testkit`, `false` without.
macro_rules! switches {
    ($($name:ident),*) => {
        impl BugInjection {
            $(
                #[inline(always)]
                pub(crate) fn $name(&self) -> bool {
                    #[cfg(feature = "testkit")]
                    return self.$name;
                    #[cfg(not(feature = "testkit"))]
                    return false;
                }
            )*
        }
    };
}

switches!(
    commit_old_term_by_count,
    forget_vote_on_restart,
    vote_for_shorter_log,
    vote_twice_in_term,
    skip_prev_term_check,
    count_own_entries_before_durable,
    accept_stale_term_ack,
    discard_log_on_matching_snapshot,
    commit_past_verified,
    count_denied_vote,
    count_stale_vote_grant
);

/// Settings of one Raft node. Build with [`Config::try_new`], adjust fields, and
/// [`Config::validate`] (also done by `Node::try_new`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Minimum election timeout in ticks; each timeout is drawn from `[e, 2e)`.
    pub election_tick: u32,
    /// Heartbeat interval in ticks (`< election_tick`).
    pub heartbeat_tick: u32,
    /// Entries per AppendEntries (`>= 1`; 1 disables batching).
    pub max_entries_per_msg: usize,
    /// Approximate bytes of entries per AppendEntries (`>= 1`).
    pub max_bytes_per_msg: usize,
    /// AppendEntries in flight per follower (`>= 1`; 1 disables pipelining).
    pub max_inflight_msgs: usize,
    /// PreVote and CheckQuorum, which are only offered together: PreVote stops a
    /// partitioned node from inflating terms, CheckQuorum makes a cut-off leader step
    /// down and gives voters the lease that lets them ignore disruptive candidates.
    pub pre_vote_check_quorum: bool,
    /// Seed for the randomized election timeouts (mixed with `id`).
    pub seed: u64,
    /// Where a fresh founder's [`super::types::HardState::life`] comes from: it must
    /// differ between two starts of a node from empty data dirs. Drawn from the operating
    /// system by [`Config::try_new`]; the simulator derives it from its seed.
    pub life_seed: u64,
    #[doc(hidden)]
    pub bugs: BugInjection,
}

/// Why a [`Config`] was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Node id 0 means "nobody" and cannot be a node's id.
    ZeroId,
    /// `heartbeat_tick` must be at least 1.
    ZeroHeartbeatTick,
    /// `election_tick` must exceed `heartbeat_tick`, or followers time out between heartbeats.
    ElectionTickNotAboveHeartbeat {
        election_tick: u32,
        heartbeat_tick: u32,
    },
    /// `election_tick` above [`MAX_ELECTION_TICK`].
    ElectionTickTooLarge { election_tick: u32 },
    /// `max_entries_per_msg` must be at least 1.
    ZeroMaxEntries,
    /// `max_bytes_per_msg` must be at least 1.
    ZeroMaxBytes,
    /// `max_inflight_msgs` must be at least 1.
    ZeroInflight,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid raft config: {self:?}")
    }
}

impl std::error::Error for ConfigError {}

/// 64 bits from the operating system; if it cannot give them, the clock and the
/// process id (two wiped lives of one node do not start in the same nanosecond).
fn random_life_seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl Config {
    /// Defaults for node `id`; rejects id 0.
    pub fn try_new(id: NodeId) -> Result<Config, ConfigError> {
        let cfg = Config {
            id,
            election_tick: DEFAULT_ELECTION_TICK,
            heartbeat_tick: DEFAULT_HEARTBEAT_TICK,
            max_entries_per_msg: DEFAULT_MAX_ENTRIES_PER_MSG,
            max_bytes_per_msg: DEFAULT_MAX_BYTES_PER_MSG,
            max_inflight_msgs: DEFAULT_MAX_INFLIGHT_MSGS,
            pre_vote_check_quorum: true,
            seed: 0,
            life_seed: random_life_seed(),
            bugs: BugInjection::default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every bound; the first violated one is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NO_NODE {
            return Err(ConfigError::ZeroId);
        }
        self.validate_ticks()?;
        if self.max_entries_per_msg == 0 {
            return Err(ConfigError::ZeroMaxEntries);
        }
        if self.max_bytes_per_msg == 0 {
            return Err(ConfigError::ZeroMaxBytes);
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroInflight);
        }
        Ok(())
    }

    fn validate_ticks(&self) -> Result<(), ConfigError> {
        if self.heartbeat_tick == 0 {
            return Err(ConfigError::ZeroHeartbeatTick);
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError::ElectionTickNotAboveHeartbeat {
                election_tick: self.election_tick,
                heartbeat_tick: self.heartbeat_tick,
            });
        }
        if self.election_tick > MAX_ELECTION_TICK {
            return Err(ConfigError::ElectionTickTooLarge {
                election_tick: self.election_tick,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_zero_id() {
        assert_eq!(Config::try_new(0), Err(ConfigError::ZeroId));
    }

    #[test]
    fn rejects_election_not_above_heartbeat() {
        let mut c = Config::try_new(1).unwrap();
        c.election_tick = 2;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionTickNotAboveHeartbeat { .. })
        ));
    }

    #[test]
    fn rejects_zero_bounds() {
        let mut c = Config::try_new(1).unwrap();
        c.max_inflight_msgs = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroInflight));
        c.max_inflight_msgs = 1;
        c.max_entries_per_msg = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroMaxEntries));
    }
}
