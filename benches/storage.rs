//! On-disk Raft storage benchmarks: persisted batches per second (each one fsync) for
//! a single entry and for batches of entries, so entries/s shows what batching buys.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringway::cluster::storage::DiskStorage;
use ringway::raft::{ConfState, Entry, EntryPayload, HardState, PersistBatch, Storage};

/// Payload size of each entry (a small membership or breaker command).
const PAYLOAD: usize = 64;
/// Batch sizes measured: one entry per fsync, and what a busy leader flushes at once.
const BATCH_SIZES: [u64; 3] = [1, 16, 256];

fn batch(first: u64, n: u64) -> PersistBatch {
    let entries = (first..first + n)
        .map(|index| Entry {
            term: 2,
            index,
            payload: EntryPayload::Normal(vec![0xab; PAYLOAD]),
        })
        .collect();
    PersistBatch {
        hard_state: Some(HardState {
            term: 2,
            vote: 1,
            commit: first - 1,
            ..HardState::default()
        }),
        entries,
        ..Default::default()
    }
}

fn persist(c: &mut Criterion) {
    let mut g = c.benchmark_group("disk_persist");
    g.sample_size(20);
    for n in BATCH_SIZES {
        // Under the target dir, on the same disk as the build, not a tmpfs.
        let base = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || std::path::PathBuf::from("target"),
            std::path::PathBuf::from,
        );
        let dir = tempfile::tempdir_in(&base).expect("bench dir");
        let conf = ConfState::with_voters(&[1]);
        let mut disk = DiskStorage::open_with_conf(dir.path(), conf).expect("open");
        let mut next = 2;
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("entries_per_batch_{n}"), |b| {
            b.iter(|| {
                disk.persist(black_box(&batch(next, n))).expect("persist");
                next += n;
            })
        });
    }
    g.finish();
}

criterion_group!(benches, persist);
criterion_main!(benches);
