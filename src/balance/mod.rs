//! Choosing where a request goes: which pool ([`route`]) and which ring position
//! ([`key`]). Pure functions over the request head; no I/O, no allocation on the
//! common paths.

pub mod key;
pub mod route;

pub use key::{HashKey, KeyInput, MissingKey};
pub use route::{request_host, HostPattern, Router};
