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

/// What a [`Layer`] knows of one contract call, built before the call takes its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The trait method's name, e.g. `"cancel_execution"`.
    pub op: &'static str,
    /// The call's `execution_id` argument (or field of its args), when it has one.
    pub execution_id: Option<ExecutionId>,
    /// The call's `partition` argument (or field of its args), when it has one.
    pub partition: Option<u16>,
}

impl Call {
    /// A call that names no execution and no partition.
    pub fn new(op: &'static str) -> Self {
        Self { op, execution_id: None, partition: None }
    }

    /// A call on one execution.
    pub fn for_execution(op: &'static str, execution_id: &ExecutionId) -> Self {
        Self { execution_id: Some(execution_id.clone()), ..Self::new(op) }
    }

    /// A call on one partition.
    pub fn for_partition(op: &'static str, partition: u16) -> Self {
        Self { partition: Some(partition), ..Self::new(op) }
    }
}

/// A hook around every async contract call of a [`Layered`] backend.
pub trait Layer: Send + Sync + 'static {
    /// Runs (or withholds, delays, or overrides the answer of) `run`, the inner backend's `call`.
    fn around<'a, T: Send + 'a>(&'a self, call: Call, run: CallFuture<'a, T>) -> CallFuture<'a, T>;
}

impl<L: Layer> Layer for Arc<L> {
    fn around<'a, T: Send + 'a>(&'a self, call: Call, run: CallFuture<'a, T>) -> CallFuture<'a, T> {
        L::around(self, call, run)
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
        let call = Call::new("server_time_ms");
        self.layer.around(call, Box::pin(self.inner.server_time_ms())).await
    }

    async fn create_execution(
        &self,
        args: CreateExecutionArgs,
    ) -> Result<CreateExecutionOutcome, EngineError> {
        let call = Call::for_execution("create_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.create_execution(args))).await
    }

    async fn claim_execution(&self, args: ClaimExecutionArgs) -> Result<ClaimedExecution, EngineError> {
        let call = Call::for_execution("claim_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.claim_execution(args))).await
    }

    async fn complete_execution(&self, args: CompleteExecutionArgs) -> Result<CompleteOutcome, EngineError> {
        let call = Call::for_execution("complete_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.complete_execution(args))).await
    }

    async fn cancel_execution(&self, args: CancelExecutionArgs) -> Result<CancelOutcome, EngineError> {
        let call = Call::for_execution("cancel_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.cancel_execution(args))).await
    }

    async fn delay_execution(&self, args: DelayExecutionArgs) -> Result<TimestampMs, EngineError> {
        let call = Call::for_execution("delay_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.delay_execution(args))).await
    }

    async fn move_to_waiting_children(&self, args: MoveToWaitingChildrenArgs) -> Result<(), EngineError> {
        let call = Call::for_execution("move_to_waiting_children", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.move_to_waiting_children(args))).await
    }

    async fn fail_execution(&self, args: FailExecutionArgs) -> Result<FailOutcome, EngineError> {
        let call = Call::for_execution("fail_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.fail_execution(args))).await
    }

    async fn reclaim_execution(
        &self,
        args: ReclaimExecutionArgs,
    ) -> Result<ReclaimExecutionOutcome, EngineError> {
        let call = Call::for_execution("reclaim_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.reclaim_execution(args))).await
    }

    async fn expire_execution(
        &self,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<ExpireOutcome, EngineError> {
        let call = Call::for_execution("expire_execution", execution_id);
        self.layer.around(call, Box::pin(self.inner.expire_execution(execution_id, phase))).await
    }

    async fn set_execution_tags(&self, args: SetExecutionTagsArgs) -> Result<usize, EngineError> {
        let call = Call::for_execution("set_execution_tags", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.set_execution_tags(args))).await
    }

    async fn replay_execution(&self, execution_id: &ExecutionId) -> Result<ReplayOutcome, EngineError> {
        let call = Call::for_execution("replay_execution", execution_id);
        self.layer.around(call, Box::pin(self.inner.replay_execution(execution_id))).await
    }

    async fn renew_lease(&self, args: RenewLeaseArgs) -> Result<LeaseRenewal, EngineError> {
        let call = Call::for_execution("renew_lease", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.renew_lease(args))).await
    }

    async fn mark_lease_expired_if_due(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<MarkLeaseExpiredOutcome, EngineError> {
        let call = Call::for_execution("mark_lease_expired_if_due", execution_id);
        self.layer.around(call, Box::pin(self.inner.mark_lease_expired_if_due(execution_id))).await
    }

    async fn revoke_lease(&self, args: RevokeLeaseArgs) -> Result<RevokeLeaseOutcome, EngineError> {
        let call = Call::for_execution("revoke_lease", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.revoke_lease(args))).await
    }

    async fn list_expired_leases(
        &self,
        args: ListExpiredLeasesArgs,
    ) -> Result<ExpiredLeasesPage, EngineError> {
        let call = Call::new("list_expired_leases");
        self.layer.around(call, Box::pin(self.inner.list_expired_leases(args))).await
    }

    async fn issue_claim_grant(
        &self,
        args: IssueClaimGrantArgs,
    ) -> Result<IssueClaimGrantOutcome, EngineError> {
        let call = Call::for_execution("issue_claim_grant", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.issue_claim_grant(args))).await
    }

    async fn change_priority(&self, args: ChangePriorityArgs) -> Result<PriorityChange, EngineError> {
        let call = Call::for_execution("change_priority", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.change_priority(args))).await
    }

    async fn update_progress(&self, args: UpdateProgressArgs) -> Result<(), EngineError> {
        let call = Call::for_execution("update_progress", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.update_progress(args))).await
    }

    async fn promote_delayed(
        &self,
        lane_id: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<PromoteOutcome, EngineError> {
        let call = Call::for_execution("promote_delayed", execution_id);
        self.layer.around(call, Box::pin(self.inner.promote_delayed(lane_id, execution_id))).await
    }

    async fn issue_reclaim_grant(
        &self,
        args: IssueReclaimGrantArgs,
    ) -> Result<IssueReclaimGrantOutcome, EngineError> {
        let call = Call::for_execution("issue_reclaim_grant", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.issue_reclaim_grant(args))).await
    }

    async fn claim_resumed_execution(
        &self,
        args: ClaimResumedExecutionArgs,
    ) -> Result<ClaimedExecution, EngineError> {
        let call = Call::for_execution("claim_resumed_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.claim_resumed_execution(args))).await
    }

    async fn issue_grant_and_claim(
        &self,
        args: IssueGrantAndClaimArgs,
    ) -> Result<ClaimGrantOutcome, EngineError> {
        let call = Call::for_execution("issue_grant_and_claim", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.issue_grant_and_claim(args))).await
    }

    async fn block_execution_for_admission(&self, args: BlockExecutionArgs) -> Result<(), EngineError> {
        let call = Call::for_execution("block_execution_for_admission", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.block_execution_for_admission(args))).await
    }

    async fn unblock_execution(&self, args: UnblockExecutionArgs) -> Result<(), EngineError> {
        let call = Call::for_execution("unblock_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.unblock_execution(args))).await
    }

    async fn scan_eligible_executions(
        &self,
        args: ScanEligibleArgs,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let call = Call::for_partition("scan_eligible_executions", args.partition);
        self.layer.around(call, Box::pin(self.inner.scan_eligible_executions(args))).await
    }

    async fn register_worker(&self, args: RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, EngineError> {
        let call = Call::new("register_worker");
        self.layer.around(call, Box::pin(self.inner.register_worker(args))).await
    }

    async fn heartbeat_worker(&self, args: HeartbeatWorkerArgs) -> Result<HeartbeatOutcome, EngineError> {
        let call = Call::new("heartbeat_worker");
        self.layer.around(call, Box::pin(self.inner.heartbeat_worker(args))).await
    }

    async fn mark_worker_dead(&self, args: MarkWorkerDeadArgs) -> Result<MarkWorkerDeadOutcome, EngineError> {
        let call = Call::new("mark_worker_dead");
        self.layer.around(call, Box::pin(self.inner.mark_worker_dead(args))).await
    }

    async fn list_workers(&self, args: ListWorkersArgs) -> Result<WorkersPage, EngineError> {
        let call = Call::new("list_workers");
        self.layer.around(call, Box::pin(self.inner.list_workers(args))).await
    }

    async fn describe_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<ExecutionSnapshot>, EngineError> {
        let call = Call::for_execution("describe_execution", execution_id);
        self.layer.around(call, Box::pin(self.inner.describe_execution(execution_id))).await
    }

    async fn read_execution_context(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExecutionContext, EngineError> {
        let call = Call::for_execution("read_execution_context", execution_id);
        self.layer.around(call, Box::pin(self.inner.read_execution_context(execution_id))).await
    }

    async fn get_execution_result(&self, execution_id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError> {
        let call = Call::for_execution("get_execution_result", execution_id);
        self.layer.around(call, Box::pin(self.inner.get_execution_result(execution_id))).await
    }

    async fn get_execution_tag(
        &self,
        execution_id: &ExecutionId,
        key: &str,
    ) -> Result<Option<String>, EngineError> {
        let call = Call::for_execution("get_execution_tag", execution_id);
        self.layer.around(call, Box::pin(self.inner.get_execution_tag(execution_id, key))).await
    }

    async fn read_lease_history(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<LeaseHistoryEntry>, EngineError> {
        let call = Call::for_execution("read_lease_history", execution_id);
        self.layer.around(call, Box::pin(self.inner.read_lease_history(execution_id))).await
    }

    async fn read_completions(&self, after: u64, limit: usize) -> Result<Vec<CompletionEvent>, EngineError> {
        let call = Call::new("read_completions");
        self.layer.around(call, Box::pin(self.inner.read_completions(after, limit))).await
    }

    async fn list_executions(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let call = Call::for_partition("list_executions", partition);
        self.layer.around(call, Box::pin(self.inner.list_executions(partition, after, limit))).await
    }

    async fn suspend_by_triple(&self, args: SuspendByTripleArgs) -> Result<SuspendOutcome, EngineError> {
        let call = Call::for_execution("suspend_by_triple", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.suspend_by_triple(args))).await
    }

    async fn create_pending_waitpoint(
        &self,
        args: CreateWaitpointArgs,
    ) -> Result<PendingWaitpoint, EngineError> {
        let call = Call::for_execution("create_pending_waitpoint", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.create_pending_waitpoint(args))).await
    }

    async fn close_waitpoint(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let call = Call::for_execution("close_waitpoint", execution_id);
        self.layer
            .around(call, Box::pin(self.inner.close_waitpoint(execution_id, waitpoint_id, reason)))
            .await
    }

    async fn deliver_signal(&self, args: DeliverSignalArgs) -> Result<DeliverSignalOutcome, EngineError> {
        let call = Call::for_execution("deliver_signal", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.deliver_signal(args))).await
    }

    async fn resume_execution(&self, args: ResumeExecutionArgs) -> Result<ResumeOutcome, EngineError> {
        let call = Call::for_execution("resume_execution", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.resume_execution(args))).await
    }

    async fn expire_suspension(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExpireSuspensionOutcome, EngineError> {
        let call = Call::for_execution("expire_suspension", execution_id);
        self.layer.around(call, Box::pin(self.inner.expire_suspension(execution_id))).await
    }

    async fn read_waitpoint_token(&self, waitpoint_id: &WaitpointId) -> Result<Option<String>, EngineError> {
        let call = Call::new("read_waitpoint_token");
        self.layer.around(call, Box::pin(self.inner.read_waitpoint_token(waitpoint_id))).await
    }

    async fn observe_execution_signals(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<ResumeSignal>, EngineError> {
        let call = Call::for_execution("observe_execution_signals", execution_id);
        self.layer.around(call, Box::pin(self.inner.observe_execution_signals(execution_id))).await
    }

    async fn list_pending_waitpoints(
        &self,
        execution_id: &ExecutionId,
        after: Option<WaitpointId>,
        limit: usize,
    ) -> Result<(Vec<PendingWaitpointInfo>, Option<WaitpointId>), EngineError> {
        let call = Call::for_execution("list_pending_waitpoints", execution_id);
        self.layer
            .around(call, Box::pin(self.inner.list_pending_waitpoints(execution_id, after, limit)))
            .await
    }

    async fn list_suspended(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<(Vec<SuspendedExecutionEntry>, Option<ExecutionId>), EngineError> {
        let call = Call::for_partition("list_suspended", partition);
        self.layer.around(call, Box::pin(self.inner.list_suspended(partition, after, limit))).await
    }

    async fn seed_waitpoint_hmac_secret(
        &self,
        kid: &str,
        secret_hex: &str,
    ) -> Result<SeedOutcome, EngineError> {
        let call = Call::new("seed_waitpoint_hmac_secret");
        self.layer.around(call, Box::pin(self.inner.seed_waitpoint_hmac_secret(kid, secret_hex))).await
    }

    async fn rotate_waitpoint_hmac_secret_all(
        &self,
        new_kid: &str,
        new_secret_hex: &str,
        grace_ms: u64,
    ) -> Result<Vec<(u16, Result<RotateOutcome, EngineError>)>, EngineError> {
        let call = Call::new("rotate_waitpoint_hmac_secret_all");
        self.layer
            .around(
                call,
                Box::pin(self.inner.rotate_waitpoint_hmac_secret_all(new_kid, new_secret_hex, grace_ms)),
            )
            .await
    }

    async fn list_waitpoint_hmac_kids(&self) -> Result<(Option<String>, Vec<KidInfo>), EngineError> {
        let call = Call::new("list_waitpoint_hmac_kids");
        self.layer.around(call, Box::pin(self.inner.list_waitpoint_hmac_kids())).await
    }

    async fn create_flow(&self, args: CreateFlowArgs) -> Result<CreateFlowOutcome, EngineError> {
        let call = Call::new("create_flow");
        self.layer.around(call, Box::pin(self.inner.create_flow(args))).await
    }

    async fn add_execution_to_flow(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<AddToFlowOutcome, EngineError> {
        let call = Call::for_execution("add_execution_to_flow", execution_id);
        self.layer.around(call, Box::pin(self.inner.add_execution_to_flow(flow_id, execution_id))).await
    }

    async fn stage_dependency_edge(&self, args: StageEdgeArgs) -> Result<(EdgeId, u64), EngineError> {
        let call = Call::new("stage_dependency_edge");
        self.layer.around(call, Box::pin(self.inner.stage_dependency_edge(args))).await
    }

    async fn set_edge_group_policy(
        &self,
        flow_id: &FlowId,
        downstream: &ExecutionId,
        policy: EdgeDependencyPolicy,
    ) -> Result<bool, EngineError> {
        let call = Call::new("set_edge_group_policy");
        self.layer.around(call, Box::pin(self.inner.set_edge_group_policy(flow_id, downstream, policy))).await
    }

    async fn apply_dependency_to_child(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
    ) -> Result<Option<u64>, EngineError> {
        let call = Call::new("apply_dependency_to_child");
        self.layer.around(call, Box::pin(self.inner.apply_dependency_to_child(flow_id, edge_id))).await
    }

    async fn resolve_dependency(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
        upstream_outcome: crate::state::TerminalOutcome,
    ) -> Result<ResolveDependencyOutcome, EngineError> {
        let call = Call::new("resolve_dependency");
        self.layer
            .around(call, Box::pin(self.inner.resolve_dependency(flow_id, edge_id, upstream_outcome)))
            .await
    }

    async fn cancel_flow_header(
        &self,
        flow_id: &FlowId,
        reason: &str,
        policy: CancelFlowPolicy,
        grace_ms: u64,
    ) -> Result<CancelFlowHeader, EngineError> {
        let call = Call::new("cancel_flow_header");
        self.layer
            .around(call, Box::pin(self.inner.cancel_flow_header(flow_id, reason, policy, grace_ms)))
            .await
    }

    async fn ack_cancel_member(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        let call = Call::for_execution("ack_cancel_member", execution_id);
        self.layer.around(call, Box::pin(self.inner.ack_cancel_member(flow_id, execution_id))).await
    }

    async fn promote_blocked_to_eligible(&self, execution_id: &ExecutionId) -> Result<(), EngineError> {
        let call = Call::for_execution("promote_blocked_to_eligible", execution_id);
        self.layer.around(call, Box::pin(self.inner.promote_blocked_to_eligible(execution_id))).await
    }

    async fn set_flow_tags(
        &self,
        flow_id: &FlowId,
        tags: Vec<(String, String)>,
    ) -> Result<usize, EngineError> {
        let call = Call::new("set_flow_tags");
        self.layer.around(call, Box::pin(self.inner.set_flow_tags(flow_id, tags))).await
    }

    async fn describe_flow(&self, flow_id: &FlowId) -> Result<Option<FlowSnapshot>, EngineError> {
        let call = Call::new("describe_flow");
        self.layer.around(call, Box::pin(self.inner.describe_flow(flow_id))).await
    }

    async fn scan_eligible_heads(
        &self,
        lane_id: &LaneId,
        partitions: std::ops::Range<u16>,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let call = Call::new("scan_eligible_heads");
        self.layer.around(call, Box::pin(self.inner.scan_eligible_heads(lane_id, partitions))).await
    }

    async fn evaluate_flow_eligibility(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<FlowEligibility, EngineError> {
        let call = Call::for_execution("evaluate_flow_eligibility", execution_id);
        self.layer.around(call, Box::pin(self.inner.evaluate_flow_eligibility(execution_id))).await
    }

    async fn create_budget(&self, args: CreateBudgetArgs) -> Result<CreateBudgetOutcome, EngineError> {
        let call = Call::new("create_budget");
        self.layer.around(call, Box::pin(self.inner.create_budget(args))).await
    }

    async fn report_usage_and_check(&self, args: ReportUsageArgs) -> Result<ReportUsageResult, EngineError> {
        let call = Call::new("report_usage_and_check");
        self.layer.around(call, Box::pin(self.inner.report_usage_and_check(args))).await
    }

    async fn record_spend(&self, args: RecordSpendArgs) -> Result<ReportUsageResult, EngineError> {
        let call = Call::for_execution("record_spend", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.record_spend(args))).await
    }

    async fn release_budget(
        &self,
        budget_id: &BudgetId,
        execution_id: &ExecutionId,
    ) -> Result<bool, EngineError> {
        let call = Call::for_execution("release_budget", execution_id);
        self.layer.around(call, Box::pin(self.inner.release_budget(budget_id, execution_id))).await
    }

    async fn reset_budget(&self, budget_id: &BudgetId) -> Result<Option<TimestampMs>, EngineError> {
        let call = Call::new("reset_budget");
        self.layer.around(call, Box::pin(self.inner.reset_budget(budget_id))).await
    }

    async fn get_budget_status(&self, budget_id: &BudgetId) -> Result<BudgetStatus, EngineError> {
        let call = Call::new("get_budget_status");
        self.layer.around(call, Box::pin(self.inner.get_budget_status(budget_id))).await
    }

    async fn create_quota_policy(
        &self,
        args: CreateQuotaPolicyArgs,
    ) -> Result<CreateQuotaOutcome, EngineError> {
        let call = Call::new("create_quota_policy");
        self.layer.around(call, Box::pin(self.inner.create_quota_policy(args))).await
    }

    async fn check_admission_and_record(
        &self,
        args: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError> {
        let call = Call::for_execution("check_admission_and_record", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.check_admission_and_record(args))).await
    }

    async fn release_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        let call = Call::for_execution("release_admission", execution_id);
        self.layer.around(call, Box::pin(self.inner.release_admission(quota_policy_id, execution_id))).await
    }

    async fn read_quota_policy_limits(
        &self,
        quota_policy_id: &QuotaPolicyId,
    ) -> Result<Option<QuotaPolicyLimits>, EngineError> {
        let call = Call::new("read_quota_policy_limits");
        self.layer.around(call, Box::pin(self.inner.read_quota_policy_limits(quota_policy_id))).await
    }

    async fn append_stream_frame(&self, args: AppendFrameArgs) -> Result<AppendFrameOutcome, EngineError> {
        let call = Call::for_execution("append_stream_frame", &args.execution_id);
        self.layer.around(call, Box::pin(self.inner.append_stream_frame(args))).await
    }

    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError> {
        let call = Call::for_execution("read_stream", execution_id);
        self.layer
            .around(
                call,
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
        let call = Call::for_execution("tail_stream", execution_id);
        self.layer
            .around(
                call,
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
        let call = Call::for_execution("read_summary", execution_id);
        self.layer.around(call, Box::pin(self.inner.read_summary(execution_id, attempt_index))).await
    }

    async fn run_scanner(
        &self,
        kind: ScannerKind,
        partition: u16,
        batch: usize,
    ) -> Result<ScanReport, EngineError> {
        let call = Call::for_partition("run_scanner", partition);
        self.layer.around(call, Box::pin(self.inner.run_scanner(kind, partition, batch))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::task::{Context, Poll, Waker};

    /// Records every call it sees and answers `refuse`'s op itself.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<Call>>,
        refuse: Option<&'static str>,
    }

    impl Layer for Recorder {
        fn around<'a, T: Send + 'a>(&'a self, call: Call, run: CallFuture<'a, T>) -> CallFuture<'a, T> {
            let refused = self.refuse == Some(call.op);
            self.seen.lock().push(call);
            if refused {
                return Box::pin(async { Err(EngineError::protocol("test", "refused")) });
            }
            run
        }
    }

    /// Polls a future that never waits.
    fn ready<T>(mut f: CallFuture<'_, T>) -> Result<T, EngineError> {
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("the test future waited"),
        }
    }

    #[test]
    fn descriptors_name_their_target() {
        let id = ExecutionId::from_parts(3, uuid::Uuid::from_u128(7));
        let on_id = Call::for_execution("cancel_execution", &id);
        assert_eq!((on_id.op, on_id.execution_id, on_id.partition), ("cancel_execution", Some(id), None));
        assert_eq!(Call::for_partition("run_scanner", 2).partition, Some(2));
        assert_eq!(
            Call::new("server_time_ms"),
            Call { op: "server_time_ms", execution_id: None, partition: None }
        );
    }

    #[test]
    fn an_arc_layer_sees_the_call_and_can_answer_it() {
        let layer = Arc::new(Recorder { refuse: Some("cancel_execution"), ..Recorder::default() });
        let passed = ready(layer.around(Call::for_partition("run_scanner", 1), Box::pin(async { Ok(5) })));
        assert_eq!(passed.ok(), Some(5));
        let refused = ready(layer.around(Call::new("cancel_execution"), Box::pin(async { Ok(5) })));
        assert!(refused.is_err(), "the layer withholds the call it refuses");
        let ops: Vec<&str> = layer.seen.lock().iter().map(|c| c.op).collect();
        assert_eq!(ops, ["run_scanner", "cancel_execution"]);
    }
}
