//! The cache's series, read from the snapshot in force when `/metrics` is scraped
//! (the counters live in each pool's cache, which outlasts snapshots): the request
//! path only bumps atomics it already holds.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::super::Snapshot;

const LABELS: [&str; 1] = ["pool"];

/// The collector of `ringway_cache_*`.
pub struct CacheMetrics {
    snapshot: Arc<ArcSwap<Snapshot>>,
    descs: Vec<Desc>,
}

struct Families {
    counters: Vec<(IntCounterVec, Which)>,
    bytes: IntGaugeVec,
    entries: IntGaugeVec,
}

#[derive(Clone, Copy)]
enum Which {
    Hits,
    Misses,
    Stale,
    Coalesced,
    Evictions,
    Purges,
}

fn families() -> Families {
    let counter = |name: &str, help: &str| {
        IntCounterVec::new(Opts::new(name, help), &LABELS).expect("valid metric")
    };
    let gauge = |name: &str, help: &str| {
        IntGaugeVec::new(Opts::new(name, help), &LABELS).expect("valid metric")
    };
    Families {
        counters: vec![
            (counter("ringway_cache_hits_total", "Requests answered from the cache with a fresh copy."), Which::Hits),
            (counter("ringway_cache_misses_total", "Cacheable requests sent upstream (nothing stored, a stale copy, or a client asking for revalidation)."), Which::Misses),
            (counter("ringway_cache_stale_served_total", "Stale copies served (stale-while-revalidate or stale-if-error)."), Which::Stale),
            (counter("ringway_cache_coalesced_total", "Misses that waited for another request filling the same key."), Which::Coalesced),
            (counter("ringway_cache_evictions_total", "Entries evicted to keep the cache within max_bytes."), Which::Evictions),
            (counter("ringway_cache_purges_total", "Purges applied (each one agreed by the cluster)."), Which::Purges),
        ],
        bytes: gauge("ringway_cache_bytes", "Bytes the cache holds now, as weighed against max_bytes."),
        entries: gauge("ringway_cache_entries", "Entries the cache holds now."),
    }
}

impl CacheMetrics {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> CacheMetrics {
        let f = families();
        let mut descs: Vec<Desc> = Vec::new();
        for (c, _) in &f.counters {
            descs.extend(c.desc().into_iter().cloned());
        }
        descs.extend(f.bytes.desc().into_iter().cloned());
        descs.extend(f.entries.desc().into_iter().cloned());
        CacheMetrics { snapshot, descs }
    }
}

impl Collector for CacheMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = families();
        let snapshot = self.snapshot.load();
        for pool in &snapshot.pools {
            let Some(cache) = &pool.cache else { continue };
            let labels = [&*pool.name];
            let c = &cache.counters;
            for (family, which) in &f.counters {
                let value = match which {
                    Which::Hits => c.hits.load(Relaxed),
                    Which::Misses => c.misses.load(Relaxed),
                    Which::Stale => c.stale.load(Relaxed),
                    Which::Coalesced => c.coalesced.load(Relaxed),
                    Which::Evictions => cache.evictions(),
                    Which::Purges => c.purges.load(Relaxed),
                };
                family.with_label_values(&labels).inc_by(value);
            }
            f.bytes.with_label_values(&labels).set(cache.bytes() as i64);
            f.entries
                .with_label_values(&labels)
                .set(cache.entries() as i64);
        }
        let mut out = Vec::new();
        for (c, _) in &f.counters {
            out.extend(c.collect());
        }
        out.extend(f.bytes.collect());
        out.extend(f.entries.collect());
        out
    }
}
