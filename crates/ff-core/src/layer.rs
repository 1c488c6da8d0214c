//! Layers: wrap any backend so every contract call passes through one hook
//! (fault injection, metrics, tracing) without re-implementing the trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::admission::*;
use crate::backend::EngineBackend;
use crate::capabilities::Capabilities;
use crate::clock::SimClock;
use crate::contracts::*;
use crate::error::EngineError;
use crate::flow::*;
use crate::handle::BackendTag;
use crate::hmac_token::{KidInfo, RotateOutcome, SeedOutcome};
use crate::ids::WaitpointId;
use crate::ids::{AttemptIndex, BudgetId, EdgeId, ExecutionId, FlowId, LaneId, QuotaPolicyId, TimestampMs};
use crate::partition::PartitionConfig;
use crate::stream::{AppendFrameOutcome, StreamCursor, StreamFrames, SummaryDocument, TailVisibility};
use crate::suspension::*;

/// A boxed, sendable future of one contract call.
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'a>>;

/// A hook around every async contract call of a [`Layered`] backend.
pub trait Layer: Send + Sync + 'static {
    /// Runs (or withholds, delays, or overrides the answer of) the call named `op`.
    fn around<'a, T: Send + 'a>(&'a self, op: &'static str, call: CallFuture<'a, T>) -> CallFuture<'a, T>;
}

impl<L: Layer> Layer for Arc<L> {
    fn around<'a, T: Send + 'a>(&'a self, op: &'static str, call: CallFuture<'a, T>) -> CallFuture<'a, T> {
        L::around(self, op, call)
    }
}

/// A backend whose every async contract call goes through a [`Layer`].
///
/// Provided trait methods (claim, complete, …) are not overridden, so they run
/// their default bodies over the layered contracts.
pub struct Layered<L> {
    inner: Arc<dyn EngineBackend>,
    layer: L,
}

impl<L: Layer> Layered<L> {
    /// Wraps `inner` with `layer`.
    pub fn new(inner: Arc<dyn EngineBackend>, layer: L) -> Self {
        Self { inner, layer }
    }

    /// The hook.
    pub fn layer(&self) -> &L {
        &self.layer
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn EngineBackend> {
        &self.inner
    }
}

impl<L> std::fmt::Debug for Layered<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layered").finish_non_exhaustive()
    }
}

#[async_trait]
impl<L: Layer> EngineBackend for Layered<L> {
    fn sim_clock(&self) -> Option<SimClock> {
        self.inner.sim_clock()
    }

    fn partition_config(&self) -> PartitionConfig {
        self.inner.partition_config()
    }

    fn backend_tag(&self) -> BackendTag {
        self.inner.backend_tag()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn server_time_ms(&self) -> Result<TimestampMs, EngineError> {
        self.layer.around("server_time_ms", Box::pin(self.inner.server_time_ms())).await
    }

    async fn create_execution(
        &self,
        args: CreateExecutionArgs,
    ) -> Result<CreateExecutionOutcome, EngineError> {
        self.layer.around("create_execution", Box::pin(self.inner.create_execution(args))).await
    }

    async fn claim_execution(&self, args: ClaimExecutionArgs) -> Result<ClaimedExecution, EngineError> {
        self.layer.around("claim_execution", Box::pin(self.inner.claim_execution(args))).await
    }

    async fn complete_execution(&self, args: CompleteExecutionArgs) -> Result<CompleteOutcome, EngineError> {
        self.layer.around("complete_execution", Box::pin(self.inner.complete_execution(args))).await
    }

    async fn cancel_execution(&self, args: CancelExecutionArgs) -> Result<CancelOutcome, EngineError> {
        self.layer.around("cancel_execution", Box::pin(self.inner.cancel_execution(args))).await
    }

    async fn delay_execution(&self, args: DelayExecutionArgs) -> Result<TimestampMs, EngineError> {
        self.layer.around("delay_execution", Box::pin(self.inner.delay_execution(args))).await
    }

    async fn move_to_waiting_children(&self, args: MoveToWaitingChildrenArgs) -> Result<(), EngineError> {
        self.layer
            .around("move_to_waiting_children", Box::pin(self.inner.move_to_waiting_children(args)))
            .await
    }

    async fn fail_execution(&self, args: FailExecutionArgs) -> Result<FailOutcome, EngineError> {
        self.layer.around("fail_execution", Box::pin(self.inner.fail_execution(args))).await
    }

    async fn reclaim_execution(
        &self,
        args: ReclaimExecutionArgs,
    ) -> Result<ReclaimExecutionOutcome, EngineError> {
        self.layer.around("reclaim_execution", Box::pin(self.inner.reclaim_execution(args))).await
    }

    async fn expire_execution(
        &self,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<ExpireOutcome, EngineError> {
        self.layer
            .around("expire_execution", Box::pin(self.inner.expire_execution(execution_id, phase)))
            .await
    }

    async fn set_execution_tags(&self, args: SetExecutionTagsArgs) -> Result<usize, EngineError> {
        self.layer.around("set_execution_tags", Box::pin(self.inner.set_execution_tags(args))).await
    }

    async fn replay_execution(&self, execution_id: &ExecutionId) -> Result<ReplayOutcome, EngineError> {
        self.layer.around("replay_execution", Box::pin(self.inner.replay_execution(execution_id))).await
    }

    async fn renew_lease(&self, args: RenewLeaseArgs) -> Result<LeaseRenewal, EngineError> {
        self.layer.around("renew_lease", Box::pin(self.inner.renew_lease(args))).await
    }

    async fn mark_lease_expired_if_due(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<MarkLeaseExpiredOutcome, EngineError> {
        self.layer
            .around("mark_lease_expired_if_due", Box::pin(self.inner.mark_lease_expired_if_due(execution_id)))
            .await
    }

    async fn revoke_lease(&self, args: RevokeLeaseArgs) -> Result<RevokeLeaseOutcome, EngineError> {
        self.layer.around("revoke_lease", Box::pin(self.inner.revoke_lease(args))).await
    }

    async fn list_expired_leases(
        &self,
        args: ListExpiredLeasesArgs,
    ) -> Result<ExpiredLeasesPage, EngineError> {
        self.layer.around("list_expired_leases", Box::pin(self.inner.list_expired_leases(args))).await
    }

    async fn issue_claim_grant(
        &self,
        args: IssueClaimGrantArgs,
    ) -> Result<IssueClaimGrantOutcome, EngineError> {
        self.layer.around("issue_claim_grant", Box::pin(self.inner.issue_claim_grant(args))).await
    }

    async fn change_priority(&self, args: ChangePriorityArgs) -> Result<PriorityChange, EngineError> {
        self.layer.around("change_priority", Box::pin(self.inner.change_priority(args))).await
    }

    async fn update_progress(&self, args: UpdateProgressArgs) -> Result<(), EngineError> {
        self.layer.around("update_progress", Box::pin(self.inner.update_progress(args))).await
    }

    async fn promote_delayed(
        &self,
        lane_id: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<PromoteOutcome, EngineError> {
        self.layer
            .around("promote_delayed", Box::pin(self.inner.promote_delayed(lane_id, execution_id)))
            .await
    }

    async fn issue_reclaim_grant(
        &self,
        args: IssueReclaimGrantArgs,
    ) -> Result<IssueReclaimGrantOutcome, EngineError> {
        self.layer.around("issue_reclaim_grant", Box::pin(self.inner.issue_reclaim_grant(args))).await
    }

    async fn claim_resumed_execution(
        &self,
        args: ClaimResumedExecutionArgs,
    ) -> Result<ClaimedExecution, EngineError> {
        self.layer.around("claim_resumed_execution", Box::pin(self.inner.claim_resumed_execution(args))).await
    }

    async fn issue_grant_and_claim(
        &self,
        args: IssueGrantAndClaimArgs,
    ) -> Result<ClaimGrantOutcome, EngineError> {
        self.layer.around("issue_grant_and_claim", Box::pin(self.inner.issue_grant_and_claim(args))).await
    }

    async fn block_execution_for_admission(&self, args: BlockExecutionArgs) -> Result<(), EngineError> {
        self.layer
            .around("block_execution_for_admission", Box::pin(self.inner.block_execution_for_admission(args)))
            .await
    }

    async fn unblock_execution(&self, args: UnblockExecutionArgs) -> Result<(), EngineError> {
        self.layer.around("unblock_execution", Box::pin(self.inner.unblock_execution(args))).await
    }

    async fn scan_eligible_executions(
        &self,
        args: ScanEligibleArgs,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        self.layer
            .around("scan_eligible_executions", Box::pin(self.inner.scan_eligible_executions(args)))
            .await
    }

    async fn register_worker(&self, args: RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, EngineError> {
        self.layer.around("register_worker", Box::pin(self.inner.register_worker(args))).await
    }

    async fn heartbeat_worker(&self, args: HeartbeatWorkerArgs) -> Result<HeartbeatOutcome, EngineError> {
        self.layer.around("heartbeat_worker", Box::pin(self.inner.heartbeat_worker(args))).await
    }

    async fn mark_worker_dead(&self, args: MarkWorkerDeadArgs) -> Result<MarkWorkerDeadOutcome, EngineError> {
        self.layer.around("mark_worker_dead", Box::pin(self.inner.mark_worker_dead(args))).await
    }

    async fn list_workers(&self, args: ListWorkersArgs) -> Result<WorkersPage, EngineError> {
        self.layer.around("list_workers", Box::pin(self.inner.list_workers(args))).await
    }

    async fn describe_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<ExecutionSnapshot>, EngineError> {
        self.layer.around("describe_execution", Box::pin(self.inner.describe_execution(execution_id))).await
    }

    async fn read_execution_context(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExecutionContext, EngineError> {
        self.layer
            .around("read_execution_context", Box::pin(self.inner.read_execution_context(execution_id)))
            .await
    }

    async fn get_execution_result(&self, execution_id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError> {
        self.layer
            .around("get_execution_result", Box::pin(self.inner.get_execution_result(execution_id)))
            .await
    }

    async fn get_execution_tag(
        &self,
        execution_id: &ExecutionId,
        key: &str,
    ) -> Result<Option<String>, EngineError> {
        self.layer
            .around("get_execution_tag", Box::pin(self.inner.get_execution_tag(execution_id, key)))
            .await
    }

    async fn read_lease_history(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<LeaseHistoryEntry>, EngineError> {
        self.layer.around("read_lease_history", Box::pin(self.inner.read_lease_history(execution_id))).await
    }

    async fn read_completions(&self, after: u64, limit: usize) -> Result<Vec<CompletionEvent>, EngineError> {
        self.layer.around("read_completions", Box::pin(self.inner.read_completions(after, limit))).await
    }

    async fn list_executions(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        self.layer
            .around("list_executions", Box::pin(self.inner.list_executions(partition, after, limit)))
            .await
    }

    async fn suspend_by_triple(&self, args: SuspendByTripleArgs) -> Result<SuspendOutcome, EngineError> {
        self.layer.around("suspend_by_triple", Box::pin(self.inner.suspend_by_triple(args))).await
    }

    async fn create_pending_waitpoint(
        &self,
        args: CreateWaitpointArgs,
    ) -> Result<PendingWaitpoint, EngineError> {
        self.layer
            .around("create_pending_waitpoint", Box::pin(self.inner.create_pending_waitpoint(args)))
            .await
    }

    async fn close_waitpoint(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
        reason: &str,
    ) -> Result<bool, EngineError> {
        self.layer
            .around(
                "close_waitpoint",
                Box::pin(self.inner.close_waitpoint(execution_id, waitpoint_id, reason)),
            )
            .await
    }

    async fn deliver_signal(&self, args: DeliverSignalArgs) -> Result<DeliverSignalOutcome, EngineError> {
        self.layer.around("deliver_signal", Box::pin(self.inner.deliver_signal(args))).await
    }

    async fn resume_execution(&self, args: ResumeExecutionArgs) -> Result<ResumeOutcome, EngineError> {
        self.layer.around("resume_execution", Box::pin(self.inner.resume_execution(args))).await
    }

    async fn expire_suspension(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExpireSuspensionOutcome, EngineError> {
        self.layer.around("expire_suspension", Box::pin(self.inner.expire_suspension(execution_id))).await
    }

    async fn read_waitpoint_token(&self, waitpoint_id: &WaitpointId) -> Result<Option<String>, EngineError> {
        self.layer
            .around("read_waitpoint_token", Box::pin(self.inner.read_waitpoint_token(waitpoint_id)))
            .await
    }

    async fn observe_execution_signals(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<ResumeSignal>, EngineError> {
        self.layer
            .around("observe_execution_signals", Box::pin(self.inner.observe_execution_signals(execution_id)))
            .await
    }

    async fn list_pending_waitpoints(
        &self,
        execution_id: &ExecutionId,
        after: Option<WaitpointId>,
        limit: usize,
    ) -> Result<(Vec<PendingWaitpointInfo>, Option<WaitpointId>), EngineError> {
        self.layer
            .around(
                "list_pending_waitpoints",
                Box::pin(self.inner.list_pending_waitpoints(execution_id, after, limit)),
            )
            .await
    }

    async fn list_suspended(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<(Vec<SuspendedExecutionEntry>, Option<ExecutionId>), EngineError> {
        self.layer
            .around("list_suspended", Box::pin(self.inner.list_suspended(partition, after, limit)))
            .await
    }

    async fn seed_waitpoint_hmac_secret(
        &self,
        kid: &str,
        secret_hex: &str,
    ) -> Result<SeedOutcome, EngineError> {
        self.layer
            .around(
                "seed_waitpoint_hmac_secret",
                Box::pin(self.inner.seed_waitpoint_hmac_secret(kid, secret_hex)),
            )
            .await
    }

    async fn rotate_waitpoint_hmac_secret_all(
        &self,
        new_kid: &str,
        new_secret_hex: &str,
        grace_ms: u64,
    ) -> Result<Vec<(u16, Result<RotateOutcome, EngineError>)>, EngineError> {
        self.layer
            .around(
                "rotate_waitpoint_hmac_secret_all",
                Box::pin(self.inner.rotate_waitpoint_hmac_secret_all(new_kid, new_secret_hex, grace_ms)),
            )
            .await
    }

    async fn list_waitpoint_hmac_kids(&self) -> Result<(Option<String>, Vec<KidInfo>), EngineError> {
        self.layer.around("list_waitpoint_hmac_kids", Box::pin(self.inner.list_waitpoint_hmac_kids())).await
    }

    async fn create_flow(&self, args: CreateFlowArgs) -> Result<CreateFlowOutcome, EngineError> {
        self.layer.around("create_flow", Box::pin(self.inner.create_flow(args))).await
    }

    async fn add_execution_to_flow(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<AddToFlowOutcome, EngineError> {
        self.layer
            .around(
                "add_execution_to_flow",
                Box::pin(self.inner.add_execution_to_flow(flow_id, execution_id)),
            )
            .await
    }

    async fn stage_dependency_edge(&self, args: StageEdgeArgs) -> Result<(EdgeId, u64), EngineError> {
        self.layer.around("stage_dependency_edge", Box::pin(self.inner.stage_dependency_edge(args))).await
    }

    async fn set_edge_group_policy(
        &self,
        flow_id: &FlowId,
        downstream: &ExecutionId,
        policy: EdgeDependencyPolicy,
    ) -> Result<bool, EngineError> {
        self.layer
            .around(
                "set_edge_group_policy",
                Box::pin(self.inner.set_edge_group_policy(flow_id, downstream, policy)),
            )
            .await
    }

    async fn apply_dependency_to_child(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
    ) -> Result<Option<u64>, EngineError> {
        self.layer
            .around(
                "apply_dependency_to_child",
                Box::pin(self.inner.apply_dependency_to_child(flow_id, edge_id)),
            )
            .await
    }

    async fn resolve_dependency(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
        upstream_outcome: crate::state::TerminalOutcome,
    ) -> Result<ResolveDependencyOutcome, EngineError> {
        self.layer
            .around(
                "resolve_dependency",
                Box::pin(self.inner.resolve_dependency(flow_id, edge_id, upstream_outcome)),
            )
            .await
    }

    async fn cancel_flow_header(
        &self,
        flow_id: &FlowId,
        reason: &str,
        policy: CancelFlowPolicy,
        grace_ms: u64,
    ) -> Result<CancelFlowHeader, EngineError> {
        self.layer
            .around(
                "cancel_flow_header",
                Box::pin(self.inner.cancel_flow_header(flow_id, reason, policy, grace_ms)),
            )
            .await
    }

    async fn ack_cancel_member(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        self.layer
            .around("ack_cancel_member", Box::pin(self.inner.ack_cancel_member(flow_id, execution_id)))
            .await
    }

    async fn promote_blocked_to_eligible(&self, execution_id: &ExecutionId) -> Result<(), EngineError> {
        self.layer
            .around(
                "promote_blocked_to_eligible",
                Box::pin(self.inner.promote_blocked_to_eligible(execution_id)),
            )
            .await
    }

    async fn set_flow_tags(
        &self,
        flow_id: &FlowId,
        tags: Vec<(String, String)>,
    ) -> Result<usize, EngineError> {
        self.layer.around("set_flow_tags", Box::pin(self.inner.set_flow_tags(flow_id, tags))).await
    }

    async fn describe_flow(&self, flow_id: &FlowId) -> Result<Option<FlowSnapshot>, EngineError> {
        self.layer.around("describe_flow", Box::pin(self.inner.describe_flow(flow_id))).await
    }

    async fn create_budget(&self, args: CreateBudgetArgs) -> Result<CreateBudgetOutcome, EngineError> {
        self.layer.around("create_budget", Box::pin(self.inner.create_budget(args))).await
    }

    async fn report_usage_and_check(&self, args: ReportUsageArgs) -> Result<ReportUsageResult, EngineError> {
        self.layer.around("report_usage_and_check", Box::pin(self.inner.report_usage_and_check(args))).await
    }

    async fn record_spend(&self, args: RecordSpendArgs) -> Result<ReportUsageResult, EngineError> {
        self.layer.around("record_spend", Box::pin(self.inner.record_spend(args))).await
    }

    async fn release_budget(
        &self,
        budget_id: &BudgetId,
        execution_id: &ExecutionId,
    ) -> Result<bool, EngineError> {
        self.layer
            .around("release_budget", Box::pin(self.inner.release_budget(budget_id, execution_id)))
            .await
    }

    async fn reset_budget(&self, budget_id: &BudgetId) -> Result<Option<TimestampMs>, EngineError> {
        self.layer.around("reset_budget", Box::pin(self.inner.reset_budget(budget_id))).await
    }

    async fn get_budget_status(&self, budget_id: &BudgetId) -> Result<BudgetStatus, EngineError> {
        self.layer.around("get_budget_status", Box::pin(self.inner.get_budget_status(budget_id))).await
    }

    async fn create_quota_policy(
        &self,
        args: CreateQuotaPolicyArgs,
    ) -> Result<CreateQuotaOutcome, EngineError> {
        self.layer.around("create_quota_policy", Box::pin(self.inner.create_quota_policy(args))).await
    }

    async fn check_admission_and_record(
        &self,
        args: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError> {
        self.layer
            .around("check_admission_and_record", Box::pin(self.inner.check_admission_and_record(args)))
            .await
    }

    async fn release_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        self.layer
            .around(
                "release_admission",
                Box::pin(self.inner.release_admission(quota_policy_id, execution_id)),
            )
            .await
    }

    async fn read_quota_policy_limits(
        &self,
        quota_policy_id: &QuotaPolicyId,
    ) -> Result<Option<QuotaPolicyLimits>, EngineError> {
        self.layer
            .around(
                "read_quota_policy_limits",
                Box::pin(self.inner.read_quota_policy_limits(quota_policy_id)),
            )
            .await
    }

    async fn append_stream_frame(&self, args: AppendFrameArgs) -> Result<AppendFrameOutcome, EngineError> {
        self.layer.around("append_stream_frame", Box::pin(self.inner.append_stream_frame(args))).await
    }

    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError> {
        self.layer
            .around(
                "read_stream",
                Box::pin(self.inner.read_stream(execution_id, attempt_index, from, to, count_limit)),
            )
            .await
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
        self.layer
            .around(
                "tail_stream",
                Box::pin(self.inner.tail_stream(
                    execution_id,
                    attempt_index,
                    after,
                    block_ms,
                    count_limit,
                    visibility,
                )),
            )
            .await
    }

    async fn read_summary(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
    ) -> Result<Option<SummaryDocument>, EngineError> {
        self.layer
            .around("read_summary", Box::pin(self.inner.read_summary(execution_id, attempt_index)))
            .await
    }

    async fn run_scanner(
        &self,
        kind: ScannerKind,
        partition: u16,
        batch: usize,
    ) -> Result<ScanReport, EngineError> {
        self.layer.around("run_scanner", Box::pin(self.inner.run_scanner(kind, partition, batch))).await
    }
}
