//! ringway: a layer-7 HTTP load-balancing reverse proxy with consistent hashing.

pub mod balance;
pub mod config;
pub mod raft;
pub mod ring;
