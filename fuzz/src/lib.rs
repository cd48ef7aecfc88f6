//! The bodies of ringway's fuzz targets: one function per parser that reads what others
//! send or write (config file, hash keys, Raft wire codec, cluster transport, storage
//! recovery, admin JSON bodies).
//!
//! Each function takes arbitrary bytes and panics only when ringway breaks a rule the
//! function checks: a panic inside ringway, a decode that does not survive re-encoding,
//! recovery that keeps bytes failing their checksum. `fuzz_targets/*.rs` hand libFuzzer's
//! input to these functions; `tests/units/fuzz_corpus.rs` replays the committed corpus and
//! regression inputs through the same functions under plain `cargo test`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use md5::{Digest, Md5};
use tokio::io::{AsyncRead, ReadBuf};

use ringway::balance::{request_host, HashKey, KeyInput};
use ringway::cluster::state::Command;
use ringway::cluster::storage::DiskStorage;
use ringway::cluster::transport::wire::{
    encode_hello, encode_verdict, push_frame, read_frame, read_hello, read_verdict, FrameError,
    HandshakeError,
};
use ringway::config::{Config, ParseError};
use ringway::raft::{
    codec, EntryPayload, HardState, MemStorage, PersistBatch, Storage, StorageError,
};

/// Frames read from one input at most: each needs at least 5 bytes, so libFuzzer's inputs
/// never reach it; it only keeps a huge replayed file from looping for long.
const MAX_FRAMES_PER_INPUT: usize = 4096;

/// `config`: raw YAML text through the same parse and typed build as `Config::load`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(_) => {}
        Err(ParseError::Syntax(message)) => {
            assert!(!message.is_empty(), "syntax error without a message");
        }
        Err(ParseError::Invalid(errors)) => {
            assert!(!errors.is_empty(), "invalid config with no field error");
            for e in &errors {
                assert!(
                    !e.message.is_empty(),
                    "field error without a message: {e:?}"
                );
            }
        }
    }
}

/// `hash_key`: the first line is a key template; the next lines are the method, the
/// request target, the client IP and `name: value` headers of a request to extract it from.
pub fn hash_key(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let Ok(template) = std::str::from_utf8(lines.next().unwrap_or_default()) else {
        return;
    };
    let method = Method::from_bytes(lines.next().unwrap_or_default()).unwrap_or(Method::GET);
    let uri =
        Uri::try_from(lines.next().unwrap_or_default()).unwrap_or_else(|_| Uri::from_static("/"));
    let client_ip = client_ip(lines.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let input = KeyInput {
        method: &method,
        uri: &uri,
        headers: &headers,
        client_ip,
    };
    let _ = request_host(&uri, &headers);
    let Ok(key) = HashKey::parse(template) else {
        return;
    };
    assert_eq!(key.to_string(), template, "a key displays as its source");
    assert_eq!(HashKey::parse(&key.to_string()).as_ref(), Ok(&key));
    let extracted = key.extract(&input);
    let hashed = key.hash(&input);
    assert_eq!(
        extracted.is_some(),
        hashed.is_some(),
        "extract and hash disagree on a missing part"
    );
    if let (Some(bytes), Some(point)) = (extracted, hashed) {
        let mut md5 = Md5::new();
        md5.update(&bytes);
        assert_eq!(
            ringway::ring::point_of(md5),
            point,
            "hash is not the hash of the extracted key"
        );
    }
}

/// A client address from text, or from 4 or 16 raw bytes; 127.0.0.1 otherwise.
fn client_ip(bytes: &[u8]) -> IpAddr {
    if let Some(ip) = std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()) {
        return ip;
    }
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        return IpAddr::V4(Ipv4Addr::from(b));
    }
    if let Ok(b) = <[u8; 16]>::try_from(bytes) {
        return IpAddr::V6(Ipv6Addr::from(b));
    }
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// `raft_codec`: decode arbitrary bytes; a decoded message re-encodes to bytes that decode
/// to the same message, and that encoding is stable.
pub fn raft_codec(data: &[u8]) {
    let Ok(msg) = codec::decode(data) else {
        return;
    };
    let encoded = codec::encode(&msg);
    let again = codec::decode(&encoded).expect("a re-encoded message decodes");
    assert_eq!(again, msg, "decode(encode(m)) != m");
    assert_eq!(codec::encode(&again), encoded, "encoding is not stable");
}

/// The runtime the transport target drives its readers on, created once.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
    })
}

/// An in-memory reader that hands out at most one byte per read, so every partial-read
/// path of the handshake and frame readers runs.
struct Trickle<'a>(&'a [u8]);

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some((&first, rest)) = self.0.split_first() {
            if buf.remaining() > 0 {
                buf.put_slice(&[first]);
                self.0 = rest;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// `transport`: the first byte picks the reader (hello, verdict, frames, frames one byte
/// at a time); the rest is what a peer sent.
pub fn transport(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    runtime().block_on(async {
        match mode % 4 {
            0 => hello(bytes).await,
            1 => verdict(bytes).await,
            2 => frames(&mut &bytes[..]).await,
            _ => frames(&mut Trickle(bytes)).await,
        }
    });
}

async fn hello(bytes: &[u8]) {
    let mut reader = bytes;
    match read_hello(&mut reader).await {
        Ok(h) => {
            let used = bytes.len() - reader.len();
            assert_eq!(
                encode_hello(&h),
                bytes[..used],
                "hello does not re-encode to its bytes"
            );
        }
        Err(HandshakeError::Io(e)) => {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "in-memory read: {e}"
            );
        }
        Err(_) => {}
    }
}

async fn verdict(bytes: &[u8]) {
    match read_verdict(&mut &bytes[..]).await {
        Ok(()) => assert_eq!(bytes[4], 0, "only verdict 0 accepts"),
        Err(HandshakeError::Rejected(v)) => {
            assert_eq!(
                encode_verdict(v)[..],
                bytes[..5],
                "verdict does not re-encode"
            );
        }
        Err(_) => {}
    }
}

async fn frames<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut buf = Vec::new();
    for _ in 0..MAX_FRAMES_PER_INPUT {
        match read_frame(reader, &mut buf, None).await {
            Ok(frame) => {
                let mut out = Vec::new();
                assert!(
                    push_frame(&mut out, &frame, None),
                    "a frame read is a frame that fits"
                );
                let again = read_frame(&mut &out[..], &mut Vec::new(), None).await;
                assert_eq!(again.ok(), Some(frame), "frame does not survive re-framing");
            }
            Err(
                FrameError::Closed
                | FrameError::BadLength(_)
                | FrameError::BadKind(_)
                | FrameError::BadTag
                | FrameError::Decode(_),
            ) => return,
            Err(FrameError::Io(e)) => {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof,
                    "in-memory read: {e}"
                );
                return;
            }
        }
    }
}

/// How the `storage` target lays its input out in the data dir (first input byte).
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// The input is the whole (only) segment file.
    Raw,
    /// A valid segment header, then the input as records.
    AfterHeader,
    /// A valid segment holding a few batches, then the input appended to it.
    AfterValidPrefix,
    /// A valid older segment, and the input after a valid header as the newest segment.
    AsLastSegment,
}

const SEGMENT_MAGIC: &[u8; 8] = b"RWRAFTLG";
const SEGMENT_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 12;

/// `storage`: recovery from arbitrary segment bytes. Opening returns Ok or a
/// [`StorageError`] naming the data dir, never panics; when it opens, everything it
/// recovered lies in records whose checksums hold, exactly the bad tail was cut, and a
/// second open finds the same state with nothing more to cut.
pub fn storage(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let layout = match mode % 4 {
        0 => Layout::Raw,
        1 => Layout::AfterHeader,
        2 => Layout::AfterValidPrefix,
        _ => Layout::AsLastSegment,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (seq, segment) = lay_out(dir.path(), layout, bytes);
    let opened = DiskStorage::open(dir.path());
    check_recovery(dir.path(), seq, &segment, opened);
}

/// Writes the files of `layout`; returns the newest segment's number and bytes.
fn lay_out(dir: &Path, layout: Layout, input: &[u8]) -> (u64, Vec<u8>) {
    let (seq, segment) = match layout {
        Layout::Raw => (1, input.to_vec()),
        Layout::AfterHeader => (1, [&segment_header(1)[..], input].concat()),
        Layout::AfterValidPrefix => (1, [valid_segment(), input].concat()),
        Layout::AsLastSegment => {
            write_segment(dir, 1, valid_segment());
            (2, [&segment_header(2)[..], input].concat())
        }
    };
    write_segment(dir, seq, &segment);
    (seq, segment)
}

fn write_segment(dir: &Path, seq: u64, bytes: &[u8]) {
    std::fs::write(dir.join(format!("log-{seq:020}.seg")), bytes).expect("write segment");
}

/// The segment header format, written out here independently of the storage module.
fn segment_header(seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8] = 1;
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Segment 1 of a storage that persisted a few batches, made once by `DiskStorage`.
fn valid_segment() -> &'static [u8] {
    static SEGMENT: OnceLock<Vec<u8>> = OnceLock::new();
    SEGMENT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = DiskStorage::open(dir.path()).expect("open a fresh storage");
        for (index, data) in [(1u64, &b"first"[..]), (2, b"second"), (3, b"")] {
            let entry = ringway::raft::Entry {
                term: 1,
                index,
                payload: EntryPayload::Normal(data.to_vec()),
            };
            let batch = PersistBatch {
                hard_state: Some(HardState {
                    term: 1,
                    vote: 1,
                    commit: index - 1,
                    ..HardState::default()
                }),
                entries: vec![entry],
                ..PersistBatch::default()
            };
            s.persist(&batch).expect("persist a seed batch");
        }
        drop(s);
        std::fs::read(dir.path().join(format!("log-{:020}.seg", 1))).expect("read the segment")
    })
}

/// Record bodies whose checksums hold, from the start of `segment` to the first bad
/// record, and where that valid part ends; `None` when the header itself is bad.
fn checked_records(seq: u64, segment: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    if segment.len() < SEGMENT_HEADER_LEN || segment[..SEGMENT_HEADER_LEN] != segment_header(seq) {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(segment[at..at + 4].try_into().unwrap_or_default());
    let mut bodies = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while segment.len() - pos >= RECORD_HEADER_LEN {
        if crc32fast::hash(&segment[pos..pos + 8]) != u32_at(pos + 8) {
            break;
        }
        let len = u32_at(pos) as usize;
        let start = pos + RECORD_HEADER_LEN;
        if len > segment.len() - start {
            break;
        }
        let body = &segment[start..start + len];
        if crc32fast::hash(body) != u32_at(pos + 4) {
            break;
        }
        bodies.push(body);
        pos = start + len;
    }
    Some((bodies, pos))
}

fn check_recovery(dir: &Path, seq: u64, segment: &[u8], opened: Result<DiskStorage, StorageError>) {
    let s = match opened {
        Ok(s) => s,
        Err(e) => {
            let why = e.to_string();
            let named = dir.display().to_string();
            assert!(
                why.contains(&named),
                "storage error does not name the data dir: {why}"
            );
            return;
        }
    };
    let (bodies, valid_len) =
        checked_records(seq, segment).expect("storage opened a segment whose header is bad");
    assert!(
        !bodies.is_empty(),
        "storage opened a segment without a valid record"
    );
    let cut = (segment.len() - valid_len) as u64;
    assert_eq!(
        s.stats().torn_bytes_cut,
        cut,
        "cut other than the bytes after the last good record"
    );
    for data in payloads(s.state()) {
        assert!(
            bodies.iter().any(|b| contains(b, data)),
            "recovered {} bytes found in no checksummed record",
            data.len()
        );
    }
    let state = s.state().clone();
    drop(s);
    let again = DiskStorage::open(dir).expect("a storage that opened opens again");
    assert_eq!(again.stats().torn_bytes_cut, 0, "second open cut more");
    assert_eq!(again.state(), &state, "second open recovered another state");
}

/// The opaque byte strings a recovered state holds (entry payloads, snapshot image).
fn payloads(state: &MemStorage) -> impl Iterator<Item = &[u8]> {
    let entries = state.entries().iter().filter_map(|e| match &e.payload {
        EntryPayload::Normal(d) if !d.is_empty() => Some(&d[..]),
        _ => None,
    });
    let snapshot = &state.snapshot().data;
    entries.chain((!snapshot.is_empty()).then_some(&snapshot[..]))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `admin_json`: the first byte picks the body (upstream PUT, `/api/batch`,
/// a breaker command, node add); the rest is the body. A body accepted as a command
/// survives a JSON round trip unchanged (it is what gets proposed and replicated).
pub fn admin_json(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let accepted = match mode % 4 {
        0 => ringway::admin::parse::command(&Method::PUT, "web".into(), "a".into(), body).ok(),
        1 => ringway::admin::parse::batch_command(body).ok(),
        2 => serde_json::from_slice::<Command>(body).ok(),
        _ => {
            let _ = ringway::admin::parse::node_change(&Method::POST, "n4", body);
            None
        }
    };
    if let Some(cmd) = accepted {
        let json = serde_json::to_vec(&cmd).expect("a command serializes");
        let back: Command = serde_json::from_slice(&json).expect("a serialized command parses");
        assert_eq!(back, cmd, "command changes through JSON");
    }
}
