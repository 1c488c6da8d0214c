//! Scenario 2: suspend → signal → resume. One worker claims a task, suspends it
//! on a fresh waitpoint, a signaller delivers a matching signal, and the
//! worker claims the resumed attempt and completes it. Latency runs from the
//! start of the delivery to the resumed claim; throughput counts full cycles.

use std::time::Instant;

use ff_core::contracts::CreateExecutionArgs;
use ff_core::suspension::{ResumeCondition, ResumePolicy, SignalMatcher, SuspensionReasonCode};
use ff_core::{ContractFamily, LaneId};
use ff_sdk::{ClaimedTask, FlowFabricWorker, Signal, SignalOutcome};

use super::{NAMESPACE, RunOptions, execution_id, run_tag, worker};
use crate::backends::{BenchError, Opened};
use crate::report::Measured;

/// Scenario name in reports.
pub const SCENARIO: &str = "suspend_signal_resume";
/// Cycles at scale 1.
pub const CYCLES: usize = 1_000;
/// HMAC key id the run seeds.
const HMAC_KID: &str = "bench-k1";
/// Claim attempts before a cycle gives up on finding its task.
const CLAIM_ATTEMPTS_MAX: usize = 1_000;

/// Why the scenario cannot run on a backend, if it cannot.
pub fn unsupported(opened: &Opened) -> Option<String> {
    let caps = opened.backend.capabilities();
    (!caps.has(ContractFamily::Suspension))
        .then(|| format!("the {} backend does not claim the suspension family", caps.identity.family))
}

/// The `config` object of the report.
pub fn config(cycles: usize) -> serde_json::Value {
    serde_json::json!({ "cycles": cycles, "workers": 1, "signallers": 1 })
}

/// Runs `cycles` suspend → signal → resume cycles one after another.
///
/// Errors: any failed contract, or a signal that did not resume the task.
pub async fn engine(opened: &Opened, cycles: usize, opts: &RunOptions) -> Result<Measured, BenchError> {
    let backend = opened.backend.clone();
    let secret = "5eed".repeat(16);
    backend
        .seed_waitpoint_hmac_secret(HMAC_KID, &secret)
        .await
        .map_err(|e| BenchError::context("seed hmac", e))?;
    let partitions = backend.partition_config().num_flow_partitions;
    let worker = worker(backend.clone(), 0, Vec::new())?;
    let tag = run_tag();
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(cycles);
    for n in 0..cycles as u64 {
        if start.elapsed() >= opts.deadline {
            break;
        }
        let id = execution_id(tag, n, partitions);
        let args = CreateExecutionArgs::new(id.clone(), NAMESPACE, LaneId::new(super::LANE), "task");
        backend.create_execution(args).await.map_err(|e| BenchError::context("submit", e))?;
        let task = claim(&worker).await?;
        let condition =
            ResumeCondition::Single { waitpoint_key: format!("wpk-{n}"), matcher: SignalMatcher::Wildcard };
        let suspended = task
            .suspend(SuspensionReasonCode::WaitingForSignal, condition, None, ResumePolicy::default())
            .await
            .map_err(|e| BenchError::context("suspend", e))?;
        let t0 = Instant::now();
        let signal = Signal {
            signal_name: "go".into(),
            signal_category: "bench".into(),
            payload: None,
            source_type: "bench".into(),
            source_identity: "signaller".into(),
            idempotency_key: None,
            waitpoint_token: suspended.details.primary.waitpoint_token.clone(),
        };
        let outcome = worker
            .deliver_signal(&id, suspended.details.primary.waitpoint_id, signal)
            .await
            .map_err(|e| BenchError::context("deliver_signal", e))?;
        if !matches!(outcome, SignalOutcome::TriggeredResume { .. }) {
            return Err(BenchError(format!("signal to {id} did not resume it: {outcome:?}")));
        }
        let resumed = claim(&worker).await?;
        latencies.push(t0.elapsed());
        resumed.complete(None).await.map_err(|e| BenchError::context("complete", e))?;
    }
    let done = latencies.len();
    let notes = (done < cycles).then(|| format!("deadline reached: {done} of {cycles} cycles finished"));
    Ok(Measured { completed_ops: done as u64, wall: start.elapsed(), latencies, notes })
}

/// Claims until the task arrives. The task is known to be eligible, so there is no sleep:
/// the bypass claim probes a window of partitions per call and needs at most a rotation.
async fn claim(worker: &FlowFabricWorker) -> Result<ClaimedTask, BenchError> {
    for _ in 0..CLAIM_ATTEMPTS_MAX {
        if let Some(task) = worker.claim_next().await.map_err(|e| BenchError::context("claim_next", e))? {
            return Ok(task);
        }
    }
    Err(BenchError(format!("no task found in {CLAIM_ATTEMPTS_MAX} claim calls")))
}
