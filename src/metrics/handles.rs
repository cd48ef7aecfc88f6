//! The metric handles one snapshot's requests use, resolved when the snapshot is
//! swapped in: the request path indexes into them and increments, nothing more.

use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntGauge};

use crate::grpc_status::Code;

/// Every handle of one snapshot. `Default` is a detached snapshot (built but never
/// served by a [`Proxy`](crate::proxy::Proxy)), which records nothing.
#[derive(Debug, Default)]
pub struct SnapshotMetrics {
    pub(super) in_flight: Option<IntGauge>,
    /// `pool=""`, `upstream=""`: requests no pool serves.
    pub(super) unrouted: Option<Exchange>,
    /// `pool=""`: gRPC calls no pool serves.
    pub(super) unrouted_grpc: Option<GrpcCalls>,
    /// Indexed like the snapshot's pools.
    pub(super) pools: Vec<PoolMetrics>,
}

/// The handles of one pool.
#[derive(Debug)]
pub struct PoolMetrics {
    /// `upstream=""`: requests of this pool that ringway answered itself.
    pub(super) none: Exchange,
    /// Indexed like the pool's upstreams.
    pub(super) upstreams: Vec<UpstreamMetrics>,
    pub(super) request_bytes: IntCounter,
    /// Indexed like [`super::RETRY_REASONS`].
    pub(super) retries: [IntCounter; 8],
    pub(super) retry_budget_exhausted: IntCounter,
    pub(super) grpc: GrpcCalls,
}

/// `ringway_grpc_requests_total` of one pool, indexed by code number.
#[derive(Debug)]
pub struct GrpcCalls(pub(super) [IntCounter; 17]);

impl GrpcCalls {
    /// Counts a gRPC call that ended with `code`.
    pub fn ended(&self, code: Code) {
        self.0[usize::from(code.number())].inc();
    }
}

/// The handles of one (pool, upstream) pair.
#[derive(Debug)]
pub struct UpstreamMetrics {
    pub(super) exchange: Exchange,
    pub(super) connect_errors: IntCounter,
    pub(super) connect_timeouts: IntCounter,
    pub(super) response_timeouts: IntCounter,
    pub(super) retries: IntCounter,
    /// Indexed like [`super::LIMIT_ACTIONS`].
    pub(super) limited: [IntCounter; 3],
}

/// What is counted of a finished exchange, for one (pool, upstream) pair.
#[derive(Debug)]
pub struct Exchange {
    /// Indexed like [`super::STATUS_CLASSES`].
    pub(super) classes: [IntCounter; 5],
    pub(super) duration: Histogram,
    pub(super) response_bytes: IntCounter,
}

impl SnapshotMetrics {
    /// The in-flight gauge (absent on a detached snapshot).
    pub fn in_flight(&self) -> Option<&IntGauge> {
        self.in_flight.as_ref()
    }

    pub fn pool(&self, pool: usize) -> Option<&PoolMetrics> {
        self.pools.get(pool)
    }

    /// The gRPC call counters of `pool` (none: no pool served the call).
    pub fn grpc(&self, pool: Option<usize>) -> Option<&GrpcCalls> {
        match pool {
            None => self.unrouted_grpc.as_ref(),
            Some(p) => Some(&self.pool(p)?.grpc),
        }
    }

    /// The exchange handles of a request that went to `pool` (none: no pool served
    /// it) and was answered by `upstream` (none: ringway answered).
    pub fn exchange(&self, pool: Option<usize>, upstream: Option<usize>) -> Option<&Exchange> {
        match pool {
            None => self.unrouted.as_ref(),
            Some(p) => self.pool(p)?.exchange(upstream),
        }
    }
}

impl PoolMetrics {
    pub fn upstream(&self, upstream: usize) -> Option<&UpstreamMetrics> {
        self.upstreams.get(upstream)
    }

    fn exchange(&self, upstream: Option<usize>) -> Option<&Exchange> {
        match upstream {
            None => Some(&self.none),
            Some(u) => self.upstream(u).map(|u| &u.exchange),
        }
    }

    /// Request body bytes taken from a client.
    pub fn request_bytes(&self) -> &IntCounter {
        &self.request_bytes
    }

    /// Counts an attempt sent on to the next upstream, by why (an index into
    /// [`super::RETRY_REASONS`]).
    pub fn retried_for(&self, reason: usize) {
        if let Some(c) = self.retries.get(reason) {
            c.inc();
        }
    }

    /// Counts a retry the budget refused.
    pub fn retry_budget_exhausted(&self) {
        self.retry_budget_exhausted.inc();
    }
}

impl UpstreamMetrics {
    /// A connect (or a connection that closed before the request was written) failed.
    pub fn connect_failed(&self, timed_out: bool) {
        self.connect_errors.inc();
        if timed_out {
            self.connect_timeouts.inc();
        }
    }

    /// No response head in time (or the request body was not taken in time).
    pub fn response_timed_out(&self) {
        self.response_timeouts.inc();
    }

    /// The upstream was at `max_inflight`: the request spilled to the next one.
    pub fn spilled(&self) {
        self.limited[0].inc();
    }

    /// The upstream was at `max_inflight`: the request waited for a place.
    pub fn queued(&self) {
        self.limited[1].inc();
    }

    /// The request waited for a place for the whole queue timeout.
    pub fn rejected(&self) {
        self.limited[2].inc();
    }

    /// The request came to this upstream after an earlier one failed.
    pub fn retried(&self) {
        self.retries.inc();
    }
}

impl Exchange {
    /// Counts a response that ended with `status` after `took`.
    pub fn finished(&self, status: u16, took: Duration) {
        // Codes past 599 are not HTTP's; they count with the server errors.
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts response body bytes sent.
    pub fn sent(&self, bytes: usize) {
        self.response_bytes.inc_by(bytes as u64);
    }
}
