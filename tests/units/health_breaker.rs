//! The circuit breaker as a pure state machine with explicit time: every edge,
//! backoff growth and its cap, jitter bounds, `min_reporters` with its window,
//! `max_ejection_percent` counted after the ejection, the panic threshold; and the
//! same machine through the replicated state (commands encoded and decoded, refusals
//! identical, old encodings still read, hostile ones refused).

use proptest::prelude::*;
use ringway::cluster::state::{ClusterState, Command, Refused, UpstreamSpec};
use ringway::health::breaker::{
    Evidence, Member, Phase, Policy, PoolBreakers, Probe, Report, Reported, Signal,
};

const BASE: u64 = 1_000;
const MAX: u64 = 10_000;
const T0: u64 = 1_700_000_000_000;

fn policy() -> Policy {
    Policy {
        base_ejection_ms: BASE,
        max_ejection_ms: MAX,
        jitter_percent: 10,
        half_open_successes: 2,
        min_reporters: 1,
        report_window_ms: 5_000,
        max_ejection_percent: 100,
        panic_threshold_percent: 0,
    }
}

fn evidence() -> Evidence {
    Evidence {
        signal: Signal::ConsecutiveFailures,
        failures: 5,
        requests: 5,
    }
}

fn members<'a>(ids: &[&'a str]) -> Vec<Member<'a>> {
    ids.iter()
        .map(|id| Member {
            id,
            draining: false,
        })
        .collect()
}

fn report<'a>(id: &'a str, reporter: &'a str, at_ms: u64, policy: Policy) -> Report<'a> {
    Report {
        pool: "web",
        upstream: id,
        reporter,
        at_ms,
        evidence: evidence(),
        policy,
    }
}

/// One step of a table: what happens at which time, and what must follow.
#[derive(Debug, Clone, Copy)]
enum Step {
    Report(&'static str, &'static str, u64),
    HalfOpen(&'static str, u64),
    Passed(&'static str, u64, u32),
    Failed(&'static str, u64),
}

fn run(b: &mut PoolBreakers, m: &[Member<'_>], step: Step, p: Policy) -> Result<(), String> {
    let r = match step {
        Step::Report(id, who, at) => b.report(m, &report(id, who, at, p)).map(|_| ()),
        Step::HalfOpen(id, at) => b.half_open(m, "web", id, at),
        Step::Passed(id, at, n) => b.probe(m, "web", id, at, Probe::Passed { successes: n }, p),
        Step::Failed(id, at) => b.probe(m, "web", id, at, Probe::Failed, p),
    };
    r.map_err(|e| e.0)
}

/// Every edge of the machine, from a fresh pool of three upstreams.
#[test]
fn every_edge() {
    use Step::*;
    // (steps before, the step, accepted?, phase of "a" after, refusal mentions)
    let table: &[(&[Step], Step, bool, Phase, &str)] = &[
        (&[], Report("a", "n1", T0), true, Phase::Open, ""),
        (
            &[],
            Report("zz", "n1", T0),
            false,
            Phase::Closed,
            "no upstream",
        ),
        (&[], HalfOpen("a", T0), false, Phase::Closed, "not open"),
        (
            &[],
            Passed("a", T0, 2),
            false,
            Phase::Closed,
            "not half-open",
        ),
        (&[], Failed("a", T0), false, Phase::Closed, "not half-open"),
        // Open: not before its time; reports and probes are refused.
        (
            &[Report("a", "n1", T0)],
            HalfOpen("a", T0 + BASE - 1),
            false,
            Phase::Open,
            "ejected until",
        ),
        (
            &[Report("a", "n1", T0)],
            Report("a", "n2", T0 + 1),
            false,
            Phase::Open,
            "already ejected",
        ),
        (
            &[Report("a", "n1", T0)],
            Passed("a", T0 + 1, 2),
            false,
            Phase::Open,
            "not half-open",
        ),
        // The longest the first ejection can last: base plus 10 % jitter.
        (
            &[Report("a", "n1", T0)],
            HalfOpen("a", T0 + BASE + BASE / 10),
            true,
            Phase::HalfOpen,
            "",
        ),
        // Half-open: too few passes refused, enough close it, a failure reopens it.
        (
            &[Report("a", "n1", T0), HalfOpen("a", T0 + 2 * BASE)],
            Passed("a", T0 + 2 * BASE, 1),
            false,
            Phase::HalfOpen,
            "fewer than",
        ),
        (
            &[Report("a", "n1", T0), HalfOpen("a", T0 + 2 * BASE)],
            Passed("a", T0 + 2 * BASE, 2),
            true,
            Phase::Closed,
            "",
        ),
        (
            &[Report("a", "n1", T0), HalfOpen("a", T0 + 2 * BASE)],
            Failed("a", T0 + 2 * BASE),
            true,
            Phase::Open,
            "",
        ),
        (
            &[Report("a", "n1", T0), HalfOpen("a", T0 + 2 * BASE)],
            Report("a", "n1", T0 + 2 * BASE),
            false,
            Phase::HalfOpen,
            "already ejected",
        ),
        (
            &[Report("a", "n1", T0), HalfOpen("a", T0 + 2 * BASE)],
            HalfOpen("a", T0 + 3 * BASE),
            false,
            Phase::HalfOpen,
            "not open",
        ),
    ];
    let m = members(&["a", "b", "c"]);
    for (i, (before, step, ok, phase, why)) in table.iter().enumerate() {
        let mut b = PoolBreakers::new(policy());
        for s in *before {
            run(&mut b, &m, *s, policy()).unwrap_or_else(|e| panic!("row {i}: setup {s:?}: {e}"));
        }
        let copy = b.clone();
        let got = run(&mut b, &m, *step, policy());
        assert_eq!(got.is_ok(), *ok, "row {i}: {step:?} gave {got:?}");
        if let Err(e) = &got {
            assert!(e.contains(why), "row {i}: {e:?} should mention {why:?}");
            assert_eq!(b, copy, "row {i}: a refusal changes nothing");
        }
        assert_eq!(b.phase("a"), *phase, "row {i}: {step:?}");
    }
}

/// The n-th consecutive ejection lasts `base × n` (capped at max) plus at most
/// `jitter_percent` more; the same entry always gets the same jitter.
#[test]
fn backoff_grows_with_consecutive_ejections_and_is_capped() {
    let m = members(&["a", "b"]);
    let mut b = PoolBreakers::new(policy());
    let mut at = T0;
    b.report(&m, &report("a", "n1", at, policy())).unwrap();
    let mut lengths = Vec::new();
    for _ in 0..14 {
        let u = b.upstreams["a"].clone();
        lengths.push((u.ejections, u.until_ms - u.since_ms));
        at = u.until_ms;
        b.half_open(&m, "web", "a", at).unwrap();
        b.probe(&m, "web", "a", at, Probe::Failed, policy())
            .unwrap();
    }
    for (n, len) in &lengths {
        let backoff = (BASE * u64::from(*n)).min(MAX);
        assert!(
            (backoff..=backoff + backoff / 10).contains(len),
            "ejection {n} lasted {len} ms, backoff {backoff}"
        );
    }
    let ns: Vec<u32> = lengths.iter().map(|(n, _)| *n).collect();
    assert_eq!(ns, (1..=14).collect::<Vec<_>>());
    assert!(lengths[13].1 <= MAX + MAX / 10, "capped: {lengths:?}");
    let jitters: std::collections::BTreeSet<u64> = lengths
        .iter()
        .map(|(n, l)| l - (BASE * u64::from(*n)).min(MAX))
        .collect();
    assert!(
        jitters.len() > 1,
        "jitter varies between entries: {lengths:?}"
    );

    // Deterministic: replaying the same steps gives the same expiries.
    let replay = |p: Policy| {
        let mut b = PoolBreakers::new(p);
        b.report(&m, &report("a", "n1", T0, p)).unwrap();
        b.upstreams["a"].until_ms
    };
    assert_eq!(replay(policy()), replay(policy()));
    let no_jitter = Policy {
        jitter_percent: 0,
        ..policy()
    };
    assert_eq!(replay(no_jitter), T0 + BASE);
}

#[test]
fn ejection_counter_starts_over_after_a_long_healthy_spell() {
    let m = members(&["a", "b"]);
    let p = policy();
    let mut b = PoolBreakers::new(p);
    b.report(&m, &report("a", "n1", T0, p)).unwrap();
    let at = b.upstreams["a"].until_ms;
    b.half_open(&m, "web", "a", at).unwrap();
    b.probe(&m, "web", "a", at, Probe::Passed { successes: 2 }, p)
        .unwrap();
    // Failing again soon after readmission: a longer ejection.
    let mut soon = b.clone();
    soon.report(&m, &report("a", "n1", at + MAX - 1, p))
        .unwrap();
    assert_eq!(soon.upstreams["a"].ejections, 2);
    // After a max_ejection_ms of good behaviour: the base again.
    b.report(&m, &report("a", "n1", at + MAX, p)).unwrap();
    assert_eq!(b.upstreams["a"].ejections, 1);
}

#[test]
fn min_reporters_counts_distinct_instances_within_the_window() {
    let m = members(&["a", "b", "c"]);
    let p = Policy {
        min_reporters: 2,
        ..policy()
    };
    let window = p.report_window_ms;
    let mut b = PoolBreakers::new(p);
    let r = b.report(&m, &report("a", "n1", T0, p)).unwrap();
    assert_eq!(
        r,
        Reported::Recorded {
            reporters: 1,
            needed: 2
        }
    );
    // The same instance again is still one reporter.
    let r = b.report(&m, &report("a", "n1", T0 + 10, p)).unwrap();
    assert!(matches!(r, Reported::Recorded { reporters: 1, .. }));
    // A second instance after n1's report expired: still one.
    let late = T0 + 10 + window + 1;
    let mut expired = b.clone();
    let r = expired.report(&m, &report("a", "n2", late, p)).unwrap();
    assert!(
        matches!(r, Reported::Recorded { reporters: 1, .. }),
        "{r:?}"
    );
    assert_eq!(expired.phase("a"), Phase::Closed);
    // Within the window: ejected, and the reports are cleared.
    let r = b
        .report(&m, &report("a", "n2", T0 + 10 + window, p))
        .unwrap();
    assert!(matches!(r, Reported::Ejected { .. }), "{r:?}");
    assert_eq!(b.phase("a"), Phase::Open);
    assert!(b.upstreams["a"].reports.is_empty());
}

#[test]
fn max_ejection_percent_counts_after_the_new_ejection() {
    // (pool size, percent, ejections accepted before the first refusal)
    let table = [
        (4, 50, 2),
        (3, 50, 1),
        (2, 50, 1),
        (1, 50, 0),
        (1, 100, 1),
        (10, 10, 1),
        (9, 10, 0),
        (5, 0, 0),
        (5, 100, 5),
    ];
    let ids = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"];
    for (n, pct, allowed) in table {
        let m = members(&ids[..n]);
        let p = Policy {
            max_ejection_percent: pct,
            ..policy()
        };
        let mut b = PoolBreakers::new(p);
        let mut accepted = 0;
        for id in &ids[..n] {
            match b.report(&m, &report(id, "n1", T0, p)) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert!(e.0.contains("max_ejection_percent"), "{e}");
                    break;
                }
            }
        }
        assert_eq!(accepted, allowed, "{n} upstreams at {pct} %");
    }
}

#[test]
fn draining_upstreams_count_neither_as_healthy_nor_towards_the_cap() {
    let mut m = members(&["a", "b", "c", "d"]);
    m[3].draining = true;
    let p = Policy {
        max_ejection_percent: 34,
        ..policy()
    };
    let mut b = PoolBreakers::new(p);
    b.report(&m, &report("a", "n1", T0, p)).unwrap();
    // 2 of 3 active would be 67 %: refused even though 2 of 4 is 50 %.
    assert!(b.report(&m, &report("b", "n1", T0, p)).is_err());
}

#[test]
fn panic_mode_below_the_threshold_and_back() {
    let m = members(&["a", "b", "c", "d"]);
    let p = Policy {
        panic_threshold_percent: 50,
        ..policy()
    };
    let mut b = PoolBreakers::new(p);
    // (upstream ejected, panic after): healthy 3/4, 2/4 (50 % is not below), 1/4.
    for (id, panic) in [("a", false), ("b", false), ("c", true)] {
        b.report(&m, &report(id, "n1", T0, p)).unwrap();
        assert_eq!(b.panic, panic, "after ejecting {id}");
    }
    let at = b.upstreams["c"].until_ms;
    b.half_open(&m, "web", "c", at).unwrap();
    assert!(b.panic, "half-open still takes no traffic");
    b.probe(&m, "web", "c", at, Probe::Passed { successes: 2 }, p)
        .unwrap();
    assert!(!b.panic, "readmitted: 2 of 4 healthy");
    // Membership changes recompute it too: drop two healthy upstreams.
    b.settle(&members(&["a", "b", "c"]));
    assert!(b.panic, "1 of 3 healthy");
    assert!(!b.upstreams.contains_key("d"));
}

fn up(id: &str) -> UpstreamSpec {
    UpstreamSpec {
        id: id.into(),
        address: format!("127.0.0.1:{}", 9000 + id.len()),
        weight: 1,
        draining: false,
    }
}

fn state() -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(&Command::SetPool {
        pool: "web".into(),
        upstreams: vec![up("a"), up("bb"), up("ccc")],
    })
    .unwrap();
    s
}

fn report_cmd(id: &str, reporter: &str, at_ms: u64) -> Command {
    Command::BreakerReport {
        pool: "web".into(),
        upstream: id.into(),
        reporter: reporter.into(),
        at_ms,
        evidence: evidence(),
        policy: Policy {
            max_ejection_percent: 50,
            ..policy()
        },
    }
}

/// Two instances propose ejections at once: the log orders them, and the second
/// applies against the state the first left, so the cap holds on every instance.
#[test]
fn concurrent_ejections_cannot_overshoot_the_cap() {
    let mut s = state();
    let log = [report_cmd("a", "n1", T0), report_cmd("bb", "n2", T0)];
    let results: Vec<_> = log
        .iter()
        .map(|c| s.apply(&Command::decode(&c.encode()).unwrap()))
        .collect();
    assert!(results[0].is_ok());
    assert!(
        matches!(&results[1], Err(Refused::Invalid(why)) if why.contains("max_ejection_percent")),
        "{results:?}"
    );
    let b = s.breakers("web").unwrap();
    assert!(b.is_ejected("a") && !b.is_ejected("bb"));
}

#[test]
fn breakers_follow_membership_and_survive_encoding() {
    let mut s = state();
    s.apply(&report_cmd("a", "n1", T0)).unwrap();
    let back = ClusterState::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
    s.apply(&Command::DeleteUpstream {
        pool: "web".into(),
        id: "a".into(),
    })
    .unwrap();
    assert!(
        s.breakers("web").is_none(),
        "the upstream's breaker left with it"
    );
    assert!(!String::from_utf8(s.encode()).unwrap().contains("breakers"));
    assert!(
        s.apply(&report_cmd("a", "n1", T0)).is_err(),
        "unknown upstream"
    );
    assert!(matches!(
        s.apply(&Command::BreakerHalfOpen {
            pool: "nope".into(),
            upstream: "a".into(),
            at_ms: T0
        }),
        Err(Refused::UnknownPool(_))
    ));
}

#[test]
fn old_encodings_still_decode_and_hostile_ones_are_refused() {
    // A state written before breakers existed.
    let old = br#"{"v":1,"body":{"pools":{"web":[{"id":"a","address":"127.0.0.1:1","weight":1}]},"bootstrapped":true}}"#;
    let s = ClusterState::decode(old).unwrap();
    assert!(s.breakers("web").is_none());
    assert_eq!(ClusterState::decode(&s.encode()).unwrap(), s);
    // Without breakers the encoding is exactly what older builds wrote.
    assert!(!String::from_utf8(s.encode()).unwrap().contains("breakers"));

    // A command with an impossible policy decodes but is refused, identically.
    let mut bad = report_cmd("a", "n1", T0);
    if let Command::BreakerReport { policy, .. } = &mut bad {
        policy.max_ejection_percent = 1000;
    }
    let decoded = Command::decode(&bad.encode()).unwrap();
    assert!(
        matches!(state().apply(&decoded), Err(Refused::Invalid(why)) if why.contains("max_ejection_percent"))
    );
    // Unknown signals, fields and ops are decode errors, never panics.
    for text in [
        r#"{"v":1,"body":{"op":"breaker_report","pool":"web","upstream":"a","reporter":"n","at_ms":1,"evidence":{"signal":"vibes","failures":1,"requests":1},"policy":null}}"#,
        r#"{"v":1,"body":{"op":"breaker_half_open","pool":"web","upstream":"a","at_ms":-1}}"#,
        r#"{"v":1,"body":{"op":"breaker_probe","pool":"web","upstream":"a","at_ms":1,"probe":{"result":"maybe"}}}"#,
        r#"{"v":1,"body":{"pools":{},"breakers":{"web":{"policy":{}}}}}"#,
    ] {
        assert!(Command::decode(text.as_bytes()).is_err(), "{text}");
        assert!(ClusterState::decode(text.as_bytes()).is_err(), "{text}");
    }
    // Timestamps at the edge of u64 saturate instead of overflowing.
    let mut s = state();
    s.apply(&report_cmd("a", "n1", u64::MAX)).unwrap();
    assert_eq!(s.breakers("web").unwrap().upstreams["a"].until_ms, u64::MAX);
}

fn arb_breaker_command() -> impl Strategy<Value = Command> {
    let id = prop::sample::select(vec!["a", "bb", "ccc", "zz"]);
    let who = prop::sample::select(vec!["n1", "n2", "n3"]);
    let at = T0..T0 + 100_000;
    prop_oneof![
        (id.clone(), who, at.clone(), 1u32..4).prop_map(|(id, who, at, k)| {
            let mut c = report_cmd(id, who, at);
            if let Command::BreakerReport { policy, .. } = &mut c {
                policy.min_reporters = k;
            }
            c
        }),
        (id.clone(), at.clone()).prop_map(|(id, at)| Command::BreakerHalfOpen {
            pool: "web".into(),
            upstream: id.into(),
            at_ms: at
        }),
        (id, at, any::<bool>(), 0u32..4).prop_map(|(id, at, ok, n)| Command::BreakerProbe {
            pool: "web".into(),
            upstream: id.into(),
            at_ms: at,
            probe: if ok {
                Probe::Passed { successes: n }
            } else {
                Probe::Failed
            },
            policy: policy(),
        }),
    ]
}

proptest! {
    /// Whatever the breaker log, every instance ends in the same state, and the cap
    /// (50 % of three: one upstream) is never exceeded.
    #[test]
    fn breaker_apply_is_deterministic_and_capped(
        cmds in prop::collection::vec(arb_breaker_command(), 0..60)
    ) {
        let (mut a, mut b) = (state(), state());
        for cmd in &cmds {
            let ra = a.apply(cmd);
            let rb = b.apply(&Command::decode(&cmd.encode()).unwrap());
            prop_assert_eq!(ra, rb);
            if let Some(br) = a.breakers("web") {
                let ejected = ["a", "bb", "ccc"].iter().filter(|id| br.is_ejected(id)).count();
                prop_assert!(ejected <= 1, "{} ejected", ejected);
            }
        }
        prop_assert_eq!(a.encode(), b.encode());
        prop_assert_eq!(ClusterState::decode(&a.encode()).unwrap(), a);
    }
}
