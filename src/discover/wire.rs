//! The few parts of the DNS message format (RFC 1035, SRV from RFC 2782, the EDNS(0)
//! OPT record from RFC 6891) that discovery needs, by hand: one question out, and the
//! A, AAAA, SRV and CNAME records of an answer back. Pure functions over bytes; the
//! exchange around them is in [`super::resolve`].
//!
//! Every read is bounds-checked and every loop bounded: a hostile or broken answer is
//! a [`WireError`] naming what and where, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest name on the wire, length octets and the root's included.
const MAX_NAME_WIRE: usize = 255;
/// Compression pointers followed while reading one name. A name has at most 127
/// labels, so a chain longer than that is a loop or an attack.
const MAX_POINTER_HOPS: usize = 127;
/// Records read from one section: a full 64 KiB answer of the smallest records (an A
/// record with a compressed owner is 16 bytes) holds about 4,000.
pub const MAX_RECORDS_PER_SECTION: usize = 4096;
/// The EDNS(0) UDP payload size advertised: the size the DNS community settled on to
/// avoid IP fragmentation (DNS Flag Day 2020). Larger answers come truncated and are
/// asked again over TCP.
pub const EDNS_UDP_PAYLOAD: u16 = 1232;
/// Header length.
const HEADER_BYTES: usize = 12;

/// Record types discovery asks for or follows.
pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// Response codes discovery tells apart.
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;

/// Why bytes are not the answer to our question.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {0} bytes is shorter than the 12-byte header")]
    Short(usize),
    #[error("{what} at byte {at} runs past the end of the message")]
    Truncated { what: &'static str, at: usize },
    #[error("name at byte {0} has a compression pointer that does not point backwards")]
    BadPointer(usize),
    #[error("name at byte {0} follows more than 127 compression pointers")]
    PointerLoop(usize),
    #[error("name at byte {0} is longer than 255 bytes")]
    NameTooLong(usize),
    #[error("label at byte {at} has reserved type bits {bits:#04x}")]
    BadLabel { at: usize, bits: u8 },
    #[error("section holds {0} records, more than 4096")]
    TooManyRecords(usize),
    #[error("{rtype} record at byte {at} has {len} bytes of data, which is not its size")]
    BadRdata { rtype: u16, at: usize, len: usize },
    #[error("answer id {got} does not match the question's {want}")]
    IdMismatch { got: u16, want: u16 },
    #[error("message is not a response")]
    NotResponse,
    #[error("answer is for another question ({0})")]
    OtherQuestion(String),
}

/// A domain name as text: lowercase ASCII, no trailing dot, labels joined by '.'.
/// Bytes outside letters, digits, '-' and '_' are written `\DDD`.
pub type Name = String;

/// One record of an answer that discovery reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    A { owner: Name, ip: Ipv4Addr },
    Aaaa { owner: Name, ip: Ipv6Addr },
    Srv { owner: Name, target: Srv },
    Cname { owner: Name, canonical: Name },
}

/// An SRV record's data (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: Name,
}

impl Record {
    pub fn owner(&self) -> &str {
        match self {
            Record::A { owner, .. }
            | Record::Aaaa { owner, .. }
            | Record::Srv { owner, .. }
            | Record::Cname { owner, .. } => owner,
        }
    }

    /// The address of an A or AAAA record.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Record::A { ip, .. } => Some(IpAddr::V4(*ip)),
            Record::Aaaa { ip, .. } => Some(IpAddr::V6(*ip)),
            _ => None,
        }
    }
}

/// A parsed response: its code, whether it was cut short, and the records discovery
/// reads from its answer and additional sections (other types are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub rcode: u8,
    pub truncated: bool,
    pub answers: Vec<Record>,
    pub additional: Vec<Record>,
}

pub use crate::config::discover::normalise_dns_name as normalise;

/// A query for `name` (already checked: labels of 1 to 63 bytes) of type `rtype`, with
/// recursion desired and an EDNS(0) OPT record advertising [`EDNS_UDP_PAYLOAD`].
pub fn encode_query(id: u16, name: &str, rtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + name.len() + 2 + 4 + 11);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    for count in [1u16, 0, 0, 1] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root owner, type, payload size in the class field, TTL 0, no options.
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out
}

/// Reads `msg` as the answer to question `id` about `name` of type `rtype`.
pub fn decode_response(msg: &[u8], id: u16, name: &str, rtype: u16) -> Result<Response, WireError> {
    if msg.len() < HEADER_BYTES {
        return Err(WireError::Short(msg.len()));
    }
    let got = u16_at(msg, 0, "header")?;
    if got != id {
        return Err(WireError::IdMismatch { got, want: id });
    }
    let flags = u16_at(msg, 2, "header")?;
    if flags & 0x8000 == 0 {
        return Err(WireError::NotResponse);
    }
    let truncated = flags & 0x0200 != 0;
    let rcode = (flags & 0x000f) as u8;
    let counts: Vec<usize> = (0..4)
        .map(|i| u16_at(msg, 4 + 2 * i, "header").map(usize::from))
        .collect::<Result<_, _>>()?;
    let mut at = HEADER_BYTES;
    if counts[0] != 1 {
        return Err(WireError::OtherQuestion(format!("{} questions", counts[0])));
    }
    let (qname, next) = read_name(msg, at)?;
    let qtype = u16_at(msg, next, "question")?;
    at = next + 4;
    if qname != normalise(name) || qtype != rtype {
        return Err(WireError::OtherQuestion(format!("{qname} type {qtype}")));
    }
    let (answers, next) = read_section(msg, at, counts[1])?;
    let (_authority, next) = read_section(msg, next, counts[2])?;
    // A truncated answer may end anywhere: its additional section is not read.
    let additional = match truncated {
        true => Vec::new(),
        false => read_section(msg, next, counts[3])?.0,
    };
    Ok(Response {
        rcode,
        truncated,
        answers,
        additional,
    })
}

fn u16_at(msg: &[u8], at: usize, what: &'static str) -> Result<u16, WireError> {
    match msg.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(WireError::Truncated { what, at }),
    }
}

fn read_section(
    msg: &[u8],
    mut at: usize,
    count: usize,
) -> Result<(Vec<Record>, usize), WireError> {
    if count > MAX_RECORDS_PER_SECTION {
        return Err(WireError::TooManyRecords(count));
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let (owner, next) = read_name(msg, at)?;
        let rtype = u16_at(msg, next, "record")?;
        let len = usize::from(u16_at(msg, next + 8, "record")?);
        let data = next + 10;
        if msg.len() < data + len {
            return Err(WireError::Truncated {
                what: "record data",
                at: data,
            });
        }
        if let Some(r) = read_rdata(msg, owner, rtype, data, len)? {
            out.push(r);
        }
        at = data + len;
    }
    Ok((out, at))
}

fn read_rdata(
    msg: &[u8],
    owner: Name,
    rtype: u16,
    at: usize,
    len: usize,
) -> Result<Option<Record>, WireError> {
    let data = &msg[at..at + len];
    let bad = || WireError::BadRdata { rtype, at, len };
    Ok(Some(match rtype {
        TYPE_A => {
            let b: [u8; 4] = data.try_into().map_err(|_| bad())?;
            Record::A {
                owner,
                ip: Ipv4Addr::from(b),
            }
        }
        TYPE_AAAA => {
            let b: [u8; 16] = data.try_into().map_err(|_| bad())?;
            Record::Aaaa {
                owner,
                ip: Ipv6Addr::from(b),
            }
        }
        TYPE_SRV => {
            if len < 7 {
                return Err(bad());
            }
            let (target, end) = read_name(msg, at + 6)?;
            if end != at + len {
                return Err(bad());
            }
            let target = Srv {
                priority: u16_at(msg, at, "SRV")?,
                weight: u16_at(msg, at + 2, "SRV")?,
                port: u16_at(msg, at + 4, "SRV")?,
                target,
            };
            Record::Srv { owner, target }
        }
        TYPE_CNAME => {
            let (canonical, end) = read_name(msg, at)?;
            if end != at + len {
                return Err(bad());
            }
            Record::Cname { owner, canonical }
        }
        _ => return Ok(None),
    }))
}

/// Reads the name at `start`: its text and the byte after it where it starts (a
/// compressed name ends at its first pointer).
fn read_name(msg: &[u8], start: usize) -> Result<(Name, usize), WireError> {
    let mut text = String::new();
    let mut at = start;
    let mut end = None;
    let mut hops = 0;
    let mut wire_len = 1;
    loop {
        let Some(&len) = msg.get(at) else {
            return Err(WireError::Truncated { what: "name", at });
        };
        match len & 0xc0 {
            0x00 if len == 0 => break,
            0x00 => {
                let label = msg
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(WireError::Truncated { what: "label", at })?;
                if !text.is_empty() {
                    text.push('.');
                }
                push_label(&mut text, label);
                wire_len += 1 + usize::from(len);
                if wire_len > MAX_NAME_WIRE {
                    return Err(WireError::NameTooLong(start));
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let low = *msg
                    .get(at + 1)
                    .ok_or(WireError::Truncated { what: "name", at })?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                end.get_or_insert(at + 2);
                if target >= at {
                    return Err(WireError::BadPointer(start));
                }
                hops += 1;
                if hops > MAX_POINTER_HOPS {
                    return Err(WireError::PointerLoop(start));
                }
                at = target;
            }
            bits => return Err(WireError::BadLabel { at, bits }),
        }
    }
    Ok((text, end.unwrap_or(at + 1)))
}

fn push_label(text: &mut String, label: &[u8]) {
    for &b in label {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            text.push(b.to_ascii_lowercase() as char);
        } else {
            text.push_str(&format!("\\{b:03}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            m.extend_from_slice(&c.to_be_bytes());
        }
        m
    }

    fn question(m: &mut Vec<u8>, name: &str, rtype: u16) {
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
    }

    fn record(m: &mut Vec<u8>, rtype: u16, data: &[u8]) {
        m.extend_from_slice(&[0xc0, 12]); // owner: the question's name
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(data);
    }

    #[test]
    fn a_query_asks_the_question_with_edns() {
        let q = encode_query(7, "Web.Example.", TYPE_A);
        assert_eq!(&q[..4], &[0, 7, 1, 0]);
        assert_eq!(&q[12..25], b"\x03Web\x07Example\x00");
        assert_eq!(&q[q.len() - 11..q.len() - 6], &[0, 0, 41, 0x04, 0xd0]);
    }

    #[test]
    fn reads_a_and_srv_records_with_compression() {
        let mut m = header(9, 0x8180, [1, 2, 0, 0]);
        question(&mut m, "_h._tcp.svc", TYPE_SRV);
        record(
            &mut m,
            TYPE_SRV,
            &[0, 1, 0, 5, 0x1f, 0x90, 3, b'P', b'0', b'x', 0xc0, 20],
        );
        record(&mut m, TYPE_A, &[127, 0, 0, 1]);
        let r = decode_response(&m, 9, "_h._tcp.svc", TYPE_SRV).unwrap();
        assert_eq!(r.rcode, RCODE_NOERROR);
        let Record::Srv { owner, target } = &r.answers[0] else {
            panic!("not SRV: {:?}", r.answers[0]);
        };
        assert_eq!(owner, "_h._tcp.svc");
        assert_eq!(
            target,
            &Srv {
                priority: 1,
                weight: 5,
                port: 8080,
                target: "p0x.svc".into()
            }
        );
        assert_eq!(r.answers[1].ip(), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        let mut base = header(1, 0x8180, [1, 1, 0, 0]);
        question(&mut base, "a.b", TYPE_A);
        // A pointer to itself, forwards, a reserved label type, short data.
        for tail in [
            vec![0xc0, 17],
            vec![0xc0, 200],
            vec![0x80, 0],
            vec![0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 3, 1, 2, 3],
        ] {
            let mut m = base.clone();
            m.extend_from_slice(&tail);
            assert!(decode_response(&m, 1, "a.b", TYPE_A).is_err(), "{tail:?}");
        }
        // Every prefix of a good answer fails cleanly.
        let mut good = base.clone();
        record(&mut good, TYPE_A, &[10, 0, 0, 1]);
        assert!(decode_response(&good, 1, "a.b", TYPE_A).is_ok());
        for cut in 0..good.len() {
            assert!(decode_response(&good[..cut], 1, "a.b", TYPE_A).is_err());
        }
        assert_eq!(
            decode_response(&good, 2, "a.b", TYPE_A),
            Err(WireError::IdMismatch { got: 1, want: 2 })
        );
        assert!(matches!(
            decode_response(&good, 1, "other", TYPE_A),
            Err(WireError::OtherQuestion(_))
        ));
    }

    #[test]
    fn odd_bytes_in_labels_are_escaped() {
        let mut m = header(3, 0x8183, [1, 0, 0, 0]);
        m.extend_from_slice(b"\x03a.b\x00\x00\x01\x00\x01");
        let r = decode_response(&m, 3, "a\\046b", TYPE_A).unwrap();
        assert_eq!(r.rcode, RCODE_NXDOMAIN);
    }
}
