//! Resume grants, `try_suspend` and usage reports over the memory backend on a
//! simulated clock (spec 03 §9.2, §9.3, §9.5).

use std::sync::Arc;
use std::time::Duration;

use ff_backend_memory::new_sim_backend;
use ff_core::admission::{CreateBudgetArgs, ReportUsageResult};
use ff_core::contracts::{
    CapabilitySet, CreateExecutionArgs, IssueClaimGrantArgs, IssueClaimGrantOutcome, ResumeGrant,
};
use ff_core::suspension::{ResumeCondition, ResumePolicy, SignalMatcher, SuspensionReasonCode};
use ff_core::{
    BudgetId, EngineBackend, ExecutionId, LaneId, PartitionConfig, PublicState, SimClock, WaitpointId,
    WorkerId, WorkerInstanceId,
};
use ff_sdk::{
    ClaimedTask, FlowFabricWorker, ResumeToken, SdkError, Signal, SignalOutcome, TrySuspendOutcome,
    WorkerConfig,
};

const PARTITIONS: u16 = 4;
const START_MS: i64 = 1_000_000;

struct Env {
    clock: SimClock,
    backend: Arc<dyn EngineBackend>,
}

impl Env {
    async fn new() -> Self {
        let clock = SimClock::new(START_MS);
        let cfg = PartitionConfig { num_flow_partitions: PARTITIONS, ..PartitionConfig::default() };
        let backend: Arc<dyn EngineBackend> = Arc::new(new_sim_backend(clock.clone(), cfg));
        let secret = "0123456789abcdef".repeat(4);
        backend.seed_waitpoint_hmac_secret("k1", &secret).await.expect("seed the HMAC secret");
        Self { clock, backend }
    }

    fn worker(&self, max_concurrent_tasks: usize, lease_ttl_ms: u64) -> FlowFabricWorker {
        let config = WorkerConfig {
            worker_id: WorkerId::new("w"),
            worker_instance_id: WorkerInstanceId::new("w-1"),
            lanes: vec![LaneId::new("default")],
            lease_ttl_ms,
            max_concurrent_tasks,
            ..WorkerConfig::default()
        };
        FlowFabricWorker::connect_with(config, self.backend.clone()).expect("valid config")
    }

    async fn submit(&self, partition: u16, n: u128) -> ExecutionId {
        let id = ExecutionId::from_parts(partition, uuid::Uuid::from_u128(n));
        let args = CreateExecutionArgs::new(id.clone(), "ns", LaneId::new("default"), "job");
        self.backend.create_execution(args).await.expect("create");
        id
    }

    async fn public_state(&self, id: &ExecutionId) -> PublicState {
        self.backend.read_execution_state(id).await.expect("read").expect("exists")
    }

    /// Claims, suspends on key `k` and signals it: the execution is resumable.
    async fn suspended_then_signalled(&self, worker: &FlowFabricWorker, partition: u16) -> ExecutionId {
        let id = self.submit(partition, u128::from(partition) + 1).await;
        let task = worker.claim_next().await.expect("claim").expect("a task");
        let suspended = task
            .suspend(SuspensionReasonCode::WaitingForSignal, wildcard("k"), None, ResumePolicy::default())
            .await
            .expect("suspend");
        let primary = suspended.details.primary;
        let outcome = worker.deliver_signal(&id, primary.waitpoint_id, signal(primary.waitpoint_token)).await;
        assert!(matches!(outcome, Ok(SignalOutcome::TriggeredResume { .. })), "{outcome:?}");
        assert_eq!(self.public_state(&id).await, PublicState::Waiting);
        id
    }

    /// A resume grant issued by the backend to worker `w`/`w-1`.
    async fn resume_grant(&self, id: &ExecutionId, grant_ttl_ms: u64) -> ResumeGrant {
        let args = IssueClaimGrantArgs {
            execution_id: id.clone(),
            worker_id: WorkerId::new("w"),
            worker_instance_id: WorkerInstanceId::new("w-1"),
            lane_id: LaneId::new("default"),
            capability_hash: String::new(),
            grant_ttl_ms,
            route_snapshot_json: String::new(),
            admission_summary: String::new(),
            worker_capabilities: CapabilitySet::default(),
        };
        let outcome = self.backend.issue_claim_grant(args).await.expect("grant");
        let IssueClaimGrantOutcome::Granted(g) = outcome else { panic!("expected a grant: {outcome:?}") };
        ResumeGrant {
            execution_id: g.execution_id,
            partition_key: g.partition_key,
            grant_key: g.grant_key,
            expires_at_ms: g.expires_at_ms,
            lane_id: LaneId::new("default"),
        }
    }
}

fn wildcard(key: &str) -> ResumeCondition {
    ResumeCondition::Single { waitpoint_key: key.into(), matcher: SignalMatcher::Wildcard }
}

fn signal(waitpoint_token: String) -> Signal {
    Signal {
        signal_name: "done".into(),
        signal_category: "test".into(),
        payload: None,
        source_type: "test".into(),
        source_identity: "me".into(),
        idempotency_key: None,
        waitpoint_token,
    }
}

fn token(grant: ResumeGrant) -> ResumeToken {
    ResumeToken {
        grant,
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("w-1"),
        lease_ttl_ms: 30_000,
    }
}

fn config_field<T: std::fmt::Debug>(result: Result<T, SdkError>) -> Option<&'static str> {
    match result {
        Err(SdkError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn claim_from_resume_grant_continues_the_same_attempt() {
    let env = Env::new().await;
    let worker = env.worker(1, 30_000);
    let id = env.suspended_then_signalled(&worker, 1).await;
    let grant = env.resume_grant(&id, 5_000).await;
    let task = worker.claim_from_resume_grant(token(grant)).await.expect("resumed claim");
    assert_eq!((task.execution_id(), task.attempt_index()), (&id, 0));
    assert_eq!(worker.available_permits(), 0, "the task holds the permit");
    assert_eq!(env.public_state(&id).await, PublicState::Active);
    let signals = task.resume_signals().await.expect("resume signals");
    let names: Vec<&str> = signals.iter().map(|s| s.signal_name.as_str()).collect();
    assert_eq!(names, ["done"]);
    task.complete(None).await.expect("complete");
    assert_eq!(worker.available_permits(), 1);
    assert_eq!(env.public_state(&id).await, PublicState::Completed);
}

#[tokio::test]
async fn claim_from_resume_grant_refuses_mismatches_and_capacity_before_claiming() {
    let env = Env::new().await;
    let worker = env.worker(1, 30_000);
    let id = env.suspended_then_signalled(&worker, 2).await;
    let grant = env.resume_grant(&id, 5_000).await;
    let other_worker = ResumeToken { worker_id: WorkerId::new("x"), ..token(grant.clone()) };
    assert_eq!(config_field(worker.claim_from_resume_grant(other_worker).await), Some("worker_id"));
    let other_instance =
        ResumeToken { worker_instance_id: WorkerInstanceId::new("w-2"), ..token(grant.clone()) };
    let refused = worker.claim_from_resume_grant(other_instance).await;
    assert_eq!(config_field(refused), Some("worker_instance_id"));
    let wrong_partition = ExecutionId::from_parts(3, uuid::Uuid::from_u128(99)).partition().key();
    let misrouted = ResumeGrant { partition_key: wrong_partition, ..grant.clone() };
    assert_eq!(config_field(worker.claim_from_resume_grant(token(misrouted)).await), Some("partition_key"));
    assert_eq!(worker.available_permits(), 1, "refusals give the permit back");
    assert_eq!(env.public_state(&id).await, PublicState::Waiting, "nothing was claimed");

    // At capacity the grant is not touched: it still works once a permit frees up.
    env.submit(0, 50).await;
    let busy = worker.claim_next().await.expect("claim").expect("a task");
    let at_capacity = worker.claim_from_resume_grant(token(grant.clone())).await;
    assert!(matches!(at_capacity, Err(SdkError::WorkerAtCapacity)), "{at_capacity:?}");
    assert_eq!(env.public_state(&id).await, PublicState::Waiting);
    drop(busy);
    let task = worker.claim_from_resume_grant(token(grant)).await.expect("the grant is intact");
    assert_eq!(task.execution_id(), &id);
    task.complete(None).await.expect("complete");
}

#[tokio::test]
async fn claim_from_resume_grant_refuses_an_expired_grant() {
    let env = Env::new().await;
    let worker = env.worker(1, 30_000);
    let id = env.suspended_then_signalled(&worker, 3).await;
    let grant = env.resume_grant(&id, 1_000).await;
    env.clock.advance(1_000);
    let refused = worker.claim_from_resume_grant(token(grant)).await;
    assert_eq!(config_field(refused), Some("expires_at_ms"));
    assert_eq!(worker.available_permits(), 1);
    assert_eq!(env.public_state(&id).await, PublicState::Waiting, "nothing was claimed");
}

#[tokio::test]
async fn try_suspend_parks_on_a_fresh_waitpoint() {
    let env = Env::new().await;
    let worker = env.worker(1, 30_000);
    let id = env.submit(0, 1).await;
    let task = worker.claim_next().await.expect("claim").expect("a task");
    let outcome = task
        .try_suspend(SuspensionReasonCode::WaitingForSignal, wildcard("k"), None, ResumePolicy::default())
        .await
        .expect("try_suspend");
    let TrySuspendOutcome::Suspended(parked) = outcome else { panic!("expected Suspended: {outcome:?}") };
    assert_eq!(parked.details.primary.waitpoint_key, "k");
    assert_eq!(env.public_state(&id).await, PublicState::Suspended);
    assert_eq!(worker.available_permits(), 1, "suspending releases the permit");
}

#[tokio::test(start_paused = true)]
async fn try_suspend_hands_back_the_leased_task_when_a_buffered_signal_satisfies_it() {
    let env = Env::new().await;
    let worker = env.worker(1, 300);
    let id = env.submit(1, 1).await;
    let task = worker.claim_next().await.expect("claim").expect("a task");
    let pending = task.create_pending_waitpoint("k", 60_000).await.expect("pending waitpoint");
    let buffered = worker.deliver_signal(&id, pending.waitpoint_id, signal(pending.hmac_token.clone())).await;
    assert!(buffered.is_ok(), "{buffered:?}");
    let outcome = task
        .try_suspend_on_pending(
            &pending,
            SuspensionReasonCode::WaitingForSignal,
            wildcard("k"),
            None,
            ResumePolicy::default(),
        )
        .await
        .expect("try_suspend_on_pending");
    let TrySuspendOutcome::AlreadySatisfied { task, details } = outcome else {
        panic!("expected AlreadySatisfied: {outcome:?}")
    };
    assert_eq!(details.primary.waitpoint_id, pending.waitpoint_id);
    assert_eq!(env.public_state(&id).await, PublicState::Active, "the lease is kept");
    assert_eq!(worker.available_permits(), 0, "the handed-back task keeps its permit");
    assert_renewal_resumed(&task).await;
    task.renew_lease().await.expect("the lease is still valid");
    task.complete(Some(b"done".to_vec())).await.expect("complete under the same lease");
    assert_eq!(env.public_state(&id).await, PublicState::Completed);
}

/// Auto-renewal runs again after the task was handed back (interval 100 ms).
async fn assert_renewal_resumed(task: &ClaimedTask) {
    let monitor = task.renewal_monitor();
    assert!(!monitor.is_stopped());
    let before = monitor.renewals();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(monitor.renewals() >= before + 2, "renewals: {} → {}", before, monitor.renewals());
    assert!(task.is_lease_healthy());
}

#[tokio::test]
async fn try_suspend_on_an_unknown_pending_waitpoint_is_an_engine_error() {
    let env = Env::new().await;
    let worker = env.worker(1, 30_000);
    env.submit(2, 1).await;
    let task = worker.claim_next().await.expect("claim").expect("a task");
    let unknown = ff_core::suspension::PendingWaitpoint {
        waitpoint_id: WaitpointId(uuid::Uuid::from_u128(404)),
        hmac_token: String::new(),
    };
    let outcome = task
        .try_suspend_on_pending(
            &unknown,
            SuspensionReasonCode::WaitingForSignal,
            wildcard("k"),
            None,
            ResumePolicy::default(),
        )
        .await;
    assert!(matches!(outcome, Err(SdkError::Engine(_))), "{outcome:?}");
}

#[tokio::test]
async fn report_usage_returns_soft_and_hard_breaches_as_values() {
    let env = Env::new().await;
    let budget_id = BudgetId(uuid::Uuid::from_u128(7));
    let budget = CreateBudgetArgs {
        budget_id,
        scope_type: "tenant".into(),
        scope_id: "t1".into(),
        enforcement_mode: "strict".into(),
        on_hard_limit: "reject".into(),
        on_soft_limit: "warn".into(),
        reset_interval_ms: 0,
        dimensions: vec!["tokens".into()],
        hard_limits: vec![100],
        soft_limits: vec![50],
    };
    env.backend.create_budget(budget).await.expect("create budget");
    let worker = env.worker(1, 30_000);
    let id = env.submit(0, 1).await;
    let task = worker.claim_next().await.expect("claim").expect("a task");
    let report = |delta: u64, dedup: Option<&'static str>| {
        let task = &task;
        async move { task.report_usage(budget_id, &[("tokens", delta)], dedup).await.expect("report") }
    };
    assert_eq!(report(40, Some("r1")).await, ReportUsageResult::Ok);
    assert_eq!(report(40, Some("r1")).await, ReportUsageResult::AlreadyApplied);
    let soft =
        ReportUsageResult::SoftBreach { dimension: "tokens".into(), current_usage: 60, soft_limit: 50 };
    assert_eq!(report(20, Some("")).await, soft, "an empty dedup key is no key");
    let hard =
        ReportUsageResult::HardBreach { dimension: "tokens".into(), current_usage: 60, hard_limit: 100 };
    assert_eq!(report(50, None).await, hard);
    assert!(task.is_lease_healthy());
    task.renew_lease().await.expect("the task keeps running after a hard breach");
    task.complete(None).await.expect("complete");
    assert_eq!(env.public_state(&id).await, PublicState::Completed);
}
