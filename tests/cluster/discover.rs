//! DNS discovery against a DNS server on 127.0.0.1 that the test controls
//! (`common/dns.rs`): first ringway's resolver alone (every kind of answer and
//! failure), then three real `ringway run` processes whose pool comes from SRV
//! records: a record added or removed moves the ring on all three at the same applied
//! index; an address change under an SRV target moves no key; SERVFAIL, NXDOMAIN and
//! an empty answer keep the pool; a large removal is held back until it repeats.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::dns::{srv, DnsServer, Entry, Rr};
use crate::procs;
use crate::procs::{eventually, eventually_every, free_port, local, test_dir, Instance};
use ringway::config::discover::{Discover, RecordType};
use ringway::discover::{Failure, Found, Resolver, Target};
use serde_json::Value;

fn settings(dns: &str, record: RecordType) -> Discover {
    Discover {
        dns: dns.into(),
        record,
        port: (record != RecordType::Srv).then_some(8080),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        resolver: None,
        max_remove_percent: 50,
        hold_down: 3,
        weight: 1,
        id_prefix: "p-".into(),
    }
}

fn resolve(server: &DnsServer, d: &Discover) -> Result<Found, Failure> {
    let rt = procs::runtime();
    rt.block_on(Resolver::new(Some(server.addr)).discover(d))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// The addresses below are answer data only: nothing connects to them.
#[test]
fn resolver_reads_a_aaaa_and_srv_answers() {
    let server = DnsServer::start();
    server.set(
        "web.test",
        Entry::Records(vec![
            Rr::A("127.0.0.3".parse().unwrap()),
            Rr::A("127.0.0.2".parse().unwrap()),
        ]),
    );
    server.set(
        "six.test",
        Entry::Records(vec![Rr::Aaaa("::1".parse().unwrap())]),
    );
    server.set(
        "_h._tcp.web.test",
        Entry::Records(vec![srv("a.web.test", 9001), srv("b.web.test", 9002)]),
    );
    server.set(
        "a.web.test",
        Entry::Records(vec![Rr::A("127.0.0.1".parse().unwrap())]),
    );
    server.set(
        "b.web.test",
        Entry::Records(vec![Rr::A("127.0.0.1".parse().unwrap())]),
    );
    assert_eq!(
        resolve(&server, &settings("web.test", RecordType::A)),
        Ok(Found::Addresses(vec![ip("127.0.0.2"), ip("127.0.0.3")]))
    );
    assert_eq!(
        resolve(&server, &settings("six.test", RecordType::Aaaa)),
        Ok(Found::Addresses(vec![ip("::1")]))
    );
    let targets = Ok(Found::Targets(vec![
        Target {
            name: "a.web.test".into(),
            port: 9001,
            weight: 1,
            ip: ip("127.0.0.1"),
        },
        Target {
            name: "b.web.test".into(),
            port: 9002,
            weight: 1,
            ip: ip("127.0.0.1"),
        },
    ]));
    let d = settings("_h._tcp.web.test", RecordType::Srv);
    assert_eq!(resolve(&server, &d), targets);
    // Without the targets' addresses in the answer, each target is looked up.
    server.glue(false);
    let before = server.queries();
    assert_eq!(resolve(&server, &d), targets);
    assert_eq!(server.queries() - before, 3);
    // A truncated answer is asked again over TCP.
    server.truncate(true);
    assert_eq!(resolve(&server, &d), targets);
}

#[test]
fn resolver_tells_every_failure_apart() {
    let server = DnsServer::start();
    let d = settings("web.test", RecordType::A);
    server.set("web.test", Entry::ServFail);
    assert_eq!(resolve(&server, &d), Err(Failure::ServFail));
    server.set("web.test", Entry::NxDomain);
    assert_eq!(resolve(&server, &d), Err(Failure::NxDomain));
    server.set("web.test", Entry::Empty);
    assert_eq!(resolve(&server, &d), Err(Failure::Empty));
    // Records of another type only: empty too.
    server.set(
        "web.test",
        Entry::Records(vec![Rr::Aaaa("::1".parse().unwrap())]),
    );
    assert_eq!(resolve(&server, &d), Err(Failure::Empty));
    server.set("web.test", Entry::Silent);
    assert_eq!(resolve(&server, &d), Err(Failure::Timeout));
    // An SRV target that does not resolve fails nothing: it is not an upstream.
    server.set(
        "_h._tcp.web.test",
        Entry::Records(vec![srv("gone.web.test", 1), srv("a.web.test", 2)]),
    );
    server.set(
        "a.web.test",
        Entry::Records(vec![Rr::A("127.0.0.1".parse().unwrap())]),
    );
    let found = resolve(&server, &settings("_h._tcp.web.test", RecordType::Srv)).unwrap();
    assert_eq!(found.len(), 1);
    // One whose lookup fails fails the resolution: the pool is kept.
    server.set("gone.web.test", Entry::ServFail);
    assert_eq!(
        resolve(&server, &settings("_h._tcp.web.test", RecordType::Srv)),
        Err(Failure::ServFail)
    );
}

const SRV_NAME: &str = "_http._tcp.web.test";
/// Resolutions every 200 ms; a removal of more than half the pool waits for six
/// agreeing answers (over a second: long enough to see it held).
const DISCOVER: &str = "{dns: _http._tcp.web.test, type: SRV, interval_ms: 200, timeout_ms: 150, max_remove_percent: 50, hold_down: 6";

fn start_node(dir: &Path, name: &str, raft: SocketAddr, peers: &str, dns: SocketAddr) -> Instance {
    start_node_with(dir, name, raft, peers, dns, "")
}

/// [`start_node`] with more lines (`pool_extra`, indented as the pool's fields) in the
/// `web` pool.
fn start_node_with(
    dir: &Path,
    name: &str,
    raft: SocketAddr,
    peers: &str,
    dns: SocketAddr,
    pool_extra: &str,
) -> Instance {
    let (listener, admin) = (free_port(), free_port());
    let yaml = format!(
        "node: {{id: {name}, data_dir: {data:?}}}\n\
         cluster:\n  address: \"{raft}\"\n  peers: {{{peers}}}\n  heartbeat_ms: 50\n  election_timeout_ms: 500\n  secret_file: {secret:?}\n\
         listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
         pools:\n  - name: web\n    hash_key: path\n{pool_extra}    discover: {DISCOVER}, resolver: \"{dns}\"}}\n",
        data = dir.join(name).display().to_string(),
        token = dir.join("token").display().to_string(),
        secret = procs::cluster_secret(dir).display().to_string(),
    );
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, yaml).unwrap();
    let mut i = Instance {
        name: name.to_string(),
        config,
        admin: local(admin),
        listener: local(listener),
        raft,
        child: None,
    };
    i.start();
    i
}

/// The `web` pool's replicated upstreams on the instance whose admin API is at
/// `admin`, with the applied index they are from (both read from one view).
fn replicated_at(admin: SocketAddr) -> Option<(u64, BTreeMap<String, String>)> {
    let pools: Value = serde_json::from_str(&procs::http_get(admin, "/api/pools")?).ok()?;
    let list = pools["pools"][0]["replicated"].as_array()?;
    let set = list
        .iter()
        .map(|u| {
            Some((
                u["id"].as_str()?.to_owned(),
                u["address"].as_str()?.to_owned(),
            ))
        })
        .collect::<Option<_>>()?;
    Some((pools["applied"].as_u64()?, set))
}

fn replicated(i: &Instance) -> Option<(u64, BTreeMap<String, String>)> {
    replicated_at(i.admin)
}

/// What each instance showed, sampled throughout the test: applied index to the pool.
type Samples = Arc<Mutex<Vec<(String, u64, BTreeMap<String, String>)>>>;

fn sample(instances: Vec<(String, SocketAddr)>, samples: Samples, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        for (name, admin) in &instances {
            if let Some((applied, set)) = replicated_at(*admin) {
                samples.lock().unwrap().push((name.clone(), applied, set));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ids(set: &BTreeMap<String, String>) -> Vec<&str> {
    set.keys().map(String::as_str).collect()
}

/// The leader's view of discovery (`discover` of pool `web`).
fn discovery(leader: &Instance) -> Value {
    leader
        .get("/api/pools")
        .map(|p| p["pools"][0]["discover"].clone())
        .unwrap_or_default()
}

/// A discovery counter of pool `web` on one instance.
fn counter(i: &Instance, metric: &str, result: &str) -> u64 {
    let text = procs::http_get(i.admin, "/metrics").unwrap_or_default();
    let want = format!("ringway_discovery_{metric}_total{{pool=\"web\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until all three instances hold exactly `want` (ids) and route with the same
/// ring; returns the leader's index of the change.
fn settled(all: &[&Instance], want: &[&str]) -> String {
    eventually(&format!("every instance holding {want:?}"), || {
        let sets: Vec<_> = all.iter().map(|i| replicated(i)).collect::<Option<_>>()?;
        sets.iter().all(|(_, s)| ids(s) == want).then_some(())?;
        procs::same_digest(all, None)
    })
}

#[test]
fn three_instances_follow_dns_through_the_log() {
    let dir = test_dir("discover");
    let server = DnsServer::start();
    let (_rt, ups) = procs::echo_upstreams(4);
    let target = |i: usize| format!("pod-{i}.web.test");
    for i in 0..3 {
        server.set(
            &target(i),
            Entry::Records(vec![Rr::A("127.0.0.1".parse().unwrap())]),
        );
    }
    let records = |list: &[(usize, usize)]| {
        Entry::Records(
            list.iter()
                .map(|&(t, up)| srv(&target(t), ups[up].port()))
                .collect(),
        )
    };
    server.set(SRV_NAME, records(&[(0, 0), (1, 1)]));

    let names = ["n1", "n2", "n3"];
    let raft: Vec<SocketAddr> = names.iter().map(|_| local(free_port())).collect();
    let peers: Vec<String> = names
        .iter()
        .zip(&raft)
        .map(|(n, a)| format!("{n}: \"{a}\""))
        .collect();
    let peers = peers.join(", ");
    let instances: Vec<Instance> = names
        .iter()
        .zip(&raft)
        .map(|(n, r)| start_node(&dir, n, *r, &peers, server.addr))
        .collect();
    let all: Vec<&Instance> = instances.iter().collect();

    let samples: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let targets = instances
            .iter()
            .map(|i| (i.name.clone(), i.admin))
            .collect();
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || sample(targets, samples, stop))
    };

    // Discovered and agreed: the same ring everywhere.
    let two = settled(&all, &["pod-0.web.test", "pod-1.web.test"]);
    let leader_name = eventually("a leader", || procs::agreed_leader(&all));
    let leader = *all.iter().find(|i| i.name == leader_name).unwrap();
    let d = discovery(leader);
    assert_eq!(d["resolved_by"], "this instance", "{d}");
    assert_eq!(d["dns"], SRV_NAME);
    for i in all.iter().filter(|i| i.name != leader_name) {
        let d = i.get("/api/pools").unwrap()["pools"][0]["discover"].clone();
        assert_eq!(d["resolved_by"], "the leader", "{d}");
    }

    // A record added moves the ring on all three.
    server.set(SRV_NAME, records(&[(0, 0), (1, 1), (2, 2)]));
    let three = settled(
        &all,
        &["pod-0.web.test", "pod-1.web.test", "pod-2.web.test"],
    );
    assert_ne!(two, three);

    // An address change under a target moves no key: same ring, and every path that
    // pod-1 served is now served by its new address (up3), every other path as before.
    let paths: Vec<String> = (0..40).map(|k| format!("/key{k}")).collect();
    let served = |i: &Instance| -> Vec<String> {
        paths
            .iter()
            .map(|p| eventually("an answer", || i.served_by(p)))
            .collect()
    };
    let before = served(all[0]);
    assert!(
        before.iter().any(|s| s == "up1"),
        "no key on pod-1: {before:?}"
    );
    server.set(SRV_NAME, records(&[(0, 0), (1, 3), (2, 2)]));
    eventually("pod-1 at its new address on every instance", || {
        let new = ups[3].to_string();
        all.iter()
            .all(|i| replicated(i).is_some_and(|(_, s)| s["pod-1.web.test"] == new))
            .then_some(())
    });
    assert_eq!(
        settled(
            &all,
            &["pod-0.web.test", "pod-1.web.test", "pod-2.web.test"]
        ),
        three
    );
    for i in &all {
        let after = eventually("routes at the new address", || {
            let after = served(i);
            (!after.contains(&"up1".to_string())).then_some(after)
        });
        for (b, a) in before.iter().zip(&after) {
            let moved_with_pod = b == "up1" && a == "up3";
            assert!(
                b == a || moved_with_pod,
                "{}: key moved from {b} to {a}",
                i.name
            );
        }
    }

    // SERVFAIL, NXDOMAIN and an empty answer keep the pool.
    for (entry, result) in [
        (Entry::ServFail, "servfail"),
        (Entry::NxDomain, "nxdomain"),
        (Entry::Empty, "empty"),
    ] {
        let seen = counter(leader, "resolutions", result);
        server.set(SRV_NAME, entry);
        eventually(&format!("{result} counted twice"), || {
            (counter(leader, "resolutions", result) >= seen + 2).then_some(())
        });
        assert_eq!(discovery(leader)["last_result"], result);
        assert_eq!(
            settled(
                &all,
                &["pod-0.web.test", "pod-1.web.test", "pod-2.web.test"]
            ),
            three
        );
    }

    // One answer removing two of three is held back, and forgotten when the next
    // answers do not repeat it: the pool never changes.
    let full = records(&[(0, 0), (1, 3), (2, 2)]);
    server.set(SRV_NAME, full.clone());
    let held = counter(leader, "changes", "held");
    let ok = counter(leader, "resolutions", "ok");
    server.set_once(SRV_NAME, records(&[(0, 0)]));
    eventually("the removal held", || {
        (counter(leader, "changes", "held") > held).then_some(())
    });
    eventually("answers after it", || {
        (counter(leader, "resolutions", "ok") >= ok + 3).then_some(())
    });
    assert!(discovery(leader)["held"].is_null(), "{}", discovery(leader));
    assert_eq!(
        settled(
            &all,
            &["pod-0.web.test", "pod-1.web.test", "pod-2.web.test"]
        ),
        three
    );
    // The same answer six times in a row is applied: held five times, then proposed.
    let held = counter(leader, "changes", "held");
    let proposed = counter(leader, "changes", "proposed");
    server.set(SRV_NAME, records(&[(0, 0)]));
    let d = eventually("the removal held again", || {
        let d = discovery(leader);
        d["held"].is_object().then_some(d)
    });
    assert_eq!(d["held"]["needed"], 6);
    assert_eq!(
        d["held"]["removes"],
        serde_json::json!(["pod-1.web.test", "pod-2.web.test"])
    );
    settled(&all, &["pod-0.web.test"]);
    assert_eq!(counter(leader, "changes", "held") - held, 5);
    assert_eq!(counter(leader, "changes", "proposed") - proposed, 1);
    let change_index = discovery(leader)["last_change_index"].as_u64().unwrap();

    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let samples = samples.lock().unwrap();
    // The same applied index shows the same pool on every instance: each changed its
    // ring at the log index of the change, not on answers of its own.
    let mut by_index: BTreeMap<u64, (&str, &BTreeMap<String, String>)> = BTreeMap::new();
    for (name, applied, set) in samples.iter() {
        let (first, seen) = *by_index.entry(*applied).or_insert((name, set));
        assert_eq!(
            seen, set,
            "at index {applied}: {first} held {seen:?}, {name} held {set:?}"
        );
    }
    // And the last change applied at the index the leader proposed it at, everywhere.
    for (name, applied, set) in samples.iter() {
        let one = ids(set) == ["pod-0.web.test"];
        assert_eq!(
            *applied >= change_index,
            one,
            "{name} at {applied} held {set:?}"
        );
    }
    let names_seen: std::collections::BTreeSet<&str> =
        samples.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names_seen.len(), 3);
}

/// Each upstream of the `web` pool on `i` with its slow start step (`None`: full share).
fn steps(i: &Instance) -> Option<BTreeMap<String, Option<u64>>> {
    let pools = i.get("/api/pools")?;
    pools["pools"][0]["upstreams"]
        .as_array()?
        .iter()
        .map(|u| {
            Some((
                u["id"].as_str()?.to_owned(),
                u["slow_start"]["step"].as_u64(),
            ))
        })
        .collect()
}

/// An upstream a DNS answer adds to a serving pool with `slow_start_ms` ramps up
/// through every step to its full share; the first answer's upstreams start whole.
#[test]
fn an_upstream_dns_adds_to_a_serving_pool_slow_starts() {
    let dir = test_dir("discover-slow-start");
    let server = DnsServer::start();
    let (_rt, ups) = procs::echo_upstreams(3);
    let target = |i: usize| format!("pod-{i}.web.test");
    for i in 0..3 {
        server.set(
            &target(i),
            Entry::Records(vec![Rr::A("127.0.0.1".parse().unwrap())]),
        );
    }
    let records = |list: &[usize]| {
        Entry::Records(
            list.iter()
                .map(|&t| srv(&target(t), ups[t].port()))
                .collect(),
        )
    };
    server.set(SRV_NAME, records(&[0, 1]));
    let raft = local(free_port());
    let node = start_node_with(
        &dir,
        "n1",
        raft,
        &format!("n1: \"{raft}\""),
        server.addr,
        "    slow_start_ms: 3000\n    slow_start_steps: 4\n",
    );
    settled(&[&node], &["pod-0.web.test", "pod-1.web.test"]);
    let first = eventually("the pool's upstreams", || steps(&node));
    assert!(
        first.values().all(Option::is_none),
        "the first answer's upstreams ramp: {first:?}"
    );

    server.set(SRV_NAME, records(&[0, 1, 2]));
    let mut seen = std::collections::BTreeSet::new();
    eventually_every(
        "pod-2 at its full share",
        Duration::from_millis(20),
        Duration::from_secs(30),
        || {
            let now = steps(&node)?;
            match now.get("pod-2.web.test")? {
                Some(step) => {
                    seen.insert(*step);
                    None
                }
                None => (!seen.is_empty()).then_some(()),
            }
        },
    );
    assert!(
        seen.contains(&1) && seen.len() >= 3,
        "steps seen while pod-2 ramped: {seen:?}"
    );
    let last = steps(&node).unwrap();
    assert!(last.values().all(Option::is_none), "{last:?}");
}
