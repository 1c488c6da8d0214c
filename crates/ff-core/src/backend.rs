//! The `EngineBackend` trait: every contract, one async method each (spec 01 §16).

use async_trait::async_trait;

use crate::admission::*;
use crate::capabilities::Capabilities;
use crate::clock::SimClock;
use crate::contracts::*;
use crate::error::{ContentionKind, EngineError};
use crate::flow::*;
use crate::handle::{BackendTag, Handle, HandlePayload};
use crate::hmac_token::{KidInfo, RotateOutcome, SeedOutcome};
use crate::ids::{AttemptIndex, CancelSource, ExecutionId, LaneId, LeaseFence, TimestampMs, WaitpointId};
use crate::ids::{BudgetId, EdgeId, FlowId, QuotaPolicyId};
use crate::partition::PartitionConfig;
use crate::state::PublicState;
use crate::stream::{AppendFrameOutcome, Frame, StreamCursor, StreamFrames, SummaryDocument, TailVisibility};
use crate::suspension::*;

/// A FlowFabric backend: every contract is one atomic step.
///
/// Object safe: use it as `Arc<dyn EngineBackend>`. Every method returns the
/// typed `EngineError` taxonomy; a typed rejection is never a `Transport` error.
#[async_trait]
pub trait EngineBackend: Send + Sync + 'static {
    /// Which backend minted a handle (`memory`, `sqlite`, `valkey`).
    fn backend_tag(&self) -> BackendTag;

    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;

    /// The backend's clock (`now` for scanners and schedulers).
    async fn server_time_ms(&self) -> Result<TimestampMs, EngineError>;

    /// The simulated clock the backend runs on, if any (tests advance it).
    fn sim_clock(&self) -> Option<SimClock> {
        None
    }

    /// The partition counts the backend was created with.
    fn partition_config(&self) -> PartitionConfig {
        PartitionConfig::default()
    }

    // ------------------------------------------------------------ execution

    /// Creates an execution, idempotent by key or id (§6.1).
    async fn create_execution(
        &self,
        args: CreateExecutionArgs,
    ) -> Result<CreateExecutionOutcome, EngineError>;

    /// Consumes a claim grant: new attempt and lease (§6.2).
    async fn claim_execution(&self, args: ClaimExecutionArgs) -> Result<ClaimedExecution, EngineError>;

    /// Terminal success under a valid lease (§6.3).
    async fn complete_execution(&self, args: CompleteExecutionArgs) -> Result<CompleteOutcome, EngineError>;

    /// Cancels from any non-terminal phase (§6.4).
    async fn cancel_execution(&self, args: CancelExecutionArgs) -> Result<CancelOutcome, EngineError>;

    /// Parks the holder's execution until a time, releasing the lease (§6.5).
    async fn delay_execution(&self, args: DelayExecutionArgs) -> Result<TimestampMs, EngineError>;

    /// Parks the holder's execution until its children finish (§6.6).
    async fn move_to_waiting_children(&self, args: MoveToWaitingChildrenArgs) -> Result<(), EngineError>;

    /// Fails the current attempt; retries per policy (§6.7).
    async fn fail_execution(&self, args: FailExecutionArgs) -> Result<FailOutcome, EngineError>;

    /// Consumes a reclaim grant after a lost lease (§6.8).
    async fn reclaim_execution(
        &self,
        args: ReclaimExecutionArgs,
    ) -> Result<ReclaimExecutionOutcome, EngineError>;

    /// Expires an execution on attempt timeout or deadline (§6.9).
    async fn expire_execution(
        &self,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<ExpireOutcome, EngineError>;

    /// Writes caller tags (§6.10); returns the pair count.
    async fn set_execution_tags(&self, args: SetExecutionTagsArgs) -> Result<usize, EngineError>;

    /// Restarts a terminal execution (§6.24).
    async fn replay_execution(&self, execution_id: &ExecutionId) -> Result<ReplayOutcome, EngineError>;

    // ------------------------------------------------------------ lease

    /// Extends a lease by its TTL from now (§6.12).
    async fn renew_lease(&self, args: RenewLeaseArgs) -> Result<LeaseRenewal, EngineError>;

    /// Marks an overdue lease expired (§6.13, scanner hook).
    async fn mark_lease_expired_if_due(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<MarkLeaseExpiredOutcome, EngineError>;

    /// Operator revocation (§6.14).
    async fn revoke_lease(&self, args: RevokeLeaseArgs) -> Result<RevokeLeaseOutcome, EngineError>;

    /// Expired leases across partitions with a tuple cursor (§8.5).
    async fn list_expired_leases(
        &self,
        args: ListExpiredLeasesArgs,
    ) -> Result<ExpiredLeasesPage, EngineError>;

    // ------------------------------------------------------------ scheduling

    /// Writes a claim grant after admission (§6.15).
    async fn issue_claim_grant(
        &self,
        args: IssueClaimGrantArgs,
    ) -> Result<IssueClaimGrantOutcome, EngineError>;

    /// Re-prioritises an eligible execution (§6.16).
    async fn change_priority(&self, args: ChangePriorityArgs) -> Result<PriorityChange, EngineError>;

    /// Writes progress under a valid lease (§6.17).
    async fn update_progress(&self, args: UpdateProgressArgs) -> Result<(), EngineError>;

    /// Promotes a due delayed execution (§6.19, scanner hook).
    async fn promote_delayed(
        &self,
        lane_id: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<PromoteOutcome, EngineError>;

    /// Writes a reclaim grant for an expired or revoked lease (§6.20).
    async fn issue_reclaim_grant(
        &self,
        args: IssueReclaimGrantArgs,
    ) -> Result<IssueReclaimGrantOutcome, EngineError>;

    /// Consumes a grant for an interrupted attempt: same attempt, new lease (§6.21).
    async fn claim_resumed_execution(
        &self,
        args: ClaimResumedExecutionArgs,
    ) -> Result<ClaimedExecution, EngineError>;

    /// Operator grant and claim in one step (§6.23).
    async fn issue_grant_and_claim(
        &self,
        args: IssueGrantAndClaimArgs,
    ) -> Result<ClaimGrantOutcome, EngineError>;

    /// Moves a runnable execution to a blocked index (§6.26).
    async fn block_execution_for_admission(&self, args: BlockExecutionArgs) -> Result<(), EngineError>;

    /// Moves a blocked execution back to eligible (§6.25).
    async fn unblock_execution(&self, args: UnblockExecutionArgs) -> Result<(), EngineError>;

    /// Top of a lane's eligible index on one partition (§11.3).
    async fn scan_eligible_executions(&self, args: ScanEligibleArgs)
    -> Result<Vec<ExecutionId>, EngineError>;

    // ------------------------------------------------------------ worker registry

    /// Registers or refreshes a worker instance (§6.18).
    async fn register_worker(&self, args: RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, EngineError>;

    /// Extends a worker's liveness (§6.22).
    async fn heartbeat_worker(&self, args: HeartbeatWorkerArgs) -> Result<HeartbeatOutcome, EngineError>;

    /// Removes a worker registration atomically (§14).
    async fn mark_worker_dead(&self, args: MarkWorkerDeadArgs) -> Result<MarkWorkerDeadOutcome, EngineError>;

    /// Live workers of a namespace, paged by instance id (§14).
    async fn list_workers(&self, args: ListWorkersArgs) -> Result<WorkersPage, EngineError>;

    // ------------------------------------------------------------ reads

    /// The read model of an execution.
    async fn describe_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<ExecutionSnapshot>, EngineError>;

    /// Payload, kind and tags; missing execution → `Validation(InvalidInput)`.
    async fn read_execution_context(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExecutionContext, EngineError>;

    /// The stored result payload.
    async fn get_execution_result(&self, execution_id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError>;

    /// One tag; `None` for a missing tag or execution.
    async fn get_execution_tag(
        &self,
        execution_id: &ExecutionId,
        key: &str,
    ) -> Result<Option<String>, EngineError>;

    /// The execution's lease history, oldest first.
    async fn read_lease_history(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<LeaseHistoryEntry>, EngineError>;

    /// Completion events with `event_id > after`, up to `limit`.
    async fn read_completions(&self, after: u64, limit: usize) -> Result<Vec<CompletionEvent>, EngineError>;

    /// Executions of a partition in id order, after a cursor.
    async fn list_executions(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<Vec<ExecutionId>, EngineError>;

    // ------------------------------------------------------------ suspension and signals

    /// Suspends the leased execution on its waitpoint(s), fenced by a triple (spec 02 §6).
    async fn suspend_by_triple(&self, args: SuspendByTripleArgs) -> Result<SuspendOutcome, EngineError>;

    /// Creates a pending waitpoint and mints its token (spec 02 §3.2).
    async fn create_pending_waitpoint(
        &self,
        args: CreateWaitpointArgs,
    ) -> Result<PendingWaitpoint, EngineError>;

    /// Closes a waitpoint; false when it was already closed (spec 02 §3.4).
    async fn close_waitpoint(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
        reason: &str,
    ) -> Result<bool, EngineError>;

    /// Authenticates, records and evaluates a signal; buffers it on a pending waitpoint (spec 02 §7–8).
    async fn deliver_signal(&self, args: DeliverSignalArgs) -> Result<DeliverSignalOutcome, EngineError>;

    /// Operator resume of a suspended execution (spec 02 §9.1).
    async fn resume_execution(&self, args: ResumeExecutionArgs) -> Result<ResumeOutcome, EngineError>;

    /// The suspension-timeout hook (spec 02 §9.2).
    async fn expire_suspension(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExpireSuspensionOutcome, EngineError>;

    /// A waitpoint's stored token (spec 02 §3.7).
    async fn read_waitpoint_token(&self, waitpoint_id: &WaitpointId) -> Result<Option<String>, EngineError>;

    /// The signals that satisfied an execution's last suspension (spec 02 §11.1).
    async fn observe_execution_signals(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<ResumeSignal>, EngineError>;

    /// Open waitpoints of an execution, paged by id (spec 02 §3.6).
    async fn list_pending_waitpoints(
        &self,
        execution_id: &ExecutionId,
        after: Option<WaitpointId>,
        limit: usize,
    ) -> Result<(Vec<PendingWaitpointInfo>, Option<WaitpointId>), EngineError>;

    /// Suspended executions of a partition, paged (spec 02 §11.5).
    async fn list_suspended(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<(Vec<SuspendedExecutionEntry>, Option<ExecutionId>), EngineError>;

    /// Installs the first HMAC kid if absent (spec 02 §2.9).
    async fn seed_waitpoint_hmac_secret(
        &self,
        kid: &str,
        secret_hex: &str,
    ) -> Result<SeedOutcome, EngineError>;

    /// Rotates the signing kid in every keystore; one entry per keystore (spec 02 §2.7).
    async fn rotate_waitpoint_hmac_secret_all(
        &self,
        new_kid: &str,
        new_secret_hex: &str,
        grace_ms: u64,
    ) -> Result<Vec<(u16, Result<RotateOutcome, EngineError>)>, EngineError>;

    /// The current kid and the kids still verifying (spec 02 §2.8).
    async fn list_waitpoint_hmac_kids(&self) -> Result<(Option<String>, Vec<KidInfo>), EngineError>;

    // ------------------------------------------------------------ flows

    /// Creates a flow (spec 03 §2.3.1).
    async fn create_flow(&self, args: CreateFlowArgs) -> Result<CreateFlowOutcome, EngineError>;

    /// Adds an execution of the flow's partition as a member (spec 03 §2.3.2).
    async fn add_execution_to_flow(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<AddToFlowOutcome, EngineError>;

    /// Stages an edge with a graph-revision CAS and a cycle check; returns the new revision (spec 03 §2.3.5).
    async fn stage_dependency_edge(&self, args: StageEdgeArgs) -> Result<(EdgeId, u64), EngineError>;

    /// Sets a downstream's edge-group policy before its first applied edge; true if set (spec 03 §2.3.6).
    async fn set_edge_group_policy(
        &self,
        flow_id: &FlowId,
        downstream: &ExecutionId,
        policy: EdgeDependencyPolicy,
    ) -> Result<bool, EngineError>;

    /// Applies a staged edge to its child; `None` when already applied (spec 03 §2.3.7).
    async fn apply_dependency_to_child(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
    ) -> Result<Option<u64>, EngineError>;

    /// Resolves one edge against an upstream outcome (spec 03 §2.3.8).
    async fn resolve_dependency(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
        upstream_outcome: crate::state::TerminalOutcome,
    ) -> Result<ResolveDependencyOutcome, EngineError>;

    /// Marks the flow cancelled and lists its members (spec 03 §2.3.3, §2.6 step 1).
    async fn cancel_flow_header(
        &self,
        flow_id: &FlowId,
        reason: &str,
        policy: CancelFlowPolicy,
        grace_ms: u64,
    ) -> Result<CancelFlowHeader, EngineError>;

    /// Acknowledges a member's cancel (spec 03 §2.3.4).
    async fn ack_cancel_member(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError>;

    /// Makes a dependency-blocked execution with no unresolved edges eligible (spec 03 §2.3.12).
    async fn promote_blocked_to_eligible(&self, execution_id: &ExecutionId) -> Result<(), EngineError>;

    /// Writes flow tags (strict key rule, spec 03 §2.7).
    async fn set_flow_tags(
        &self,
        flow_id: &FlowId,
        tags: Vec<(String, String)>,
    ) -> Result<usize, EngineError>;

    /// The read model of a flow (spec 03 §2.8).
    async fn describe_flow(&self, flow_id: &FlowId) -> Result<Option<FlowSnapshot>, EngineError>;

    /// Whether a flow member may run now (spec 03 §2.3.11); backends without it answer `Unavailable`.
    async fn evaluate_flow_eligibility(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<FlowEligibility, EngineError> {
        let _ = execution_id;
        Err(EngineError::Unavailable { op: "evaluate_flow_eligibility" })
    }

    // ------------------------------------------------------------ budgets and quotas

    /// Creates a budget (spec 03 §3.2.1).
    async fn create_budget(&self, args: CreateBudgetArgs) -> Result<CreateBudgetOutcome, EngineError>;

    /// Checks a usage report against the hard limits, then applies it (spec 03 §3.2.2).
    async fn report_usage_and_check(&self, args: ReportUsageArgs) -> Result<ReportUsageResult, EngineError>;

    /// Charges an execution's spend to the budget and its ledger (spec 03 §3.2.3).
    async fn record_spend(&self, args: RecordSpendArgs) -> Result<ReportUsageResult, EngineError>;

    /// Gives an execution's recorded spend back to the budget; false if none was recorded (spec 03 §3.2.4).
    async fn release_budget(
        &self,
        budget_id: &BudgetId,
        execution_id: &ExecutionId,
    ) -> Result<bool, EngineError>;

    /// Zeroes usage now; returns the next scheduled reset, if any (spec 03 §3.2.5).
    async fn reset_budget(&self, budget_id: &BudgetId) -> Result<Option<TimestampMs>, EngineError>;

    /// Definition, limits, usage and counters of a budget (spec 03 §3.3).
    async fn get_budget_status(&self, budget_id: &BudgetId) -> Result<BudgetStatus, EngineError>;

    /// Creates a quota policy (spec 03 §4.2.1).
    async fn create_quota_policy(
        &self,
        args: CreateQuotaPolicyArgs,
    ) -> Result<CreateQuotaOutcome, EngineError>;

    /// Checks the rate and concurrency limits and records an admission (spec 03 §4.2.2).
    async fn check_admission_and_record(
        &self,
        args: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError>;

    /// Releases an admission after a failed claim (spec 03 §4.2.3).
    async fn release_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError>;

    /// A quota policy's stored limits; `None` when it was never created (spec 03 §4.3).
    async fn read_quota_policy_limits(
        &self,
        quota_policy_id: &QuotaPolicyId,
    ) -> Result<Option<QuotaPolicyLimits>, EngineError>;

    // ------------------------------------------------------------ streams

    /// Appends a frame to an attempt's stream under its lease (spec 02 §12.2).
    async fn append_stream_frame(&self, args: AppendFrameArgs) -> Result<AppendFrameOutcome, EngineError>;

    /// Inclusive range read with the close marker (spec 02 §12.7).
    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError>;

    /// Entries strictly after a cursor, waiting up to `block_ms` for one (spec 02 §12.8).
    async fn tail_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        after: StreamCursor,
        block_ms: u64,
        count_limit: u64,
        visibility: TailVisibility,
    ) -> Result<StreamFrames, EngineError>;

    /// The attempt's rolling summary (spec 02 §12.10).
    async fn read_summary(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
    ) -> Result<Option<SummaryDocument>, EngineError>;

    /// Runs one bounded pass of a background scanner over one partition at the backend's `now`.
    async fn run_scanner(
        &self,
        kind: ScannerKind,
        partition: u16,
        batch: usize,
    ) -> Result<ScanReport, EngineError>;

    // ------------------------------------------------------------ provided

    /// The public state only.
    async fn read_execution_state(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<PublicState>, EngineError> {
        Ok(self.describe_execution(execution_id).await?.map(|s| s.public_state))
    }

    /// `total_attempt_count` = the next fresh attempt index.
    async fn read_total_attempt_count(&self, execution_id: &ExecutionId) -> Result<u32, EngineError> {
        let snap = self.describe_execution(execution_id).await?;
        snap.map(|s| s.total_attempt_count).ok_or_else(EngineError::execution_not_found)
    }

    /// Validates and tag-checks a single tag write (stricter key rule).
    async fn set_execution_tag(
        &self,
        execution_id: &ExecutionId,
        key: &str,
        value: &str,
    ) -> Result<(), EngineError> {
        if !is_strict_tag_key(key) {
            return Err(EngineError::invalid_input(format!("invalid tag key: {key}")));
        }
        let args = SetExecutionTagsArgs {
            execution_id: execution_id.clone(),
            tags: vec![(key.to_owned(), value.to_owned())],
        };
        self.set_execution_tags(args).await.map(|_| ())
    }

    /// The head of a lane's eligible index on each partition of `partitions` that has
    /// one, in partition order; a backend may answer it in one round trip.
    async fn scan_eligible_heads(
        &self,
        lane_id: &LaneId,
        partitions: std::ops::Range<u16>,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let mut heads = Vec::new();
        for partition in partitions {
            let scan = ScanEligibleArgs { lane_id: lane_id.clone(), partition, limit: 1 };
            heads.extend(self.scan_eligible_executions(scan).await?.into_iter().next());
        }
        Ok(heads)
    }

    /// Scheduler-bypass claim of the best eligible execution on a lane (§13).
    async fn claim(
        &self,
        lane_id: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        partitions: u16,
    ) -> Result<Option<ClaimedExecution>, EngineError> {
        for execution_id in self.scan_eligible_heads(lane_id, 0..partitions).await? {
            let grant = IssueClaimGrantArgs {
                execution_id: execution_id.clone(),
                worker_id: policy.worker_id.clone(),
                worker_instance_id: policy.worker_instance_id.clone(),
                lane_id: lane_id.clone(),
                capability_hash: String::new(),
                grant_ttl_ms: 5000,
                route_snapshot_json: String::new(),
                admission_summary: String::new(),
                worker_capabilities: capabilities.clone(),
            };
            match self.issue_claim_grant(grant).await {
                Ok(_) => {}
                Err(e) if skippable(&e) => continue,
                Err(e) => return Err(e),
            }
            let claim = ClaimExecutionArgs {
                execution_id,
                worker_id: policy.worker_id.clone(),
                worker_instance_id: policy.worker_instance_id.clone(),
                lane_id: lane_id.clone(),
                lease_id: policy.lease_id,
                lease_ttl_ms: u64::from(policy.lease_ttl_ms),
                attempt_id: policy.attempt_id,
                attempt_policy_json: String::new(),
                attempt_timeout_ms: None,
                execution_deadline_at: None,
            };
            match self.claim_execution(claim).await {
                Ok(c) => return Ok(Some(c)),
                Err(e) if skippable(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Renews the handle's lease by its claim-time TTL.
    async fn renew(&self, handle: &Handle) -> Result<LeaseRenewal, EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let args = RenewLeaseArgs {
            execution_id: p.execution_id.clone(),
            attempt_index: p.attempt_index,
            fence: Some(fence_of(&p)),
            lease_ttl_ms: p.lease_ttl_ms,
            lease_history_grace_ms: 5000,
        };
        self.renew_lease(args).await
    }

    /// Writes progress under the handle's lease.
    async fn progress(
        &self,
        handle: &Handle,
        percent: Option<u8>,
        message: Option<String>,
    ) -> Result<(), EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let args = UpdateProgressArgs {
            execution_id: p.execution_id,
            lease_id: p.lease_id,
            lease_epoch: p.lease_epoch,
            progress_pct: percent,
            progress_message: message,
        };
        self.update_progress(args).await
    }

    /// Completes under the handle's lease; a retried completion that already applied succeeds.
    async fn complete(&self, handle: &Handle, payload: Option<Vec<u8>>) -> Result<(), EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let args = CompleteExecutionArgs {
            execution_id: p.execution_id.clone(),
            fence: Some(fence_of(&p)),
            result_payload: payload,
            source: CancelSource::LeaseHolder,
        };
        match self.complete_execution(args).await {
            Ok(_) => Ok(()),
            Err(e) if already_done(&e, &p, "success", "terminal") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Fails under the handle's lease with the stored retry policy; a retried failure reconciles.
    async fn fail(
        &self,
        handle: &Handle,
        reason: FailureReason,
        class: FailureClass,
    ) -> Result<FailOutcome, EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let category = match reason.detail.as_deref() {
            Some(d) if !d.is_empty() => String::from_utf8_lossy(d).into_owned(),
            _ => class.as_str().to_owned(),
        };
        let args = FailExecutionArgs {
            execution_id: p.execution_id.clone(),
            fence: Some(fence_of(&p)),
            failure_reason: reason.message,
            failure_category: category,
            retry_policy_json: None,
            source: CancelSource::LeaseHolder,
        };
        match self.fail_execution(args).await {
            Ok(o) => Ok(o),
            Err(e) if already_done(&e, &p, "failed", "terminal") => Ok(FailOutcome::TerminalFailed),
            Err(e) if retry_already_scheduled(&e, &p) => Ok(FailOutcome::RetryScheduled { delay_until: 0 }),
            Err(e) => Err(e),
        }
    }

    /// Cancels as the lease holder; a retried cancel that already applied succeeds.
    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<(), EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let args = CancelExecutionArgs {
            execution_id: p.execution_id.clone(),
            reason: reason.to_owned(),
            source: CancelSource::Custom("worker".to_owned()),
            lease_id: Some(p.lease_id),
            lease_epoch: Some(p.lease_epoch),
        };
        match self.cancel_execution(args).await {
            Ok(_) => Ok(()),
            Err(e) if already_done(&e, &p, "cancelled", "terminal") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Cancels a flow and, under `CancelAll`, each unfinished member; already-finished
    /// members count as done, failures are reported (spec 03 §2.6, `wait = true`).
    async fn cancel_flow(
        &self,
        flow_id: &FlowId,
        reason: &str,
        policy: CancelFlowPolicy,
    ) -> Result<CancelFlowResult, EngineError> {
        let header =
            self.cancel_flow_header(flow_id, reason, policy, crate::flow::CANCEL_GRACE_MS_DEFAULT).await?;
        let (policy_text, members) = match header {
            CancelFlowHeader::Cancelled { cancellation_policy, member_execution_ids } => {
                (cancellation_policy, member_execution_ids)
            }
            CancelFlowHeader::AlreadyTerminal {
                stored_cancellation_policy, member_execution_ids, ..
            } => (
                stored_cancellation_policy.unwrap_or_else(|| policy.as_str().to_owned()),
                member_execution_ids,
            ),
        };
        if policy_text != CancelFlowPolicy::CancelAll.as_str() {
            return Ok(CancelFlowResult::Cancelled {
                cancellation_policy: policy_text,
                member_execution_ids: members,
            });
        }
        let mut failed = Vec::new();
        for m in &members {
            let args = CancelExecutionArgs {
                execution_id: m.clone(),
                reason: reason.to_owned(),
                source: CancelSource::OperatorOverride,
                lease_id: None,
                lease_epoch: None,
            };
            match self.cancel_execution(args).await {
                Ok(_) => self.ack_cancel_member(flow_id, m).await?,
                Err(e) if already_finished(&e) => self.ack_cancel_member(flow_id, m).await?,
                Err(_) => failed.push(m.clone()),
            }
        }
        Ok(if failed.is_empty() {
            CancelFlowResult::Cancelled { cancellation_policy: policy_text, member_execution_ids: members }
        } else {
            CancelFlowResult::PartiallyCancelled {
                cancellation_policy: policy_text,
                member_execution_ids: members,
                failed_member_execution_ids: failed,
            }
        })
    }

    /// Suspends the handle's execution (a `Suspended` handle → `State(AlreadySuspended)`).
    async fn suspend(&self, handle: &Handle, args: SuspendArgs) -> Result<SuspendOutcome, EngineError> {
        if handle.kind == crate::handle::HandleKind::Suspended {
            return Err(EngineError::State(crate::error::StateKind::AlreadySuspended));
        }
        let p = handle.decode_for(self.backend_tag())?;
        let req = SuspendByTripleArgs {
            execution_id: p.execution_id.clone(),
            attempt_index: p.attempt_index,
            fence: Some(fence_of(&p)),
            args,
        };
        self.suspend_by_triple(req).await
    }

    /// Creates a pending waitpoint under the handle's lease.
    async fn create_waitpoint(
        &self,
        handle: &Handle,
        waitpoint_id: WaitpointId,
        waitpoint_key: &str,
        expires_in_ms: u64,
    ) -> Result<PendingWaitpoint, EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let args = CreateWaitpointArgs {
            execution_id: p.execution_id.clone(),
            attempt_index: p.attempt_index,
            fence: fence_of(&p),
            waitpoint_id,
            waitpoint_key: waitpoint_key.to_owned(),
            expires_in_ms,
        };
        self.create_pending_waitpoint(args).await
    }

    /// Delivers an approval signal with the waitpoint's stored token (spec 02 §11.2).
    async fn deliver_approval_signal(
        &self,
        args: DeliverApprovalSignalArgs,
    ) -> Result<DeliverSignalOutcome, EngineError> {
        let token = self
            .read_waitpoint_token(&args.waitpoint_id)
            .await?
            .ok_or(EngineError::NotFound { entity: "waitpoint" })?;
        let lane = self.describe_execution(&args.execution_id).await?.map(|s| s.lane_id);
        let lane = lane.ok_or_else(EngineError::execution_not_found)?;
        if lane != args.lane_id {
            return Err(EngineError::invalid_input(format!(
                "lane_mismatch: args.lane_id={} exec_core.lane_id={lane}",
                args.lane_id
            )));
        }
        let deliver = DeliverSignalArgs {
            signal_category: "approval".into(),
            source_type: "operator".into(),
            idempotency_key: Some(format!("approval:{}:{}", args.signal_name, args.idempotency_suffix)),
            dedup_ttl_ms: args.signal_dedup_ttl_ms,
            max_signals_per_execution: args.max_signals_per_execution,
            signal_maxlen: args.maxlen,
            ..DeliverSignalArgs::new(
                args.execution_id,
                args.waitpoint_id,
                args.signal_id,
                args.signal_name.clone(),
                token,
            )
        };
        self.deliver_signal(deliver).await
    }

    /// The signals that satisfied the handle's last suspension.
    async fn observe_signals(&self, handle: &Handle) -> Result<Vec<ResumeSignal>, EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        self.observe_execution_signals(&p.execution_id).await
    }

    /// Appends a frame to the handle's attempt stream.
    async fn append_frame(&self, handle: &Handle, frame: Frame) -> Result<AppendFrameOutcome, EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let args = AppendFrameArgs {
            execution_id: p.execution_id,
            attempt_index: p.attempt_index,
            lease_id: p.lease_id,
            lease_epoch: p.lease_epoch,
            attempt_id: Some(p.attempt_id),
            frame,
            retention_maxlen: crate::stream::DURABLE_RETENTION_SENT,
            max_payload_bytes: crate::stream::FRAME_PAYLOAD_BYTES_DEFAULT,
        };
        self.append_stream_frame(args).await
    }

    /// Parks the handle's execution until a time.
    async fn delay(&self, handle: &Handle, delay_until: TimestampMs) -> Result<(), EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let args = DelayExecutionArgs {
            execution_id: p.execution_id.clone(),
            fence: Some(fence_of(&p)),
            delay_until,
            source: CancelSource::LeaseHolder,
        };
        self.delay_execution(args).await.map(|_| ())
    }

    /// Parks the handle's execution until its children finish.
    async fn wait_children(&self, handle: &Handle) -> Result<(), EngineError> {
        let p = handle.decode_for(self.backend_tag())?;
        let args = MoveToWaitingChildrenArgs {
            execution_id: p.execution_id.clone(),
            fence: Some(fence_of(&p)),
            source: CancelSource::LeaseHolder,
        };
        self.move_to_waiting_children(args).await
    }
}

/// The fence triple of a decoded handle.
pub fn fence_of(p: &HandlePayload) -> LeaseFence {
    LeaseFence { lease_id: p.lease_id, lease_epoch: p.lease_epoch, attempt_id: p.attempt_id }
}

/// Whether an `execution_not_active` reply shows the op already applied for this lease.
fn already_done(e: &EngineError, p: &HandlePayload, outcome: &str, phase: &str) -> bool {
    match e.root() {
        EngineError::Contention(ContentionKind::ExecutionNotActive {
            terminal_outcome,
            lease_epoch,
            lifecycle_phase,
            attempt_id,
        }) => {
            terminal_outcome == outcome
                && lifecycle_phase == phase
                && *lease_epoch == p.lease_epoch.to_string()
                && *attempt_id == p.attempt_id.to_string()
        }
        _ => false,
    }
}

/// Whether an `execution_not_active` reply shows a retry was already scheduled by this lease.
fn retry_already_scheduled(e: &EngineError, p: &HandlePayload) -> bool {
    match e.root() {
        EngineError::Contention(ContentionKind::ExecutionNotActive {
            lease_epoch, lifecycle_phase, ..
        }) => lifecycle_phase == "runnable" && *lease_epoch == p.lease_epoch.to_string(),
        _ => false,
    }
}

/// Whether a member cancel failed only because the member had already finished.
fn already_finished(e: &EngineError) -> bool {
    matches!(
        e.root(),
        EngineError::NotFound { .. }
            | EngineError::State(crate::error::StateKind::Terminal)
            | EngineError::Contention(ContentionKind::ExecutionNotActive { .. })
    )
}

/// Errors after which the bypass claim moves on to the next partition.
fn skippable(e: &EngineError) -> bool {
    matches!(
        e.root(),
        EngineError::Contention(_)
            | EngineError::State(crate::error::StateKind::GrantAlreadyExists)
            | EngineError::Validation { kind: crate::error::ValidationKind::CapabilityMismatch, .. }
    )
}
