//! The checker has teeth: with a classic Raft bug switched on in the core, the simulator
//! finds a violation within the default seed budget. Each test stops at the first failing seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ringway::raft::sim::{run, SimConfig, Violation};
use ringway::raft::BugInjection;

/// Seeds tried per bug before the test fails; each test stops at its first violation
/// (the rarest, the Figure 8 bug, first fails at seed 1715).
const SEED_BUDGET: u64 = 4000;
const THREADS: u64 = 2;

/// The lowest failing seed with `bugs` switched on, if any within the budget.
fn first_violation(bugs: BugInjection) -> Option<Violation> {
    first_violation_with(bugs, true)
}

fn first_violation_with(bugs: BugInjection, durable_vote_check: bool) -> Option<Violation> {
    let next = AtomicU64::new(0);
    let found: Mutex<Option<Violation>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= SEED_BUDGET
                    || found
                        .lock()
                        .unwrap()
                        .as_ref()
                        .is_some_and(|v| v.seed < seed)
                {
                    break;
                }
                let mut cfg = SimConfig::for_seed(seed);
                cfg.bugs = bugs;
                cfg.durable_vote_check = durable_vote_check;
                if let Err(v) = run(&cfg) {
                    let mut f = found.lock().unwrap();
                    if f.as_ref().is_none_or(|old| v.seed < old.seed) {
                        *f = Some(v);
                    }
                }
            });
        }
    });
    found.into_inner().unwrap()
}

fn assert_caught(name: &str, bugs: BugInjection) {
    report(name, first_violation(bugs));
}

/// Same, with only the symptom checks (no durable-vote check).
fn assert_caught_by_symptoms(name: &str, bugs: BugInjection) {
    report(name, first_violation_with(bugs, false));
}

fn report(name: &str, found: Option<Violation>) {
    match found {
        Some(v) => println!("{name}: caught at seed={} t={}: {}", v.seed, v.time, v.what),
        None => panic!("{name}: no violation in {SEED_BUDGET} seeds; the checker missed the bug"),
    }
}

#[test]
fn catches_commit_of_old_term_entry_by_counting_replicas() {
    let bugs = BugInjection {
        commit_old_term_by_count: true,
        ..Default::default()
    };
    assert_caught("commit_old_term_by_count", bugs);
}

#[test]
fn catches_vote_forgotten_across_restart() {
    let bugs = BugInjection {
        forget_vote_on_restart: true,
        ..Default::default()
    };
    assert_caught("forget_vote_on_restart", bugs);
}

#[test]
fn vote_forgotten_across_restart_yields_two_leaders_in_a_term() {
    let bugs = BugInjection {
        forget_vote_on_restart: true,
        ..Default::default()
    };
    assert_caught_by_symptoms("forget_vote_on_restart (symptoms only)", bugs);
}

#[test]
fn second_vote_in_a_term_yields_two_leaders_in_a_term() {
    let bugs = BugInjection {
        vote_twice_in_term: true,
        ..Default::default()
    };
    assert_caught_by_symptoms("vote_twice_in_term (symptoms only)", bugs);
}

#[test]
fn catches_vote_granted_to_shorter_log() {
    let bugs = BugInjection {
        vote_for_shorter_log: true,
        ..Default::default()
    };
    assert_caught("vote_for_shorter_log", bugs);
}

#[test]
fn catches_second_vote_in_a_term() {
    let bugs = BugInjection {
        vote_twice_in_term: true,
        ..Default::default()
    };
    assert_caught("vote_twice_in_term", bugs);
}

#[test]
fn catches_append_without_prev_term_check() {
    let bugs = BugInjection {
        skip_prev_term_check: true,
        ..Default::default()
    };
    assert_caught("skip_prev_term_check", bugs);
}

/// The leader sends its entries before they are on its own disk; counting them toward
/// the commit quorum before the write completes lets a crash of the leader lose an
/// entry already reported committed.
#[test]
fn catches_leader_counting_its_entries_before_they_are_durable() {
    let bugs = BugInjection {
        count_own_entries_before_durable: true,
        ..Default::default()
    };
    assert_caught("count_own_entries_before_durable", bugs);
}

#[test]
fn a_correct_core_passes_the_same_budget_prefix() {
    for seed in 0..50 {
        if let Err(v) = run(&SimConfig::for_seed(seed)) {
            panic!("correct core failed\n{v}");
        }
    }
}

/// How many seeds of the budget catch each bug (run with `--ignored`; informational).
#[test]
#[ignore]
fn detection_density() {
    let all = [
        (
            "commit_old_term_by_count",
            BugInjection {
                commit_old_term_by_count: true,
                ..Default::default()
            },
            true,
        ),
        (
            "forget_vote_on_restart",
            BugInjection {
                forget_vote_on_restart: true,
                ..Default::default()
            },
            true,
        ),
        (
            "forget_vote_on_restart/symptoms",
            BugInjection {
                forget_vote_on_restart: true,
                ..Default::default()
            },
            false,
        ),
        (
            "vote_for_shorter_log",
            BugInjection {
                vote_for_shorter_log: true,
                ..Default::default()
            },
            true,
        ),
        (
            "vote_twice_in_term",
            BugInjection {
                vote_twice_in_term: true,
                ..Default::default()
            },
            true,
        ),
        (
            "vote_twice_in_term/symptoms",
            BugInjection {
                vote_twice_in_term: true,
                ..Default::default()
            },
            false,
        ),
        (
            "skip_prev_term_check",
            BugInjection {
                skip_prev_term_check: true,
                ..Default::default()
            },
            true,
        ),
        (
            "count_own_entries_before_durable",
            BugInjection {
                count_own_entries_before_durable: true,
                ..Default::default()
            },
            true,
        ),
    ];
    for (name, bugs, vote_check) in all {
        let caught = (0..SEED_BUDGET)
            .filter(|&seed| {
                let mut cfg = SimConfig::for_seed(seed);
                cfg.bugs = bugs;
                cfg.durable_vote_check = vote_check;
                run(&cfg).is_err()
            })
            .count();
        println!("{name}: {caught}/{SEED_BUDGET} seeds fail");
    }
}
