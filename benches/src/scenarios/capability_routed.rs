//! Scenario 5: capability-routed claim. Tasks declare required capabilities
//! from a universe of [`CAPS`]; workers hold a subset and claim through the
//! scheduler (`Scheduler::claim_for_worker`), whose pre-check routes each task
//! to a capable worker. One operation is a claim plus its completion.
//!
//! `happy`: every worker holds every capability and each task needs two, so
//! every probe passes the subset check. `partial`: each worker holds three
//! capabilities and each task needs one, so an incapable worker's probe parks
//! the task in the blocked-route index and the unblock scanner (every 100 ms)
//! re-admits it; this mode needs a backend that implements that scanner.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ff_core::contracts::{CapabilitySet, CreateExecutionArgs, RegisterWorkerArgs, ScannerKind};
use ff_core::{ContractFamily, EngineBackend, EngineError, LaneId, Namespace};
use ff_scheduler::{ScannerIntervals, ScannerRuntime, ScannerRuntimeConfig, Scheduler, SchedulerConfig};
use ff_sdk::SdkError;

use super::{
    GRANT_TTL_MS, LANE, NAMESPACE, Progress, RunOptions, WorkerTally, execution_id, join_workers, run_tag,
};
use crate::backends::{BenchError, Opened};
use crate::report::Measured;

/// Scenario name in reports.
pub const SCENARIO: &str = "capability_routed";
/// Tasks at scale 1.
pub const TASKS: usize = 1_000;
/// Workers at scale 1.
pub const WORKERS: usize = 100;
/// Size of the capability universe.
pub const CAPS: usize = 10;
/// Engine connections the workers share (round-robin) on Valkey.
const CONNECTIONS_MAX: usize = 16;
/// Idle scheduler probes are slowed by this factor over the run's poll interval: a hundred
/// workers polling at the scenario-1 rate would starve the workers that found work.
const IDLE_POLL_FACTOR: u32 = 10;
/// Unblock scanner period in `partial` mode.
const UNBLOCK_INTERVAL: Duration = Duration::from_millis(100);
/// Liveness TTL of the registered workers, in ms (outlives any run).
const WORKER_LIVENESS_TTL_MS: u64 = 3_600_000;

/// How capabilities are spread over workers and tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapMode {
    /// Every worker holds every capability.
    Happy,
    /// Each worker holds three capabilities; each task needs one.
    Partial,
}

impl CapMode {
    /// `happy` or `partial`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Happy => "happy",
            Self::Partial => "partial",
        }
    }
}

/// The name of capability `i`.
pub fn cap_name(i: usize) -> String {
    format!("cap{}", i % CAPS)
}

/// The capabilities worker `w` holds.
pub fn worker_caps(mode: CapMode, w: usize) -> Vec<String> {
    match mode {
        CapMode::Happy => (0..CAPS).map(cap_name).collect(),
        // Offsets 0, 1 and 5 are distinct mod 10, so every worker holds three.
        CapMode::Partial => [0, 1, 5].iter().map(|o| cap_name(w + o)).collect(),
    }
}

/// The capabilities task `t` requires; the first names its baseline list.
pub fn task_caps(mode: CapMode, t: usize) -> Vec<String> {
    match mode {
        CapMode::Happy => {
            let (a, b) = (cap_name(t), cap_name(t / CAPS + 3));
            if a == b { vec![a] } else { vec![a, b] }
        }
        CapMode::Partial => vec![cap_name(t)],
    }
}

/// The worker count of a mode: `partial` needs one worker per capability at least.
pub fn workers_for(mode: CapMode, opts: &RunOptions) -> usize {
    match mode {
        CapMode::Happy => opts.scaled(WORKERS),
        CapMode::Partial => opts.scaled(WORKERS).max(CAPS),
    }
}

/// The `config` object of the report.
pub fn config(mode: CapMode, tasks: usize, workers: usize) -> serde_json::Value {
    serde_json::json!({ "mode": mode.as_str(), "tasks": tasks, "workers": workers, "capabilities": CAPS })
}

/// Why the mode cannot run on this backend, if it cannot.
pub async fn unsupported(opened: &Opened, mode: CapMode) -> Option<String> {
    let caps = opened.backend.capabilities();
    let family = caps.identity.family;
    if !caps.has(ContractFamily::Scheduling) || !caps.has(ContractFamily::WorkerRegistry) {
        return Some(format!("the {family} backend does not claim the scheduling and worker families"));
    }
    if mode == CapMode::Happy {
        return None;
    }
    match opened.backend.run_scanner(ScannerKind::Unblock, 0, 1).await {
        Err(e) if matches!(e.root(), EngineError::Unavailable { .. }) => {
            Some(format!("the {family} backend has no unblock scanner to re-admit route-blocked tasks"))
        }
        _ => None,
    }
}

/// Submits the tasks, registers the workers, then drains through the scheduler.
///
/// Errors: a failed submit, registration, scheduler call, claim or completion.
pub async fn engine(
    opened: &Opened,
    mode: CapMode,
    tasks: usize,
    workers: usize,
    opts: &RunOptions,
) -> Result<Measured, BenchError> {
    submit(opened.backend.as_ref(), mode, tasks).await?;
    let connections = opened.connections(workers.min(CONNECTIONS_MAX)).await?;
    let scanners = match mode {
        CapMode::Happy => None,
        CapMode::Partial => {
            let intervals = ScannerIntervals::uniform(Duration::from_secs(3_600))
                .with(ScannerKind::Unblock, UNBLOCK_INTERVAL);
            let config = ScannerRuntimeConfig { intervals, ..ScannerRuntimeConfig::default() };
            let runtime = ScannerRuntime::start(opened.backend.clone(), config);
            Some(runtime.map_err(|e| BenchError::context("start scanners", e))?)
        }
    };
    let mut members = Vec::with_capacity(workers);
    for w in 0..workers {
        let backend = connections[w % connections.len()].clone();
        let member = super::worker(backend, w, worker_caps(mode, w))?;
        register(member.backend().as_ref(), &member, mode, w).await?;
        members.push(member);
    }
    let start = Instant::now();
    let progress = Progress::new(tasks as u64, start + opts.deadline);
    let idle_poll = opts.poll_interval * IDLE_POLL_FACTOR;
    let lost = Arc::new(AtomicU64::new(0));
    let handles = members
        .into_iter()
        .enumerate()
        .map(|(w, member)| {
            let (progress, lost) = (progress.clone(), lost.clone());
            tokio::spawn(async move { drain(member, worker_caps(mode, w), progress, idle_poll, lost).await })
        })
        .collect();
    let measured = join_workers(start, &progress, handles).await;
    if let Some(s) = scanners {
        s.shutdown().await;
    }
    let mut measured = measured?;
    let lost = lost.load(Ordering::Relaxed);
    if lost > 0 {
        let note = format!("{lost} granted claims lost to a concurrent route block");
        measured.notes = Some(measured.notes.map_or(note.clone(), |n| format!("{n}; {note}")));
    }
    Ok(measured)
}

/// Creates every task with its routing requirement.
async fn submit(backend: &dyn EngineBackend, mode: CapMode, tasks: usize) -> Result<(), BenchError> {
    let partitions = backend.partition_config().num_flow_partitions;
    let tag = run_tag();
    for t in 0..tasks {
        let id = execution_id(tag, t as u64, partitions);
        let mut args = CreateExecutionArgs::new(id, NAMESPACE, LaneId::new(LANE), "task");
        let required = task_caps(mode, t);
        args.policy_json =
            serde_json::json!({ "routing_requirements": { "required_capabilities": required } }).to_string();
        backend.create_execution(args).await.map_err(|e| BenchError::context("submit", e))?;
    }
    Ok(())
}

/// Registers a worker so the unblock scanner sees its capabilities.
async fn register(
    backend: &dyn EngineBackend,
    member: &ff_sdk::FlowFabricWorker,
    mode: CapMode,
    w: usize,
) -> Result<(), BenchError> {
    let config = member.config();
    let args = RegisterWorkerArgs {
        worker_id: config.worker_id.clone(),
        worker_instance_id: config.worker_instance_id.clone(),
        namespace: Namespace::new(NAMESPACE),
        lanes: BTreeSet::from([LaneId::new(LANE)]),
        capabilities: CapabilitySet::new(worker_caps(mode, w)),
        liveness_ttl_ms: WORKER_LIVENESS_TTL_MS,
    };
    backend.register_worker(args).await.map_err(|e| BenchError::context("register_worker", e))?;
    Ok(())
}

/// One worker: scheduler grant → claim from the grant → complete, until the run finishes.
async fn drain(
    member: ff_sdk::FlowFabricWorker,
    caps: Vec<String>,
    progress: Arc<Progress>,
    idle_poll: Duration,
    lost: Arc<AtomicU64>,
) -> Result<WorkerTally, BenchError> {
    let scheduler = Scheduler::new(member.backend().clone(), SchedulerConfig::default());
    let (lane, config) = (LaneId::new(LANE), member.config().clone());
    let mut tally = WorkerTally::default();
    while !progress.finished() {
        let t0 = Instant::now();
        let grant = scheduler
            .claim_for_worker(&lane, &config.worker_id, &config.worker_instance_id, &caps, GRANT_TTL_MS)
            .await
            .map_err(|e| BenchError::context("claim_for_worker", e))?;
        let Some(grant) = grant else {
            tokio::time::sleep(idle_poll).await;
            continue;
        };
        let task = match member.claim_from_grant(lane.clone(), grant).await {
            Ok(task) => task,
            // An incapable worker's probe can route-block a task another worker holds a grant
            // for; the granted claim then loses. Count it and go on.
            Err(SdkError::Engine(e)) if matches!(e.root(), EngineError::Contention(_)) => {
                lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => return Err(BenchError::context("claim_from_grant", e)),
        };
        task.complete(None).await.map_err(|e| BenchError::context("complete", e))?;
        tally.sample(t0);
        progress.record();
    }
    Ok(tally)
}
