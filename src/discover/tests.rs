//! The decision as a pure function: old set and answer in, proposal, hold or keep out.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::config::discover::RecordType;

fn settings(record: RecordType) -> Discover {
    Discover {
        dns: "cache.test".into(),
        record,
        port: (record != RecordType::Srv).then_some(8080),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        resolver: None,
        max_remove_percent: 50,
        hold_down: 3,
        weight: 1,
        id_prefix: "cache-".into(),
    }
}

fn ips(list: &[&str]) -> Found {
    let mut v: Vec<IpAddr> = list.iter().map(|s| s.parse().unwrap()).collect();
    v.sort();
    Found::Addresses(v)
}

fn up(id: &str, address: &str) -> UpstreamSpec {
    spec(id.into(), address.into(), 1)
}

fn target(name: &str, port: u16, ip: &str) -> Target {
    Target {
        name: name.into(),
        port,
        weight: 1,
        ip: ip.parse().unwrap(),
    }
}

/// Applies a decision's command to `current` the way the state machine would.
fn applied(pool: &str, current: &[UpstreamSpec], d: &Decision) -> Vec<UpstreamSpec> {
    let Decision::Propose(cmd) = d else {
        return current.to_vec();
    };
    let mut s = crate::cluster::state::ClusterState::default();
    s.apply(&Command::SetPool {
        pool: pool.into(),
        upstreams: current.to_vec(),
    })
    .unwrap();
    s.apply(cmd).unwrap();
    let mut out = s.pool(pool).unwrap().to_vec();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[test]
fn a_new_pool_is_set_whole_with_slot_ids() {
    let d = settings(RecordType::A);
    let found = ips(&["10.0.0.2", "10.0.0.1"]);
    let decision = decide("cache", &d, None, Ok(&found), &mut None);
    assert_eq!(
        decision,
        Decision::Propose(Command::SetPool {
            pool: "cache".into(),
            upstreams: vec![
                up("cache-0", "10.0.0.1:8080"),
                up("cache-1", "10.0.0.2:8080")
            ],
        })
    );
}

#[test]
fn a_replaced_address_takes_over_the_freed_slot() {
    let d = settings(RecordType::A);
    let current = vec![
        up("cache-0", "10.0.0.1:8080"),
        up("cache-1", "10.0.0.2:8080"),
        up("cache-2", "10.0.0.3:8080"),
    ];
    let found = ips(&["10.0.0.1", "10.0.0.9", "10.0.0.3"]);
    let decision = decide("cache", &d, Some(&current), Ok(&found), &mut None);
    assert_eq!(
        decision,
        Decision::Propose(Command::Batch {
            commands: vec![Command::PutUpstream {
                pool: "cache".into(),
                upstream: up("cache-1", "10.0.0.9:8080"),
            }]
        })
    );
    let after = applied("cache", &current, &decision);
    let ids: Vec<&str> = after.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["cache-0", "cache-1", "cache-2"]);
}

#[test]
fn a_returning_address_fills_the_lowest_free_slot() {
    let d = settings(RecordType::A);
    let current = vec![
        up("cache-0", "10.0.0.1:8080"),
        up("cache-2", "10.0.0.3:8080"),
    ];
    let found = ips(&["10.0.0.1", "10.0.0.3", "10.0.0.7", "10.0.0.8"]);
    let w = wanted(&d, &current, &found).unwrap();
    let ids: Vec<&str> = w.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["cache-0", "cache-1", "cache-2", "cache-3"]);
}

#[test]
fn an_address_change_under_an_srv_target_keeps_its_id() {
    let d = settings(RecordType::Srv);
    let current = vec![
        up("pod-0.cache.test", "127.0.0.1:9000"),
        up("pod-1.cache.test", "127.0.0.1:9001"),
    ];
    let found = Found::Targets(vec![
        target("pod-0.cache.test", 9000, "127.0.0.1"),
        target("pod-1.cache.test", 9005, "127.0.0.1"),
    ]);
    let decision = decide("cache", &d, Some(&current), Ok(&found), &mut None);
    assert_eq!(
        decision,
        Decision::Propose(Command::Batch {
            commands: vec![Command::PutUpstream {
                pool: "cache".into(),
                upstream: up("pod-1.cache.test", "127.0.0.1:9005"),
            }]
        })
    );
}

#[test]
fn one_target_on_two_ports_is_two_upstreams() {
    let found = Found::Targets(vec![
        target("a.test", 1, "127.0.0.1"),
        target("a.test", 2, "127.0.0.1"),
    ]);
    let w = wanted(&settings(RecordType::Srv), &[], &found).unwrap();
    let ids: Vec<&str> = w.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["a.test:1", "a.test:2"]);
}

#[test]
fn failures_and_empty_answers_keep_the_pool() {
    let d = settings(RecordType::A);
    let current = vec![up("cache-0", "10.0.0.1:8080")];
    let empty = ips(&[]);
    let mut held = None;
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&empty), &mut held),
        Decision::Keep(Failure::Empty)
    );
    for f in [Failure::ServFail, Failure::NxDomain, Failure::Timeout] {
        assert_eq!(
            decide("cache", &d, Some(&current), Err(&f), &mut held),
            Decision::Keep(f.clone())
        );
    }
    assert_eq!(held, None);
}

#[test]
fn the_same_answer_changes_nothing() {
    let d = settings(RecordType::A);
    let current = vec![up("cache-0", "10.0.0.1:8080")];
    let found = ips(&["10.0.0.1"]);
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&found), &mut None),
        Decision::Unchanged
    );
}

#[test]
fn a_large_removal_is_held_until_it_repeats() {
    let d = settings(RecordType::A);
    let current: Vec<UpstreamSpec> = (0..4)
        .map(|i| up(&format!("cache-{i}"), &format!("10.0.0.{}:8080", i + 1)))
        .collect();
    // Half the pool: at the limit, proposed at once.
    let half = ips(&["10.0.0.1", "10.0.0.2"]);
    assert!(matches!(
        decide("cache", &d, Some(&current), Ok(&half), &mut None),
        Decision::Propose(_)
    ));
    // Three of four: held until three answers in a row agree.
    let one = ips(&["10.0.0.1"]);
    let mut held = None;
    let hold = |n| Decision::Hold { seen: n, needed: 3 };
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&one), &mut held),
        hold(1)
    );
    // A failure between them neither confirms nor forgets the held answer.
    let f = Failure::Timeout;
    assert_eq!(
        decide("cache", &d, Some(&current), Err(&f), &mut held),
        Decision::Keep(Failure::Timeout)
    );
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&one), &mut held),
        hold(2)
    );
    let decision = decide("cache", &d, Some(&current), Ok(&one), &mut held);
    assert_eq!(
        applied("cache", &current, &decision),
        vec![up("cache-0", "10.0.0.1:8080")]
    );
    assert_eq!(held, None);
}

#[test]
fn a_different_answer_restarts_the_hold_down() {
    let d = settings(RecordType::A);
    let current: Vec<UpstreamSpec> = (0..4)
        .map(|i| up(&format!("cache-{i}"), &format!("10.0.0.{}:8080", i + 1)))
        .collect();
    let mut held = None;
    let one = ips(&["10.0.0.1"]);
    let other = ips(&["10.0.0.2"]);
    let all = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    let hold = |n| Decision::Hold { seen: n, needed: 3 };
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&one), &mut held),
        hold(1)
    );
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&other), &mut held),
        hold(1)
    );
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&all), &mut held),
        Decision::Unchanged
    );
    assert_eq!(held, None);
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&other), &mut held),
        hold(1)
    );
}

#[test]
fn zero_percent_holds_every_removal_and_a_hundred_none() {
    let mut d = settings(RecordType::A);
    let current = vec![
        up("cache-0", "10.0.0.1:8080"),
        up("cache-1", "10.0.0.2:8080"),
    ];
    let one = ips(&["10.0.0.1"]);
    d.max_remove_percent = 0;
    assert!(matches!(
        decide("cache", &d, Some(&current), Ok(&one), &mut None),
        Decision::Hold { .. }
    ));
    d.max_remove_percent = 100;
    let other = ips(&["10.0.0.3"]);
    assert!(matches!(
        decide("cache", &d, Some(&current), Ok(&other), &mut None),
        Decision::Propose(_)
    ));
}

#[test]
fn an_answer_the_cluster_would_refuse_is_kept_out() {
    let d = settings(RecordType::Srv);
    let long = format!("{}.test", "a".repeat(300));
    let found = Found::Targets(vec![target(&long, 1, "127.0.0.1")]);
    assert!(matches!(
        decide("cache", &d, None, Ok(&found), &mut None),
        Decision::Keep(Failure::Unusable(_))
    ));
}

#[test]
fn a_drained_upstream_stays_drained() {
    let d = settings(RecordType::Srv);
    let mut drained = up("a.test", "127.0.0.1:1");
    drained.draining = true;
    let current = vec![drained, up("b.test", "127.0.0.1:2")];
    let found = Found::Targets(vec![
        target("a.test", 1, "127.0.0.1"),
        target("b.test", 2, "127.0.0.1"),
    ]);
    assert_eq!(
        decide("cache", &d, Some(&current), Ok(&found), &mut None),
        Decision::Unchanged
    );
}
