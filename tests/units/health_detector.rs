//! Per-instance detection with explicit time: consecutive failures, the failure rate
//! over the sliding window and its minimum volume, which classes count, trip rate
//! limiting, the local fast path (suspicion and its expiry), active check rise/fall;
//! and the data plane's candidate order: ejected upstreams skipped without moving
//! any key of a healthy upstream, panic mode, the last-resort fallback, and bounded
//! load.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use ringway::cluster::state::{ClusterState, Command, UpstreamSpec};
use ringway::config::health::{FailureClasses, Health, Passive, DEFAULT_GRPC_FAILURES};
use ringway::grpc_status::{Code, CodeSet};
use ringway::health::breaker::{Evidence, Policy, Signal};
use ringway::health::detector::{Hub, Outcome, PoolHealth, UpstreamHealth, TRIP_INTERVAL_MS};
use ringway::ring::{self, Member, Ring};

fn passive() -> Passive {
    Passive {
        consecutive_failures: 3,
        failure_rate_percent: 50,
        window: Duration::from_secs(10),
        min_requests: 10,
        classes: FailureClasses::default(),
        local_suspicion: Duration::from_millis(500),
        grpc_failures: DEFAULT_GRPC_FAILURES,
    }
}

fn slot(p: Passive) -> (Hub, UpstreamHealth) {
    let hub = Hub::default();
    let s = UpstreamHealth::new("web".into(), "a".into(), p, &hub);
    (hub, s)
}

fn trips(hub: &Hub) -> Vec<Evidence> {
    let mut rx = hub.take_trips().unwrap();
    let mut out = Vec::new();
    while let Ok(t) = rx.try_recv() {
        out.push(t.evidence);
    }
    out
}

const FAIL: Outcome = Outcome::Response(503);
const OK: Outcome = Outcome::Response(200);

#[test]
fn consecutive_failures_trip_and_a_success_resets_the_run() {
    let (hub, s) = slot(passive());
    s.record(FAIL, 1);
    s.record(FAIL, 2);
    s.record(OK, 3);
    s.record(FAIL, 4);
    s.record(FAIL, 5);
    assert_eq!(s.consecutive_failures(), 2);
    s.record(FAIL, 6);
    let t = trips(&hub);
    assert_eq!(
        t,
        [Evidence {
            signal: Signal::ConsecutiveFailures,
            failures: 3,
            requests: 3
        }]
    );
}

#[test]
fn grpc_statuses_count_as_failures_only_when_listed() {
    let (hub, s) = slot(passive());
    s.record(Outcome::Grpc(Code::Unavailable), 1);
    s.record(Outcome::Grpc(Code::Unavailable), 2);
    // An application's own error is a success for detection: the run restarts.
    s.record(Outcome::Grpc(Code::NotFound), 3);
    s.record(Outcome::Grpc(Code::Internal), 4);
    assert_eq!(s.consecutive_failures(), 0);
    for t in 5..8 {
        s.record(Outcome::Grpc(Code::Unavailable), t);
    }
    assert_eq!(trips(&hub).len(), 1);

    let mut p = passive();
    p.grpc_failures = CodeSet::of(&[Code::Internal]);
    let (hub, s) = slot(p);
    for t in 1..4 {
        s.record(Outcome::Grpc(Code::Unavailable), t);
    }
    assert_eq!(s.consecutive_failures(), 0);
    for t in 4..7 {
        s.record(Outcome::Grpc(Code::Internal), t);
    }
    assert_eq!(trips(&hub).len(), 1);
}

#[test]
fn a_failing_upstream_trips_again_only_after_the_interval_and_never_while_ejected() {
    let (hub, s) = slot(passive());
    let mut rx = hub.take_trips().unwrap();
    let mut count = |s: &UpstreamHealth, from: u64, to: u64| {
        for t in from..to {
            s.record(FAIL, t);
        }
        std::iter::from_fn(|| rx.try_recv().ok()).count()
    };
    assert_eq!(count(&s, 1, 100), 1, "one trip within the interval");
    assert_eq!(count(&s, 100 + TRIP_INTERVAL_MS, 200 + TRIP_INTERVAL_MS), 1);
    s.set_ejected(true);
    assert_eq!(count(&s, 10 * TRIP_INTERVAL_MS, 12 * TRIP_INTERVAL_MS), 0);
}

#[test]
fn failure_rate_needs_the_minimum_volume_and_forgets_old_buckets() {
    let p = Passive {
        consecutive_failures: 0,
        ..passive()
    };
    // (outcomes as (failed, at_ms), trips expected)
    let table: &[(&[(bool, u64)], usize)] = &[
        // 5 of 9 failed: under the volume.
        (
            &[
                (true, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
            ],
            0,
        ),
        // 5 of 10: 50 % at the volume.
        (
            &[
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
            ],
            1,
        ),
        // 4 of 10: under the rate.
        (
            &[
                (false, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (true, 0),
                (false, 0),
                (false, 0),
                (true, 0),
            ],
            0,
        ),
        // Ten old successes slide out of the window: 5 failures alone are under the volume.
        (
            &[
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (true, 20_000),
                (true, 20_000),
                (true, 20_000),
                (true, 20_000),
                (true, 20_000),
            ],
            0,
        ),
        // ...but within the window they dilute the rate: 5 of 15.
        (
            &[
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (false, 0),
                (true, 5_000),
                (true, 5_000),
                (true, 5_000),
                (true, 5_000),
                (true, 5_000),
            ],
            0,
        ),
    ];
    for (i, (outcomes, expected)) in table.iter().enumerate() {
        let (hub, s) = slot(p);
        for &(failed, at) in *outcomes {
            s.record(if failed { FAIL } else { OK }, at);
        }
        let t = trips(&hub);
        assert_eq!(
            t.len(),
            *expected,
            "row {i}: {t:?} window {:?}",
            s.window(20_000)
        );
        assert!(t.iter().all(|e| e.signal == Signal::FailureRate));
    }
}

#[test]
fn only_the_configured_classes_count() {
    let outcomes = [
        (Outcome::Response(500), "5xx"),
        (Outcome::Response(404), "none"),
        (Outcome::Connect { suspect: false }, "connect"),
        (Outcome::Timeout, "timeout"),
        (Outcome::Reset, "reset"),
    ];
    let only = |class: &str| FailureClasses {
        connect: class == "connect",
        timeout: class == "timeout",
        reset: class == "reset",
        status_5xx: class == "5xx",
    };
    for class in ["5xx", "connect", "timeout", "reset"] {
        for (outcome, its) in outcomes {
            let (hub, s) = slot(Passive {
                classes: only(class),
                ..passive()
            });
            for t in 0..3 {
                s.record(outcome, t);
            }
            assert_eq!(
                trips(&hub).len(),
                usize::from(its == class),
                "{outcome:?} when counting only {class}"
            );
        }
    }
}

#[test]
fn refused_connections_make_it_suspect_here_until_the_expiry_or_a_response() {
    let (_hub, s) = slot(passive());
    assert!(!s.is_suspect(0));
    // 50, 100, 200, 400 ms, then capped at local_suspicion_ms (500).
    let mut at = 1000;
    for len in [50, 100, 200, 400, 500, 500] {
        s.record(Outcome::Connect { suspect: true }, at);
        assert!(s.is_suspect(at));
        assert!(s.is_suspect(at + len - 1));
        assert!(!s.is_suspect(at + len), "the suspicion of {len} ms expires");
        at += len;
    }
    s.record(Outcome::Connect { suspect: true }, 2000);
    s.record(OK, 2001);
    assert!(!s.is_suspect(2002), "a response clears it");
    // A failure that is not a refused or timed-out connect does not.
    s.record(Outcome::Connect { suspect: false }, 3000);
    assert!(!s.is_suspect(3000));
}

#[test]
fn active_checks_fall_trip_and_rise() {
    let (hub, s) = slot(passive());
    s.record_check(false, 2, 3, 1);
    s.record_check(false, 2, 3, 2);
    assert!(!s.is_suspect(3));
    s.record_check(false, 2, 3, 3);
    assert!(s.is_suspect(3), "down here after `fall` failures");
    s.record_check(true, 2, 3, 4);
    assert!(s.is_suspect(4), "one pass is not `rise`");
    s.record_check(true, 2, 3, 5);
    assert!(!s.is_suspect(5));
    let t = trips(&hub);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].signal, Signal::ActiveCheck);
}

const IDS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];

fn ring() -> Ring {
    let members: Vec<Member> = IDS.iter().map(|id| Member { id, weight: 1 }).collect();
    Ring::build(&members, 150)
}

fn cluster(ejected: &[&str], policy: Policy) -> ClusterState {
    let mut s = ClusterState::default();
    let ups = IDS
        .iter()
        .enumerate()
        .map(|(i, id)| UpstreamSpec {
            id: id.to_string(),
            address: format!("127.0.0.1:{}", 9000 + i),
            weight: 1,
            draining: false,
        })
        .collect();
    s.apply(&Command::SetPool {
        pool: "web".into(),
        upstreams: ups,
    })
    .unwrap();
    for id in ejected {
        s.apply(&Command::BreakerReport {
            pool: "web".into(),
            upstream: id.to_string(),
            reporter: "n1".into(),
            at_ms: 1,
            evidence: Evidence {
                signal: Signal::ConsecutiveFailures,
                failures: 5,
                requests: 5,
            },
            policy,
        })
        .unwrap();
    }
    s
}

fn health(state: &ClusterState, factor: Option<u32>) -> PoolHealth {
    let ids: Vec<Arc<str>> = IDS.iter().map(|&i| i.into()).collect();
    PoolHealth::build(
        &"web".into(),
        &ids,
        &Health::default(),
        factor,
        state.breakers("web"),
        None,
        &Hub::default(),
    )
}

fn open_policy() -> Policy {
    Policy {
        max_ejection_percent: 100,
        panic_threshold_percent: 0,
        ..Policy::default()
    }
}

proptest! {
    /// Ejecting upstreams moves only the keys they owned: every other key keeps its
    /// upstream, and an ejected upstream's keys go to the next healthy one on the
    /// ring walk.
    #[test]
    fn ejection_moves_only_the_keys_of_ejected_upstreams(
        mask in 0u8..63, keys in prop::collection::vec(any::<u32>(), 1..200)
    ) {
        let ejected: Vec<&str> = IDS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, id)| *id).collect();
        let r = ring();
        let h = health(&cluster(&ejected, open_policy()), None);
        for key in keys {
            let owner = r.lookup(key).unwrap();
            let first = h.candidates(&r, key, 3, 0).next().unwrap();
            if ejected.contains(&IDS[owner]) {
                let next = r.walk(key, 16).find(|&i| !ejected.contains(&IDS[i])).unwrap();
                prop_assert_eq!(first, next);
            } else {
                prop_assert_eq!(first, owner, "a healthy upstream's key moved");
            }
        }
    }
}

#[test]
fn everything_unhealthy_falls_back_to_the_plain_walk_and_panic_routes_to_all() {
    let r = ring();
    let key = ring::point(b"/some/key");
    let walk: Vec<usize> = r.walk(key, 3).collect();
    // All six ejected (a 100 % cap, no panic threshold): the walk as a last resort.
    let h = health(&cluster(&IDS, open_policy()), None);
    assert_eq!(h.candidates(&r, key, 3, 0).collect::<Vec<_>>(), walk);
    // Healthy ones come first, then the rest, at most `limit` in all.
    let h = health(&cluster(&IDS[1..], open_policy()), None);
    let got: Vec<usize> = h.candidates(&r, key, 3, 0).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], 0, "the only healthy upstream first");
    // Panic mode: nothing is skipped.
    let panicky = Policy {
        panic_threshold_percent: 50,
        ..open_policy()
    };
    let state = cluster(&IDS[..4], panicky);
    assert!(state.breakers("web").unwrap().panic);
    let h = health(&state, None);
    assert!(h.panic);
    assert_eq!(h.candidates(&r, key, 3, 0).collect::<Vec<_>>(), walk);
}

/// An attempt that makes its upstream suspect mid-walk (as a refused connect does)
/// must not get that upstream tried twice.
#[test]
fn an_upstream_turning_suspect_mid_walk_is_not_yielded_again() {
    let r = ring();
    let key = ring::point(b"k2");
    let h = health(&ClusterState::default(), None);
    let mut tried = Vec::new();
    for i in h.candidates(&r, key, 16, 100) {
        h.record(i, Outcome::Connect { suspect: true }, 100);
        tried.push(i);
    }
    let mut distinct = tried.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(tried.len(), distinct.len(), "{tried:?}");
    assert_eq!(tried, r.walk(key, 16).collect::<Vec<_>>());
}

#[test]
fn suspect_upstreams_are_skipped_here_at_once() {
    let r = ring();
    let key = ring::point(b"k");
    let owner = r.lookup(key).unwrap();
    let h = health(&ClusterState::default(), None);
    h.record(owner, Outcome::Connect { suspect: true }, 100);
    let first = h.candidates(&r, key, 3, 100).next().unwrap();
    assert_ne!(first, owner);
    assert_eq!(first, r.walk(key, 2).nth(1).unwrap());
    let later = 100 + ringway::health::detector::SUSPICION_FIRST_MS;
    assert_eq!(h.candidates(&r, key, 3, later).next(), Some(owner));
}

#[test]
fn bounded_load_passes_the_key_on_from_an_upstream_over_the_bound() {
    let r = ring();
    let key = ring::point(b"hot");
    let walk: Vec<usize> = r.walk(key, 6).collect();
    let h = health(&ClusterState::default(), Some(125));
    // Six in flight on the key's owner, none elsewhere: the bound is
    // ceil(1.25 × 7 / 6) = 2, so the owner passes the key to the next upstream.
    let held: Vec<_> = (0..6).map(|_| h.begin(walk[0]).unwrap()).collect();
    assert_eq!(h.slots[walk[0]].inflight(), 6);
    assert_eq!(h.candidates(&r, key, 3, 0).next(), Some(walk[1]));
    drop(held);
    assert_eq!(h.slots[walk[0]].inflight(), 0);
    assert_eq!(h.inflight.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(h.candidates(&r, key, 3, 0).next(), Some(walk[0]));
    // Off by default: load never moves a key.
    let off = health(&ClusterState::default(), None);
    let _held: Vec<_> = (0..6).map(|_| off.begin(walk[0]).unwrap()).collect();
    assert_eq!(off.candidates(&r, key, 3, 0).next(), Some(walk[0]));
}
