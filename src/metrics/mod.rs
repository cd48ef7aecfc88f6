//! Prometheus metrics: the registry, and every metric ringway exports, defined in this
//! module (and [`cluster`] for the Raft ones). `GET /metrics` on the admin listener
//! serves [`Metrics::encode`].
//!
//! Labels take values from bounded sets only: pool names and upstream ids come from the
//! current configuration and cluster state (a pair that leaves them is removed from the
//! output when the next snapshot is swapped in), peers from the cluster's member list,
//! and the rest from fixed lists. No label carries a path, a client address or
//! anything else a request chooses.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ringway_requests_total` | counter | `pool`, `upstream`, `class` (`1xx` .. `5xx`) |
//! | `ringway_request_duration_seconds` | histogram ([`REQUEST_DURATION_BUCKETS`]) | `pool`, `upstream` |
//! | `ringway_requests_in_flight` | gauge | |
//! | `ringway_request_bytes_total` | counter | `pool` |
//! | `ringway_retries_total` | counter | `pool`, `reason` (`connect`, `refused_stream`, `reset`, `timeout`, `502`, `503`, `504`, `grpc_unavailable`) |
//! | `ringway_retry_budget_exhausted_total` | counter | `pool` |
//! | `ringway_upstream_limited_total` | counter | `pool`, `upstream`, `action` (`spilled`, `queued`, `rejected`) |
//! | `ringway_grpc_requests_total` | counter | `pool`, `code` (`OK` .. `UNAUTHENTICATED`) |
//! | `ringway_response_bytes_total` | counter | `pool`, `upstream` |
//! | `ringway_upstream_connect_errors_total` | counter | `pool`, `upstream` |
//! | `ringway_upstream_timeouts_total` | counter | `pool`, `upstream`, `phase` (`connect`, `response`) |
//! | `ringway_upstream_retries_total` | counter | `pool`, `upstream` |
//! | `ringway_ring_points` | gauge | `pool`, `upstream` |
//! | `ringway_config_reloads_total` | counter | `result` (`success`, `failure`) |
//! | `ringway_config_last_reload_success_timestamp_seconds` | gauge | |
//! | `ringway_config_drift_pools` | gauge (pools that differ between the file in force and the cluster: on one side only, or with different upstreams; 0 before the bootstrap) | |
//! | `ringway_build_info` | gauge | `version` |
//! | `ringway_raft_*` | see [`cluster`] | |
//! | `process_*` | CPU seconds, resident and virtual memory, open and max fds, start time (Linux) | |
//!
//! A request is counted once, when its response has ended (or was cut off): in
//! `ringway_requests_total`, `ringway_request_duration_seconds` (from the moment the
//! request head was handed to ringway to the end of the response body) and, while it
//! runs, `ringway_requests_in_flight`. Requests ringway answers itself carry
//! `upstream=""` (and `pool=""` when no pool serves them). A request the client gives
//! up before any response head is only seen in `ringway_requests_in_flight`.
//!
//! A gRPC call (by its request's `content-type`) is also counted once, when it ends,
//! in `ringway_grpc_requests_total` by the status it ended with: from the response
//! head (a trailers-only answer, ringway's own errors included, or an HTTP error
//! status translated as a gRPC client would), else from the trailers; `UNKNOWN`
//! when the response ended or broke without one, `CANCELLED` when the client left
//! before it ended.
//!
//! Nothing is looked up or formatted per request: [`Metrics::handles_for`] resolves
//! the labelled children of every (pool, upstream) pair when a snapshot is swapped
//! in, and the request path only increments them.

pub mod cluster;
mod handles;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;

use crate::grpc_status::ALL as ALL_CODES;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use handles::{Exchange, GrpcCalls, PoolMetrics, SnapshotMetrics, UpstreamMetrics};

/// One pool of a routing snapshot as the metrics see it: its name, and each
/// upstream's id and ring points, in the snapshot's order.
pub struct PoolShape<'a> {
    pub name: &'a str,
    pub upstreams: Vec<(&'a str, usize)>,
}

/// Buckets of `ringway_request_duration_seconds`, in seconds: 50 µs to 60 s, about
/// 2.5 per decade, so a proxy hop on a LAN (well under 1 ms) and a long poll (tens of
/// seconds, up to the default response-header timeout of 60 s) are both resolved.
pub const REQUEST_DURATION_BUCKETS: [f64; 19] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of `ringway_raft_storage_sync_seconds`, in seconds: 50 µs (a write cache)
/// to 5 s (a disk in trouble).
pub const STORAGE_SYNC_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Values of the `class` label, indexed by `status / 100 - 1`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Values of the `action` label of `ringway_upstream_limited_total`.
pub const LIMIT_ACTIONS: [&str; 3] = ["spilled", "queued", "rejected"];

/// Values of the `reason` label of `ringway_retries_total`, indexed like
/// `proxy::retry::Reason::ALL`.
pub const RETRY_REASONS: [&str; 8] = [
    "connect",
    "refused_stream",
    "reset",
    "timeout",
    "502",
    "503",
    "504",
    "grpc_unavailable",
];

/// Values of the `phase` label of `ringway_upstream_timeouts_total`.
const PHASES: [&str; 2] = ["connect", "response"];

/// What a listener counts: connections accepted, and open now.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    pub accepted: IntCounter,
    pub open: IntGauge,
}

/// The registry and the metrics the request path and the reload path feed.
pub struct Metrics {
    registry: Registry,
    in_flight: IntGauge,
    requests: IntCounterVec,
    duration: HistogramVec,
    request_bytes: IntCounterVec,
    retry_reasons: IntCounterVec,
    retry_budget_exhausted: IntCounterVec,
    limited: IntCounterVec,
    grpc_requests: IntCounterVec,
    response_bytes: IntCounterVec,
    connect_errors: IntCounterVec,
    timeouts: IntCounterVec,
    retries: IntCounterVec,
    ring_points: IntGaugeVec,
    reloads: IntCounterVec,
    last_reload: Gauge,
    drift: IntGauge,
    connections: IntCounterVec,
    connections_open: IntGaugeVec,
    /// The (pool, upstream) pairs and the pools whose series are exported now.
    exported: Mutex<Exported>,
}

#[derive(Default)]
struct Exported {
    pairs: BTreeSet<(String, String)>,
    pools: BTreeSet<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry holding every data-plane and process metric. The Raft metrics join
    /// it through [`Metrics::register_cluster`].
    pub fn new() -> Metrics {
        let pair = &["pool", "upstream"];
        let m = Metrics {
            registry: Registry::new(),
            in_flight: IntGauge::with_opts(opts(
                "ringway_requests_in_flight",
                "Requests received whose response has not ended yet.",
            ))
            .expect("valid metric"),
            requests: counter_vec(
                "ringway_requests_total",
                "Requests whose response ended, by pool, upstream that answered (empty: ringway answered) and status class.",
                &["pool", "upstream", "class"],
            ),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "ringway_request_duration_seconds",
                    "Time from the request head to the end of the response body.",
                )
                .buckets(REQUEST_DURATION_BUCKETS.to_vec()),
                pair,
            )
            .expect("valid metric"),
            retry_reasons: counter_vec(
                "ringway_retries_total",
                "Attempts sent to the next upstream on the ring, by why the previous one was given up.",
                &["pool", "reason"],
            ),
            limited: counter_vec(
                "ringway_upstream_limited_total",
                "Requests that found the upstream at one of its upstream_limits (max_inflight, its share of cluster_max_inflight, or max_connections): passed to the next on the ring (spilled), waited (queued), or gave up waiting (rejected).",
                &["pool", "upstream", "action"],
            ),
            retry_budget_exhausted: counter_vec(
                "ringway_retry_budget_exhausted_total",
                "Retries the pool's policy allowed but its retry budget refused.",
                &["pool"],
            ),
            request_bytes: counter_vec(
                "ringway_request_bytes_total",
                "Request body bytes received from clients and forwarded.",
                &["pool"],
            ),
            grpc_requests: counter_vec(
                "ringway_grpc_requests_total",
                "gRPC calls (by request content-type) whose response ended, by pool (empty: none served it) and the grpc-status they ended with.",
                &["pool", "code"],
            ),
            response_bytes: counter_vec(
                "ringway_response_bytes_total",
                "Response body bytes sent to clients.",
                pair,
            ),
            connect_errors: counter_vec(
                "ringway_upstream_connect_errors_total",
                "Connections to an upstream that failed before the request was sent (refused, timed out, closed).",
                pair,
            ),
            timeouts: counter_vec(
                "ringway_upstream_timeouts_total",
                "Upstream timeouts: connect, or response (no response head in time, or the request body not taken).",
                &["pool", "upstream", "phase"],
            ),
            retries: counter_vec(
                "ringway_upstream_retries_total",
                "Requests sent to this upstream after an earlier one on the ring could not be reached.",
                pair,
            ),
            ring_points: IntGaugeVec::new(
                opts("ringway_ring_points", "Points the upstream owns on its pool's ring."),
                pair,
            )
            .expect("valid metric"),
            reloads: counter_vec(
                "ringway_config_reloads_total",
                "Configuration reloads, by result.",
                &["result"],
            ),
            last_reload: Gauge::with_opts(opts(
                "ringway_config_last_reload_success_timestamp_seconds",
                "Unix time the configuration in force was loaded.",
            ))
            .expect("valid metric"),
            drift: IntGauge::with_opts(opts(
                "ringway_config_drift_pools",
                "Pools that differ between the config file in force and the cluster's state.",
            ))
            .expect("valid metric"),
            connections: counter_vec(
                "ringway_connections_accepted_total",
                "Connections accepted, by listener kind (proxy or admin).",
                &["listener"],
            ),
            connections_open: IntGaugeVec::new(
                opts(
                    "ringway_connections_open",
                    "Connections open now, by listener kind (proxy or admin).",
                ),
                &["listener"],
            )
            .expect("valid metric"),
            exported: Mutex::default(),
        };
        m.register_own();
        m
    }

    fn register_own(&self) {
        let build = IntGaugeVec::new(
            opts("ringway_build_info", "Always 1; the version running."),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for result in ["success", "failure"] {
            self.reloads.with_label_values(&[result]);
        }
        for kind in ["proxy", "admin"] {
            self.connections.with_label_values(&[kind]);
            self.connections_open.with_label_values(&[kind]);
        }
        let own: [Box<dyn Collector>; 19] = [
            Box::new(self.in_flight.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.request_bytes.clone()),
            Box::new(self.retry_reasons.clone()),
            Box::new(self.retry_budget_exhausted.clone()),
            Box::new(self.limited.clone()),
            Box::new(self.grpc_requests.clone()),
            Box::new(self.response_bytes.clone()),
            Box::new(self.connect_errors.clone()),
            Box::new(self.timeouts.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.ring_points.clone()),
            Box::new(self.reloads.clone()),
            Box::new(self.last_reload.clone()),
            Box::new(self.drift.clone()),
            Box::new(self.connections.clone()),
            Box::new(self.connections_open.clone()),
            Box::new(build),
        ];
        for c in own {
            self.register(c);
        }
        #[cfg(target_os = "linux")]
        self.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
    }

    /// The connection counters of one listener kind (`proxy` or `admin`).
    pub fn connections(&self, listener: &str) -> ConnectionMetrics {
        ConnectionMetrics {
            accepted: self.connections.with_label_values(&[listener]),
            open: self.connections_open.with_label_values(&[listener]),
        }
    }

    /// Adds a collector; one whose names clash with a registered one is left out and
    /// logged (names are constants, so only a programming error gets here).
    pub fn register(&self, c: Box<dyn Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::error!(error = %e, "metric not registered");
        }
    }

    /// The text exposition format (version 0.0.4) of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The `Content-Type` of [`Metrics::encode`].
    pub fn content_type(&self) -> &'static str {
        prometheus::TEXT_FORMAT
    }

    /// Records a configuration reload: `ok` counts a success and stamps the time.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
        if ok {
            self.config_loaded();
        }
    }

    /// Records how many pools differ between the file in force and the cluster.
    pub fn config_drift(&self, pools: usize) {
        self.drift.set(i64::try_from(pools).unwrap_or(i64::MAX));
    }

    /// Stamps now as the time the configuration in force was loaded (at startup; not
    /// counted as a reload).
    pub fn config_loaded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_reload.set(now);
    }

    /// The handles requests use on a snapshot of `pools` (each pool's name, and its
    /// upstreams' ids with their ring points, in the snapshot's order), resolved now.
    /// Series of pairs no longer listed are removed.
    pub fn handles_for(&self, pools: &[PoolShape<'_>]) -> SnapshotMetrics {
        let mut pairs = BTreeSet::new();
        let mut names = BTreeSet::new();
        pairs.insert((String::new(), String::new()));
        let pool_handles = pools
            .iter()
            .map(|pool| {
                names.insert(pool.name.to_string());
                pairs.insert((pool.name.to_string(), String::new()));
                let upstreams = pool.upstreams.iter().map(|&(id, points)| {
                    pairs.insert((pool.name.to_string(), id.to_string()));
                    self.ring_points
                        .with_label_values(&[pool.name, id])
                        .set(points as i64);
                    self.upstream(pool.name, id)
                });
                PoolMetrics {
                    none: self.exchange(pool.name, ""),
                    upstreams: upstreams.collect(),
                    request_bytes: self.request_bytes.with_label_values(&[pool.name]),
                    retries: RETRY_REASONS
                        .map(|r| self.retry_reasons.with_label_values(&[pool.name, r])),
                    retry_budget_exhausted: self
                        .retry_budget_exhausted
                        .with_label_values(&[pool.name]),
                    grpc: self.grpc_calls(pool.name),
                }
            })
            .collect();
        let handles = SnapshotMetrics {
            in_flight: Some(self.in_flight.clone()),
            unrouted: Some(self.exchange("", "")),
            unrouted_grpc: Some(self.grpc_calls("")),
            pools: pool_handles,
        };
        self.forget_except(pairs, names);
        handles
    }

    fn exchange(&self, pool: &str, upstream: &str) -> Exchange {
        Exchange {
            classes: STATUS_CLASSES.map(|c| self.requests.with_label_values(&[pool, upstream, c])),
            duration: self.duration.with_label_values(&[pool, upstream]),
            response_bytes: self.response_bytes.with_label_values(&[pool, upstream]),
        }
    }

    fn grpc_calls(&self, pool: &str) -> GrpcCalls {
        GrpcCalls(ALL_CODES.map(|c| self.grpc_requests.with_label_values(&[pool, c.name()])))
    }

    fn upstream(&self, pool: &str, upstream: &str) -> UpstreamMetrics {
        let labels = [pool, upstream];
        UpstreamMetrics {
            exchange: self.exchange(pool, upstream),
            connect_errors: self.connect_errors.with_label_values(&labels),
            connect_timeouts: self
                .timeouts
                .with_label_values(&[pool, upstream, PHASES[0]]),
            response_timeouts: self
                .timeouts
                .with_label_values(&[pool, upstream, PHASES[1]]),
            retries: self.retries.with_label_values(&labels),
            limited: LIMIT_ACTIONS.map(|a| self.limited.with_label_values(&[pool, upstream, a])),
        }
    }

    /// Removes the series of pairs and pools that are not in `pairs` and `pools`, and
    /// remembers these as exported.
    fn forget_except(&self, pairs: BTreeSet<(String, String)>, pools: BTreeSet<String>) {
        let mut exported = self.exported.lock().unwrap_or_else(|p| p.into_inner());
        for (pool, up) in exported.pairs.difference(&pairs) {
            let labels = [pool.as_str(), up.as_str()];
            for class in STATUS_CLASSES {
                let _ = self
                    .requests
                    .remove_label_values(&[pool.as_str(), up.as_str(), class]);
            }
            let _ = self.duration.remove_label_values(&labels);
            let _ = self.response_bytes.remove_label_values(&labels);
            let _ = self.connect_errors.remove_label_values(&labels);
            let _ = self.retries.remove_label_values(&labels);
            let _ = self.ring_points.remove_label_values(&labels);
            for action in LIMIT_ACTIONS {
                let _ = self
                    .limited
                    .remove_label_values(&[pool.as_str(), up.as_str(), action]);
            }
            for phase in PHASES {
                let _ = self
                    .timeouts
                    .remove_label_values(&[pool.as_str(), up.as_str(), phase]);
            }
        }
        for pool in exported.pools.difference(&pools) {
            let _ = self.request_bytes.remove_label_values(&[pool]);
            let _ = self.retry_budget_exhausted.remove_label_values(&[pool]);
            for reason in RETRY_REASONS {
                let _ = self
                    .retry_reasons
                    .remove_label_values(&[pool.as_str(), reason]);
            }
            for code in ALL_CODES {
                let _ = self
                    .grpc_requests
                    .remove_label_values(&[pool.as_str(), code.name()]);
            }
        }
        *exported = Exported { pairs, pools };
    }
}

/// The unregistered histogram of `ringway_raft_storage_sync_seconds`: the cluster
/// member feeds it, [`Metrics::register_cluster`] exports it.
pub fn storage_sync_histogram() -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(
            "ringway_raft_storage_sync_seconds",
            "Time to append one batch of Raft state to the log and fdatasync it.",
        )
        .buckets(STORAGE_SYNC_BUCKETS.to_vec()),
    )
    .expect("valid metric")
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

/// A counter family; the names are constants, so only a programming error fails.
fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(opts(name, help), labels).expect("valid metric")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_increasing_and_span_sub_millisecond_to_a_minute() {
        for b in [&REQUEST_DURATION_BUCKETS[..], &STORAGE_SYNC_BUCKETS[..]] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
            assert!(b[0] < 0.001);
        }
        assert_eq!(REQUEST_DURATION_BUCKETS.last(), Some(&60.0));
    }

    #[test]
    fn a_new_registry_encodes_every_family_it_has_samples_for() {
        let m = Metrics::new();
        m.config_loaded();
        let text = m.encode();
        for name in [
            "ringway_requests_in_flight 0",
            "ringway_build_info{version=",
            "ringway_config_reloads_total{result=\"failure\"} 0",
            "ringway_config_last_reload_success_timestamp_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_open_fds "), "{text}");
    }

    fn pool<'a>(upstreams: &[&'a str]) -> Vec<PoolShape<'a>> {
        let upstreams = upstreams.iter().map(|id| (*id, 150)).collect();
        vec![PoolShape {
            name: "web",
            upstreams,
        }]
    }

    #[test]
    fn series_of_upstreams_that_left_are_removed() {
        let m = Metrics::new();
        let first = m.handles_for(&pool(&["a", "b"]));
        first.pool(0).and_then(|p| p.upstream(1)).unwrap().retried();
        let text = m.encode();
        assert!(text.contains("ringway_ring_points{pool=\"web\",upstream=\"b\"} 150"));
        assert!(text.contains("ringway_upstream_retries_total{pool=\"web\",upstream=\"b\"} 1"));
        m.handles_for(&pool(&["a"]));
        let text = m.encode();
        assert!(!text.contains("upstream=\"b\""), "{text}");
        assert!(text.contains("ringway_ring_points{pool=\"web\",upstream=\"a\"} 150"));
    }

    #[test]
    fn grpc_calls_count_by_pool_and_code_and_leave_with_their_pool() {
        use crate::grpc_status::Code;
        let m = Metrics::new();
        let handles = m.handles_for(&pool(&["a"]));
        handles.grpc(Some(0)).unwrap().ended(Code::Unavailable);
        handles.grpc(None).unwrap().ended(Code::Unimplemented);
        let text = m.encode();
        let line = "ringway_grpc_requests_total{code=\"UNAVAILABLE\",pool=\"web\"} 1";
        assert!(text.contains(line), "{text}");
        assert!(text.contains("ringway_grpc_requests_total{code=\"OK\",pool=\"web\"} 0"));
        assert!(text.contains("ringway_grpc_requests_total{code=\"UNIMPLEMENTED\",pool=\"\"} 1"));
        m.handles_for(&[]);
        let text = m.encode();
        assert!(!text.contains("pool=\"web\""), "{text}");
    }

    #[test]
    fn reloads_count_by_result() {
        let m = Metrics::new();
        m.config_reload(true);
        m.config_reload(false);
        m.config_reload(false);
        let text = m.encode();
        assert!(text.contains("ringway_config_reloads_total{result=\"success\"} 1"));
        assert!(text.contains("ringway_config_reloads_total{result=\"failure\"} 2"));
    }
}
