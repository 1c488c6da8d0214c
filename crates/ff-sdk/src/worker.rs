//! `FlowFabricWorker`: claims work straight from a backend (spec 03 §6.6, §9.2).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ff_core::contracts::{
    BlockExecutionArgs, CapabilitySet, ClaimExecutionArgs, ClaimGrant, ClaimResumedExecutionArgs,
    ClaimedExecution, ExecutionContext, ExecutionSnapshot, IssueClaimGrantArgs, ReclaimExecutionArgs,
    ReclaimExecutionOutcome, ReclaimGrant, RegisterWorkerArgs, RegisterWorkerOutcome, ResumeGrant,
};
use ff_core::error::{ContentionKind, ErrorClass, ValidationKind};
use ff_core::partition::fnv1a_u64;
use ff_core::suspension::{DeliverSignalArgs, DeliverSignalOutcome};
use ff_core::{
    AttemptId, BlockingReason, EngineBackend, EngineError, ExecutionId, LaneId, LeaseId, PartitionConfig,
    PartitionKey, SignalId, WaitpointId, WorkerId, WorkerInstanceId,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admin::FlowFabricAdminClient;
use crate::config::{WorkerConfig, validate_capabilities};
use crate::error::SdkError;
use crate::task::{ClaimedTask, TaskParts};
use crate::wire::ClaimForWorkerRequest;

/// Partitions probed per `claim_next` call (at most the partition count).
pub const CLAIM_SCAN_PARTITIONS_MAX: u16 = 32;
/// TTL of the grant the bypass claim issues to itself, in ms.
pub const BYPASS_GRANT_TTL_MS: u64 = 5_000;
/// Shortest liveness TTL `connect` registers, in ms.
pub const WORKER_LIVENESS_TTL_MS_MIN: u64 = 1_000;
/// Blocking detail written when no worker holds an execution's capabilities.
pub const ROUTE_BLOCK_DETAIL: &str = "no connected worker satisfies required_capabilities";

/// A signal to deliver to a waitpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Name matched by resume conditions.
    pub signal_name: String,
    /// Stored category.
    pub signal_category: String,
    /// Payload bytes.
    pub payload: Option<Vec<u8>>,
    /// Stored source type.
    pub source_type: String,
    /// Stored source identity.
    pub source_identity: String,
    /// Per-waitpoint dedup key.
    pub idempotency_key: Option<String>,
    /// The waitpoint's HMAC token.
    pub waitpoint_token: String,
}

/// What a signal delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalOutcome {
    /// The signal satisfied the resume condition.
    TriggeredResume {
        /// The signal.
        signal_id: SignalId,
    },
    /// Recorded with another effect.
    Accepted {
        /// The signal.
        signal_id: SignalId,
        /// The effect string.
        effect: String,
    },
    /// The idempotency key was already seen.
    Duplicate {
        /// The first signal with that key.
        existing_signal_id: SignalId,
    },
}

/// A resume grant bound to the worker it was issued to (spec 04 `ResumeToken`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken {
    /// The grant for the interrupted attempt.
    pub grant: ResumeGrant,
    /// The grantee worker; must be this worker's id.
    pub worker_id: WorkerId,
    /// The grantee instance; must be this worker's instance id.
    pub worker_instance_id: WorkerInstanceId,
    /// TTL of the new lease, in ms.
    pub lease_ttl_ms: u64,
}

/// What claiming from a reclaim grant produced.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReclaimClaim {
    /// A new attempt under a new lease.
    Claimed(Box<ClaimedTask>),
    /// No valid grant for this worker.
    GrantNotFound,
    /// The execution is not reclaimable.
    NotReclaimable {
        /// Why.
        detail: String,
    },
    /// The reclaim cap was reached; the execution is now terminally failed.
    ReclaimCapExceeded {
        /// The cap.
        reclaim_count: u32,
    },
}

/// A worker bound to one backend.
pub struct FlowFabricWorker {
    config: WorkerConfig,
    capabilities: CapabilitySet,
    backend: Arc<dyn EngineBackend>,
    partitions: PartitionConfig,
    permits: Arc<Semaphore>,
    scan_cursor: AtomicU64,
    lane_cursor: AtomicUsize,
}

impl std::fmt::Debug for FlowFabricWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowFabricWorker")
            .field("worker_instance_id", &self.config.worker_instance_id)
            .field("lanes", &self.config.lanes)
            .finish_non_exhaustive()
    }
}

impl FlowFabricWorker {
    /// Opens the backend named by `config.backend`; errors: `Config` (missing backend, invalid
    /// config), `Engine` (open failure).
    pub async fn connect(config: WorkerConfig) -> Result<Self, SdkError> {
        config.validate()?;
        let Some(backend_config) = config.backend.clone() else {
            return Err(SdkError::config("worker_config", Some("backend"), "is required by connect"));
        };
        let partitions = config.partition_config.unwrap_or_default();
        let backend = backend_config.connect(partitions).await?;
        backend.server_time_ms().await?;
        let worker = Self::connect_with(config, backend)?;
        worker.register().await?;
        Ok(worker)
    }

    /// Claims the instance's liveness registration for `max(2 × lease TTL, 1 s)`.
    ///
    /// Errors: `Config{field: worker_instance_id}` when a live registration already exists.
    async fn register(&self) -> Result<(), SdkError> {
        let args = RegisterWorkerArgs {
            worker_id: self.config.worker_id.clone(),
            worker_instance_id: self.config.worker_instance_id.clone(),
            namespace: self.config.namespace.clone(),
            lanes: self.config.lanes.iter().cloned().collect(),
            capabilities: self.capabilities.clone(),
            liveness_ttl_ms: self.config.lease_ttl_ms.saturating_mul(2).max(WORKER_LIVENESS_TTL_MS_MIN),
        };
        match self.backend.register_worker(args).await? {
            RegisterWorkerOutcome::Registered => Ok(()),
            _ => Err(SdkError::config(
                "worker_config",
                Some("worker_instance_id"),
                format!(
                    "duplicate worker_instance_id {}: a live worker holds it",
                    self.config.worker_instance_id
                ),
            )),
        }
    }

    /// A worker over an existing backend (no I/O); errors: `Config` for an invalid config.
    pub fn connect_with(config: WorkerConfig, backend: Arc<dyn EngineBackend>) -> Result<Self, SdkError> {
        config.validate()?;
        if config.backend.is_some() {
            tracing::warn!("WorkerConfig.backend is ignored by connect_with");
        }
        let capabilities = validate_capabilities("worker_config", &config.capabilities)?;
        let partitions = config.partition_config.unwrap_or_else(|| backend.partition_config());
        let permits = Arc::new(Semaphore::new(config.max_concurrent_tasks.max(1)));
        let seed = fnv1a_u64(config.worker_instance_id.as_str().as_bytes())
            % u64::from(partitions.num_flow_partitions.max(1));
        Ok(Self {
            config,
            capabilities,
            backend,
            partitions,
            permits,
            scan_cursor: AtomicU64::new(seed),
            lane_cursor: AtomicUsize::new(0),
        })
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn EngineBackend> {
        &self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The partition counts in use.
    pub fn partition_config(&self) -> PartitionConfig {
        self.partitions
    }

    /// Free concurrency permits.
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }

    /// Scheduler-bypass claim (no budget or quota admission); `Ok(None)` at capacity or when
    /// nothing is eligible on the probed partitions. Errors: `Engine` for non-skippable failures.
    pub async fn claim_next(&self) -> Result<Option<ClaimedTask>, SdkError> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Ok(None);
        };
        let lane = self.next_lane();
        let count = self.partitions.num_flow_partitions.max(1);
        let chunk = CLAIM_SCAN_PARTITIONS_MAX.min(count);
        let start = self.scan_cursor.fetch_add(u64::from(chunk), Ordering::AcqRel) % u64::from(count);
        // `start < count: u16`; the window wraps into at most two ranges, each one batched
        // read (one round trip on backends that pipeline it).
        let start = start as u16;
        let end = start.saturating_add(chunk).min(count);
        let wrapped = chunk - (end - start);
        let mut heads = self.eligible_heads(&lane, start..end).await?;
        heads.extend(self.eligible_heads(&lane, 0..wrapped).await?);
        for execution_id in heads {
            if !self.grant_to_self(&execution_id, &lane).await? {
                continue;
            }
            match self.claim_granted(execution_id, lane.clone()).await {
                Ok(parts) => return Ok(Some(ClaimedTask::start(self.backend.clone(), parts, permit))),
                Err(e) if skippable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Claims a grant from the scheduler (fresh, or resumed after a suspension).
    ///
    /// Errors: `WorkerAtCapacity` (grant untouched), `Config{field: partition_key}`, `Engine`.
    pub async fn claim_from_grant(&self, lane: LaneId, grant: ClaimGrant) -> Result<ClaimedTask, SdkError> {
        let permit = self.take_permit()?;
        check_partition_key("claim_from_grant", &grant.partition_key, &grant.execution_id)?;
        let parts = self.claim_granted(grant.execution_id, lane).await?;
        Ok(ClaimedTask::start(self.backend.clone(), parts, permit))
    }

    /// Asks the server's scheduler for work for this worker and claims the grant; `Ok(None)` when
    /// the server has none (204).
    ///
    /// Errors: `WorkerAtCapacity` (checked first, nothing is sent), `Config`, `Http`, `Api`, `Engine`.
    pub async fn claim_via_server(
        &self,
        admin: &FlowFabricAdminClient,
        lane: LaneId,
        grant_ttl_ms: u64,
    ) -> Result<Option<ClaimedTask>, SdkError> {
        if self.permits.available_permits() == 0 {
            return Err(SdkError::WorkerAtCapacity);
        }
        let request = ClaimForWorkerRequest {
            worker_id: self.config.worker_id.as_str().to_owned(),
            lane_id: lane.as_str().to_owned(),
            worker_instance_id: self.config.worker_instance_id.as_str().to_owned(),
            capabilities: self.capabilities.0.iter().cloned().collect(),
            grant_ttl_ms,
        };
        let Some(response) = admin.claim_for_worker(request).await? else {
            return Ok(None);
        };
        let grant = response.into_grant()?;
        self.claim_from_grant(lane, grant).await.map(Some)
    }

    /// Consumes a resume grant: the same attempt under a new lease, on `grant.lane_id`.
    ///
    /// Errors: `WorkerAtCapacity` (checked first, grant untouched), `Config` (token issued to
    /// another worker, bad partition key, or a grant expired on the backend clock; no claim is
    /// sent), `Engine` (e.g. `NotAResumedExecution`, `InvalidClaimGrant`).
    pub async fn claim_from_resume_grant(&self, token: ResumeToken) -> Result<ClaimedTask, SdkError> {
        const CTX: &str = "claim_from_resume_grant";
        let permit = self.take_permit()?;
        if token.worker_id != self.config.worker_id {
            return Err(SdkError::config(CTX, Some("worker_id"), "the grant was issued to another worker"));
        }
        if token.worker_instance_id != self.config.worker_instance_id {
            return Err(SdkError::config(
                CTX,
                Some("worker_instance_id"),
                "the grant was issued to another worker instance",
            ));
        }
        let grant = token.grant;
        check_partition_key(CTX, &grant.partition_key, &grant.execution_id)?;
        if grant.expires_at_ms <= self.backend.server_time_ms().await? {
            return Err(SdkError::config(CTX, Some("expires_at_ms"), "the grant has expired"));
        }
        let args = ClaimResumedExecutionArgs {
            execution_id: grant.execution_id,
            worker_id: self.config.worker_id.clone(),
            worker_instance_id: self.config.worker_instance_id.clone(),
            lane_id: grant.lane_id.clone(),
            lease_id: LeaseId(uuid::Uuid::new_v4()),
            lease_ttl_ms: token.lease_ttl_ms,
            remaining_attempt_timeout_ms: None,
        };
        let claimed = self.backend.claim_resumed_execution(args).await?;
        let mut parts = self.task_parts(claimed, grant.lane_id).await?;
        parts.lease_ttl_ms = token.lease_ttl_ms;
        Ok(ClaimedTask::start(self.backend.clone(), parts, permit))
    }

    /// Consumes a reclaim grant: a new attempt after a lost lease.
    ///
    /// Errors: `WorkerAtCapacity`, `Config` (bad partition key or an expired grant on the
    /// backend clock), `Engine`.
    pub async fn claim_from_reclaim_grant(&self, grant: ReclaimGrant) -> Result<ReclaimClaim, SdkError> {
        const CTX: &str = "claim_from_reclaim_grant";
        let permit = self.take_permit()?;
        check_partition_key(CTX, &grant.partition_key, &grant.execution_id)?;
        if grant.expires_at_ms <= self.backend.server_time_ms().await? {
            return Err(SdkError::config(CTX, Some("expires_at_ms"), "the grant has expired"));
        }
        let args = ReclaimExecutionArgs {
            execution_id: grant.execution_id.clone(),
            worker_id: self.config.worker_id.clone(),
            worker_instance_id: self.config.worker_instance_id.clone(),
            lane_id: grant.lane_id.clone(),
            lease_id: LeaseId(uuid::Uuid::new_v4()),
            lease_ttl_ms: self.config.lease_ttl_ms,
            attempt_id: AttemptId(uuid::Uuid::new_v4()),
            attempt_policy_json: String::new(),
            max_reclaim_count: None,
        };
        Ok(match self.backend.reclaim_execution(args).await? {
            ReclaimExecutionOutcome::Claimed(claimed) => {
                let parts = self.task_parts(claimed, grant.lane_id).await?;
                ReclaimClaim::Claimed(Box::new(ClaimedTask::start(self.backend.clone(), parts, permit)))
            }
            ReclaimExecutionOutcome::GrantNotFound { .. } => ReclaimClaim::GrantNotFound,
            ReclaimExecutionOutcome::NotReclaimable { detail, .. } => ReclaimClaim::NotReclaimable { detail },
            ReclaimExecutionOutcome::ReclaimCapExceeded { reclaim_count, .. } => {
                ReclaimClaim::ReclaimCapExceeded { reclaim_count }
            }
            other => {
                return Err(SdkError::config(CTX, None, format!("unknown reclaim outcome: {other:?}")));
            }
        })
    }

    /// Delivers a signal to a waitpoint with its token; errors: `Engine` (`invalid_token`, …).
    pub async fn deliver_signal(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: WaitpointId,
        signal: Signal,
    ) -> Result<SignalOutcome, SdkError> {
        let args = DeliverSignalArgs {
            signal_category: signal.signal_category,
            source_type: signal.source_type,
            source_identity: signal.source_identity,
            payload: signal.payload,
            payload_encoding: Some("json".into()),
            idempotency_key: signal.idempotency_key,
            created_at: Some(self.backend.server_time_ms().await?),
            ..DeliverSignalArgs::new(
                execution_id.clone(),
                waitpoint_id,
                SignalId(uuid::Uuid::new_v4()),
                signal.signal_name,
                signal.waitpoint_token,
            )
        };
        Ok(match self.backend.deliver_signal(args).await? {
            DeliverSignalOutcome::Accepted { signal_id, effect }
                if effect == "resume_condition_satisfied" =>
            {
                SignalOutcome::TriggeredResume { signal_id }
            }
            DeliverSignalOutcome::Accepted { signal_id, effect } => {
                SignalOutcome::Accepted { signal_id, effect }
            }
            DeliverSignalOutcome::Duplicate { existing_signal_id } => {
                SignalOutcome::Duplicate { existing_signal_id }
            }
            other => {
                return Err(SdkError::config("deliver_signal", None, format!("unknown outcome: {other:?}")));
            }
        })
    }

    /// The execution's read model; errors: `Engine`.
    pub async fn describe_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<ExecutionSnapshot>, SdkError> {
        Ok(self.backend.describe_execution(execution_id).await?)
    }

    fn take_permit(&self) -> Result<OwnedSemaphorePermit, SdkError> {
        self.permits.clone().try_acquire_owned().map_err(|_| SdkError::WorkerAtCapacity)
    }

    fn next_lane(&self) -> LaneId {
        let i = self.lane_cursor.fetch_add(1, Ordering::AcqRel) % self.config.lanes.len().max(1);
        self.config.lanes.get(i).cloned().unwrap_or_else(|| LaneId::new("default"))
    }

    /// The heads of the lane's eligible index over a partition range; a retryable read
    /// error skips the range.
    async fn eligible_heads(
        &self,
        lane: &LaneId,
        partitions: std::ops::Range<u16>,
    ) -> Result<Vec<ExecutionId>, SdkError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        match self.backend.scan_eligible_heads(lane, partitions).await {
            Ok(ids) => Ok(ids),
            Err(e) if skippable(&e) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Issues a grant to this worker; `false` means "next partition" (a capability mismatch
    /// blocks the route so the execution stops heading the eligible index).
    async fn grant_to_self(&self, execution_id: &ExecutionId, lane: &LaneId) -> Result<bool, SdkError> {
        let args = IssueClaimGrantArgs {
            execution_id: execution_id.clone(),
            worker_id: self.config.worker_id.clone(),
            worker_instance_id: self.config.worker_instance_id.clone(),
            lane_id: lane.clone(),
            capability_hash: String::new(),
            grant_ttl_ms: BYPASS_GRANT_TTL_MS,
            route_snapshot_json: String::new(),
            admission_summary: String::new(),
            worker_capabilities: self.capabilities.clone(),
        };
        match self.backend.issue_claim_grant(args).await {
            Ok(_) => Ok(true),
            Err(e) if is_capability_mismatch(&e) => {
                self.block_route(execution_id).await;
                Ok(false)
            }
            Err(e) if skippable(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn block_route(&self, execution_id: &ExecutionId) {
        let args = BlockExecutionArgs {
            execution_id: execution_id.clone(),
            reason: BlockingReason::WaitingForCapableWorker,
            detail: ROUTE_BLOCK_DETAIL.into(),
        };
        if let Err(e) = self.backend.block_execution_for_admission(args).await {
            tracing::warn!(%execution_id, error = %e, "blocking an unroutable execution failed");
        }
    }

    /// Consumes this worker's grant: a fresh claim, or the resumed claim of a paused attempt.
    async fn claim_granted(&self, execution_id: ExecutionId, lane: LaneId) -> Result<TaskParts, EngineError> {
        let lease_id = LeaseId(uuid::Uuid::new_v4());
        let args = ClaimExecutionArgs {
            execution_id: execution_id.clone(),
            worker_id: self.config.worker_id.clone(),
            worker_instance_id: self.config.worker_instance_id.clone(),
            lane_id: lane.clone(),
            lease_id,
            lease_ttl_ms: self.config.lease_ttl_ms,
            attempt_id: AttemptId(uuid::Uuid::new_v4()),
            attempt_policy_json: String::new(),
            attempt_timeout_ms: None,
            execution_deadline_at: None,
        };
        // The context (payload, kind, tags) never changes after create, so it is read while
        // the claim is in flight: one round trip for both on a networked backend.
        let (claim, context) = tokio::join!(
            self.backend.claim_execution(args),
            self.backend.read_execution_context(&execution_id)
        );
        let claimed = match claim {
            Ok(c) => c,
            Err(e)
                if matches!(e.root(), EngineError::Contention(ContentionKind::UseClaimResumedExecution)) =>
            {
                let resumed = ClaimResumedExecutionArgs {
                    execution_id,
                    worker_id: self.config.worker_id.clone(),
                    worker_instance_id: self.config.worker_instance_id.clone(),
                    lane_id: lane.clone(),
                    lease_id,
                    lease_ttl_ms: self.config.lease_ttl_ms,
                    remaining_attempt_timeout_ms: None,
                };
                self.backend.claim_resumed_execution(resumed).await?
            }
            Err(e) => return Err(e),
        };
        Ok(Self::parts_with(claimed, lane, self.config.lease_ttl_ms, context?))
    }

    async fn task_parts(&self, claimed: ClaimedExecution, lane_id: LaneId) -> Result<TaskParts, EngineError> {
        let context = self.backend.read_execution_context(&claimed.execution_id).await?;
        Ok(Self::parts_with(claimed, lane_id, self.config.lease_ttl_ms, context))
    }

    /// A claimed execution and its context as the parts of a task.
    fn parts_with(
        claimed: ClaimedExecution,
        lane_id: LaneId,
        lease_ttl_ms: u64,
        context: ExecutionContext,
    ) -> TaskParts {
        TaskParts {
            claimed,
            lane_id,
            lease_ttl_ms,
            input_payload: context.input_payload,
            execution_kind: context.execution_kind,
            tags: context.tags,
        }
    }
}

fn check_partition_key(
    context: &'static str,
    key: &PartitionKey,
    execution_id: &ExecutionId,
) -> Result<(), SdkError> {
    let partition =
        key.partition().map_err(|e| SdkError::config(context, Some("partition_key"), e.to_string()))?;
    if partition.index != execution_id.partition_index() {
        return Err(SdkError::config(
            context,
            Some("partition_key"),
            format!("{key} does not hold execution {execution_id}"),
        ));
    }
    Ok(())
}

fn is_capability_mismatch(e: &EngineError) -> bool {
    matches!(e.root(), EngineError::Validation { kind: ValidationKind::CapabilityMismatch, .. })
}

/// Errors after which the claim moves on to the next partition.
fn skippable(e: &EngineError) -> bool {
    matches!(e.class(), ErrorClass::Retryable | ErrorClass::Informational)
}
