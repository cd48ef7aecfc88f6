//! ringway: a layer-7 HTTP load-balancing reverse proxy with consistent hashing.

pub mod cluster;
pub mod raft;
