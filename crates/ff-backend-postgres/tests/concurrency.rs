//! Sixteen workers, each on its own connection, claim from one lane through the
//! scheduler: no execution is claimed twice, every one completes, no contract
//! fails with a transport error (a PostgreSQL deadlock or serialization failure
//! would surface as one), and the claim→complete rate is printed.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ff_backend_postgres::{PostgresBackend, PostgresOptions, open};
use ff_core::contracts::{ClaimExecutionArgs, CompleteExecutionArgs, CreateExecutionArgs};
use ff_core::{
    AttemptId, CancelSource, EngineBackend, EngineError, ExecutionId, LaneId, LeaseFence, LeaseId,
    PartitionConfig, PublicState, SystemClock, WorkerId, WorkerInstanceId,
};
use ff_scheduler::{Scheduler, SchedulerConfig};
use uuid::Uuid;

const WORKERS: u64 = 16;
const EXECUTIONS: u64 = 320;
/// Bound on one worker's loop iterations (claims, empty polls, lost races).
const WORKER_ITERATIONS_MAX: u64 = 20_000;

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        url: common::database_url(),
        schema: schema.to_owned(),
        partitions: PartitionConfig { num_flow_partitions: 8, ..PartitionConfig::default() },
        clock: Arc::new(SystemClock),
    }
}

/// One worker: claim through the scheduler, then complete, until the lane is drained.
async fn worker(
    w: u64,
    backend: Arc<PostgresBackend>,
    claimed: Arc<Mutex<HashSet<ExecutionId>>>,
) -> Result<u64, String> {
    let dyn_backend: Arc<dyn EngineBackend> = backend.clone();
    let scheduler = Scheduler::new(dyn_backend, SchedulerConfig::default());
    let lane = LaneId::new("race");
    let worker_id = WorkerId::new("racer");
    let inst = WorkerInstanceId::new(format!("racer-{w}"));
    let mut done = 0;
    for n in 0..WORKER_ITERATIONS_MAX {
        let grant = match scheduler.claim_for_worker(&lane, &worker_id, &inst, &[], 60_000).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                if claimed.lock().map_err(|e| e.to_string())?.len() as u64 == EXECUTIONS {
                    return Ok(done);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            Err(e @ EngineError::Transport { .. }) => return Err(format!("worker {w}: grant: {e}")),
            // A lost race for the same execution is a typed rejection: try again.
            Err(_) => continue,
        };
        let (lease_id, attempt_id) =
            (LeaseId::from_uuid(Uuid::from_u64_pair(w, n)), AttemptId::from_uuid(Uuid::from_u64_pair(n, w)));
        let id = grant.execution_id.clone();
        let claim = ClaimExecutionArgs {
            execution_id: id.clone(),
            worker_id: worker_id.clone(),
            worker_instance_id: inst.clone(),
            lane_id: lane.clone(),
            lease_id,
            lease_ttl_ms: 600_000,
            attempt_id,
            attempt_policy_json: String::new(),
            attempt_timeout_ms: None,
            execution_deadline_at: None,
        };
        let c = backend.claim_execution(claim).await.map_err(|e| format!("worker {w}: claim {id}: {e}"))?;
        if !claimed.lock().map_err(|e| e.to_string())?.insert(id.clone()) {
            return Err(format!("worker {w}: {id} was claimed twice"));
        }
        let complete = CompleteExecutionArgs {
            execution_id: id.clone(),
            fence: Some(LeaseFence { lease_id, lease_epoch: c.lease_epoch, attempt_id }),
            result_payload: Some(format!("done by {w}").into_bytes()),
            source: CancelSource::LeaseHolder,
        };
        backend.complete_execution(complete).await.map_err(|e| format!("worker {w}: complete {id}: {e}"))?;
        done += 1;
    }
    Err(format!("worker {w}: did not drain the lane in {WORKER_ITERATIONS_MAX} iterations"))
}

#[test]
fn sixteen_workers_never_claim_twice_nor_deadlock() {
    let schema = common::fresh_schema("race");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("rt");
    let seed = open(options(&schema)).expect("open");
    let ids: Vec<ExecutionId> = (0..EXECUTIONS)
        .map(|n| ExecutionId::from_parts((n % 8) as u16, Uuid::from_u64_pair(0x5eed, n)))
        .collect();
    rt.block_on(async {
        for id in &ids {
            seed.create_execution(CreateExecutionArgs::new(id.clone(), "ns", LaneId::new("race"), "job"))
                .await
                .expect("create");
        }
    });
    let backends: Vec<Arc<PostgresBackend>> =
        (0..WORKERS).map(|_| Arc::new(open(options(&schema)).expect("open a worker connection"))).collect();
    let claimed = Arc::new(Mutex::new(HashSet::new()));
    let started = Instant::now();
    let results = rt.block_on(async {
        let tasks: Vec<_> = backends
            .iter()
            .enumerate()
            .map(|(w, b)| tokio::spawn(worker(w as u64, b.clone(), claimed.clone())))
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        results
    });
    let elapsed = started.elapsed();
    let mut total = 0;
    for r in results {
        match r {
            Ok(n) => total += n,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(total, EXECUTIONS);
    rt.block_on(async {
        for id in &ids {
            let state = seed.read_execution_state(id).await.expect("read");
            assert_eq!(state, Some(PublicState::Completed), "{id}");
        }
    });
    assert!(seed.runner().invariant_violations().is_empty());
    println!(
        "postgres: {WORKERS} workers, {EXECUTIONS} claim→complete cycles in {:.2}s = {:.0} cycles/s",
        elapsed.as_secs_f64(),
        EXECUTIONS as f64 / elapsed.as_secs_f64()
    );
}
