//! The end-to-end scenarios of `ff-bench`, each as an engine run over any
//! backend and a raw-Valkey baseline of the same shape.
//!
//! Engine runs drive the worker SDK (`FlowFabricWorker`, `ClaimedTask`) and, in
//! scenario 5, the scheduler; baselines drive lists with `RPUSH`/`LPUSH` and
//! `BLMPOP` through ferriskey with no engine code at all.

pub mod baseline;
pub mod capability_routed;
pub mod linear_flow;
pub mod submit_claim_complete;
pub mod suspend_signal_resume;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ff_core::{EngineBackend, ExecutionId, LaneId, Namespace, WorkerId, WorkerInstanceId};
use ff_sdk::{FlowFabricWorker, WorkerConfig};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::backends::BenchError;
use crate::report::Measured;

/// Lane every scenario submits to.
pub const LANE: &str = "bench";
/// Namespace of every execution and worker.
pub const NAMESPACE: &str = "bench";
/// Lease TTL of every engine claim, in ms.
pub const LEASE_TTL_MS: u64 = 30_000;
/// Grant TTL of scheduler claims, in ms.
pub const GRANT_TTL_MS: u64 = 5_000;

/// Knobs every scenario shares.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Multiplies task, flow and worker counts (1.0 = the sizes).
    pub scale: f64,
    /// A scenario stops (and says so in `notes`) after this long.
    pub deadline: Duration,
    /// Sleep of an engine worker whose claim found nothing.
    pub poll_interval: Duration,
}

impl RunOptions {
    /// `base · scale`, at least 1.
    pub fn scaled(&self, base: usize) -> usize {
        ((base as f64 * self.scale).round() as usize).max(1)
    }
}

/// Counts finished operations against a target and a deadline.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    target: u64,
    deadline: Instant,
}

impl Progress {
    /// A counter for `target` operations, giving up at `deadline`.
    pub fn new(target: u64, deadline: Instant) -> Arc<Self> {
        Arc::new(Self { done: AtomicU64::new(0), target, deadline })
    }

    /// Whether every operation finished or the deadline passed.
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.target || Instant::now() >= self.deadline
    }

    /// Counts one finished operation.
    pub fn record(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
    }

    /// Operations finished so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// The target.
    pub fn target(&self) -> u64 {
        self.target
    }
}

/// What one worker task measured.
#[derive(Debug, Default)]
pub struct WorkerTally {
    /// One sample per operation it finished.
    pub latencies: Vec<Duration>,
    /// When it finished its last operation.
    pub last_done: Option<Instant>,
}

impl WorkerTally {
    /// Records an operation that started at `t0` and ends now.
    pub fn sample(&mut self, t0: Instant) {
        let now = Instant::now();
        self.latencies.push(now - t0);
        self.last_done = Some(now);
    }
}

/// Waits for every worker; the wall time runs from `start` to the last finished operation.
///
/// Errors: the first worker error or panic.
pub async fn join_workers(
    start: Instant,
    progress: &Progress,
    handles: Vec<JoinHandle<Result<WorkerTally, BenchError>>>,
) -> Result<Measured, BenchError> {
    let mut latencies = Vec::with_capacity(usize::try_from(progress.target()).unwrap_or(0));
    let mut last = start;
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok(t)) => {
                latencies.extend(t.latencies);
                last = last.max(t.last_done.unwrap_or(start));
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(BenchError::context("worker task", e))),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let done = progress.done();
    let notes = (done < progress.target())
        .then(|| format!("deadline reached: {done} of {} operations finished", progress.target()));
    Ok(Measured { completed_ops: done, wall: last - start, latencies, notes })
}

/// A run-unique UUID high half, so reruns against one server never collide.
pub fn run_tag() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Only the low bits vary between runs; mixing in the pid separates parallel runs.
    (nanos as u64) ^ (u64::from(std::process::id()) << 48)
}

/// The `n`th execution id of a run, spread round-robin over the partitions.
pub fn execution_id(tag: u64, n: u64, partitions: u16) -> ExecutionId {
    ExecutionId::from_parts((n % u64::from(partitions.max(1))) as u16, Uuid::from_u64_pair(tag, n))
}

/// A deterministic filler payload of `bytes` bytes.
pub fn payload(bytes: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..bytes)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// A worker of the run on `backend`, with one permit and these capabilities.
///
/// Errors: an invalid config (a bug in the scenario).
pub fn worker(
    backend: Arc<dyn EngineBackend>,
    index: usize,
    capabilities: Vec<String>,
) -> Result<FlowFabricWorker, BenchError> {
    let config = WorkerConfig {
        worker_id: WorkerId::new(format!("bench-w{index}")),
        worker_instance_id: WorkerInstanceId::new(format!("bench-w{index}-{}", std::process::id())),
        namespace: Namespace::new(NAMESPACE),
        lanes: vec![LaneId::new(LANE)],
        capabilities,
        lease_ttl_ms: LEASE_TTL_MS,
        max_concurrent_tasks: 1,
        ..WorkerConfig::default()
    };
    FlowFabricWorker::connect_with(config, backend).map_err(|e| BenchError::context("worker config", e))
}
