//! `ff-sqlite-load`: drives create → grant → claim → complete (and, for every
//! third execution, suspend → signal instead of complete) against a database
//! file and prints one line per acknowledged operation, so a crash test can
//! kill it at any point and check that nothing acknowledged was lost.
//!
//! Usage: `ff-sqlite-load PATH RUN_ID [COUNT]`

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use ff_backend_sqlite::{SqliteOptions, open};
use ff_core::contracts::*;
use ff_core::suspension::*;
use ff_core::{
    AttemptId, CancelSource, EngineBackend, ExecutionId, LaneId, LeaseFence, LeaseId, PartitionConfig,
    SignalId, SuspensionId, SystemClock, WaitpointId, WorkerId, WorkerInstanceId,
};

/// The waitpoint HMAC secret the load seeds (64 hex digits).
const SECRET: &str = "4c6f61642d7465737420736563726574206b657920666f722077616974706f69";
use uuid::Uuid;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(run)) = (args.get(1), args.get(2).and_then(|r| r.parse::<u64>().ok())) else {
        eprintln!("usage: ff-sqlite-load PATH RUN_ID [COUNT]");
        return ExitCode::from(2);
    };
    let count = args.get(3).and_then(|c| c.parse::<u64>().ok()).unwrap_or(u64::MAX);
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ff-sqlite-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(drive(path, run, count)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ff-sqlite-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ack(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn drive(path: &str, run: u64, count: u64) -> Result<(), ff_core::EngineError> {
    let options = SqliteOptions {
        partitions: PartitionConfig { num_flow_partitions: 8, ..PartitionConfig::default() },
        clock: Arc::new(SystemClock),
        ..SqliteOptions::default()
    };
    let b = open(path, options)?;
    // Seeding the same secret again is a no-op, so every run of the loader can do it.
    b.seed_waitpoint_hmac_secret("k1", SECRET).await?;
    let lane = LaneId::new("load");
    let worker_id = WorkerId::new("loader");
    let inst = WorkerInstanceId::new(format!("loader-{run}"));
    for n in 0..count {
        let id = ExecutionId::from_parts((n % 8) as u16, Uuid::from_u64_pair(run, n));
        b.create_execution(CreateExecutionArgs::new(id.clone(), "load", lane.clone(), "job")).await?;
        ack(format!("created {id}"));
        let grant = IssueClaimGrantArgs {
            execution_id: id.clone(),
            worker_id: worker_id.clone(),
            worker_instance_id: inst.clone(),
            lane_id: lane.clone(),
            capability_hash: String::new(),
            grant_ttl_ms: 60_000,
            route_snapshot_json: String::new(),
            admission_summary: String::new(),
            worker_capabilities: CapabilitySet::default(),
        };
        b.issue_claim_grant(grant).await?;
        let (lease_id, attempt_id) = (
            LeaseId::from_uuid(Uuid::from_u64_pair(run, n)),
            AttemptId::from_uuid(Uuid::from_u64_pair(n, run)),
        );
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
        let c = b.claim_execution(claim).await?;
        ack(format!("claimed {id} {}", c.lease_epoch));
        if n % 3 == 2 {
            suspend_and_signal(&b, &c, run, n).await?;
            continue;
        }
        let complete = CompleteExecutionArgs {
            execution_id: id.clone(),
            fence: Some(LeaseFence { lease_id, lease_epoch: c.lease_epoch, attempt_id }),
            result_payload: Some(format!("result {n}").into_bytes()),
            source: CancelSource::LeaseHolder,
        };
        b.complete_execution(complete).await?;
        ack(format!("completed {id}"));
    }
    Ok(())
}

/// Suspends the claimed execution on a fresh waitpoint, then resumes it with a signal.
async fn suspend_and_signal(
    b: &ff_backend_sqlite::SqliteBackend,
    c: &ClaimedExecution,
    run: u64,
    n: u64,
) -> Result<(), ff_core::EngineError> {
    let id = &c.execution_id;
    let wp = WaitpointId::from_uuid(Uuid::from_u64_pair(run ^ 0x77, n));
    let binding = WaitpointBinding::Fresh { waitpoint_id: wp, waitpoint_key: "k".into() };
    let condition =
        ResumeCondition::Single { waitpoint_key: "k".into(), matcher: SignalMatcher::ByName("go".into()) };
    let args = SuspendArgs::new(
        SuspensionId::from_uuid(Uuid::from_u64_pair(run ^ 0x55, n)),
        binding,
        condition,
        SuspensionReasonCode::WaitingForSignal,
    );
    let SuspendOutcome::Suspended { details, .. } = b.suspend(&c.handle, args).await? else {
        return Err(ff_core::EngineError::invalid_input(format!("{id}: suspend did not suspend")));
    };
    ack(format!("suspended {id}"));
    let signal_id = SignalId::from_uuid(Uuid::from_u64_pair(run ^ 0x33, n));
    let signal = DeliverSignalArgs {
        source_type: "load".into(),
        source_identity: "ff-sqlite-load".into(),
        ..DeliverSignalArgs::new(id.clone(), wp, signal_id, "go", details.primary.waitpoint_token)
    };
    b.deliver_signal(signal).await?;
    ack(format!("signalled {id}"));
    Ok(())
}
