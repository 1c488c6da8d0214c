//! The turmoil simulation: ff-server and SDK workers over simulated TCP under seeded fault plans.
//! Each run is a plain `#[test]`: turmoil runs its own runtimes and must not be nested in one.

use ff_sim::{NetFaultRates, TurmoilConfig, TurmoilSummary, run_turmoil};

/// Runs one configuration; a failing run names the seed and the command that replays it.
fn check(cfg: TurmoilConfig, plan: &str) -> TurmoilSummary {
    let replay = format!(
        "cargo run -p ff-sim -- turmoil --seed {} --workers {} --executions {} --faults {plan} --safety-ms {}",
        cfg.seed, cfg.workers, cfg.executions, cfg.safety_ms
    );
    let summary = run_turmoil(cfg).unwrap_or_else(|e| panic!("{e}\nreplay with: {replay}"));
    assert!(summary.passed(), "{summary}\nreplay with: {replay}");
    summary
}

fn swarm(seed: u64) -> TurmoilConfig {
    let base = TurmoilConfig::default();
    TurmoilConfig { seed, faults: Some(NetFaultRates::swarm(seed, base.lease_ttl_ms)), ..base }
}

fn partitioned(seed: u64) -> TurmoilConfig {
    let base = TurmoilConfig::default();
    TurmoilConfig { seed, faults: Some(NetFaultRates::partitions(base.lease_ttl_ms)), ..base }
}

#[test]
fn swarm_seeds_hold_invariants_and_finish_every_execution() {
    let mut faults = 0;
    for seed in 1..=12 {
        let s = check(swarm(seed), "swarm");
        assert_eq!(
            s.completed + s.failed,
            s.executions,
            "seed {seed}: every execution ends completed or failed"
        );
        faults += s.crashes + s.partitions + s.holds + s.clock_jumps + s.slow_tasks;
    }
    assert!(faults > 0, "the swarm plans injected nothing");
}

#[test]
fn a_quiet_network_completes_everything_without_fencing() {
    let s = check(TurmoilConfig { seed: 5, ..TurmoilConfig::default() }, "none");
    assert_eq!(s.completed, s.executions);
    assert_eq!(s.fenced_late_ops + s.server_fenced + s.reclaims, 0);
    assert_eq!(s.acked_completions, s.executions as u64);
}

#[test]
fn same_seed_gives_the_same_trace_hash() {
    let a = check(swarm(42), "swarm");
    let b = check(swarm(42), "swarm");
    assert_eq!(a.trace_hash, b.trace_hash, "seed 42 replayed differently");
    assert_eq!((a.claims, a.reclaims, a.fenced_late_ops), (b.claims, b.reclaims, b.fenced_late_ops));
    let c = check(swarm(43), "swarm");
    assert_ne!(a.trace_hash, c.trace_hash, "the trace does not depend on the seed");
}

#[test]
fn partitions_produce_fenced_late_completes() {
    let (mut fenced, mut after_reclaim, mut server_fenced, mut reclaims, mut partitions) = (0, 0, 0, 0, 0);
    for seed in 1..=4 {
        let s = check(partitioned(seed), "partitions");
        fenced += s.fenced_late_ops;
        after_reclaim += s.fenced_after_reclaim;
        server_fenced += s.server_fenced;
        reclaims += s.reclaims;
        partitions += s.partitions;
    }
    assert!(partitions > 0, "the plan partitioned nothing");
    assert!(reclaims > 0, "no lease was lost and reclaimed");
    assert!(fenced > 0, "no late complete reached the server and was fenced");
    assert!(after_reclaim > 0, "no complete arrived after its execution was reclaimed");
    assert!(server_fenced >= fenced, "every fenced op the workers saw was refused at the server");
}

#[test]
fn broken_fencing_is_caught() {
    let caught = (1..=10).find(|&seed| {
        let cfg = TurmoilConfig { unfenced: true, ..partitioned(seed) };
        let s = run_turmoil(cfg).expect("the run itself works");
        s.violations.iter().any(|v| v.starts_with("stale completion"))
    });
    assert!(caught.is_some(), "a server without fencing passed ten partitioned seeds");
}

#[test]
fn usage_reports_over_http_reach_the_hard_limit_and_keep_the_budget_invariants() {
    let (mut reports, mut hard_breaches) = (0, 0);
    for seed in 1..=5 {
        let s = check(swarm(seed), "swarm");
        assert_eq!(
            s.history.usage.len() as u64,
            s.usage_reports,
            "seed {seed}: every report is in the history"
        );
        reports += s.usage_reports;
        hard_breaches += s.hard_breaches;
    }
    assert!(reports >= 100, "only {reports} usage reports over five seeds");
    assert!(hard_breaches > 0, "no usage report reached a hard limit over five seeds");
}
