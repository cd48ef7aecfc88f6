//! The checker has teeth: with a classic Raft bug switched on in the core, the simulator
//! finds a violation within the default seed budget. Each test stops at the first failing seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ringway::raft::sim::{run, SimConfig, Violation};
use ringway::raft::BugInjection;

/// Same budget as the default `raft_sim` seed run.
const SEED_BUDGET: u64 = 1000;
const THREADS: u64 = 2;

/// The lowest failing seed with `bugs` switched on, if any within the budget.
fn first_violation(bugs: BugInjection) -> Option<Violation> {
    let next = AtomicU64::new(0);
    let found: Mutex<Option<Violation>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= SEED_BUDGET || found.lock().unwrap().as_ref().is_some_and(|v| v.seed < seed) {
                    break;
                }
                let mut cfg = SimConfig::for_seed(seed);
                cfg.bugs = bugs;
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
    match first_violation(bugs) {
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

#[test]
fn a_correct_core_passes_the_same_budget_prefix() {
    for seed in 0..50 {
        if let Err(v) = run(&SimConfig::for_seed(seed)) {
            panic!("correct core failed\n{v}");
        }
    }
}
