//! Per-pool health settings (`pools[].health`): passive detection from request
//! outcomes, optional active HTTP checks, and the circuit-breaker policy the cluster
//! applies. Defaults are named constants; see the README's configuration reference.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::grpc_status::{Code, CodeSet};

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
/// The gRPC statuses that count as an upstream's failure by default: only
/// `UNAVAILABLE`, the code a server (or its own proxy) gives when it cannot serve at
/// all. `INTERNAL`, `UNKNOWN` and `RESOURCE_EXHAUSTED` are what applications answer
/// for their own bugs and quotas, and `DEADLINE_EXCEEDED` is the client's deadline:
/// counting them would eject healthy backends for one caller's traffic.
pub const DEFAULT_GRPC_FAILURES: CodeSet = CodeSet::of(&[Code::Unavailable]);
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
    /// The gRPC statuses a call may end with that count as the upstream's failure
    /// (`count_grpc`); any other status counts as a success.
    pub grpc_failures: CodeSet,
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
            grpc_failures: DEFAULT_GRPC_FAILURES,
        }
    }
}

/// Active health checks, run by every instance against every upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// What one check asks and what passes.
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a down upstream back up (here).
    pub rise: u32,
    /// Consecutive failures that take it down here and report it to the cluster.
    pub fall: u32,
}

/// The question an active check asks an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET path` over HTTP/1.1; passes on a status in one of the inclusive ranges.
    Http {
        path: String,
        expected: Vec<(u16, u16)>,
    },
    /// `grpc.health.v1.Health/Check` for `service` ("": the server overall) over
    /// HTTP/2, with TLS when the pool has it; passes only on `SERVING`. Valid only for
    /// pools whose protocol is `h2` or `h2c`.
    Grpc { service: String },
}

impl Active {
    /// Whether an HTTP check's answer `status` passes (never, for a gRPC check).
    pub fn expects(&self, status: u16) -> bool {
        match &self.kind {
            CheckKind::Http { expected, .. } => {
                expected.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
            }
            CheckKind::Grpc { .. } => false,
        }
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

/// Distinct reporters remembered per upstream (about one per instance; more is a
/// hostile or confused log, and the oldest reports are dropped).
pub const MAX_REPORTERS: usize = 64;
/// Longest ejection any policy may ask for: a day. Longer is a typo.
pub const MAX_EJECTION_LIMIT_MS: u64 = 24 * 3600 * 1000;
/// Most successful probes a policy may require before readmission.
pub const MAX_HALF_OPEN_SUCCESSES: u32 = 100;
/// Longest report window: an hour.
pub const MAX_REPORT_WINDOW_MS: u64 = 3600 * 1000;

/// The breaker settings of one pool, carried in every breaker command by its proposer
/// (apply reads no local config). The last command's policy is kept with the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// First ejection time; the n-th consecutive one lasts n times as long.
    pub base_ejection_ms: u64,
    /// Cap on the ejection time before jitter.
    pub max_ejection_ms: u64,
    /// Up to this percentage of the ejection time is added, derived from the entry.
    pub jitter_percent: u32,
    /// Consecutive successful half-open probes that close the breaker.
    pub half_open_successes: u32,
    /// Distinct instances whose reports, within `report_window_ms`, eject.
    pub min_reporters: u32,
    pub report_window_ms: u64,
    /// Ejected upstreams of a pool, counted after the new ejection, never exceed
    /// this percentage of its (non-draining) upstreams.
    pub max_ejection_percent: u32,
    /// Below this percentage of healthy upstreams the pool routes to all of them.
    pub panic_threshold_percent: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            jitter_percent: 10,
            half_open_successes: 3,
            min_reporters: 1,
            report_window_ms: 30_000,
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
        }
    }
}

impl Policy {
    /// Checks every field's range; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let ms = |name: &str, v: u64, min: u64, max: u64| {
            if (min..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be from {min} to {max}, got {v}"))
            }
        };
        ms(
            "base_ejection_ms",
            self.base_ejection_ms,
            1,
            MAX_EJECTION_LIMIT_MS,
        )?;
        ms(
            "max_ejection_ms",
            self.max_ejection_ms,
            self.base_ejection_ms,
            MAX_EJECTION_LIMIT_MS,
        )?;
        ms("jitter_percent", self.jitter_percent.into(), 0, 100)?;
        let successes = self.half_open_successes.into();
        ms(
            "half_open_successes",
            successes,
            1,
            MAX_HALF_OPEN_SUCCESSES.into(),
        )?;
        ms(
            "min_reporters",
            self.min_reporters.into(),
            1,
            MAX_REPORTERS as u64,
        )?;
        ms(
            "report_window_ms",
            self.report_window_ms,
            1,
            MAX_REPORT_WINDOW_MS,
        )?;
        ms(
            "max_ejection_percent",
            self.max_ejection_percent.into(),
            0,
            100,
        )?;
        ms(
            "panic_threshold_percent",
            self.panic_threshold_percent.into(),
            0,
            100,
        )
    }

    /// Ejection time for the `ejections`-th consecutive ejection, before jitter.
    pub fn backoff_ms(&self, ejections: u32) -> u64 {
        self.base_ejection_ms
            .saturating_mul(u64::from(ejections.max(1)))
            .min(self.max_ejection_ms)
    }

    /// Ejection time with jitter chosen by `seed`: `backoff + seed mod (span + 1)`,
    /// where `span` is `jitter_percent` of the backoff.
    pub fn ejection_ms(&self, ejections: u32, seed: u64) -> u64 {
        let base = self.backoff_ms(ejections);
        let span = base.saturating_mul(u64::from(self.jitter_percent)) / 100;
        base + seed % span.saturating_add(1)
    }
}
