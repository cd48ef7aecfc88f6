//! ringway: a layer-7 HTTP load-balancing reverse proxy with consistent hashing.
//!
//! Reading order:
//! 1. [`ring`]: the consistent-hash ring (MD5 points, weights, failover walk).
//! 2. [`balance`]: which pool a request goes to and which key it hashes.
//! 3. [`config`]: the YAML file, validated with every error reported at once.
//! 4. [`proxy`]: the data plane (server, forwarding, upstream connections, bodies).
//! 5. [`raft`]: the sans-IO consensus core and its deterministic simulator.
//! 6. [`cluster`]: the replicated state the instances agree on.
//! 7. [`admin`]: the admin API (views, and upstream changes through the cluster).
//! 8. [`tls`]: TLS on listeners, towards upstreams, and between instances (rustls).
//! 9. [`health`]: failure detection, active checks and circuit breakers.
//! 10. [`metrics`]: every Prometheus metric, its labels and buckets.
//! 11. [`cli`], [`echo`], [`shutdown`]: what the `ringway` binary needs besides.
//! 12. [`grpc_status`]: the gRPC status codes the config, detection and data plane share.
//! 13. [`discover`]: pools whose upstreams the leader finds in DNS.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod discover;
pub mod echo;
pub mod grpc_status;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod raft;
pub mod ring;
pub mod shutdown;
pub mod tls;
