//! Segment files: the header that names format and sequence, record framing with
//! checksums, and the scan that tells a torn tail from corruption.
//!
//! A segment is `header | record*`. The header is [`MAGIC`], the format version byte,
//! three zero bytes, the segment's sequence number (`u64` LE) and a CRC-32 of those 20
//! bytes. A record is `len u32 | body_crc u32 | header_crc u32 | body[len]`, where
//! `header_crc` covers the first 8 bytes: a damaged length is caught before it is used.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// First bytes of every segment: tells a ringway Raft log from anything else in the dir.
pub const MAGIC: [u8; 8] = *b"RWRAFTLG";
/// On-disk format version this build writes and reads; a newer one is refused on open.
pub const FORMAT_VERSION: u8 = 1;
/// Size of the segment header (magic, version, padding, sequence, CRC).
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Size of a record header (length, body CRC, header CRC).
pub const RECORD_HEADER_LEN: usize = 12;
/// Largest record body written or accepted: four times the 64 MiB snapshot-image bound
/// of the Raft wire codec, room for a snapshot plus a batch of entries, and far below
/// the `u32` length field.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

const SEGMENT_PREFIX: &str = "log-";
const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix of a segment being written; such files are leftovers of a crash and removed.
pub const TMP_SUFFIX: &str = ".tmp";

/// File name of segment `seq` (zero-padded so names sort like numbers).
pub fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}")
}

/// Sequence number of a segment file name, `None` for other files.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes the header of segment `seq`.
pub fn encode_header(seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8] = FORMAT_VERSION;
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks the header at the start of `bytes`; the error names what is wrong (offset 0).
pub fn check_header(bytes: &[u8], seq: u64) -> Result<(), String> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than its header",
            bytes.len()
        ));
    }
    if bytes[..8] != MAGIC {
        return Err("not a ringway raft log segment (bad magic)".to_string());
    }
    let version = bytes[8];
    if version > FORMAT_VERSION {
        return Err(format!(
            "format version {version} is newer than this build reads ({FORMAT_VERSION}): \
             the data dir was written by a newer ringway"
        ));
    }
    if version != FORMAT_VERSION {
        return Err(format!("unknown format version {version}"));
    }
    if crc32fast::hash(&bytes[..20]) != read_u32(bytes, 20) {
        return Err("segment header checksum mismatch".to_string());
    }
    let stored = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    if stored != seq {
        return Err(format!("header names segment {stored}, file name {seq}"));
    }
    Ok(())
}

/// Appends a framed record holding `body` to `out`.
pub fn frame_record(body: &[u8], out: &mut Vec<u8>) {
    let len = (body.len() as u32).to_le_bytes();
    let body_crc = crc32fast::hash(body).to_le_bytes();
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&len);
    head[4..].copy_from_slice(&body_crc);
    out.extend_from_slice(&head);
    out.extend_from_slice(&crc32fast::hash(&head).to_le_bytes());
    out.extend_from_slice(body);
}

/// What lies at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A record whose checksums match: its body spans `body_start..end`.
    Record { body_start: usize, end: usize },
    /// The end of the data.
    End,
    /// Not a valid record; `why` says why. `complete` when the record is whole (its
    /// header checks and its body lies within the file) but the body's checksum fails:
    /// damage, not a write cut short by a crash.
    Bad { why: String, complete: bool },
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Parses the record starting at `pos` (callers pass `pos <= bytes.len()`).
pub fn parse_record(bytes: &[u8], pos: usize) -> Parsed {
    let left = bytes.len() - pos;
    if left == 0 {
        return Parsed::End;
    }
    if left < RECORD_HEADER_LEN {
        return Parsed::Bad {
            why: format!("incomplete record header ({left} bytes)"),
            complete: false,
        };
    }
    if crc32fast::hash(&bytes[pos..pos + 8]) != read_u32(bytes, pos + 8) {
        return Parsed::Bad {
            why: "record header checksum mismatch".to_string(),
            complete: false,
        };
    }
    let len = read_u32(bytes, pos) as usize;
    if len > MAX_RECORD_BYTES {
        return Parsed::Bad {
            why: format!("record length {len} above the {MAX_RECORD_BYTES} bound"),
            complete: false,
        };
    }
    let body_start = pos + RECORD_HEADER_LEN;
    if len > bytes.len() - body_start {
        return Parsed::Bad {
            why: format!("record of {len} bytes runs past the end of the file"),
            complete: false,
        };
    }
    let end = body_start + len;
    if crc32fast::hash(&bytes[body_start..end]) != read_u32(bytes, pos + 4) {
        return Parsed::Bad {
            why: "record checksum mismatch".to_string(),
            complete: true,
        };
    }
    Parsed::Record { body_start, end }
}

/// Whether any valid record starts after `pos`: if so, the bad record at `pos` is not
/// a torn tail (a crash tears only the last write) but damage in the middle of the log.
pub fn valid_record_after(bytes: &[u8], pos: usize) -> bool {
    (pos + 1..bytes.len()).any(|q| matches!(parse_record(bytes, q), Parsed::Record { .. }))
}

/// Fsyncs the directory so that file creations, renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes segment `seq` holding `first_record` (already framed) atomically: a temporary
/// file is written and fsynced, then renamed into place. The caller fsyncs the dir.
/// Returns the segment opened for appending and its length.
pub fn create_segment(dir: &Path, seq: u64, first_record: &[u8]) -> std::io::Result<(File, u64)> {
    let path = dir.join(segment_name(seq));
    let tmp = tmp_path(&path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&encode_header(seq))?;
    f.write_all(first_record)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    let len = (SEGMENT_HEADER_LEN + first_record.len()) as u64;
    Ok((open_append(&path)?, len))
}

/// Opens an existing segment for appending.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// Removes what an unfinished [`create_segment`] of `path` left, if anything.
pub fn remove_tmp(path: &Path) {
    let _ = fs::remove_file(tmp_path(path));
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_others_are_ignored() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("log-42.seg"), None);
        assert_eq!(parse_segment_name("log-0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_name("snapshot"), None);
    }

    #[test]
    fn header_checks_magic_version_checksum_and_sequence() {
        let h = encode_header(7);
        assert_eq!(check_header(&h, 7), Ok(()));
        assert!(check_header(&h, 8).unwrap_err().contains("names segment 7"));
        assert!(check_header(&h[..10], 7).unwrap_err().contains("shorter"));
        let mut newer = h;
        newer[8] = FORMAT_VERSION + 1;
        assert!(check_header(&newer, 7).unwrap_err().contains("newer"));
    }

    #[test]
    fn records_parse_and_a_damaged_length_is_caught_by_the_header_checksum() {
        let mut buf = Vec::new();
        frame_record(b"hello", &mut buf);
        frame_record(b"world", &mut buf);
        let first = parse_record(&buf, 0);
        assert_eq!(
            first,
            Parsed::Record {
                body_start: RECORD_HEADER_LEN,
                end: RECORD_HEADER_LEN + 5
            }
        );
        assert_eq!(parse_record(&buf, buf.len()), Parsed::End);
        buf[0] ^= 0x40;
        assert!(matches!(
            parse_record(&buf, 0),
            Parsed::Bad {
                complete: false,
                ..
            }
        ));
        assert!(valid_record_after(&buf, 0));
    }
}
