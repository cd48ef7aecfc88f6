//! Cluster-wide circuit breakers through three real `ringway run` processes: an
//! upstream's server is stopped under traffic; every instance ejects it, with the same
//! breaker state in `/api/pools`; it is started again on the same port, and every
//! instance readmits it. Reports need two distinct instances (`min_reporters: 2`), so
//! followers' reports travel to the leader.
//!
//! `breaker_bench` (ignored; `cargo test --release --test cluster -- --ignored --nocapture
//! breakers::breaker_bench`) measures the same cycle under steady load for the README.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::procs;
use crate::procs::{free_port, local, test_dir, Echo, Instance};
use serde_json::Value;

/// Every wait in this file gives up here.
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls every 10 ms: the benchmark's timings are read off these waits.
fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    procs::eventually_every(what, Duration::from_millis(10), PATIENCE, f)
}

/// A GET: (status, body).
fn http_call(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    procs::http_call(addr, "GET", path, &[], "")
}

/// Three instances in front of `upstreams`, with `health` as the pool's settings.
fn cluster(dir: &Path, upstreams: &[SocketAddr], health: &str) -> Vec<Instance> {
    let names = ["n1", "n2", "n3"];
    let raft: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let members: Vec<(&str, u16)> = names.iter().copied().zip(raft.iter().copied()).collect();
    names
        .iter()
        .zip(&raft)
        .map(|(name, port)| {
            let member = Member {
                name,
                port: *port,
                election_ms: 500,
                join: false,
            };
            start_member(dir, &member, &members, upstreams, health)
        })
        .collect()
}

/// How one instance of these tests is set up.
struct Member<'a> {
    name: &'a str,
    /// Its `cluster.address` port.
    port: u16,
    election_ms: u32,
    /// Starts empty and waits to be added (`cluster.join`).
    join: bool,
}

/// Writes `member`'s config (pool `web` over `upstreams` with `health`, peers
/// `members`) and starts it.
fn start_member(
    dir: &Path,
    member: &Member<'_>,
    members: &[(&str, u16)],
    upstreams: &[SocketAddr],
    health: &str,
) -> Instance {
    // Written once: rewritten for every start, a running instance re-reading it could
    // find it empty mid-write.
    let token = dir.join("token");
    if !token.exists() {
        std::fs::write(&token, "t0ken\n").unwrap();
    }
    let peers: Vec<String> = members
        .iter()
        .map(|(n, p)| format!("{n}: 127.0.0.1:{p}"))
        .collect();
    let ups: Vec<String> = upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{id: up{i}, address: \"{a}\"}}"))
        .collect();
    let (listener, admin) = (free_port(), free_port());
    let Member {
        name,
        port,
        election_ms,
        join,
    } = member;
    let yaml = format!(
        "node: {{id: {name}, data_dir: {data:?}}}\n\
         cluster:\n  address: 127.0.0.1:{port}\n  peers: {{{peers}}}\n  heartbeat_ms: 50\n  election_timeout_ms: {election_ms}\n  join: {join}\n  secret_file: {secret:?}\n\
         listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
         pools:\n  - name: web\n    hash_key: path\n    connect_timeout_ms: 500\n    upstreams: [{ups}]\n    health:\n{health}",
        data = dir.join(name).display().to_string(),
        token = dir.join("token").display().to_string(),
        secret = procs::cluster_secret(dir).display().to_string(),
        peers = peers.join(", "),
        ups = ups.join(", "),
    );
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, yaml).unwrap();
    let mut i = Instance {
        name: name.to_string(),
        config,
        admin: local(admin),
        listener: local(listener),
        raft: local(*port),
        child: None,
    };
    i.start();
    i
}

/// The breaker of upstream `id` on every instance, once they all show the same one
/// (and have applied the bootstrap).
fn agreed_breaker<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    id: &str,
) -> Option<Value> {
    let states: Vec<Value> = instances
        .into_iter()
        .map(|i| {
            let pools = i.get("/api/pools")?;
            let pool = &pools["pools"][0];
            if pool["replicated"].is_null() {
                return None;
            }
            let ups = pool["upstreams"].as_array()?;
            let up = ups.iter().find(|u| u["id"] == id)?;
            Some(up["breaker"].clone())
        })
        .collect::<Option<_>>()?;
    states
        .windows(2)
        .all(|w| w[0] == w[1])
        .then(|| states[0].clone())
}

/// Requests to every instance over many keys from `threads` threads until stopped:
/// (ok, failed) counts.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// The first failures' status and body, for the bench's report.
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Failures remembered for the report.
const MAX_FAILURES_KEPT: usize = 50;

impl Load {
    fn start(instances: &[Instance], threads: usize) -> Load {
        Load::on(instances.iter().map(|i| i.listener).collect(), threads)
    }

    /// Load on these proxy listeners only.
    fn on(targets: Vec<SocketAddr>, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|t| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let failures = failures.clone();
                let targets = targets.clone();
                std::thread::spawn(move || {
                    let mut n = t as u64;
                    while !stop.load(Relaxed) {
                        let target = targets[(n % targets.len() as u64) as usize];
                        match http_call(target, &format!("/key/{}", n % 97)) {
                            Some((200, _)) => {
                                ok.fetch_add(1, Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Relaxed);
                                let mut kept = failures.lock().unwrap();
                                if kept.len() < MAX_FAILURES_KEPT {
                                    kept.push(format!("{other:?}"));
                                }
                            }
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            failures,
            threads,
        }
    }

    fn counts(&self) -> (u64, u64) {
        (self.ok.load(Relaxed), self.failed.load(Relaxed))
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (self.ok.load(Relaxed), self.failed.load(Relaxed))
    }
}

const TEST_HEALTH: &str = "      passive: {consecutive_failures: 3, local_suspicion_ms: 200}\n      breaker: {base_ejection_ms: 500, max_ejection_ms: 2000, half_open_successes: 2, probe_interval_ms: 100, min_reporters: 2}\n";

#[test]
fn three_instances_eject_a_stopped_upstream_together_and_readmit_it_together() {
    let dir = test_dir("breakers");
    let mut ups: Vec<Echo> = (0..3).map(|i| Echo::new(&format!("up{i}"))).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let mut nodes = cluster(&dir, &addrs, TEST_HEALTH);
    std::thread::sleep(Duration::from_millis(300));
    nodes.iter_mut().for_each(Instance::assert_running);
    let closed = eventually("the bootstrap applied on all three", || {
        agreed_breaker(&nodes, "up0")
    });
    assert_eq!(closed["state"], "closed");

    let load = Load::start(&nodes, 3);
    ups[0].stop();
    let open = eventually("up0 ejected on all three, in the same state", || {
        agreed_breaker(&nodes, "up0").filter(|b| b["state"] != "closed")
    });
    assert!(open["ejections"].as_u64().unwrap() >= 1, "{open}");
    nodes.iter_mut().for_each(Instance::assert_running);
    let evidence = &open["evidence"]["signal"];
    assert!(
        evidence == "consecutive_failures" || evidence == "probe",
        "{open}"
    );
    // Every instance exports the agreed state and the replicated ejection count.
    for n in &nodes {
        let (status, text) = http_call(n.admin, "/metrics").unwrap();
        assert_eq!(status, 200);
        let value = |series: &str| -> Option<f64> {
            text.lines()
                .find(|l| l.starts_with(series))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        };
        let state = open["state"].as_str().unwrap();
        let series = format!(
            "ringway_upstream_breaker_state{{pool=\"web\",state=\"{state}\",upstream=\"up0\"}}"
        );
        assert_eq!(value(&series), Some(1.0), "{series} in:\n{text}");
        let closed =
            "ringway_upstream_breaker_state{pool=\"web\",state=\"closed\",upstream=\"up1\"}";
        assert_eq!(value(closed), Some(1.0), "{closed}");
        let ejections = "ringway_upstream_ejections_total{pool=\"web\",upstream=\"up0\"}";
        assert!(
            value(ejections).is_some_and(|v| v >= 1.0),
            "{ejections} in:\n{text}"
        );
    }
    // The cap holds: one of three at 50 %; the others stay closed everywhere.
    for id in ["up1", "up2"] {
        let b = agreed_breaker(&nodes, id).unwrap_or_else(|| panic!("{id} agreed"));
        assert_eq!(b["state"], "closed", "{id}: {b}");
    }
    // While up0 is ejected, its keys are served by the others.
    let served = eventually("a request served while up0 is out", || {
        let (status, body) = http_call(nodes[0].listener, "/key/1")?;
        (status == 200).then_some(body)
    });
    assert!(!served.starts_with("up0 "), "{served}");

    ups[0].start();
    let back = eventually("up0 readmitted on all three", || {
        agreed_breaker(&nodes, "up0").filter(|b| b["state"] == "closed" && b["ejections"] != 0)
    });
    assert_eq!(back["evidence"]["signal"], "probe", "{back}");
    let (ok, failed) = load.finish();
    assert!(ok > 0, "the load ran: {ok} ok, {failed} failed");
    nodes.iter_mut().for_each(Instance::assert_running);
    // Every key is served again, some by up0.
    let up0_serves = eventually("up0 serving again", || {
        (0..97).find(|k| {
            http_call(nodes[1].listener, &format!("/key/{k}"))
                .is_some_and(|(s, body)| s == 200 && body.starts_with("up0 "))
        })
    });
    assert!(up0_serves < 97);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ringway_connections_accepted_total{listener="admin"}` of `i`, read with one
/// connection of its own (counted in the figure it reads).
fn admin_connections(i: &Instance) -> u64 {
    let (status, text) = http_call(i.admin, "/metrics").expect("metrics answer");
    assert_eq!(status, 200);
    let series = "ringway_connections_accepted_total{listener=\"admin\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} in:\n{text}"))
}

/// The issue behind this test: breaker reports went to the leader through the file's
/// peers only, so a leader added at runtime never heard them. Here n4 joins at
/// runtime with a short election timeout, and the leader is killed (and restarted)
/// until n4 leads. Traffic goes only to the founders, so an ejection needs two of
/// their reports (`min_reporters: 2`) at n4. Meanwhile each instance's admin
/// listener counts its connections: every one is the test's own.
#[test]
fn a_leader_added_at_runtime_hears_followers_breaker_reports() {
    let dir = test_dir("breakers-joined");
    let mut ups: Vec<Echo> = (0..3).map(|i| Echo::new(&format!("up{i}"))).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    // Founders time out slowly, n4 quickly: once n4 votes, it wins the next election.
    let names = ["n1", "n2", "n3"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let founders: Vec<(&str, u16)> = names.iter().copied().zip(ports.iter().copied()).collect();
    let mut nodes: Vec<Instance> = founders
        .iter()
        .map(|&(name, port)| {
            let m = Member {
                name,
                port,
                election_ms: 1000,
                join: false,
            };
            start_member(&dir, &m, &founders, &addrs, TEST_HEALTH)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    nodes.iter_mut().for_each(Instance::assert_running);
    let closed = eventually("the bootstrap applied on the founders", || {
        agreed_breaker(&nodes, "up0")
    });
    assert_eq!(closed["state"], "closed");

    let n4_port = free_port();
    let mut everyone = founders.clone();
    everyone.push(("n4", n4_port));
    let m4 = Member {
        name: "n4",
        port: n4_port,
        election_ms: 150,
        join: true,
    };
    nodes.push(start_member(&dir, &m4, &everyone, &addrs, TEST_HEALTH));
    let config = nodes[0].config.to_str().unwrap().to_owned();
    let raft4 = local(n4_port).to_string();
    let (ok, out, err) = Instance::cli(&["cluster", "-c", &config, "add-node", "n4", &raft4]);
    assert!(ok, "add-node failed: {out}\n{err}");
    eventually("n4 a voter with the pool", || {
        let view = nodes[3].get("/api/cluster")?;
        let voters = view["members"]
            .as_array()?
            .iter()
            .filter(|m| m["role"] == "voter")
            .count();
        (voters == 4).then_some(())?;
        agreed_breaker(&nodes, "up0")
    });

    // n4 usually wins the first election after a leader dies; a founder whose
    // timeout fires just as the founders' leader lease ends sometimes wins instead.
    const ROUNDS: usize = 8;
    for round in 0.. {
        let all: Vec<&Instance> = nodes.iter().collect();
        let leader = eventually("a leader all four agree on", || procs::agreed_leader(&all));
        if leader == "n4" {
            break;
        }
        assert!(
            round < ROUNDS,
            "n4 did not win an election in {ROUNDS} rounds"
        );
        eprintln!("round {round}: {leader} leads; killing it");
        let at = nodes.iter().position(|n| n.name == leader).unwrap();
        nodes[at].kill9();
        let rest: Vec<&Instance> = nodes.iter().filter(|n| n.name != leader).collect();
        eventually("a new leader", || procs::agreed_leader(&rest));
        nodes[at].start();
    }
    let live: Vec<usize> = (0..4).collect();
    let followers: Vec<usize> = vec![0, 1, 2];
    let before: Vec<u64> = live.iter().map(|&i| admin_connections(&nodes[i])).collect();

    // Traffic on the followers only; up0 stops; n4 hears of it from them.
    let targets = followers.iter().map(|&i| nodes[i].listener).collect();
    let load = Load::on(targets, 3);
    ups[0].stop();
    let mut polls_of_n4 = 0u64;
    let open = eventually("n4 ejects up0 on its followers' reports", || {
        polls_of_n4 += 1;
        agreed_breaker([&nodes[3]], "up0").filter(|b| b["state"] != "closed")
    });
    assert_eq!(open["evidence"]["signal"], "consecutive_failures", "{open}");
    eprintln!("n4 ejected up0 after {polls_of_n4} polls: {open}");
    // A change through a follower, with its token, also reaches the leader.
    let via = &nodes[followers[0]];
    let body = format!("{{\"address\": \"{}\", \"weight\": 2}}", addrs[1]);
    let (status, answer) = via
        .change("PUT", "/api/pools/web/upstreams/extra", &body)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let (ok, failed) = load.finish();
    assert!(ok > 0, "the load ran: {ok} ok, {failed} failed");

    // Admin connections since `before`: the test's own (and this read) only.
    for (k, &i) in live.iter().enumerate() {
        let ours = match i {
            3 => polls_of_n4,
            i if i == followers[0] => 1,
            _ => 0,
        };
        let now = admin_connections(&nodes[i]);
        assert_eq!(
            now - before[k],
            ours + 1,
            "{}: admin connections besides the test's own",
            nodes[i].name
        );
    }
    let live_nodes = live.iter().map(|&i| &nodes[i]);
    let agreed = eventually("up0's breaker the same on all four", || {
        agreed_breaker(live_nodes.clone(), "up0").filter(|b| b["state"] != "closed")
    });
    assert!(agreed["ejections"].as_u64().unwrap() >= 1, "{agreed}");
    for &i in &live {
        nodes[i].assert_running();
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Time from an upstream's death to its ejection on every instance, and from its
/// recovery to readmission everywhere; failed requests in between under steady load.
#[test]
#[ignore]
fn breaker_bench() {
    const ROUNDS: usize = 5;
    const HEALTH: &str = "      passive: {consecutive_failures: 5, local_suspicion_ms: 500}\n      breaker: {base_ejection_ms: 2000, max_ejection_ms: 4000, half_open_successes: 3, probe_interval_ms: 200, min_reporters: 1}\n";
    let dir = test_dir("breakerbench");
    let mut ups: Vec<Echo> = (0..4).map(|i| Echo::new(&format!("up{i}"))).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let nodes = cluster(&dir, &addrs, HEALTH);
    eventually("the bootstrap applied", || agreed_breaker(&nodes, "up0"));
    let load = Load::start(&nodes, 6);
    std::thread::sleep(Duration::from_secs(2));
    println!("| round | dead → ejected on all (ms) | ejection time (ms) | alive → readmitted on all (ms) | requests | failed |");
    println!("|---|---|---|---|---|---|");
    for round in 0..ROUNDS {
        let before = load.counts();
        let killed = Instant::now();
        ups[0].stop();
        let open = eventually("ejected everywhere", || {
            agreed_breaker(&nodes, "up0").filter(|b| b["state"] != "closed")
        });
        let ejected = killed.elapsed();
        let ejection =
            open["until_ms"].as_u64().unwrap_or(0) - open["since_ms"].as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_millis(500));
        let restarted = Instant::now();
        ups[0].start();
        eventually("readmitted everywhere", || {
            agreed_breaker(&nodes, "up0").filter(|b| b["state"] == "closed")
        });
        let readmitted = restarted.elapsed();
        let after = load.counts();
        println!(
            "| {round} | {} | {ejection} | {} | {} | {} |",
            ejected.as_millis(),
            readmitted.as_millis(),
            (after.0 + after.1) - (before.0 + before.1),
            after.1 - before.1
        );
        // Longer than max_ejection_ms: the next ejection starts from the base again.
        std::thread::sleep(Duration::from_secs(5));
    }
    let failures = load.failures.lock().unwrap().clone();
    let (ok, failed) = load.finish();
    println!("total: {ok} ok, {failed} failed");
    for f in failures {
        println!("  {f}");
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
