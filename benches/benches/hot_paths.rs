//! Hot paths per backend: an idle worker's eligible scan over 256 partitions,
//! and one claim→complete cycle (grant, claim, complete).
//!
//! Groups are named `backend/operation/size`. SQLite runs on a file in WAL
//! mode with `synchronous = FULL` (every commit on disk).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ff_backend_memory::new_sim_backend;
use ff_core::contracts::*;
use ff_core::{
    AttemptId, CancelSource, EngineBackend, ExecutionId, LaneId, LeaseFence, LeaseId, PartitionConfig,
    SimClock, WorkerId, WorkerInstanceId,
};
use uuid::Uuid;

const PARTITIONS: u16 = 256;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("bench runtime")
}

fn id(n: u64) -> ExecutionId {
    ExecutionId::from_parts((n % u64::from(PARTITIONS)) as u16, Uuid::from_u64_pair(7, n))
}

type Backend = Arc<dyn EngineBackend>;

async fn populate(backend: &Backend, lane: &LaneId, from: u64, count: u64) {
    for n in from..from + count {
        let args = CreateExecutionArgs::new(id(n), "bench", lane.clone(), "task");
        backend.create_execution(args).await.expect("create");
    }
}

const BACKENDS: [&str; 2] = ["memory", "sqlite"];

fn backend(kind: &str) -> Backend {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let cfg = PartitionConfig { num_flow_partitions: PARTITIONS, ..PartitionConfig::default() };
    match kind {
        "sqlite" => {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-sqlite");
            let _ = std::fs::create_dir_all(&dir);
            let path =
                dir.join(format!("b-{}-{}.db", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            let options = ff_backend_sqlite::SqliteOptions {
                partitions: cfg,
                clock: Arc::new(SimClock::default()),
                durability: ff_backend_sqlite::Durability::Full,
            };
            Arc::new(ff_backend_sqlite::open(&path, options).expect("open sqlite"))
        }
        _ => Arc::new(new_sim_backend(SimClock::default(), cfg)),
    }
}

/// An idle worker's poll: the head of the eligible index on every partition.
fn eligible_scan(c: &mut Criterion) {
    let rt = runtime();
    for kind in BACKENDS {
        let mut group = c.benchmark_group(format!("{kind}/eligible_scan"));
        for (label, size) in [("1k", 1_000u64), ("100k", 100_000u64)] {
            if kind == "sqlite" && size > 1_000 && std::env::var("FF_BENCH_LARGE").is_err() {
                continue;
            }
            let b = backend(kind);
            let lane = LaneId::new("bench");
            rt.block_on(populate(&b, &lane, 0, size));
            group.bench_function(BenchmarkId::from_parameter(label), |bench| {
                bench.iter(|| {
                    rt.block_on(async {
                        let mut found = 0usize;
                        for partition in 0..PARTITIONS {
                            let args = ScanEligibleArgs { lane_id: lane.clone(), partition, limit: 1 };
                            found += b.scan_eligible_executions(args).await.expect("scan").len();
                        }
                        assert_eq!(found, usize::from(PARTITIONS));
                    })
                })
            });
        }
        group.finish();
    }
}

async fn cycle(b: &Backend, lane: &LaneId, eid: ExecutionId, n: u64) {
    let worker_id = WorkerId::new("w");
    let worker_instance_id = WorkerInstanceId::new("w-1");
    let grant = IssueClaimGrantArgs {
        execution_id: eid.clone(),
        worker_id: worker_id.clone(),
        worker_instance_id: worker_instance_id.clone(),
        lane_id: lane.clone(),
        capability_hash: String::new(),
        grant_ttl_ms: 5_000,
        route_snapshot_json: String::new(),
        admission_summary: String::new(),
        worker_capabilities: CapabilitySet::default(),
    };
    b.issue_claim_grant(grant).await.expect("grant");
    let lease_id = LeaseId::from_uuid(Uuid::from_u64_pair(1, n));
    let attempt_id = AttemptId::from_uuid(Uuid::from_u64_pair(2, n));
    let claim = ClaimExecutionArgs {
        execution_id: eid.clone(),
        worker_id,
        worker_instance_id,
        lane_id: lane.clone(),
        lease_id,
        lease_ttl_ms: 30_000,
        attempt_id,
        attempt_policy_json: String::new(),
        attempt_timeout_ms: None,
        execution_deadline_at: None,
    };
    let claimed = b.claim_execution(claim).await.expect("claim");
    let complete = CompleteExecutionArgs {
        execution_id: eid,
        fence: Some(LeaseFence { lease_id, lease_epoch: claimed.lease_epoch, attempt_id }),
        result_payload: None,
        source: CancelSource::LeaseHolder,
    };
    b.complete_execution(complete).await.expect("complete");
}

/// grant → claim → complete on a pre-created execution.
fn claim_complete(c: &mut Criterion) {
    let rt = runtime();
    for kind in BACKENDS {
        let mut group = c.benchmark_group(format!("{kind}/claim_complete"));
        let lane = LaneId::new("bench");
        group.bench_function(BenchmarkId::from_parameter("1"), |bench| {
            bench.iter_custom(|iters| {
                // A fresh store per sample keeps the measured cycles independent of
                // how many terminal executions earlier samples left behind.
                let b = backend(kind);
                rt.block_on(populate(&b, &lane, 0, iters));
                let start = Instant::now();
                rt.block_on(async {
                    for n in 0..iters {
                        cycle(&b, &lane, id(n), n).await;
                    }
                });
                start.elapsed()
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    targets = eligible_scan, claim_complete
}
criterion_main!(benches);
