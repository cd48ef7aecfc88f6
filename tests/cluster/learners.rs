//! Learner instances as real `ringway run` processes: three voters and twelve
//! learners. A change sent to a learner reaches all fifteen rings; learners route like
//! the voters, and a learner's breaker reports eject an upstream everywhere; a learner killed
//! during fifty changes catches up from a snapshot; a learner is promoted to voter and
//! demoted back; killing the leader elects a new one from the voters and no learner
//! votes.
//!
//! `fleet_bench` (ignored; `cargo test --test cluster -- --ignored
//! --nocapture learners::fleet_bench`) prints the figures in the README: a change sent to a
//! learner until all fifteen instances applied it (p50, p99 over 200 changes), and
//! the leader's CPU and bytes sent per change per learner.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::procs::*;
use serde_json::Value;

/// Learners started next to the three voters.
const LEARNERS: usize = 12;

/// A fleet: voters `n1..n3` and learners `l1..l12`.
struct Fleet {
    voters: Vec<Instance>,
    learners: Vec<Instance>,
}

impl Fleet {
    fn all(&self) -> Vec<&Instance> {
        self.voters.iter().chain(&self.learners).collect()
    }

    fn running(&self) -> Vec<&Instance> {
        self.all()
            .into_iter()
            .filter(|i| i.child.is_some())
            .collect()
    }

    fn by_name(&self, name: &str) -> &Instance {
        self.all().into_iter().find(|i| i.name == name).unwrap()
    }
}

/// Three voters, then `learners` learners started empty (`cluster.join: true`) and
/// added as learners, the first through the CLI, the others through the admin API.
fn fleet(dir: &Path, upstreams: &[SocketAddr], extra: &str, learners: usize) -> Fleet {
    let voters = cluster(dir, upstreams, extra);
    let all: Vec<&Instance> = voters.iter().collect();
    let leader = eventually("a leader", || agreed_leader(&all));
    eventually("the bootstrap everywhere", || same_digest(&all, None));
    let founders: Vec<(String, SocketAddr)> =
        voters.iter().map(|n| (n.name.clone(), n.raft)).collect();
    let join = format!("{extra}  join: true\n");
    let mut fleet = Fleet {
        voters,
        learners: Vec::new(),
    };
    for i in 1..=learners {
        let name = format!("l{i}");
        let raft = local(free_port());
        let mut peers = founders.clone();
        peers.push((name.clone(), raft));
        let node = Node {
            name: &name,
            raft,
            peers,
            cluster_extra: &join,
        };
        fleet.learners.push(start_node(dir, node, upstreams));
    }
    for (i, l) in fleet.learners.iter().enumerate() {
        eventually("the learner's admin API", || l.get("/api/cluster"));
        let via = fleet.by_name(&leader);
        if i == 0 {
            let config = via.config.to_str().unwrap();
            let addr = l.raft.to_string();
            let args = [
                "cluster",
                "-c",
                config,
                "add-node",
                "--learner",
                &l.name,
                &addr,
            ];
            let (ok, out, err) = Instance::cli(&args);
            assert!(ok, "add-node --learner failed: {err}");
            assert!(out.contains("\"learner\""), "{out}");
        } else {
            let body = format!(
                "{{\"peer_address\": \"{}\", \"role\": \"learner\"}}",
                l.raft
            );
            let path = format!("/api/cluster/nodes/{}", l.name);
            let (status, answer) =
                eventually("the learner added", || via.change("PUT", &path, &body));
            assert_eq!(status, 200, "{answer}");
        }
    }
    let all = fleet.all();
    eventually("the bootstrap on all fifteen", || same_digest(&all, None));
    fleet
}

/// The members `v` lists with `role`.
fn members(v: &Value, role: &str) -> Vec<String> {
    v["members"]
        .as_array()
        .map_or(&[][..], |a| a.as_slice())
        .iter()
        .filter(|m| m["role"] == role)
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

fn put_weight(via: &Instance, upstream: SocketAddr, weight: u64) -> u64 {
    let body = format!("{{\"address\": \"{upstream}\", \"weight\": {weight}}}");
    let (status, answer) = via
        .change("PUT", "/api/pools/web/upstreams/extra", &body)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    v["applied"].as_u64().unwrap()
}

fn cluster_view(i: &Instance) -> Value {
    eventually("the admin API", || i.get("/api/cluster"))
}

#[test]
fn three_voters_and_twelve_learners() {
    let dir = test_dir("learners");
    let (_rt, upstreams) = echo_upstreams(3);
    let mut fleet = fleet(&dir, &upstreams, "  compact_threshold: 20\n", LEARNERS);
    let all = fleet.all();
    let leader = eventually("a leader", || agreed_leader(&all));

    // Shown as such: the leader lists 3 voters and 12 learners, each learner knows
    // it is one, and metrics say so.
    let v = cluster_view(fleet.by_name(&leader));
    assert_eq!(members(&v, "voter").len(), 3, "{v}");
    assert_eq!(members(&v, "learner").len(), LEARNERS, "{v}");
    // (A learner that dialled another before that one joined was told it is not a
    // member, and says "removed" until a peer accepts it again.)
    for l in &fleet.learners {
        let v = eventually("each learner a follower", || {
            let v = l.get("/api/cluster")?;
            (v["role"] == "follower").then_some(v)
        });
        assert_eq!(v["membership"], "learner", "{v}");
    }
    let metrics = http_get(fleet.learners[2].admin, "/metrics").unwrap();
    assert!(
        metrics.contains("ringway_raft_membership{role=\"learner\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ringway_raft_members{role=\"learner\"} 12"),
        "{metrics}"
    );
    let (ok, out, err) = Instance::cli(&[
        "cluster",
        "-c",
        fleet.learners[2].config.to_str().unwrap(),
        "status",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("follower (learner)"), "{out}");

    // A change sent to a learner reaches all fifteen rings.
    let before = same_digest(&all, None).unwrap();
    put_weight(&fleet.learners[0], upstreams[0], 3);
    eventually("the change on all fifteen", || {
        same_digest(&all, Some(&before))
    });
    // A learner routes from the same state.
    for l in &fleet.learners {
        let up = eventually("a learner serves", || l.served_by("/some/key"));
        assert_eq!(up, fleet.voters[0].served_by("/some/key").unwrap());
    }

    // A learner's breaker reports reach the leader: an upstream nobody listens on,
    // reached only through learner l9, is ejected on every instance on l9's word.
    let dead = local(free_port());
    let body = format!("{{\"address\": \"{dead}\"}}");
    let (status, answer) = fleet.learners[8]
        .change("PUT", "/api/pools/web/upstreams/dead", &body)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let breaker = |i: &Instance| -> Option<Value> {
        let pools = i.get("/api/pools")?;
        let ups = pools["pools"][0]["upstreams"].as_array()?.clone();
        ups.into_iter()
            .find(|u| u["id"] == "dead")
            .map(|u| u["breaker"].clone())
    };
    let ejected = eventually("the dead upstream ejected on l9's reports", || {
        for k in 0..40 {
            let _ = http_get(fleet.learners[8].listener, &format!("/probe/{k}"));
        }
        let b = breaker(&fleet.voters[0])?;
        (b["state"] != "closed").then_some(b)
    });
    // Only l9 had traffic (no active checks), so the evidence is its own.
    assert_eq!(
        ejected["evidence"]["signal"], "consecutive_failures",
        "{ejected}"
    );
    for i in fleet.all() {
        let b = eventually("the ejection everywhere", || breaker(i));
        assert_eq!(b["ejections"], 1, "{}: {b}", i.name);
    }
    let (status, answer) = fleet.voters[0]
        .change("DELETE", "/api/pools/web/upstreams/dead", "")
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let digest = eventually("the dead upstream gone everywhere", || {
        let d = same_digest(&all, None)?;
        let gone = all.iter().all(|i| breaker(i).is_none());
        gone.then_some(d)
    });

    // A learner killed during fifty changes restarts and catches up by snapshot.
    let k = 5;
    let applied_before = cluster_view(&fleet.learners[k])["applied"]
        .as_u64()
        .unwrap();
    fleet.learners[k].kill9();
    for w in 0..50 {
        put_weight(&fleet.learners[(w % 4) as usize], upstreams[0], 1 + w % 3);
    }
    let li = fleet.voters.iter().position(|n| n.name == leader).unwrap();
    let snap = eventually("the leader compacted its log", || {
        let s = fleet.voters[li].get("/api/cluster")?["snapshot_index"].as_u64()?;
        (s > applied_before + 1).then_some(s)
    });
    fleet.learners[k].start();
    let all = fleet.all();
    eventually("the restarted learner on the same ring", || {
        let d = digests(&all)?;
        d.windows(2).all(|w| w[0] == w[1]).then_some(())
    });
    let v = cluster_view(&fleet.learners[k]);
    assert!(
        v["snapshot_index"].as_u64().unwrap() >= snap,
        "caught up without the snapshot? {v}"
    );
    assert_eq!(v["membership"], "learner", "{v}");
    // The fifty changes end at weight 2 (it was 3).
    let digest = same_digest(&all, Some(&digest)).expect("the fifty changes moved the ring");

    // Promoted to voter and demoted back, with the CLI through a learner.
    let config = fleet.learners[3].config.to_str().unwrap().to_owned();
    let (ok, out, err) = Instance::cli(&["cluster", "-c", &config, "promote-node", "l1"]);
    assert!(ok, "promote-node failed: {err}");
    assert!(out.contains("\"voter\""), "{out}");
    eventually("l1 a voter everywhere", || {
        let v = fleet.learners[0].get("/api/cluster")?;
        (v["membership"] == "voter" && members(&v, "voter").len() == 4).then_some(())
    });
    let (ok, out, err) = Instance::cli(&["cluster", "-c", &config, "demote-node", "l1"]);
    assert!(ok, "demote-node failed: {err}");
    assert!(out.contains("\"learner\""), "{out}");
    eventually("l1 a learner again", || {
        let v = fleet.learners[0].get("/api/cluster")?;
        (v["membership"] == "learner" && members(&v, "voter").len() == 3).then_some(())
    });
    // An unknown field, or a role for a node that is not a member, is refused.
    let (status, answer) = fleet.voters[0]
        .change(
            "PUT",
            "/api/cluster/nodes/l2",
            "{\"role\": \"voter\", \"bogus\": 1}",
        )
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = fleet.voters[0]
        .change("PUT", "/api/cluster/nodes/nobody", "{\"role\": \"voter\"}")
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("not a member"), "{answer}");

    // Killing the leader: a new leader from the voters, and no learner votes.
    let granted_before: Vec<u64> = fleet
        .learners
        .iter()
        .map(|l| cluster_view(l)["votes_granted"].as_u64().unwrap())
        .collect();
    let voters_granted_before: u64 = fleet
        .voters
        .iter()
        .map(|n| cluster_view(n)["votes_granted"].as_u64().unwrap())
        .sum();
    let old_term = cluster_view(&fleet.voters[li])["term"].as_u64().unwrap();
    fleet.voters[li].kill9();
    let alive = fleet.running();
    let new_leader = eventually("a new leader", || {
        let l = agreed_leader(&alive)?;
        (l != leader).then_some(l)
    });
    assert!(
        ["n1", "n2", "n3"].contains(&new_leader.as_str()),
        "{new_leader}"
    );
    for (l, before) in fleet.learners.iter().zip(&granted_before) {
        let v = cluster_view(l);
        assert_eq!(
            v["votes_granted"].as_u64(),
            Some(*before),
            "{} voted: {v}",
            l.name
        );
        assert!(v["vote"].is_null(), "{} voted: {v}", l.name);
        assert!(
            v["term"].as_u64().unwrap() > old_term,
            "{} follows the new term: {v}",
            l.name
        );
    }
    let voters_granted: u64 = fleet
        .voters
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| cluster_view(n)["votes_granted"].as_u64().unwrap())
        .sum();
    assert!(
        voters_granted > voters_granted_before,
        "the surviving voter granted the new leader its vote"
    );
    // The group still commits, and every learner follows.
    let alive = fleet.running();
    put_weight(&fleet.learners[7], upstreams[0], 1);
    eventually("a change after the failover on all fourteen", || {
        same_digest(&alive, Some(&digest))
    });
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU seconds the process has used (user + system), from `/proc`.
fn cpu_seconds(i: &Instance) -> f64 {
    let pid = i.child.as_ref().unwrap().id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 Hz).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Bytes the instance sent to voters and to everyone else (learners), from its metrics.
fn bytes_sent(i: &Instance, voters: &[&str]) -> (u64, u64) {
    let metrics = http_get(i.admin, "/metrics").unwrap();
    let (mut to_voters, mut to_learners) = (0, 0);
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("ringway_raft_bytes_sent_total{peer=\"") else {
            continue;
        };
        let (peer, value) = rest.split_once("\"} ").unwrap();
        let n: u64 = value.trim().parse().unwrap();
        if voters.contains(&peer) {
            to_voters += n;
        } else {
            to_learners += n;
        }
    }
    (to_voters, to_learners)
}

/// How often each instance is asked whether it applied a change: fifteen debug-built
/// admin APIs asked every millisecond take a good part of two cores themselves.
const POLL: Duration = Duration::from_millis(5);

/// Milliseconds from sending each change until every instance applied it: one thread
/// per instance polls its admin API, so fifteen instances cost no more to watch than one.
/// Also when the instance it was sent to answered (it had applied the change).
fn changes_until_everywhere(
    fleet: &Fleet,
    via: &[&Instance],
    upstream: SocketAddr,
    n: u64,
) -> Vec<(f64, f64)> {
    let all = fleet.all();
    (0..n)
        .map(|w| {
            let start = Instant::now();
            let index = put_weight(via[(w as usize) % via.len()], upstream, 1 + w % 3);
            let answered = start.elapsed().as_secs_f64() * 1000.0;
            std::thread::scope(|s| {
                for i in &all {
                    s.spawn(move || {
                        eventually_every("the change everywhere", POLL, PATIENCE, || {
                            let applied = i.get("/api/cluster")?["applied"].as_u64()?;
                            (applied >= index).then_some(())
                        })
                    });
                }
            });
            (answered, start.elapsed().as_secs_f64() * 1000.0)
        })
        .collect()
}

/// p50 and p99 of the answers and of the whole way, in that order.
fn latencies(samples: &[(f64, f64)]) -> [f64; 4] {
    let mut answered: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let mut everywhere: Vec<f64> = samples.iter().map(|s| s.1).collect();
    answered.sort_by(f64::total_cmp);
    everywhere.sort_by(f64::total_cmp);
    [
        percentile(&answered, 0.5),
        percentile(&answered, 0.99),
        percentile(&everywhere, 0.5),
        percentile(&everywhere, 0.99),
    ]
}

/// The leader's CPU seconds and bytes sent (to voters, to learners) while idle for
/// `d`: heartbeats only.
fn idle(leader: &Instance, voters: &[&str], d: Duration) -> (f64, u64, u64) {
    let (cpu0, (v0, l0)) = (cpu_seconds(leader), bytes_sent(leader, voters));
    std::thread::sleep(d);
    let (cpu1, (v1, l1)) = (cpu_seconds(leader), bytes_sent(leader, voters));
    (cpu1 - cpu0, v1 - v0, l1 - l0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The README's figures. Debug builds cost several times the release build's CPU.
#[test]
#[ignore]
fn fleet_bench() {
    const CHANGES: u64 = 200;
    // Long enough for a few hundred heartbeats and several CPU clock ticks.
    const IDLE: Duration = Duration::from_secs(3);
    let dir = test_dir("learnersbench");
    let (_rt, upstreams) = echo_upstreams(3);
    let voter_names = ["n1", "n2", "n3"];

    // Baseline: three voters, changes sent to a follower.
    let mut base = fleet(&dir, &upstreams, "", 0);
    let all = base.all();
    let leader = eventually("a leader", || agreed_leader(&all));
    let follower: Vec<&Instance> = base.voters.iter().filter(|n| n.name != leader).collect();
    let li = base.by_name(&leader);
    let (idle_cpu, idle_v, _) = idle(li, &voter_names, IDLE);
    let (cpu0, (bv0, _)) = (cpu_seconds(li), bytes_sent(li, &voter_names));
    let started = Instant::now();
    let base_lat = changes_until_everywhere(&base, &follower, upstreams[0], CHANGES);
    let share = started.elapsed().as_secs_f64() / IDLE.as_secs_f64();
    let (cpu1, (bv1, _)) = (cpu_seconds(li), bytes_sent(li, &voter_names));
    let base_cpu_ms = (cpu1 - cpu0 - idle_cpu * share) * 1000.0 / CHANGES as f64;
    let base_bytes = ((bv1 - bv0) as f64 - idle_v as f64 * share) / CHANGES as f64 / 2.0;
    base.voters.iter_mut().for_each(Instance::kill9);
    drop(base);

    // Three voters and twelve learners, changes sent to the learners.
    let dir2 = test_dir("learnersbench-fleet");
    let fleet = fleet(&dir2, &upstreams, "", LEARNERS);
    let all = fleet.all();
    let leader = eventually("a leader", || agreed_leader(&all));
    let li = fleet.by_name(&leader);
    let via: Vec<&Instance> = fleet.learners.iter().collect();
    let (idle_cpu, idle_v, idle_l) = idle(li, &voter_names, IDLE);
    let (cpu0, (bv0, bl0)) = (cpu_seconds(li), bytes_sent(li, &voter_names));
    let started = Instant::now();
    let lat = changes_until_everywhere(&fleet, &via, upstreams[0], CHANGES);
    let wall = started.elapsed().as_secs_f64();
    let share = wall / IDLE.as_secs_f64();
    let (cpu1, (bv1, bl1)) = (cpu_seconds(li), bytes_sent(li, &voter_names));
    let cpu_ms = (cpu1 - cpu0 - idle_cpu * share) * 1000.0 / CHANGES as f64;
    let per_learner_bytes =
        ((bl1 - bl0) as f64 - idle_l as f64 * share) / CHANGES as f64 / LEARNERS as f64;
    let per_voter_bytes = ((bv1 - bv0) as f64 - idle_v as f64 * share) / CHANGES as f64 / 2.0;
    println!(
        "idle leader (heartbeats only), per second: {:.1} ms CPU, {:.0} bytes to each voter, {:.0} bytes to each learner",
        idle_cpu * 1000.0 / IDLE.as_secs_f64(),
        idle_v as f64 / IDLE.as_secs_f64() / 2.0,
        idle_l as f64 / IDLE.as_secs_f64() / LEARNERS as f64
    );
    let [b_a50, b_a99, b50, b99] = latencies(&base_lat);
    let [a50, a99, e50, e99] = latencies(&lat);
    println!("| setup | changes | answered p50 / p99 ms | on every instance p50 / p99 ms | leader CPU ms/change | bytes/change to each voter | bytes/change to each learner |");
    println!("|---|---|---|---|---|---|---|");
    // CPU and bytes below have the idle (heartbeat) rate over the same time subtracted.
    println!(
        "| 3 voters, sent to a follower | {CHANGES} | {b_a50:.1} / {b_a99:.1} | {b50:.1} / {b99:.1} | {:.2} | {:.0} | - |",
        base_cpu_ms,
        base_bytes
    );
    println!(
        "| 3 voters + {LEARNERS} learners, sent to a learner | {CHANGES} | {a50:.1} / {a99:.1} | {e50:.1} / {e99:.1} | {:.2} | {:.0} | {:.0} |",
        cpu_ms,
        per_voter_bytes,
        per_learner_bytes
    );
    println!(
        "leader CPU per change per learner: {:.3} ms ((with - without) / {LEARNERS}); {CHANGES} changes in {wall:.1} s",
        (cpu_ms - base_cpu_ms) / LEARNERS as f64
    );
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}
