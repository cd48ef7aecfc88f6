//! The memory of one pool's cache: stored responses in a `quick_cache` weighed by
//! bytes, the misses being filled (for coalescing), and purges.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use tokio::sync::watch;

use super::policy::Lifetime;
use crate::config::CacheSettings;

/// Bytes counted for every entry besides its key, head and body: the cache's own
/// slot, the `Arc`s and the object's fixed fields (about 200 bytes measured by
/// size_of, rounded up so the bound errs on the safe side).
pub const ENTRY_OVERHEAD_BYTES: u64 = 256;
/// Bytes counted for each stored header besides its name and value (the map's
/// entry and index slots).
const HEADER_OVERHEAD_BYTES: u64 = 48;
/// Misses being filled at once, per pool, that later misses of the same key can
/// wait for. Beyond it a miss goes upstream without coalescing; the bound only keeps
/// the table from growing with a flood of distinct keys (each entry is ~100 bytes).
pub const MAX_FILLS_IN_FLIGHT: usize = 65_536;
/// Most shards of the store: enough that requests on every core rarely meet on one
/// shard lock.
const MAX_SHARDS: u64 = 64;
/// The entry count the store is sized for is `max_bytes` over this (a typical small
/// response); only a hint for the initial table size.
const TYPICAL_OBJECT_BYTES: u64 = 16 << 10;

/// A stored response, shared by every hit.
#[derive(Debug)]
pub struct Object {
    pub status: StatusCode,
    /// As sent to clients (hop-by-hop fields already gone).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it was stored (or last revalidated).
    pub stored_at: SystemTime,
    pub lifetime: Lifetime,
}

/// How an object stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Stale by this much.
    Stale(Duration),
}

impl Object {
    /// Its age now (§4.2.3: initial age plus resident time).
    pub fn age(&self, now: SystemTime) -> Duration {
        let resident = now.duration_since(self.stored_at).unwrap_or_default();
        self.lifetime.initial_age + resident
    }

    /// Fresh while its age is under its lifetime; a zero lifetime (`no-cache`) is
    /// stale from the start.
    pub fn freshness(&self, now: SystemTime) -> Freshness {
        let age = self.age(now);
        match age < self.lifetime.fresh {
            true => Freshness::Fresh,
            false => Freshness::Stale(age - self.lifetime.fresh),
        }
    }

    fn weight(&self, key: &str) -> u64 {
        let head: u64 = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.len()) as u64 + HEADER_OVERHEAD_BYTES)
            .sum();
        ENTRY_OVERHEAD_BYTES + key.len() as u64 + head + self.body.len() as u64
    }
}

/// What a key holds: an object, or (for a response that varies) the request fields
/// its variants are stored under.
#[derive(Debug, Clone)]
enum Stored {
    Object(Arc<Object>, u64),
    Vary(Arc<[HeaderName]>),
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Arc<str>, Stored> for ByBytes {
    fn weight(&self, key: &Arc<str>, val: &Stored) -> u64 {
        match val {
            Stored::Object(_, w) => *w,
            Stored::Vary(names) => {
                ENTRY_OVERHEAD_BYTES + key.len() as u64 + 32 * names.len() as u64
            }
        }
    }
}

/// Counts what the store evicts to make room.
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

impl Lifecycle<Arc<str>, Stored> for Evictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _: Arc<str>, _: Stored) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of one pool's cache, read when `/metrics` is scraped.
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub coalesced: AtomicU64,
    pub purges: AtomicU64,
}

/// One pool's cache; kept across snapshots while its settings stay the same.
pub struct PoolCache {
    pub settings: CacheSettings,
    store: Cache<Arc<str>, Stored, ByBytes, DefaultHashBuilder, Evictions>,
    evictions: Arc<AtomicU64>,
    /// Keys whose miss is being filled: a later miss waits for the sender to drop.
    filling: Mutex<HashMap<Arc<str>, watch::Receiver<()>>>,
    /// Raised by every purge: a fill that began before one is not stored.
    epoch: AtomicU64,
    pub counters: Counters,
}

impl std::fmt::Debug for PoolCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCache")
            .field("settings", &self.settings)
            .field("bytes", &self.store.weight())
            .finish()
    }
}

/// The first miss of a key fills it; the others wait.
pub enum Lead {
    Leader(FillGuard),
    Wait(watch::Receiver<()>),
    /// Too many fills in flight: go upstream alone.
    Alone,
}

/// Held by the request filling a key; waiters wake when it drops (the object stored,
/// or the fill given up).
pub struct FillGuard {
    cache: Arc<PoolCache>,
    key: Arc<str>,
    rx: watch::Receiver<()>,
    _tx: watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut filling = lock(&self.cache.filling);
        if filling
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.rx))
        {
            filling.remove(&self.key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PoolCache {
    pub fn new(settings: CacheSettings) -> PoolCache {
        // Each shard must hold the largest object with room to spare (quick_cache
        // refuses an item heavier than a shard's hot share).
        let per_object = settings.max_object_bytes.max(1) * 2 + 4096;
        let shards = (settings.max_bytes / per_object).clamp(1, MAX_SHARDS);
        let shards = 1u64 << (63 - shards.leading_zeros());
        let items = (settings.max_bytes / TYPICAL_OBJECT_BYTES).max(64) as usize;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(settings.max_bytes)
            .shards(shards as usize)
            .build()
            .expect("capacity and shards are set");
        let evictions = Evictions::default();
        PoolCache {
            settings,
            evictions: evictions.0.clone(),
            store: Cache::with_options(options, ByBytes, DefaultHashBuilder::default(), evictions),
            filling: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    /// Bytes held now (as weighed: bodies, heads, keys and entry overhead).
    pub fn bytes(&self) -> u64 {
        self.store.weight()
    }

    pub fn entries(&self) -> usize {
        self.store.len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The object stored for a request with `headers` under `primary`.
    pub fn find(&self, primary: &str, headers: &HeaderMap) -> Option<Arc<Object>> {
        match self.store.get(primary)? {
            Stored::Object(o, _) => Some(o),
            Stored::Vary(names) => match self.store.get(&*variant_key(primary, &names, headers))? {
                Stored::Object(o, _) => Some(o),
                Stored::Vary(_) => None,
            },
        }
    }

    /// Stores `object` for a request with `headers`, unless a purge applied since
    /// `epoch` (the fill's start).
    pub fn store(
        &self,
        primary: &Arc<str>,
        headers: &HeaderMap,
        vary: &[HeaderName],
        object: Object,
        epoch: u64,
    ) {
        if self.epoch() != epoch {
            return;
        }
        let key: Arc<str> = match vary.is_empty() {
            true => primary.clone(),
            false => {
                self.store
                    .insert(primary.clone(), Stored::Vary(vary.to_vec().into()));
                variant_key(primary, vary, headers).into()
            }
        };
        let weight = object.weight(&key);
        if weight > self.settings.max_object_bytes + ENTRY_OVERHEAD_BYTES * 64 {
            return;
        }
        self.store
            .insert(key, Stored::Object(Arc::new(object), weight));
    }

    /// Whether this request fills `key`, waits for another, or goes alone.
    pub fn lead(self: &Arc<Self>, key: &Arc<str>) -> Lead {
        let mut filling = lock(&self.filling);
        if let Some(rx) = filling.get(key) {
            return Lead::Wait(rx.clone());
        }
        if filling.len() >= MAX_FILLS_IN_FLIGHT {
            return Lead::Alone;
        }
        let (tx, rx) = watch::channel(());
        filling.insert(key.clone(), rx.clone());
        Lead::Leader(FillGuard {
            cache: self.clone(),
            key: key.clone(),
            rx,
            _tx: tx,
        })
    }

    /// Waits for a fill of `key` in flight, or goes alone; never leads one. For a
    /// request that would store nothing (a HEAD): leading, it would hold every GET for
    /// the key back only to leave them all a miss.
    pub fn join(&self, key: &str) -> Lead {
        match lock(&self.filling).get(key) {
            Some(rx) => Lead::Wait(rx.clone()),
            None => Lead::Alone,
        }
    }

    /// True while a fill of `key` is in flight.
    pub fn is_filling(&self, key: &str) -> bool {
        lock(&self.filling).contains_key(key)
    }

    /// Removes `key` (and its variants), or every key starting with `prefix`;
    /// returns how many entries went. Fills in flight are not stored.
    pub fn purge(&self, key_or_prefix: &str, prefix: bool) -> usize {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.counters.purges.fetch_add(1, Ordering::Relaxed);
        let before = self.store.len();
        let variants = format!("{key_or_prefix}{VARIANT_SEPARATOR}");
        self.store.retain(|k, _| match prefix {
            true => !k.starts_with(key_or_prefix),
            false => **k != *key_or_prefix && !k.starts_with(&variants),
        });
        before.saturating_sub(self.store.len())
    }

    /// Removes every entry (a purge history too long to replay).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.store.clear();
    }
}

/// Separates a key from the varying request fields of its variants: a byte no
/// request line or header value holds.
const VARIANT_SEPARATOR: char = '\0';

fn variant_key(primary: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 64);
    key.push_str(primary);
    key.push(VARIANT_SEPARATOR);
    for name in names {
        key.push_str(name.as_str());
        key.push(':');
        for (i, v) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        key.push('\n');
    }
    key
}
