//! Starting this instance's cluster member: storage under `node.data_dir`, the peer
//! transport, and the driver on its own thread. Without a `cluster` section the
//! instance is a group of one on the same code path, so its state is still durable.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, watch};

use crate::cluster::driver::{start_thread, ClusterHandle, Driver, DriverConfig, NoPeers};
use crate::cluster::forward::{ForwardServer, Proposer};
use crate::cluster::raft_id;
use crate::cluster::state::ClusterState;
use crate::cluster::storage::{DirLock, DiskStorage};
use crate::cluster::transport::{
    PeerAddr, PeerAuth, Secret, SecretError, Transport, TransportConfig,
};
use crate::config::{Config, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT};
use crate::raft::{ConfState, NodeId};

/// Raft messages received but not yet stepped into the node. Raft tolerates loss, so
/// a full queue drops (and the transport counts it) rather than waiting.
pub const INBOUND_QUEUE: usize = 4096;
/// Name of the cluster in the transport handshake: instances of other clusters on
/// the same addresses are refused.
pub const CLUSTER_NAME: &str = "ringway";

/// A started cluster member.
pub struct Member {
    pub handle: ClusterHandle,
    /// Raft id of each configured node name (this one included).
    pub names: BTreeMap<NodeId, String>,
    /// The peer transport once it runs (never, for a group of one): read by metrics.
    pub transport: Arc<OnceLock<Transport>>,
    /// How long each storage batch took to append and `fdatasync`.
    pub storage_sync: prometheus::Histogram,
    thread: std::thread::JoinHandle<()>,
    /// Held for the life of the process: no second instance opens this data dir.
    _lock: DirLock,
}

/// Why the cluster member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}: the data dir is in use by another ringway process ({}); each instance needs its own node.data_dir", dir.display(), pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")))]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error("{}: {source}", dir.display())]
    Storage {
        dir: PathBuf,
        source: crate::raft::StorageError,
    },
    #[error("node ids {a:?} and {b:?} map to the same raft id; rename one")]
    IdClash { a: String, b: String },
    #[error(transparent)]
    Driver(#[from] crate::cluster::driver::DriverError),
    #[error("cannot start the cluster thread: {0}")]
    Thread(std::io::Error),
    #[error("cluster.tls.{}: {}", .0.field, .0.message)]
    Tls(crate::tls::LoadError),
    #[error("cluster.secret_file: {0}")]
    Secret(SecretError),
}

impl Member {
    /// Opens storage, starts transport and driver. `shutdown` flipping to `true`
    /// stops the driver (a leader hands over first).
    pub fn start(config: &Config, shutdown: watch::Receiver<bool>) -> Result<Member, StartError> {
        let lock = lock_data_dir(&config.node.data_dir)?;
        let names = node_names(config)?;
        let voters: Vec<NodeId> = names.keys().copied().collect();
        let me = raft_id(&config.node.id);
        let dir = config.node.data_dir.join("raft");
        let joining = config.cluster.as_ref().is_some_and(|c| c.join);
        let mut storage = if joining {
            // No configuration of its own: the leader that adds it sends one.
            DiskStorage::open(&dir)
        } else {
            DiskStorage::open_with_conf(&dir, ConfState::with_voters(&voters))
        }
        .map_err(|source| StartError::Storage { dir, source })?;
        let storage_sync = crate::metrics::storage_sync_histogram();
        let observed = storage_sync.clone();
        storage.observe_syncs(Box::new(move |took| observed.observe(took.as_secs_f64())));
        let (heartbeat, election) = config
            .cluster
            .as_ref()
            .map_or((DEFAULT_HEARTBEAT, DEFAULT_ELECTION_TIMEOUT), |c| {
                (c.heartbeat, c.election_timeout)
            });
        let mut dcfg = DriverConfig::from_timeouts(me, heartbeat, election);
        dcfg.bootstrap = (!joining).then(|| ClusterState::bootstrap_command(config));
        if let Some(c) = &config.cluster {
            dcfg.compact_threshold = c.compact_threshold;
            dcfg.file_peers = c.peers.clone();
        }
        dcfg.seed = me ^ std::process::id() as u64;
        dcfg.names = names.clone();
        dcfg.data_dir = Some(config.node.data_dir.clone());
        let (driver, handle) = Driver::new(dcfg, storage)?;
        let transport_cfg = transport_config(config, me)?;
        let tls = match config.cluster.as_ref().and_then(|c| c.tls.as_ref()) {
            Some(tls) => Some(crate::tls::cluster::transport(tls).map_err(StartError::Tls)?),
            None => None,
        };
        let transport = Arc::new(OnceLock::new());
        let slot = transport.clone();
        let server = ForwardServer::new(handle.clone());
        let thread = start_thread("ringway-cluster", move || {
            run(driver, (transport_cfg, tls, server), slot, shutdown)
        })
        .map_err(StartError::Thread)?;
        Ok(Member {
            handle,
            names,
            transport,
            storage_sync,
            thread,
            _lock: lock,
        })
    }

    /// The one path to propose a change from this instance: locally when it leads,
    /// forwarded to the leader over the transport otherwise.
    pub fn proposer(&self) -> Proposer {
        Proposer::new(self.handle.clone(), self.transport.clone())
    }

    /// Waits for the driver thread to end (after shutdown was signalled).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the cluster thread panicked");
        }
    }
}

type TransportParts = (
    Option<TransportConfig>,
    Option<crate::tls::cluster::Seam>,
    ForwardServer,
);

async fn run(
    driver: Driver<DiskStorage>,
    (transport, tls, server): TransportParts,
    slot: Arc<OnceLock<Transport>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stop = async move {
        let _ = shutdown.wait_for(|&s| s).await;
    };
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    match transport {
        None => driver.run(rx, NoPeers, stop).await,
        Some(cfg) => match start_transport(cfg, tx, tls).await {
            Ok(t) => {
                t.serve_requests(Arc::new(server));
                let _ = slot.set(t.clone());
                driver.run(rx, t.clone(), stop).await;
                t.shutdown().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the cluster transport; this node stays out of the cluster")
            }
        },
    }
}

async fn start_transport(
    cfg: TransportConfig,
    tx: mpsc::Sender<crate::raft::Message>,
    tls: Option<crate::tls::cluster::Seam>,
) -> std::io::Result<Transport> {
    match tls {
        None => Transport::start(cfg, tx).await,
        Some((dialer, acceptor)) => Transport::start_with(cfg, tx, dialer, acceptor).await,
    }
}

/// Locks `node.data_dir` for this process (see [`DirLock`]).
fn lock_data_dir(dir: &std::path::Path) -> Result<DirLock, StartError> {
    DirLock::acquire(dir).map_err(|e| match e {
        crate::raft::StorageError::Locked { dir, pid } => StartError::Locked { dir, pid },
        source => StartError::Storage {
            dir: dir.to_path_buf(),
            source,
        },
    })
}

/// Every configured node: raft id to name. A group of one without a `cluster` section.
fn node_names(config: &Config) -> Result<BTreeMap<NodeId, String>, StartError> {
    let names: Vec<&String> = match &config.cluster {
        Some(c) => c.peers.keys().collect(),
        None => vec![&config.node.id],
    };
    let mut out = BTreeMap::new();
    for name in names {
        if let Some(other) = out.insert(raft_id(name), name.clone()) {
            return Err(StartError::IdClash {
                a: other,
                b: name.clone(),
            });
        }
    }
    Ok(out)
}

/// The transport of a configured cluster (even a cluster of one, which can grow at
/// runtime); none without a `cluster` section.
fn transport_config(config: &Config, me: NodeId) -> Result<Option<TransportConfig>, StartError> {
    let Some(cluster) = config.cluster.as_ref() else {
        return Ok(None);
    };
    let auth = match (&cluster.tls, &cluster.secret_file) {
        (Some(_), _) => PeerAuth::Certificates,
        (None, Some(path)) => PeerAuth::Secret(Secret::load(path).map_err(StartError::Secret)?),
        (None, None) => {
            if cluster.insecure_plaintext {
                tracing::warn!("cluster.insecure_plaintext: peers are not authenticated; anyone who can reach cluster.address can change this cluster");
            }
            PeerAuth::Insecure
        }
    };
    let peers: HashMap<NodeId, PeerAddr> = cluster
        .peers
        .iter()
        .filter(|(name, _)| **name != config.node.id)
        .map(|(name, addr)| (raft_id(name), PeerAddr::new(name.as_str(), *addr)))
        .collect();
    Ok(Some(TransportConfig {
        id: me,
        listen: cluster.address,
        peers,
        cluster: CLUSTER_NAME.to_owned(),
        name: config.node.id.clone(),
        auth,
    }))
}
