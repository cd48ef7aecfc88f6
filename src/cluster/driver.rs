//! The control-plane driver: one task per instance owns the Raft [`Node`], its
//! [`Storage`] and the replicated [`ClusterState`], and loops tick/step/propose ->
//! send early (a leader's replication) -> persist -> send the rest -> apply -> advance.
//!
//! The driver runs on a thread of its own ([`start_thread`]), so a slow `fsync`
//! never stalls the data plane. The write itself runs on a blocking-pool thread while
//! the driver's runtime keeps the transport going: a leader's AppendEntries are on
//! the wire while its own `fsync` runs. It publishes what it applies through a
//! [`tokio::sync::watch`] channel ([`ClusterView`]); whoever builds routing snapshots
//! subscribes to it. The cluster never calls into the proxy.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::raft_id;
use super::state::{ClusterState, Command, Refused};
use super::transport::{PeerAddr, Transport};
use crate::raft::{
    self, ConfChange, EntryPayload, Index, Message, Node, NodeId, ProposeError, Role, Storage, Term,
};

/// Proposals waiting for the driver. A full queue answers `Busy` at once rather than
/// making admin callers wait behind each other.
pub const REQUEST_QUEUE: usize = 256;
/// Proposals the driver tracks until they apply; beyond it new ones are refused.
pub const MAX_PENDING_PROPOSALS: usize = 1024;
/// How long a leader that is shutting down waits for another voter to take over.
pub const LEADER_HANDOFF_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a batch the disk had no room for is written again. Each attempt costs one
/// write that the file system refuses at once; a second is quick enough to resume soon
/// after an operator frees space.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(1);
/// How often the ERROR saying the disk is full is repeated while it stays full.
pub const DISK_FULL_LOG_EVERY: Duration = Duration::from_secs(30);

/// Where the driver's outgoing messages go (the peer transport, or a test network).
/// `send` must not block.
pub trait Outbox: Send + 'static {
    fn send(&self, msgs: Vec<Message>);
    /// Where each other member can be reached, whenever that changes (a member added
    /// or removed at runtime). The default has nowhere to put it.
    fn set_peers(&self, _peers: HashMap<NodeId, PeerAddr>) {}
}

impl Outbox for Transport {
    fn send(&self, msgs: Vec<Message>) {
        Transport::send(self, msgs);
    }

    fn set_peers(&self, peers: HashMap<NodeId, PeerAddr>) {
        Transport::set_peers(self, peers);
    }
}

/// The outbox of a group of one: there is nobody to send to.
pub struct NoPeers;

impl Outbox for NoPeers {
    fn send(&self, msgs: Vec<Message>) {
        if !msgs.is_empty() {
            tracing::debug!(count = msgs.len(), "raft messages with no peer to go to");
        }
    }
}

/// How the driver is set up.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub id: NodeId,
    /// Length of one Raft tick.
    pub tick: Duration,
    /// Election timeout and heartbeat interval, in ticks.
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// Proposed once by a leader that finds the cluster never bootstrapped.
    pub bootstrap: Option<Command>,
    /// Seeds the randomized election timeouts.
    pub seed: u64,
    /// Applied entries kept in the log after the last snapshot; past this many the
    /// driver folds the state into a snapshot and the log is compacted.
    pub compact_threshold: u64,
    /// Peer addresses from this instance's file, by node name. They take precedence
    /// over the addresses recorded in the replicated state for the names they list.
    pub file_peers: BTreeMap<String, SocketAddr>,
    /// Names of the nodes, by Raft id, for logs (the file's names; names recorded in
    /// the replicated state are looked up too).
    pub names: BTreeMap<NodeId, String>,
    /// This node's data dir, named in the instructions logged if it lost its state.
    pub data_dir: Option<std::path::PathBuf>,
}

impl DriverConfig {
    /// Ticks derived from a heartbeat interval and an election timeout: a heartbeat is
    /// two ticks, as the core expects.
    pub fn from_timeouts(id: NodeId, heartbeat: Duration, election: Duration) -> DriverConfig {
        let tick = (heartbeat / raft::DEFAULT_HEARTBEAT_TICK).max(Duration::from_millis(1));
        let election_ticks = (election.as_millis() / tick.as_millis().max(1)) as u32;
        DriverConfig {
            id,
            tick,
            election_ticks: election_ticks
                .clamp(raft::DEFAULT_HEARTBEAT_TICK + 1, raft::MAX_ELECTION_TICK),
            heartbeat_ticks: raft::DEFAULT_HEARTBEAT_TICK,
            bootstrap: None,
            seed: id,
            compact_threshold: crate::config::DEFAULT_COMPACT_THRESHOLD,
            file_peers: BTreeMap::new(),
            names: BTreeMap::new(),
            data_dir: None,
        }
    }
}

/// What one instance knows of the cluster, as of its last applied entry.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    /// Index of the latest snapshot this instance holds (its log starts after it).
    pub snapshot: Index,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Leader only: each member's highest replicated index.
    pub matched: BTreeMap<NodeId, Index>,
    pub state: Arc<ClusterState>,
    /// This node lost Raft state it had acknowledged (its data dir was wiped or
    /// restored from an older copy): it follows but neither votes nor campaigns until
    /// it is removed and added back with an empty data dir.
    pub lost_data: bool,
    /// The configuration this node holds no longer lists it: it was removed from the
    /// group and takes no part in it (restarted, it does not campaign).
    pub removed: bool,
    /// Whether this node can write its Raft log.
    pub storage: StorageHealth,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Vote and pre-vote requests this node granted since it started (a learner
    /// grants none unless a candidate holds its promotion; see `docs/raft.md`).
    pub votes_granted: u64,
}

/// Whether a node can write its Raft log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageHealth {
    #[default]
    Writable,
    /// The file system has no room: the batch was undone and is written again every
    /// [`DISK_FULL_RETRY`]. Until it is, the node acknowledges nothing, takes no
    /// proposal, and (holding the batch) sends nothing, so a leader goes quiet and the
    /// others elect another.
    Full { error: String },
    /// A write or an fsync failed otherwise: the log cannot be trusted, the driver has
    /// stopped, and the instance stops with it.
    Failed { error: String },
}

/// Why a proposal did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeFailure {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("refused: {0}")]
    Refused(Refused),
    #[error("leadership changed before the change committed; it was not applied")]
    Lost,
    #[error("too many changes waiting; try again")]
    Busy,
    #[error("the cluster driver has stopped")]
    Stopped,
    #[error("{0}")]
    Invalid(String),
    /// A membership change that cannot be made yet (another is in flight, the leader
    /// has not committed in its term, or the learner has not caught up); retry.
    #[error("not yet: {0}")]
    NotYet(String),
    /// No answer from the leader within the proposer's bounds (forwarding only). The
    /// change may still apply, once: proposals carry an id.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

enum Request {
    Propose {
        cmd: Command,
        reply: oneshot::Sender<Result<Index, ProposeFailure>>,
    },
    ConfChange {
        cc: ConfChange,
        reply: oneshot::Sender<Result<Index, ProposeFailure>>,
    },
}

/// A cheap, cloneable handle to a running driver.
#[derive(Clone, Debug)]
pub struct ClusterHandle {
    requests: mpsc::Sender<Request>,
    view: watch::Receiver<Arc<ClusterView>>,
    stats: Arc<DriverStats>,
}

/// Counters of the driver's work since start, read (not locked) by the metrics
/// collector at scrape time. Proposals are those made through a [`ClusterHandle`].
#[derive(Debug, Default)]
pub struct DriverStats {
    /// Times this node saw a new leader (another id, or a leader after none).
    pub leader_changes: AtomicU64,
    pub proposals_committed: AtomicU64,
    pub proposals_refused: AtomicU64,
    pub proposals_lost: AtomicU64,
    pub proposals_busy: AtomicU64,
    pub proposals_not_leader: AtomicU64,
    pub proposals_invalid: AtomicU64,
    pub proposals_stopped: AtomicU64,
}

impl DriverStats {
    /// Counts what a proposal came to.
    fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Ok(_) => &self.proposals_committed,
            Err(ProposeFailure::Refused(_)) => &self.proposals_refused,
            Err(ProposeFailure::Lost) => &self.proposals_lost,
            Err(
                ProposeFailure::Busy | ProposeFailure::NotYet(_) | ProposeFailure::Unavailable(_),
            ) => &self.proposals_busy,
            Err(ProposeFailure::NotLeader { .. }) => &self.proposals_not_leader,
            Err(ProposeFailure::Invalid(_)) => &self.proposals_invalid,
            Err(ProposeFailure::Stopped) => &self.proposals_stopped,
        };
        counter.fetch_add(1, Relaxed);
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

impl ClusterHandle {
    /// Proposes a change and waits until this instance has applied it. Only the
    /// leader accepts proposals; others answer `NotLeader` with the leader's id.
    pub async fn propose(&self, cmd: Command) -> Result<Index, ProposeFailure> {
        cmd.validate().map_err(ProposeFailure::Refused)?;
        let (reply, answer) = oneshot::channel();
        let queued = self
            .requests
            .try_send(Request::Propose { cmd, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProposeFailure::Busy,
                mpsc::error::TrySendError::Closed(_) => ProposeFailure::Stopped,
            });
        if let Err(e) = queued {
            let failed = Err(e);
            self.stats.count(&failed);
            return failed;
        }
        // The driver counts every answer it gives; a driver gone meanwhile is counted here.
        answer.await.unwrap_or_else(|_| {
            let stopped = Err(ProposeFailure::Stopped);
            self.stats.count(&stopped);
            stopped
        })
    }

    /// Counters of the driver's work (for metrics).
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// Proposes a one-step membership change and waits until this instance applied
    /// it. Only the leader accepts it.
    pub async fn change_membership(&self, cc: ConfChange) -> Result<Index, ProposeFailure> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .try_send(Request::ConfChange { cc, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProposeFailure::Busy,
                mpsc::error::TrySendError::Closed(_) => ProposeFailure::Stopped,
            })?;
        answer.await.unwrap_or(Err(ProposeFailure::Stopped))
    }

    /// The latest view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// A receiver that wakes on every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }
}

/// Why a driver could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("raft: {0}")]
    Raft(String),
    #[error("stored cluster state: {0}")]
    State(#[from] super::state::DecodeError),
}

/// What a proposal comes to: the index it applied at, or why not.
type Outcome = Result<Index, ProposeFailure>;
type Reply = oneshot::Sender<Outcome>;

struct Pending {
    term: Term,
    reply: Reply,
}

/// Why the driver stopped writing.
#[derive(Debug)]
enum WriteError {
    Storage(raft::StorageError),
    /// The blocking thread writing a batch ended without returning the storage.
    WriterLost(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Storage(e) => e.fmt(f),
            WriteError::WriterLost(why) => write!(f, "raft write thread failed: {why}"),
        }
    }
}

/// The driver itself; see the module docs.
pub struct Driver<S: Storage> {
    cfg: DriverConfig,
    node: Node,
    /// `None` only while a write is under way on a blocking thread.
    storage: Option<S>,
    /// Shared with published views; replaced (copy on write) only when apply changes it.
    state: Arc<ClusterState>,
    pending: BTreeMap<Index, Pending>,
    /// Answers decided by the entries just applied, sent once the view that includes
    /// them is published (a caller told "applied" must be able to read the change).
    answers: Vec<(Reply, Outcome)>,
    bootstrap_in_flight: Option<Index>,
    /// The encoded bootstrap that apply would refuse: reported once, never proposed.
    bootstrap_refused: Option<Vec<u8>>,
    /// The peer addresses last handed to the outbox.
    peers_sent: Option<HashMap<NodeId, PeerAddr>>,
    requests: mpsc::Receiver<Request>,
    view: watch::Sender<Arc<ClusterView>>,
    stats: Arc<DriverStats>,
    /// A `Ready` whose batch the disk had no room for, kept to be written again.
    held: Option<Held>,
    storage_health: StorageHealth,
    /// When the disk was first found full, and when that was last logged.
    full_since: Option<(tokio::time::Instant, tokio::time::Instant)>,
}

/// A `Ready` held across a write the file system refused for want of space.
struct Held {
    ready: raft::Ready,
    retry_at: tokio::time::Instant,
}

/// What writing a `Ready`'s batch came to.
enum Wrote {
    Done(raft::Persisted),
    /// No room: nothing was written; the `Ready` is handed back to be written again.
    NoSpace(Box<raft::Ready>, raft::StorageError),
}

impl<S: Storage + Send + 'static> Driver<S> {
    /// Opens the node on `storage` (restoring the state machine from its snapshot).
    pub fn new(cfg: DriverConfig, storage: S) -> Result<(Driver<S>, ClusterHandle), DriverError> {
        let initial = storage
            .initial_state()
            .map_err(|e| DriverError::Raft(e.to_string()))?;
        let state = Arc::new(ClusterState::decode(&initial.snapshot.data)?);
        let mut raft_cfg =
            raft::Config::try_new(cfg.id).map_err(|e| DriverError::Raft(format!("{e:?}")))?;
        raft_cfg.election_tick = cfg.election_ticks;
        raft_cfg.heartbeat_tick = cfg.heartbeat_ticks;
        raft_cfg.seed = cfg.seed;
        // A bootstrap or a reload's batch carries a whole file's upstreams in one entry.
        raft_cfg.max_bytes_per_msg = crate::config::bounds::MAX_COMMAND_BYTES;
        let node =
            Node::try_new(raft_cfg, &storage).map_err(|e| DriverError::Raft(format!("{e:?}")))?;
        let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE);
        let (view_tx, view_rx) = watch::channel(Arc::new(view_of(&node, &state)));
        let stats = Arc::new(DriverStats::default());
        let driver = Driver {
            cfg,
            node,
            storage: Some(storage),
            state,
            pending: BTreeMap::new(),
            answers: Vec::new(),
            bootstrap_in_flight: None,
            bootstrap_refused: None,
            peers_sent: None,
            requests,
            view: view_tx,
            stats: stats.clone(),
            held: None,
            storage_health: StorageHealth::Writable,
            full_since: None,
        };
        let handle = ClusterHandle {
            requests: requests_tx,
            view: view_rx,
            stats,
        };
        Ok((driver, handle))
    }

    /// Runs until `shutdown` resolves; a leader then hands leadership to another voter
    /// (bounded by [`LEADER_HANDOFF_TIMEOUT`]) before returning.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Message>,
        outbox: impl Outbox,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        self.report_at_start();
        loop {
            tokio::select! {
                _ = ticker.tick() => self.node.tick(),
                Some(msg) = inbound.recv() => self.node.step(msg),
                Some(req) = self.requests.recv() => self.on_request(req),
                _ = &mut shutdown => break,
            }
            if let Err(e) = self.drain_ready(&outbox).await {
                self.fail(e);
                return;
            }
            self.maybe_bootstrap();
        }
        self.hand_off(&mut inbound, &outbox, &mut ticker).await;
    }

    /// A leader that stops asks the most caught-up voter to take over, and keeps the
    /// node running until it has or the handoff times out.
    async fn hand_off(
        &mut self,
        inbound: &mut mpsc::Receiver<Message>,
        outbox: &impl Outbox,
        ticker: &mut tokio::time::Interval,
    ) {
        let Some(to) = self.handoff_target() else {
            return;
        };
        if self.node.transfer_leader(to).is_err() {
            return;
        }
        tracing::info!(to = %self.name_of(to), "handing leadership over before shutdown");
        let deadline = tokio::time::sleep(LEADER_HANDOFF_TIMEOUT);
        tokio::pin!(deadline);
        while self.node.role() == Role::Leader {
            tokio::select! {
                _ = ticker.tick() => self.node.tick(),
                Some(msg) = inbound.recv() => self.node.step(msg),
                _ = &mut deadline => return,
            }
            if let Err(e) = self.drain_ready(outbox).await {
                self.fail(e);
                return;
            }
        }
    }

    fn handoff_target(&self) -> Option<NodeId> {
        if self.node.role() != Role::Leader {
            return None;
        }
        let me = self.node.id();
        self.node
            .conf()
            .voters
            .iter()
            .filter(|&&v| v != me)
            .max_by_key(|&&v| self.node.progress(v).map(|p| p.matched).unwrap_or(0))
            .copied()
    }

    /// The log cannot be written: the driver stops, and says so where the instance
    /// (which stops with it) and an operator will see it.
    fn fail(&mut self, e: WriteError) {
        let error = e.to_string();
        tracing::error!(
            error = %error,
            "the Raft log cannot be trusted after this failure: the cluster member stops, and \
             the instance with it; start it again to recover from what is on disk (a torn \
             last record is cut, anything else damaged is refused)"
        );
        self.storage_health = StorageHealth::Failed { error };
        self.publish();
        for (_, p) in std::mem::take(&mut self.pending) {
            self.answer(p.reply, Err(ProposeFailure::Stopped));
        }
    }

    /// Notes a batch the disk had no room for, logging it when first seen and then
    /// every [`DISK_FULL_LOG_EVERY`].
    fn disk_full(&mut self, e: &raft::StorageError) {
        let now = tokio::time::Instant::now();
        let first = self.full_since.is_none();
        let (since, logged) = self.full_since.get_or_insert((now, now));
        if first || now.duration_since(*logged) >= DISK_FULL_LOG_EVERY {
            *logged = now;
            let for_ms = now.duration_since(*since).as_millis() as u64;
            tracing::error!(
                error = %e,
                full_for_ms = for_ms,
                role = ?self.node.role(),
                "no room to write the Raft log: the batch was undone and is written again every \
                 second; until then this instance acknowledges no entry and takes no change \
                 (a leader goes quiet and the others elect another); free space in the data dir"
            );
        }
        self.storage_health = StorageHealth::Full {
            error: e.to_string(),
        };
    }

    fn disk_writable(&mut self) {
        if let Some((since, _)) = self.full_since.take() {
            // WARN, as the ERROR it ends: whoever filters for one sees the other.
            tracing::warn!(
                full_for_ms = since.elapsed().as_millis() as u64,
                "the Raft log is writable again; the held batch is written"
            );
            self.storage_health = StorageHealth::Writable;
        }
    }

    fn on_request(&mut self, req: Request) {
        if let StorageHealth::Full { error } = &self.storage_health {
            let why = ProposeFailure::Unavailable(format!(
                "this instance cannot write its Raft log ({error}); it takes no change until there is room"
            ));
            let reply = match req {
                Request::Propose { reply, .. } | Request::ConfChange { reply, .. } => reply,
            };
            self.answer(reply, Err(why));
            return;
        }
        let (proposed, reply) = match req {
            Request::Propose { cmd, reply } => {
                if self.pending.len() >= MAX_PENDING_PROPOSALS {
                    self.answer(reply, Err(ProposeFailure::Busy));
                    return;
                }
                (self.node.propose(cmd.encode()), reply)
            }
            Request::ConfChange { cc, reply } => {
                if self.pending.len() >= MAX_PENDING_PROPOSALS {
                    self.answer(reply, Err(ProposeFailure::Busy));
                    return;
                }
                (self.node.propose_conf_change(cc), reply)
            }
        };
        match proposed {
            Ok(p) => {
                self.pending.insert(
                    p.index,
                    Pending {
                        term: p.term,
                        reply,
                    },
                );
            }
            Err(e) => self.answer(reply, Err(propose_failure(e))),
        }
    }

    /// Answers a proposal at once, counting the answer.
    fn answer(&self, reply: Reply, outcome: Outcome) {
        self.stats.count(&outcome);
        let _ = reply.send(outcome);
    }

    /// The first leader of a never-bootstrapped cluster proposes its file's pools,
    /// once its log is applied up to its commit index. The bootstrap is first applied
    /// to a copy of the state: one that apply would refuse is reported once, as an
    /// error, and never proposed (every leader would otherwise propose it again,
    /// forever); a different bootstrap is tried afresh.
    fn maybe_bootstrap(&mut self) {
        let Some(cmd) = &self.cfg.bootstrap else {
            return;
        };
        let caught_up = self.node.applied_index() >= self.node.commit_index();
        if self.state.is_bootstrapped() || self.node.role() != Role::Leader || !caught_up {
            return;
        }
        if self
            .bootstrap_in_flight
            .is_some_and(|i| i > self.node.applied_index())
        {
            return;
        }
        let bytes = cmd.encode();
        if self.bootstrap_refused.as_ref() == Some(&bytes) {
            return;
        }
        let refusal = ClusterState::clone(&self.state)
            .apply(cmd)
            .err()
            .map(|r| r.to_string());
        let why = match refusal {
            Some(why) => why,
            None => match self.node.propose(bytes.clone()) {
                Ok(p) => {
                    self.bootstrap_in_flight = Some(p.index);
                    return;
                }
                Err(e @ ProposeError::TooLarge { .. }) => propose_failure(e).to_string(),
                Err(e) => {
                    tracing::debug!(error = ?e, "bootstrap proposal not accepted yet");
                    return;
                }
            },
        };
        tracing::error!(reason = %why, "the file's pools cannot bootstrap the cluster: not proposing them; fix the file and restart this instance");
        self.bootstrap_refused = Some(bytes);
    }

    async fn drain_ready(&mut self, outbox: &impl Outbox) -> Result<(), WriteError> {
        loop {
            let mut ready = match self.held.take() {
                Some(held) if tokio::time::Instant::now() < held.retry_at => {
                    self.held = Some(held);
                    break;
                }
                Some(held) => held.ready,
                None => match self.node.ready() {
                    Some(ready) => ready,
                    None => break,
                },
            };
            let early = ready.take_early_messages();
            if !early.is_empty() {
                outbox.send(early);
            }
            let mut done = match self.persist(ready).await? {
                Wrote::Done(done) => {
                    self.disk_writable();
                    done
                }
                Wrote::NoSpace(ready, e) => {
                    self.disk_full(&e);
                    self.held = Some(Held {
                        ready: *ready,
                        retry_at: tokio::time::Instant::now() + DISK_FULL_RETRY,
                    });
                    break;
                }
            };
            let rest = done.take_messages();
            if !rest.is_empty() {
                outbox.send(rest);
            }
            if let Some(snap) = done.snapshot() {
                self.restore(&snap.data);
            }
            for entry in done.committed_entries() {
                self.apply(entry.index, entry.term, &entry.payload);
            }
            if let Err(e) = self.node.advance(done) {
                tracing::error!(error = ?e, "raft advance failed");
            }
        }
        self.maybe_compact();
        self.update_peers(outbox);
        self.report_events();
        self.publish();
        for (reply, answer) in self.answers.drain(..) {
            self.stats.count(&answer);
            let _ = reply.send(answer);
        }
        Ok(())
    }

    /// Writes a `Ready`'s batch. A batch with something to write goes to a blocking-pool
    /// thread, so this runtime's other tasks (the transport sending the early messages,
    /// reading the followers' answers) run during the `fsync`.
    /// A write the file system refuses for want of space hands the `Ready` back
    /// ([`Wrote::NoSpace`]); any other failure ends the driver.
    async fn persist(&mut self, ready: raft::Ready) -> Result<Wrote, WriteError> {
        let Some(mut storage) = self.storage.take() else {
            return Err(WriteError::WriterLost(
                "the storage was lost by an earlier write".into(),
            ));
        };
        if ready.batch().is_empty() {
            self.storage = Some(storage);
            return Ok(Wrote::Done(ready.written()));
        }
        let write = tokio::task::spawn_blocking(move || {
            let result = storage.persist(ready.batch());
            (storage, ready, result)
        });
        match write.await {
            Ok((storage, ready, result)) => {
                self.storage = Some(storage);
                match result {
                    Ok(()) => Ok(Wrote::Done(ready.written())),
                    Err(e) if super::storage::is_no_space(&e) => {
                        Ok(Wrote::NoSpace(Box::new(ready), e))
                    }
                    Err(e) => Err(WriteError::Storage(e)),
                }
            }
            Err(e) => Err(WriteError::WriterLost(e.to_string())),
        }
    }

    fn restore(&mut self, data: &[u8]) {
        match ClusterState::decode(data) {
            Ok(state) => self.state = Arc::new(state),
            Err(e) => {
                tracing::error!(error = %e, "snapshot from the leader could not be read; keeping the current state")
            }
        }
    }

    fn apply(&mut self, index: Index, term: Term, payload: &EntryPayload) {
        let result = match payload {
            EntryPayload::Normal(bytes) => match Command::decode(bytes) {
                Ok(cmd) => {
                    apply_shared(&mut self.state, index, &cmd).map_err(ProposeFailure::Refused)
                }
                Err(e) => Err(ProposeFailure::Invalid(e.to_string())),
            },
            EntryPayload::Empty | EntryPayload::ConfChange(_) | EntryPayload::Formed(_) => Ok(()),
        };
        if let Err(e) = &result {
            tracing::warn!(index, error = %e, "committed change refused by the state machine");
        }
        // Everything at or below this index is decided: answer those proposals.
        let decided: Vec<Index> = self.pending.range(..=index).map(|(&i, _)| i).collect();
        for i in decided {
            let Some(p) = self.pending.remove(&i) else {
                continue;
            };
            let answer = match (i == index, p.term == term) {
                (true, true) => result.clone().map(|()| index),
                _ => Err(ProposeFailure::Lost),
            };
            self.answers.push((p.reply, answer));
        }
    }

    /// Hands the outbox every other member's address when the set changes: the file's
    /// peers, plus those recorded in the replicated state for names the file lacks.
    fn update_peers(&mut self, outbox: &impl Outbox) {
        let me = self.node.id();
        let mut peers: HashMap<NodeId, PeerAddr> = self
            .state
            .peers()
            .iter()
            .filter(|(name, _)| !self.cfg.file_peers.contains_key(*name))
            .filter_map(|(name, addr)| {
                Some((
                    raft_id(name),
                    PeerAddr::new(name.as_str(), addr.parse().ok()?),
                ))
            })
            .collect();
        peers.extend(
            self.cfg
                .file_peers
                .iter()
                .map(|(name, addr)| (raft_id(name), PeerAddr::new(name.as_str(), *addr))),
        );
        peers.remove(&me);
        if self.peers_sent.as_ref() != Some(&peers) {
            outbox.set_peers(peers.clone());
            self.peers_sent = Some(peers);
        }
    }

    fn maybe_compact(&mut self) {
        let applied = self.node.applied_index();
        if applied.saturating_sub(self.node.snapshot_index()) < self.cfg.compact_threshold {
            return;
        }
        if let Err(e) = self.node.compact(applied, self.state.encode()) {
            tracing::warn!(error = ?e, "log compaction failed");
        }
    }

    /// A node's name for logs: from the file, else from the replicated state, else its
    /// id in hex (a node this instance has no name for).
    fn name_of(&self, id: NodeId) -> String {
        if let Some(name) = self.cfg.names.get(&id) {
            return name.clone();
        }
        let recorded = self.state.peers().keys().find(|name| raft_id(name) == id);
        recorded.cloned().unwrap_or_else(|| format!("{id:016x}"))
    }

    /// Logs what the core noticed: lost state (ours) and regressed followers.
    fn report_events(&mut self) {
        for ev in self.node.take_events() {
            match ev {
                raft::Event::LostState(why) => self.report_lost_state(why),
                raft::Event::FollowerRegressed {
                    peer,
                    matched,
                    hint,
                } => tracing::error!(
                    peer = %self.name_of(peer),
                    acknowledged = matched,
                    now_has_up_to = hint.saturating_sub(1),
                    "a follower's raft log went backwards: it had acknowledged entries it \
                     no longer holds (its data dir was wiped or restored from a copy); \
                     replaying the log to it. It will refuse to vote until it is removed \
                     and added back"
                ),
            }
        }
    }

    fn report_lost_state(&self, why: raft::LostState) {
        let me = self.name_of(self.node.id());
        let dir = self.cfg.data_dir.as_ref().map_or_else(
            || "<node.data_dir>".to_string(),
            |d| d.display().to_string(),
        );
        let cause = match why {
            raft::LostState::FormedWithoutUs { from, term } => format!(
                "{} leads (or campaigns in) term {term} of a group that formed with this \
                 node's vote, which this node no longer remembers",
                self.name_of(from)
            ),
            raft::LostState::CommitBeyondLog { from, commit, last } => format!(
                "leader {} says this node acknowledged up to index {commit}, but its log ends \
                 at {last}",
                self.name_of(from)
            ),
            raft::LostState::MemberWithoutLog { from } => format!(
                "{} treats this node as a voter, but it holds no raft state at all",
                self.name_of(from)
            ),
        };
        let address = self
            .cfg
            .file_peers
            .get(&me)
            .map_or_else(|| "<its cluster address>".to_string(), |a| a.to_string());
        tracing::error!(
            node = %me,
            cause = %cause,
            "this node lost raft state it had acknowledged (its data dir was wiped or \
             restored from an older copy). To stay safe it will neither vote nor campaign \
             (it keeps following the leader). To bring it back: 1) on any member run \
             `ringway cluster -c <config> remove-node {me}`; 2) stop this instance, empty \
             {dir}, set `cluster.join: true` in its config and start it; 3) run \
             `ringway cluster -c <config> add-node {me} {address}`"
        );
    }

    /// What an operator must know from the first line on: a node that lost its state
    /// earlier, or that was removed, says so again at every start.
    fn report_at_start(&self) {
        let view = self.view.borrow().clone();
        if view.lost_data {
            let me = self.name_of(view.id);
            tracing::error!(
                node = %me,
                "this node lost raft state it had acknowledged (recorded in its data dir): \
                 it neither votes nor campaigns until it is removed (`ringway cluster -c \
                 <config> remove-node {me}`), started again with an empty data dir and \
                 `cluster.join: true`, and added back (`ringway cluster -c <config> add-node \
                 {me} <its cluster address>`)"
            );
        }
        let unremoved = ClusterView {
            removed: false,
            ..ClusterView::clone(&view)
        };
        self.log_transitions(&unremoved, &view);
    }

    /// Logs, at INFO, the changes an operator follows: elections, leader changes,
    /// stepping down, membership; at WARN, this node's own removal.
    fn log_transitions(&self, old: &ClusterView, new: &ClusterView) {
        if new.role == Role::Leader && old.role != Role::Leader {
            tracing::info!(term = new.term, "elected leader");
        } else if old.role == Role::Leader && new.role != Role::Leader {
            tracing::info!(term = new.term, "stepped down as leader");
        }
        if new.leader != old.leader {
            if let Some(l) = new.leader.filter(|&l| l != new.id) {
                let previous = old
                    .leader
                    .map_or_else(|| "none".into(), |o| self.name_of(o));
                tracing::info!(leader = %self.name_of(l), previous = %previous, term = new.term, "leader changed");
            }
        }
        if new.voters != old.voters || new.learners != old.learners {
            let names = |ids: &[NodeId]| {
                ids.iter()
                    .map(|&i| self.name_of(i))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            tracing::info!(
                voters = %names(&new.voters),
                learners = %names(&new.learners),
                "membership changed"
            );
        }
        if new.removed && !old.removed {
            tracing::warn!(
                node = %self.name_of(new.id),
                "this node is no longer a member of the cluster: it was removed. It takes \
                 no part in elections and its state no longer follows the cluster; to \
                 rejoin, empty its data dir, start it with `cluster.join: true` and run \
                 `ringway cluster add-node` on a member"
            );
        }
    }

    fn publish(&mut self) {
        let mut view = view_of(&self.node, &self.state);
        view.storage = self.storage_health.clone();
        let before = self.view.borrow().clone();
        self.log_transitions(&before, &view);
        self.view.send_if_modified(|old| {
            let changed = !Arc::ptr_eq(&old.state, &view.state)
                || old.applied != view.applied
                || old.snapshot != view.snapshot
                || old.commit != view.commit
                || old.role != view.role
                || old.term != view.term
                || old.leader != view.leader
                || old.matched != view.matched
                || old.voters != view.voters
                || old.learners != view.learners
                || old.lost_data != view.lost_data
                || old.removed != view.removed
                || old.storage != view.storage
                || old.vote != view.vote
                || old.votes_granted != view.votes_granted;
            if view.leader.is_some() && old.leader != view.leader {
                self.stats.leader_changes.fetch_add(1, Relaxed);
            }
            if changed {
                *old = Arc::new(view);
            }
            changed
        });
    }
}

/// Applies to a copy only when the command changes something, so views that share
/// the current state keep it and an unchanged state keeps its identity.
fn apply_shared(state: &mut Arc<ClusterState>, index: Index, cmd: &Command) -> Result<(), Refused> {
    let mut next = ClusterState::clone(state);
    next.apply_at(index, cmd)?;
    if next != **state {
        *state = Arc::new(next);
    }
    Ok(())
}

fn propose_failure(e: ProposeError) -> ProposeFailure {
    use crate::raft::ConfChangeError as C;
    match e {
        ProposeError::NotLeader { leader } => ProposeFailure::NotLeader { leader },
        ProposeError::TransferInProgress { to } => {
            ProposeFailure::NotYet(format!("leadership is being handed to node {to}"))
        }
        ProposeError::TooLarge { size, max } => {
            ProposeFailure::Invalid(format!("the change is {size} bytes, at most {max}"))
        }
        ProposeError::OwnTermNotCommitted => {
            ProposeFailure::NotYet("the new leader has not committed an entry yet".into())
        }
        ProposeError::ConfChangePending { index } => ProposeFailure::NotYet(format!(
            "another membership change (index {index}) is not committed yet"
        )),
        ProposeError::TooManyLearners { max } => ProposeFailure::Refused(Refused::Invalid(
            format!("the group already has {max} learners, the most a leader feeds (MAX_LEARNERS); remove one or promote one first"),
        )),
        ProposeError::LearnerBehind { lag } => {
            ProposeFailure::NotYet(format!("the new member is {lag} entries behind"))
        }
        ProposeError::InvalidConfChange(c) => ProposeFailure::Refused(Refused::Invalid(
            match c {
                C::ZeroNodeId => "node id 0 is reserved",
                C::AlreadyMember => "that node is already a member",
                C::NotALearner => "that node is not a learner",
                C::NotAMember => "that node is not a member",
                C::LastVoter => "the last voter cannot be removed",
                C::NotAVoter => "that node is not a voter",
            }
            .into(),
        )),
    }
}

fn view_of(node: &Node, state: &Arc<ClusterState>) -> ClusterView {
    let conf = node.conf();
    let leader = node.leader();
    let matched = if node.role() == Role::Leader {
        conf.voters
            .iter()
            .chain(&conf.learners)
            .filter_map(|&id| node.progress(id).map(|p| (id, p.matched)))
            .collect()
    } else {
        BTreeMap::new()
    };
    ClusterView {
        id: node.id(),
        role: node.role(),
        term: node.term(),
        leader,
        commit: node.commit_index(),
        applied: node.applied_index(),
        snapshot: node.snapshot_index(),
        voters: conf.voters.clone(),
        learners: conf.learners.clone(),
        matched,
        state: state.clone(),
        lost_data: node.lost_data(),
        // A joining node holds no configuration yet: it is not "removed".
        removed: !conf.voters.is_empty() && !conf.contains(node.id()),
        storage: StorageHealth::Writable,
        vote: Some(node.status().vote).filter(|&v| v != crate::raft::NO_NODE),
        votes_granted: node.stats().votes_granted,
    }
}

/// Runs `make()` on a thread of its own with a single-threaded runtime: the control
/// plane's blocking disk writes then never hold up the data plane's runtime.
pub fn start_thread<F, Fut>(name: &str, make: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(make()),
                Err(e) => tracing::error!(error = %e, "cannot start the cluster runtime"),
            }
        })
}
