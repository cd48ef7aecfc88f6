//! `DiskStorage`: the node's Raft state (term, vote, log, snapshot) in segment files
//! under the data dir, made durable with one fsync per `persist`.
//!
//! Every [`PersistBatch`] becomes one checksummed record appended to the live segment,
//! so a batch is atomic (a crash keeps it whole or not at all) and costs exactly one
//! `fdatasync`, whatever it holds. The live segment starts with a checkpoint record (a
//! batch that installs the whole state: hard state, snapshot, entries after it). When
//! the segment outgrows its bound, a new segment is written with a fresh checkpoint and
//! the old one is deleted, which is how compacted entries leave the disk.
//!
//! Recovery replays the newest segment onto an in-memory [`MemStorage`]. A bad record
//! that is the last thing in it is a torn write and is cut; any other damage refuses to
//! open with the file and byte offset.
//!
//! Why a hand-written log rather than an embedded store (sled, redb, RocksDB): the state
//! is small (control-plane entries plus one snapshot), the access pattern is append,
//! occasionally truncate-and-append, and read everything once at start, and the Raft
//! contract needs exactly "this batch, atomically, one fsync". A record per batch gives
//! that in a few hundred lines whose recovery rules are spelled out and tested byte by
//! byte; an embedded store would add a large dependency, its own file format and
//! recovery, and write amplification, for features (random reads, ordered keys,
//! transactions across trees) the Raft log does not use.

mod codec;
mod lock;
mod segment;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::raft::{
    ConfState, Index, InitialState, MemStorage, PersistBatch, Storage, StorageError,
};

use self::codec::{decode_batch, encode_batch, BatchRef};
pub use self::lock::{DirLock, LOCK_FILE};
pub use self::segment::FORMAT_VERSION;
use self::segment::{
    create_segment, open_append, parse_record, parse_segment_name, remove_tmp, segment_name,
    sync_dir, valid_record_after, Parsed, MAX_RECORD_BYTES, SEGMENT_HEADER_LEN, TMP_SUFFIX,
};

/// Size at which the live segment is replaced by a new one starting with a checkpoint.
/// Large enough that the rewrite is rare for a control-plane log, small enough that
/// recovery reads little and compacted entries do not linger on disk.
pub const SEGMENT_ROLL_BYTES: u64 = 64 * 1024 * 1024;
/// The segment also waits until it is this many times the checkpoint's size, so the
/// rewrite costs at most half the bytes appended even when the state itself is large.
pub const ROLL_STATE_FACTOR: u64 = 2;
/// Tunables of a [`DiskStorage`]; the defaults are the named constants above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskOptions {
    /// See [`SEGMENT_ROLL_BYTES`].
    pub segment_roll_bytes: u64,
}

impl Default for DiskOptions {
    fn default() -> DiskOptions {
        DiskOptions {
            segment_roll_bytes: SEGMENT_ROLL_BYTES,
        }
    }
}

/// Counters of the work done on disk since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// `fsync`/`fdatasync` calls on segment files (one per non-empty `persist`).
    pub file_syncs: u64,
    /// `fsync` calls on the directory (segment created, renamed or removed).
    pub dir_syncs: u64,
    /// Records appended.
    pub records: u64,
    /// Bytes appended to segments, headers and checkpoints included.
    pub bytes_written: u64,
    /// Segments replaced by a new one with a checkpoint.
    pub rolls: u64,
    /// Bytes of torn tail cut off at open.
    pub torn_bytes_cut: u64,
}

/// Told how long each append-and-`fdatasync` of a batch took (for metrics).
pub type SyncObserver = Box<dyn Fn(std::time::Duration) + Send>;

/// Durable Raft storage in a directory; see the module documentation.
#[derive(Debug)]
pub struct DiskStorage {
    dir: PathBuf,
    opts: DiskOptions,
    seq: u64,
    file: File,
    seg_len: u64,
    checkpoint_len: u64,
    state: MemStorage,
    stats: DiskStats,
    failed: Option<StorageError>,
    observer: Observer,
}

/// An optional [`SyncObserver`], so that `DiskStorage` stays `Debug`.
#[derive(Default)]
struct Observer(Option<SyncObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(set)"
        } else {
            "Observer(none)"
        })
    }
}

impl DiskStorage {
    /// Opens (creating if needed) the storage in `dir` with default options.
    pub fn open(dir: &Path) -> Result<DiskStorage, StorageError> {
        DiskStorage::open_with_options(dir, DiskOptions::default())
    }

    /// Opens `dir`; a founding member whose dir holds no state is bootstrapped with
    /// `conf` (as [`MemStorage::new_with_conf`]). A dir with state is opened as is.
    pub fn open_with_conf(dir: &Path, conf: ConfState) -> Result<DiskStorage, StorageError> {
        let founder = MemStorage::new_with_conf(conf.clone());
        let mut s = DiskStorage::open_or_create(dir, DiskOptions::default(), founder)?;
        if s.is_empty() {
            s.bootstrap(conf)?;
        }
        Ok(s)
    }

    /// Opens (creating if needed) the storage in `dir`, recovering from a crash.
    pub fn open_with_options(dir: &Path, opts: DiskOptions) -> Result<DiskStorage, StorageError> {
        DiskStorage::open_or_create(dir, opts, MemStorage::new())
    }

    /// Opens the storage in `dir`; a dir without segments starts from `fresh`.
    fn open_or_create(
        dir: &Path,
        opts: DiskOptions,
        fresh: MemStorage,
    ) -> Result<DiskStorage, StorageError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, "create directory", e))?;
        let scan = list_dir(dir)?;
        let storage = match scan.segments.last() {
            Some(&seq) => recover(dir, seq, opts)?,
            None => create_fresh(dir, 1, fresh, opts)?,
        };
        remove_stale(dir, &scan, storage.seq)?;
        Ok(storage)
    }

    /// Writes the founding configuration into an empty storage (see
    /// [`MemStorage::new_with_conf`]). Refuses a storage that already holds state.
    pub fn bootstrap(&mut self, conf: ConfState) -> Result<(), StorageError> {
        if !self.is_empty() {
            return Err(StorageError::NotEmpty {
                dir: self.dir.clone(),
            });
        }
        let target = MemStorage::new_with_conf(conf);
        let init = target.initial_state()?;
        self.persist(&PersistBatch {
            hard_state: Some(init.hard_state),
            snapshot: Some(init.snapshot),
            ..Default::default()
        })
    }

    /// True while nothing was ever persisted: a fresh data dir (no term, vote,
    /// configuration, snapshot or entry).
    pub fn is_empty(&self) -> bool {
        self.state == MemStorage::new()
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reports the time of every batch's append and `fdatasync` to `observer`.
    pub fn observe_syncs(&mut self, observer: SyncObserver) {
        self.observer = Observer(Some(observer));
    }

    /// Counters of disk work since open.
    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// The stored state, as the in-memory mirror of the disk.
    pub fn state(&self) -> &MemStorage {
        &self.state
    }

    fn live_path(&self) -> PathBuf {
        self.dir.join(segment_name(self.seq))
    }

    /// Appends one framed record and fsyncs it.
    ///
    /// A write refused for want of space (`ENOSPC`, `EDQUOT`) is undone: the segment is
    /// cut back to its last whole record, nothing of the batch is durable, and the same
    /// batch may be written again once there is room ([`is_no_space`]). Any other
    /// failure, and any failed `fdatasync`, makes the storage refuse all further
    /// writes: after a failed fsync the kernel may have dropped the dirty pages while
    /// marking them clean, so what the file holds can no longer be known from here.
    fn append_durable(&mut self, record: &[u8]) -> Result<(), StorageError> {
        let path = self.live_path();
        let started = std::time::Instant::now();
        if let Err(e) = self.file.write_all(record) {
            let err = io_err(&path, &format!("append at offset {}", self.seg_len), e);
            if is_no_space(&err) {
                match self.file.set_len(self.seg_len) {
                    Ok(()) => return Err(err),
                    Err(undo) => {
                        let undo =
                            io_err(&path, &format!("cut back to offset {}", self.seg_len), undo);
                        self.failed = Some(undo.clone());
                        return Err(undo);
                    }
                }
            }
            self.failed = Some(err.clone());
            return Err(err);
        }
        let synced = self.file.sync_data();
        if let Some(observe) = &self.observer.0 {
            observe(started.elapsed());
        }
        if let Err(e) = synced {
            let err = io_err(
                &path,
                &format!("fdatasync after offset {}", self.seg_len),
                e,
            );
            self.failed = Some(err.clone());
            return Err(err);
        }
        self.seg_len += record.len() as u64;
        self.stats.file_syncs += 1;
        self.stats.records += 1;
        self.stats.bytes_written += record.len() as u64;
        Ok(())
    }

    /// The error that made this storage refuse all writes, if one did.
    pub fn failed(&self) -> Option<&StorageError> {
        self.failed.as_ref()
    }

    fn roll_limit(&self) -> u64 {
        let by_state = self.checkpoint_len.saturating_mul(ROLL_STATE_FACTOR);
        self.opts.segment_roll_bytes.max(by_state)
    }

    /// Replaces the live segment by a new one starting with a checkpoint of the state.
    fn roll(&mut self) -> Result<(), StorageError> {
        let old = self.live_path();
        let next = self.seq + 1;
        let record = checkpoint_record(&self.state)?;
        let path = self.dir.join(segment_name(next));
        let (file, len) = create_segment(&self.dir, next, &record).map_err(|e| {
            // Nothing was renamed into place: the live segment is untouched.
            remove_tmp(&path);
            io_err(&path, "create segment", e)
        })?;
        self.sync_dir()?;
        self.file = file;
        self.seq = next;
        self.seg_len = len;
        self.checkpoint_len = record.len() as u64;
        self.stats.file_syncs += 1;
        self.stats.rolls += 1;
        self.stats.bytes_written += len;
        fs::remove_file(&old).map_err(|e| io_err(&old, "remove old segment", e))?;
        self.sync_dir()
    }

    /// Fsyncs the directory; a failure, like any failed fsync, ends all writes.
    fn sync_dir(&mut self) -> Result<(), StorageError> {
        if let Err(e) = sync_dir(&self.dir) {
            let err = io_err(&self.dir, "fsync directory", e);
            self.failed = Some(err.clone());
            return Err(err);
        }
        self.stats.dir_syncs += 1;
        Ok(())
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.state.initial_state()
    }

    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        if let Some(earlier) = &self.failed {
            return Err(StorageError::Failed {
                earlier: Box::new(earlier.clone()),
            });
        }
        if batch.is_empty() {
            return Ok(());
        }
        check_batch(&self.state, batch).map_err(|what| StorageError::Refused {
            file: self.live_path(),
            what,
        })?;
        let record = frame(&BatchRef::from(batch), &self.live_path())?;
        self.append_durable(&record)?;
        self.state.persist(batch)?;
        if self.seg_len >= self.roll_limit() {
            // The batch is durable whatever happens here. A new segment that finds no
            // room is given up (the live one keeps growing) and tried again after the
            // next batch.
            if let Err(e) = self.roll() {
                if !is_no_space(&e) || self.failed.is_some() {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
                tracing::warn!(error = %e, "cannot start a new log segment; the current one grows until there is room");
            }
        }
        Ok(())
    }
}

/// Checks what [`MemStorage::persist`] would refuse, before anything is written, so a
/// bad batch never reaches the disk (where replay would refuse it on every restart).
/// Entries must also be contiguous, and the commit index must not pass the last entry
/// (recovery refuses such a state as "committed entries missing").
fn check_batch(state: &MemStorage, b: &PersistBatch) -> Result<(), String> {
    let (base, mut last) = match &b.snapshot {
        Some(s) => (s.meta.index, s.meta.index),
        None => (state.snapshot().meta.index, state.last_index()),
    };
    if let Some(first) = b.entries.first() {
        check_entries(b, base, last)?;
        last = first.index.saturating_add(b.entries.len() as u64 - 1);
    }
    if let Some(c) = &b.compacted {
        if c.meta.index > base {
            last = last.max(c.meta.index);
        }
    }
    let commit = b.hard_state.unwrap_or(state.hard_state()).commit;
    if commit > last {
        return Err(format!(
            "commit index {commit} beyond the last entry {last}"
        ));
    }
    Ok(())
}

fn check_entries(b: &PersistBatch, base: Index, last: Index) -> Result<(), String> {
    let first = b.entries[0].index;
    if first <= base || first > last.saturating_add(1) {
        return Err(format!(
            "entries start at {first} outside ({base}, {}]",
            last.saturating_add(1)
        ));
    }
    for w in b.entries.windows(2) {
        if w[1].index != w[0].index.saturating_add(1) {
            return Err(format!("entry {} follows entry {}", w[1].index, w[0].index));
        }
    }
    Ok(())
}

/// Encodes and frames one batch, refusing one above [`MAX_RECORD_BYTES`].
fn frame(batch: &BatchRef<'_>, path: &Path) -> Result<Vec<u8>, StorageError> {
    let mut body = Vec::new();
    encode_batch(batch, &mut body);
    if body.len() > MAX_RECORD_BYTES {
        return Err(StorageError::TooLarge {
            file: path.to_path_buf(),
            bytes: body.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    segment::frame_record(&body, &mut out);
    Ok(out)
}

/// The record that installs the whole of `state`: the first one of every segment.
fn checkpoint_record(state: &MemStorage) -> Result<Vec<u8>, StorageError> {
    let hs = state.hard_state();
    let batch = BatchRef {
        hard_state: Some(&hs),
        snapshot: Some(state.snapshot()),
        entries: state.entries(),
        compacted: None,
    };
    frame(&batch, Path::new("checkpoint"))
}

/// Segment sequence numbers and leftover temporary files found in the dir.
struct DirScan {
    segments: Vec<u64>,
    tmp_files: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<DirScan, StorageError> {
    let rd = fs::read_dir(dir).map_err(|e| io_err(dir, "list directory", e))?;
    let mut scan = DirScan {
        segments: Vec::new(),
        tmp_files: Vec::new(),
    };
    for ent in rd {
        let ent = ent.map_err(|e| io_err(dir, "list directory", e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_segment_name(name) {
            scan.segments.push(seq);
        } else if name
            .strip_suffix(TMP_SUFFIX)
            .and_then(parse_segment_name)
            .is_some()
        {
            scan.tmp_files.push(ent.path());
        }
    }
    scan.segments.sort_unstable();
    Ok(scan)
}

/// Removes segments older than the live one (leftovers of a roll interrupted before
/// its cleanup: the live segment's checkpoint supersedes them) and temporary files.
fn remove_stale(dir: &Path, scan: &DirScan, live: u64) -> Result<(), StorageError> {
    let old = scan.segments.iter().filter(|&&s| s < live);
    let paths: Vec<PathBuf> = old.map(|&s| dir.join(segment_name(s))).collect();
    if paths.is_empty() && scan.tmp_files.is_empty() {
        return Ok(());
    }
    for p in paths.iter().chain(&scan.tmp_files) {
        fs::remove_file(p).map_err(|e| io_err(p, "remove stale file", e))?;
    }
    sync_dir(dir).map_err(|e| io_err(dir, "fsync directory", e))
}

fn create_fresh(
    dir: &Path,
    seq: u64,
    state: MemStorage,
    opts: DiskOptions,
) -> Result<DiskStorage, StorageError> {
    let record = checkpoint_record(&state)?;
    let path = dir.join(segment_name(seq));
    let (file, len) =
        create_segment(dir, seq, &record).map_err(|e| io_err(&path, "create segment", e))?;
    sync_dir(dir).map_err(|e| io_err(dir, "fsync directory", e))?;
    let stats = DiskStats {
        file_syncs: 1,
        dir_syncs: 1,
        bytes_written: len,
        ..DiskStats::default()
    };
    Ok(DiskStorage {
        dir: dir.to_path_buf(),
        opts,
        seq,
        file,
        seg_len: len,
        checkpoint_len: record.len() as u64,
        state,
        stats,
        failed: None,
        observer: Observer::default(),
    })
}

/// What replaying a segment found.
struct Replay {
    state: MemStorage,
    /// Offset where valid data ends (a torn tail starts here, if any).
    valid_len: usize,
    checkpoint_len: u64,
}

fn recover(dir: &Path, seq: u64, opts: DiskOptions) -> Result<DiskStorage, StorageError> {
    let path = dir.join(segment_name(seq));
    let bytes = fs::read(&path).map_err(|e| io_err(&path, "read", e))?;
    let replay = replay(&path, seq, &bytes)?;
    check_recovered(&path, &replay.state)?;
    let torn = (bytes.len() - replay.valid_len) as u64;
    let mut stats = DiskStats::default();
    if torn > 0 {
        tracing::warn!(
            file = %path.display(),
            offset = replay.valid_len,
            bytes_cut = torn,
            "raft log ended in a torn write (a crash cut the last batch short, before it \
             was acknowledged); cutting it off"
        );
        cut_torn_tail(&path, replay.valid_len as u64)?;
        stats.torn_bytes_cut = torn;
        stats.file_syncs += 1;
    }
    let file = open_append(&path).map_err(|e| io_err(&path, "open for append", e))?;
    Ok(DiskStorage {
        dir: dir.to_path_buf(),
        opts,
        seq,
        file,
        seg_len: replay.valid_len as u64,
        checkpoint_len: replay.checkpoint_len,
        state: replay.state,
        stats,
        failed: None,
        observer: Observer::default(),
    })
}

/// Replays the records of segment `seq` (`bytes`, read from `path`).
fn replay(path: &Path, seq: u64, bytes: &[u8]) -> Result<Replay, StorageError> {
    segment::check_header(bytes, seq).map_err(|why| corrupt(path, 0, &why))?;
    let mut state = MemStorage::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut checkpoint_len = 0;
    loop {
        let (body_start, end) = match parse_record(bytes, pos) {
            Parsed::Record { body_start, end } => (body_start, end),
            Parsed::End if pos > SEGMENT_HEADER_LEN => break,
            Parsed::End => return Err(corrupt(path, pos, "segment has no checkpoint record")),
            Parsed::Bad { why, complete } => {
                torn_or_corrupt(path, bytes, pos, &why, complete)?;
                break;
            }
        };
        let batch =
            decode_batch(&bytes[body_start..end]).map_err(|why| corrupt(path, pos, &why))?;
        if pos == SEGMENT_HEADER_LEN {
            check_checkpoint(&batch).map_err(|why| corrupt(path, pos, why))?;
            checkpoint_len = (end - pos) as u64;
        }
        check_batch(&state, &batch).map_err(|why| corrupt(path, pos, &why))?;
        state
            .persist(&batch)
            .map_err(|e| corrupt(path, pos, &e.to_string()))?;
        pos = end;
    }
    Ok(Replay {
        state,
        valid_len: pos,
        checkpoint_len,
    })
}

/// A bad record at `pos` is a torn write only if it is not the checkpoint (which was
/// fsynced before the segment got its name), it is incomplete (a whole record whose
/// checksum fails is damage: a crash cuts a write short, it does not change its bytes),
/// and no valid record follows it.
fn torn_or_corrupt(
    path: &Path,
    bytes: &[u8],
    pos: usize,
    why: &str,
    complete: bool,
) -> Result<(), StorageError> {
    if pos == SEGMENT_HEADER_LEN {
        return Err(corrupt(path, pos, &format!("checkpoint record: {why}")));
    }
    if complete {
        let what = format!("{why} in the last record, which is complete: damage, not a torn write");
        return Err(corrupt(path, pos, &what));
    }
    if valid_record_after(bytes, pos) {
        return Err(corrupt(
            path,
            pos,
            &format!("{why}, followed by valid records"),
        ));
    }
    Ok(())
}

fn check_checkpoint(b: &PersistBatch) -> Result<(), &'static str> {
    if b.hard_state.is_none() || b.snapshot.is_none() || b.compacted.is_some() {
        return Err("first record is not a checkpoint");
    }
    Ok(())
}

/// Invariants a recovered state must hold: committed entries are all there.
fn check_recovered(path: &Path, state: &MemStorage) -> Result<(), StorageError> {
    let commit = state.hard_state().commit;
    if commit > state.last_index() {
        let what = format!(
            "commit index {commit} is beyond the last stored entry {}: committed entries \
             are missing",
            state.last_index()
        );
        return Err(corrupt(path, 0, &what));
    }
    Ok(())
}

fn cut_torn_tail(path: &Path, len: u64) -> Result<(), StorageError> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, "open to cut torn tail", e))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(path, &format!("cut torn tail at offset {len}"), e))
}

fn corrupt(path: &Path, offset: usize, why: &str) -> StorageError {
    StorageError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        what: why.to_string(),
    }
}

/// Whether `e` is a write the file system refused for want of space or quota: undone,
/// and worth trying again once there is room.
pub fn is_no_space(e: &StorageError) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    match e {
        StorageError::Io { source, .. } => {
            source.kind() == std::io::ErrorKind::StorageFull
                || matches!(source.raw_os_error(), Some(ENOSPC | EDQUOT))
        }
        _ => false,
    }
}

fn io_err(path: &Path, op: &str, e: std::io::Error) -> StorageError {
    StorageError::Io {
        file: path.to_path_buf(),
        op: op.to_string(),
        source: std::sync::Arc::new(e),
    }
}
