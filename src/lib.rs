//! ringway: a layer-7 HTTP load-balancing reverse proxy with consistent hashing.

pub mod balance;
pub mod cli;
pub mod config;
pub mod echo;
pub mod proxy;
pub mod raft;
pub mod ring;
pub mod shutdown;
