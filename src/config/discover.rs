//! `pools[].discover`: a pool whose upstreams the cluster's leader finds in DNS
//! (built and checked in `build/discover.rs`; resolved by [`crate::discover`]).

use std::net::SocketAddr;
use std::time::Duration;

/// How often the leader resolves when the file does not say.
pub const DEFAULT_DISCOVER_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest interval: below this the leader would ask its resolver faster than a
/// DNS change (and a Raft round) can settle.
pub const MIN_DISCOVER_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval: an hour is already slower than any orchestrator's turnover.
pub const MAX_DISCOVER_INTERVAL: Duration = Duration::from_secs(3600);
/// The deadline of one resolution (every query and any TCP retry) by default.
pub const DEFAULT_DISCOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest deadline of one resolution; it must also fit in the interval.
pub const MAX_DISCOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Share of a pool one answer may remove at once without being held back.
pub const DEFAULT_MAX_REMOVE_PERCENT: u32 = 50;
/// Answers in a row that must agree before a held-back removal is applied.
pub const DEFAULT_HOLD_DOWN: u32 = 3;
/// At least two: the answer that was held, and one that repeats it.
pub const MIN_HOLD_DOWN: u32 = 2;
/// More than this many agreeing answers adds only delay.
pub const MAX_HOLD_DOWN: u32 = 100;

/// Longest DNS name in text form (RFC 1035: 255 octets on the wire).
pub const MAX_DNS_NAME_CHARS: usize = 253;

/// A DNS name as discovery compares names: lowercase, no trailing dot.
pub fn normalise_dns_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The record type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    A,
    Aaaa,
    Srv,
}

impl RecordType {
    pub fn parse(s: &str) -> Result<RecordType, String> {
        match s.to_ascii_uppercase().as_str() {
            "A" => Ok(RecordType::A),
            "AAAA" => Ok(RecordType::Aaaa),
            "SRV" => Ok(RecordType::Srv),
            _ => Err(format!("must be A, AAAA or SRV, got {s:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Srv => "SRV",
        }
    }
}

/// Where a pool's upstreams come from instead of `upstreams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discover {
    /// The name asked (lowercase, no trailing dot, taken as fully qualified).
    pub dns: String,
    pub record: RecordType,
    /// The upstreams' port for A and AAAA answers (SRV answers carry their own).
    pub port: Option<u16>,
    pub interval: Duration,
    /// The deadline of one resolution.
    pub timeout: Duration,
    /// The DNS server asked; absent: the first `nameserver` of `/etc/resolv.conf`.
    pub resolver: Option<SocketAddr>,
    /// A removal of more than this share of the pool is held back (`max_remove_percent`).
    pub max_remove_percent: u32,
    /// How many answers in a row must agree on a held-back removal (`hold_down`).
    pub hold_down: u32,
    /// Weight of each upstream found by A or AAAA (SRV answers carry their own).
    pub weight: u32,
    /// A and AAAA upstreams are ids `{id_prefix}{slot}`; default `{pool}-`.
    pub id_prefix: String,
}
