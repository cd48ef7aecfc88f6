//! `pools[].retry`: which failed attempts are tried again on the next upstream of the
//! ring, for which methods, how soon, and within what budget.

use std::time::Duration;

use http::Method;

/// Outcomes a pool retries (`retry.on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// The connect failed or was refused: nothing was sent (any method).
    pub connect: bool,
    /// The connection failed after the request was sent, before any response byte.
    pub reset: bool,
    /// No response head within `response_header_timeout_ms`.
    pub timeout: bool,
    pub status_502: bool,
    pub status_503: bool,
    pub status_504: bool,
    /// A gRPC answer whose `grpc-status` in the head is 14 (UNAVAILABLE).
    pub grpc_unavailable: bool,
}

impl Default for RetryOn {
    /// What nginx's `proxy_next_upstream error timeout` does: connect failures, resets
    /// before a response, and response-head timeouts; 5xx only when asked.
    fn default() -> Self {
        RetryOn {
            connect: true,
            reset: true,
            timeout: true,
            status_502: false,
            status_503: false,
            status_504: false,
            grpc_unavailable: false,
        }
    }
}

impl RetryOn {
    /// The names `retry.on` takes, each with the flag it sets.
    pub const NAMES: [&'static str; 7] = [
        "connect",
        "reset",
        "timeout",
        "502",
        "503",
        "504",
        "grpc_unavailable",
    ];

    pub fn none() -> RetryOn {
        RetryOn {
            connect: false,
            reset: false,
            timeout: false,
            status_502: false,
            status_503: false,
            status_504: false,
            grpc_unavailable: false,
        }
    }

    pub fn flag(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "connect" => &mut self.connect,
            "reset" => &mut self.reset,
            "timeout" => &mut self.timeout,
            "502" => &mut self.status_502,
            "503" => &mut self.status_503,
            "504" => &mut self.status_504,
            "grpc_unavailable" => &mut self.grpc_unavailable,
            _ => return None,
        })
    }

    /// The names set, in [`RetryOn::NAMES`] order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut copy = *self;
        RetryOn::NAMES
            .into_iter()
            .filter(|n| copy.flag(n).is_some_and(|f| *f))
            .collect()
    }

    /// Whether a response with this status is retried.
    pub fn status(&self, status: u16) -> bool {
        match status {
            502 => self.status_502,
            503 => self.status_503,
            504 => self.status_504,
            _ => false,
        }
    }
}

/// Methods retried after the request may have reached an upstream, by default: the
/// idempotent ones of RFC 9110 §9.2.2 but CONNECT.
pub const DEFAULT_RETRY_METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
    Method::PUT,
    Method::DELETE,
];
/// First retry's longest wait; each further retry doubles it, up to the maximum.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Retries in flight may be at most this share of the pool's requests in flight:
/// Envoy's default retry budget.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// Retries allowed each second whatever the share (a quiet pool still retries).
pub const DEFAULT_RETRY_BUDGET_FLOOR_PER_S: u32 = 10;
/// A request body is kept for a retry up to this size (more: the request is not
/// retried once sent).
pub const DEFAULT_RETRY_MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest `retry.max_body_bytes`: bodies kept for retries live in memory for the
/// whole exchange.
pub const MAX_RETRY_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// A `Retry-After` on a 503 longer than this is not waited for: the 503 goes to the
/// client (the upstream asked for more time than a request should be held).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `pools[].retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub on: RetryOn,
    /// Methods retried once the request may have been sent (connect failures are
    /// retried for every method: nothing was sent).
    pub methods: Vec<Method>,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub budget_percent: u32,
    pub budget_floor_per_s: u32,
    pub max_body_bytes: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            on: RetryOn::default(),
            methods: DEFAULT_RETRY_METHODS.to_vec(),
            backoff: DEFAULT_RETRY_BACKOFF,
            max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            budget_percent: DEFAULT_RETRY_BUDGET_PERCENT,
            budget_floor_per_s: DEFAULT_RETRY_BUDGET_FLOOR_PER_S,
            max_body_bytes: DEFAULT_RETRY_MAX_BODY_BYTES,
        }
    }
}

impl RetryPolicy {
    /// Whether anything beyond connect failures may be retried for `method`, so the
    /// request (head and body) must be kept to send again.
    pub fn may_resend(&self, method: &Method) -> bool {
        let on = &self.on;
        let after_send = on.reset
            || on.timeout
            || on.status_502
            || on.status_503
            || on.status_504
            || on.grpc_unavailable;
        after_send && self.methods.contains(method)
    }
}

/// What a request does when its upstream is at `max_inflight` (`upstream_limits.at_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtLimit {
    /// Goes to the next upstream on the ring, as bounded load does (the default).
    #[default]
    Spill,
    /// Waits for a free place at its own upstream up to `queue_timeout_ms`, then 503.
    Queue,
}

/// Waiting requests give up after this long by default.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// `pools[].upstream_limits`: caps per upstream, on each instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamLimits {
    /// Requests in flight to one upstream from this instance; `None`: no cap.
    pub max_inflight: Option<usize>,
    /// Requests in flight to one upstream from the whole cluster, shared evenly by
    /// the members of the replicated configuration: each instance takes
    /// `ceil(cluster_max_inflight / members)` (and the smaller of that and
    /// `max_inflight` when both are set). See [`UpstreamLimits::inflight_cap`].
    pub cluster_max_inflight: Option<usize>,
    /// Connections open to one upstream from this instance, idle ones included;
    /// `None`: no cap beyond the pool's own (`max_idle_per_upstream` idle, and
    /// `http2.max_connections_per_upstream`).
    pub max_connections: Option<usize>,
    pub at_limit: AtLimit,
    pub queue_timeout: Duration,
}

impl UpstreamLimits {
    /// The cap on requests in flight to one upstream from this instance, in a cluster
    /// of `members` instances (voters and learners of the replicated configuration;
    /// at least one). A member that is down keeps its share: the cluster's total stays
    /// within `cluster_max_inflight`, and the share returns to the others only when the
    /// member is removed from the cluster.
    pub fn inflight_cap(&self, members: usize) -> Option<usize> {
        let shared = self
            .cluster_max_inflight
            .map(|total| total.div_ceil(members.max(1)));
        match (self.max_inflight, shared) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when some cap applies (what `at_limit` and `queue_timeout_ms` act on).
    pub fn any(&self) -> bool {
        self.max_inflight.is_some()
            || self.cluster_max_inflight.is_some()
            || self.max_connections.is_some()
    }
}
