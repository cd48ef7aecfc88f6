//! `pools[].slow_start_ms` and `pools[].slow_start_steps`: how an upstream that joins
//! a pool, or that its breaker readmits, takes its share of the ring in steps. The
//! settings travel inside the command that starts a ramp, so apply reads no local
//! config and every instance ramps the same way.

use serde::{Deserialize, Serialize};

/// The longest ramp: an hour. A longer one keeps a recovered upstream underused for
/// longer than any warm-up (caches, JIT, connection pools) takes.
pub const MAX_SLOW_START_MS: u64 = 3_600_000;
/// Steps by default: ten, a tenth of the share more at each step (the first on
/// joining, the last `slow_start_ms` later).
pub const DEFAULT_SLOW_START_STEPS: u32 = 10;
/// Most steps of one ramp. Each step is a replicated log entry per ramping upstream;
/// past 100 (1 % of the share each) a step moves too few keys to matter.
pub const MAX_SLOW_START_STEPS: u32 = 100;
/// The shortest step. The leader looks at ramps every
/// `control::slow_start::SUPERVISE_INTERVAL` (100 ms), so a shorter step could not
/// be kept; it also caps the log entries one ramp writes at ten a second.
pub const MIN_SLOW_START_STEP_MS: u64 = 100;

/// A pool's slow start. `duration_ms == 0` is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowStart {
    /// From the first step to the full share (`slow_start_ms`).
    pub duration_ms: u64,
    /// How many steps (`slow_start_steps`); the first is taken on joining.
    pub steps: u32,
}

impl Default for SlowStart {
    fn default() -> Self {
        SlowStart {
            duration_ms: 0,
            steps: DEFAULT_SLOW_START_STEPS,
        }
    }
}

impl SlowStart {
    /// True when joining upstreams ramp up.
    pub fn is_on(&self) -> bool {
        self.duration_ms > 0
    }

    /// The time between two steps. The first step is taken on joining and the
    /// last (the full share) `duration_ms` later, so there are `steps - 1` waits.
    pub fn step_ms(&self) -> u64 {
        self.duration_ms / u64::from(self.steps.saturating_sub(1).max(1))
    }

    /// Checks the bounds: the same rule for the file, commands and snapshots.
    pub fn check(&self) -> Result<(), String> {
        if self.duration_ms > MAX_SLOW_START_MS {
            return Err(format!(
                "slow_start_ms must be at most {MAX_SLOW_START_MS}, got {}",
                self.duration_ms
            ));
        }
        if !(2..=MAX_SLOW_START_STEPS).contains(&self.steps) {
            return Err(format!(
                "slow_start_steps must be from 2 to {MAX_SLOW_START_STEPS}, got {}",
                self.steps
            ));
        }
        if self.is_on() && self.step_ms() < MIN_SLOW_START_STEP_MS {
            return Err(format!(
                "slow_start_ms / (slow_start_steps - 1) must be at least {MIN_SLOW_START_STEP_MS} ms, got {} / {} = {} ms",
                self.duration_ms,
                self.steps.saturating_sub(1),
                self.step_ms()
            ));
        }
        Ok(())
    }
}
