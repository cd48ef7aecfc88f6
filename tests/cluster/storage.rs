//! On-disk Raft storage: round trips against `MemStorage`, crash recovery (torn tails
//! cut, damage refused with file and offset), sync accounting, and garbage resistance.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ringway::cluster::storage::{DiskOptions, DiskStorage, FORMAT_VERSION};
use ringway::raft::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryPayload, HardState, InitialState,
    MemStorage, PersistBatch, Snapshot, SnapshotMeta, Storage, StorageError,
};

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(format!("cmd-{index}-{term}").into_bytes()),
    }
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| ent(i, term)).collect()
}

fn snap(index: u64, term: u64, voters: &[u64], data: &[u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf: ConfState::with_voters(voters),
        },
        data: data.to_vec(),
    }
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

fn init_of(s: &impl Storage) -> InitialState {
    s.initial_state().expect("initial state")
}

/// The only segment in `dir` (tests that look at bytes keep one segment).
fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "expected one segment in {}", dir.display());
    segs.pop().unwrap()
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// A storage driven through a typical life: votes, appends, an overwrite, compaction.
fn typical_batches() -> Vec<PersistBatch> {
    vec![
        PersistBatch {
            hard_state: Some(hs(2, 1, 1)),
            entries: entries(2, 5, 2),
            ..Default::default()
        },
        PersistBatch {
            hard_state: Some(hs(3, 2, 3)),
            entries: entries(4, 7, 3),
            ..Default::default()
        },
        PersistBatch {
            compacted: Some(snap(3, 2, &[1, 2, 3], b"image@3")),
            hard_state: Some(hs(3, 2, 6)),
            ..Default::default()
        },
    ]
}

fn drive(s: &mut impl Storage, batches: &[PersistBatch]) {
    for b in batches {
        s.persist(b).expect("persist");
    }
}

#[test]
fn round_trip_matches_mem_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = ConfState::with_voters(&[1, 2, 3]);
    let mut disk = DiskStorage::open_with_conf(tmp.path(), conf.clone()).unwrap();
    let mut mem = MemStorage::new_with_conf(conf.clone());
    let mut batches = typical_batches();
    batches.push(PersistBatch {
        snapshot: Some(snap(20, 4, &[1, 2], b"installed")),
        entries: entries(21, 22, 4),
        hard_state: Some(hs(4, 0, 21)),
        ..Default::default()
    });
    drive(&mut disk, &batches);
    drive(&mut mem, &batches);
    assert_eq!(init_of(&disk), init_of(&mem));
    drop(disk);
    let reopened = DiskStorage::open_with_conf(tmp.path(), conf).unwrap();
    assert_eq!(init_of(&reopened), init_of(&mem));
    assert!(!reopened.is_empty());
}

#[test]
fn fresh_dir_is_empty_and_bootstrap_mirrors_mem_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/raft");
    let mut disk = DiskStorage::open(&dir).unwrap();
    assert!(disk.is_empty());
    assert_eq!(init_of(&disk), init_of(&MemStorage::new()));
    let conf = ConfState::with_voters(&[1, 2, 3]);
    disk.bootstrap(conf.clone()).unwrap();
    assert!(!disk.is_empty());
    assert!(
        matches!(
            disk.bootstrap(conf.clone()),
            Err(StorageError::NotEmpty { .. })
        ),
        "second bootstrap refused"
    );
    drop(disk);
    let disk = DiskStorage::open(&dir).unwrap();
    assert_eq!(init_of(&disk), init_of(&MemStorage::new_with_conf(conf)));
}

#[test]
fn batch_of_100_entries_costs_one_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = DiskStorage::open_with_conf(tmp.path(), ConfState::with_voters(&[1])).unwrap();
    let before = disk.stats();
    let batch = PersistBatch {
        hard_state: Some(hs(2, 1, 1)),
        entries: entries(2, 101, 2),
        ..Default::default()
    };
    disk.persist(&batch).unwrap();
    let after = disk.stats();
    assert_eq!(after.file_syncs - before.file_syncs, 1);
    assert_eq!(after.dir_syncs - before.dir_syncs, 0);
    assert_eq!(after.records - before.records, 1);
    disk.persist(&PersistBatch::default()).unwrap();
    assert_eq!(
        disk.stats().file_syncs,
        after.file_syncs,
        "empty batch: no sync"
    );
}

#[test]
fn invalid_batches_are_refused_before_reaching_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = DiskStorage::open_with_conf(tmp.path(), ConfState::with_voters(&[1])).unwrap();
    let len = file_len(&segment(tmp.path()));
    let gap = PersistBatch {
        entries: vec![ent(5, 1)],
        ..Default::default()
    };
    assert!(matches!(
        disk.persist(&gap),
        Err(StorageError::Refused { .. })
    ));
    let commit_past_log = PersistBatch {
        hard_state: Some(hs(1, 0, 9)),
        ..Default::default()
    };
    assert!(matches!(
        disk.persist(&commit_past_log),
        Err(StorageError::Refused { .. })
    ));
    assert_eq!(file_len(&segment(tmp.path())), len);
    drop(disk);
    DiskStorage::open(tmp.path()).unwrap();
}

#[test]
fn conf_change_and_empty_payloads_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = DiskStorage::open_with_conf(tmp.path(), ConfState::with_voters(&[1])).unwrap();
    let kinds = [
        ConfChangeKind::AddLearner,
        ConfChangeKind::PromoteLearner,
        ConfChangeKind::RemoveNode,
    ];
    let mut es = vec![Entry {
        term: 2,
        index: 2,
        payload: EntryPayload::Empty,
    }];
    for (i, kind) in kinds.into_iter().enumerate() {
        es.push(Entry {
            term: 2,
            index: 3 + i as u64,
            payload: EntryPayload::ConfChange(ConfChange { kind, node: 7 }),
        });
    }
    let batch = PersistBatch {
        entries: es.clone(),
        ..Default::default()
    };
    disk.persist(&batch).unwrap();
    drop(disk);
    assert_eq!(init_of(&DiskStorage::open(tmp.path()).unwrap()).entries, es);
}

/// Persists `typical_batches` and returns the segment length after each one.
fn build_three_records(dir: &Path) -> Vec<u64> {
    let mut disk = DiskStorage::open_with_conf(dir, ConfState::with_voters(&[1, 2, 3])).unwrap();
    let seg = segment(dir);
    let mut lens = vec![file_len(&seg)];
    for b in typical_batches() {
        disk.persist(&b).unwrap();
        lens.push(file_len(&seg));
    }
    lens
}

fn mem_after(n: usize) -> InitialState {
    let mut mem = MemStorage::new_with_conf(ConfState::with_voters(&[1, 2, 3]));
    drive(&mut mem, &typical_batches()[..n]);
    init_of(&mem)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn torn_last_record_is_cut_at_every_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let lens = build_three_records(&src);
    let (start, end) = (lens[2], lens[3]);
    let expect = mem_after(2);
    for cut in start..end {
        let dir = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&src, &dir);
        let seg = segment(&dir);
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let mut disk = DiskStorage::open(&dir).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(init_of(&disk), expect, "cut at {cut}");
        assert_eq!(disk.stats().torn_bytes_cut, cut - start);
        assert_eq!(file_len(&seg), start, "tail cut on disk");
        disk.persist(&typical_batches()[2]).unwrap();
        drop(disk);
        assert_eq!(init_of(&DiskStorage::open(&dir).unwrap()), mem_after(3));
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn complete_last_record_with_bad_checksum_is_refused_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = build_three_records(tmp.path());
    let seg = segment(tmp.path());
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = fs::read(&seg).unwrap();
    let last_byte = bytes.len() - 1;
    bytes[last_byte] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    assert_refused(tmp.path(), &name, Some(lens[2]));
    assert_eq!(fs::read(&seg).unwrap(), bytes, "nothing cut");
}

/// A `tracing` writer that keeps what was logged, to check what an operator sees.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_torn_tail_cut_is_logged_with_file_and_bytes_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = build_three_records(tmp.path());
    let seg = segment(tmp.path());
    let cut = lens[2] + 5;
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(cut).unwrap();
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let disk = tracing::subscriber::with_default(subscriber, || DiskStorage::open(tmp.path()))
        .expect("a torn tail is cut, not refused");
    assert_eq!(disk.stats().torn_bytes_cut, 5);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("torn write"))
        .unwrap_or_else(|| panic!("no torn-write line in {text:?}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&seg.display().to_string()), "{line}");
    assert!(line.contains("bytes_cut=5"), "{line}");
    assert!(line.contains(&format!("offset={}", lens[2])), "{line}");
}

fn assert_refused(dir: &Path, file: &str, offset: Option<u64>) {
    let err = DiskStorage::open(dir).expect_err("damage must be refused");
    let StorageError::Corrupt {
        file: ref path,
        offset: at,
        ..
    } = err
    else {
        panic!("{err:?} is not Corrupt");
    };
    assert!(path.ends_with(file), "{err:?} names {file}");
    if let Some(off) = offset {
        assert_eq!(at, off, "{err}");
        assert!(err.to_string().contains(&format!("offset {off}:")), "{err}");
    }
}

#[test]
fn any_flipped_byte_in_a_middle_record_is_refused_with_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let lens = build_three_records(&src);
    let name = segment(&src)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let clean = fs::read(segment(&src)).unwrap();
    let dir = tmp.path().join("damaged");
    copy_dir(&src, &dir);
    for at in lens[1]..lens[2] {
        let mut bytes = clean.clone();
        bytes[at as usize] ^= 0x5a;
        fs::write(dir.join(&name), &bytes).unwrap();
        assert_refused(&dir, &name, Some(lens[1]));
        assert_eq!(fs::read(dir.join(&name)).unwrap(), bytes, "nothing cut");
    }
}

#[test]
fn damaged_checkpoint_holding_snapshot_and_hard_state_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let lens = build_three_records(&src);
    let name = segment(&src)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let clean = fs::read(segment(&src)).unwrap();
    // Checkpoint record: from the end of the 24-byte header to the first batch.
    for at in 24..lens[0] {
        let dir = tmp.path().join("damaged");
        copy_dir(&src, &dir);
        let mut bytes = clean.clone();
        bytes[at as usize] ^= 0x01;
        fs::write(dir.join(&name), &bytes).unwrap();
        assert_refused(&dir, &name, Some(24));
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn damaged_segment_header_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    build_three_records(tmp.path());
    let seg = segment(tmp.path());
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let clean = fs::read(&seg).unwrap();
    for at in 0..24 {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x10;
        fs::write(&seg, &bytes).unwrap();
        assert_refused(tmp.path(), &name, Some(0));
    }
}

#[test]
fn newer_format_version_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    build_three_records(tmp.path());
    let seg = segment(tmp.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8] = FORMAT_VERSION + 1;
    fs::write(&seg, &bytes).unwrap();
    let err = DiskStorage::open(tmp.path()).unwrap_err();
    let StorageError::Corrupt {
        offset: 0, what, ..
    } = &err
    else {
        panic!("{err:?} is not Corrupt at offset 0");
    };
    assert!(what.contains("newer"), "{err}");
    assert!(what.contains(&format!("format version {}", FORMAT_VERSION + 1)));
}

#[test]
fn rolling_keeps_one_segment_and_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = DiskOptions {
        segment_roll_bytes: 2048,
    };
    let mut disk = DiskStorage::open_with_options(tmp.path(), opts).unwrap();
    disk.bootstrap(ConfState::with_voters(&[1])).unwrap();
    let mut mem = MemStorage::new_with_conf(ConfState::with_voters(&[1]));
    for i in 0..200u64 {
        let mut b = PersistBatch {
            entries: entries(2 + i, 2 + i, 2),
            hard_state: Some(hs(2, 1, 1 + i)),
            ..Default::default()
        };
        if i % 50 == 49 {
            b.compacted = Some(snap(i - 10, 2, &[1], b"img"));
        }
        disk.persist(&b).unwrap();
        mem.persist(&b).unwrap();
    }
    assert!(disk.stats().rolls > 3, "{:?}", disk.stats());
    segment(tmp.path());
    drop(disk);
    assert_eq!(
        init_of(&DiskStorage::open_with_options(tmp.path(), opts).unwrap()),
        init_of(&mem)
    );
}

#[test]
fn leftovers_of_an_interrupted_roll_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    build_three_records(tmp.path());
    let seg = segment(tmp.path());
    let old = tmp.path().join("log-00000000000000000000.seg");
    fs::write(&old, b"stale segment superseded by the live one").unwrap();
    let tmp_file = tmp.path().join("log-00000000000000000009.seg.tmp");
    fs::write(&tmp_file, b"half-written").unwrap();
    let other = tmp.path().join("README");
    fs::write(&other, b"not ours").unwrap();
    let disk = DiskStorage::open(tmp.path()).unwrap();
    assert_eq!(init_of(&disk), mem_after(3));
    assert!(!old.exists() && !tmp_file.exists() && other.exists() && seg.exists());
}

/// Random valid batches, derived from the current state like the Raft core would.
fn random_batch(rng: &mut fastrand::Rng, mem: &MemStorage) -> PersistBatch {
    let mut b = PersistBatch::default();
    let (mut base, mut last) = (mem.snapshot().meta.index, mem.last_index());
    let mut term = mem.hard_state().term.max(mem.snapshot().meta.term);
    if rng.u8(..10) == 0 {
        term += 1;
        let s = snap(last + rng.u64(0..5), term, &[1, 2, 3], &[rng.u8(..)]);
        (base, last) = (s.meta.index, s.meta.index);
        b.snapshot = Some(s);
    }
    if rng.bool() {
        // Committed entries are never overwritten.
        let first = rng.u64(base.max(mem.hard_state().commit) + 1..=last + 1);
        if first <= last {
            term += 1; // an overwrite comes from a newer leader
        }
        let n = rng.u64(1..6);
        b.entries = entries(first, first + n - 1, term);
        last = first + n - 1;
    }
    if last > base && rng.u8(..6) == 0 {
        let at = rng.u64(base + 1..=last);
        b.compacted = Some(snap(at, 1, &[1, 2], &vec![7; rng.usize(0..64)]));
    }
    if rng.bool() || b.snapshot.is_some() {
        let commit_floor = b.compacted.as_ref().map_or(base, |c| c.meta.index);
        let commit = rng
            .u64(mem.hard_state().commit.min(last)..=last)
            .max(commit_floor.min(last));
        b.hard_state = Some(hs(term, rng.u64(0..4), commit));
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_batches_match_mem_storage_after_reopen(
        seed in any::<u64>(),
        steps in 1usize..60,
        roll in 256u64..4096,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let opts = DiskOptions { segment_roll_bytes: roll };
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut disk = DiskStorage::open_with_options(tmp.path(), opts).unwrap();
        let mut mem = MemStorage::new();
        if rng.bool() {
            let conf = ConfState::with_voters(&[1, 2, 3]);
            disk.bootstrap(conf.clone()).unwrap();
            mem = MemStorage::new_with_conf(conf);
        }
        for _ in 0..steps {
            let b = random_batch(&mut rng, &mem);
            mem.persist(&b).unwrap();
            disk.persist(&b).unwrap();
            if rng.u8(..8) == 0 {
                drop(disk);
                disk = DiskStorage::open_with_options(tmp.path(), opts).unwrap();
            }
            prop_assert_eq!(init_of(&disk), init_of(&mem));
        }
        drop(disk);
        let reopened = DiskStorage::open_with_options(tmp.path(), opts).unwrap();
        prop_assert_eq!(init_of(&reopened), init_of(&mem));
    }

    #[test]
    fn garbage_segment_never_panics(
        garbage in proptest::collection::vec(any::<u8>(), 0..512),
        keep_header in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        build_three_records(tmp.path());
        let seg = segment(tmp.path());
        let mut bytes = fs::read(&seg).unwrap();
        bytes.truncate(if keep_header { 24 } else { 0 });
        bytes.extend_from_slice(&garbage);
        fs::write(&seg, &bytes).unwrap();
        if let Ok(mut disk) = DiskStorage::open(tmp.path()) {
            let _ = disk.initial_state();
            let _ = disk.persist(&PersistBatch { hard_state: Some(hs(9, 0, 0)), ..Default::default() });
        }
    }

    #[test]
    fn overwritten_bytes_never_panic(
        patches in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        extra in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        build_three_records(tmp.path());
        let seg = segment(tmp.path());
        let mut bytes = fs::read(&seg).unwrap();
        for (at, v) in patches {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        bytes.extend_from_slice(&extra);
        fs::write(&seg, &bytes).unwrap();
        if let Ok(disk) = DiskStorage::open(tmp.path()) {
            let _ = disk.initial_state();
        }
    }
}

/// Drives one Ready through `disk`: persist, (no peers to send to), advance.
fn drain(node: &mut ringway::raft::Node, disk: &mut DiskStorage) {
    while let Some(ready) = node.ready() {
        let mut done = ready.persist(disk).expect("persist ready");
        assert!(
            done.take_messages().is_empty(),
            "single voter sends nothing"
        );
        node.advance(done).expect("advance");
    }
}

#[test]
fn a_node_restarts_from_disk_with_its_log_snapshot_and_term() {
    use ringway::raft::{Config, Node, Role};
    let tmp = tempfile::tempdir().unwrap();
    let opts = DiskOptions {
        segment_roll_bytes: 4096,
    };
    let conf = ConfState::with_voters(&[1]);
    let mut disk = DiskStorage::open_with_options(tmp.path(), opts).unwrap();
    disk.bootstrap(conf).unwrap();
    let mut node = Node::try_new(Config::try_new(1).unwrap(), &disk).unwrap();
    for _ in 0..100 {
        if node.role() == Role::Leader {
            break;
        }
        node.tick();
        drain(&mut node, &mut disk);
    }
    assert_eq!(node.role(), Role::Leader);
    for i in 0..45u32 {
        node.propose(i.to_le_bytes().to_vec()).unwrap();
        drain(&mut node, &mut disk);
        // Compact every 10 applied entries (the driver's threshold, scaled down).
        if node.applied_index() - node.snapshot_index() >= 10 {
            node.compact(node.applied_index(), b"image".to_vec())
                .unwrap();
            drain(&mut node, &mut disk);
        }
    }
    let (term, commit, snap) = (node.term(), node.commit_index(), node.snapshot_index());
    assert!(snap > 1, "compacted at least once");
    drop((node, disk));
    let disk = DiskStorage::open_with_options(tmp.path(), opts).unwrap();
    let node = Node::try_new(Config::try_new(1).unwrap(), &disk).unwrap();
    assert_eq!((node.term(), node.commit_index()), (term, commit));
    assert_eq!(node.snapshot_index(), snap);
    assert_eq!(init_of(&disk).snapshot.data, b"image");
    let last = node.entry(commit).expect("last committed entry is stored");
    assert_eq!(
        last.payload,
        EntryPayload::Normal(44u32.to_le_bytes().to_vec())
    );
}
