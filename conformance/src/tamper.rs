//! Deliberately broken backends, so the kit can prove it fails: a wrapper
//! around any backend that forwards every contract except the one it breaks.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::AttemptIndex;
use ff_core::WaitpointId;
use ff_core::admission::*;
use ff_core::contracts::*;
use ff_core::error::StateKind;
use ff_core::flow::*;
use ff_core::hmac_token::{KidInfo, RotateOutcome, SeedOutcome};
use ff_core::stream::{AppendFrameOutcome, StreamCursor, StreamFrames, SummaryDocument, TailVisibility};
use ff_core::suspension::*;
use ff_core::{
    BackendTag, Capabilities, EngineBackend, EngineError, ExecutionId, LaneId, LeaseFence, PartitionConfig,
    SimClock, TimestampMs,
};
use ff_core::{BudgetId, EdgeId, FlowId, QuotaPolicyId};
use tokio::sync::Mutex;

/// Which defect the wrapper injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperMode {
    /// Skips the epoch check: a stale fence is replaced by the current one.
    NoFencing,
    /// Delivers a claimed execution a second time to the next claimant.
    DoubleDelivery,
    /// Grants regardless of the worker's capabilities.
    IgnoreCapabilities,
    /// Answers a usage report past a hard limit as accepted, and reports the
    /// budget's usage as zero, so admission never sees the breach.
    IgnoreHardBudget,
}

/// A backend with one injected defect.
pub struct Tamper {
    inner: Arc<dyn EngineBackend>,
    mode: TamperMode,
    delivered: Mutex<BTreeMap<ExecutionId, (ClaimedExecution, bool)>>,
}

impl Tamper {
    /// Wraps `inner` with a defect.
    pub fn new(inner: Arc<dyn EngineBackend>, mode: TamperMode) -> Self {
        Self { inner, mode, delivered: Mutex::new(BTreeMap::new()) }
    }

    /// The current fence of an execution, if it is leased.
    async fn current_fence(&self, id: &ExecutionId) -> Option<LeaseFence> {
        let snap = self.inner.describe_execution(id).await.ok()??;
        let lease = snap.current_lease?;
        let (_, attempt_id) = snap.current_attempt?;
        Some(LeaseFence { lease_id: lease.lease_id, lease_epoch: lease.lease_epoch, attempt_id: attempt_id? })
    }

    async fn refence(&self, id: &ExecutionId, fence: Option<LeaseFence>) -> Option<LeaseFence> {
        if self.mode == TamperMode::NoFencing
            && let Some(current) = self.current_fence(id).await
        {
            return Some(current);
        }
        fence
    }

    /// An execution claimed once and not yet re-delivered.
    async fn redeliverable(&self) -> Option<ExecutionId> {
        let d = self.delivered.lock().await;
        d.iter().find(|(_, (_, again))| !again).map(|(id, _)| id.clone())
    }
}

#[async_trait]
impl EngineBackend for Tamper {
    fn backend_tag(&self) -> BackendTag {
        self.inner.backend_tag()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn sim_clock(&self) -> Option<SimClock> {
        self.inner.sim_clock()
    }

    fn partition_config(&self) -> PartitionConfig {
        self.inner.partition_config()
    }

    async fn complete_execution(
        &self,
        mut args: CompleteExecutionArgs,
    ) -> Result<CompleteOutcome, EngineError> {
        args.fence = self.refence(&args.execution_id, args.fence).await;
        self.inner.complete_execution(args).await
    }

    async fn fail_execution(&self, mut args: FailExecutionArgs) -> Result<FailOutcome, EngineError> {
        args.fence = self.refence(&args.execution_id, args.fence).await;
        self.inner.fail_execution(args).await
    }

    async fn renew_lease(&self, mut args: RenewLeaseArgs) -> Result<LeaseRenewal, EngineError> {
        args.fence = self.refence(&args.execution_id, args.fence).await;
        if self.mode == TamperMode::NoFencing
            && let Ok(Some(s)) = self.inner.describe_execution(&args.execution_id).await
            && let Some((index, _)) = s.current_attempt
        {
            args.attempt_index = index;
        }
        self.inner.renew_lease(args).await
    }

    async fn scan_eligible_executions(
        &self,
        args: ScanEligibleArgs,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let mut ids = self.inner.scan_eligible_executions(args).await?;
        if self.mode == TamperMode::DoubleDelivery
            && let Some(again) = self.redeliverable().await
        {
            ids.insert(0, again);
        }
        Ok(ids)
    }

    async fn issue_claim_grant(
        &self,
        mut args: IssueClaimGrantArgs,
    ) -> Result<IssueClaimGrantOutcome, EngineError> {
        if self.mode == TamperMode::DoubleDelivery
            && self.delivered.lock().await.contains_key(&args.execution_id)
        {
            let grant = ClaimGrant {
                execution_id: args.execution_id.clone(),
                partition_key: args.execution_id.partition().key(),
                grant_key: String::new(),
                expires_at_ms: 0,
            };
            return Ok(IssueClaimGrantOutcome::Granted(grant));
        }
        if self.mode == TamperMode::IgnoreCapabilities {
            match self.inner.issue_claim_grant(args.clone()).await {
                Err(EngineError::Validation {
                    kind: ff_core::error::ValidationKind::CapabilityMismatch,
                    detail,
                }) => {
                    args.worker_capabilities.0.extend(detail.split(',').map(str::to_owned));
                }
                other => return other,
            }
        }
        self.inner.issue_claim_grant(args).await
    }

    async fn claim_execution(&self, args: ClaimExecutionArgs) -> Result<ClaimedExecution, EngineError> {
        if self.mode == TamperMode::DoubleDelivery {
            let mut d = self.delivered.lock().await;
            if let Some((claim, again)) = d.get_mut(&args.execution_id) {
                if *again {
                    return Err(EngineError::State(StateKind::StaleLease));
                }
                *again = true;
                return Ok(claim.clone());
            }
            drop(d);
            let claim = self.inner.claim_execution(args).await?;
            self.delivered.lock().await.insert(claim.execution_id.clone(), (claim.clone(), false));
            return Ok(claim);
        }
        self.inner.claim_execution(args).await
    }

    async fn server_time_ms(&self) -> Result<TimestampMs, EngineError> {
        self.inner.server_time_ms().await
    }

    async fn create_execution(
        &self,
        args: CreateExecutionArgs,
    ) -> Result<CreateExecutionOutcome, EngineError> {
        self.inner.create_execution(args).await
    }

    async fn cancel_execution(&self, args: CancelExecutionArgs) -> Result<CancelOutcome, EngineError> {
        self.inner.cancel_execution(args).await
    }

    async fn delay_execution(&self, args: DelayExecutionArgs) -> Result<TimestampMs, EngineError> {
        self.inner.delay_execution(args).await
    }

    async fn move_to_waiting_children(&self, args: MoveToWaitingChildrenArgs) -> Result<(), EngineError> {
        self.inner.move_to_waiting_children(args).await
    }

    async fn reclaim_execution(
        &self,
        args: ReclaimExecutionArgs,
    ) -> Result<ReclaimExecutionOutcome, EngineError> {
        self.inner.reclaim_execution(args).await
    }

    async fn expire_execution(
        &self,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<ExpireOutcome, EngineError> {
        self.inner.expire_execution(execution_id, phase).await
    }

    async fn set_execution_tags(&self, args: SetExecutionTagsArgs) -> Result<usize, EngineError> {
        self.inner.set_execution_tags(args).await
    }

    async fn replay_execution(&self, execution_id: &ExecutionId) -> Result<ReplayOutcome, EngineError> {
        self.inner.replay_execution(execution_id).await
    }

    async fn mark_lease_expired_if_due(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<MarkLeaseExpiredOutcome, EngineError> {
        self.inner.mark_lease_expired_if_due(execution_id).await
    }

    async fn revoke_lease(&self, args: RevokeLeaseArgs) -> Result<RevokeLeaseOutcome, EngineError> {
        self.inner.revoke_lease(args).await
    }

    async fn list_expired_leases(
        &self,
        args: ListExpiredLeasesArgs,
    ) -> Result<ExpiredLeasesPage, EngineError> {
        self.inner.list_expired_leases(args).await
    }

    async fn change_priority(&self, args: ChangePriorityArgs) -> Result<PriorityChange, EngineError> {
        self.inner.change_priority(args).await
    }

    async fn update_progress(&self, args: UpdateProgressArgs) -> Result<(), EngineError> {
        self.inner.update_progress(args).await
    }

    async fn promote_delayed(
        &self,
        lane_id: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<PromoteOutcome, EngineError> {
        self.inner.promote_delayed(lane_id, execution_id).await
    }

    async fn issue_reclaim_grant(
        &self,
        args: IssueReclaimGrantArgs,
    ) -> Result<IssueReclaimGrantOutcome, EngineError> {
        self.inner.issue_reclaim_grant(args).await
    }

    async fn claim_resumed_execution(
        &self,
        args: ClaimResumedExecutionArgs,
    ) -> Result<ClaimedExecution, EngineError> {
        self.inner.claim_resumed_execution(args).await
    }

    async fn issue_grant_and_claim(
        &self,
        args: IssueGrantAndClaimArgs,
    ) -> Result<ClaimGrantOutcome, EngineError> {
        self.inner.issue_grant_and_claim(args).await
    }

    async fn block_execution_for_admission(&self, args: BlockExecutionArgs) -> Result<(), EngineError> {
        self.inner.block_execution_for_admission(args).await
    }

    async fn unblock_execution(&self, args: UnblockExecutionArgs) -> Result<(), EngineError> {
        self.inner.unblock_execution(args).await
    }

    async fn register_worker(&self, args: RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, EngineError> {
        self.inner.register_worker(args).await
    }

    async fn heartbeat_worker(&self, args: HeartbeatWorkerArgs) -> Result<HeartbeatOutcome, EngineError> {
        self.inner.heartbeat_worker(args).await
    }

    async fn mark_worker_dead(&self, args: MarkWorkerDeadArgs) -> Result<MarkWorkerDeadOutcome, EngineError> {
        self.inner.mark_worker_dead(args).await
    }

    async fn list_workers(&self, args: ListWorkersArgs) -> Result<WorkersPage, EngineError> {
        self.inner.list_workers(args).await
    }

    async fn describe_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<ExecutionSnapshot>, EngineError> {
        self.inner.describe_execution(execution_id).await
    }

    async fn read_execution_context(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExecutionContext, EngineError> {
        self.inner.read_execution_context(execution_id).await
    }

    async fn get_execution_result(&self, execution_id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get_execution_result(execution_id).await
    }

    async fn get_execution_tag(
        &self,
        execution_id: &ExecutionId,
        key: &str,
    ) -> Result<Option<String>, EngineError> {
        self.inner.get_execution_tag(execution_id, key).await
    }

    async fn read_lease_history(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<LeaseHistoryEntry>, EngineError> {
        self.inner.read_lease_history(execution_id).await
    }

    async fn read_completions(&self, after: u64, limit: usize) -> Result<Vec<CompletionEvent>, EngineError> {
        self.inner.read_completions(after, limit).await
    }

    async fn list_executions(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        self.inner.list_executions(partition, after, limit).await
    }

    async fn run_scanner(
        &self,
        kind: ScannerKind,
        partition: u16,
        batch: usize,
    ) -> Result<ScanReport, EngineError> {
        self.inner.run_scanner(kind, partition, batch).await
    }

    async fn append_stream_frame(&self, args: AppendFrameArgs) -> Result<AppendFrameOutcome, EngineError> {
        self.inner.append_stream_frame(args).await
    }

    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError> {
        self.inner.read_stream(execution_id, attempt_index, from, to, count_limit).await
    }

    async fn tail_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        after: StreamCursor,
        block_ms: u64,
        count_limit: u64,
        visibility: TailVisibility,
    ) -> Result<StreamFrames, EngineError> {
        self.inner.tail_stream(execution_id, attempt_index, after, block_ms, count_limit, visibility).await
    }

    async fn read_summary(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
    ) -> Result<Option<SummaryDocument>, EngineError> {
        self.inner.read_summary(execution_id, attempt_index).await
    }

    async fn suspend_by_triple(&self, args: SuspendByTripleArgs) -> Result<SuspendOutcome, EngineError> {
        self.inner.suspend_by_triple(args).await
    }

    async fn create_pending_waitpoint(
        &self,
        args: CreateWaitpointArgs,
    ) -> Result<PendingWaitpoint, EngineError> {
        self.inner.create_pending_waitpoint(args).await
    }

    async fn close_waitpoint(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
        reason: &str,
    ) -> Result<bool, EngineError> {
        self.inner.close_waitpoint(execution_id, waitpoint_id, reason).await
    }

    async fn deliver_signal(&self, args: DeliverSignalArgs) -> Result<DeliverSignalOutcome, EngineError> {
        self.inner.deliver_signal(args).await
    }

    async fn resume_execution(&self, args: ResumeExecutionArgs) -> Result<ResumeOutcome, EngineError> {
        self.inner.resume_execution(args).await
    }

    async fn expire_suspension(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExpireSuspensionOutcome, EngineError> {
        self.inner.expire_suspension(execution_id).await
    }

    async fn read_waitpoint_token(&self, waitpoint_id: &WaitpointId) -> Result<Option<String>, EngineError> {
        self.inner.read_waitpoint_token(waitpoint_id).await
    }

    async fn observe_execution_signals(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<ResumeSignal>, EngineError> {
        self.inner.observe_execution_signals(execution_id).await
    }

    async fn seed_waitpoint_hmac_secret(
        &self,
        kid: &str,
        secret_hex: &str,
    ) -> Result<SeedOutcome, EngineError> {
        self.inner.seed_waitpoint_hmac_secret(kid, secret_hex).await
    }

    async fn rotate_waitpoint_hmac_secret_all(
        &self,
        new_kid: &str,
        new_secret_hex: &str,
        grace_ms: u64,
    ) -> Result<Vec<(u16, Result<RotateOutcome, EngineError>)>, EngineError> {
        self.inner.rotate_waitpoint_hmac_secret_all(new_kid, new_secret_hex, grace_ms).await
    }

    async fn list_waitpoint_hmac_kids(&self) -> Result<(Option<String>, Vec<KidInfo>), EngineError> {
        self.inner.list_waitpoint_hmac_kids().await
    }

    async fn list_pending_waitpoints(
        &self,
        execution_id: &ExecutionId,
        after: Option<WaitpointId>,
        limit: usize,
    ) -> Result<(Vec<PendingWaitpointInfo>, Option<WaitpointId>), EngineError> {
        self.inner.list_pending_waitpoints(execution_id, after, limit).await
    }

    async fn list_suspended(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<(Vec<SuspendedExecutionEntry>, Option<ExecutionId>), EngineError> {
        self.inner.list_suspended(partition, after, limit).await
    }

    async fn create_flow(&self, args: CreateFlowArgs) -> Result<CreateFlowOutcome, EngineError> {
        self.inner.create_flow(args).await
    }

    async fn add_execution_to_flow(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<AddToFlowOutcome, EngineError> {
        self.inner.add_execution_to_flow(flow_id, execution_id).await
    }

    async fn stage_dependency_edge(&self, args: StageEdgeArgs) -> Result<(EdgeId, u64), EngineError> {
        self.inner.stage_dependency_edge(args).await
    }

    async fn set_edge_group_policy(
        &self,
        flow_id: &FlowId,
        downstream: &ExecutionId,
        policy: EdgeDependencyPolicy,
    ) -> Result<bool, EngineError> {
        self.inner.set_edge_group_policy(flow_id, downstream, policy).await
    }

    async fn apply_dependency_to_child(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
    ) -> Result<Option<u64>, EngineError> {
        self.inner.apply_dependency_to_child(flow_id, edge_id).await
    }

    async fn resolve_dependency(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
        upstream_outcome: ff_core::TerminalOutcome,
    ) -> Result<ResolveDependencyOutcome, EngineError> {
        self.inner.resolve_dependency(flow_id, edge_id, upstream_outcome).await
    }

    async fn cancel_flow_header(
        &self,
        flow_id: &FlowId,
        reason: &str,
        policy: CancelFlowPolicy,
        grace_ms: u64,
    ) -> Result<CancelFlowHeader, EngineError> {
        self.inner.cancel_flow_header(flow_id, reason, policy, grace_ms).await
    }

    async fn ack_cancel_member(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        self.inner.ack_cancel_member(flow_id, execution_id).await
    }

    async fn promote_blocked_to_eligible(&self, execution_id: &ExecutionId) -> Result<(), EngineError> {
        self.inner.promote_blocked_to_eligible(execution_id).await
    }

    async fn set_flow_tags(
        &self,
        flow_id: &FlowId,
        tags: Vec<(String, String)>,
    ) -> Result<usize, EngineError> {
        self.inner.set_flow_tags(flow_id, tags).await
    }

    async fn describe_flow(&self, flow_id: &FlowId) -> Result<Option<FlowSnapshot>, EngineError> {
        self.inner.describe_flow(flow_id).await
    }

    async fn evaluate_flow_eligibility(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<FlowEligibility, EngineError> {
        self.inner.evaluate_flow_eligibility(execution_id).await
    }

    async fn create_budget(&self, args: CreateBudgetArgs) -> Result<CreateBudgetOutcome, EngineError> {
        self.inner.create_budget(args).await
    }

    async fn report_usage_and_check(&self, args: ReportUsageArgs) -> Result<ReportUsageResult, EngineError> {
        match self.inner.report_usage_and_check(args).await {
            Ok(ReportUsageResult::HardBreach { .. }) if self.mode == TamperMode::IgnoreHardBudget => {
                Ok(ReportUsageResult::Ok)
            }
            other => other,
        }
    }

    async fn record_spend(&self, args: RecordSpendArgs) -> Result<ReportUsageResult, EngineError> {
        self.inner.record_spend(args).await
    }

    async fn release_budget(
        &self,
        budget_id: &BudgetId,
        execution_id: &ExecutionId,
    ) -> Result<bool, EngineError> {
        self.inner.release_budget(budget_id, execution_id).await
    }

    async fn reset_budget(&self, budget_id: &BudgetId) -> Result<Option<TimestampMs>, EngineError> {
        self.inner.reset_budget(budget_id).await
    }

    async fn get_budget_status(&self, budget_id: &BudgetId) -> Result<BudgetStatus, EngineError> {
        let mut status = self.inner.get_budget_status(budget_id).await?;
        if self.mode == TamperMode::IgnoreHardBudget {
            status.usage.values_mut().for_each(|used| *used = 0);
        }
        Ok(status)
    }

    async fn create_quota_policy(
        &self,
        args: CreateQuotaPolicyArgs,
    ) -> Result<CreateQuotaOutcome, EngineError> {
        self.inner.create_quota_policy(args).await
    }

    async fn check_admission_and_record(
        &self,
        args: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError> {
        self.inner.check_admission_and_record(args).await
    }

    async fn release_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        self.inner.release_admission(quota_policy_id, execution_id).await
    }

    async fn read_quota_policy_limits(
        &self,
        quota_policy_id: &QuotaPolicyId,
    ) -> Result<Option<QuotaPolicyLimits>, EngineError> {
        self.inner.read_quota_policy_limits(quota_policy_id).await
    }
}
