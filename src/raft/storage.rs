//! The durable-state boundary: the `Storage` trait, the batch a `Ready` asks it to persist,
//! and `MemStorage`, the in-memory implementation used by tests and the simulator.

use std::path::PathBuf;
use std::sync::Arc;

use super::types::{ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Term, NO_NODE};

/// Founders start from a snapshot at this index holding the initial configuration (and
/// an empty state machine). The log proper starts after it, so a node added later, whose
/// log is empty, cannot be sent entries from index 1: it receives this snapshot (or a
/// later one) and with it the membership, instead of replaying changes it has no base for.
pub const BOOTSTRAP_INDEX: Index = 1;
/// Term of the bootstrap snapshot.
pub const BOOTSTRAP_TERM: Term = 1;

/// Snapshot metadata every founding member starts from.
pub fn bootstrap_meta(conf: ConfState) -> SnapshotMeta {
    SnapshotMeta {
        index: BOOTSTRAP_INDEX,
        term: BOOTSTRAP_TERM,
        conf,
    }
}

/// Everything a node must make durable before the messages of the same `Ready` go out.
///
/// Apply in this order (or atomically): `snapshot` (replaces the whole log), `entries`
/// (drop every stored entry at or after the first one's index, then append), `compacted`
/// (keep this snapshot, drop entries up to its index), then `hard_state`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistBatch {
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub compacted: Option<Snapshot>,
}

impl PersistBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.compacted.is_none()
    }
}

/// What a node restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    pub hard_state: HardState,
    /// Latest snapshot; at index 0 it only carries the bootstrap configuration.
    pub snapshot: Snapshot,
    /// Entries after the snapshot, contiguous from `snapshot.meta.index + 1`.
    pub entries: Vec<Entry>,
}

/// A storage failure. The node must not continue: restart it from storage. Callers
/// branch on the variant; the text names the file and, for damage, the byte offset.
#[derive(Clone, Debug)]
pub enum StorageError {
    /// Stored bytes that cannot be what this node wrote: refused at open, never cut.
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    /// The operating system refused an operation (`op`, e.g. "fsync directory").
    Io {
        file: PathBuf,
        op: String,
        source: Arc<std::io::Error>,
    },
    /// A batch that would leave the log invalid (a gap, a commit index beyond the last
    /// entry), refused before anything was written.
    Refused { file: PathBuf, what: String },
    /// A batch whose record is above the store's bound.
    TooLarge {
        file: PathBuf,
        bytes: usize,
        limit: usize,
    },
    /// An earlier write failed: the file may end in a partial record that only
    /// recovery at the next start may cut, so no further write is attempted.
    Failed { earlier: Box<StorageError> },
    /// Bootstrapping a founding configuration into a store that already holds state.
    NotEmpty { dir: PathBuf },
    /// Another process holds the data dir (its lock file names the pid, if readable).
    Locked { dir: PathBuf, pid: Option<u32> },
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Corrupt { file, offset, what } => write!(
                f,
                "{}: corrupt at byte offset {offset}: {what}",
                file.display()
            ),
            StorageError::Io { file, op, source } => {
                write!(f, "{}: {op}: {source}", file.display())
            }
            StorageError::Refused { file, what } => {
                write!(f, "{}: refusing batch: {what}", file.display())
            }
            StorageError::TooLarge { file, bytes, limit } => write!(
                f,
                "{}: batch of {bytes} bytes above the {limit}-byte record bound",
                file.display()
            ),
            StorageError::Failed { earlier } => write!(f, "storage failed earlier: {earlier}"),
            StorageError::NotEmpty { dir } => write!(
                f,
                "{}: cannot bootstrap, the data dir already holds raft state",
                dir.display()
            ),
            StorageError::Locked {
                dir,
                pid: Some(pid),
            } => write!(
                f,
                "{}: in use by another ringway process (pid {pid})",
                dir.display()
            ),
            StorageError::Locked { dir, pid: None } => write!(
                f,
                "{}: in use by another ringway process (pid unknown)",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source.as_ref()),
            StorageError::Failed { earlier } => Some(earlier.as_ref()),
            _ => None,
        }
    }
}

/// Durable Raft state. `persist` must return only once the batch survives a crash.
pub trait Storage {
    /// The state a node restarts from.
    fn initial_state(&self) -> Result<InitialState, StorageError>;
    /// Makes `batch` durable (see [`PersistBatch`] for the order).
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError>;
}

/// In-memory [`Storage`]: "durable" means "written here", which the simulator keeps
/// across a simulated crash while the node's memory is thrown away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl MemStorage {
    /// Empty storage with no configuration: a node that waits to be added by a leader.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Storage of a founding member: the initial configuration is held by an empty
    /// snapshot at [`BOOTSTRAP_INDEX`] (every founder must use the same `conf`).
    pub fn new_with_conf(conf: ConfState) -> MemStorage {
        let mut s = MemStorage::default();
        s.snapshot.meta = bootstrap_meta(conf);
        s.hard_state = HardState {
            term: BOOTSTRAP_TERM,
            vote: NO_NODE,
            commit: BOOTSTRAP_INDEX,
            fresh_founder: true,
            lost_data: false,
            life: 0,
        };
        s
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn last_index(&self) -> Index {
        self.snapshot.meta.index + self.entries.len() as Index
    }

    /// Term of the stored entry at `index`, if stored (or the snapshot's own index).
    pub fn term(&self, index: Index) -> Option<Term> {
        let snap = &self.snapshot.meta;
        if index == snap.index {
            return Some(snap.term);
        }
        let offset = index.checked_sub(snap.index + 1)?;
        self.entries.get(offset as usize).map(|e| e.term)
    }

    fn install(&mut self, snap: &Snapshot) {
        self.snapshot = snap.clone();
        self.entries.clear();
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let base = self.snapshot.meta.index;
        if first.index <= base || first.index > self.last_index() + 1 {
            return Err(StorageError::Refused {
                file: PathBuf::from("memory"),
                what: format!(
                    "append at {} outside ({base}, {}]",
                    first.index,
                    self.last_index() + 1
                ),
            });
        }
        self.entries.truncate((first.index - base - 1) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn compact(&mut self, snap: &Snapshot) {
        let base = self.snapshot.meta.index;
        if snap.meta.index <= base {
            return;
        }
        let drop = ((snap.meta.index - base) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.snapshot = snap.clone();
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        })
    }

    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        if let Some(snap) = &batch.snapshot {
            self.install(snap);
        }
        self.append(&batch.entries)?;
        if let Some(snap) = &batch.compacted {
            self.compact(snap);
        }
        if let Some(hs) = batch.hard_state {
            self.hard_state = hs;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryPayload;

    fn ent(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Empty,
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::new();
        let b1 = PersistBatch {
            entries: vec![ent(1, 1), ent(2, 1), ent(3, 1)],
            ..Default::default()
        };
        s.persist(&b1).unwrap();
        let b2 = PersistBatch {
            entries: vec![ent(2, 2)],
            ..Default::default()
        };
        s.persist(&b2).unwrap();
        assert_eq!(s.last_index(), 2);
        assert_eq!(s.term(2), Some(2));
    }

    #[test]
    fn append_with_gap_is_an_error() {
        let mut s = MemStorage::new();
        let b = PersistBatch {
            entries: vec![ent(3, 1)],
            ..Default::default()
        };
        assert!(s.persist(&b).is_err());
    }

    #[test]
    fn compaction_keeps_suffix() {
        let mut s = MemStorage::new();
        let b = PersistBatch {
            entries: vec![ent(1, 1), ent(2, 1), ent(3, 2)],
            ..Default::default()
        };
        s.persist(&b).unwrap();
        let mut snap = Snapshot::default();
        snap.meta.index = 2;
        snap.meta.term = 1;
        let c = PersistBatch {
            compacted: Some(snap),
            ..Default::default()
        };
        s.persist(&c).unwrap();
        assert_eq!(s.term(2), Some(1));
        assert_eq!(s.term(3), Some(2));
        assert_eq!(s.term(1), None);
    }
}
