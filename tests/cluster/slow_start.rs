//! Slow start through three real `ringway run` processes. An upstream added to the
//! pool, and one the breaker readmits, ramps up in steps that are replicated log
//! entries: every instance is polled for the ring it routes by (`ring_digest` of
//! `/api/pools`, with the upstream's `slow_start` step read from the same
//! snapshot). At every step seen, all three show the same digest; a ring built here
//! with the same partial points has that digest, so it is the ring in force, and over
//! 10,000 keys it gives the newcomer a share that only grows, to its full share,
//! while no other key moves. A single instance (no `cluster` section) ramps an
//! upstream its reloaded file adds the same way.
//!
//! `slow_start_bench` (ignored; `cargo test --test cluster -- --ignored --nocapture
//! slow_start::slow_start_bench`) measures the time from readmission to the full share
//! on all three, for the README.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::procs;
use crate::procs::{free_port, local, test_dir, Echo, Instance};
use ringway::ring::{point, Member, Ring, Share};
use serde_json::Value;

/// Every wait in this file gives up here.
const PATIENCE: Duration = Duration::from_secs(60);
/// Keys whose owners are compared step by step.
const KEYS: u32 = 10_000;
const VNODES: u32 = 150;
const STEPS: u32 = 6;
const SLOW_START_MS: u64 = 3000;

/// Active checks find a stopped upstream without client traffic; one reporter
/// ejects; short ejections and quick probes readmit it soon after it is back.
const HEALTH: &str = "      active: {path: /, interval_ms: 100, timeout_ms: 100, fall: 2, rise: 1}\n      breaker: {base_ejection_ms: 500, max_ejection_ms: 2000, half_open_successes: 2, probe_interval_ms: 100, min_reporters: 1}\n";

fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    procs::eventually_every(what, Duration::from_millis(10), PATIENCE, f)
}

/// Three instances over `upstreams`, pool `web` with slow start `ms` in `steps`.
fn cluster(dir: &Path, upstreams: &[SocketAddr], ms: u64, steps: u32) -> Vec<Instance> {
    std::fs::write(dir.join("token"), "t0ken\n").unwrap();
    let names = ["n1", "n2", "n3"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let peers: Vec<String> = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| format!("{n}: 127.0.0.1:{p}"))
        .collect();
    let ups: Vec<String> = upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{id: up{i}, address: \"{a}\"}}"))
        .collect();
    let mut nodes: Vec<Instance> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| {
            let (listener, admin) = (free_port(), free_port());
            let yaml = format!(
                "node: {{id: {name}, data_dir: {data:?}}}\n\
                 cluster:\n  address: 127.0.0.1:{port}\n  peers: {{{peers}}}\n  heartbeat_ms: 50\n  election_timeout_ms: 500\n  secret_file: {secret:?}\n\
                 listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
                 admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
                 pools:\n  - name: web\n    hash_key: path\n    vnodes: {VNODES}\n    connect_timeout_ms: 500\n    slow_start_ms: {ms}\n    slow_start_steps: {steps}\n    upstreams: [{ups}]\n    health:\n{HEALTH}",
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
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    nodes.iter_mut().for_each(Instance::assert_running);
    let all: Vec<&Instance> = nodes.iter().collect();
    eventually("the bootstrap applied on all three", || {
        procs::same_digest(&all, None)
    });
    nodes
}

/// One look at pool `web` on one instance, all from the same snapshot.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    /// Upstream ids in pool order (the ring's member order).
    ids: Vec<String>,
    digest: String,
    /// The watched upstream's step, `None` at a full share (or when absent).
    step: Option<u32>,
    /// The watched upstream is on the ring and not skipped as ejected (by the same
    /// snapshot as the digest).
    serving: bool,
}

fn look(i: &Instance, watched: &str) -> Option<Seen> {
    let pools = i.get("/api/pools")?;
    let pool = &pools["pools"][0];
    pool["replicated"].as_array()?;
    let ups = pool["upstreams"].as_array()?;
    let ids = ups
        .iter()
        .map(|u| u["id"].as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()?;
    let up = ups.iter().find(|u| u["id"] == watched);
    let step = up.and_then(|u| {
        let s = &u["slow_start"];
        assert!(s.is_null() || s["steps"] == STEPS, "{s}");
        s["step"].as_u64().map(|s| s as u32)
    });
    Some(Seen {
        ids,
        digest: pool["ring_digest"].as_str()?.to_owned(),
        step,
        serving: up.is_some_and(|u| u["ejected"] == false),
    })
}

/// What each instance showed, in order, from now until all three serve `watched` at
/// its full share after having shown at least one step of its ramp.
fn watch_ramp(nodes: &[Instance], watched: &str) -> Vec<Vec<Seen>> {
    let mut seen: Vec<Vec<Seen>> = vec![Vec::new(); nodes.len()];
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "no full share in time: {seen:?}");
        for (n, log) in nodes.iter().zip(&mut seen) {
            if let Some(s) = look(n, watched) {
                if log.last() != Some(&s) {
                    log.push(s);
                }
            }
        }
        let stepped = seen.iter().flatten().any(|s| s.step.is_some());
        let full = seen
            .iter()
            .all(|l| l.last().is_some_and(|s| s.serving && s.step.is_none()));
        if stepped && full {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Builds pool `web`'s ring as the instances do: `watched` at `share`, the others
/// full; `None` leaves `watched` off.
fn ring(ids: &[String], watched: &str, share: Option<Share>) -> (Ring, Vec<String>) {
    let ids: Vec<String> = ids
        .iter()
        .filter(|id| share.is_some() || *id != watched)
        .cloned()
        .collect();
    let members: Vec<Member> = ids.iter().map(|id| Member { id, weight: 1 }).collect();
    let at = ids.iter().position(|id| id == watched);
    let ring = Ring::build_shared(&members, VNODES, |i| match (Some(i) == at, share) {
        (true, Some(s)) => s,
        _ => Share::FULL,
    });
    (ring, ids)
}

fn digest(ring: &Ring, ids: &[String]) -> String {
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    ring.digest(&names)
}

fn owners(ring: &Ring, ids: &[String], skip: Option<&str>) -> Vec<String> {
    (0..KEYS)
        .map(|k| {
            let h = point(format!("/key/{k}").as_bytes());
            let o = ring.walk(h, 16).find(|&o| Some(ids[o].as_str()) != skip);
            ids[o.expect("an owner")].clone()
        })
        .collect()
}

/// Checks what the instances showed during `watched`'s ramp: the same digest on all
/// of them at every step, each instance's steps in order, and a local ring with the
/// same digest at each step in which `watched`'s share grows monotonically to its
/// full share from `before` (the owners before the ramp) while no other key moves.
fn check_ramp(seen: &[Vec<Seen>], watched: &str, before: &[String]) -> Vec<(u32, usize)> {
    let ids = seen[0].last().unwrap().ids.clone();
    let mut by_step: BTreeMap<u32, String> = BTreeMap::new();
    for (n, log) in seen.iter().enumerate() {
        // The entry that put it into service started the ramp: no instance ever
        // routed by a ring with its full share before the ramp ended.
        let first = log.iter().find(|s| s.serving).unwrap();
        assert!(first.step.is_some(), "instance {n}: {first:?} in {log:#?}");
        let ramp: Vec<&Seen> = log.iter().filter(|s| s.step.is_some()).collect();
        let steps: Vec<u32> = ramp.iter().filter_map(|s| s.step).collect();
        assert!(
            steps.windows(2).all(|w| w[0] < w[1]),
            "instance {n} went back: {steps:?}"
        );
        for s in ramp {
            assert_eq!(s.ids, ids, "instance {n}: the pool changed during the ramp");
            let step = s.step.unwrap();
            let agreed = by_step.entry(step).or_insert_with(|| s.digest.clone());
            assert_eq!(
                *agreed, s.digest,
                "step {step}: instance {n} has another ring"
            );
        }
    }
    assert!(!by_step.is_empty());
    eprintln!("steps seen: {:?}", by_step.keys().collect::<Vec<_>>());
    // The local ring at each step is the running one; its owners change only onto
    // the newcomer.
    let mut previous = before.to_vec();
    let mut shares = Vec::new();
    for step in 1..=STEPS {
        let share = Share { step, steps: STEPS };
        let (local, local_ids) = ring(&ids, watched, Some(share));
        if let Some(running) = by_step.get(&step) {
            assert_eq!(*running, digest(&local, &local_ids), "step {step}");
        }
        let now = owners(&local, &local_ids, None);
        for (k, (a, b)) in previous.iter().zip(&now).enumerate() {
            assert!(
                a == b || b == watched,
                "step {step}: key {k} moved from {a} to {b}"
            );
            assert!(
                a != watched || b == watched,
                "step {step}: key {k} left {watched}"
            );
        }
        shares.push((step, now.iter().filter(|o| *o == watched).count()));
        previous = now;
    }
    let (full, full_ids) = ring(&ids, watched, Some(Share::FULL));
    let last = seen[0].last().unwrap();
    assert_eq!(
        last.digest,
        digest(&full, &full_ids),
        "the full share in force"
    );
    assert!(seen.iter().all(|l| l.last().unwrap().digest == last.digest));
    eprintln!("{watched}'s keys of {KEYS} by step: {shares:?}");
    let grew = shares.windows(2).all(|w| w[0].1 <= w[1].1);
    assert!(grew, "{shares:?}");
    assert!(shares[0].1 < shares[STEPS as usize - 1].1, "{shares:?}");
    shares
}

/// `ringway_upstream_slow_start_step{pool="web",upstream=ID}` of `i`.
fn step_metric(i: &Instance, id: &str) -> Option<f64> {
    let (status, text) = procs::http_call(i.admin, "GET", "/metrics", &[], "")?;
    assert_eq!(status, 200);
    let series = format!("ringway_upstream_slow_start_step{{pool=\"web\",upstream=\"{id}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn an_added_upstream_ramps_up_the_same_on_three_instances() {
    let dir = test_dir("slowstart-add");
    let ups: Vec<Echo> = (0..4).map(|i| Echo::new(&format!("up{i}"))).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let mut nodes = cluster(&dir, &addrs[..3], SLOW_START_MS, STEPS);
    let ids: Vec<String> = (0..3).map(|i| format!("up{i}")).collect();
    let (three, three_ids) = ring(&ids, "up3", None);
    let start = look(&nodes[0], "up3").unwrap();
    assert_eq!(start.digest, digest(&three, &three_ids));
    let before = owners(&three, &three_ids, None);

    // Through a follower or the leader alike: n2's change goes to whoever leads.
    let body = format!("{{\"address\": \"{}\"}}", addrs[3]);
    let (status, answer) = nodes[1]
        .change("PUT", "/api/pools/web/upstreams/up3", &body)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    // The change is applied on n2 when it answers: the replicated step is
    // exported (the ring follows once the snapshot is rebuilt).
    let exported = step_metric(&nodes[1], "up3").unwrap();
    assert!((1.0..STEPS as f64).contains(&exported), "{exported}");
    let seen = watch_ramp(&nodes, "up3");
    check_ramp(&seen, "up3", &before);
    assert_eq!(step_metric(&nodes[0], "up3"), Some(0.0));
    nodes.iter_mut().for_each(Instance::assert_running);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The breaker state of `id` on every instance, once all three agree.
fn agreed_breaker(nodes: &[Instance], id: &str) -> Option<Value> {
    let states: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let pools = n.get("/api/pools")?;
            let ups = pools["pools"][0]["upstreams"].as_array()?.clone();
            Some(ups.into_iter().find(|u| u["id"] == id)?["breaker"].clone())
        })
        .collect::<Option<_>>()?;
    states
        .windows(2)
        .all(|w| w[0] == w[1])
        .then(|| states[0].clone())
}

/// Stops `ups[0]`, waits until all three eject it, and starts it again.
fn eject_and_restart(nodes: &[Instance], ups: &mut [Echo]) {
    ups[0].stop();
    eventually("up0 ejected on all three", || {
        agreed_breaker(nodes, "up0").filter(|b| b["state"] != "closed")
    });
    ups[0].start();
}

#[test]
fn a_readmitted_upstream_ramps_up_the_same_on_three_instances() {
    let dir = test_dir("slowstart-readmit");
    let mut ups: Vec<Echo> = (0..3).map(|i| Echo::new(&format!("up{i}"))).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let mut nodes = cluster(&dir, &addrs, SLOW_START_MS, STEPS);
    let ids: Vec<String> = (0..3).map(|i| format!("up{i}")).collect();
    // While up0 is ejected, the walk skips it: its keys are with the next upstream.
    let (full, full_ids) = ring(&ids, "up0", Some(Share::FULL));
    let ejected = owners(&full, &full_ids, Some("up0"));
    eject_and_restart(&nodes, &mut ups);
    let seen = watch_ramp(&nodes, "up0");
    let shares = check_ramp(&seen, "up0", &ejected);
    let whole = owners(&full, &full_ids, None);
    let up0_whole = whole.iter().filter(|o| *o == "up0").count();
    assert_eq!(
        shares.last().unwrap().1,
        up0_whole,
        "back to its full share"
    );
    let back = agreed_breaker(&nodes, "up0").unwrap();
    assert_eq!(back["evidence"]["signal"], "probe", "{back}");
    nodes.iter_mut().for_each(Instance::assert_running);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Time from readmission (the first look that shows the probe closed the breaker, on
/// any instance) to the full share on all three, over a few rounds.
#[test]
#[ignore]
fn slow_start_bench() {
    const ROUNDS: usize = 3;
    let settings: [(u64, u32); 2] = [(3000, 6), (10_000, 10)];
    println!("| slow_start_ms | steps | round | readmitted → full share on all three (ms) | steps seen |");
    println!("|---|---|---|---|---|");
    for (ms, steps) in settings {
        let dir = test_dir("slowstart-bench");
        let mut ups: Vec<Echo> = (0..3).map(|i| Echo::new(&format!("up{i}"))).collect();
        let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
        let nodes = cluster(&dir, &addrs, ms, steps);
        for round in 0..ROUNDS {
            eject_and_restart(&nodes, &mut ups);
            let mut readmitted: Option<Instant> = None;
            let mut steps_seen = std::collections::BTreeSet::new();
            let deadline = Instant::now() + PATIENCE;
            loop {
                assert!(Instant::now() < deadline, "no full share in time");
                let looks: Vec<Option<Value>> = nodes
                    .iter()
                    .map(|n| {
                        let pools = n.get("/api/pools")?;
                        let ups = pools["pools"][0]["upstreams"].as_array()?.clone();
                        ups.into_iter().find(|u| u["id"] == "up0")
                    })
                    .collect();
                let closed = |u: &Value| u["breaker"]["state"] == "closed";
                if readmitted.is_none() && looks.iter().flatten().any(closed) {
                    readmitted = Some(Instant::now());
                }
                for u in looks.iter().flatten() {
                    if let Some(s) = u["slow_start"]["step"].as_u64() {
                        steps_seen.insert(s);
                    }
                }
                // Read from the routing snapshot, which may lag the breaker's state.
                let full = looks.iter().all(|u| {
                    u.as_ref()
                        .is_some_and(|u| u["ejected"] == false && u["slow_start"].is_null())
                });
                if readmitted.is_some() && full {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let took = readmitted.unwrap().elapsed().as_millis();
            println!(
                "| {ms} | {steps} | {round} | {took} | {} |",
                steps_seen.len()
            );
        }
        drop(nodes);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// One instance with no `cluster` section (a group of one, the same code path): an
/// upstream its reloaded file adds ramps up too.
#[test]
fn a_single_instance_ramps_an_upstream_its_reloaded_file_adds() {
    let dir = test_dir("slowstart-single");
    let ups: Vec<Echo> = (0..4).map(|i| Echo::new(&format!("up{i}"))).collect();
    let (listener, admin) = (free_port(), free_port());
    let yaml = |n: usize| {
        let list: Vec<String> = ups[..n]
            .iter()
            .enumerate()
            .map(|(i, u)| format!("{{id: up{i}, address: \"{}\"}}", u.addr))
            .collect();
        format!(
            "node: {{id: solo, data_dir: {data:?}}}\n\
             listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
             admin: {{address: \"127.0.0.1:{admin}\"}}\n\
             pools:\n  - name: web\n    hash_key: path\n    vnodes: {VNODES}\n    slow_start_ms: {SLOW_START_MS}\n    slow_start_steps: {STEPS}\n    upstreams: [{list}]\n",
            data = dir.join("solo").display().to_string(),
            list = list.join(", "),
        )
    };
    let config = dir.join("solo.yaml");
    std::fs::write(&config, yaml(3)).unwrap();
    let mut node = Instance {
        name: "solo".into(),
        config: config.clone(),
        admin: local(admin),
        listener: local(listener),
        raft: local(free_port()),
        child: None,
    };
    node.start();
    let ids: Vec<String> = (0..3).map(|i| format!("up{i}")).collect();
    let (three, three_ids) = ring(&ids, "up3", None);
    eventually("the bootstrap applied", || {
        procs::same_digest(&[&node], None).filter(|d| *d == digest(&three, &three_ids))
    });
    let before = owners(&three, &three_ids, None);
    // Replaced whole (written beside it, then renamed), so no read sees half a file.
    let next = dir.join("solo.yaml.next");
    std::fs::write(&next, yaml(4)).unwrap();
    std::fs::rename(&next, &config).unwrap();
    let nodes = [node];
    let seen = watch_ramp(&nodes, "up3");
    check_ramp(&seen, "up3", &before);
    let [mut node] = nodes;
    node.assert_running();
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
