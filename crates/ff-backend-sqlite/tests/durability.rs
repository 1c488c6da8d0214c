//! Durability: SIGKILL at random points loses nothing acknowledged; reopening
//! keeps everything; corrupt and foreign files are refused at open.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use ff_backend_sqlite::{OpenError, SqliteOptions, open};
use ff_core::contracts::CreateExecutionArgs;
use ff_core::{EngineBackend, ExecutionId, LaneId, PartitionConfig, PublicState, SimClock};
use uuid::Uuid;

fn dir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite-durability");
    let _ = std::fs::create_dir_all(&d);
    d
}

fn fresh(name: &str) -> std::path::PathBuf {
    let p = dir().join(format!("{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    p
}

fn options() -> SqliteOptions {
    SqliteOptions {
        partitions: PartitionConfig { num_flow_partitions: 8, ..PartitionConfig::default() },
        clock: Arc::new(SimClock::default()),
        ..SqliteOptions::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

/// SplitMix64, for reproducible kill points.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn sigkill_at_random_points_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var("FF_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xdead_beef);
    let path = fresh("crash");
    let mut rng = seed;
    let mut created = Vec::new();
    let mut completed = Vec::new();
    let mut suspended = Vec::new();
    let mut signalled = Vec::new();
    for run in 0..24u64 {
        let lines_before_kill = 1 + next(&mut rng) % 120;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ff-sqlite-load"))
            .arg(&path)
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the load child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("created"), Some(id)) => created.push(id.to_owned()),
                (Some("completed"), Some(id)) => completed.push(id.to_owned()),
                (Some("suspended"), Some(id)) => suspended.push(id.to_owned()),
                (Some("signalled"), Some(id)) => signalled.push(id.to_owned()),
                _ => {}
            }
            seen += 1;
            if seen >= lines_before_kill {
                break;
            }
        }
        child.kill().expect("SIGKILL the child");
        let _ = child.wait();
        check_after_crash(&path, &created, &completed, seed, run);
        check_signals_after_crash(&path, &suspended, &signalled, seed, run);
    }
    assert!(completed.len() > 20, "the load made too little progress to test anything: {completed:?}");
    assert!(!signalled.is_empty(), "no signal was ever acknowledged: the signal load did not run");
}

fn check_after_crash(path: &std::path::Path, created: &[String], completed: &[String], seed: u64, run: u64) {
    let b = match open(path, options()) {
        Ok(b) => b,
        Err(e) => panic!("seed {seed} run {run}: reopen failed: {e}"),
    };
    assert_eq!(b.runner().integrity_check().expect("integrity_check"), "ok", "seed {seed} run {run}");
    let v = b.runner().invariant_violations();
    assert!(v.is_empty(), "seed {seed} run {run}: {v:?}");
    rt().block_on(async {
        for id in created {
            let id = ExecutionId::parse(id).expect("acked id parses");
            let state = b.describe_execution(&id).await.expect("describe");
            assert!(state.is_some(), "seed {seed} run {run}: acknowledged create of {id} lost");
        }
        for id in completed {
            let id = ExecutionId::parse(id).expect("acked id parses");
            let state = b.read_execution_state(&id).await.expect("read state");
            assert_eq!(
                state,
                Some(PublicState::Completed),
                "seed {seed} run {run}: acknowledged completion of {id} lost"
            );
            let result = b.get_execution_result(&id).await.expect("result");
            assert!(result.is_some(), "seed {seed} run {run}: result of {id} lost");
        }
    });
}

/// An acknowledged suspend stays suspended (or resumed, when its signal committed
/// unacknowledged); an acknowledged signal has resumed its execution.
fn check_signals_after_crash(
    path: &std::path::Path,
    suspended: &[String],
    signalled: &[String],
    seed: u64,
    run: u64,
) {
    let b = match open(path, options()) {
        Ok(b) => b,
        Err(e) => panic!("seed {seed} run {run}: reopen failed: {e}"),
    };
    rt().block_on(async {
        for id in suspended {
            let id = ExecutionId::parse(id).expect("acked id parses");
            let state = b.read_execution_state(&id).await.expect("read state");
            assert!(
                matches!(state, Some(PublicState::Suspended | PublicState::Waiting)),
                "seed {seed} run {run}: acknowledged suspend of {id} lost: {state:?}"
            );
        }
        for id in signalled {
            let id = ExecutionId::parse(id).expect("acked id parses");
            let state = b.read_execution_state(&id).await.expect("read state");
            assert_eq!(
                state,
                Some(PublicState::Waiting),
                "seed {seed} run {run}: acknowledged signal to {id} lost"
            );
        }
    });
}

#[test]
fn data_survives_reopen_and_partition_counts_are_checked() {
    let path = fresh("reopen");
    let id = ExecutionId::from_parts(3, Uuid::from_u64_pair(1, 1));
    {
        let b = open(&path, options()).expect("open");
        rt().block_on(b.create_execution(CreateExecutionArgs::new(id.clone(), "ns", LaneId::new("l"), "k")))
            .expect("create");
    }
    let b = open(&path, options()).expect("reopen");
    let state = rt().block_on(b.read_execution_state(&id)).expect("read");
    assert_eq!(state, Some(PublicState::Waiting));
    drop(b);
    let other = SqliteOptions { partitions: PartitionConfig::default(), ..options() };
    match open(&path, other) {
        Err(OpenError::PartitionMismatch { field: "num_flow_partitions", stored: 8, config: 256 }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a different partition count was accepted"),
    }
}

#[test]
fn corrupt_and_foreign_files_are_refused_at_open() {
    let garbage = fresh("garbage");
    std::fs::write(&garbage, vec![0x5a; 8192]).expect("write garbage");
    match open(&garbage, options()) {
        Err(OpenError::Corrupt { .. }) => {}
        Err(e) => panic!("garbage: unexpected error {e}"),
        Ok(_) => panic!("garbage file opened"),
    }
    let foreign = fresh("foreign");
    {
        let conn = rusqlite::Connection::open(&foreign).expect("create a foreign database");
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
            .expect("foreign table");
    }
    match open(&foreign, options()) {
        Err(OpenError::Foreign { .. }) => {}
        Err(e) => panic!("foreign: unexpected error {e}"),
        Ok(_) => panic!("foreign database opened"),
    }
    let err: ff_core::EngineError = OpenError::Foreign { path: "x".into(), found: 1 }.into();
    assert!(matches!(err, ff_core::EngineError::Validation { .. }));
}
