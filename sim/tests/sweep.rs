//! Seed sweeps, replays and lease timelines over the turmoil simulation. Plain `#[test]`s:
//! turmoil runs its own runtimes and must not be nested in one.

use std::ops::RangeInclusive;
use std::time::Instant;

use ff_sim::sweep::{FaultPlan, TurmoilWorkload, parse_seeds, sweep};
use ff_sim::timeline::timeline_svg;
use ff_sim::{LeaseEnd, run_turmoil};

/// The CI sweep's seeds: 1..=200, or `FF_SIM_SWEEP_SEEDS` (`A..B`, `A..=B`, at least 200) to move
/// or widen it.
fn ci_seeds() -> RangeInclusive<u64> {
    match std::env::var("FF_SIM_SWEEP_SEEDS") {
        Ok(text) => parse_seeds(&text).unwrap_or_else(|e| panic!("FF_SIM_SWEEP_SEEDS: {e}")),
        Err(_) => 1..=200,
    }
}

/// A per-seed workload small enough that 200 seeds stay cheap in a debug build.
fn small() -> TurmoilWorkload {
    TurmoilWorkload {
        workers: 3,
        executions: 12,
        faults: FaultPlan::Swarm,
        safety_ms: 12_000,
        ..TurmoilWorkload::default()
    }
}

#[test]
fn two_hundred_swarm_seeds_hold_every_invariant() {
    let started = Instant::now();
    let (mut faults, mut leases, mut suspensions, mut duplicates, mut deduplicated) = (0, 0, 0, 0, 0);
    let seeds = ci_seeds();
    let count = seeds.end() - seeds.start() + 1;
    assert!(count >= 200, "the CI sweep must cover at least 200 seeds, not {count}");
    let report = sweep(&small(), seeds, &mut |run| {
        if let Some(s) = &run.summary {
            faults += s.crashes + s.partitions + s.holds + s.clock_jumps + s.slow_tasks;
            leases += s.claims + s.reclaims;
            suspensions += s.suspensions;
            duplicates += s.duplicate_signals;
            deduplicated += s.duplicates_deduplicated;
        }
    });
    println!(
        "swept seeds {}..={} ({}) in {:.1} s: {} failed",
        report.first_seed,
        report.last_seed,
        report.workload.flags(),
        started.elapsed().as_secs_f64(),
        report.failed
    );
    assert_eq!(report.runs.len() as u64, count);
    assert!(report.passed(), "{report}");
    assert!(faults > count, "the swarm plans injected only {faults} faults over {count} seeds");
    assert!(leases >= count * 12, "fewer leases than executions: {leases}");
    assert!(suspensions > 0, "no execution suspended");
    assert!(duplicates > 0, "no duplicate signal was delivered");
    assert!(deduplicated > 0, "no duplicate signal was deduplicated by its idempotency key");
    for run in &report.runs {
        let s = run.summary.as_ref().map(|s| s.anomalies);
        assert_eq!(s.map(|a| a.none()), Some(true), "seed {}: {s:?}; replay: {}", run.seed, run.replay);
    }
}

#[test]
fn an_unfenced_server_fails_a_seed_and_its_timeline_shows_the_double_ownership() {
    let workload = TurmoilWorkload { unfenced: true, ..TurmoilWorkload::default() };
    let report = sweep(&workload, 1..=50, &mut |_| {});
    let failing = report.failures().next().unwrap_or_else(|| panic!("an unfenced server passed: {report}"));
    assert!(failing.replay.contains("--unfenced"), "the replay drops the broken server: {}", failing.replay);
    let violations = failing.summary.as_ref().map(|s| s.violations.clone()).unwrap_or_default();
    assert!(
        violations.iter().any(|v| v.starts_with("double ownership")),
        "seed {} failed without a double ownership: {violations:?}",
        failing.seed
    );

    let replayed = run_turmoil(workload.config(failing.seed)).expect("the replay runs");
    let swept_hash = failing.summary.as_ref().map(|s| s.trace_hash);
    assert_eq!(Some(replayed.trace_hash), swept_hash, "seed {} replayed differently", failing.seed);
    let overlaps = replayed.history.overlaps();
    assert!(!overlaps.is_empty(), "the replay's history has no overlapping leases");
    let svg = timeline_svg(&replayed.history, &failing.replay);
    assert!(svg.matches(r#"class="overlap""#).count() >= overlaps.len(), "overlaps not marked");
    assert!(
        svg.matches(r#"class="lease double""#).count() >= 2,
        "double-owned leases not drawn in warning style"
    );
}

#[test]
fn a_replayed_seed_draws_a_bar_per_lease() {
    let workload = TurmoilWorkload { faults: FaultPlan::Partitions, ..TurmoilWorkload::default() };
    let summary = run_turmoil(workload.config(4)).expect("the run works");
    assert!(summary.passed(), "{summary}");
    let h = &summary.history;
    let granted = summary.claims + summary.reclaims + summary.resumed_claims;
    assert_eq!(h.leases.len() as u64, granted, "a lease per committed claim");
    assert!(!h.faults.is_empty(), "the partition plan injected nothing");
    assert!(h.leases.iter().any(|l| l.end().1 == LeaseEnd::Expiry), "no lease expired under partitions");
    assert!(h.leases.iter().any(|l| l.end().1 == LeaseEnd::Complete));
    let svg = timeline_svg(h, "seed 4");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.matches("<rect").count() >= h.leases.len());
    assert_eq!(svg.matches(r#"class="lease"#).count(), h.leases.len(), "one bar per recorded lease");
    assert_eq!(svg.matches(r#"class="stale""#).count(), h.stale_ops.len(), "one mark per refused stale op");
    assert_eq!(svg.matches(r#"class="fault""#).count(), h.faults.len(), "one span per fault");
    assert_eq!(svg.matches(r#"class="overlap""#).count(), 0, "a fenced server showed double ownership");
    assert_eq!(svg.matches(r#"class="signal""#).count(), h.signals.len(), "one mark per signal");
    assert_eq!(svg.matches('<').count(), svg.matches('>').count(), "unbalanced tags");
}
