//! `pools[].cache`: a response cache for the pool's GET and HEAD requests, bounded in
//! memory, off unless the section is present.

use std::time::Duration;

/// Memory the cache may hold when `max_bytes` is not given: 64 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 << 20;
/// Largest response stored when `max_object_bytes` is not given: 1 MiB.
pub const DEFAULT_CACHE_MAX_OBJECT_BYTES: u64 = 1 << 20;
/// The smallest `max_bytes`: 64 KiB. Less holds too few objects to be worth the
/// lookups.
pub const MIN_CACHE_MAX_BYTES: u64 = 64 << 10;
/// The largest `max_bytes`: 64 GiB, past which a typo (a missing unit) is likelier
/// than an intent.
pub const MAX_CACHE_MAX_BYTES: u64 = 64 << 30;
/// `max_object_bytes` is at most this fraction of `max_bytes` (one quarter): the
/// cache's shards are sized so that the largest object fits in one, and a cache that
/// one object could fill would evict everything else to take it.
pub const MAX_OBJECT_SHARE: u64 = 4;
/// How long concurrent misses of one key wait for the first one's response when
/// `coalesce_timeout_ms` is not given.
pub const DEFAULT_COALESCE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `coalesce_timeout_ms`: 60 s. A waiter held longer is better sent
/// upstream itself.
pub const MAX_COALESCE_TIMEOUT_MS: u64 = 60_000;

/// A pool's cache settings (`pools[].cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes the cache holds at most: bodies, heads and keys, plus a fixed cost per
    /// entry.
    pub max_bytes: u64,
    /// A response larger than this passes through uncached.
    pub max_object_bytes: u64,
    /// How long a miss waits for another miss of the same key already upstream.
    pub coalesce_timeout: Duration,
    /// What names an entry (`key`, a template of request parts as `hash_key` takes),
    /// after `GET `; `None`: the host and the URI. A request missing a part the
    /// template names is neither served from the cache nor stored.
    pub key: Option<crate::balance::HashKey>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_object_bytes: DEFAULT_CACHE_MAX_OBJECT_BYTES,
            coalesce_timeout: DEFAULT_COALESCE_TIMEOUT,
            key: None,
        }
    }
}
