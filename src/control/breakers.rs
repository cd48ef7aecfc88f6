//! The feedback loop's control side, one task per instance:
//!
//! - every [`Trip`] from this instance's detectors becomes a `BreakerReport` carrying
//!   the evidence, the pool's breaker policy and this node's name as reporter, handed
//!   to the [`Proposer`] (the leader proposes it; a follower sends it to the leader).
//! - the leader, and only the leader, moves open breakers whose ejection time passed
//!   (by its clock) to half-open, probes half-open upstreams every
//!   `probe_interval_ms`, and proposes readmission after `half_open_successes`
//!   passes in a row, or a longer ejection at the first failure.
//!
//! Why the leader alone probes: the half-open phase is a question the cluster asks
//! once ("is it back?"), and the leader is the one instance that can propose the
//! answer without a network hop; probing from every instance would multiply the
//! probe load by the cluster size for a decision that is made once anyway. A leader
//! change loses only the count of passes so far (the phase itself is replicated):
//! the new leader starts counting again. The leader's own view is kept honest by
//! the other instances: if the readmitted upstream still fails for them, their
//! detectors report it again.
//!
//! Proposals never block the loop: each runs in a task of its own, at most
//! [`MAX_PROPOSALS_IN_FLIGHT`] at once (more are dropped; a still-failing upstream
//! trips again), each bounded by [`PROPOSE_TIMEOUT`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Semaphore};

use super::Proposer;
use crate::cluster::state::Command;
use crate::health::breaker::{Phase, Policy, Probe};
use crate::health::detector::Trip;
use crate::health::probe::{probe, ProbeTls};
use crate::proxy::{PoolState, Proxy};
use crate::raft::Role;

/// How often the leader looks at breakers (expiries, probes due).
pub const SUPERVISE_INTERVAL: Duration = Duration::from_millis(100);
/// Breaker proposals under way at once.
pub const MAX_PROPOSALS_IN_FLIGHT: usize = 32;
/// How long one proposal (forwarding included) may take.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The same transition of the same upstream is proposed again at most this often.
pub const PROPOSAL_RETRY: Duration = Duration::from_secs(1);
/// Half-open probes under way at once.
pub const MAX_PROBES_IN_FLIGHT: usize = 64;

/// Milliseconds since the Unix epoch: the timestamps written into breaker commands.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the health task needs.
pub struct Controller {
    /// This node's name: the reporter in its reports.
    pub node: String,
    pub proxy: Arc<Proxy>,
    pub proposer: Proposer,
}

type Key = (String, String);

/// The leader's count of one half-open upstream's probes.
struct Probing {
    since_ms: u64,
    successes: u32,
    next: Instant,
    running: bool,
}

struct ProbeDone {
    key: Key,
    since_ms: u64,
    passed: bool,
}

struct Loop {
    ctl: Arc<Controller>,
    proposals: Arc<Semaphore>,
    probing: HashMap<Key, Probing>,
    proposed: HashMap<(Key, &'static str), Instant>,
    done_tx: mpsc::Sender<ProbeDone>,
}

impl Controller {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Some(mut trips) = self.proxy.snapshot().health.take_trips() else {
            tracing::warn!("another health task already runs for this proxy");
            return;
        };
        let (done_tx, mut done_rx) = mpsc::channel(MAX_PROBES_IN_FLIGHT);
        let mut l = Loop {
            ctl: Arc::new(self),
            proposals: Arc::new(Semaphore::new(MAX_PROPOSALS_IN_FLIGHT)),
            probing: HashMap::new(),
            proposed: HashMap::new(),
            done_tx,
        };
        let mut ticker = tokio::time::interval(SUPERVISE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(trip) = trips.recv() => l.report(trip),
                Some(done) = done_rx.recv() => l.probe_done(done),
                _ = ticker.tick() => l.supervise(),
                _ = shutdown.wait_for(|&s| s) => return,
            }
        }
    }
}

impl Loop {
    fn report(&mut self, trip: Trip) {
        let snapshot = self.ctl.proxy.snapshot();
        let Some(pool) = snapshot.pool(&trip.pool) else {
            return;
        };
        tracing::info!(pool = %trip.pool, upstream = %trip.upstream, evidence = ?trip.evidence, "upstream failing here; reporting it to the cluster");
        let cmd = Command::BreakerReport {
            pool: trip.pool.to_string(),
            upstream: trip.upstream.to_string(),
            reporter: self.ctl.node.clone(),
            at_ms: wall_ms(),
            evidence: trip.evidence,
            policy: pool.health.settings.breaker,
        };
        self.propose(cmd);
    }

    /// Proposes in a task of its own (through the leader when this is a follower).
    fn propose(&self, cmd: Command) {
        let Ok(permit) = self.proposals.clone().try_acquire_owned() else {
            tracing::debug!("too many breaker proposals under way; dropping one");
            return;
        };
        let ctl = self.ctl.clone();
        tokio::spawn(async move {
            let outcome =
                tokio::time::timeout(PROPOSE_TIMEOUT, ctl.proposer.propose(cmd.clone())).await;
            match outcome {
                Ok(Ok(_)) => tracing::debug!(?cmd, "breaker change applied"),
                Ok(Err(e)) => tracing::debug!(?cmd, error = %e, "breaker change not applied"),
                Err(_) => tracing::debug!(?cmd, "breaker change timed out"),
            }
            drop(permit);
        });
    }

    /// The leader's duties: expiries to half-open, probes, readmissions.
    fn supervise(&mut self) {
        let view = self.ctl.proposer.cluster().view();
        if view.role != Role::Leader {
            self.probing.clear();
            return;
        }
        let snapshot = self.ctl.proxy.snapshot();
        let now = wall_ms();
        let mut half_open = Vec::new();
        for pool in &snapshot.pools {
            let Some(breakers) = view.state.breakers(&pool.name) else {
                continue;
            };
            for (id, b) in &breakers.upstreams {
                let key = (pool.name.to_string(), id.clone());
                match b.phase {
                    Phase::Open if now >= b.until_ms && self.due(&key, "half_open") => {
                        let cmd = Command::BreakerHalfOpen {
                            pool: key.0.clone(),
                            upstream: key.1.clone(),
                            at_ms: now,
                        };
                        self.propose(cmd);
                    }
                    Phase::HalfOpen => {
                        half_open.push(key.clone());
                        self.maybe_probe(pool, key, b.since_ms);
                    }
                    _ => {}
                }
            }
        }
        self.probing.retain(|k, _| half_open.contains(k));
    }

    /// True (and remembered) unless the same proposal went out within
    /// [`PROPOSAL_RETRY`].
    fn due(&mut self, key: &Key, what: &'static str) -> bool {
        let now = Instant::now();
        self.proposed
            .retain(|_, at| now.duration_since(*at) < PROPOSAL_RETRY);
        let k = (key.clone(), what);
        if self.proposed.contains_key(&k) {
            return false;
        }
        self.proposed.insert(k, now);
        true
    }

    fn maybe_probe(&mut self, pool: &PoolState, key: Key, since_ms: u64) {
        let p = self.probing.entry(key.clone()).or_insert(Probing {
            since_ms,
            successes: 0,
            next: Instant::now(),
            running: false,
        });
        if p.since_ms != since_ms {
            *p = Probing {
                since_ms,
                successes: 0,
                next: Instant::now(),
                running: false,
            };
        }
        if p.running || Instant::now() < p.next {
            return;
        }
        let Some(up) = pool.upstreams.iter().find(|u| *u.id == *key.1) else {
            return;
        };
        let Ok(slot) = self.done_tx.clone().try_reserve_owned() else {
            return;
        };
        p.running = true;
        let addr = up.addr.clone();
        let tls = up.settings().tls.clone();
        let check = pool.health.settings.active.clone();
        let timeout = check.as_ref().map_or(pool.timeouts.connect, |a| a.timeout);
        tokio::spawn(async move {
            let tls = tls.as_deref().map(|t| t as &dyn ProbeTls);
            let passed = probe(&addr, check.as_ref(), tls, timeout).await;
            slot.send(ProbeDone {
                key,
                since_ms,
                passed,
            });
        });
    }

    fn probe_done(&mut self, done: ProbeDone) {
        let snapshot = self.ctl.proxy.snapshot();
        let Some(pool) = snapshot.pool(&done.key.0) else {
            return;
        };
        let settings = &pool.health.settings;
        let policy: Policy = settings.breaker;
        let Some(p) = self
            .probing
            .get_mut(&done.key)
            .filter(|p| p.since_ms == done.since_ms)
        else {
            return;
        };
        p.running = false;
        p.next = Instant::now() + settings.probe_interval;
        let probe = if done.passed {
            p.successes += 1;
            if p.successes < policy.half_open_successes {
                return;
            }
            Probe::Passed {
                successes: p.successes,
            }
        } else {
            self.probing.remove(&done.key);
            Probe::Failed
        };
        tracing::info!(pool = %done.key.0, upstream = %done.key.1, ?probe, "half-open probes decided");
        let at_ms = wall_ms();
        let cmd = Command::BreakerProbe {
            pool: done.key.0.clone(),
            upstream: done.key.1.clone(),
            at_ms,
            probe,
            policy,
        };
        // A readmission ramps the upstream up, with this pool's slow start.
        let slow_start = pool.slow_start;
        self.propose(cmd.with_slow_start(|_| Some(slow_start), at_ms));
    }
}
