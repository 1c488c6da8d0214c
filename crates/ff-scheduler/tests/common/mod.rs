//! Shared fixture: a memory backend on a simulated clock, a scheduler over it,
//! and helpers that own the API calls so each test reads as steps and checks.
#![allow(dead_code)]

pub mod faulty;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ff_backend_memory::{MemoryBackend, new_sim_backend};
use ff_core::admission::{CreateBudgetArgs, CreateQuotaPolicyArgs, ReportUsageArgs};
use ff_core::contracts::{
    CapabilitySet, ClaimExecutionArgs, ClaimGrant, CreateExecutionArgs, ExecutionSnapshot,
    RegisterWorkerArgs, ScannerKind,
};
use ff_core::{
    AttemptId, BudgetId, EngineBackend, EngineError, ExecutionId, LaneId, LeaseId, Namespace,
    PartitionConfig, QuotaPolicyId, SimClock, StateVector, WorkerId, WorkerInstanceId,
};
use ff_scheduler::{Scheduler, SchedulerConfig};
use serde_json::{Value, json};
use uuid::Uuid;

/// Grant TTL used by every test claim, in ms.
pub const GRANT_TTL_MS: u64 = 5_000;
/// Lease TTL used by every test lease, in ms.
pub const LEASE_TTL_MS: u64 = 1_000;
/// The lane every test execution is submitted to.
pub const LANE: &str = "default";
/// The worker id every test claim uses.
pub const WORKER: &str = "worker-a";

/// One test world.
pub struct Env {
    pub clock: SimClock,
    pub memory: Arc<MemoryBackend>,
    pub backend: Arc<dyn EngineBackend>,
    pub scheduler: Scheduler,
    next_uuid: AtomicU64,
}

impl Env {
    /// A world with `partitions` flow partitions and the default scheduler settings.
    pub fn new(partitions: u16) -> Self {
        Self::with_config(partitions, SchedulerConfig::default())
    }

    /// A world with `partitions` flow partitions and these scheduler settings.
    pub fn with_config(partitions: u16, config: SchedulerConfig) -> Self {
        let clock = SimClock::default();
        let cfg = PartitionConfig { num_flow_partitions: partitions, ..PartitionConfig::default() };
        let memory = Arc::new(new_sim_backend(clock.clone(), cfg));
        let backend: Arc<dyn EngineBackend> = memory.clone();
        let scheduler = Scheduler::new(backend.clone(), config);
        Self { clock, memory, backend, scheduler, next_uuid: AtomicU64::new(1) }
    }

    /// The same world with the scheduler over another backend (e.g. a fault-injecting wrapper).
    pub fn rewired(self, backend: Arc<dyn EngineBackend>) -> Self {
        let scheduler = Scheduler::new(backend.clone(), self.scheduler.config());
        Self { backend, scheduler, ..self }
    }

    /// A fresh deterministic UUID.
    pub fn uuid(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.next_uuid.fetch_add(1, Ordering::SeqCst)))
    }

    /// The memory store's deterministic dump.
    pub fn dump(&self) -> String {
        self.memory.runner().dump()
    }

    /// Creates an execution on `partition` of the test lane with a policy JSON object.
    pub async fn submit(&self, partition: u16, policy: Value) -> ExecutionId {
        self.submit_at(partition, policy, None).await
    }

    /// Creates an execution, optionally delayed until an absolute time.
    pub async fn submit_at(&self, partition: u16, policy: Value, delay_until: Option<i64>) -> ExecutionId {
        let id = ExecutionId::from_parts(partition, self.uuid());
        let mut args = CreateExecutionArgs::new(id.clone(), "ns", LaneId::new(LANE), "job");
        args.policy_json = if policy == json!({}) { String::new() } else { policy.to_string() };
        args.delay_until = delay_until;
        must(self.backend.create_execution(args).await, "create_execution");
        id
    }

    /// One scheduler call for instance `instance` with these capabilities.
    pub async fn claim(&self, instance: &str, caps: &[&str]) -> Result<Option<ClaimGrant>, EngineError> {
        let caps: Vec<String> = caps.iter().map(|c| (*c).to_owned()).collect();
        self.scheduler
            .claim_for_worker(
                &LaneId::new(LANE),
                &WorkerId::new(WORKER),
                &WorkerInstanceId::new(instance),
                &caps,
                GRANT_TTL_MS,
            )
            .await
    }

    /// Consumes a grant: the execution leaves the eligible index and holds a lease.
    pub async fn lease(&self, grant: &ClaimGrant, instance: &str) {
        let args = ClaimExecutionArgs {
            execution_id: grant.execution_id.clone(),
            worker_id: WorkerId::new(WORKER),
            worker_instance_id: WorkerInstanceId::new(instance),
            lane_id: LaneId::new(LANE),
            lease_id: LeaseId::from_uuid(self.uuid()),
            lease_ttl_ms: LEASE_TTL_MS,
            attempt_id: AttemptId::from_uuid(self.uuid()),
            attempt_policy_json: String::new(),
            attempt_timeout_ms: None,
            execution_deadline_at: None,
        };
        must(self.backend.claim_execution(args).await, "claim_execution");
    }

    /// Claims with `instance` and leases the grant; the granted id, if any.
    pub async fn claim_and_lease(&self, instance: &str, caps: &[&str]) -> Option<ExecutionId> {
        let grant = must(self.claim(instance, caps).await, "claim_for_worker")?;
        self.lease(&grant, instance).await;
        Some(grant.execution_id)
    }

    /// The execution's read model.
    pub async fn snapshot(&self, id: &ExecutionId) -> ExecutionSnapshot {
        match must(self.backend.describe_execution(id).await, "describe_execution") {
            Some(s) => s,
            None => panic!("execution {id} vanished"),
        }
    }

    /// The execution's state vector.
    pub async fn state(&self, id: &ExecutionId) -> StateVector {
        self.snapshot(id).await.state
    }

    /// Registers a live worker instance of namespace `ns` on the test lane.
    pub async fn register_worker(&self, instance: &str, caps: &[&str]) {
        let args = RegisterWorkerArgs {
            worker_id: WorkerId::new(WORKER),
            worker_instance_id: WorkerInstanceId::new(instance),
            namespace: Namespace::new("ns"),
            lanes: BTreeSet::from([LaneId::new(LANE)]),
            capabilities: CapabilitySet::new(caps.iter().copied()),
            liveness_ttl_ms: 60_000,
        };
        must(self.backend.register_worker(args).await, "register_worker");
    }

    /// One pass of the unblock scanner over every partition; how many executions it re-admitted.
    pub async fn unblock_pass(&self) -> u32 {
        let partitions = self.backend.partition_config().num_flow_partitions;
        let mut acted = 0;
        for p in 0..partitions {
            acted += must(self.backend.run_scanner(ScannerKind::Unblock, p, 100).await, "unblock scan").acted;
        }
        acted
    }

    /// Creates a budget with one hard-limited dimension and charges `used` to it.
    pub async fn budget(&self, dimension: &str, hard_limit: u64, used: u64) -> BudgetId {
        let budget_id = BudgetId::from_uuid(self.uuid());
        let args = CreateBudgetArgs {
            budget_id,
            scope_type: "tenant".into(),
            scope_id: "t1".into(),
            enforcement_mode: "strict".into(),
            on_hard_limit: "fail".into(),
            on_soft_limit: "warn".into(),
            reset_interval_ms: 0,
            dimensions: vec![dimension.to_owned()],
            hard_limits: vec![hard_limit],
            soft_limits: vec![0],
        };
        must(self.backend.create_budget(args).await, "create_budget");
        if used > 0 {
            let report = ReportUsageArgs {
                budget_id,
                dimensions: vec![(dimension.to_owned(), used)],
                dedup_key: None,
            };
            must(self.backend.report_usage_and_check(report).await, "report_usage_and_check");
        }
        budget_id
    }

    /// Creates a quota policy.
    pub async fn quota(&self, window_seconds: u64, max_requests: u64, max_concurrent: u64) -> QuotaPolicyId {
        let quota_policy_id = QuotaPolicyId::from_uuid(self.uuid());
        let args = CreateQuotaPolicyArgs {
            quota_policy_id,
            window_seconds,
            max_requests_per_window: max_requests,
            max_concurrent,
        };
        must(self.backend.create_quota_policy(args).await, "create_quota_policy");
        quota_policy_id
    }
}

/// Unwraps a setup step, naming it on failure.
pub fn must<T, E: std::fmt::Debug>(r: Result<T, E>, step: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{step} failed: {e:?}"),
    }
}

/// Polls `check` every 10 ms until it holds or `limit` passes; true when it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
