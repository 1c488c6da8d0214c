//! `ClaimedTask`: one leased attempt, its auto-renewal and its concurrency
//! permit (spec 03 §9.3–9.5).
//!
//! Terminal operations consume the task. Renewal is stopped before the
//! terminal call is sent, so a renewal can never race the op that ends the
//! lease; dropping the task stops renewal and releases the permit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use ff_core::admission::{ReportUsageArgs, ReportUsageResult};
use ff_core::contracts::{ClaimedExecution, FailOutcome, FailureClass, FailureReason, LeaseRenewal};
use ff_core::error::{ContentionKind, StateKind};
use ff_core::stream::{AppendFrameOutcome, Frame, FrameKind};
use ff_core::suspension::{
    PendingWaitpoint, ResumeCondition, ResumePolicy, ResumeSignal, SuspendArgs, SuspendOutcome,
    SuspendOutcomeDetails, SuspensionReasonCode, TimeoutBehavior, WaitpointBinding,
};
use ff_core::{
    AttemptId, AttemptIndex, BudgetId, EngineBackend, EngineError, ExecutionId, Handle, LaneId, LeaseEpoch,
    LeaseId, SuspensionId, TimestampMs, WaitpointId,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use crate::error::SdkError;

/// Consecutive renewal failures after which the lease counts as unhealthy.
pub const RENEWAL_FAILURES_UNHEALTHY: u32 = 3;

/// Shared counters of one task's renewal loop; clone it to watch the loop from outside.
#[derive(Debug, Clone, Default)]
pub struct RenewalMonitor {
    renewals: Arc<AtomicU64>,
    consecutive_failures: Arc<AtomicU32>,
    stopped: Arc<AtomicBool>,
}

impl RenewalMonitor {
    /// Successful renewals so far.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Acquire)
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Acquire)
    }

    /// Whether the loop has stopped (terminal op, drop, or a lease-ending error).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// What the claim produced, before it becomes a task.
pub(crate) struct TaskParts {
    pub claimed: ClaimedExecution,
    pub lane_id: LaneId,
    pub lease_ttl_ms: u64,
    pub input_payload: Vec<u8>,
    pub execution_kind: String,
    pub tags: BTreeMap<String, String>,
}

/// A claimed, leased attempt. Consume it with a terminal op.
pub struct ClaimedTask {
    backend: Arc<dyn EngineBackend>,
    handle: Handle,
    execution_id: ExecutionId,
    attempt_index: AttemptIndex,
    attempt_id: AttemptId,
    lease_id: LeaseId,
    lease_epoch: LeaseEpoch,
    lane_id: LaneId,
    input_payload: Vec<u8>,
    execution_kind: String,
    tags: BTreeMap<String, String>,
    monitor: RenewalMonitor,
    renewal: Option<JoinHandle<()>>,
    renewal_interval: Duration,
    finished: bool,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for ClaimedTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedTask")
            .field("execution_id", &self.execution_id)
            .field("attempt_index", &self.attempt_index)
            .field("lease_epoch", &self.lease_epoch)
            .finish_non_exhaustive()
    }
}

/// A task parked by `suspend`: its lease is released.
#[derive(Debug, Clone)]
pub struct SuspendedTask {
    /// The parked attempt's handle (no lease).
    pub handle: Option<Handle>,
    /// What was bound, including the waitpoint token to hand to the signaller.
    pub details: SuspendOutcomeDetails,
}

/// What `try_suspend` produced.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrySuspendOutcome {
    /// Parked; the lease is released.
    Suspended(SuspendedTask),
    /// Buffered signals already satisfied the condition; the task is handed back with its lease.
    AlreadySatisfied {
        /// The task, still leased and renewing.
        task: Box<ClaimedTask>,
        /// What was bound (the waitpoint is now closed as satisfied).
        details: SuspendOutcomeDetails,
    },
}

/// The parts of a suspend request shared by `suspend` and `try_suspend*`.
struct SuspendRequest {
    reason_code: SuspensionReasonCode,
    resume_condition: ResumeCondition,
    timeout: Option<(TimestampMs, TimeoutBehavior)>,
    resume_policy: ResumePolicy,
}

impl SuspendRequest {
    /// Builds the backend args; no timeout means behaviour `Fail`.
    fn into_args(self, binding: WaitpointBinding) -> SuspendArgs {
        let mut args = SuspendArgs::new(
            SuspensionId(uuid::Uuid::new_v4()),
            binding,
            self.resume_condition,
            self.reason_code,
        );
        args.resume_policy = self.resume_policy;
        if let Some((at, behavior)) = self.timeout {
            args = args.with_timeout(at, behavior);
        }
        args
    }

    /// A fresh waitpoint keyed by the condition's (first) waitpoint key.
    fn fresh_binding(&self) -> WaitpointBinding {
        let waitpoint_key = self
            .resume_condition
            .referenced_waitpoint_keys()
            .into_iter()
            .next()
            .unwrap_or_else(|| format!("wpk:{}", uuid::Uuid::new_v4()));
        WaitpointBinding::Fresh { waitpoint_id: WaitpointId(uuid::Uuid::new_v4()), waitpoint_key }
    }
}

impl ClaimedTask {
    /// Wraps a claim and starts auto-renewal at a third of the lease TTL.
    pub(crate) fn start(
        backend: Arc<dyn EngineBackend>,
        parts: TaskParts,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let monitor = RenewalMonitor::default();
        let c = parts.claimed;
        let renewal_interval = Duration::from_millis((parts.lease_ttl_ms / 3).max(1));
        let renewal =
            tokio::spawn(renew_loop(backend.clone(), c.handle.clone(), renewal_interval, monitor.clone()));
        Self {
            backend,
            handle: c.handle,
            execution_id: c.execution_id,
            attempt_index: c.attempt_index,
            attempt_id: c.attempt_id,
            lease_id: c.lease_id,
            lease_epoch: c.lease_epoch,
            lane_id: parts.lane_id,
            input_payload: parts.input_payload,
            execution_kind: parts.execution_kind,
            tags: parts.tags,
            monitor,
            renewal: Some(renewal),
            renewal_interval,
            finished: false,
            _permit: permit,
        }
    }

    /// The execution.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.execution_id
    }

    /// The 0-based attempt index.
    pub fn attempt_index(&self) -> AttemptIndex {
        self.attempt_index
    }

    /// The attempt id.
    pub fn attempt_id(&self) -> AttemptId {
        self.attempt_id
    }

    /// The lease id.
    pub fn lease_id(&self) -> LeaseId {
        self.lease_id
    }

    /// The lease epoch.
    pub fn lease_epoch(&self) -> LeaseEpoch {
        self.lease_epoch
    }

    /// The lane the task was claimed on.
    pub fn lane_id(&self) -> &LaneId {
        &self.lane_id
    }

    /// The input bytes.
    pub fn input_payload(&self) -> &[u8] {
        &self.input_payload
    }

    /// The handler label.
    pub fn execution_kind(&self) -> &str {
        &self.execution_kind
    }

    /// The caller tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// The backend handle of the attempt.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Whether fewer than 3 renewals in a row have failed.
    pub fn is_lease_healthy(&self) -> bool {
        self.monitor.consecutive_failures() < RENEWAL_FAILURES_UNHEALTHY
    }

    /// Renewal failures since the last success.
    pub fn consecutive_renewal_failures(&self) -> u32 {
        self.monitor.consecutive_failures()
    }

    /// A watcher of the renewal loop that outlives the task.
    pub fn renewal_monitor(&self) -> RenewalMonitor {
        self.monitor.clone()
    }

    /// Completes the attempt with an optional result; errors: `Engine`.
    pub async fn complete(mut self, result: Option<Vec<u8>>) -> Result<(), SdkError> {
        self.stop_renewal();
        let outcome = self.backend.complete(&self.handle, result).await;
        self.land(outcome)
    }

    /// Fails the attempt; `category` picks the class (`transient`, `permanent`, `infra_crash`,
    /// `timeout`, `cancelled`; anything else is transient). Errors: `Engine`.
    pub async fn fail(mut self, reason: &str, category: &str) -> Result<FailOutcome, SdkError> {
        self.stop_renewal();
        let class = match category {
            "permanent" => FailureClass::Permanent,
            "infra_crash" => FailureClass::InfraCrash,
            "timeout" => FailureClass::Timeout,
            "cancelled" => FailureClass::Cancelled,
            _ => FailureClass::Transient,
        };
        let failure =
            FailureReason { message: reason.to_owned(), detail: Some(category.as_bytes().to_vec()) };
        let outcome = self.backend.fail(&self.handle, failure, class).await;
        self.land(outcome)
    }

    /// Cancels the attempt as the lease holder; errors: `Engine`.
    pub async fn cancel(mut self, reason: &str) -> Result<(), SdkError> {
        self.stop_renewal();
        let outcome = self.backend.cancel(&self.handle, reason).await;
        self.land(outcome)
    }

    /// Parks the execution until `until`, releasing the lease; errors: `Engine`.
    pub async fn delay_execution(mut self, until: TimestampMs) -> Result<(), SdkError> {
        self.stop_renewal();
        let outcome = self.backend.delay(&self.handle, until).await;
        self.land(outcome)
    }

    /// Parks the execution until its children finish; errors: `Engine`.
    pub async fn move_to_waiting_children(mut self) -> Result<(), SdkError> {
        self.stop_renewal();
        let outcome = self.backend.wait_children(&self.handle).await;
        self.land(outcome)
    }

    /// Suspends on a fresh waitpoint keyed by the condition's (first) waitpoint key.
    ///
    /// No timeout means behaviour `Fail`. Errors: `Engine`, including
    /// `State(AlreadySatisfied)` when buffered signals already satisfied it (the task is dropped).
    pub async fn suspend(
        self,
        reason_code: SuspensionReasonCode,
        resume_condition: ResumeCondition,
        timeout: Option<(TimestampMs, TimeoutBehavior)>,
        resume_policy: ResumePolicy,
    ) -> Result<SuspendedTask, SdkError> {
        match self.try_suspend(reason_code, resume_condition, timeout, resume_policy).await? {
            TrySuspendOutcome::Suspended(parked) => Ok(parked),
            TrySuspendOutcome::AlreadySatisfied { mut task, .. } => {
                // The lease is still held; it lapses server-side once the task is dropped.
                task.stop_renewal();
                task.finished = true;
                Err(EngineError::State(StateKind::AlreadySatisfied).into())
            }
        }
    }

    /// Like `suspend`, but an already-satisfied condition hands the leased task back.
    ///
    /// Errors: `Engine`.
    pub async fn try_suspend(
        self,
        reason_code: SuspensionReasonCode,
        resume_condition: ResumeCondition,
        timeout: Option<(TimestampMs, TimeoutBehavior)>,
        resume_policy: ResumePolicy,
    ) -> Result<TrySuspendOutcome, SdkError> {
        let request = SuspendRequest { reason_code, resume_condition, timeout, resume_policy };
        let binding = request.fresh_binding();
        self.suspend_with(request.into_args(binding)).await
    }

    /// `try_suspend` activating a pending waitpoint, whose buffered signals may satisfy it at once.
    ///
    /// Errors: `Engine` (`WaitpointNotFound`, `WaitpointNotPending`, an expired waitpoint, …).
    pub async fn try_suspend_on_pending(
        self,
        pending: &PendingWaitpoint,
        reason_code: SuspensionReasonCode,
        resume_condition: ResumeCondition,
        timeout: Option<(TimestampMs, TimeoutBehavior)>,
        resume_policy: ResumePolicy,
    ) -> Result<TrySuspendOutcome, SdkError> {
        let request = SuspendRequest { reason_code, resume_condition, timeout, resume_policy };
        let binding = WaitpointBinding::UsePending { waitpoint_id: pending.waitpoint_id };
        self.suspend_with(request.into_args(binding)).await
    }

    /// Sends the suspend with renewal paused; restarts renewal when the task is handed back.
    async fn suspend_with(mut self, args: SuspendArgs) -> Result<TrySuspendOutcome, SdkError> {
        self.stop_renewal();
        match self.backend.suspend(&self.handle, args).await {
            Ok(SuspendOutcome::Suspended { details, handle }) => {
                self.finished = true;
                Ok(TrySuspendOutcome::Suspended(SuspendedTask { handle, details }))
            }
            Ok(SuspendOutcome::AlreadySatisfied { details }) => {
                self.restart_renewal();
                Ok(TrySuspendOutcome::AlreadySatisfied { task: Box::new(self), details })
            }
            Ok(other) => {
                self.finished = true;
                Err(SdkError::config("suspend", None, format!("unknown suspend outcome: {other:?}")))
            }
            Err(e) => {
                self.finished = !is_transport(&e);
                Err(e.into())
            }
        }
    }

    /// Creates a pending waitpoint under the lease; signals sent to it are buffered until a
    /// suspend activates it. Errors: `Engine`.
    pub async fn create_pending_waitpoint(
        &self,
        waitpoint_key: &str,
        expires_in_ms: u64,
    ) -> Result<PendingWaitpoint, SdkError> {
        let waitpoint_id = WaitpointId(uuid::Uuid::new_v4());
        Ok(self.backend.create_waitpoint(&self.handle, waitpoint_id, waitpoint_key, expires_in_ms).await?)
    }

    /// Reports custom-dimension usage to a budget; a hard breach is an `Ok` value (nothing
    /// applied, the task keeps running). An empty dedup key means none. Errors: `Engine`.
    pub async fn report_usage(
        &self,
        budget_id: BudgetId,
        dimensions: &[(&str, u64)],
        dedup_key: Option<&str>,
    ) -> Result<ReportUsageResult, SdkError> {
        let args = ReportUsageArgs {
            budget_id,
            dimensions: dimensions.iter().map(|(d, delta)| ((*d).to_owned(), *delta)).collect(),
            dedup_key: dedup_key.filter(|k| !k.is_empty()).map(str::to_owned),
        };
        Ok(self.backend.report_usage_and_check(args).await?)
    }

    /// Writes progress (percent and/or message) under the lease; errors: `Engine`.
    pub async fn update_progress(
        &self,
        percent: Option<u8>,
        message: Option<String>,
    ) -> Result<(), SdkError> {
        Ok(self.backend.progress(&self.handle, percent, message).await?)
    }

    /// Appends a durable event frame to the attempt's stream; `metadata` becomes the correlation id.
    ///
    /// Errors: `Engine`.
    pub async fn append_frame(
        &self,
        frame_type: &str,
        payload: Vec<u8>,
        metadata: Option<String>,
    ) -> Result<AppendFrameOutcome, SdkError> {
        let mut frame = Frame::new(payload, FrameKind::Event).with_frame_type(frame_type);
        if let Some(m) = metadata {
            frame = frame.with_correlation_id(m);
        }
        Ok(self.backend.append_frame(&self.handle, frame).await?)
    }

    /// The signals that satisfied the attempt's last suspension; errors: `Engine`.
    pub async fn resume_signals(&self) -> Result<Vec<ResumeSignal>, SdkError> {
        Ok(self.backend.observe_signals(&self.handle).await?)
    }

    /// Renews the lease now (besides the automatic loop); errors: `Engine`.
    pub async fn renew_lease(&self) -> Result<LeaseRenewal, SdkError> {
        Ok(self.backend.renew(&self.handle).await?)
    }

    /// Starts a new renewal loop after a suspend that handed the task back.
    fn restart_renewal(&mut self) {
        self.monitor.stopped.store(false, Ordering::Release);
        let renewal = renew_loop(
            self.backend.clone(),
            self.handle.clone(),
            self.renewal_interval,
            self.monitor.clone(),
        );
        self.renewal = Some(tokio::spawn(renewal));
    }

    fn stop_renewal(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
        self.monitor.stopped.store(true, Ordering::Release);
    }

    /// Records whether a terminal call reached the backend (anything but a transport failure).
    fn land<T>(&mut self, outcome: Result<T, EngineError>) -> Result<T, SdkError> {
        match outcome {
            Ok(v) => {
                self.finished = true;
                Ok(v)
            }
            Err(e) => {
                self.finished = !is_transport(&e);
                Err(e.into())
            }
        }
    }
}

impl Drop for ClaimedTask {
    fn drop(&mut self) {
        self.stop_renewal();
        if !self.finished {
            tracing::warn!(
                execution_id = %self.execution_id,
                "claimed task dropped without a terminal operation; its lease will expire"
            );
        }
    }
}

fn is_transport(e: &EngineError) -> bool {
    matches!(e.root(), EngineError::Transport { .. } | EngineError::Timeout { .. })
}

/// Whether a renewal error means the lease is gone for good.
fn ends_lease(e: &EngineError) -> bool {
    matches!(
        e.root(),
        EngineError::State(StateKind::StaleLease | StateKind::LeaseExpired | StateKind::LeaseRevoked)
            | EngineError::Contention(ContentionKind::ExecutionNotActive { .. })
            | EngineError::NotFound { .. }
    )
}

/// Renews every `interval` (missed ticks skipped) until stopped or the lease is gone.
async fn renew_loop(
    backend: Arc<dyn EngineBackend>,
    handle: Handle,
    interval: Duration,
    monitor: RenewalMonitor,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first tick completes at once; the first renewal is one interval after the claim.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if monitor.is_stopped() {
            return;
        }
        match backend.renew(&handle).await {
            Ok(_) => {
                monitor.consecutive_failures.store(0, Ordering::Release);
                monitor.renewals.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                monitor.consecutive_failures.fetch_add(1, Ordering::AcqRel);
                if ends_lease(&e) {
                    tracing::warn!(error = %e, "lease renewal stopped: the lease is gone");
                    monitor.stopped.store(true, Ordering::Release);
                    return;
                }
                tracing::debug!(error = %e, "lease renewal failed; retrying next tick");
            }
        }
    }
}
