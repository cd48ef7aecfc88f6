//! The public face of the core: `Node` (tick/step/propose) and the `Ready` → `Persisted`
//! → `advance` cycle through which a driver persists, sends and applies.

use super::config::{Config, ConfigError};
use super::core::{conf_at, Raft, Role};
use super::lost::Event;
use super::membership::{ProposeError, Proposed, TransferError};
use super::message::Message;
use super::progress::Progress;
use super::stats::Stats;
use super::storage::{InitialState, PersistBatch, Storage, StorageError};
use super::types::{
    ConfChange, ConfState, Entry, HardState, Index, NodeId, Snapshot, Term, NO_NODE,
};

/// Why a node could not be created.
#[derive(Clone, Debug)]
pub enum NodeError {
    Config(ConfigError),
    Storage(StorageError),
    /// Storage returned state that cannot be a Raft log (gaps, decreasing terms, commit beyond log).
    CorruptStorage(&'static str),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot start raft node: {self:?}")
    }
}

impl std::error::Error for NodeError {}

/// Why a compaction request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactError {
    /// Only applied entries can be folded into a snapshot.
    NotApplied { index: Index, applied: Index },
    /// The log is already compacted up to `snapshot_index`.
    AlreadyCompacted { index: Index, snapshot_index: Index },
}

/// `advance` was given the result of a different `Ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvanceError;

/// A snapshot of a node's externally visible state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: NodeId,
    /// Known leader of `term`, or [`NO_NODE`].
    pub leader: NodeId,
    pub commit: Index,
    /// Highest index handed out for applying and acknowledged by `advance`.
    pub applied: Index,
    pub first_index: Index,
    pub last_index: Index,
    pub last_term: Term,
    pub conf: ConfState,
    /// Leader only: the voter leadership is being transferred to, or [`NO_NODE`].
    pub transferee: NodeId,
    /// See [`Node::lost_data`].
    pub lost_data: bool,
}

/// Work the driver must do, in order: send the early messages, persist, send the rest,
/// apply, then `advance`.
///
/// Two kinds of messages come out of a `Ready`, and the types keep them apart:
///
/// - [`Ready::take_early_messages`]: a leader's AppendEntries, heartbeats and
///   snapshots. They may go out *before* the batch is durable, so the leader's disk
///   write overlaps the followers' network round trip and their own writes (Raft thesis
///   10.2.1). This is safe because nothing they carry depends on the leader's unwritten
///   state: the leader counts its own entries toward the commit quorum only once
///   [`Node::advance`] reports them written, so the commit index they carry covers only
///   entries durable on a majority; and the term they carry is already durable (a batch
///   that changes the term or vote releases nothing early). A leader that crashes before
///   its write loses those entries locally while followers may hold them, which Raft
///   allows: no one else can write entries of that term, and none of them is committed.
/// - Everything else (append acknowledgements, votes, and the answers that depend on the
///   term and vote in this batch) is reachable only through [`Ready::persist`], which
///   writes the batch first and yields the [`Persisted`] value that holds them: "durable
///   before acknowledged".
#[must_use = "a Ready must be persisted, its messages sent and its entries applied, then advanced"]
#[derive(Debug)]
pub struct Ready {
    batch: PersistBatch,
    early: Vec<Message>,
    inner: Persisted,
}

/// Proof that a `Ready`'s batch is durable: the remaining messages may now be sent and
/// the snapshot and committed entries applied; then hand it back to [`Node::advance`],
/// which also tells the node what its disk now holds.
#[must_use = "pass Persisted back to Node::advance"]
#[derive(Debug)]
pub struct Persisted {
    seq: u64,
    applied_to: Index,
    /// The last (index, term) the batch wrote, if it wrote entries or a snapshot.
    wrote: Option<(Index, Term)>,
    messages: Vec<Message>,
    snapshot: Option<Snapshot>,
    committed: Vec<Entry>,
}

impl Ready {
    /// What must become durable.
    pub fn batch(&self) -> &PersistBatch {
        &self.batch
    }

    /// Committed entries that will be handed out for applying once persisted.
    pub fn committed_entries(&self) -> &[Entry] {
        &self.inner.committed
    }

    /// Messages that may be sent now, before the batch is durable (a leader's
    /// replication traffic; see the type's docs). Each at most once.
    pub fn take_early_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.early)
    }

    /// Writes the batch; only on success are the remaining messages released. Early
    /// messages not taken by then are released with them.
    pub fn persist<S: Storage + ?Sized>(self, storage: &mut S) -> Result<Persisted, StorageError> {
        if !self.batch.is_empty() {
            storage.persist(&self.batch)?;
        }
        Ok(self.written())
    }

    /// Releases what waits on the batch, which the caller has made durable itself
    /// (`storage.persist(ready.batch())`): a driver that keeps the `Ready` across a
    /// write that failed and was undone (a full disk) writes it again, then calls this.
    pub fn written(self) -> Persisted {
        let mut inner = self.inner;
        if !self.early.is_empty() {
            let mut all = self.early;
            all.append(&mut inner.messages);
            inner.messages = all;
        }
        inner
    }
}

impl Persisted {
    /// Messages to send (each at most once; order does not matter for safety).
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// A snapshot from the leader to install in the state machine before the entries.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Committed entries to apply, in order.
    pub fn committed_entries(&self) -> &[Entry] {
        &self.committed
    }
}

/// One Raft node, driven by a caller that owns the clock, the network and the disk.
#[derive(Debug)]
pub struct Node {
    raft: Raft,
    persisted_hard: HardState,
    applied: Index,
    handed_out: Index,
    outstanding: Option<u64>,
    next_seq: u64,
}

impl Node {
    /// Starts (or restarts) a node from what `storage` holds.
    pub fn try_new<S: Storage + ?Sized>(config: Config, storage: &S) -> Result<Node, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let init = storage.initial_state().map_err(NodeError::Storage)?;
        check_initial_state(&init)?;
        let hard = init.hard_state;
        let snap_index = init.snapshot.meta.index;
        let raft = Raft::restore(config, init);
        Ok(Node {
            raft,
            persisted_hard: hard,
            applied: snap_index,
            handed_out: snap_index,
            outstanding: None,
            next_seq: 1,
        })
    }

    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// Advances logical time by one tick (election and heartbeat timers).
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Feeds a message from a peer. Invalid or stale messages are dropped and counted in [`Node::stats`].
    pub fn step(&mut self, msg: Message) {
        self.raft.step(msg);
    }

    /// Proposes an opaque command. Followers refuse with the leader's id for forwarding.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposed, ProposeError> {
        self.raft.propose(data)
    }

    /// Proposes a single-node membership change (leader only).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Proposed, ProposeError> {
        self.raft.propose_conf_change(cc)
    }

    /// Hands leadership to voter `to` (e.g. before a graceful shutdown).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        self.raft.transfer_leader(to)
    }

    /// Folds the log up to applied `index` into a snapshot holding the state machine image `data`.
    pub fn compact(&mut self, index: Index, data: Vec<u8>) -> Result<(), CompactError> {
        let snapshot_index = self.raft.log.snapshot_meta().index;
        if index <= snapshot_index {
            return Err(CompactError::AlreadyCompacted {
                index,
                snapshot_index,
            });
        }
        if index > self.applied {
            return Err(CompactError::NotApplied {
                index,
                applied: self.applied,
            });
        }
        let log = &self.raft.log;
        let conf = conf_at(log, log.snapshot_meta().conf.clone(), index);
        self.raft.pending_compaction = self.raft.log.compact(index, conf, data);
        Ok(())
    }

    /// Whether [`Node::ready`] has work (false while a `Ready` is outstanding).
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        self.outstanding.is_none()
            && (!r.msgs.is_empty()
                || !r.early_msgs.is_empty()
                || r.pending_flush
                || r.hard_state() != self.persisted_hard
                || r.log.has_unstable()
                || r.pending_snapshot.is_some()
                || r.pending_compaction.is_some()
                || r.log.commit > self.handed_out)
    }

    /// Takes the pending work, or `None` if there is none or a `Ready` is outstanding.
    pub fn ready(&mut self) -> Option<Ready> {
        if !self.has_ready() {
            return None;
        }
        if self.raft.pending_flush {
            self.raft.flush_appends();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding = Some(seq);
        let before = self.persisted_hard;
        let batch = self.take_batch();
        let snapshot = batch.snapshot.clone();
        let committed = self.raft.log.committed_after(self.handed_out);
        self.handed_out = self.handed_out.max(self.raft.log.commit);
        let wrote = match (batch.entries.last(), &batch.snapshot) {
            (Some(e), _) => Some((e.index, e.term)),
            (None, Some(s)) => Some((s.meta.index, s.meta.term)),
            (None, None) => None,
        };
        let mut early = std::mem::take(&mut self.raft.early_msgs);
        let mut messages = std::mem::take(&mut self.raft.msgs);
        // Early messages carry the term (and rest on the vote) that elected the leader:
        // if this very batch writes them (a group of one wins at once), they wait too.
        let term_or_vote_unwritten = batch
            .hard_state
            .is_some_and(|hs| (hs.term, hs.vote) != (before.term, before.vote));
        if term_or_vote_unwritten {
            early.append(&mut messages);
            messages = std::mem::take(&mut early);
        }
        let inner = Persisted {
            seq,
            applied_to: self.handed_out,
            wrote,
            messages,
            snapshot,
            committed,
        };
        Some(Ready {
            batch,
            early,
            inner,
        })
    }

    fn take_batch(&mut self) -> PersistBatch {
        let hs = self.raft.hard_state();
        let hard_state = (hs != self.persisted_hard).then_some(hs);
        self.persisted_hard = hs;
        let snapshot = self.raft.pending_snapshot.take();
        if let Some(s) = &snapshot {
            self.handed_out = self.handed_out.max(s.meta.index);
        }
        PersistBatch {
            hard_state,
            snapshot,
            entries: self.raft.log.take_unstable(),
            compacted: self.raft.pending_compaction.take(),
        }
    }

    /// Acknowledges that a `Ready` was persisted, sent and applied.
    pub fn advance(&mut self, done: Persisted) -> Result<(), AdvanceError> {
        if self.outstanding != Some(done.seq) {
            return Err(AdvanceError);
        }
        self.outstanding = None;
        self.applied = self.applied.max(done.applied_to);
        if let Some((index, term)) = done.wrote {
            self.raft.on_durable(index, term);
        }
        Ok(())
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        Status {
            id: r.id,
            role: r.role,
            term: r.term,
            vote: r.vote,
            leader: r.leader,
            commit: r.log.commit,
            applied: self.applied,
            first_index: r.log.first_index(),
            last_index: r.log.last_index(),
            last_term: r.log.last_term(),
            conf: r.conf.clone(),
            transferee: r.transferee,
            lost_data: r.lost_data,
        }
    }

    pub fn role(&self) -> Role {
        self.raft.role
    }

    pub fn term(&self) -> Term {
        self.raft.term
    }

    pub fn leader(&self) -> Option<NodeId> {
        (self.raft.leader != NO_NODE).then_some(self.raft.leader)
    }

    pub fn commit_index(&self) -> Index {
        self.raft.log.commit
    }

    pub fn applied_index(&self) -> Index {
        self.applied
    }

    pub fn conf(&self) -> &ConfState {
        &self.raft.conf
    }

    /// Term of the entry at `index` in this node's in-memory log, if still held.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.raft.log.term(index)
    }

    /// The entry at `index` in this node's in-memory log, if still held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.raft.log.entry(index)
    }

    /// Index of the last entry in this node's log (written or not).
    pub fn last_index(&self) -> Index {
        self.raft.log.last_index()
    }

    /// Simulator only: a leader forgets where `peer` stands and sends it its current
    /// snapshot (keeping the match index, which still holds). Raft allows the leader any
    /// next index for a follower; this one forces an InstallSnapshot on a follower that
    /// may hold the snapshot's last entry and more after it. False if not leading `peer`.
    #[doc(hidden)]
    #[cfg(feature = "testkit")]
    pub fn resend_snapshot(&mut self, peer: NodeId) -> bool {
        self.raft.resend_snapshot(peer)
    }

    /// Index of this node's latest snapshot (0 if none).
    pub fn snapshot_index(&self) -> Index {
        self.raft.log.snapshot_meta().index
    }

    /// Leader only: replication progress of `id`.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.raft.progress.get(&id)
    }

    pub fn stats(&self) -> Stats {
        self.raft.stats
    }

    /// This node lost state it had acknowledged: it neither campaigns nor votes until it
    /// is removed from the group and added back with an empty data dir.
    pub fn lost_data(&self) -> bool {
        self.raft.lost_data
    }

    /// A founder started from an empty data dir that has not yet seen entry 2 name the
    /// life its first-election vote came from (it votes only in the group's first
    /// election, or for a candidate that names that life, until then).
    pub fn fresh_founder(&self) -> bool {
        self.raft.fresh_founder
    }

    /// See [`crate::raft::HardState::life`].
    pub fn life(&self) -> u64 {
        self.raft.life
    }

    /// Events for the operator since the last call (lost state, regressed followers).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.raft.events)
    }
}

fn check_initial_state(init: &InitialState) -> Result<(), NodeError> {
    let mut expect = init.snapshot.meta.index;
    let mut term = init.snapshot.meta.term;
    for e in &init.entries {
        if e.index != expect + 1 {
            return Err(NodeError::CorruptStorage(
                "entries are not contiguous after the snapshot",
            ));
        }
        if e.term < term {
            return Err(NodeError::CorruptStorage("entry terms decrease"));
        }
        expect = e.index;
        term = e.term;
    }
    if init.hard_state.commit > expect {
        return Err(NodeError::CorruptStorage(
            "commit index beyond the stored log",
        ));
    }
    if term > init.hard_state.term {
        return Err(NodeError::CorruptStorage(
            "log term above the stored current term",
        ));
    }
    Ok(())
}
