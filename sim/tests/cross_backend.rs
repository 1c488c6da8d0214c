//! The same seeded workload, faults included, through memory, a SQLite file and
//! a real Valkey server: every backend runs the contracts on the run's simulated
//! clock, so all three must produce the same trace, event for event.

use std::sync::Arc;

use ff_core::SimClock;
use ff_sim::faults::FaultRates;
use ff_sim::{SimConfig, Summary, partitions_of, run, run_on};

const VALKEY_PORT: u16 = 6391;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn start_valkey() {
    if let Err(e) = ff_backend_valkey::raw::start_local_server(VALKEY_PORT) {
        panic!("{e}");
    }
}

fn sqlite(cfg: &SimConfig) -> Summary {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-cross");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("cross-{}-{}.db", std::process::id(), cfg.seed));
    let _ = std::fs::remove_file(&path);
    let clock = SimClock::default();
    let options = ff_backend_sqlite::SqliteOptions {
        partitions: partitions_of(cfg),
        clock: Arc::new(clock.clone()),
        durability: ff_backend_sqlite::Durability::Normal,
    };
    let backend = Arc::new(ff_backend_sqlite::open(&path, options).expect("open"));
    rt().block_on(run_on(cfg.clone(), backend, clock, None)).expect("sqlite run")
}

fn valkey(cfg: &SimConfig) -> Summary {
    start_valkey();
    let clock = SimClock::default();
    let config = ff_backend_valkey::ValkeyConfig {
        host: "127.0.0.1".into(),
        port: VALKEY_PORT,
        key_prefix: format!("simx-{}-{}:", std::process::id(), cfg.seed),
        partitions: partitions_of(cfg),
        clock: Some(clock.clone()),
    };
    rt().block_on(async move {
        let backend = ff_backend_valkey::ValkeyBackend::connect(config).await.expect("connect");
        run_on(cfg.clone(), Arc::new(backend), clock, None).await
    })
    .expect("valkey run")
}

#[test]
fn memory_sqlite_and_valkey_replay_the_same_faulty_run() {
    let mut hard_breaches = 0;
    for seed in [1u64, 4] {
        let cfg = SimConfig {
            seed,
            workers: 5,
            executions: 80,
            faults: Some(FaultRates::swarm(seed)),
            ..SimConfig::default()
        };
        let memory = rt().block_on(run(cfg.clone())).expect("memory run");
        assert!(memory.violations.is_empty() && memory.unfinished == 0, "seed {seed}: {memory}");
        hard_breaches += memory.hard_breaches;
        for (name, other) in [("sqlite", sqlite(&cfg)), ("valkey", valkey(&cfg))] {
            assert!(other.violations.is_empty(), "seed {seed} {name}: {:?}", other.violations);
            assert_eq!(
                other.trace_hash, memory.trace_hash,
                "seed {seed}: {name} diverged from the memory reference\n{name}:\n{other}\nmemory:\n{memory}"
            );
            assert_eq!(
                (other.completed, other.failed),
                (memory.completed, memory.failed),
                "seed {seed} {name}"
            );
            assert_eq!(
                (other.usage_reports, other.hard_breaches, other.usage_deduplicated),
                (memory.usage_reports, memory.hard_breaches, memory.usage_deduplicated),
                "seed {seed} {name}: usage reports answered differently"
            );
        }
    }
    assert!(hard_breaches > 0, "no seed reached a hard limit: budgets were not compared across backends");
}
