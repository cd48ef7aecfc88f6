//! Cluster timings with three real `ringway run` processes on 127.0.0.1
//! (heartbeat 50 ms, election timeout 500 ms):
//!
//! - change visibility: from an upstream change sent to a follower's admin API to the
//!   same new ring digest on all three instances, over repeated changes;
//! - failover: from kill -9 of the leader to the first change committed by a new one.
//!
//! `cargo bench --bench cluster` (`RINGWAY_BENCH_CHANGES`, `RINGWAY_BENCH_KILLS` set
//! the counts).

#[path = "../tests/procs/mod.rs"]
mod procs;

use std::time::{Duration, Instant};

use procs::*;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = test_dir("bench-cluster");
    let (_rt, upstreams) = echo_upstreams(3);
    let mut nodes = cluster(&dir, &upstreams, "");
    let all: Vec<&Instance> = nodes.iter().collect();
    eventually("a leader", || agreed_leader(&all));
    let mut digest = eventually("the bootstrap", || same_digest(&all, None));

    let changes = count("RINGWAY_BENCH_CHANGES", 200);
    let mut visible = Vec::with_capacity(changes);
    for c in 0..changes {
        let leader = eventually("a leader", || agreed_leader(&all));
        let follower = all.iter().find(|n| n.name != leader).unwrap();
        let body = format!(
            "{{\"address\": \"{}\", \"weight\": {}}}",
            upstreams[c % 3],
            1 + c % 5
        );
        let t0 = Instant::now();
        let (status, answer) = follower
            .change("PUT", "/api/pools/web/upstreams/bench", &body)
            .unwrap();
        assert_eq!(status, 200, "{answer}");
        let mut seen = vec![false; all.len()];
        loop {
            for (i, n) in all.iter().enumerate() {
                if !seen[i] {
                    let d = n.get("/api/pools").unwrap();
                    seen[i] = d["pools"][0]["ring_digest"] != digest.as_str();
                }
            }
            if seen.iter().all(|&s| s) {
                break;
            }
            assert!(t0.elapsed() < PATIENCE, "change {c} never became visible");
        }
        visible.push(t0.elapsed());
        digest = same_digest(&all, None).unwrap();
    }
    report(
        "change sent to a follower -> same ring on all three",
        visible,
    );

    let kills = count("RINGWAY_BENCH_KILLS", 10);
    let mut failover = Vec::with_capacity(kills);
    for k in 0..kills {
        let all: Vec<&Instance> = nodes.iter().collect();
        let leader = eventually("a leader", || agreed_leader(&all));
        let li = nodes.iter().position(|n| n.name == leader).unwrap();
        let survivor = (li + 1) % nodes.len();
        let body = format!(
            "{{\"address\": \"{}\", \"weight\": {}}}",
            upstreams[0],
            1 + k % 5
        );
        let t0 = Instant::now();
        nodes[li].kill9();
        loop {
            // The answer arrives once a new leader committed the change (a follower
            // forwards it; with no leader known it answers 503 at once).
            if let Some((200, _)) =
                nodes[survivor].change("PUT", "/api/pools/web/upstreams/failover", &body)
            {
                break;
            }
            assert!(t0.elapsed() < PATIENCE, "no new leader committed");
            std::thread::sleep(Duration::from_millis(5));
        }
        failover.push(t0.elapsed());
        nodes[li].start();
        let all: Vec<&Instance> = nodes.iter().collect();
        eventually("the restarted instance caught up", || {
            let d = digests(&all)?;
            d.windows(2).all(|w| w[0] == w[1]).then_some(())
        });
    }
    report(
        "leader kill -9 -> a new leader commits a change (election timeout 500 ms)",
        failover,
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
