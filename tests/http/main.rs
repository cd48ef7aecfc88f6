//! The data-plane, TLS, metrics, access-log, config-path, command-line, deployment-file,
//! gRPC and in-process instance tests, as one test binary: they share the harness in
//! `tests/common` (and `tests/procs` for whole clusters), and one binary compiles and
//! links the HTTP stack once rather than once per file. Each file is a module; run one
//! with `cargo test --test http proxy::` (or `tls::`, `attack::`, ...).

#[path = "../common/mod.rs"]
mod common;
#[path = "../procs/mod.rs"]
mod procs;
#[path = "../common/tls.rs"]
mod tlsutil;

mod access_log;
mod attack;
mod bounds;
mod cache;
mod cli;
mod config_paths;
mod config_tls;
mod control;
mod deploy;
#[path = "../grpc/mod.rs"]
mod grpc;
mod grpc_errors;
mod h2_upstream;
mod metrics;
mod proxy;
mod proxy_limits;
mod reload;
mod retry;
mod status;
mod status_page;
mod tls;
mod tracing_headers;
