//! The logical records every store keeps (spec 01 §3.6–3.9), typed.

use std::collections::{BTreeMap, BTreeSet};

use ff_core::contracts::CapabilitySet;
use ff_core::state::{AttemptLifecycle, AttemptType, StateVector};
use ff_core::{
    AttemptId, AttemptIndex, ExecutionId, LaneId, LeaseEpoch, LeaseId, Namespace, TimestampMs, WorkerId,
    WorkerInstanceId,
};
use serde::{Deserialize, Serialize};

/// The authoritative execution record (`exec_core`); `None` reads back as "empty".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCore {
    /// Id (immutable).
    pub execution_id: ExecutionId,
    /// Namespace (immutable).
    pub namespace: Namespace,
    /// Submission lane (immutable); lane indexes derive from it.
    pub lane_id: LaneId,
    /// Lane passed by the most recent claim or reclaim.
    pub current_lane: LaneId,
    /// Handler label.
    pub execution_kind: String,
    /// Priority, 0..=9000.
    pub priority: i32,
    /// Free text.
    pub creator_identity: String,
    /// Flow membership.
    pub flow_id: Option<String>,
    /// Sorted CSV of required capabilities.
    pub required_capabilities: Option<String>,
    /// The state vector.
    pub state: StateVector,
    /// Attempts ever created; the next attempt index.
    pub total_attempt_count: u32,
    /// Latest attempt index; never cleared once set.
    pub current_attempt_index: Option<AttemptIndex>,
    /// Current attempt id; cleared when a retry is scheduled.
    pub current_attempt_id: Option<AttemptId>,
    /// Current lease id; cleared on release.
    pub current_lease_id: Option<LeaseId>,
    /// Latest lease epoch; monotonic.
    pub current_lease_epoch: LeaseEpoch,
    /// Holder's worker id.
    pub current_worker_id: Option<WorkerId>,
    /// Holder's instance id.
    pub current_worker_instance_id: Option<WorkerInstanceId>,
    /// Retries scheduled.
    pub retry_count: u32,
    /// Replays performed.
    pub replay_count: u32,
    /// Reclaims performed.
    pub lease_reclaim_count: u32,
    /// Creation time.
    pub created_at: TimestampMs,
    /// First claim time.
    pub started_at: Option<TimestampMs>,
    /// Terminal time.
    pub completed_at: Option<TimestampMs>,
    /// Last state transition.
    pub last_transition_at: TimestampMs,
    /// Last write.
    pub last_mutation_at: TimestampMs,
    /// Current lease acquisition time.
    pub lease_acquired_at: Option<TimestampMs>,
    /// Current lease expiry.
    pub lease_expires_at: Option<TimestampMs>,
    /// Last renewal.
    pub lease_last_renewed_at: Option<TimestampMs>,
    /// Advisory renewal deadline.
    pub lease_renewal_deadline: Option<TimestampMs>,
    /// When the lease was marked expired.
    pub lease_expired_at: Option<TimestampMs>,
    /// When the lease was revoked.
    pub lease_revoked_at: Option<TimestampMs>,
    /// Why the lease was revoked.
    pub lease_revoke_reason: Option<String>,
    /// Current delay target.
    pub delay_until: Option<TimestampMs>,
    /// Current suspension (chapter 02).
    pub current_suspension_id: Option<String>,
    /// Current waitpoint (chapter 02).
    pub current_waitpoint_id: Option<String>,
    /// Lineage for the next retry attempt.
    pub pending_retry_reason: Option<String>,
    /// Lineage for the next replay attempt.
    pub pending_replay_reason: Option<String>,
    /// Lineage for the next replay attempt.
    pub pending_replay_requested_by: Option<String>,
    /// Index the next attempt follows.
    pub pending_previous_attempt_index: Option<AttemptIndex>,
    /// Progress percent.
    pub progress_pct: Option<u8>,
    /// Progress message.
    pub progress_message: Option<String>,
    /// Progress time.
    pub progress_updated_at: Option<TimestampMs>,
    /// Failure text.
    pub failure_reason: Option<String>,
    /// Cancel reason.
    pub cancellation_reason: Option<String>,
    /// Cancel source.
    pub cancelled_by: Option<String>,
    /// Marker written by replay.
    pub pending_replay_attempt: bool,
    /// Last capability-mismatch rejection.
    pub last_capability_mismatch_at: Option<TimestampMs>,
    /// Last token verification failure (chapter 02).
    pub last_hmac_validation_failed_at: Option<TimestampMs>,
    /// Attached budgets (comma-separated).
    pub budget_ids: Option<String>,
    /// Attached quota policy.
    pub quota_policy_id: Option<String>,
}

/// One attempt (`ff:attempt:T:E:I`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt id.
    pub attempt_id: AttemptId,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Index.
    pub attempt_index: AttemptIndex,
    /// Why it exists.
    pub attempt_type: AttemptType,
    /// Its lifecycle.
    pub attempt_state: AttemptLifecycle,
    /// Creation time (= claim time).
    pub created_at: TimestampMs,
    /// Start time (= claim time).
    pub started_at: TimestampMs,
    /// Lease running it.
    pub lease_id: LeaseId,
    /// Epoch of that lease.
    pub lease_epoch: LeaseEpoch,
    /// Worker.
    pub worker_id: WorkerId,
    /// Instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Retry lineage.
    pub retry_reason: Option<String>,
    /// Lineage: the attempt this one follows.
    pub previous_attempt_index: Option<AttemptIndex>,
    /// Replay lineage.
    pub replay_reason: Option<String>,
    /// Replay lineage.
    pub replay_requested_by: Option<String>,
    /// Replay lineage.
    pub replayed_from_attempt_index: Option<AttemptIndex>,
    /// Reclaim lineage.
    pub reclaim_reason: Option<String>,
    /// End time.
    pub ended_at: Option<TimestampMs>,
    /// Failure text.
    pub failure_reason: Option<String>,
    /// Failure category.
    pub failure_category: Option<String>,
    /// Pause time.
    pub suspended_at: Option<TimestampMs>,
    /// Pause id (`worker_delay`, `waiting_children`, or a suspension id).
    pub suspension_id: Option<String>,
    /// Resume time.
    pub resumed_at: Option<TimestampMs>,
    /// Frozen attempt policy (flattened JSON).
    pub policy: BTreeMap<String, String>,
    /// Usage counters; `last_usage_report_seq` starts at 0.
    pub usage: BTreeMap<String, i64>,
}

/// The current lease (`lease:current`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Lease id.
    pub lease_id: LeaseId,
    /// Epoch.
    pub lease_epoch: LeaseEpoch,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Attempt.
    pub attempt_id: AttemptId,
    /// Worker.
    pub worker_id: WorkerId,
    /// Instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Acquisition time.
    pub acquired_at: TimestampMs,
    /// Expiry.
    pub expires_at: TimestampMs,
    /// Last renewal.
    pub last_renewed_at: TimestampMs,
    /// Advisory renewal deadline.
    pub renewal_deadline: TimestampMs,
    /// When the record itself lapses (set by renew: expiry + grace).
    pub record_expires_at: Option<TimestampMs>,
}

/// The single pending grant of an execution (`claim_grant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Grantee worker (the only enforced binding).
    pub worker_id: WorkerId,
    /// Grantee instance (audit).
    pub worker_instance_id: WorkerInstanceId,
    /// Lane (audit).
    pub lane_id: LaneId,
    /// Opaque (audit).
    pub capability_hash: String,
    /// Opaque (audit).
    pub route_snapshot_json: String,
    /// Opaque (audit).
    pub admission_summary: String,
    /// Issue time.
    pub created_at: TimestampMs,
    /// Lapse time; the grant is absent once `now > grant_expires_at`.
    pub grant_expires_at: TimestampMs,
}

impl GrantRecord {
    /// Whether the grant is still live at `now`.
    pub fn is_live(&self, now: TimestampMs) -> bool {
        now <= self.grant_expires_at
    }
}

/// Per-attempt stream meta (spec 02 §1.5), created on the first append.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamMeta {
    /// When the stream was closed.
    pub closed_at: Option<TimestampMs>,
    /// Why.
    pub closed_reason: Option<String>,
    /// The attempt id given at creation.
    pub attempt_id: Option<String>,
    /// Creation time.
    pub created_at: TimestampMs,
    /// Durable trim length given at creation.
    pub retention_maxlen: u64,
    /// Last entry id.
    pub last_sequence: Option<ff_core::stream::EntryId>,
    /// Lifetime appends (never decremented by trims).
    pub frame_count: u64,
    /// Sum of payload lengths.
    pub total_bytes: u64,
    /// Last append time.
    pub last_frame_at: TimestampMs,
    /// Whether a durable or summary frame was ever appended.
    pub has_durable_frame: bool,
    /// Best-effort append-rate estimate.
    pub ema_rate_hz: Option<f64>,
    /// Best-effort last append time.
    pub last_append_ts_ms: Option<TimestampMs>,
    /// Best-effort last trim length.
    pub maxlen_applied_last: Option<u64>,
    /// The stream data lapses after this instant (best-effort TTL).
    pub data_expires_at: Option<TimestampMs>,
}

/// One stored stream entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// Entry id.
    pub id: ff_core::stream::EntryId,
    /// Fields.
    pub fields: BTreeMap<String, String>,
}

/// An attempt's rolling summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    /// The JSON document text.
    pub document: String,
    /// Applied patches.
    pub version: u64,
    /// Last patch time.
    pub last_updated_ms: TimestampMs,
    /// First patch time.
    pub first_applied_ms: TimestampMs,
}

/// A worker instance's registration and liveness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Logical worker.
    pub worker_id: WorkerId,
    /// Lanes.
    pub lanes: BTreeSet<LaneId>,
    /// Capabilities.
    pub capabilities: CapabilitySet,
    /// Liveness TTL.
    pub liveness_ttl_ms: u64,
    /// First registration.
    pub registered_at_ms: TimestampMs,
    /// Last heartbeat.
    pub last_heartbeat_ms: TimestampMs,
    /// Liveness lapses after this instant.
    pub alive_until_ms: TimestampMs,
}

impl WorkerRecord {
    /// Whether the registration is live at `now`.
    pub fn is_live(&self, now: TimestampMs) -> bool {
        now <= self.alive_until_ms
    }
}

/// Opaque per-execution blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BlobKind {
    /// Input payload.
    Payload,
    /// Result payload.
    Result,
    /// Execution policy JSON as submitted.
    Policy,
}

impl BlobKind {
    /// Stable code: the `blobs.kind` column of the table-backed stores.
    pub fn code(self) -> i64 {
        match self {
            Self::Payload => 0,
            Self::Result => 1,
            Self::Policy => 2,
        }
    }
}

/// The lane indexes of spec 01 §3.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LaneIndex {
    /// Claimable, scored by priority.
    Eligible,
    /// Delayed, scored by eligible-at time.
    Delayed,
    /// Leased, scored by expiry at acquisition.
    Active,
    /// Terminal, scored by terminal time.
    Terminal,
    /// Waiting for dependencies.
    BlockedDependencies,
    /// Waiting for budget.
    BlockedBudget,
    /// Waiting for quota.
    BlockedQuota,
    /// Waiting for a capable worker.
    BlockedRoute,
    /// Paused by an operator.
    BlockedOperator,
    /// Suspended, scored by timeout.
    Suspended,
}

impl LaneIndex {
    /// Every lane index.
    pub const ALL: [LaneIndex; 10] = [
        Self::Eligible,
        Self::Delayed,
        Self::Active,
        Self::Terminal,
        Self::BlockedDependencies,
        Self::BlockedBudget,
        Self::BlockedQuota,
        Self::BlockedRoute,
        Self::BlockedOperator,
        Self::Suspended,
    ];

    /// The runnable indexes (eligible, delayed, five blocked).
    pub const RUNNABLE: [LaneIndex; 7] = [
        Self::Eligible,
        Self::Delayed,
        Self::BlockedDependencies,
        Self::BlockedBudget,
        Self::BlockedQuota,
        Self::BlockedRoute,
        Self::BlockedOperator,
    ];
}

/// A named index: an ordered set of `(score, member)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IndexKey {
    /// A lane index on a partition.
    Lane {
        /// Partition index.
        partition: u16,
        /// Lane.
        lane: LaneId,
        /// Which.
        kind: LaneIndex,
    },
    /// Leases by expiry.
    LeaseExpiry(u16),
    /// Executions leased by an instance (unordered; score 0).
    WorkerLeases(u16, WorkerInstanceId),
    /// Suspensions by timeout.
    SuspensionTimeout(u16),
    /// Attempts by timeout.
    AttemptTimeout(u16),
    /// Executions by deadline.
    ExecutionDeadline(u16),
    /// Every execution of the partition (score 0).
    AllExecutions(u16),
    /// An execution's attempts: member = index, score = creation time.
    AttemptsOf(ExecutionId),
    /// The lane registry (member = lane name, score 0).
    Lanes,
    /// Every waitpoint ever bound to an execution (score 0).
    WaitpointsOf(ExecutionId),
    /// A waitpoint's signal log: member = signal id, score = arrival sequence.
    WaitpointSignals(String),
    /// An execution's signals: member = signal id, score = acceptance time.
    SignalsOf(ExecutionId),
    /// Pending waitpoints by expiry.
    PendingWaitpointExpiry(u16),
    /// A quota policy's sliding window: member = execution id, score = admission time.
    QuotaWindow(String),
    /// Budgets with a periodic reset: member = budget id, score = next reset time.
    BudgetResets,
    /// Every flow (score 0).
    Flows,
    /// Every budget (score 0).
    BudgetPolicies,
    /// Every defined quota policy (score 0).
    QuotaPolicies,
    /// Flows of a partition owing member cancels: member = flow id, score = when they may be drained.
    CancelBacklog(u16),
    /// Edge groups of a partition with siblings to cancel: member = `<flow id>|<downstream id>`.
    PendingCancelGroups(u16),
}

/// Kinds of JSON records kept in the generic record table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKind {
    /// A waitpoint and its condition (key: waitpoint id).
    Waitpoint,
    /// An execution's current suspension (key: execution id).
    Suspension,
    /// A signal (key: signal id).
    Signal,
    /// A signal dedup guard (key: `<waitpoint id>|<idempotency key>`).
    SignalDedup,
    /// A stored suspend outcome (key: `<execution id>|<idempotency key>`).
    SuspendDedup,
    /// The waitpoint HMAC keystore (key: `keystore`).
    HmacKeystore,
    /// A budget: definition, limits, usage and per-execution ledgers (key: budget id).
    Budget,
    /// A usage-report dedup marker (key: `<budget id>|<dedup key>`).
    UsageDedup,
    /// A quota policy with its concurrency counter and admission guards (key: policy id).
    QuotaPolicy,
    /// A flow with its members and edges (key: flow id).
    Flow,
    /// An execution's inbound dependency state (key: execution id).
    Dependencies,
}

impl RecordKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waitpoint => "waitpoint",
            Self::Suspension => "suspension",
            Self::Signal => "signal",
            Self::SignalDedup => "signal_dedup",
            Self::SuspendDedup => "suspend_dedup",
            Self::HmacKeystore => "hmac_keystore",
            Self::Budget => "budget",
            Self::UsageDedup => "usage_dedup",
            Self::QuotaPolicy => "quota_policy",
            Self::Flow => "flow",
            Self::Dependencies => "dependencies",
        }
    }
}

impl IndexKey {
    /// A lane index of an execution's partition.
    pub fn lane(id: &ExecutionId, lane: &LaneId, kind: LaneIndex) -> Self {
        Self::Lane { partition: id.partition_index(), lane: lane.clone(), kind }
    }

    /// Stable name: the `idx.name` column of the table-backed stores.
    pub fn storage_name(&self) -> String {
        match self {
            Self::Lane { partition, lane, kind } => format!("lane|{partition}|{kind:?}|{lane}"),
            Self::LeaseExpiry(p) => format!("lease_expiry|{p}"),
            Self::WorkerLeases(p, inst) => format!("worker_leases|{p}|{inst}"),
            Self::SuspensionTimeout(p) => format!("suspension_timeout|{p}"),
            Self::AttemptTimeout(p) => format!("attempt_timeout|{p}"),
            Self::ExecutionDeadline(p) => format!("execution_deadline|{p}"),
            Self::AllExecutions(p) => format!("all_executions|{p}"),
            Self::AttemptsOf(id) => format!("attempts|{id}"),
            Self::Lanes => "lanes".to_owned(),
            Self::WaitpointsOf(id) => format!("waitpoints|{id}"),
            Self::WaitpointSignals(wp) => format!("waitpoint_signals|{wp}"),
            Self::SignalsOf(id) => format!("signals|{id}"),
            Self::PendingWaitpointExpiry(p) => format!("pending_waitpoint_expiry|{p}"),
            Self::QuotaWindow(q) => format!("quota_window|{q}"),
            Self::BudgetResets => "budget_resets".to_owned(),
            Self::Flows => "flows".to_owned(),
            Self::BudgetPolicies => "budget_policies".to_owned(),
            Self::QuotaPolicies => "quota_policies".to_owned(),
            Self::CancelBacklog(p) => format!("cancel_backlog|{p}"),
            Self::PendingCancelGroups(p) => format!("pending_cancel_groups|{p}"),
        }
    }
}
