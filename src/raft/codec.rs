//! Versioned binary encoding of [`Message`]s for the cluster transport: a version byte,
//! then LEB128 varints, tags and length-prefixed bytes. Decoding is bounds-checked and
//! returns an error, never panics, on malformed or truncated input.

use super::message::{Message, MessageBody, VoteKind};
use super::types::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryPayload, FounderVote, Snapshot, SnapshotMeta,
};

/// Current wire format version; decoders reject others.
pub const WIRE_VERSION: u8 = 1;
/// Largest byte string (entry payload or snapshot image) a decoder accepts: far above
/// any membership or circuit-breaker state, small enough to refuse absurd allocations.
pub const MAX_BYTES_LEN: u64 = 64 * 1024 * 1024;
/// Most entries one AppendEntries may carry on the wire.
pub const MAX_ENTRIES: u64 = 1 << 16;
/// Most voters plus learners a configuration may list.
pub const MAX_MEMBERS: u64 = 1024;

/// Why bytes could not be decoded into a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The first byte names a version this build does not speak.
    UnsupportedVersion(u8),
    /// The input ended in the middle of a field.
    Truncated,
    /// A varint is longer than 10 bytes or overflows 64 bits.
    BadVarint,
    /// An enum tag has no meaning.
    UnknownTag { field: &'static str, tag: u8 },
    /// A count or length exceeds its bound (or the bytes left).
    TooLong { field: &'static str, len: u64 },
    /// Bytes remain after a complete message.
    TrailingBytes(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed raft message: {self:?}")
    }
}

impl std::error::Error for DecodeError {}

/// Encodes `msg` (version byte first).
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    encode_into(msg, &mut out);
    out
}

/// Appends the encoding of `msg` to `out`.
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) {
    out.push(WIRE_VERSION);
    put_u64(out, msg.from);
    put_u64(out, msg.to);
    put_u64(out, msg.term);
    put_body(out, &msg.body);
}

/// Decodes one message occupying all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (from, to, term) = (r.u64()?, r.u64()?, r.u64()?);
    let body = r.body()?;
    let rest = bytes.len() - r.pos;
    if rest != 0 {
        return Err(DecodeError::TrailingBytes(rest));
    }
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.push(u8::from(b));
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn vote_kind_tag(k: VoteKind) -> u8 {
    match k {
        VoteKind::PreVote => 0,
        VoteKind::Vote => 1,
    }
}

fn put_body(out: &mut Vec<u8>, body: &MessageBody) {
    match body {
        MessageBody::Append {
            prev_index,
            prev_term,
            commit,
            entries,
        } => {
            out.push(0);
            for v in [*prev_index, *prev_term, *commit, entries.len() as u64] {
                put_u64(out, v);
            }
            entries.iter().for_each(|e| put_entry(out, e));
        }
        MessageBody::AppendResponse {
            success,
            index,
            hint_index,
            hint_term,
        } => {
            out.push(1);
            put_bool(out, *success);
            [*index, *hint_index, *hint_term]
                .iter()
                .for_each(|&v| put_u64(out, v));
        }
        MessageBody::Heartbeat { commit } => {
            out.push(2);
            put_u64(out, *commit);
        }
        MessageBody::HeartbeatResponse => out.push(3),
        other => put_body_rest(out, other),
    }
}

fn put_body_rest(out: &mut Vec<u8>, body: &MessageBody) {
    match body {
        MessageBody::Vote {
            kind,
            last_index,
            last_term,
            transfer,
            life,
        } => {
            // A request that names a founder's life has its own tag, so every other
            // request keeps the version 1 encoding.
            out.push(if *life == 0 { 4 } else { 9 });
            out.push(vote_kind_tag(*kind));
            put_u64(out, *last_index);
            put_u64(out, *last_term);
            put_bool(out, *transfer);
            if *life != 0 {
                put_u64(out, *life);
            }
        }
        MessageBody::VoteResponse {
            kind,
            granted,
            life,
        } => {
            // Only a fresh founder's grant in the group's first election carries a
            // life: its own tag, so every other response keeps the version 1 encoding.
            out.push(if *life == 0 { 5 } else { 8 });
            out.push(vote_kind_tag(*kind));
            put_bool(out, *granted);
            if *life != 0 {
                put_u64(out, *life);
            }
        }
        MessageBody::Snapshot { snapshot } => {
            out.push(6);
            put_snapshot(out, snapshot);
        }
        MessageBody::TimeoutNow => out.push(7),
        _ => unreachable!("put_body handles the other variants"),
    }
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_u64(out, e.term);
    put_u64(out, e.index);
    match &e.payload {
        EntryPayload::Empty => out.push(0),
        EntryPayload::Normal(data) => {
            out.push(1);
            put_bytes(out, data);
        }
        EntryPayload::ConfChange(cc) => {
            out.push(2);
            out.push(cc.kind as u8);
            put_u64(out, cc.node);
        }
        EntryPayload::Formed(votes) => {
            out.push(3);
            put_u64(out, votes.len() as u64);
            for v in votes {
                put_u64(out, v.node);
                put_u64(out, v.life);
            }
        }
    }
}

fn put_snapshot(out: &mut Vec<u8>, s: &Snapshot) {
    put_u64(out, s.meta.index);
    put_u64(out, s.meta.term);
    for ids in [&s.meta.conf.voters, &s.meta.conf.learners] {
        put_u64(out, ids.len() as u64);
        ids.iter().for_each(|&id| put_u64(out, id));
    }
    put_bytes(out, &s.data);
}

/// A cursor over untrusted bytes; every read checks what is left.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            let chunk = u64::from(b & 0x7F);
            if shift == 63 && chunk > 1 {
                return Err(DecodeError::BadVarint);
            }
            v |= chunk << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint)
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { field: "bool", tag }),
        }
    }

    /// A count bounded by `max` and by the bytes left (each item takes at least one byte).
    fn count(&mut self, field: &'static str, max: u64) -> Result<usize, DecodeError> {
        let len = self.u64()?;
        if len > max || len > self.remaining() {
            return Err(DecodeError::TooLong { field, len });
        }
        Ok(len as usize)
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.count(field, MAX_BYTES_LEN)?;
        let out = self.bytes[self.pos..self.pos + len].to_vec();
        self.pos += len;
        Ok(out)
    }

    fn vote_kind(&mut self) -> Result<VoteKind, DecodeError> {
        match self.u8()? {
            0 => Ok(VoteKind::PreVote),
            1 => Ok(VoteKind::Vote),
            tag => Err(DecodeError::UnknownTag {
                field: "vote kind",
                tag,
            }),
        }
    }

    fn body(&mut self) -> Result<MessageBody, DecodeError> {
        Ok(match self.u8()? {
            0 => self.append()?,
            1 => MessageBody::AppendResponse {
                success: self.bool()?,
                index: self.u64()?,
                hint_index: self.u64()?,
                hint_term: self.u64()?,
            },
            2 => MessageBody::Heartbeat {
                commit: self.u64()?,
            },
            3 => MessageBody::HeartbeatResponse,
            4 => MessageBody::Vote {
                kind: self.vote_kind()?,
                last_index: self.u64()?,
                last_term: self.u64()?,
                transfer: self.bool()?,
                life: 0,
            },
            9 => MessageBody::Vote {
                kind: self.vote_kind()?,
                last_index: self.u64()?,
                last_term: self.u64()?,
                transfer: self.bool()?,
                life: self.u64()?,
            },
            5 => MessageBody::VoteResponse {
                kind: self.vote_kind()?,
                granted: self.bool()?,
                life: 0,
            },
            8 => MessageBody::VoteResponse {
                kind: self.vote_kind()?,
                granted: self.bool()?,
                life: self.u64()?,
            },
            6 => MessageBody::Snapshot {
                snapshot: self.snapshot()?,
            },
            7 => MessageBody::TimeoutNow,
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "message",
                    tag,
                })
            }
        })
    }

    fn append(&mut self) -> Result<MessageBody, DecodeError> {
        let (prev_index, prev_term, commit) = (self.u64()?, self.u64()?, self.u64()?);
        let n = self.count("entries", MAX_ENTRIES)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(self.entry()?);
        }
        Ok(MessageBody::Append {
            prev_index,
            prev_term,
            commit,
            entries,
        })
    }

    fn entry(&mut self) -> Result<Entry, DecodeError> {
        let (term, index) = (self.u64()?, self.u64()?);
        let payload = match self.u8()? {
            0 => EntryPayload::Empty,
            1 => EntryPayload::Normal(self.bytes("payload")?),
            2 => EntryPayload::ConfChange(self.conf_change()?),
            3 => {
                let n = self.count("founder votes", MAX_MEMBERS)?;
                let mut votes = Vec::with_capacity(n);
                for _ in 0..n {
                    let (node, life) = (self.u64()?, self.u64()?);
                    votes.push(FounderVote { node, life });
                }
                EntryPayload::Formed(votes)
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "payload",
                    tag,
                })
            }
        };
        Ok(Entry {
            term,
            index,
            payload,
        })
    }

    fn conf_change(&mut self) -> Result<ConfChange, DecodeError> {
        let kind = match self.u8()? {
            0 => ConfChangeKind::AddLearner,
            1 => ConfChangeKind::PromoteLearner,
            2 => ConfChangeKind::RemoveNode,
            3 => ConfChangeKind::DemoteVoter,
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "conf change",
                    tag,
                })
            }
        };
        Ok(ConfChange {
            kind,
            node: self.u64()?,
        })
    }

    fn ids(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.count("members", MAX_MEMBERS)?;
        (0..n).map(|_| self.u64()).collect()
    }

    fn snapshot(&mut self) -> Result<Snapshot, DecodeError> {
        let (index, term) = (self.u64()?, self.u64()?);
        let conf = ConfState {
            voters: self.ids()?,
            learners: self.ids()?,
        };
        let data = self.bytes("snapshot data")?;
        Ok(Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            from: 1,
            to: 300,
            term: u64::MAX,
            body: MessageBody::Append {
                prev_index: 7,
                prev_term: 3,
                commit: 5,
                entries: vec![Entry {
                    term: 3,
                    index: 8,
                    payload: EntryPayload::Normal(b"hello".to_vec()),
                }],
            },
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(decode(&encode(&m)), Ok(m));
    }

    #[test]
    fn rejects_other_versions_and_trailing_bytes() {
        let mut b = encode(&sample());
        b.push(0);
        assert_eq!(decode(&b), Err(DecodeError::TrailingBytes(1)));
        b[0] = 9;
        assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(9)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = encode(&sample());
        for len in 0..b.len() {
            assert!(decode(&b[..len]).is_err(), "prefix of {len} bytes decoded");
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        let mut b = vec![WIRE_VERSION, 1, 2, 3, 0, 0, 0, 0];
        b.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
        assert!(matches!(decode(&b), Err(DecodeError::TooLong { .. })));
    }

    #[test]
    fn overlong_varint_is_refused() {
        let mut b = vec![WIRE_VERSION];
        b.extend_from_slice(&[0xFF; 11]);
        assert_eq!(decode(&b), Err(DecodeError::BadVarint));
    }
}
