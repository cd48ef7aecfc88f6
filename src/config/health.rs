//! Per-pool health settings (`pools[].health`): passive detection from request
//! outcomes, optional active HTTP checks, and the circuit-breaker policy the cluster
//! applies. Defaults are named constants; see the README's configuration reference.

use std::time::Duration;

use crate::health::breaker::Policy;

/// Consecutive failed requests that trip an upstream's detector (0: off).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Failure percentage over the window that trips it (0: off).
pub const DEFAULT_FAILURE_RATE_PERCENT: u32 = 50;
/// The sliding window of the failure rate.
pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Requests the window must hold before the failure rate counts.
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
/// The longest this instance alone skips an upstream that refused (or timed out) a
/// connection before re-testing it with a request (the suspicion starts at 50 ms
/// and doubles with each refusal in a row).
pub const DEFAULT_LOCAL_SUSPICION: Duration = Duration::from_millis(500);
/// Active checks, when enabled.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// How often the leader probes a half-open upstream.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Which request outcomes count as an upstream's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureClasses {
    /// Connecting failed (refused, timed out, reset before the request was sent).
    pub connect: bool,
    /// No response head within `response_header_timeout_ms`.
    pub timeout: bool,
    /// The connection failed after the request was sent.
    pub reset: bool,
    /// The upstream answered 500-599.
    pub status_5xx: bool,
}

impl Default for FailureClasses {
    fn default() -> Self {
        FailureClasses {
            connect: true,
            timeout: true,
            reset: true,
            status_5xx: true,
        }
    }
}

/// Passive detection from the requests this instance forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passive {
    pub consecutive_failures: u32,
    pub failure_rate_percent: u32,
    pub window: Duration,
    pub min_requests: u32,
    pub classes: FailureClasses,
    pub local_suspicion: Duration,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            failure_rate_percent: DEFAULT_FAILURE_RATE_PERCENT,
            window: DEFAULT_FAILURE_WINDOW,
            min_requests: DEFAULT_MIN_REQUESTS,
            classes: FailureClasses::default(),
            local_suspicion: DEFAULT_LOCAL_SUSPICION,
        }
    }
}

/// Active HTTP health checks, run by every instance against every upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Inclusive status ranges that mean healthy.
    pub expected: Vec<(u16, u16)>,
    /// Consecutive passes that bring a down upstream back up (here).
    pub rise: u32,
    /// Consecutive failures that take it down here and report it to the cluster.
    pub fall: u32,
}

impl Active {
    pub fn expects(&self, status: u16) -> bool {
        self.expected
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// A pool's health settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub passive: Passive,
    pub active: Option<Active>,
    /// Carried in every breaker command this instance proposes.
    pub breaker: Policy,
    pub probe_interval: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            passive: Passive::default(),
            active: None,
            breaker: Policy::default(),
            probe_interval: DEFAULT_PROBE_INTERVAL,
        }
    }
}
