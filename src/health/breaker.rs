//! The circuit breaker of every upstream as the cluster agrees on it: a pure state
//! machine that the replicated state applies at one log position on every instance.
//!
//! ```text
//!            K distinct reports within the window, cap allows
//!   Closed ───────────────────────────────────────────────────▶ Open (until)
//!     ▲                                                          │ leader: its clock ≥ until
//!     │ N successful probes                                      ▼
//!     └──────────────────────────────────────────────────── HalfOpen
//!                       a failed probe: Open again, ejections + 1 (longer)
//! ```
//!
//! Nothing here reads a clock: every time is a proposer's timestamp carried in the
//! command (`at_ms`, milliseconds since the Unix epoch). The ejection time grows with
//! consecutive ejections (`base × ejections`, capped at `max_ejection_ms`) plus jitter
//! derived from the entry itself (pool, upstream, ejection count, timestamp), so every
//! instance computes the same expiry. The pool-wide caps (`max_ejection_percent`,
//! counted after the new ejection, and the panic threshold) are checked here, inside
//! apply, so two concurrent ejections can never overshoot them: the second one is
//! applied against the state the first one left.

use std::collections::BTreeMap;
use std::fmt;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

pub use crate::config::health::{
    Policy, MAX_EJECTION_LIMIT_MS, MAX_HALF_OPEN_SUCCESSES, MAX_REPORTERS, MAX_REPORT_WINDOW_MS,
};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Takes traffic.
    Closed,
    /// Ejected until `until_ms`.
    Open,
    /// Ejection time over: the leader probes it; still no client traffic.
    HalfOpen,
}

/// What made a detector trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// `failures` requests in a row failed.
    ConsecutiveFailures,
    /// `failures` of `requests` in the sliding window failed.
    FailureRate,
    /// `failures` active health checks in a row failed.
    ActiveCheck,
    /// A half-open probe failed.
    Probe,
}

/// The evidence a report carries, kept with the breaker for the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub signal: Signal,
    pub failures: u32,
    pub requests: u32,
}

/// One upstream's breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    pub phase: Phase,
    /// When the phase began (proposer time).
    pub since_ms: u64,
    /// Open: when the leader may move it to half-open.
    #[serde(default)]
    pub until_ms: u64,
    /// Consecutive ejections: the backoff multiplier.
    #[serde(default)]
    pub ejections: u32,
    /// Every ejection of this upstream since its breaker was created (never reset):
    /// the replicated count behind `ringway_upstream_ejections_total`.
    #[serde(default)]
    pub ejected_total: u64,
    /// Closed: reporter to the time of its latest report.
    #[serde(default)]
    pub reports: BTreeMap<String, u64>,
    /// The evidence of the report or probe that last moved it.
    #[serde(default)]
    pub evidence: Option<Evidence>,
}

impl Breaker {
    fn closed() -> Breaker {
        Breaker {
            phase: Phase::Closed,
            since_ms: 0,
            until_ms: 0,
            ejections: 0,
            ejected_total: 0,
            reports: BTreeMap::new(),
            evidence: None,
        }
    }

    /// True while no client traffic goes to it.
    pub fn is_ejected(&self) -> bool {
        self.phase != Phase::Closed
    }
}

/// The breakers of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolBreakers {
    /// The policy of the latest breaker command for this pool.
    pub policy: Policy,
    /// Fewer than `panic_threshold_percent` of the upstreams are healthy: the pool
    /// routes to all of them, ejected or not.
    #[serde(default)]
    pub panic: bool,
    /// Upstreams with a breaker that ever left closed; absent ones are closed.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Breaker>,
}

/// A pool member as the breakers see it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub id: &'a str,
    /// Draining upstreams take no new traffic: they count neither as healthy nor
    /// towards the caps.
    pub draining: bool,
}

/// A report of a tripped detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<'a> {
    pub pool: &'a str,
    pub upstream: &'a str,
    pub reporter: &'a str,
    pub at_ms: u64,
    pub evidence: Evidence,
    pub policy: Policy,
}

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// Recorded; `reporters` of the `needed` distinct reporters are in.
    Recorded { reporters: usize, needed: usize },
    /// The upstream is now open until `until_ms`.
    Ejected { until_ms: u64 },
}

/// Why a breaker command changes nothing. The same on every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(why: String) -> Result<T, Refusal> {
    Err(Refusal(why))
}

impl PoolBreakers {
    pub fn new(policy: Policy) -> PoolBreakers {
        PoolBreakers {
            policy,
            panic: false,
            upstreams: BTreeMap::new(),
        }
    }

    /// The breaker of `id`; a missing one is closed.
    pub fn phase(&self, id: &str) -> Phase {
        self.upstreams.get(id).map_or(Phase::Closed, |b| b.phase)
    }

    /// True while `id` takes no client traffic.
    pub fn is_ejected(&self, id: &str) -> bool {
        self.phase(id) != Phase::Closed
    }

    /// Records a report; ejects once `min_reporters` distinct instances reported
    /// within the window and the cap allows it. A cap that would be exceeded refuses
    /// the whole report, so nothing changes.
    pub fn report(&mut self, members: &[Member<'_>], r: &Report<'_>) -> Result<Reported, Refusal> {
        let member = find(members, r.upstream, r.pool)?;
        let mut b = self
            .upstreams
            .get(r.upstream)
            .cloned()
            .unwrap_or_else(Breaker::closed);
        if b.phase != Phase::Closed {
            return refuse(format!(
                "upstream {:?} of pool {:?} is already ejected",
                r.upstream, r.pool
            ));
        }
        let window = r.policy.report_window_ms;
        b.reports
            .retain(|_, at| at.saturating_add(window) >= r.at_ms);
        b.reports.insert(r.reporter.to_owned(), r.at_ms);
        while b.reports.len() > MAX_REPORTERS {
            let oldest = b
                .reports
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone());
            oldest.map(|k| b.reports.remove(&k));
        }
        let needed = r.policy.min_reporters.max(1) as usize;
        if b.reports.len() < needed {
            let reporters = b.reports.len();
            self.policy = r.policy;
            self.upstreams.insert(r.upstream.to_owned(), b);
            return Ok(Reported::Recorded { reporters, needed });
        }
        if !member.draining {
            self.check_cap(members, &r.policy, r.pool, r.upstream)?;
        }
        self.policy = r.policy;
        let until_ms = self.open(r.pool, r.upstream, &mut b, r.at_ms, r.evidence);
        self.upstreams.insert(r.upstream.to_owned(), b);
        self.settle(members);
        Ok(Reported::Ejected { until_ms })
    }

    /// Open → half-open, proposed by the leader once its clock passed `until_ms`.
    pub fn half_open(
        &mut self,
        members: &[Member<'_>],
        pool: &str,
        id: &str,
        at_ms: u64,
    ) -> Result<(), Refusal> {
        find(members, id, pool)?;
        let Some(b) = self
            .upstreams
            .get_mut(id)
            .filter(|b| b.phase == Phase::Open)
        else {
            return refuse(format!("upstream {id:?} of pool {pool:?} is not open"));
        };
        if at_ms < b.until_ms {
            return refuse(format!(
                "upstream {id:?} of pool {pool:?} is ejected until {}, not {at_ms}",
                b.until_ms
            ));
        }
        b.phase = Phase::HalfOpen;
        b.since_ms = at_ms;
        Ok(())
    }

    /// A half-open probe outcome: `successes` consecutive good probes close the
    /// breaker (when they are enough); a failed probe opens it again, for longer.
    pub fn probe(
        &mut self,
        members: &[Member<'_>],
        pool: &str,
        id: &str,
        at_ms: u64,
        outcome: Probe,
        policy: Policy,
    ) -> Result<(), Refusal> {
        find(members, id, pool)?;
        let mut b = match self.upstreams.get(id) {
            Some(b) if b.phase == Phase::HalfOpen => b.clone(),
            _ => return refuse(format!("upstream {id:?} of pool {pool:?} is not half-open")),
        };
        if let Probe::Passed { successes } = outcome {
            if successes < policy.half_open_successes {
                return refuse(format!(
                    "{successes} successful probes of {id:?} are fewer than the {} required",
                    policy.half_open_successes
                ));
            }
        }
        self.policy = policy;
        match outcome {
            Probe::Passed { successes } => {
                b.phase = Phase::Closed;
                b.since_ms = at_ms;
                b.until_ms = 0;
                b.reports.clear();
                b.evidence = Some(Evidence {
                    signal: Signal::Probe,
                    failures: 0,
                    requests: successes,
                });
            }
            Probe::Failed => {
                let evidence = Evidence {
                    signal: Signal::Probe,
                    failures: 1,
                    requests: 1,
                };
                self.open(pool, id, &mut b, at_ms, evidence);
            }
        }
        self.upstreams.insert(id.to_owned(), b);
        self.settle(members);
        Ok(())
    }

    /// Forgets breakers of upstreams no longer in the pool and recomputes panic
    /// mode. Called after every change to the pool or its breakers.
    pub fn settle(&mut self, members: &[Member<'_>]) {
        self.upstreams
            .retain(|id, _| members.iter().any(|m| m.id == id));
        let active = members.iter().filter(|m| !m.draining).count();
        let ejected = self.ejected(members);
        let healthy = active - ejected;
        self.panic = active > 0
            && (healthy as u64) * 100
                < u64::from(self.policy.panic_threshold_percent) * active as u64;
    }

    fn ejected(&self, members: &[Member<'_>]) -> usize {
        members
            .iter()
            .filter(|m| !m.draining && self.is_ejected(m.id))
            .count()
    }

    fn check_cap(
        &self,
        members: &[Member<'_>],
        policy: &Policy,
        pool: &str,
        id: &str,
    ) -> Result<(), Refusal> {
        let active = members.iter().filter(|m| !m.draining).count() as u64;
        let after = self.ejected(members) as u64 + 1;
        let max = u64::from(policy.max_ejection_percent);
        if after * 100 > max * active {
            return refuse(format!(
                "ejecting {id:?} would eject {after} of the {active} upstreams of pool {pool:?}, over max_ejection_percent {max}"
            ));
        }
        Ok(())
    }

    /// Moves `b` to open: one more consecutive ejection, unless it stayed closed for
    /// at least `max_ejection_ms` since its last readmission (then it starts over).
    fn open(&self, pool: &str, id: &str, b: &mut Breaker, at_ms: u64, evidence: Evidence) -> u64 {
        let behaved = b.phase == Phase::Closed
            && b.ejections > 0
            && at_ms.saturating_sub(b.since_ms) >= self.policy.max_ejection_ms;
        b.ejections = if behaved {
            1
        } else {
            b.ejections.saturating_add(1)
        };
        b.ejected_total = b.ejected_total.saturating_add(1);
        let seed = jitter_seed(pool, id, b.ejections, at_ms);
        b.phase = Phase::Open;
        b.since_ms = at_ms;
        b.until_ms = at_ms.saturating_add(self.policy.ejection_ms(b.ejections, seed));
        b.reports.clear();
        b.evidence = Some(evidence);
        b.until_ms
    }
}

/// A half-open probe's outcome as the leader proposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Probe {
    /// `successes` probes in a row passed.
    Passed {
        successes: u32,
    },
    Failed,
}

fn find<'m>(members: &'m [Member<'m>], id: &str, pool: &str) -> Result<&'m Member<'m>, Refusal> {
    match members.iter().find(|m| m.id == id) {
        Some(m) => Ok(m),
        None => refuse(format!("pool {pool:?} has no upstream {id:?}")),
    }
}

/// The jitter of one ejection, derived from the entry so every instance agrees.
fn jitter_seed(pool: &str, id: &str, ejections: u32, at_ms: u64) -> u64 {
    let mut h = Md5::new();
    for part in [pool.as_bytes(), b"\0", id.as_bytes(), b"\0"] {
        h.update(part);
    }
    h.update(ejections.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}
