//! gRPC through ringway, end to end, against real tonic backends written by hand
//! (no `protoc`): unary, server-, client- and bidirectional streaming over h2c and
//! over TLS with ALPN `h2`, stickiness by metadata, failover, trailers, reloads,
//! GOAWAY under load, connection bounds, and active checks by the gRPC health
//! protocol. Run one part with `cargo test --test grpc calls::`.

#[path = "common/mod.rs"]
mod common;
#[path = "common/tls.rs"]
mod tlsutil;

#[path = "grpc/backend.rs"]
mod backend;
#[path = "grpc/check.rs"]
mod check;
#[path = "grpc/echo.rs"]
mod echo;

#[path = "grpc/calls.rs"]
mod calls;
#[path = "grpc/direct.rs"]
mod direct;
#[path = "grpc/health.rs"]
mod health;
#[path = "grpc/load.rs"]
mod load;
