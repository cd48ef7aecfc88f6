//! Raft core benchmarks: proposals committed per second on a fault-free 3-node group with
//! batching on and off, commit latency in delivery rounds, and entries per second through
//! `step` on one follower.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringway::raft::sim::cluster::Cluster;
use ringway::raft::{
    ConfState, Config, Entry, EntryPayload, MemStorage, Message, MessageBody, Node, BOOTSTRAP_INDEX,
};

/// Proposals per measured burst.
const BURST: usize = 256;
/// Payload size of each proposal (a small membership or breaker command).
const PAYLOAD: usize = 64;
/// Entries per AppendEntries in the `step` benchmark.
const STEP_BATCH: usize = 64;
/// AppendEntries messages per `step` benchmark iteration.
const STEP_MSGS: usize = 64;

fn group(batching: bool) -> Cluster {
    let mut c = Cluster::new(3, |cfg| {
        cfg.max_entries_per_msg = if batching { 64 } else { 1 };
    });
    c.elect(1);
    assert_eq!(c.leader(), Some(1));
    c
}

/// Proposes `n` entries at the leader, then delivers rounds until all commit; returns the rounds.
fn burst(c: &mut Cluster, n: usize) -> usize {
    let mut last = 0;
    for i in 0..n {
        let data = vec![i as u8; PAYLOAD];
        last = c.node(1).propose(data).expect("leader accepts").index;
    }
    let mut rounds = 0;
    while c.node(1).commit_index() < last {
        c.deliver_round();
        rounds += 1;
    }
    c.settle();
    compact_all(c);
    rounds
}

/// Folds applied entries into a snapshot on every node, as a deployment does
/// periodically, so the logs do not grow across benchmark iterations.
fn compact_all(c: &mut Cluster) {
    for node in c.nodes.values_mut() {
        let applied = node.applied_index();
        let _ = node.compact(applied, Vec::new());
    }
    c.process_ready();
    c.applied.values_mut().for_each(Vec::clear);
}

fn report_latency() {
    for batching in [true, false] {
        let mut c = group(batching);
        let single = burst(&mut c, 1);
        let loaded = burst(&mut c, BURST);
        let msgs_before = c.delivered;
        burst(&mut c, BURST);
        let msgs = c.delivered - msgs_before;
        println!(
            "raft commit latency (batching {}): 1 proposal commits in {single} delivery rounds; \
             a burst of {BURST} in {loaded} rounds using {msgs} messages",
            if batching { "on, 64/msg" } else { "off, 1/msg" },
        );
    }
}

fn bench_commit(c: &mut Criterion) {
    report_latency();
    let mut g = c.benchmark_group("raft_commit_3_nodes");
    g.throughput(Throughput::Elements(BURST as u64));
    for batching in [true, false] {
        let name = if batching {
            "batching_on"
        } else {
            "batching_off"
        };
        let mut cluster = group(batching);
        g.bench_function(name, |b| b.iter(|| black_box(burst(&mut cluster, BURST))));
    }
    g.finish();
}

fn follower() -> (Node, MemStorage) {
    let storage = MemStorage::new_with_conf(ConfState::with_voters(&[1, 2, 3]));
    let node = Node::try_new(Config::try_new(2).expect("valid id"), &storage).expect("valid node");
    (node, storage)
}

fn appends() -> Vec<Message> {
    let mut index = BOOTSTRAP_INDEX;
    (0..STEP_MSGS)
        .map(|_| {
            let prev_index = index;
            let entries: Vec<Entry> = (0..STEP_BATCH)
                .map(|_| {
                    index += 1;
                    Entry {
                        term: 1,
                        index,
                        payload: EntryPayload::Normal(vec![7; PAYLOAD]),
                    }
                })
                .collect();
            let body = MessageBody::Append {
                prev_index,
                prev_term: 1,
                commit: prev_index,
                entries,
            };
            Message {
                from: 1,
                to: 2,
                term: 1,
                body,
            }
        })
        .collect()
}

fn bench_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_step_one_node");
    g.throughput(Throughput::Elements((STEP_BATCH * STEP_MSGS) as u64));
    let msgs = appends();
    g.bench_function("append_entries_persist_apply", |b| {
        b.iter_batched(
            || (follower(), msgs.clone()),
            |((mut node, mut storage), msgs)| {
                for m in msgs {
                    node.step(m);
                    if let Some(rd) = node.ready() {
                        let mut done = rd.persist(&mut storage).expect("in-memory storage");
                        black_box(done.take_messages());
                        node.advance(done).expect("same ready");
                    }
                }
                node
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_commit, bench_step);
criterion_main!(benches);
