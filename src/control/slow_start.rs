//! The leader's side of slow start: it moves every ramp in the replicated state to
//! its next step once the step's time has passed, by proposing
//! `Command::SlowStartStep`. The steps are log entries, so every instance builds
//! the same ring at every step; no instance ramps by its own clock.
//!
//! A step is due when the leader's clock passed the ramp's `at_ms` plus one step
//! (`slow_start_ms / (slow_start_steps - 1)`: the first step is taken on joining,
//! the last `slow_start_ms` later), or when this leader has seen the ramp at
//! its current step for one step's time, whichever comes first: the second bounds
//! the wait when `at_ms` came from a proposer whose clock runs ahead. A new leader
//! continues every ramp from the replicated state; apply refuses a step that is not
//! the next one, so a retried or duplicated proposal changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use super::breakers::{wall_ms, PROPOSE_TIMEOUT};
use super::Proposer;
use crate::cluster::state::Command;
use crate::raft::Role;

/// How often the leader looks at ramps. Also the shortest step the config allows
/// (`config::slow_start::MIN_SLOW_START_STEP_MS`).
pub const SUPERVISE_INTERVAL: Duration = Duration::from_millis(100);
/// Step proposals under way at once; more wait for the next look.
pub const MAX_STEPS_IN_FLIGHT: usize = 32;
/// The same step of the same upstream is proposed again at most this often.
pub const STEP_RETRY: Duration = Duration::from_secs(1);
/// A step this late or less keeps the ramp's schedule: two looks and a commit.
pub const ABSORBED_LATENESS: Duration = Duration::from_millis(250);

/// (pool, upstream).
type Key = (String, String);

/// What this leader knows of one ramp beyond the replicated state.
struct Seen {
    step: u32,
    /// When this leader first saw the ramp at `step`.
    since: Instant,
    /// When it last proposed the next step.
    proposed: Option<Instant>,
}

/// Runs until `shutdown` turns true; acts only while this instance leads.
pub async fn run(proposer: Proposer, mut shutdown: watch::Receiver<bool>) {
    let in_flight = Arc::new(Semaphore::new(MAX_STEPS_IN_FLIGHT));
    let mut seen: HashMap<Key, Seen> = HashMap::new();
    let mut ticker = tokio::time::interval(SUPERVISE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => supervise(&proposer, &in_flight, &mut seen),
            _ = shutdown.wait_for(|&s| s) => return,
        }
    }
}

fn supervise(proposer: &Proposer, in_flight: &Arc<Semaphore>, seen: &mut HashMap<Key, Seen>) {
    let view = proposer.cluster().view();
    if view.role != Role::Leader {
        seen.clear();
        return;
    }
    let now_ms = wall_ms();
    let now = Instant::now();
    let mut current = Vec::new();
    for (pool, id, ramp) in view.state.ramps() {
        let key = (pool.to_owned(), id.to_owned());
        current.push(key.clone());
        let s = seen.entry(key.clone()).or_insert(Seen {
            step: ramp.step,
            since: now,
            proposed: None,
        });
        if s.step != ramp.step {
            *s = Seen {
                step: ramp.step,
                since: now,
                proposed: None,
            };
        }
        let step = Duration::from_millis(ramp.step_ms());
        let due = now_ms >= ramp.next_due_ms() || now.duration_since(s.since) >= step;
        let retry = s
            .proposed
            .is_none_or(|at| now.duration_since(at) >= STEP_RETRY);
        if !due || !retry {
            continue;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            break;
        };
        s.proposed = Some(now);
        // Stamped with the time it was due rather than now, when it is late by
        // up to `ABSORBED_LATENESS`, so the lateness of each step (a tick, a
        // commit) does not add up over the ramp; a step later than that (a leader
        // change) is stamped with its real time, so the ramp does not rush.
        let absorbed = now_ms.saturating_sub(ABSORBED_LATENESS.as_millis() as u64);
        let cmd = Command::SlowStartStep {
            pool: key.0,
            upstream: key.1,
            step: ramp.step + 1,
            at_ms: now_ms.min(ramp.next_due_ms().max(absorbed)),
        };
        let proposer = proposer.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(PROPOSE_TIMEOUT, proposer.propose(cmd.clone())).await {
                Ok(Ok(_)) => tracing::debug!(?cmd, "slow start step applied"),
                Ok(Err(e)) => tracing::debug!(?cmd, error = %e, "slow start step not applied"),
                Err(_) => tracing::debug!(?cmd, "slow start step timed out"),
            }
            drop(permit);
        });
    }
    seen.retain(|k, _| current.contains(k));
}
