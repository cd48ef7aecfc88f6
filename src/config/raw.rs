//! The file's shape as serde reads it: every leaf is a raw YAML value so that the
//! typed layer ([`super::build`]) can report every bad value at once, with its path.
//!
//! Unknown keys are captured in `unknown` maps instead of failing the parse, for the
//! same reason: one run of `ringway check` lists all of them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

/// Keys found in a section that ringway does not know.
pub type Unknown = BTreeMap<String, Value>;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub node: Option<RawNode>,
    pub listeners: Option<Vec<RawListener>>,
    pub admin: Option<RawAdmin>,
    pub cluster: Option<RawCluster>,
    pub limits: Option<RawLimits>,
    pub pools: Option<Vec<RawPool>>,
    pub access_log: Option<RawAccessLog>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAccessLog {
    pub enabled: Option<Value>,
    pub format: Option<Value>,
    pub fields: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawNode {
    pub id: Option<Value>,
    pub data_dir: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawListener {
    pub address: Option<Value>,
    pub tls: Option<RawListenerTls>,
    pub headers: Option<RawHeaderWork>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub address: Option<Value>,
    pub token_file: Option<Value>,
    pub tls: Option<RawCertPair>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCluster {
    pub address: Option<Value>,
    pub peers: Option<BTreeMap<String, Value>>,
    pub heartbeat_ms: Option<Value>,
    pub election_timeout_ms: Option<Value>,
    pub join: Option<Value>,
    pub compact_threshold: Option<Value>,
    pub tls: Option<RawClusterTls>,
    pub secret_file: Option<Value>,
    pub insecure_plaintext: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_connections: Option<Value>,
    pub max_header_bytes: Option<Value>,
    pub header_read_timeout_ms: Option<Value>,
    pub keep_alive_timeout_ms: Option<Value>,
    pub request_body_timeout_ms: Option<Value>,
    pub shutdown_grace_ms: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPool {
    pub name: Option<Value>,
    pub hosts: Option<Vec<Value>>,
    pub path_prefix: Option<Value>,
    pub hash_key: Option<Value>,
    pub on_missing_key: Option<Value>,
    pub vnodes: Option<Value>,
    pub max_attempts: Option<Value>,
    pub connect_timeout_ms: Option<Value>,
    pub response_header_timeout_ms: Option<Value>,
    pub idle_timeout_ms: Option<Value>,
    pub max_idle_per_upstream: Option<Value>,
    pub upstreams: Option<Vec<RawUpstream>>,
    pub tls: Option<RawPoolTls>,
    pub protocol: Option<Value>,
    pub http2: Option<RawHttp2>,
    pub retry: Option<RawRetry>,
    pub upstream_limits: Option<RawUpstreamLimits>,
    pub health: Option<RawHealth>,
    pub hash_balance_factor: Option<Value>,
    pub slow_start_ms: Option<Value>,
    pub slow_start_steps: Option<Value>,
    pub cache: Option<RawCache>,
    pub discover: Option<RawDiscover>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `pools[].cache`: the pool's response cache.
#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    pub max_bytes: Option<Value>,
    pub max_object_bytes: Option<Value>,
    pub coalesce_timeout_ms: Option<Value>,
    pub key: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `pools[].discover`: upstreams from DNS.
#[derive(Debug, Default, Deserialize)]
pub struct RawDiscover {
    pub dns: Option<Value>,
    #[serde(rename = "type")]
    pub record: Option<Value>,
    pub port: Option<Value>,
    pub interval_ms: Option<Value>,
    pub timeout_ms: Option<Value>,
    pub resolver: Option<Value>,
    pub max_remove_percent: Option<Value>,
    pub hold_down: Option<Value>,
    pub weight: Option<Value>,
    pub id_prefix: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawUpstream {
    pub id: Option<Value>,
    pub address: Option<Value>,
    pub weight: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `listeners[].tls`: terminate TLS with these certificates (the first is the default).
#[derive(Debug, Default, Deserialize)]
pub struct RawHeaderWork {
    pub forwarded: Option<Value>,
    pub via: Option<Value>,
    pub request_id: Option<Value>,
    pub traceparent: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawListenerTls {
    pub certificates: Option<Vec<RawCertPair>>,
    pub handshake_timeout_ms: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHealth {
    pub passive: Option<RawPassive>,
    pub active: Option<RawActive>,
    pub breaker: Option<RawBreaker>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Default, Deserialize)]
pub struct RawCertPair {
    pub cert: Option<Value>,
    pub key: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPassive {
    pub consecutive_failures: Option<Value>,
    pub failure_rate_percent: Option<Value>,
    pub window_ms: Option<Value>,
    pub min_requests: Option<Value>,
    pub count: Option<Value>,
    pub count_grpc: Option<Value>,
    pub local_suspicion_ms: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `pools[].upstream_limits`.
#[derive(Debug, Default, Deserialize)]
pub struct RawUpstreamLimits {
    pub max_inflight: Option<Value>,
    pub cluster_max_inflight: Option<Value>,
    pub max_connections: Option<Value>,
    pub at_limit: Option<Value>,
    pub queue_timeout_ms: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `pools[].retry`.
#[derive(Debug, Default, Deserialize)]
pub struct RawRetry {
    pub on: Option<Value>,
    pub methods: Option<Value>,
    pub backoff_ms: Option<Value>,
    pub max_backoff_ms: Option<Value>,
    pub budget_percent: Option<Value>,
    pub budget_floor_per_s: Option<Value>,
    pub max_body_bytes: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `pools[].http2`: bounds of HTTP/2 connections to the upstreams.
#[derive(Debug, Default, Deserialize)]
pub struct RawHttp2 {
    pub max_connections_per_upstream: Option<Value>,
    pub max_streams_per_connection: Option<Value>,
    pub keepalive_interval_ms: Option<Value>,
    pub keepalive_timeout_ms: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `pools[].tls`: talk TLS to this pool's upstreams.
#[derive(Debug, Default, Deserialize)]
pub struct RawPoolTls {
    pub ca_file: Option<Value>,
    pub server_name: Option<Value>,
    pub client_cert: Option<Value>,
    pub client_key: Option<Value>,
    pub insecure_skip_verify: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawActive {
    pub path: Option<Value>,
    pub interval_ms: Option<Value>,
    pub timeout_ms: Option<Value>,
    pub expected_statuses: Option<Value>,
    pub grpc: Option<RawGrpcCheck>,
    pub rise: Option<Value>,
    pub fall: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `pools[].health.active.grpc`: check by the gRPC health checking protocol.
#[derive(Debug, Default, Deserialize)]
pub struct RawGrpcCheck {
    pub service: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `cluster.tls`: mutual TLS between instances.
#[derive(Debug, Default, Deserialize)]
pub struct RawClusterTls {
    pub ca_file: Option<Value>,
    pub cert: Option<Value>,
    pub key: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawBreaker {
    pub base_ejection_ms: Option<Value>,
    pub max_ejection_ms: Option<Value>,
    pub jitter_percent: Option<Value>,
    pub half_open_successes: Option<Value>,
    pub probe_interval_ms: Option<Value>,
    pub min_reporters: Option<Value>,
    pub report_window_ms: Option<Value>,
    pub max_ejection_percent: Option<Value>,
    pub panic_threshold_percent: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
