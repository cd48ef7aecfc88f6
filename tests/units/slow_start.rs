//! Slow start without processes: the ring with partial shares (a growing share only
//! adds points; a full share is today's ring) and the replicated ramps (started in
//! the entry that adds or readmits, stepped in order, ended by removal, draining or
//! ejection).

use std::collections::BTreeMap;

use proptest::prelude::*;
use ringway::cluster::state::{ClusterState, Command, Ramp, UpstreamSpec};
use ringway::config::{Config, SlowStart};
use ringway::health::breaker::{Evidence, Policy, Probe, Signal};
use ringway::proxy::Snapshot;
use ringway::ring::{point, Member, Ring, Share};

const KEYS: u32 = 10_000;

fn ids(n: usize, salt: u64) -> Vec<String> {
    (0..n).map(|i| format!("up-{salt}-{i}")).collect()
}

/// The ring of `ids` where member `partial` owns `share` of its points.
fn ring_with(ids: &[String], partial: usize, share: Share) -> Ring {
    let m: Vec<Member> = ids.iter().map(|id| Member { id, weight: 1 }).collect();
    Ring::build_shared(&m, 150, |i| if i == partial { share } else { Share::FULL })
}

fn key(k: u32) -> u32 {
    point(format!("/key/{k}").as_bytes())
}

/// The first upstream of the walk from `k` that is not `skipped`.
fn owner_skipping(ring: &Ring, k: u32, skipped: Option<usize>) -> usize {
    ring.walk(key(k), 16)
        .find(|&o| Some(o) != skipped)
        .expect("another upstream")
}

#[test]
fn share_points_round_up_and_end_full() {
    let s = |step, steps| Share { step, steps };
    assert_eq!(s(1, 6).points(150), 25);
    assert_eq!(s(1, 7).points(150), 22, "ceil(150 / 7)");
    assert_eq!(s(7, 7).points(150), 150);
    assert_eq!(s(9, 7).points(150), 150);
    assert_eq!(Share::FULL.points(150), 150);
    assert_eq!(
        s(1, 100).points(1),
        1,
        "a ramping member always owns a point"
    );
}

#[test]
fn full_shares_are_exactly_the_plain_ring() {
    let ids = ids(5, 7);
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let m: Vec<Member> = ids.iter().map(|id| Member { id, weight: 2 }).collect();
    let plain = Ring::build(&m, 150);
    for share in [Share::FULL, Share { step: 6, steps: 6 }] {
        let built = Ring::build_shared(&m, 150, |_| share);
        assert_eq!(built.digest(&names), plain.digest(&names));
        assert!((0..5).all(|i| built.share(i).is_full()));
    }
    let partial = ring_with(&ids, 2, Share { step: 1, steps: 3 });
    assert_eq!(partial.share(2), Share { step: 1, steps: 3 });
    assert!(partial.share(1).is_full());
    assert_eq!(partial.points_per_member()[2], 50);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Step by step, a joining upstream only takes keys, and a key that moves
    /// always moves onto it: never between two others.
    #[test]
    fn a_growing_share_only_takes_keys(n in 2usize..10, steps in 2u32..12, salt in any::<u64>()) {
        let mut all = ids(n, salt);
        all.push(format!("new-{salt}"));
        let newcomer = n;
        let without = {
            let m: Vec<Member> = all[..n].iter().map(|id| Member { id, weight: 1 }).collect();
            Ring::build(&m, 150)
        };
        let mut before: Vec<usize> = (0..KEYS).map(|k| without.lookup(key(k)).unwrap()).collect();
        let mut taken = 0;
        for step in 1..=steps {
            let ring = ring_with(&all, newcomer, Share { step, steps });
            let mut now_taken = 0;
            for k in 0..KEYS {
                let owner = ring.lookup(key(k)).unwrap();
                let was = before[k as usize];
                if owner != was {
                    prop_assert_eq!(owner, newcomer, "key {} moved from {} to {}", k, was, owner);
                }
                now_taken += usize::from(owner == newcomer);
                before[k as usize] = owner;
            }
            prop_assert!(now_taken >= taken, "share shrank at step {}", step);
            taken = now_taken;
        }
        let names: Vec<&str> = all.iter().map(String::as_str).collect();
        let full = ring_with(&all, newcomer, Share::FULL);
        let last = ring_with(&all, newcomer, Share { step: steps, steps });
        prop_assert_eq!(last.digest(&names), full.digest(&names));
    }

    /// While ejected, an upstream is skipped by the walk and its keys go to the next
    /// upstream on the ring. Readmitted with a partial share, every key it does not
    /// own yet stays exactly where the ejection put it.
    #[test]
    fn a_readmitted_upstream_takes_back_only_its_own_keys(n in 3usize..10, steps in 2u32..10, back in 0usize..10, salt in any::<u64>()) {
        let all = ids(n, salt);
        let back = back % n;
        let full = ring_with(&all, back, Share::FULL);
        let ejected: Vec<usize> = (0..KEYS).map(|k| owner_skipping(&full, k, Some(back))).collect();
        let home: Vec<usize> = (0..KEYS).map(|k| full.lookup(key(k)).unwrap()).collect();
        let mut mine_before = 0;
        for step in 1..=steps {
            let ring = ring_with(&all, back, Share { step, steps });
            let mut mine = 0;
            for k in 0..KEYS {
                let owner = ring.lookup(key(k)).unwrap();
                if owner == back {
                    prop_assert_eq!(home[k as usize], back, "it only takes back its own keys");
                    mine += 1;
                } else {
                    prop_assert_eq!(owner, ejected[k as usize], "key {} left where the ejection put it", k);
                }
            }
            prop_assert!(mine >= mine_before);
            mine_before = mine;
        }
    }
}

// ---- the replicated ramps ----

fn up(id: &str, port: u16) -> UpstreamSpec {
    UpstreamSpec {
        id: id.into(),
        address: format!("127.0.0.1:{port}"),
        weight: 1,
        draining: false,
    }
}

const SIX: SlowStart = SlowStart {
    duration_ms: 3000,
    steps: 6,
};

fn slow(pool: &str, s: SlowStart, at_ms: u64, command: Command) -> Command {
    Command::SlowStart {
        pools: BTreeMap::from([(pool.to_owned(), s)]),
        at_ms,
        command: Box::new(command),
    }
}

fn put(upstream: UpstreamSpec) -> Command {
    Command::PutUpstream {
        pool: "web".into(),
        upstream,
    }
}

fn step(upstream: &str, step: u32, at_ms: u64) -> Command {
    Command::SlowStartStep {
        pool: "web".into(),
        upstream: upstream.into(),
        step,
        at_ms,
    }
}

/// Pool `web` with `a` and `b` in service.
fn two() -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(&Command::SetPool {
        pool: "web".into(),
        upstreams: vec![up("a", 1), up("b", 2)],
    })
    .unwrap();
    s
}

fn ramp(s: &ClusterState, id: &str) -> Option<Ramp> {
    s.ramp("web", id).copied()
}

#[test]
fn the_entry_that_adds_an_upstream_starts_its_ramp() {
    let mut s = two();
    s.apply(&slow("web", SIX, 1000, put(up("c", 3)))).unwrap();
    assert_eq!(
        ramp(&s, "c"),
        Some(Ramp {
            step: 1,
            steps: 6,
            duration_ms: 3000,
            at_ms: 1000
        })
    );
    assert_eq!(ramp(&s, "a"), None);
    assert_eq!(
        s.ramp("web", "c").unwrap().next_due_ms(),
        1600,
        "3000 ms over 5 waits"
    );
    // An update of an upstream already in service keeps its ramp as it is.
    let mut heavier = up("c", 3);
    heavier.weight = 2;
    s.apply(&slow("web", SIX, 1200, put(heavier))).unwrap();
    assert_eq!(ramp(&s, "c").unwrap().at_ms, 1000);
    // Without the wrapper (slow start off where it was proposed) no ramp starts.
    s.apply(&put(up("d", 4))).unwrap();
    assert_eq!(ramp(&s, "d"), None);
}

#[test]
fn a_new_pool_and_the_bootstrap_do_not_ramp() {
    let mut s = ClusterState::default();
    let pool = Command::SetPool {
        pool: "web".into(),
        upstreams: vec![up("a", 1), up("b", 2)],
    };
    s.apply(&slow("web", SIX, 1, pool)).unwrap();
    assert_eq!(s.ramps().count(), 0, "a new pool has no traffic to shift");
    // A whole new list for an existing pool ramps only the ids it adds.
    let replaced = Command::SetPool {
        pool: "web".into(),
        upstreams: vec![up("a", 1), up("c", 3), up("d", 4)],
    };
    s.apply(&slow("web", SIX, 2, replaced)).unwrap();
    let ramping: Vec<&str> = s.ramps().map(|(_, id, _)| id).collect();
    assert_eq!(ramping, ["c", "d"]);
}

#[test]
fn steps_apply_in_order_and_stale_or_duplicate_ones_are_refused() {
    let mut s = two();
    s.apply(&slow("web", SIX, 1000, put(up("c", 3)))).unwrap();
    s.apply(&step("c", 2, 1500)).unwrap();
    assert_eq!(ramp(&s, "c").unwrap().step, 2);
    assert_eq!(ramp(&s, "c").unwrap().at_ms, 1500);
    let before = s.clone();
    for (bad, why) in [
        (step("c", 2, 1600), "not the next"),
        (step("c", 4, 1600), "not the next"),
        (step("a", 2, 1600), "not in slow start"),
        (step("c", 1, 1600), "from 2 to"),
    ] {
        let e = s.apply(&bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
        assert_eq!(s, before, "a refused step changes nothing");
    }
    for k in 3..6 {
        s.apply(&step("c", k, 1000 + 500 * u64::from(k))).unwrap();
    }
    assert_eq!(ramp(&s, "c").unwrap().step, 5);
    s.apply(&step("c", 6, 4000)).unwrap();
    assert_eq!(ramp(&s, "c"), None, "the last step ends the ramp");
    assert!(s.apply(&step("c", 7, 4500)).is_err());
}

fn report(upstream: &str) -> Command {
    Command::BreakerReport {
        pool: "web".into(),
        upstream: upstream.into(),
        reporter: "n1".into(),
        at_ms: 2000,
        evidence: Evidence {
            signal: Signal::ConsecutiveFailures,
            failures: 5,
            requests: 5,
        },
        policy: Policy::default(),
    }
}

fn readmit(upstream: &str, at_ms: u64) -> [Command; 2] {
    let half_open = Command::BreakerHalfOpen {
        pool: "web".into(),
        upstream: upstream.into(),
        at_ms,
    };
    let passed = Command::BreakerProbe {
        pool: "web".into(),
        upstream: upstream.into(),
        at_ms,
        probe: Probe::Passed { successes: 3 },
        policy: Policy::default(),
    };
    [half_open, slow("web", SIX, at_ms, passed)]
}

#[test]
fn an_ejection_ends_the_ramp_and_the_readmission_starts_it_again() {
    let mut s = two();
    s.apply(&slow("web", SIX, 1000, put(up("c", 3)))).unwrap();
    s.apply(&step("c", 2, 1500)).unwrap();
    s.apply(&report("c")).unwrap();
    assert!(s.breakers("web").unwrap().is_ejected("c"));
    assert_eq!(ramp(&s, "c"), None, "an ejected upstream has no ramp");
    let [half_open, passed] = readmit("c", 10_000_000);
    s.apply(&half_open).unwrap();
    assert_eq!(ramp(&s, "c"), None, "half-open takes no traffic yet");
    s.apply(&passed).unwrap();
    assert!(!s.breakers("web").unwrap().is_ejected("c"));
    assert_eq!(ramp(&s, "c").unwrap().step, 1);
    assert_eq!(ramp(&s, "c").unwrap().at_ms, 10_000_000);
    // A readmission of an upstream that joined unramped ramps it too.
    s.apply(&report("a")).unwrap();
    let [half_open, passed] = readmit("a", 20_000_000);
    s.apply(&half_open).unwrap();
    s.apply(&passed).unwrap();
    assert_eq!(ramp(&s, "a").unwrap().step, 1);
}

#[test]
fn removal_and_draining_end_the_ramp_and_a_return_starts_it_again() {
    let mut s = two();
    s.apply(&slow("web", SIX, 1000, put(up("c", 3)))).unwrap();
    s.apply(&step("c", 2, 1500)).unwrap();
    s.apply(&Command::DeleteUpstream {
        pool: "web".into(),
        id: "c".into(),
    })
    .unwrap();
    assert_eq!(ramp(&s, "c"), None);
    s.apply(&slow("web", SIX, 3000, put(up("c", 3)))).unwrap();
    assert_eq!(ramp(&s, "c").unwrap().step, 1, "a re-add starts over");
    let mut draining = up("c", 3);
    draining.draining = true;
    s.apply(&slow("web", SIX, 3100, put(draining))).unwrap();
    assert_eq!(ramp(&s, "c"), None, "draining takes it off the ring");
    s.apply(&slow("web", SIX, 3200, put(up("c", 3)))).unwrap();
    assert_eq!(
        ramp(&s, "c").unwrap().at_ms,
        3200,
        "back on the ring: ramps"
    );
    s.apply(&Command::RemovePool { pool: "web".into() })
        .unwrap();
    assert_eq!(s.ramps().count(), 0);
}

#[test]
fn a_batch_ramps_only_the_pools_with_slow_start() {
    let mut s = two();
    s.apply(&Command::SetPool {
        pool: "api".into(),
        upstreams: vec![up("x", 5)],
    })
    .unwrap();
    let batch = Command::Batch {
        commands: vec![
            put(up("c", 3)),
            Command::PutUpstream {
                pool: "api".into(),
                upstream: up("y", 6),
            },
        ],
    };
    let on = |pool: &str| (pool == "web").then_some(SIX);
    let wrapped = batch.clone().with_slow_start(on, 77);
    s.apply(&wrapped).unwrap();
    assert_eq!(ramp(&s, "c").unwrap().at_ms, 77);
    assert_eq!(s.ramp("api", "y"), None);
    // Off everywhere: the command is left as it was, readable by older versions.
    let off = batch
        .clone()
        .with_slow_start(|_| Some(SlowStart::default()), 77);
    assert_eq!(off, batch);
    let text = String::from_utf8(put(up("c", 3)).encode()).unwrap();
    assert!(!text.contains("slow"), "{text}");
}

#[test]
fn bad_settings_and_wrappings_are_refused() {
    let bad = |s: SlowStart| slow("web", s, 1, put(up("c", 3))).validate().unwrap_err();
    let e = bad(SlowStart {
        duration_ms: 3_600_001,
        steps: 6,
    });
    assert!(e.to_string().contains("at most 3600000"), "{e}");
    let e = bad(SlowStart {
        duration_ms: 3000,
        steps: 1,
    });
    assert!(e.to_string().contains("from 2 to 100"), "{e}");
    let e = bad(SlowStart {
        duration_ms: 500,
        steps: 10,
    });
    assert!(e.to_string().contains("at least 100 ms"), "{e}");
    let e = bad(SlowStart {
        duration_ms: 0,
        steps: 10,
    });
    assert!(e.to_string().contains("above 0"), "{e}");
    let nested = slow("web", SIX, 1, step("c", 2, 1));
    assert!(nested.validate().is_err());
}

#[test]
fn ramps_survive_the_snapshot_and_old_snapshots_decode() {
    let mut s = two();
    let old = s.encode();
    assert!(!String::from_utf8_lossy(&old).contains("ramps"));
    assert_eq!(ClusterState::decode(&old).unwrap(), s);
    s.apply(&slow("web", SIX, 1000, put(up("c", 3)))).unwrap();
    let bytes = s.encode();
    assert_eq!(ClusterState::decode(&bytes).unwrap(), s);
    let text = String::from_utf8(bytes).unwrap();
    let corrupt = text.replace("\"step\":1", "\"step\":6");
    assert_ne!(corrupt, text);
    let e = ClusterState::decode(corrupt.as_bytes()).unwrap_err();
    assert!(
        e.to_string().contains("slow start of upstream \"c\""),
        "{e}"
    );
}

#[test]
fn the_snapshot_ring_holds_the_replicated_share() {
    let config = Config::parse(include_str!("../../config.example.yaml")).unwrap();
    let mut s = ClusterState::default();
    s.apply(&ClusterState::bootstrap_command(&config)).unwrap();
    s.apply(&slow("web", SIX, 1000, put(up("c", 3)))).unwrap();
    s.apply(&step("c", 2, 1500)).unwrap();
    let committed = ringway::control::follow::Committed {
        state: &s,
        joining: false,
    };
    let snap = Snapshot::build_with(&config, Some(&committed), None);
    let pool = snap.pool("web").unwrap();
    let at = pool.upstreams.iter().position(|u| &*u.id == "c").unwrap();
    assert_eq!(pool.ring.share(at), Share { step: 2, steps: 6 });
    assert_eq!(pool.ring.points_per_member()[at], 50);
}

#[test]
fn the_file_bounds_slow_start() {
    let with = |extra: &str| {
        let text = include_str!("../../config.example.yaml").replacen(
            "    vnodes: 150\n",
            &format!("    vnodes: 150\n{extra}"),
            1,
        );
        Config::parse(&text)
    };
    let c = with("    slow_start_ms: 3000\n    slow_start_steps: 6\n").unwrap();
    assert_eq!(c.pools[0].slow_start, SIX);
    assert_eq!(with("").unwrap().pools[0].slow_start, SlowStart::default());
    for (extra, why) in [
        (
            "    slow_start_ms: 3600001\n",
            "pools[0].slow_start_ms: must be at most 3600000",
        ),
        (
            "    slow_start_steps: 1\n",
            "pools[0].slow_start_steps: must be at least 2",
        ),
        (
            "    slow_start_steps: 101\n",
            "pools[0].slow_start_steps: must be at most 100",
        ),
        (
            "    slow_start_ms: 500\n",
            "pools[0].slow_start_ms: slow_start_ms / (slow_start_steps - 1) must be at least 100 ms",
        ),
    ] {
        let e = with(extra).unwrap_err().to_string();
        assert!(e.contains(why), "{extra}: {e}");
    }
}
