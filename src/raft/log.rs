//! The in-memory replicated log: a snapshot base, the entries after it, the commit index,
//! and the point from which entries still have to be handed to storage.

use super::types::{ConfState, Entry, Index, Snapshot, SnapshotMeta, Term};

/// A node's log. Entries are contiguous from `snapshot.meta.index + 1`.
#[derive(Clone, Debug)]
pub(crate) struct RaftLog {
    snapshot: Snapshot,
    entries: Vec<Entry>,
    pub(crate) commit: Index,
    /// First index not yet handed to storage in a `Ready`.
    unstable_from: Index,
    /// The log through this index is known to be in storage as it is in memory (the
    /// snapshot included). Raised when a `Ready` that wrote it is advanced, lowered when
    /// entries at or below it are replaced.
    durable: Index,
}

impl RaftLog {
    /// A log restored from storage; everything in it is already durable.
    pub(crate) fn restore_from(snapshot: Snapshot, entries: Vec<Entry>, commit: Index) -> RaftLog {
        let last = snapshot.meta.index + entries.len() as Index;
        let commit = commit.clamp(snapshot.meta.index, last);
        RaftLog {
            snapshot,
            entries,
            commit,
            unstable_from: last + 1,
            durable: last,
        }
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub(crate) fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot.meta
    }

    pub(crate) fn first_index(&self) -> Index {
        self.snapshot.meta.index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.snapshot.meta.index + self.entries.len() as Index
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.snapshot.meta.term, |e| e.term)
    }

    /// Term at `index`: known for the snapshot index and every entry after it.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.meta.index {
            return Some(self.snapshot.meta.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(offset as usize)
    }

    pub(crate) fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft's "at least as up to date" comparison of a candidate's last entry with ours.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries from `lo`, at most `max_count` and about `max_bytes` (at least one entry
    /// when any exists). `None` if `lo` is compacted away.
    pub(crate) fn entries_from(
        &self,
        lo: Index,
        max_count: usize,
        max_bytes: usize,
    ) -> Option<Vec<Entry>> {
        if lo < self.first_index() {
            return None;
        }
        let start = (lo - self.first_index()) as usize;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.entries.iter().skip(start).take(max_count) {
            bytes += e.size_hint();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }

    /// Committed entries in `(after, commit]` still present in the log.
    pub(crate) fn committed_after(&self, after: Index) -> Vec<Entry> {
        let lo = after.max(self.snapshot.meta.index) + 1;
        (lo..=self.commit)
            .filter_map(|i| self.entry(i).cloned())
            .collect()
    }

    /// Leader append of one new entry.
    pub(crate) fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// First index of `entries` whose term differs from ours (or that we lack), if any.
    pub(crate) fn find_conflict(&self, entries: &[Entry]) -> Option<Index> {
        entries
            .iter()
            .find(|e| !self.matches(e.index, e.term))
            .map(|e| e.index)
    }

    /// Replaces everything from `entries[0].index` on with `entries`.
    pub(crate) fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let keep = first.index.saturating_sub(self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        self.unstable_from = self.unstable_from.min(first.index);
        self.durable = self.durable.min(first.index - 1);
    }

    /// The log through this index is in storage as it is in memory.
    pub(crate) fn durable_index(&self) -> Index {
        self.durable
    }

    /// Storage holds the log through `(index, term)`: everything before it was written
    /// by earlier `Ready`s. Ignored if the log no longer holds that entry (it was
    /// replaced, or compacted away, while the write was under way).
    pub(crate) fn mark_durable(&mut self, index: Index, term: Term) {
        if self.term(index) == Some(term) {
            self.durable = self.durable.max(index);
        }
    }

    /// First index of the run of entries sharing the term at `index`, not below `floor`.
    pub(crate) fn first_index_of_term_at(&self, index: Index, floor: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut i = index;
        while i > floor && i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Highest index `<= from` whose term is `term`, if the log still holds one.
    pub(crate) fn last_index_of_term(&self, term: Term, from: Index) -> Option<Index> {
        let mut i = from.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t > term && i > self.snapshot.meta.index => i -= 1,
                _ => return None,
            }
        }
    }

    /// Entries not yet handed to storage; marks them handed.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let out = self
            .entries_from(from, usize::MAX, usize::MAX)
            .unwrap_or_default();
        self.unstable_from = self.last_index() + 1;
        out
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Drops entries up to `index` (which must be in the log), keeping a snapshot of them.
    pub(crate) fn compact(
        &mut self,
        index: Index,
        conf: ConfState,
        data: Vec<u8>,
    ) -> Option<Snapshot> {
        let term = self.term(index)?;
        if index <= self.snapshot.meta.index {
            return None;
        }
        let drop = (index - self.snapshot.meta.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        };
        Some(self.snapshot.clone())
    }

    /// Replaces the whole log with `snap` (InstallSnapshot on a follower).
    pub(crate) fn install(&mut self, snap: Snapshot) {
        // Nothing in memory now is known to be in storage until the snapshot is written.
        self.durable = self.durable.min(self.snapshot.meta.index);
        self.commit = snap.meta.index;
        self.unstable_from = snap.meta.index + 1;
        self.entries.clear();
        self.snapshot = snap;
    }

    /// Entries in `(lo, hi]` that are still in the log.
    pub(crate) fn range(&self, lo: Index, hi: Index) -> impl Iterator<Item = &Entry> {
        let lo = lo.max(self.snapshot.meta.index) + 1;
        (lo..=hi).filter_map(move |i| self.entry(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryPayload;

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry {
                term,
                index: i as Index + 1,
                payload: EntryPayload::Empty,
            })
            .collect();
        RaftLog::restore_from(Snapshot::default(), entries, 0)
    }

    #[test]
    fn up_to_date_compares_term_then_length() {
        let log = log_with_terms(&[1, 1, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(5, 1));
        assert!(!log.is_up_to_date(2, 2));
    }

    #[test]
    fn term_run_and_last_of_term() {
        let log = log_with_terms(&[1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term_at(4, 0), 2);
        assert_eq!(log.last_index_of_term(2, 5), Some(4));
        assert_eq!(log.last_index_of_term(3, 5), None);
    }

    #[test]
    fn entries_from_respects_bounds() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.entries_from(2, 2, usize::MAX).unwrap().len(), 2);
        assert_eq!(log.entries_from(1, 10, 1).unwrap().len(), 1);
        assert_eq!(log.entries_from(5, 10, 100).unwrap().len(), 0);
    }

    #[test]
    fn compaction_then_compacted_reads_fail() {
        let mut log = log_with_terms(&[1, 1, 2]);
        log.compact(2, ConfState::default(), vec![]).unwrap();
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert!(log.entries_from(1, 10, 100).is_none());
    }
}
