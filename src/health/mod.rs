//! Health: per-instance detection of failing upstreams and the circuit breakers the
//! cluster agrees on.
//!
//! - [`breaker`]: the pure breaker state machine, applied inside the replicated state.
//! - [`detector`]: per-upstream slots the request path feeds (atomics, no locks, no
//!   allocation), the local fast path, bounded load, and trip events.

pub mod active;
pub mod breaker;
pub mod controller;
pub mod detector;
pub mod probe;
