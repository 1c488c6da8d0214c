//! Queue anomalies in Jepsen's vocabulary over a concurrent claim/complete
//! history: lost (enqueued, never completed), duplicated (completion
//! acknowledged twice), unexpected (a completion of something never enqueued),
//! recovered (a completion whose call failed, yet it took effect). All must be zero.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ff_core::contracts::*;
use ff_core::{
    AttemptId, EngineBackend, EngineError, ExecutionId, LaneId, LeaseId, PublicState, WorkerId,
    WorkerInstanceId,
};
use serde::Serialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{Case, Ctx, Group, case};

/// Executions enqueued per run.
pub const QUEUE_EXECUTIONS: u64 = 200;
/// Concurrent workers per run.
pub const QUEUE_WORKERS: u64 = 8;
/// Claim attempts per worker before it gives up (bounds the loop).
pub const WORKER_POLLS_MAX: u32 = 10_000;

/// The four anomaly counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Anomalies {
    /// Enqueued but never completed.
    pub lost: usize,
    /// Completion acknowledged more than once.
    pub duplicated: usize,
    /// Completion of an id never enqueued.
    pub unexpected: usize,
    /// A failed completion call that nevertheless took effect.
    pub recovered: usize,
}

#[derive(Default)]
struct History {
    acked: BTreeMap<ExecutionId, u32>,
    failed_calls: BTreeSet<ExecutionId>,
}

/// Runs the workload and counts anomalies.
pub async fn measure(b: Arc<dyn EngineBackend>, lane: &LaneId) -> Result<Anomalies, EngineError> {
    let parts = b.partition_config().num_flow_partitions.clamp(1, 8);
    let mut enqueued = BTreeSet::new();
    for n in 0..QUEUE_EXECUTIONS {
        let id = ExecutionId::from_parts((n % u64::from(parts)) as u16, Uuid::from_u64_pair(0x9e, n));
        b.create_execution(CreateExecutionArgs::new(id.clone(), "ns", lane.clone(), "job")).await?;
        enqueued.insert(id);
    }
    let history = Arc::new(Mutex::new(History::default()));
    let mut tasks = Vec::new();
    for w in 0..QUEUE_WORKERS {
        let (b, history, lane) = (b.clone(), history.clone(), lane.clone());
        tasks.push(tokio::spawn(async move { worker(b, history, lane, w, parts).await }));
    }
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => return Err(EngineError::invalid_input(format!("worker task crashed: {e}"))),
        }
    }
    let h = history.lock().await;
    let mut out = Anomalies::default();
    for id in &enqueued {
        let state = b.read_execution_state(id).await?;
        let acked = h.acked.get(id).copied().unwrap_or(0);
        if acked == 0 && state != Some(PublicState::Completed) {
            out.lost += 1;
        }
        if acked == 0 && state == Some(PublicState::Completed) && h.failed_calls.contains(id) {
            out.recovered += 1;
        }
    }
    out.duplicated = h.acked.values().filter(|n| **n > 1).count();
    out.unexpected = h.acked.keys().filter(|id| !enqueued.contains(*id)).count();
    Ok(out)
}

async fn worker(
    b: Arc<dyn EngineBackend>,
    history: Arc<Mutex<History>>,
    lane: LaneId,
    w: u64,
    parts: u16,
) -> Result<(), EngineError> {
    let mut idle_polls = 0;
    for poll in 0..WORKER_POLLS_MAX {
        let policy = ClaimPolicy {
            worker_id: WorkerId::new(format!("q{w}")),
            worker_instance_id: WorkerInstanceId::new(format!("q{w}-1")),
            lease_ttl_ms: 60_000,
            lease_id: LeaseId::from_uuid(Uuid::from_u64_pair(w + 1, u64::from(poll))),
            attempt_id: AttemptId::from_uuid(Uuid::from_u64_pair(w + 100, u64::from(poll))),
        };
        let Some(claim) = b.claim(&lane, &CapabilitySet::default(), policy, parts).await? else {
            idle_polls += 1;
            if idle_polls > 3 {
                return Ok(());
            }
            tokio::task::yield_now().await;
            continue;
        };
        idle_polls = 0;
        let id = claim.execution_id.clone();
        match b.complete(&claim.handle, Some(b"done".to_vec())).await {
            Ok(()) => *history.lock().await.acked.entry(id).or_insert(0) += 1,
            Err(_) => {
                history.lock().await.failed_calls.insert(id);
            }
        }
    }
    Ok(())
}

async fn concurrent_claim_complete_has_no_anomalies(ctx: Ctx) {
    let lane = LaneId::new("queue");
    let a = match measure(ctx.fixture.backend.clone(), &lane).await {
        Ok(a) => a,
        Err(e) => panic!("queue workload failed: {e}"),
    };
    assert_eq!(a, Anomalies::default(), "queue anomalies: {a:?}");
}

/// The queue-anomaly group.
pub fn cases() -> Vec<Case> {
    let mut c = case!(Group::QueueAnomalies, concurrent_claim_complete_has_no_anomalies);
    c.time = crate::CaseTime::Untimed;
    vec![c]
}
