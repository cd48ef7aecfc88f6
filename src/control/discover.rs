//! The discovery controller, one task per instance: the leader, and only the leader,
//! resolves every discovered pool each `interval_ms` and proposes what changed through
//! the [`Proposer`], so every instance moves its ring at the same log index.
//!
//! Why only the leader: instances that each resolved on their own schedule would
//! disagree for as long as their answers did. A follower never acts on an answer; it
//! reports what the leader does ("resolved by the leader") in `/api/pools`. A leader
//! change loses only a held-back removal's count (the new leader starts counting
//! again), never the pool: ids live in the replicated state.
//!
//! One resolution per pool is under way at once, and the next waits for the previous
//! one's proposal to decide, so the answer is always compared with the state that
//! proposal made. Outcomes are counted (`ringway_discovery_resolutions_total`,
//! `ringway_discovery_changes_total`, both by `pool` and `result`) and logged once per
//! change of condition, not once per interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::breakers::wall_ms;
use super::Proposer;
use crate::cluster::driver::ProposeFailure;
use crate::cluster::state::Command;
use crate::config::bounds::MAX_POOLS;
use crate::config::discover::{Discover, MIN_DISCOVER_INTERVAL};
use crate::config::Config;
use crate::discover::{decide, Decision, Failure, Found, Held, Resolver};
use crate::metrics::Metrics;
use crate::raft::Role;

/// How often the controller looks for pools due: the shortest interval allowed.
pub const TICK: Duration = MIN_DISCOVER_INTERVAL;
/// How long one proposal (forwarding included) may take before the next resolution
/// of its pool goes ahead.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/api/pools` shows of a discovered pool on this instance.
#[derive(Debug, Clone, Default)]
pub struct PoolStatus {
    /// This instance resolves (it leads); false: the leader does.
    pub resolving: bool,
    pub resolver: String,
    /// When this instance last resolved (ms since the epoch).
    pub last_at_ms: Option<u64>,
    /// `ok`, `unchanged`, `held`, or a failure's label.
    pub last_result: Option<&'static str>,
    pub last_error: Option<String>,
    /// Upstreams the last good answer gave.
    pub found: usize,
    /// A removal held back: the ids it would remove, answers seen, answers needed.
    pub held: Option<(Vec<String>, u32, u32)>,
    /// The log index of the last change this instance's resolutions made.
    pub last_change_index: Option<u64>,
}

/// The discovery status of every pool, shared with the admin API.
#[derive(Debug, Default)]
pub struct Board {
    pools: Mutex<BTreeMap<String, PoolStatus>>,
}

impl Board {
    fn update(&self, pool: &str, f: impl FnOnce(&mut PoolStatus)) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        f(pools.entry(pool.to_owned()).or_default());
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|name, _| keep(name));
    }

    /// The `discover` object of `/api/pools` for a pool discovered by `d`.
    pub fn json(&self, pool: &str, d: &Discover) -> Value {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let s = pools.get(pool).cloned().unwrap_or_default();
        let held = s.held.map(
            |(removes, seen, needed)| json!({"removes": removes, "seen": seen, "needed": needed}),
        );
        json!({
            "dns": d.dns,
            "type": d.record.as_str(),
            "interval_ms": d.interval.as_millis() as u64,
            "resolver": s.resolver,
            "resolved_by": if s.resolving { "this instance" } else { "the leader" },
            "last_resolution_ms": s.last_at_ms,
            "last_result": s.last_result,
            "last_error": s.last_error,
            "found": s.found,
            "held": held,
            "last_change_index": s.last_change_index,
        })
    }
}

/// The discovery counters.
#[derive(Clone)]
struct Counters {
    resolutions: IntCounterVec,
    changes: IntCounterVec,
}

impl Counters {
    fn register(metrics: &Metrics) -> Counters {
        let vec = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["pool", "result"])
                .expect("constant metric names and labels are valid")
        };
        let c = Counters {
            resolutions: vec(
                "ringway_discovery_resolutions_total",
                "DNS resolutions of discovered pools by the leader, by result (ok or why the pool was kept).",
            ),
            changes: vec(
                "ringway_discovery_changes_total",
                "What the leader did with answers that change a pool: proposed, held (a large removal held back), applied, refused, failed.",
            ),
        };
        metrics.register(Box::new(c.resolutions.clone()));
        metrics.register(Box::new(c.changes.clone()));
        c
    }
}

/// What the discovery task needs.
pub struct Controller {
    pub proposer: Proposer,
    /// The config in force (the reloader's).
    pub config: watch::Receiver<Arc<Config>>,
    pub board: Arc<Board>,
    pub metrics: Arc<Metrics>,
}

/// One pool's run on this instance.
struct PoolRun {
    settings: Discover,
    next: Instant,
    busy: bool,
    held: Option<Held>,
    /// The last condition logged (a result label), so each is logged once.
    condition: Option<&'static str>,
}

enum Event {
    Resolved {
        pool: String,
        settings: Discover,
        answer: Result<Found, Failure>,
    },
    Proposed {
        pool: String,
        /// The applied index, or the `result` label and why.
        outcome: Result<u64, (&'static str, String)>,
    },
}

struct Loop {
    ctl: Controller,
    counters: Counters,
    runs: HashMap<String, PoolRun>,
    events: mpsc::Sender<Event>,
}

impl Controller {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // One resolution and one proposal per pool at most are under way.
        let (events, mut rx) = mpsc::channel(MAX_POOLS);
        let counters = Counters::register(&self.metrics);
        let mut l = Loop {
            ctl: self,
            counters,
            runs: HashMap::new(),
            events,
        };
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(e) = rx.recv() => l.event(e),
                _ = ticker.tick() => l.supervise(),
                _ = shutdown.wait_for(|&s| s) => return,
            }
        }
    }
}

impl Loop {
    fn supervise(&mut self) {
        let config = self.ctl.config.borrow().clone();
        let view = self.ctl.proposer.cluster().view();
        let leading = view.role == Role::Leader && view.state.is_bootstrapped();
        let discovered: BTreeMap<&str, &Discover> = config
            .pools
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.discover.as_ref()?)))
            .collect();
        self.runs
            .retain(|name, _| discovered.contains_key(name.as_str()));
        self.ctl.board.retain(|name| discovered.contains_key(name));
        let now = Instant::now();
        for (&pool, &d) in &discovered {
            let run = self.runs.entry(pool.to_owned()).or_insert_with(|| PoolRun {
                settings: d.clone(),
                next: now,
                busy: false,
                held: None,
                condition: None,
            });
            if run.settings != *d {
                run.settings = d.clone();
                run.held = None;
                run.next = now;
            }
            if !leading {
                run.held = None;
                self.ctl.board.update(pool, |s| {
                    s.resolving = false;
                    s.held = None;
                });
                continue;
            }
            if run.busy || now < run.next {
                continue;
            }
            run.busy = true;
            run.next = now + d.interval;
            let resolver = Resolver::new(d.resolver);
            self.ctl.board.update(pool, |s| {
                s.resolving = true;
                s.resolver = resolver.server.to_string();
            });
            let (events, pool, settings) = (self.events.clone(), pool.to_owned(), d.clone());
            tokio::spawn(async move {
                let answer = resolver.discover(&settings).await;
                let _ = events
                    .send(Event::Resolved {
                        pool,
                        settings,
                        answer,
                    })
                    .await;
            });
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Resolved {
                pool,
                settings,
                answer,
            } => self.resolved(pool, settings, answer),
            Event::Proposed { pool, outcome } => self.proposed(&pool, outcome),
        }
    }

    fn resolved(&mut self, pool: String, settings: Discover, answer: Result<Found, Failure>) {
        let Some(run) = self.runs.get_mut(&pool).filter(|r| r.settings == settings) else {
            return; // the pool left the file or changed meanwhile
        };
        run.busy = false;
        let view = self.ctl.proposer.cluster().view();
        if view.role != Role::Leader {
            return;
        }
        let result = answer.as_ref().map_or_else(|f| f.label(), |_| "ok");
        self.counters
            .resolutions
            .with_label_values(&[pool.as_str(), result])
            .inc();
        let current = view.state.pool(&pool);
        let decision = decide(&pool, &settings, current, answer.as_ref(), &mut run.held);
        let found = answer.as_ref().map_or(0, Found::len);
        let (label, error) = match &decision {
            Decision::Unchanged => ("unchanged", None),
            Decision::Propose(_) => ("ok", None),
            Decision::Hold { .. } => ("held", None),
            Decision::Keep(f) => (f.label(), Some(f.to_string())),
        };
        let held = run
            .held
            .as_ref()
            .map(|h| (h.removes.clone(), h.seen, settings.hold_down));
        self.ctl.board.update(&pool, |s| {
            s.last_at_ms = Some(wall_ms());
            s.last_result = Some(label);
            s.last_error = error;
            s.held = held;
            if answer.is_ok() {
                s.found = found;
            }
        });
        self.log_condition(&pool, &settings, &decision);
        match decision {
            Decision::Propose(cmd) => self.propose(pool, cmd),
            Decision::Hold { .. } => self.count_change(&pool, "held"),
            Decision::Unchanged | Decision::Keep(_) => {}
        }
    }

    /// Logs a pool's condition when it differs from the last one logged.
    fn log_condition(&mut self, pool: &str, d: &Discover, decision: &Decision) {
        let Some(run) = self.runs.get_mut(pool) else {
            return;
        };
        let condition = match decision {
            Decision::Unchanged | Decision::Propose(_) => "ok",
            Decision::Hold { .. } => "held",
            Decision::Keep(f) => f.label(),
        };
        if run.condition == Some(condition) {
            return;
        }
        run.condition = Some(condition);
        match decision {
            Decision::Unchanged | Decision::Propose(_) => {
                tracing::info!(pool, dns = %d.dns, "DNS discovery answers")
            }
            Decision::Hold { seen, needed } => tracing::warn!(
                pool, dns = %d.dns, seen, needed,
                "DNS answer would remove more than max_remove_percent of the pool; held back until it repeats"
            ),
            Decision::Keep(why) => tracing::warn!(
                pool, dns = %d.dns, error = %why,
                "DNS discovery failed; the pool keeps its upstreams"
            ),
        }
    }

    fn propose(&mut self, pool: String, cmd: Command) {
        let Some(run) = self.runs.get_mut(&pool) else {
            return;
        };
        run.busy = true;
        // An upstream the answer adds to a pool that already serves ramps up like one
        // an operator adds, when the pool in force has slow start on.
        let config = self.ctl.config.borrow().clone();
        let cmd = cmd.with_slow_start(|p| config.slow_start(p), wall_ms());
        self.count_change(&pool, "proposed");
        tracing::info!(pool, ?cmd, "proposing the discovered upstreams");
        let (proposer, events) = (self.ctl.proposer.clone(), self.events.clone());
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(PROPOSE_TIMEOUT, proposer.propose(cmd)).await {
                Ok(Ok(index)) => Ok(index),
                Ok(Err(e @ ProposeFailure::Refused(_))) => Err(("refused", e.to_string())),
                Ok(Err(e)) => Err(("failed", e.to_string())),
                Err(_) => Err(("failed", format!("not decided within {PROPOSE_TIMEOUT:?}"))),
            };
            let _ = events.send(Event::Proposed { pool, outcome }).await;
        });
    }

    fn proposed(&mut self, pool: &str, outcome: Result<u64, (&'static str, String)>) {
        if let Some(run) = self.runs.get_mut(pool) {
            run.busy = false;
        }
        match outcome {
            Ok(index) => {
                self.count_change(pool, "applied");
                tracing::info!(pool, index, "discovered upstreams applied");
                self.ctl
                    .board
                    .update(pool, |s| s.last_change_index = Some(index));
            }
            Err((result, why)) => {
                self.count_change(pool, result);
                tracing::warn!(pool, error = %why, "discovered upstreams not applied; the next resolution tries again");
            }
        }
    }

    fn count_change(&self, pool: &str, result: &str) {
        self.counters
            .changes
            .with_label_values(&[pool, result])
            .inc();
    }
}
