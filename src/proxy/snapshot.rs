//! The routing snapshot: everything the request path reads, built whole off the hot
//! path and swapped in atomically (`arc-swap`). A request loads one snapshot and uses
//! it to the end, so it never sees half of a change.

use std::collections::HashMap;
use std::sync::Arc;

use super::upstream::{ClientSettings, UpstreamClient};
use crate::balance::{HashKey, MissingKey, Router};
use crate::config::{self, Config, Timeouts, UpstreamAddr, UpstreamProtocol};
use crate::health::breaker::PoolBreakers;
use crate::health::detector::{Hub, PoolHealth};
use crate::metrics::SnapshotMetrics;
use crate::ring::{Member, Ring, Share};

/// One pool as the request path sees it.
#[derive(Debug)]
pub struct PoolState {
    pub name: Arc<str>,
    pub hash_key: HashKey,
    pub on_missing_key: MissingKey,
    pub max_attempts: usize,
    pub timeouts: Timeouts,
    pub ring: Ring,
    /// Indexed like the ring's members.
    pub upstreams: Vec<Arc<UpstreamClient>>,
    /// Detector slots, ejections and load, indexed like `upstreams`.
    pub health: PoolHealth,
    /// The pool's retry policy, and its budget (kept across snapshots while the pool
    /// lasts).
    pub retry: crate::config::RetryPolicy,
    pub retry_budget: Arc<super::retry::RetryBudget>,
    /// Caps per upstream on this instance.
    pub limits: crate::config::UpstreamLimits,
    /// Requests in flight to one upstream from this instance: `max_inflight`, or this
    /// instance's share of `cluster_max_inflight`, whichever is smaller.
    pub inflight_cap: Option<usize>,
    /// Requests to this pool keep the start of their bodies so that a stream an
    /// HTTP/2 upstream refused can go to the next upstream (see `proxy::replay`).
    pub keep_bodies: bool,
    /// How an upstream the breaker readmits ramps up (`slow_start_ms`): the leader
    /// proposes the readmission with it.
    pub slow_start: config::SlowStart,
    /// The pool's response cache (`cache`), kept across snapshots while its
    /// settings stay the same.
    pub cache: Option<Arc<super::cache::PoolCache>>,
}

impl PoolState {
    /// Whether request bodies are kept for a replay.
    pub fn may_refuse_streams(&self) -> bool {
        self.keep_bodies
    }
}

/// Where a snapshot's pool memberships and breakers come from when not from the file
/// alone: the cluster's committed state, as the control layer reads it.
pub trait Memberships {
    /// The upstreams on `pool`'s ring (draining ones left off), or `None` when the
    /// source does not hold the pool.
    fn members(&self, pool: &str) -> Option<Vec<config::Upstream>>;
    /// The breakers the source holds for `pool`.
    fn breakers(&self, pool: &str) -> Option<&PoolBreakers>;
    /// The share of its ring points `upstream` of `pool` owns: less than full while
    /// it is in slow start.
    fn share(&self, _pool: &str, _upstream: &str) -> Share {
        Share::FULL
    }
    /// True when a pool the source does not hold keeps the file's upstreams; false
    /// when it gets none (an instance that has not joined its cluster yet).
    fn file_fallback(&self) -> bool {
        true
    }
    /// How many instances share a pool's `cluster_max_inflight`: the members of the
    /// replicated configuration, at least one.
    fn instances(&self) -> usize {
        1
    }
}

/// Pools and the router over them.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub router: Router,
    pub pools: Vec<PoolState>,
    /// Where detectors send trips; passed on from snapshot to snapshot.
    pub health: Arc<Hub>,
    /// Metric handles of every pool and upstream, set by [`super::Proxy`] when it
    /// swaps the snapshot in (a snapshot built and not served records nothing).
    pub metrics: SnapshotMetrics,
    /// `limits.request_body_timeout_ms`; `None` (a snapshot built by hand) is the
    /// default.
    pub request_body_timeout: Option<std::time::Duration>,
    /// What the access log writes (`access_log`).
    pub access_log: Arc<config::access_log::AccessLog>,
}

impl Snapshot {
    /// How long a client may take to send a whole request body.
    pub fn request_body_timeout(&self) -> std::time::Duration {
        self.request_body_timeout
            .unwrap_or(config::DEFAULT_REQUEST_BODY_TIMEOUT)
    }
}

impl Snapshot {
    /// Builds a snapshot from a config alone, reusing the connection pools of
    /// `previous` for upstreams whose pool, id, address and client settings are
    /// unchanged.
    pub fn build(config: &Config, previous: Option<&Snapshot>) -> Snapshot {
        Snapshot::build_with(config, None, previous)
    }

    /// Builds a snapshot whose pool memberships come from `cluster` where it has the
    /// pool, and from the file otherwise (see [`Memberships::file_fallback`]). Routes,
    /// keys and timeouts always come from the file.
    pub fn build_with(
        config: &Config,
        cluster: Option<&dyn Memberships>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let mut reuse: HashMap<(&str, &str, &UpstreamAddr), &Arc<UpstreamClient>> = HashMap::new();
        for pool in previous.map(|p| p.pools.as_slice()).unwrap_or_default() {
            for up in &pool.upstreams {
                reuse.insert((&pool.name, &up.id, &up.addr), up);
            }
        }
        let hub = previous.map(|s| s.health.clone()).unwrap_or_default();
        let pools = config
            .pools
            .iter()
            .map(|p| {
                let members = match cluster.map(|c| (c.members(&p.name), c.file_fallback())) {
                    Some((Some(members), _)) => members,
                    Some((None, false)) => Vec::new(),
                    Some((None, true)) | None => p.upstreams.clone(),
                };
                let instances = cluster.map_or(1, |c| c.instances());
                let share = |id: &str| cluster.map_or(Share::FULL, |c| c.share(&p.name, id));
                let mut state = build_pool(p, &members, &reuse, instances, &share);
                if let Some(old) = previous.and_then(|s| s.pool(&p.name)) {
                    state.retry_budget = old.retry_budget.clone();
                    if let (Some(c), Some(settings)) = (&old.cache, &p.cache) {
                        if c.settings == *settings {
                            state.cache = Some(c.clone());
                        }
                    }
                }
                let old = previous.and_then(|s| s.pool(&p.name)).map(|s| &s.health);
                let breakers = cluster.and_then(|c| c.breakers(&p.name));
                let ids: Vec<Arc<str>> = state.upstreams.iter().map(|u| u.id.clone()).collect();
                let (settings, factor) = (&p.health, p.hash_balance_factor);
                state.health =
                    PoolHealth::build(&state.name, &ids, settings, factor, breakers, old, &hub);
                state
            })
            .collect();
        let router = Router::new(
            config
                .pools
                .iter()
                .map(|p| (p.hosts.as_slice(), p.path_prefix.as_str())),
        );
        Snapshot {
            router,
            pools,
            health: hub,
            metrics: SnapshotMetrics::default(),
            request_body_timeout: Some(config.limits.request_body_timeout),
            access_log: Arc::new(config.access_log.clone()),
        }
    }

    /// Applies a purge agreed by the cluster to `pool`'s cache (see
    /// [`super::cache::PoolCache::purge`]); `None` when the pool has no cache here.
    pub fn purge(&self, pool: &str, key_or_prefix: &str, prefix: bool) -> Option<usize> {
        let cache = self.pool(pool)?.cache.as_ref()?;
        Some(cache.purge(key_or_prefix, prefix))
    }

    /// Empties every pool's cache.
    pub fn clear_caches(&self) {
        self.pools
            .iter()
            .filter_map(|p| p.cache.as_ref())
            .for_each(|c| c.clear());
    }

    pub fn pool(&self, name: &str) -> Option<&PoolState> {
        self.pools.iter().find(|p| &*p.name == name)
    }
}

fn build_pool(
    pool: &config::Pool,
    members: &[config::Upstream],
    reuse: &HashMap<(&str, &str, &UpstreamAddr), &Arc<UpstreamClient>>,
    instances: usize,
    share: &dyn Fn(&str) -> Share,
) -> PoolState {
    let settings = ClientSettings {
        connect_timeout: pool.timeouts.connect,
        idle_timeout: pool.timeouts.idle,
        max_idle: pool.max_idle_per_upstream,
        tls: pool
            .tls
            .as_ref()
            .map(|t| crate::tls::UpstreamTls::new(t, pool.protocol)),
        protocol: pool.protocol,
        http2: pool.http2,
        max_connections: pool.upstream_limits.max_connections,
    };
    let upstreams = members
        .iter()
        .map(
            |u| match reuse.get(&(pool.name.as_str(), u.id.as_str(), &u.address)) {
                Some(existing) if *existing.settings() == settings => Arc::clone(existing),
                _ => Arc::new(UpstreamClient::new(
                    u.id.as_str().into(),
                    u.address.clone(),
                    settings.clone(),
                )),
            },
        )
        .collect();
    PoolState {
        name: pool.name.as_str().into(),
        hash_key: pool.hash_key.clone(),
        on_missing_key: pool.on_missing_key,
        max_attempts: pool.max_attempts as usize,
        timeouts: pool.timeouts,
        ring: ring_of(members, pool.vnodes, share),
        upstreams,
        health: PoolHealth::default(),
        retry: pool.retry.clone(),
        retry_budget: Arc::default(),
        limits: pool.upstream_limits,
        inflight_cap: pool.upstream_limits.inflight_cap(instances),
        keep_bodies: match pool.protocol {
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => pool.tls.is_some(),
            UpstreamProtocol::Http1 => false,
        },
        slow_start: pool.slow_start,
        cache: pool
            .cache
            .clone()
            .map(|settings| Arc::new(super::cache::PoolCache::new(settings))),
    }
}

/// The ring a pool's config produces.
pub fn pool_ring(pool: &config::Pool) -> Ring {
    ring_of(&pool.upstreams, pool.vnodes, &|_| Share::FULL)
}

fn ring_of(members: &[config::Upstream], vnodes: u32, share: &dyn Fn(&str) -> Share) -> Ring {
    let members: Vec<Member> = members
        .iter()
        .map(|u| Member {
            id: &u.id,
            weight: u.weight,
        })
        .collect();
    Ring::build_shared(&members, vnodes, |i| share(members[i].id))
}
