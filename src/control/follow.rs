//! Following committed state into routing snapshots: whenever the cluster applies a
//! change or the config in force changes, a new [`Snapshot`] is built off the hot path
//! and swapped in whole.

use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::driver::ClusterHandle;
use crate::cluster::state::{ClusterState, PurgeScope};
use crate::config::{self, parse_upstream_addr, Config};
use crate::health::breaker::PoolBreakers;
use crate::proxy::snapshot::Memberships;
use crate::proxy::{Proxy, Snapshot};
use crate::ring::Share;

/// The cluster's committed state as a snapshot's source of memberships.
pub struct Committed<'a> {
    pub state: &'a ClusterState,
    /// This instance waits to be added to a cluster: until the state has arrived, its
    /// pools have no upstreams rather than the file's.
    pub joining: bool,
}

impl Memberships for Committed<'_> {
    fn members(&self, pool: &str) -> Option<Vec<config::Upstream>> {
        let specs = self.state.pool(pool)?;
        let members = specs
            .iter()
            .filter(|u| !u.draining)
            .filter_map(|u| {
                // Apply validated every address; one that still fails is left off the ring.
                let address = parse_upstream_addr(&u.address).ok()?;
                Some(config::Upstream {
                    id: u.id.clone(),
                    address,
                    weight: u.weight,
                })
            })
            .collect();
        Some(members)
    }

    fn breakers(&self, pool: &str) -> Option<&PoolBreakers> {
        self.state.breakers(pool)
    }

    fn share(&self, pool: &str, upstream: &str) -> Share {
        self.state
            .ramp(pool, upstream)
            .map_or(Share::FULL, |r| r.share())
    }

    fn file_fallback(&self) -> bool {
        !self.joining || self.state.is_bootstrapped()
    }

    /// The members whose peer addresses the replicated state records: the founders
    /// (from the bootstrap) and every member added since, until removed. Recorded at
    /// the same log index everywhere, so every instance takes the same share of a
    /// `cluster_max_inflight` at the same point.
    fn instances(&self) -> usize {
        self.state.peers().len().max(1)
    }
}

/// Keeps `proxy`'s routing snapshot built from the latest committed state and the
/// config in force: rebuilds whenever either changes (a commit, a reloaded file).
/// Drift between the file and the cluster is logged once per change, naming the
/// upstreams that differ.
pub async fn follow_cluster(
    handle: ClusterHandle,
    mut configs: watch::Receiver<Arc<Config>>,
    proxy: Arc<Proxy>,
    joining: bool,
) {
    let mut views = handle.subscribe();
    let mut last: Option<(Arc<ClusterState>, Arc<Config>)> = None;
    let mut warned_joining = false;
    // Index of the newest cache purge applied to this instance's caches.
    let mut purged_through = 0;
    loop {
        let state = views.borrow_and_update().state.clone();
        let config = configs.borrow_and_update().clone();
        let same = last
            .as_ref()
            .is_some_and(|(s, c)| Arc::ptr_eq(s, &state) && Arc::ptr_eq(c, &config));
        if !same {
            let committed = Committed {
                state: &state,
                joining,
            };
            if !committed.file_fallback() && !warned_joining {
                warned_joining = true;
                tracing::warn!("cluster.join is set and this instance has not received the cluster's state: it answers 503 until a member adds it (ringway cluster add-node)");
            }
            let current = proxy.snapshot();
            let next = Snapshot::build_with(&config, Some(&committed), Some(&current));
            proxy.swap(next);
            purged_through = apply_purges(&state, &proxy.snapshot(), purged_through);
            let drift = log_drift(&state, &config);
            proxy.metrics().config_drift(drift);
            last = Some((state, config));
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            changed = configs.changed() => if changed.is_err() { return },
        }
    }
}

/// Applies to `snapshot`'s caches the purges of `state` past `through`, in log
/// order; returns the index of the newest applied. When `state` has already
/// forgotten purges past `through`, every cache is emptied: the safe stand-in for
/// purges this instance can no longer name.
///
/// A purge that applies while a response for a matching key is being filled stops
/// that fill from being stored (the cache's purge epoch moves on; any fill that began
/// before it is dropped at its end), so no copy older than the purge survives it.
pub fn apply_purges(state: &ClusterState, snapshot: &Snapshot, through: u64) -> u64 {
    let mut newest = through;
    if state.purges_forgotten_through() > through {
        snapshot.clear_caches();
        newest = state.purges_forgotten_through();
    }
    let from = newest;
    for purge in state.purges().filter(|p| p.index > from) {
        let (text, prefix) = match &purge.scope {
            PurgeScope::Key(k) => (k.as_str(), false),
            PurgeScope::Prefix(p) => (p.as_str(), true),
        };
        if let Some(removed) = snapshot.purge(&purge.pool, text, prefix) {
            tracing::info!(pool = %purge.pool, index = purge.index, key = %text, prefix, removed, "cache purge applied");
        }
        newest = purge.index;
    }
    newest
}

/// Logs each pool that differs between the file and the cluster; returns how many.
fn log_drift(state: &ClusterState, config: &Config) -> usize {
    if !state.is_bootstrapped() {
        return 0;
    }
    let drift = state.drift(config);
    for d in &drift {
        tracing::info!(drift = %d, "file and cluster differ");
    }
    drift.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, MAX_RECENT_PURGES};

    fn purge(key: &str) -> Command {
        Command::PurgeCache {
            pool: "web".into(),
            scope: PurgeScope::Key(key.into()),
        }
    }

    #[test]
    fn purges_are_kept_bounded_with_their_index_and_replayed_in_order() {
        let mut state = ClusterState::default();
        for i in 1..=(MAX_RECENT_PURGES as u64 + 10) {
            state.apply_at(i, &purge(&format!("GET h/{i}"))).unwrap();
        }
        let kept: Vec<u64> = state.purges().map(|p| p.index).collect();
        assert_eq!(kept.len(), MAX_RECENT_PURGES);
        assert_eq!(kept[0], 11);
        assert_eq!(state.purges_forgotten_through(), 10);
        // The same log applied elsewhere gives the same state (no clock read).
        let mut again = ClusterState::default();
        for i in 1..=(MAX_RECENT_PURGES as u64 + 10) {
            again.apply_at(i, &purge(&format!("GET h/{i}"))).unwrap();
        }
        assert_eq!(again, state);
        assert_eq!(ClusterState::decode(&state.encode()).unwrap(), state);
        let snapshot = Snapshot::default();
        // Behind the forgotten ones: everything up to the newest is applied.
        let last = MAX_RECENT_PURGES as u64 + 10;
        assert_eq!(apply_purges(&state, &snapshot, 3), last);
        assert_eq!(apply_purges(&state, &snapshot, last), last);
        let empty = Command::PurgeCache {
            pool: "web".into(),
            scope: PurgeScope::Key(String::new()),
        };
        assert!(state.apply_at(last + 1, &empty).is_err());
    }
}
