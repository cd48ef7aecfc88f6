//! The Raft core's rule, codec, membership, learner and planted-bug tests, as one
//! test binary (the simulator's seed runs stay in `raft_sim`, which the soak builds
//! alone in release). Run one file's tests with `cargo test --test raft rules::`
//! (or `codec::`, `teeth::`, ...).

mod codec;
mod learners;
mod membership;
mod rules;
mod teeth;
