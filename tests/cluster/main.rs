//! The cluster tests, as one test binary: Raft over the real transport and storage,
//! the cluster driver, and whole clusters of `ringway run` processes (membership,
//! learners, breakers, slow start, forwarding, DNS discovery, the nemesis soak). One
//! binary compiles and links them once; run one file's tests with
//! `cargo test --test cluster process::` (or `learners::`, `nemesis::`, ...).

#[path = "../common/dns.rs"]
mod dns;
#[path = "../procs/mod.rs"]
mod procs;

mod auth;
mod breakers;
mod discover;
mod driver;
mod forward;
mod learners;
mod nemesis;
mod ops;
mod process;
mod slow_start;
mod state;
mod storage;
mod transport;
