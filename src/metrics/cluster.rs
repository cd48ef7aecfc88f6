//! Raft metrics, read at scrape time from what the cluster member publishes: the
//! driver's [`ClusterView`](crate::cluster::driver::ClusterView) and counters, and the
//! transport's counters. Nothing here runs on the driver's thread or takes a lock it
//! holds; a scrape costs the driver nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ringway_raft_term` | gauge | |
//! | `ringway_raft_is_leader` | gauge (0 or 1) | |
//! | `ringway_raft_role` | gauge (1 for the current role) | `role` (`leader`, `follower`, `candidate`, `pre-candidate`) |
//! | `ringway_raft_leader_changes_total` | counter | |
//! | `ringway_raft_commit_index` | gauge | |
//! | `ringway_raft_applied_index` | gauge | |
//! | `ringway_raft_proposals_committed_total` | counter | |
//! | `ringway_raft_proposals_failed_total` | counter | `reason` (`refused`, `lost`, `busy`, `not_leader`, `invalid`, `stopped`) |
//! | `ringway_raft_messages_sent_total` | counter | `peer` |
//! | `ringway_raft_bytes_sent_total` | counter | `peer` |
//! | `ringway_raft_members` | gauge (members of this node's configuration) | `role` (`voter`, `learner`) |
//! | `ringway_raft_membership` | gauge (1 for this node's own kind of membership) | `role` (`voter`, `learner`, `none`) |
//! | `ringway_raft_messages_dropped_total` | counter | `peer`, `reason` (`queue_full`, `io`, `oversize`, `fault`) |
//! | `ringway_raft_messages_received_total` | counter | |
//! | `ringway_raft_peer_connected` | gauge (0 or 1) | `peer` |
//! | `ringway_upstream_breaker_state` | gauge (1 for the current state) | `pool`, `upstream`, `state` (`closed`, `open`, `half_open`) |
//! | `ringway_upstream_ejections_total` | counter (replicated: the same on every instance) | `pool`, `upstream` |
//! | `ringway_pool_panic` | gauge (1 while the pool routes to every upstream) | `pool` |
//! | `ringway_upstream_slow_start_step` | gauge (the step of its slow start, 0 when none is under way: a full share) | `pool`, `upstream` |
//! | `ringway_raft_storage_sync_seconds` | histogram ([`STORAGE_SYNC_BUCKETS`](super::STORAGE_SYNC_BUCKETS)) | |
//!
//! Peers are named as in the configuration. A group of one has no transport, so no
//! per-peer series.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use super::Metrics;
use crate::cluster::driver::{ClusterHandle, StorageHealth};
use crate::cluster::transport::Transport;
use crate::health::breaker::Phase;
use crate::raft::{NodeId, Role};

const ROLES: [(Role, &str); 4] = [
    (Role::Leader, "leader"),
    (Role::Follower, "follower"),
    (Role::Candidate, "candidate"),
    (Role::PreCandidate, "pre-candidate"),
];

impl Metrics {
    /// Exports the Raft metrics of this instance's cluster member.
    pub fn register_cluster(
        &self,
        handle: &ClusterHandle,
        names: &BTreeMap<NodeId, String>,
        transport: &Arc<OnceLock<Transport>>,
        storage_sync: &prometheus::Histogram,
    ) {
        self.register(Box::new(storage_sync.clone()));
        self.register(Box::new(RaftCollector {
            handle: handle.clone(),
            names: names.clone(),
            transport: transport.clone(),
            template: Families::new(),
        }));
    }
}

/// Builds fresh families from the published state on every scrape.
struct RaftCollector {
    handle: ClusterHandle,
    names: BTreeMap<NodeId, String>,
    transport: Arc<OnceLock<Transport>>,
    /// Never filled: only its descriptions are used, for registration.
    template: Families,
}

/// One scrape's worth of Raft metrics.
struct Families {
    term: IntGauge,
    is_leader: IntGauge,
    role: IntGaugeVec,
    leader_changes: IntCounter,
    commit: IntGauge,
    applied: IntGauge,
    storage: IntGaugeVec,
    committed: IntCounter,
    failed: IntCounterVec,
    sent: IntCounterVec,
    bytes_sent: IntCounterVec,
    members: IntGaugeVec,
    membership: IntGaugeVec,
    dropped: IntCounterVec,
    received: IntCounter,
    connected: IntGaugeVec,
    breaker: IntGaugeVec,
    ejections: IntCounterVec,
    panic: IntGaugeVec,
    slow_start: IntGaugeVec,
}

impl Families {
    fn new() -> Families {
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        Families {
            term: gauge("ringway_raft_term", "Current Raft term of this node."),
            is_leader: gauge("ringway_raft_is_leader", "1 while this node is the leader."),
            role: gauges(
                "ringway_raft_role",
                "1 for this node's current Raft role.",
                &["role"],
            ),
            leader_changes: counter(
                "ringway_raft_leader_changes_total",
                "Times this node saw a new leader.",
            ),
            commit: gauge(
                "ringway_raft_commit_index",
                "Highest log index known committed.",
            ),
            applied: gauge(
                "ringway_raft_applied_index",
                "Highest log index applied to the state.",
            ),
            storage: gauges(
                "ringway_raft_storage_state",
                "1 for the state of this node's Raft log: writable, full (no room; the \
                 batch is written again every second) or failed (the instance stops).",
                &["state"],
            ),
            committed: counter(
                "ringway_raft_proposals_committed_total",
                "Proposed changes committed and applied.",
            ),
            failed: counters(
                "ringway_raft_proposals_failed_total",
                "Proposed changes that did not apply, by reason.",
                &["reason"],
            ),
            sent: counters(
                "ringway_raft_messages_sent_total",
                "Raft messages written to a peer's connection.",
                &["peer"],
            ),
            bytes_sent: counters(
                "ringway_raft_bytes_sent_total",
                "Bytes of Raft messages written to a peer's connection.",
                &["peer"],
            ),
            members: gauges(
                "ringway_raft_members",
                "Members of the configuration this node holds, by role.",
                &["role"],
            ),
            membership: gauges(
                "ringway_raft_membership",
                "1 for this node's own membership: voter, learner (receives the log, never \
                 votes) or none (joining, or removed).",
                &["role"],
            ),
            dropped: counters(
                "ringway_raft_messages_dropped_total",
                "Raft messages to a peer that were dropped, by reason.",
                &["peer", "reason"],
            ),
            received: counter(
                "ringway_raft_messages_received_total",
                "Raft messages received from peers and handed to the Raft core.",
            ),
            connected: gauges(
                "ringway_raft_peer_connected",
                "1 while the connection to the peer is established.",
                &["peer"],
            ),
            breaker: gauges(
                "ringway_upstream_breaker_state",
                "1 for the circuit-breaker state the cluster agreed on for the upstream.",
                &["pool", "upstream", "state"],
            ),
            ejections: counters(
                "ringway_upstream_ejections_total",
                "Times the cluster ejected the upstream (since its breaker was created).",
                &["pool", "upstream"],
            ),
            panic: gauges(
                "ringway_pool_panic",
                "1 while too few of the pool's upstreams are healthy and it routes to all of them.",
                &["pool"],
            ),
            slow_start: gauges(
                "ringway_upstream_slow_start_step",
                "The step of the upstream's slow start the cluster agreed on (0: none under way, a full share of the ring).",
                &["pool", "upstream"],
            ),
        }
    }

    fn all(&self) -> [&dyn Collector; 20] {
        [
            &self.term,
            &self.is_leader,
            &self.role,
            &self.leader_changes,
            &self.commit,
            &self.applied,
            &self.storage,
            &self.committed,
            &self.failed,
            &self.sent,
            &self.bytes_sent,
            &self.members,
            &self.membership,
            &self.dropped,
            &self.received,
            &self.connected,
            &self.breaker,
            &self.ejections,
            &self.panic,
            &self.slow_start,
        ]
    }
}

impl RaftCollector {
    fn peer_name(&self, id: NodeId) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn fill_driver(&self, f: &Families) {
        let view = self.handle.view();
        f.term.set(clamp(view.term));
        f.is_leader.set(i64::from(view.role == Role::Leader));
        for (role, name) in ROLES {
            f.role
                .with_label_values(&[name])
                .set(i64::from(view.role == role));
        }
        for (pool, upstreams) in view.state.pools() {
            let breakers = view.state.breakers(pool);
            f.panic
                .with_label_values(&[pool])
                .set(i64::from(breakers.is_some_and(|b| b.panic)));
            for u in upstreams {
                let b = breakers.and_then(|b| b.upstreams.get(&u.id));
                let phase = b.map_or(Phase::Closed, |b| b.phase);
                for (p, name) in [
                    (Phase::Closed, "closed"),
                    (Phase::Open, "open"),
                    (Phase::HalfOpen, "half_open"),
                ] {
                    f.breaker
                        .with_label_values(&[pool, &u.id, name])
                        .set(i64::from(phase == p));
                }
                f.ejections
                    .with_label_values(&[pool, &u.id])
                    .inc_by(b.map_or(0, |b| b.ejected_total));
                let step = view.state.ramp(pool, &u.id).map_or(0, |r| r.step);
                f.slow_start
                    .with_label_values(&[pool, &u.id])
                    .set(i64::from(step));
            }
        }
        f.members
            .with_label_values(&["voter"])
            .set(view.voters.len() as i64);
        f.members
            .with_label_values(&["learner"])
            .set(view.learners.len() as i64);
        let own = if view.voters.contains(&view.id) {
            "voter"
        } else if view.learners.contains(&view.id) {
            "learner"
        } else {
            "none"
        };
        for role in ["voter", "learner", "none"] {
            f.membership
                .with_label_values(&[role])
                .set(i64::from(role == own));
        }
        f.commit.set(clamp(view.commit));
        f.applied.set(clamp(view.applied));
        for (state, on) in [
            ("writable", view.storage == StorageHealth::Writable),
            ("full", matches!(view.storage, StorageHealth::Full { .. })),
            (
                "failed",
                matches!(view.storage, StorageHealth::Failed { .. }),
            ),
        ] {
            f.storage.with_label_values(&[state]).set(i64::from(on));
        }
        let s = self.handle.stats();
        let load = |c: &AtomicU64| c.load(Relaxed);
        f.leader_changes.inc_by(load(&s.leader_changes));
        f.committed.inc_by(load(&s.proposals_committed));
        for (reason, c) in [
            ("refused", &s.proposals_refused),
            ("lost", &s.proposals_lost),
            ("busy", &s.proposals_busy),
            ("not_leader", &s.proposals_not_leader),
            ("invalid", &s.proposals_invalid),
            ("stopped", &s.proposals_stopped),
        ] {
            f.failed.with_label_values(&[reason]).inc_by(load(c));
        }
    }

    fn fill_transport(&self, f: &Families) {
        let Some(transport) = self.transport.get() else {
            return;
        };
        let stats = transport.stats();
        f.received.inc_by(stats.received);
        for (id, p) in &stats.peers {
            let peer = self.peer_name(*id);
            f.sent.with_label_values(&[&peer]).inc_by(p.sent);
            f.bytes_sent
                .with_label_values(&[&peer])
                .inc_by(p.bytes_sent);
            f.connected
                .with_label_values(&[&peer])
                .set(i64::from(p.connected));
            for (reason, n) in [
                ("queue_full", p.dropped_full),
                ("io", p.dropped_io),
                ("oversize", p.dropped_oversize),
                ("fault", p.dropped_fault),
            ] {
                f.dropped
                    .with_label_values(&[peer.as_str(), reason])
                    .inc_by(n);
            }
        }
    }
}

impl Collector for RaftCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.template
            .all()
            .into_iter()
            .flat_map(|c| c.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = Families::new();
        self.fill_driver(&f);
        self.fill_transport(&f);
        let mut out: Vec<MetricFamily> = f.all().into_iter().flat_map(|c| c.collect()).collect();
        // A group of one has no transport, hence no message counts (the registry
        // leaves out the per-peer families, which have no samples).
        if self.transport.get().is_none() {
            out.retain(|mf| mf.name() != "ringway_raft_messages_received_total");
        }
        out
    }
}

/// Raft indexes and terms as gauge values (they never reach `i64::MAX`).
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
