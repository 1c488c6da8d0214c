//! The fault layer: lost acks after commit, failures before commit and delays
//! never cost an acknowledged completion or a duplicate one, the run stays a
//! pure function of its seed, and the same holds on a SQLite file.

use std::sync::Arc;

use ff_core::SimClock;
use ff_sim::faults::FaultRates;
use ff_sim::{DeepCheck, SimConfig, partitions_of, run, run_on};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
}

fn cfg(seed: u64, rates: FaultRates) -> SimConfig {
    SimConfig { seed, workers: 5, executions: 150, faults: Some(rates), ..SimConfig::default() }
}

#[test]
fn swarm_seeds_keep_every_acknowledged_completion() {
    for seed in 1..=12 {
        let rates = FaultRates::swarm(seed);
        let s = rt().block_on(run(cfg(seed, rates))).expect("run");
        let replay = format!("replay: ff-sim run --faults swarm --seed {seed} --workers 5 --executions 150");
        assert!(s.violations.is_empty(), "seed {seed} {rates:?}: {:?}; {replay}", s.violations);
        assert_eq!(s.unfinished, 0, "seed {seed} {rates:?}: liveness phase left work; {replay}");
        assert_eq!(s.completed + s.failed, 150, "seed {seed}; {replay}");
    }
}

#[test]
fn heavy_faults_are_exercised_and_survived() {
    let rates = FaultRates { fail_before_pct: 20, lose_ack_pct: 20, delay_pct: 20, delay_ms_max: 12_000 };
    let s = rt().block_on(run(cfg(42, rates))).expect("run");
    assert!(s.faults.failed_before > 0 && s.faults.acks_lost > 0 && s.faults.delayed > 0, "{:?}", s.faults);
    assert!(s.unknown_outcomes > 0, "no operation ever lost its reply");
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.unfinished, 0);
}

#[test]
fn faulty_runs_replay_by_seed() {
    let rates = FaultRates::swarm(5);
    let a = rt().block_on(run(cfg(5, rates))).expect("a");
    let b = rt().block_on(run(cfg(5, rates))).expect("b");
    assert_eq!(a.trace_hash, b.trace_hash, "seed 5 with faults replayed differently");
    assert_eq!(a.faults, b.faults);
}

#[test]
fn chaos_on_a_sqlite_file_keeps_the_invariants() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-chaos");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("chaos-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let rates = FaultRates { fail_before_pct: 10, lose_ack_pct: 10, delay_pct: 10, delay_ms_max: 8_000 };
    let config = SimConfig { executions: 60, ..cfg(3, rates) };
    let clock = SimClock::default();
    let options = ff_backend_sqlite::SqliteOptions {
        partitions: partitions_of(&config),
        clock: Arc::new(clock.clone()),
        durability: ff_backend_sqlite::Durability::Normal,
    };
    let backend = Arc::new(ff_backend_sqlite::open(&path, options).expect("open"));
    let check = backend.clone();
    let deep: DeepCheck = Arc::new(move || check.runner().invariant_violations());
    let s = rt().block_on(run_on(config, backend, clock, Some(deep))).expect("run");
    assert!(s.faults.acks_lost > 0, "{:?}", s.faults);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!((s.unfinished, s.completed + s.failed), (0, 60));
}
