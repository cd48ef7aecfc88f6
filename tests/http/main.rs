//! The data-plane, TLS, metrics, command-line and in-process instance tests, as one
//! test binary: they share the harness in `tests/common`, and one binary compiles and
//! links the HTTP stack once rather than once per file. Each file is a module; run one
//! with `cargo test --test http proxy::` (or `tls::`, `attack::`, ...).

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/tls.rs"]
mod tlsutil;

mod attack;
mod cli;
mod config_tls;
mod control;
mod metrics;
mod proxy;
mod proxy_limits;
mod status;
mod tls;
mod tracing_headers;
