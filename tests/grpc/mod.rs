//! gRPC through ringway, end to end, against real tonic backends written by hand
//! (no `protoc`): unary, server-, client- and bidirectional streaming over h2c and
//! over TLS with ALPN `h2`, stickiness by metadata, failover, trailers, reloads,
//! GOAWAY under load, connection bounds, and active checks by the gRPC health
//! protocol. Part of the `http` test binary: run one part with
//! `cargo test --test http grpc::calls::`.

mod backend;
mod check;
mod echo;

mod calls;
mod direct;
mod health;
mod load;
