//! `Engine<R>`: the `EngineBackend` implementation shared by every store-backed backend.

use std::sync::Arc;

use async_trait::async_trait;
use ff_core::contracts::*;
use ff_core::stream::{AppendFrameOutcome, StreamCursor, StreamFrames, SummaryDocument, TailVisibility};
use ff_core::{
    AttemptIndex, BackendTag, Capabilities, Clock, EngineBackend, EngineError, ExecutionId, LaneId,
    TimestampMs,
};

use crate::store::{Store, StoreRunner};
use crate::{
    admission, execution, flow, lease, lifecycle, reads, scanners, scheduling, streams, suspension, worker,
};
use ff_core::admission::*;
use ff_core::flow::*;
use ff_core::hmac_token::{KidInfo, RotateOutcome, SeedOutcome};
use ff_core::suspension::*;
use ff_core::{BudgetId, EdgeId, FlowId, QuotaPolicyId, WaitpointId};

/// Implements every contract over a [`StoreRunner`]; each call is one atomic step.
#[derive(Debug, Clone)]
pub struct Engine<R> {
    runner: R,
    /// Woken after every stream append, so blocked tails re-read.
    appended: Arc<tokio::sync::Notify>,
}

impl<R: StoreRunner> Engine<R> {
    /// Wraps a runner.
    pub fn new(runner: R) -> Self {
        Self { runner, appended: Arc::new(tokio::sync::Notify::new()) }
    }

    /// The runner (backend-specific access).
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// Runs a closure with the store and the clock's `now`, read once, inside the atomic step.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Store, TimestampMs) -> Result<T, EngineError> + Send + 'static,
    {
        let clock: Arc<dyn Clock> = self.runner.clock().clone();
        self.runner.run(move |s| f(s, clock.now_ms())).await
    }
}

#[async_trait]
impl<R: StoreRunner> EngineBackend for Engine<R> {
    fn backend_tag(&self) -> BackendTag {
        self.runner.tag()
    }

    fn capabilities(&self) -> Capabilities {
        self.runner.capabilities()
    }

    async fn server_time_ms(&self) -> Result<TimestampMs, EngineError> {
        Ok(self.runner.clock().now_ms())
    }

    fn sim_clock(&self) -> Option<ff_core::SimClock> {
        self.runner.clock().as_sim().cloned()
    }

    fn partition_config(&self) -> ff_core::PartitionConfig {
        self.runner.partition_config()
    }

    async fn create_execution(
        &self,
        args: CreateExecutionArgs,
    ) -> Result<CreateExecutionOutcome, EngineError> {
        self.with_store(move |s, now| execution::create_execution(s, now, &args)).await
    }

    async fn claim_execution(&self, args: ClaimExecutionArgs) -> Result<ClaimedExecution, EngineError> {
        let tag = self.runner.tag();
        self.with_store(move |s, now| execution::claim_execution(s, now, tag, &args)).await
    }

    async fn complete_execution(&self, args: CompleteExecutionArgs) -> Result<CompleteOutcome, EngineError> {
        self.with_store(move |s, now| execution::complete_execution(s, now, &args)).await
    }

    async fn cancel_execution(&self, args: CancelExecutionArgs) -> Result<CancelOutcome, EngineError> {
        self.with_store(move |s, now| lifecycle::cancel_execution(s, now, &args)).await
    }

    async fn delay_execution(&self, args: DelayExecutionArgs) -> Result<TimestampMs, EngineError> {
        self.with_store(move |s, now| lifecycle::delay_execution(s, now, &args)).await
    }

    async fn move_to_waiting_children(&self, args: MoveToWaitingChildrenArgs) -> Result<(), EngineError> {
        self.with_store(move |s, now| lifecycle::move_to_waiting_children(s, now, &args)).await
    }

    async fn fail_execution(&self, args: FailExecutionArgs) -> Result<FailOutcome, EngineError> {
        self.with_store(move |s, now| execution::fail_execution(s, now, &args)).await
    }

    async fn reclaim_execution(
        &self,
        args: ReclaimExecutionArgs,
    ) -> Result<ReclaimExecutionOutcome, EngineError> {
        let tag = self.runner.tag();
        self.with_store(move |s, now| lifecycle::reclaim_execution(s, now, tag, &args)).await
    }

    async fn expire_execution(
        &self,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<ExpireOutcome, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, now| lifecycle::expire_execution(s, now, &id, phase)).await
    }

    async fn set_execution_tags(&self, args: SetExecutionTagsArgs) -> Result<usize, EngineError> {
        self.with_store(move |s, now| lifecycle::set_execution_tags(s, now, &args)).await
    }

    async fn replay_execution(&self, execution_id: &ExecutionId) -> Result<ReplayOutcome, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, now| lifecycle::replay_execution(s, now, &id)).await
    }

    async fn renew_lease(&self, args: RenewLeaseArgs) -> Result<LeaseRenewal, EngineError> {
        self.with_store(move |s, now| lease::renew_lease(s, now, &args)).await
    }

    async fn mark_lease_expired_if_due(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<MarkLeaseExpiredOutcome, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, now| lease::mark_lease_expired_if_due(s, now, &id)).await
    }

    async fn revoke_lease(&self, args: RevokeLeaseArgs) -> Result<RevokeLeaseOutcome, EngineError> {
        self.with_store(move |s, now| lease::revoke_lease(s, now, &args)).await
    }

    async fn list_expired_leases(
        &self,
        args: ListExpiredLeasesArgs,
    ) -> Result<ExpiredLeasesPage, EngineError> {
        self.with_store(move |s, now| lease::list_expired_leases(s, now, &args)).await
    }

    async fn issue_claim_grant(
        &self,
        args: IssueClaimGrantArgs,
    ) -> Result<IssueClaimGrantOutcome, EngineError> {
        self.with_store(move |s, now| scheduling::issue_claim_grant(s, now, &args)).await
    }

    async fn change_priority(&self, args: ChangePriorityArgs) -> Result<PriorityChange, EngineError> {
        self.with_store(move |s, now| scheduling::change_priority(s, now, &args)).await
    }

    async fn update_progress(&self, args: UpdateProgressArgs) -> Result<(), EngineError> {
        self.with_store(move |s, now| scheduling::update_progress(s, now, &args)).await
    }

    async fn promote_delayed(
        &self,
        lane_id: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<PromoteOutcome, EngineError> {
        let (lane, id) = (lane_id.clone(), execution_id.clone());
        self.with_store(move |s, now| scheduling::promote_delayed(s, now, &lane, &id)).await
    }

    async fn issue_reclaim_grant(
        &self,
        args: IssueReclaimGrantArgs,
    ) -> Result<IssueReclaimGrantOutcome, EngineError> {
        self.with_store(move |s, now| scheduling::issue_reclaim_grant(s, now, &args)).await
    }

    async fn claim_resumed_execution(
        &self,
        args: ClaimResumedExecutionArgs,
    ) -> Result<ClaimedExecution, EngineError> {
        let tag = self.runner.tag();
        self.with_store(move |s, now| lifecycle::claim_resumed_execution(s, now, tag, &args)).await
    }

    async fn issue_grant_and_claim(
        &self,
        args: IssueGrantAndClaimArgs,
    ) -> Result<ClaimGrantOutcome, EngineError> {
        self.with_store(move |s, now| lifecycle::issue_grant_and_claim(s, now, &args)).await
    }

    async fn block_execution_for_admission(&self, args: BlockExecutionArgs) -> Result<(), EngineError> {
        self.with_store(move |s, now| scheduling::block_execution_for_admission(s, now, &args)).await
    }

    async fn unblock_execution(&self, args: UnblockExecutionArgs) -> Result<(), EngineError> {
        self.with_store(move |s, now| scheduling::unblock_execution(s, now, &args)).await
    }

    async fn scan_eligible_executions(
        &self,
        args: ScanEligibleArgs,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        self.with_store(move |s, _| scheduling::scan_eligible(s, &args)).await
    }

    async fn register_worker(&self, args: RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, EngineError> {
        self.with_store(move |s, now| worker::register_worker(s, now, &args)).await
    }

    async fn heartbeat_worker(&self, args: HeartbeatWorkerArgs) -> Result<HeartbeatOutcome, EngineError> {
        self.with_store(move |s, now| worker::heartbeat_worker(s, now, &args)).await
    }

    async fn mark_worker_dead(&self, args: MarkWorkerDeadArgs) -> Result<MarkWorkerDeadOutcome, EngineError> {
        self.with_store(move |s, now| worker::mark_worker_dead(s, now, &args)).await
    }

    async fn list_workers(&self, args: ListWorkersArgs) -> Result<WorkersPage, EngineError> {
        self.with_store(move |s, now| worker::list_workers(s, now, &args)).await
    }

    async fn describe_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Option<ExecutionSnapshot>, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, now| reads::describe_execution(s, now, &id)).await
    }

    async fn read_execution_context(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExecutionContext, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, _| reads::read_execution_context(s, &id)).await
    }

    async fn get_execution_result(&self, execution_id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, _| reads::get_execution_result(s, &id)).await
    }

    async fn get_execution_tag(
        &self,
        execution_id: &ExecutionId,
        key: &str,
    ) -> Result<Option<String>, EngineError> {
        let (id, key) = (execution_id.clone(), key.to_owned());
        self.with_store(move |s, _| reads::get_execution_tag(s, &id, &key)).await
    }

    async fn read_lease_history(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<LeaseHistoryEntry>, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, _| s.lease_events(&id)).await
    }

    async fn read_completions(&self, after: u64, limit: usize) -> Result<Vec<CompletionEvent>, EngineError> {
        let limit = limit.clamp(1, LIST_LIMIT_MAX);
        self.with_store(move |s, _| s.completions_after(after, limit)).await
    }

    async fn list_executions(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let limit = limit.clamp(1, LIST_LIMIT_MAX);
        self.with_store(move |s, _| reads::list_executions(s, partition, after.as_ref(), limit)).await
    }

    async fn suspend_by_triple(&self, args: SuspendByTripleArgs) -> Result<SuspendOutcome, EngineError> {
        let tag = self.runner.tag();
        self.with_store(move |s, now| suspension::suspend(s, now, tag, &args)).await
    }

    async fn create_pending_waitpoint(
        &self,
        args: CreateWaitpointArgs,
    ) -> Result<PendingWaitpoint, EngineError> {
        self.with_store(move |s, now| suspension::create_pending_waitpoint(s, now, &args)).await
    }

    async fn close_waitpoint(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let (id, wp, reason) = (execution_id.clone(), *waitpoint_id, reason.to_owned());
        self.with_store(move |s, now| suspension::close_waitpoint(s, now, &id, &wp, &reason)).await
    }

    async fn deliver_signal(&self, args: DeliverSignalArgs) -> Result<DeliverSignalOutcome, EngineError> {
        self.with_store(move |s, now| suspension::deliver_signal(s, now, &args)).await
    }

    async fn resume_execution(&self, args: ResumeExecutionArgs) -> Result<ResumeOutcome, EngineError> {
        self.with_store(move |s, now| suspension::resume_execution(s, now, &args)).await
    }

    async fn expire_suspension(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<ExpireSuspensionOutcome, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, now| suspension::expire_suspension(s, now, &id)).await
    }

    async fn read_waitpoint_token(&self, waitpoint_id: &WaitpointId) -> Result<Option<String>, EngineError> {
        let wp = *waitpoint_id;
        self.with_store(move |s, _| suspension::read_waitpoint_token(s, &wp)).await
    }

    async fn observe_execution_signals(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<Vec<ResumeSignal>, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, _| suspension::observe_signals(s, &id)).await
    }

    async fn list_pending_waitpoints(
        &self,
        execution_id: &ExecutionId,
        after: Option<WaitpointId>,
        limit: usize,
    ) -> Result<(Vec<PendingWaitpointInfo>, Option<WaitpointId>), EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, _| suspension::list_pending_waitpoints(s, &id, after.as_ref(), limit)).await
    }

    async fn list_suspended(
        &self,
        partition: u16,
        after: Option<ExecutionId>,
        limit: usize,
    ) -> Result<(Vec<SuspendedExecutionEntry>, Option<ExecutionId>), EngineError> {
        self.with_store(move |s, _| suspension::list_suspended(s, partition, after.as_ref(), limit)).await
    }

    async fn seed_waitpoint_hmac_secret(
        &self,
        kid: &str,
        secret_hex: &str,
    ) -> Result<SeedOutcome, EngineError> {
        let (k, secret) = (kid.to_owned(), secret_hex.to_owned());
        let out = self.with_store(move |s, _| suspension::seed_hmac_secret(s, &k, &secret)).await?;
        SeedOutcome::aggregate(kid, &[out])
    }

    async fn rotate_waitpoint_hmac_secret_all(
        &self,
        new_kid: &str,
        new_secret_hex: &str,
        grace_ms: u64,
    ) -> Result<Vec<(u16, Result<RotateOutcome, EngineError>)>, EngineError> {
        let (kid, secret) = (new_kid.to_owned(), new_secret_hex.to_owned());
        let r = self
            .with_store(move |s, now| suspension::rotate_hmac_secret(s, now, &kid, &secret, grace_ms))
            .await;
        match r {
            Err(e @ EngineError::Transport { .. }) => Err(e),
            other => Ok(vec![(0, other)]),
        }
    }

    async fn list_waitpoint_hmac_kids(&self) -> Result<(Option<String>, Vec<KidInfo>), EngineError> {
        self.with_store(move |s, now| suspension::list_hmac_kids(s, now)).await
    }

    async fn create_flow(&self, args: CreateFlowArgs) -> Result<CreateFlowOutcome, EngineError> {
        self.with_store(move |s, now| flow::create_flow(s, now, &args)).await
    }

    async fn add_execution_to_flow(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<AddToFlowOutcome, EngineError> {
        let (f, id) = (*flow_id, execution_id.clone());
        self.with_store(move |s, now| flow::add_execution_to_flow(s, now, &f, &id)).await
    }

    async fn stage_dependency_edge(&self, args: StageEdgeArgs) -> Result<(EdgeId, u64), EngineError> {
        self.with_store(move |s, now| flow::stage_dependency_edge(s, now, &args)).await
    }

    async fn set_edge_group_policy(
        &self,
        flow_id: &FlowId,
        downstream: &ExecutionId,
        policy: EdgeDependencyPolicy,
    ) -> Result<bool, EngineError> {
        let (f, d) = (*flow_id, downstream.clone());
        self.with_store(move |s, now| flow::set_edge_group_policy(s, now, &f, &d, policy)).await
    }

    async fn apply_dependency_to_child(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
    ) -> Result<Option<u64>, EngineError> {
        let (f, e) = (*flow_id, *edge_id);
        self.with_store(move |s, now| flow::apply_dependency_to_child(s, now, &f, &e)).await
    }

    async fn resolve_dependency(
        &self,
        flow_id: &FlowId,
        edge_id: &EdgeId,
        upstream_outcome: ff_core::TerminalOutcome,
    ) -> Result<ResolveDependencyOutcome, EngineError> {
        let (f, e) = (*flow_id, *edge_id);
        self.with_store(move |s, now| flow::resolve_dependency(s, now, &f, &e, upstream_outcome)).await
    }

    async fn cancel_flow_header(
        &self,
        flow_id: &FlowId,
        reason: &str,
        policy: CancelFlowPolicy,
        grace_ms: u64,
    ) -> Result<CancelFlowHeader, EngineError> {
        let (f, r) = (*flow_id, reason.to_owned());
        self.with_store(move |s, now| flow::cancel_flow_header(s, now, &f, &r, policy, grace_ms)).await
    }

    async fn ack_cancel_member(
        &self,
        flow_id: &FlowId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        let (f, id) = (*flow_id, execution_id.clone());
        self.with_store(move |s, _| flow::ack_cancel_member(s, &f, &id)).await
    }

    async fn promote_blocked_to_eligible(&self, execution_id: &ExecutionId) -> Result<(), EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, now| flow::promote_blocked_to_eligible(s, now, &id)).await
    }

    async fn set_flow_tags(
        &self,
        flow_id: &FlowId,
        tags: Vec<(String, String)>,
    ) -> Result<usize, EngineError> {
        let f = *flow_id;
        self.with_store(move |s, now| flow::set_flow_tags(s, now, &f, &tags)).await
    }

    async fn describe_flow(&self, flow_id: &FlowId) -> Result<Option<FlowSnapshot>, EngineError> {
        let f = *flow_id;
        self.with_store(move |s, _| flow::describe_flow(s, &f)).await
    }

    async fn evaluate_flow_eligibility(
        &self,
        execution_id: &ExecutionId,
    ) -> Result<FlowEligibility, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, _| flow::evaluate_flow_eligibility(s, &id)).await
    }

    async fn create_budget(&self, args: CreateBudgetArgs) -> Result<CreateBudgetOutcome, EngineError> {
        self.with_store(move |s, now| admission::create_budget(s, now, &args)).await
    }

    async fn report_usage_and_check(&self, args: ReportUsageArgs) -> Result<ReportUsageResult, EngineError> {
        self.with_store(move |s, now| admission::report_usage(s, now, &args)).await
    }

    async fn record_spend(&self, args: RecordSpendArgs) -> Result<ReportUsageResult, EngineError> {
        self.with_store(move |s, now| admission::record_spend(s, now, &args)).await
    }

    async fn release_budget(
        &self,
        budget_id: &BudgetId,
        execution_id: &ExecutionId,
    ) -> Result<bool, EngineError> {
        let (b, e) = (*budget_id, execution_id.clone());
        self.with_store(move |s, now| admission::release_budget(s, now, &b, &e)).await
    }

    async fn reset_budget(&self, budget_id: &BudgetId) -> Result<Option<TimestampMs>, EngineError> {
        let b = *budget_id;
        self.with_store(move |s, now| admission::reset_budget(s, now, &b)).await
    }

    async fn get_budget_status(&self, budget_id: &BudgetId) -> Result<BudgetStatus, EngineError> {
        let b = *budget_id;
        self.with_store(move |s, _| admission::get_budget_status(s, &b)).await
    }

    async fn create_quota_policy(
        &self,
        args: CreateQuotaPolicyArgs,
    ) -> Result<CreateQuotaOutcome, EngineError> {
        self.with_store(move |s, now| admission::create_quota_policy(s, now, &args)).await
    }

    async fn check_admission_and_record(
        &self,
        args: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError> {
        self.with_store(move |s, now| admission::check_admission_and_record(s, now, &args)).await
    }

    async fn release_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        let (q, e) = (*quota_policy_id, execution_id.clone());
        self.with_store(move |s, now| admission::release_admission(s, now, &q, &e)).await
    }

    async fn read_quota_policy_limits(
        &self,
        quota_policy_id: &QuotaPolicyId,
    ) -> Result<Option<QuotaPolicyLimits>, EngineError> {
        let q = *quota_policy_id;
        self.with_store(move |s, _| admission::read_quota_policy_limits(s, &q)).await
    }

    async fn append_stream_frame(&self, args: AppendFrameArgs) -> Result<AppendFrameOutcome, EngineError> {
        let out = self.with_store(move |s, now| streams::append_frame(s, now, &args)).await;
        if out.is_ok() {
            self.appended.notify_waiters();
        }
        out
    }

    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, now| {
            streams::read_stream(s, now, &id, attempt_index, &from, &to, count_limit)
        })
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
        if block_ms > ff_core::stream::TAIL_BLOCK_MS_MAX {
            return Err(EngineError::invalid_input("block_ms over 30000"));
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(block_ms);
        loop {
            // Register interest before reading, so an append between the read
            // and the wait still wakes this tail.
            let woken = self.appended.notified();
            let (id, after) = (execution_id.clone(), after.clone());
            let page = self
                .with_store(move |s, now| {
                    streams::tail_once(s, now, &id, attempt_index, &after, count_limit, visibility)
                })
                .await?;
            if !page.frames.is_empty() || page.is_closed() || block_ms == 0 {
                return Ok(page);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Ok(page);
            }
        }
    }

    async fn read_summary(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
    ) -> Result<Option<SummaryDocument>, EngineError> {
        let id = execution_id.clone();
        self.with_store(move |s, _| streams::read_summary(s, &id, attempt_index)).await
    }

    async fn run_scanner(
        &self,
        kind: ScannerKind,
        partition: u16,
        batch: usize,
    ) -> Result<ScanReport, EngineError> {
        self.with_store(move |s, now| scanners::run_pass(s, now, kind, partition, batch)).await
    }
}
