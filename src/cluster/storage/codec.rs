//! Binary encoding of one [`PersistBatch`] as the body of a log record.
//!
//! Fixed-width little-endian integers, `u32` counts and lengths. Decoding is
//! bounds-checked: every count is checked against the bytes left before anything is
//! allocated, and terms and indexes above [`MAX_WIRE_VALUE`] are refused so that the
//! arithmetic done on them later cannot overflow.

use crate::raft::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryPayload, FounderVote, HardState,
    PersistBatch, Snapshot, SnapshotMeta, MAX_WIRE_VALUE,
};

/// Record kind of a persisted batch (the only kind this format version writes).
pub const KIND_BATCH: u8 = 1;

const HAS_HARD_STATE: u8 = 1;
const HAS_SNAPSHOT: u8 = 1 << 1;
const HAS_COMPACTED: u8 = 1 << 2;
/// With `HAS_HARD_STATE`: [`HardState::fresh_founder`] is set.
const FRESH_FOUNDER: u8 = 1 << 3;
/// With `HAS_HARD_STATE`: [`HardState::lost_data`] is set.
const LOST_DATA: u8 = 1 << 4;
/// With `HAS_HARD_STATE`: [`HardState::life`] is nonzero and follows the commit index.
const HAS_LIFE: u8 = 1 << 5;
const KNOWN_FLAGS: u8 =
    HAS_HARD_STATE | HAS_SNAPSHOT | HAS_COMPACTED | FRESH_FOUNDER | LOST_DATA | HAS_LIFE;

const TAG_EMPTY: u8 = 0;
const TAG_NORMAL: u8 = 1;
const TAG_CONF_CHANGE: u8 = 2;
const TAG_FORMED: u8 = 3;

/// Smallest encoding of an entry (term, index, tag): bounds an entry count by the bytes left.
const MIN_ENTRY_BYTES: usize = 17;
/// Size of an encoded node id: bounds a member count by the bytes left.
const NODE_ID_BYTES: usize = 8;

/// The parts of a batch, borrowed, so a checkpoint of the live state encodes without a copy.
pub struct BatchRef<'a> {
    pub hard_state: Option<&'a HardState>,
    pub snapshot: Option<&'a Snapshot>,
    pub entries: &'a [Entry],
    pub compacted: Option<&'a Snapshot>,
}

impl<'a> From<&'a PersistBatch> for BatchRef<'a> {
    fn from(b: &'a PersistBatch) -> BatchRef<'a> {
        BatchRef {
            hard_state: b.hard_state.as_ref(),
            snapshot: b.snapshot.as_ref(),
            entries: &b.entries,
            compacted: b.compacted.as_ref(),
        }
    }
}

/// Appends the record body for `b` (kind byte first) to `out`.
pub fn encode_batch(b: &BatchRef<'_>, out: &mut Vec<u8>) {
    out.push(KIND_BATCH);
    let mut flags = 0;
    if b.hard_state.is_some() {
        flags |= HAS_HARD_STATE;
    }
    if b.snapshot.is_some() {
        flags |= HAS_SNAPSHOT;
    }
    if b.compacted.is_some() {
        flags |= HAS_COMPACTED;
    }
    if b.hard_state.is_some_and(|hs| hs.fresh_founder) {
        flags |= FRESH_FOUNDER;
    }
    if b.hard_state.is_some_and(|hs| hs.lost_data) {
        flags |= LOST_DATA;
    }
    if b.hard_state.is_some_and(|hs| hs.life != 0) {
        flags |= HAS_LIFE;
    }
    out.push(flags);
    if let Some(hs) = b.hard_state {
        put_u64(out, hs.term);
        put_u64(out, hs.vote);
        put_u64(out, hs.commit);
        if hs.life != 0 {
            put_u64(out, hs.life);
        }
    }
    if let Some(s) = b.snapshot {
        put_snapshot(out, s);
    }
    put_len(out, b.entries.len());
    for e in b.entries {
        put_entry(out, e);
    }
    if let Some(s) = b.compacted {
        put_snapshot(out, s);
    }
}

/// Decodes a record body written by [`encode_batch`]; the error says what is wrong.
pub fn decode_batch(bytes: &[u8]) -> Result<PersistBatch, String> {
    let mut r = Reader { bytes, pos: 0 };
    let kind = r.u8()?;
    if kind != KIND_BATCH {
        return Err(format!("unknown record kind {kind}"));
    }
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown record flags {flags:#04x}"));
    }
    let hard_state = if flags & HAS_HARD_STATE != 0 {
        let mut hs = r.hard_state()?;
        hs.fresh_founder = flags & FRESH_FOUNDER != 0;
        hs.lost_data = flags & LOST_DATA != 0;
        if flags & HAS_LIFE != 0 {
            hs.life = r.u64()?;
        }
        Some(hs)
    } else if flags & (FRESH_FOUNDER | LOST_DATA | HAS_LIFE) != 0 {
        return Err(format!(
            "record flags {flags:#04x} mark a hard state that is absent"
        ));
    } else {
        None
    };
    let snapshot = r.opt_snapshot(flags & HAS_SNAPSHOT != 0)?;
    let entries = r.entries()?;
    let compacted = r.opt_snapshot(flags & HAS_COMPACTED != 0)?;
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    Ok(PersistBatch {
        hard_state,
        snapshot,
        entries,
        compacted,
    })
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Lengths fit in `u32`: callers refuse records above `MAX_RECORD_BYTES` (< 4 GiB).
fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_len(out, ids.len());
    for &id in ids {
        put_u64(out, id);
    }
}

fn put_snapshot(out: &mut Vec<u8>, s: &Snapshot) {
    put_u64(out, s.meta.index);
    put_u64(out, s.meta.term);
    put_ids(out, &s.meta.conf.voters);
    put_ids(out, &s.meta.conf.learners);
    put_bytes(out, &s.data);
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_u64(out, e.term);
    put_u64(out, e.index);
    match &e.payload {
        EntryPayload::Empty => out.push(TAG_EMPTY),
        EntryPayload::Normal(data) => {
            out.push(TAG_NORMAL);
            put_bytes(out, data);
        }
        EntryPayload::ConfChange(cc) => {
            out.push(TAG_CONF_CHANGE);
            out.push(conf_kind_tag(cc.kind));
            put_u64(out, cc.node);
        }
        EntryPayload::Formed(votes) => {
            out.push(TAG_FORMED);
            put_len(out, votes.len());
            for v in votes {
                put_u64(out, v.node);
                put_u64(out, v.life);
            }
        }
    }
}

fn conf_kind_tag(kind: ConfChangeKind) -> u8 {
    match kind {
        ConfChangeKind::AddLearner => 0,
        ConfChangeKind::PromoteLearner => 1,
        ConfChangeKind::RemoveNode => 2,
        ConfChangeKind::DemoteVoter => 3,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("body ends inside a field at byte {}", self.pos));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A term or index: bounded so later `+ 1` / `+ len` arithmetic cannot overflow.
    fn bounded(&mut self, what: &str) -> Result<u64, String> {
        let v = self.u64()?;
        if v > MAX_WIRE_VALUE {
            return Err(format!("{what} {v} out of range"));
        }
        Ok(v)
    }

    /// A count of items at least `min_item` bytes each, checked against the bytes left.
    fn count(&mut self, min_item: usize, what: &str) -> Result<usize, String> {
        let n = self.u32()? as usize;
        let left = self.bytes.len() - self.pos;
        if n.saturating_mul(min_item) > left {
            return Err(format!("{what} count {n} exceeds the record"));
        }
        Ok(n)
    }

    fn byte_string(&mut self) -> Result<Vec<u8>, String> {
        let n = self.count(1, "byte string")?;
        Ok(self.take(n)?.to_vec())
    }

    fn hard_state(&mut self) -> Result<HardState, String> {
        Ok(HardState {
            term: self.bounded("term")?,
            vote: self.u64()?,
            commit: self.bounded("commit index")?,
            fresh_founder: false,
            lost_data: false,
            life: 0,
        })
    }

    fn ids(&mut self) -> Result<Vec<u64>, String> {
        let n = self.count(NODE_ID_BYTES, "member")?;
        (0..n).map(|_| self.u64()).collect()
    }

    fn opt_snapshot(&mut self, present: bool) -> Result<Option<Snapshot>, String> {
        if !present {
            return Ok(None);
        }
        let index = self.bounded("snapshot index")?;
        let term = self.bounded("snapshot term")?;
        let voters = self.ids()?;
        let learners = self.ids()?;
        let data = self.byte_string()?;
        let conf = ConfState { voters, learners };
        let meta = SnapshotMeta { index, term, conf };
        Ok(Some(Snapshot { meta, data }))
    }

    fn entries(&mut self) -> Result<Vec<Entry>, String> {
        let n = self.count(MIN_ENTRY_BYTES, "entry")?;
        (0..n).map(|_| self.entry()).collect()
    }

    fn entry(&mut self) -> Result<Entry, String> {
        let term = self.bounded("entry term")?;
        let index = self.bounded("entry index")?;
        let payload = match self.u8()? {
            TAG_EMPTY => EntryPayload::Empty,
            TAG_NORMAL => EntryPayload::Normal(self.byte_string()?),
            TAG_CONF_CHANGE => EntryPayload::ConfChange(self.conf_change()?),
            TAG_FORMED => {
                let n = self.count(2 * NODE_ID_BYTES, "founder vote")?;
                let votes = (0..n)
                    .map(|_| {
                        let node = self.u64()?;
                        Ok(FounderVote {
                            node,
                            life: self.u64()?,
                        })
                    })
                    .collect::<Result<_, String>>()?;
                EntryPayload::Formed(votes)
            }
            tag => return Err(format!("unknown entry payload tag {tag}")),
        };
        Ok(Entry {
            term,
            index,
            payload,
        })
    }

    fn conf_change(&mut self) -> Result<ConfChange, String> {
        let kind = match self.u8()? {
            0 => ConfChangeKind::AddLearner,
            1 => ConfChangeKind::PromoteLearner,
            2 => ConfChangeKind::RemoveNode,
            3 => ConfChangeKind::DemoteVoter,
            tag => return Err(format!("unknown membership change kind {tag}")),
        };
        Ok(ConfChange {
            kind,
            node: self.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistBatch {
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 4,
                term: 2,
                conf: ConfState {
                    voters: vec![1, 2],
                    learners: vec![3],
                },
            },
            data: b"image".to_vec(),
        };
        let entries = vec![
            Entry {
                term: 2,
                index: 5,
                payload: EntryPayload::Normal(b"cmd".to_vec()),
            },
            Entry {
                term: 2,
                index: 6,
                payload: EntryPayload::ConfChange(ConfChange {
                    kind: ConfChangeKind::PromoteLearner,
                    node: 3,
                }),
            },
            Entry {
                term: 2,
                index: 7,
                payload: EntryPayload::Formed(vec![
                    FounderVote { node: 2, life: 9 },
                    FounderVote {
                        node: 3,
                        life: u64::MAX,
                    },
                ]),
            },
        ];
        PersistBatch {
            hard_state: Some(HardState {
                term: 2,
                vote: 1,
                commit: 5,
                fresh_founder: false,
                lost_data: true,
                life: 0x0123_4567_89ab_cdef,
            }),
            snapshot: Some(snap.clone()),
            entries,
            compacted: Some(snap),
        }
    }

    fn encode(b: &PersistBatch) -> Vec<u8> {
        let mut out = Vec::new();
        encode_batch(&BatchRef::from(b), &mut out);
        out
    }

    #[test]
    fn batch_round_trips() {
        let b = sample();
        assert_eq!(decode_batch(&encode(&b)), Ok(b));
        let empty = PersistBatch::default();
        assert_eq!(decode_batch(&encode(&empty)), Ok(empty));
    }

    #[test]
    fn every_strict_prefix_and_any_extension_is_refused() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(decode_batch(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_batch(&longer).is_err());
    }

    #[test]
    fn out_of_range_index_and_huge_counts_are_refused() {
        let mut b = sample();
        b.entries[0].index = MAX_WIRE_VALUE + 1;
        assert!(decode_batch(&encode(&b))
            .unwrap_err()
            .contains("out of range"));
        // kind, flags = 0, entry count u32::MAX with no bytes behind it.
        let bytes = [KIND_BATCH, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(decode_batch(&bytes).unwrap_err().contains("exceeds"));
    }
}
