//! Budgets in the in-process workload: seeded runs reach the hard limit and the
//! budget invariants hold over every usage report, faults included; a backend
//! that lets usage past the hard limit fails the run.

use std::sync::Arc;

use ff_backend_memory::new_sim_backend;
use ff_conformance::tamper::{Tamper, TamperMode};
use ff_core::SimClock;
use ff_sim::faults::FaultRates;
use ff_sim::{SimConfig, Summary, partitions_of, run, run_on};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
}

fn cfg(seed: u64, faults: Option<FaultRates>) -> SimConfig {
    SimConfig { seed, workers: 5, executions: 200, faults, ..SimConfig::default() }
}

fn budget_violations(s: &Summary) -> Vec<&String> {
    s.violations.iter().filter(|v| v.contains("budget") || v.contains("usage report")).collect()
}

#[test]
fn seeded_runs_hit_the_hard_limit_and_keep_the_budget_invariants() {
    let mut seeds_breached = 0;
    for seed in 1..=6 {
        let s = rt().block_on(run(cfg(seed, None))).expect("run");
        let replay = format!("replay: ff-sim run --seed {seed} --workers 5 --executions 200");
        assert!(s.violations.is_empty(), "seed {seed}: {:?}; {replay}", s.violations);
        assert_eq!((s.unfinished, s.completed + s.failed), (0, 200), "seed {seed}; {replay}");
        assert!(s.usage_reports >= 150, "seed {seed}: only {} usage reports", s.usage_reports);
        seeds_breached += usize::from(s.hard_breaches > 0);
    }
    assert!(seeds_breached >= 3, "only {seeds_breached} of 6 seeds reached a hard limit");
}

#[test]
fn lost_replies_of_usage_reports_are_deduplicated_and_counted_once() {
    let rates = FaultRates { fail_before_pct: 15, lose_ack_pct: 20, delay_pct: 10, delay_ms_max: 4_000 };
    for seed in [3u64, 7] {
        let s = rt().block_on(run(cfg(seed, Some(rates)))).expect("run");
        let replay = format!("replay with rates {rates:?}: seed {seed}, 5 workers, 200 executions");
        assert!(s.violations.is_empty(), "seed {seed}: {:?}; {replay}", s.violations);
        assert!(s.usage_deduplicated > 0, "seed {seed}: no re-sent report was answered AlreadyApplied");
        assert!(s.hard_breaches > 0, "seed {seed}: no report reached a hard limit");
    }
}

#[test]
fn a_backend_that_ignores_hard_limits_is_caught() {
    let config = cfg(3, None);
    let clock = SimClock::default();
    let honest = Arc::new(new_sim_backend(clock.clone(), partitions_of(&config)));
    let broken = Arc::new(Tamper::new(honest, TamperMode::IgnoreHardBudget));
    let s = rt().block_on(run_on(config, broken, clock, None)).expect("run");
    assert_eq!(s.hard_breaches, 0, "the tampered backend still refused a report");
    let found = budget_violations(&s);
    assert!(
        found.iter().any(|v| v.contains("past the hard limit")),
        "usage past the hard limit went unnoticed: {:?}",
        s.violations
    );
    assert!(
        found.iter().any(|v| v.contains("is outside [")),
        "stored usage below the acknowledged reports went unnoticed: {:?}",
        s.violations
    );
}
