//! Scenario 1: submit → claim → complete. Tasks with a fixed payload are
//! submitted before the clock starts; workers drain them. One operation is a
//! claim plus its completion; its latency runs from the start of the claim
//! call that found the task to the end of the completion.

use std::sync::Arc;
use std::time::Instant;

use ff_core::contracts::CreateExecutionArgs;
use ff_core::{EngineBackend, LaneId};

use super::{
    NAMESPACE, Progress, RunOptions, WorkerTally, execution_id, join_workers, payload, run_tag, worker,
};
use crate::backends::{BenchError, Opened};
use crate::report::Measured;

/// Scenario name in reports.
pub const SCENARIO: &str = "submit_claim_complete";
/// Tasks at scale 1.
pub const TASKS: usize = 10_000;
/// Workers (not scaled: the issue fixes 16).
pub const WORKERS: usize = 16;
/// Input payload of every task, in bytes.
pub const PAYLOAD_BYTES: usize = 4_096;

/// The scenario's sizes after scaling.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Tasks submitted and drained.
    pub tasks: usize,
    /// Concurrent workers.
    pub workers: usize,
    /// Payload bytes per task.
    pub payload_bytes: usize,
}

impl Shape {
    /// The shape, tasks scaled.
    pub fn new(opts: &RunOptions) -> Self {
        Self { tasks: opts.scaled(TASKS), workers: WORKERS, payload_bytes: PAYLOAD_BYTES }
    }

    /// The `config` object of the report.
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "tasks": self.tasks, "workers": self.workers, "payload_bytes": self.payload_bytes,
        })
    }
}

/// Submits every task, then drains them with the SDK's bypass claim.
///
/// Errors: a failed submit, claim or completion.
pub async fn engine(opened: &Opened, shape: Shape, opts: &RunOptions) -> Result<Measured, BenchError> {
    let backend = &opened.backend;
    let partitions = backend.partition_config().num_flow_partitions;
    let tag = run_tag();
    let input = payload(shape.payload_bytes);
    for n in 0..shape.tasks as u64 {
        let mut args = CreateExecutionArgs::new(
            execution_id(tag, n, partitions),
            NAMESPACE,
            LaneId::new(super::LANE),
            "task",
        );
        args.input_payload = input.clone();
        backend.create_execution(args).await.map_err(|e| BenchError::context("submit", e))?;
    }
    let connections = opened.connections(shape.workers).await?;
    let start = Instant::now();
    let progress = Progress::new(shape.tasks as u64, start + opts.deadline);
    let mut handles = Vec::with_capacity(shape.workers);
    for (index, connection) in connections.into_iter().enumerate() {
        let progress = progress.clone();
        let poll = opts.poll_interval;
        handles.push(tokio::spawn(async move { drain(connection, index, progress, poll).await }));
    }
    join_workers(start, &progress, handles).await
}

/// One worker's claim → complete loop until the run finishes.
async fn drain(
    backend: Arc<dyn EngineBackend>,
    index: usize,
    progress: Arc<Progress>,
    poll: std::time::Duration,
) -> Result<WorkerTally, BenchError> {
    let worker = worker(backend, index, Vec::new())?;
    let mut tally = WorkerTally::default();
    while !progress.finished() {
        let t0 = Instant::now();
        let Some(task) = worker.claim_next().await.map_err(|e| BenchError::context("claim_next", e))? else {
            tokio::time::sleep(poll).await;
            continue;
        };
        task.complete(None).await.map_err(|e| BenchError::context("complete", e))?;
        tally.sample(t0);
        progress.record();
    }
    Ok(tally)
}
