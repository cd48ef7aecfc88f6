//! Following committed state into routing snapshots: whenever the cluster applies a
//! change or the config in force changes, a new [`Snapshot`] is built off the hot path
//! and swapped in whole.

use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::driver::ClusterHandle;
use crate::cluster::state::ClusterState;
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
