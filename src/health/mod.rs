//! Health: per-instance detection of failing upstreams and the circuit breakers the
//! cluster agrees on. The tasks that drive them (active checks, the breaker
//! controller) are part of the control layer ([`crate::control`]).
//!
//! - [`breaker`]: the pure breaker state machine, applied inside the replicated state.
//! - [`detector`]: per-upstream slots the request path feeds (atomics, no locks, no
//!   allocation), the local fast path, bounded load, and trip events.
//! - [`probe`]: one probe of an upstream (an HTTP check, a gRPC health check or a
//!   TCP connect).
//! - [`grpc_health`]: the gRPC health protocol's request and answer, encoded by hand.

pub mod breaker;
pub mod detector;
pub mod grpc_health;
pub mod probe;
