//! The peer transport: carries Raft [`Message`]s between ringway instances over TCP.
//!
//! Each instance listens on one address and dials each peer once; a connection carries
//! frames one way, from dialer to acceptor. Besides Raft messages a node can send a
//! peer a request ([`Transport::call`]); the peer's [`RequestHandler`] answers it and
//! the reply travels back on the peer's own connection to the asker. Sending never blocks: every peer has a
//! bounded queue (the oldest messages are dropped when it is full, since newer ones
//! supersede them for Raft) drained by its own writer task, so a slow or dead peer
//! only loses its own messages. Writers reconnect with exponential backoff and jitter.
//! Every connection opens with a versioned handshake naming the cluster and both node
//! ids and authenticating both ends (see [`auth`]); the acceptor refuses other
//! clusters, versions, unknown ids and failed authentication, and tells a node that is
//! not a member so ([`Transport::not_a_member`]). Silent connections are closed fast
//! and pending handshakes are bounded per source address, with the oldest silent one
//! evicted for a newcomer, so a flood cannot keep real peers out. Frames are
//! length-prefixed codec messages; a malformed frame closes its connection and is
//! counted. Raft tolerates loss, so every drop is counted, never retried.
//!
//! Connections are made through the [`Dialer`] and [`Acceptor`] seams (plain TCP by
//! default), where mutual TLS plugs in. See [`wire`] for the byte layout.

pub mod auth;
mod calls;
mod conn;
mod fault;
mod inbound;
mod peer;
mod stats;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{trace, warn};

use crate::raft::{Message, NodeId, NO_NODE};

pub use self::auth::{PeerAuth, Secret, SecretError};
pub use self::calls::{CallError, RequestHandler, MAX_CALLS_IN_FLIGHT_PER_PEER, SERVE_TIMEOUT};
pub use self::conn::{
    Acceptor, BoxFuture, BoxStream, Connected, Dialer, PeerIdentity, PeerStream, TcpAcceptor,
    TcpDialer,
};
pub use self::fault::FaultSwitch;
pub use self::inbound::{
    FIRST_BYTE_TIMEOUT, MAX_PENDING_HANDSHAKES, MAX_PENDING_HANDSHAKES_PER_IP, REFUSAL_LOG_INTERVAL,
};
pub use self::peer::{
    BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, MAX_BATCH_MSGS, PEER_QUEUE_BYTES, PEER_QUEUE_LEN,
    WRITE_CHUNK_BYTES, WRITE_TIMEOUT,
};
pub use self::stats::{PeerStats, TransportStats};
pub use self::wire::{
    MAX_CALL_PAYLOAD_BYTES, MAX_CLUSTER_NAME_LEN, MAX_FRAME_BYTES, MAX_NODE_NAME_LEN,
    TRANSPORT_VERSION,
};

use self::peer::Peer;
use self::stats::{bump, GlobalCounters};

/// Limit on a whole handshake (TLS included), both sides: a silent or trickling
/// client cannot hold a handshake slot longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Transport::shutdown`] waits for each task before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One other member: its name (`node.id`, used in logs) and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub name: String,
    pub addr: SocketAddr,
}

impl PeerAddr {
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> PeerAddr {
        PeerAddr {
            name: name.into(),
            addr,
        }
    }
}

/// What a transport needs to start.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Address to listen on for peers (port 0 picks a free one; see [`Transport::local_addr`]).
    pub listen: SocketAddr,
    /// The other members, their names and where to dial them; this node's own id is ignored.
    pub peers: HashMap<NodeId, PeerAddr>,
    /// Cluster name, checked in every handshake so two clusters never exchange messages.
    pub cluster: String,
    /// This node's name (`node.id`), announced in the handshake; with certificates it
    /// must be in this node's certificate and its Raft id must be `id`.
    pub name: String,
    /// How peers prove who they are (see [`auth`]).
    pub auth: PeerAuth,
}

/// State shared by the handle and every task.
pub(crate) struct Shared {
    id: NodeId,
    cluster: String,
    name: String,
    auth: PeerAuth,
    calls: calls::Calls,
    handler: OnceLock<Arc<dyn RequestHandler>>,
    /// A peer's verdict said this node is not a member of the cluster.
    not_a_member: AtomicBool,
    refusal_log: inbound::RateLimit,
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    counters: GlobalCounters,
    faults: FaultSwitch,
    inbound: mpsc::Sender<Message>,
    dialer: Arc<dyn Dialer>,
    acceptor: Arc<dyn Acceptor>,
}

impl Shared {
    fn peers(&self) -> RwLockReadGuard<'_, HashMap<NodeId, Arc<Peer>>> {
        // The map is replaced entry by entry, never left half-updated.
        self.peers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn peers_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<NodeId, Arc<Peer>>> {
        self.peers.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers().get(&id).cloned()
    }

    /// Stops and forgets every peer.
    fn stop_peers(&self) {
        for (_, peer) in self.peers_mut().drain() {
            peer.stop();
        }
    }
}

/// The running transport; cheap to clone. Dropping the last clone stops it in the
/// background; [`Transport::shutdown`] stops it and waits.
#[derive(Clone)]
pub struct Transport {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Handle {
    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        // A list of join handles cannot be left inconsistent by a panic.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.shared.stop_peers();
    }
}

impl Transport {
    /// Binds `cfg.listen` and starts dialling `cfg.peers` over plain TCP. Received
    /// messages go to `inbound`; when it is full they are dropped and counted.
    pub async fn start(cfg: TransportConfig, inbound: mpsc::Sender<Message>) -> io::Result<Self> {
        Self::start_with(cfg, inbound, Arc::new(TcpDialer), Arc::new(TcpAcceptor)).await
    }

    /// Like [`Transport::start`], making connections through `dialer` and `acceptor`
    /// (mutual TLS, or a test double).
    pub async fn start_with(
        cfg: TransportConfig,
        inbound: mpsc::Sender<Message>,
        dialer: Arc<dyn Dialer>,
        acceptor: Arc<dyn Acceptor>,
    ) -> io::Result<Self> {
        validate(&cfg)?;
        let listener = TcpListener::bind(cfg.listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            id: cfg.id,
            cluster: cfg.cluster,
            name: cfg.name,
            auth: cfg.auth,
            calls: calls::Calls::default(),
            handler: OnceLock::new(),
            not_a_member: AtomicBool::new(false),
            refusal_log: inbound::RateLimit::default(),
            peers: RwLock::default(),
            counters: GlobalCounters::default(),
            faults: FaultSwitch::default(),
            inbound,
            dialer,
            acceptor,
        });
        let (stop, stop_rx) = watch::channel(false);
        let runtime = tokio::runtime::Handle::current();
        let transport = Transport {
            handle: Arc::new(Handle {
                shared: shared.clone(),
                local_addr,
                runtime: runtime.clone(),
                stop,
                tasks: Mutex::default(),
            }),
        };
        // Peers first, so the first inbound handshake already sees them.
        transport.set_peers(cfg.peers);
        let accept = runtime.spawn(inbound::run_acceptor(shared, listener, stop_rx));
        transport.handle.lock_tasks().push(accept);
        Ok(transport)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.handle.shared.id
    }

    /// The name of peer `id`, if it is one.
    pub fn peer_name(&self, id: NodeId) -> Option<String> {
        self.handle.shared.peer(id).map(|p| p.name.clone())
    }

    /// Whether this node's connection to peer `id` is up now (`None`: not a peer).
    pub fn peer_connected(&self, id: NodeId) -> Option<bool> {
        let peer = self.handle.shared.peer(id)?;
        Some(peer.counters.connected.load(Ordering::Relaxed))
    }

    /// The address peers dial (the bound port when `listen` used port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// Queues messages for their `to` peers and returns at once. A message for an
    /// unknown peer is dropped and counted; a full queue drops its oldest message.
    pub fn send(&self, msgs: impl IntoIterator<Item = Message>) {
        let shared = &self.handle.shared;
        let peers = shared.peers();
        for msg in msgs {
            match peers.get(&msg.to) {
                None => {
                    bump(&shared.counters.unknown_destination);
                    trace!(to = msg.to, "message for an unknown peer dropped");
                }
                Some(peer) if shared.faults.blocks_outbound(peer.id) => {
                    bump(&peer.counters.dropped_fault);
                }
                Some(peer) => peer.enqueue(wire::Frame::Raft(msg)),
            }
        }
    }

    /// Replaces the peer set (membership change). New peers are dialled; removed ones
    /// lose their queue and connections, and are refused inbound from now on. A peer
    /// whose address changed is restarted with an empty queue.
    pub fn set_peers(&self, peers: HashMap<NodeId, PeerAddr>) {
        let h = &self.handle;
        let mut current = h.shared.peers_mut();
        current.retain(|id, peer| {
            let keep = peers
                .get(id)
                .is_some_and(|p| p.addr == peer.addr && p.name == peer.name);
            if !keep {
                peer.stop();
            }
            keep
        });
        let mut tasks = h.lock_tasks();
        tasks.retain(|t| !t.is_finished());
        for (id, entry) in peers {
            if id == h.shared.id || id == NO_NODE {
                warn!(peer = %entry.name, "ignoring peer entry for this node or node 0");
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = current.entry(id) {
                let peer = slot.insert(Peer::new(id, entry)).clone();
                let writer = peer::run_writer(h.shared.clone(), peer);
                tasks.push(h.runtime.spawn(writer));
            }
        }
    }

    /// Current counters, per peer and overall.
    pub fn stats(&self) -> TransportStats {
        let shared = &self.handle.shared;
        let peers: BTreeMap<_, _> = shared
            .peers()
            .iter()
            .map(|(&id, peer)| (id, peer.snapshot()))
            .collect();
        let mut stats = shared.counters.snapshot(peers);
        stats.not_a_member = self.not_a_member();
        stats
    }

    /// True when the last peer to judge this node's handshake said it is not a member
    /// of the cluster (never added, or removed); cleared when a peer accepts it again.
    pub fn not_a_member(&self) -> bool {
        self.handle.shared.not_a_member.load(Ordering::Relaxed)
    }

    /// Sends `payload` to peer `to` as a request and waits at most `wait` for the
    /// answer of its [`RequestHandler`]. At most [`MAX_CALLS_IN_FLIGHT_PER_PEER`] calls
    /// wait on one peer at a time; beyond that the call fails at once with `Busy`.
    pub async fn call(
        &self,
        to: NodeId,
        payload: Vec<u8>,
        wait: Duration,
    ) -> Result<Vec<u8>, CallError> {
        calls::call(&self.handle.shared, to, payload, wait).await
    }

    /// Answers peers' requests with `handler` from now on (set once; later calls are
    /// ignored). Without a handler requests are answered `NotServing`.
    pub fn serve_requests(&self, handler: Arc<dyn RequestHandler>) {
        if self.handle.shared.handler.set(handler).is_err() {
            warn!("a request handler is already set; the new one is ignored");
        }
    }

    /// Test hook: discards traffic to and from chosen peers (a network partition on
    /// real sockets). Not for production use.
    #[doc(hidden)]
    pub fn faults(&self) -> &FaultSwitch {
        &self.handle.shared.faults
    }

    /// Stops every task, closes the listener and all connections, and waits for them.
    /// Queued messages are discarded. Other clones become inert.
    pub async fn shutdown(self) {
        let h = &self.handle;
        h.stop.send_replace(true);
        h.shared.stop_peers();
        let tasks = std::mem::take(&mut *h.lock_tasks());
        for mut task in tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

fn validate(cfg: &TransportConfig) -> io::Result<()> {
    let invalid = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            what.to_string(),
        ))
    };
    if cfg.id == NO_NODE {
        return invalid("transport node id must be non-zero");
    }
    if cfg.cluster.len() > MAX_CLUSTER_NAME_LEN {
        return invalid("cluster name longer than MAX_CLUSTER_NAME_LEN bytes");
    }
    if cfg.name.len() > MAX_NODE_NAME_LEN {
        return invalid("node name longer than MAX_NODE_NAME_LEN bytes");
    }
    if matches!(cfg.auth, PeerAuth::Certificates) && crate::cluster::raft_id(&cfg.name) != cfg.id {
        return invalid("with certificates the node id must be the Raft id of the node name");
    }
    Ok(())
}
