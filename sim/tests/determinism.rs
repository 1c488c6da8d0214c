//! The simulation is a pure function of its seed, and its invariants hold.

use ff_sim::{SimConfig, run};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

#[test]
fn same_seed_same_trace_hash() {
    let cfg = SimConfig { seed: 7, workers: 6, executions: 300, ..SimConfig::default() };
    let a = rt().block_on(run(cfg.clone())).expect("run a");
    let b = rt().block_on(run(cfg)).expect("run b");
    assert_eq!(a.trace_hash, b.trace_hash, "seed 7 replayed differently");
    assert_eq!(a.claims, b.claims);
    let other = rt()
        .block_on(run(SimConfig { seed: 8, workers: 6, executions: 300, ..SimConfig::default() }))
        .expect("run c");
    assert_ne!(a.trace_hash, other.trace_hash, "different seeds gave the same trace");
}

#[test]
fn seeds_with_crashes_finish_with_invariants_held() {
    for seed in 1..=20 {
        let cfg = SimConfig {
            seed,
            workers: 5,
            executions: 200,
            crash_pct: 20,
            fail_pct: 20,
            ..SimConfig::default()
        };
        let s = rt().block_on(run(cfg)).expect("run");
        assert!(s.violations.is_empty(), "seed {seed}: {:?}", s.violations);
        assert_eq!(
            s.unfinished, 0,
            "seed {seed}: unfinished executions; replay: ff-sim run --seed {seed} --workers 5 --executions 200 --crash-pct 20 --fail-pct 20"
        );
        assert_eq!(s.completed + s.failed, 200, "seed {seed}");
        assert!(s.crashes > 0 && s.reclaims > 0, "seed {seed}: faults were not exercised");
    }
}
