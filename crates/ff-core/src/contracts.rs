//! One `Args` type and one outcome type per contract of spec 01.
//!
//! Args carry every id the operation needs (backends never mint ids) and are
//! checked by [`Validate::validate`] before any backend reads or writes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::handle::Handle;
use crate::ids::{
    AttemptId, AttemptIndex, CancelSource, ExecutionId, LaneId, LeaseEpoch, LeaseFence, LeaseId, Namespace,
    TimestampMs, WorkerId, WorkerInstanceId,
};
use crate::partition::PartitionKey;
use crate::state::{AttemptType, BlockingReason, LifecyclePhase, PublicState};

/// Largest input or result payload, in bytes.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest free-text field (reason, kind, identity, detail), in bytes.
pub const TEXT_BYTES_MAX: usize = 4096;
/// Longest name field (namespace, worker id, instance id, idempotency key), in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest policy JSON, in bytes.
pub const POLICY_JSON_BYTES_MAX: usize = 64 * 1024;
/// Largest lease TTL, in ms (24 h).
pub const LEASE_TTL_MS_MAX: u64 = 86_400_000;
/// Largest claim-grant TTL, in ms (spec 01 §9.2).
pub const GRANT_TTL_MS_MAX: u64 = 60_000;
/// Largest worker liveness TTL, in ms (24 h).
pub const WORKER_TTL_MS_MAX: u64 = 86_400_000;
/// Priority clamp bounds (spec 01 §11.2).
pub const PRIORITY_MIN: i32 = 0;
/// Priority clamp upper bound.
pub const PRIORITY_MAX: i32 = 9000;
/// Most capability tokens in one set (inclusive).
pub const CAPS_TOKENS_MAX: usize = 256;
/// Longest capability CSV, in bytes (inclusive).
pub const CAPS_CSV_BYTES_MAX: usize = 4096;
/// Most tag pairs in one call.
pub const TAGS_PER_CALL_MAX: usize = 256;
/// Longest `mark_worker_dead` reason, in bytes.
pub const MARK_WORKER_DEAD_REASON_BYTES_MAX: usize = 256;
/// Largest absolute timestamp accepted, in ms (year ~2286; keeps scores exact in f64).
pub const TIMESTAMP_MS_MAX: TimestampMs = 9_999_999_999_999;
/// Largest page for list reads.
pub const LIST_LIMIT_MAX: usize = 10_000;

/// Checks an `Args` value before any backend work.
pub trait Validate {
    /// Returns `Validation(InvalidInput, detail)` naming the first bad field.
    fn validate(&self) -> Result<(), EngineError>;
}

pub(crate) fn check_text(field: &str, s: &str, max: usize) -> Result<(), EngineError> {
    if s.len() > max {
        return Err(EngineError::invalid_input(format!("{field}: longer than {max} bytes")));
    }
    if s.chars().any(|c| c == '\0') {
        return Err(EngineError::invalid_input(format!("{field}: contains NUL")));
    }
    Ok(())
}

pub(crate) fn check_name(field: &str, s: &str) -> Result<(), EngineError> {
    if s.is_empty() {
        return Err(EngineError::invalid_input(format!("{field}: empty")));
    }
    if s.chars().any(char::is_control) {
        return Err(EngineError::invalid_input(format!("{field}: control character")));
    }
    check_text(field, s, NAME_BYTES_MAX)
}

pub(crate) fn check_lane(lane: &LaneId) -> Result<(), EngineError> {
    LaneId::try_new(lane.as_str())
        .map(|_| ())
        .map_err(|e| EngineError::invalid_input(format!("lane_id: {e}")))
}

pub(crate) fn check_range(field: &str, v: u64, min: u64, max: u64) -> Result<(), EngineError> {
    if v < min || v > max {
        return Err(EngineError::invalid_input(format!("{field}: {v} not in {min}..={max}")));
    }
    Ok(())
}

pub(crate) fn check_time(field: &str, t: TimestampMs) -> Result<(), EngineError> {
    if !(0..=TIMESTAMP_MS_MAX).contains(&t) {
        return Err(EngineError::invalid_input(format!("{field}: {t} out of range")));
    }
    Ok(())
}

fn check_json_object(field: &str, s: &str) -> Result<(), EngineError> {
    if s.is_empty() {
        return Ok(());
    }
    check_text(field, s, POLICY_JSON_BYTES_MAX)?;
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(EngineError::invalid_input(format!("{field}: not a JSON object"))),
    }
}

/// A worker's capability tokens, kept sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CapabilitySet(pub BTreeSet<String>);

impl CapabilitySet {
    /// Builds a set from tokens.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> Self {
        Self(tokens.into_iter().map(Into::into).collect())
    }

    /// The sorted, comma-joined form.
    pub fn to_csv(&self) -> String {
        self.0.iter().map(String::as_str).collect::<Vec<_>>().join(",")
    }

    /// Whether the set is within the ingress rules of spec 01 §9.4.
    pub fn validate_as(&self, side: &str) -> Result<(), EngineError> {
        for t in &self.0 {
            if t.is_empty() || t.contains(',') || t.bytes().any(|b| b <= 0x20 || b == 0x7f) {
                return Err(EngineError::validation(
                    ValidationKind::InvalidCapabilities,
                    format!("{side}:malformed_token"),
                ));
            }
        }
        if self.0.len() > CAPS_TOKENS_MAX {
            return Err(EngineError::validation(
                ValidationKind::InvalidCapabilities,
                format!("{side}:too_many_tokens"),
            ));
        }
        if self.to_csv().len() > CAPS_CSV_BYTES_MAX {
            return Err(EngineError::validation(
                ValidationKind::InvalidCapabilities,
                format!("{side}:too_many_bytes"),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- execution

/// Arguments of `create_execution` (spec 01 §6.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateExecutionArgs {
    /// Caller-minted id (its tag decides the partition).
    pub execution_id: ExecutionId,
    /// Tenant.
    pub namespace: Namespace,
    /// Submission lane.
    pub lane_id: LaneId,
    /// Handler label.
    pub execution_kind: String,
    /// Input bytes, stored verbatim.
    #[serde(default)]
    pub input_payload: Vec<u8>,
    /// Priority; clamped to 0..=9000.
    #[serde(default)]
    pub priority: i32,
    /// Free text.
    #[serde(default)]
    pub creator_identity: String,
    /// Execution policy JSON (`""` or an object).
    #[serde(default)]
    pub policy_json: String,
    /// Absolute time before which the execution is not eligible.
    #[serde(default)]
    pub delay_until: Option<TimestampMs>,
    /// Absolute deadline.
    #[serde(default)]
    pub execution_deadline_at: Option<TimestampMs>,
    /// Create idempotency key (per namespace).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Caller tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl CreateExecutionArgs {
    /// Minimal args: id, namespace, lane, kind.
    pub fn new(
        execution_id: ExecutionId,
        namespace: impl Into<Namespace>,
        lane_id: LaneId,
        execution_kind: impl Into<String>,
    ) -> Self {
        Self {
            execution_id,
            namespace: namespace.into(),
            lane_id,
            execution_kind: execution_kind.into(),
            input_payload: Vec::new(),
            priority: 0,
            creator_identity: String::new(),
            policy_json: String::new(),
            delay_until: None,
            execution_deadline_at: None,
            idempotency_key: None,
            tags: BTreeMap::new(),
        }
    }
}

impl Validate for CreateExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        ExecutionId::parse_canonical(self.execution_id.as_str())
            .map_err(|e| EngineError::invalid_input(format!("execution_id: {e}")))?;
        check_name("namespace", self.namespace.as_str())?;
        check_lane(&self.lane_id)?;
        check_text("execution_kind", &self.execution_kind, NAME_BYTES_MAX)?;
        check_text("creator_identity", &self.creator_identity, TEXT_BYTES_MAX)?;
        if self.input_payload.len() > PAYLOAD_BYTES_MAX {
            return Err(EngineError::validation(ValidationKind::PayloadTooLarge, "input_payload"));
        }
        check_text("policy_json", &self.policy_json, POLICY_JSON_BYTES_MAX)?;
        if let Some(t) = self.delay_until {
            check_time("delay_until", t)?;
        }
        if let Some(t) = self.execution_deadline_at {
            check_time("execution_deadline_at", t)?;
        }
        if let Some(k) = &self.idempotency_key {
            check_text("idempotency_key", k, NAME_BYTES_MAX)?;
        }
        if self.tags.len() > TAGS_PER_CALL_MAX {
            return Err(EngineError::invalid_input("tags: too many"));
        }
        for (k, v) in &self.tags {
            check_text("tag key", k, NAME_BYTES_MAX)?;
            check_text("tag value", v, TEXT_BYTES_MAX)?;
        }
        Ok(())
    }
}

/// Result of `create_execution`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CreateExecutionOutcome {
    /// A new execution.
    Created {
        /// Its id.
        execution_id: ExecutionId,
        /// `waiting` or `delayed`.
        public_state: PublicState,
    },
    /// The idempotency key or the id already existed; nothing written.
    Duplicate {
        /// The stored execution's id.
        execution_id: ExecutionId,
    },
}

/// Arguments of `claim_execution` (spec 01 §6.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimExecutionArgs {
    /// Execution to claim.
    pub execution_id: ExecutionId,
    /// Must match the grant's worker id.
    pub worker_id: WorkerId,
    /// Claiming instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Lane, stored as `current_lane`.
    pub lane_id: LaneId,
    /// New lease id.
    pub lease_id: LeaseId,
    /// Lease TTL in ms.
    pub lease_ttl_ms: u64,
    /// New attempt id.
    pub attempt_id: AttemptId,
    /// Attempt policy JSON (`""` or an object).
    #[serde(default)]
    pub attempt_policy_json: String,
    /// Attempt timeout in ms.
    #[serde(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// Absolute execution deadline.
    #[serde(default)]
    pub execution_deadline_at: Option<TimestampMs>,
}

fn check_worker(id: &WorkerId, inst: &WorkerInstanceId) -> Result<(), EngineError> {
    check_name("worker_id", id.as_str())?;
    check_name("worker_instance_id", inst.as_str())
}

impl Validate for ClaimExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_worker(&self.worker_id, &self.worker_instance_id)?;
        check_lane(&self.lane_id)?;
        check_range("lease_ttl_ms", self.lease_ttl_ms, 1, LEASE_TTL_MS_MAX)?;
        check_json_object("attempt_policy_json", &self.attempt_policy_json)?;
        if let Some(t) = self.attempt_timeout_ms {
            check_range("attempt_timeout_ms", t, 0, TIMESTAMP_MS_MAX as u64)?;
        }
        if let Some(t) = self.execution_deadline_at {
            check_time("execution_deadline_at", t)?;
        }
        Ok(())
    }
}

/// A lease acquired on an execution (fresh, resumed or reclaimed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedExecution {
    /// The execution.
    pub execution_id: ExecutionId,
    /// New lease id.
    pub lease_id: LeaseId,
    /// New lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// Attempt index (0-based).
    pub attempt_index: AttemptIndex,
    /// Attempt id.
    pub attempt_id: AttemptId,
    /// Why the attempt exists (`resumed` claims report the attempt's own type).
    pub attempt_type: AttemptType,
    /// Lease expiry.
    pub lease_expires_at: TimestampMs,
    /// The worker handle for handle-based ops.
    pub handle: Handle,
}

/// Arguments of `complete_execution` (spec 01 §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Lease fence; `None` requires `source = operator_override`.
    pub fence: Option<LeaseFence>,
    /// Result bytes.
    #[serde(default)]
    pub result_payload: Option<Vec<u8>>,
    /// Source gate.
    #[serde(default)]
    pub source: CancelSource,
}

impl Validate for CompleteExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_text("source", self.source.as_str(), NAME_BYTES_MAX)?;
        if self.result_payload.as_ref().is_some_and(|p| p.len() > PAYLOAD_BYTES_MAX) {
            return Err(EngineError::validation(ValidationKind::PayloadTooLarge, "result_payload"));
        }
        Ok(())
    }
}

/// Result of `complete_execution`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CompleteOutcome {
    /// Now terminal `completed`.
    Completed {
        /// The execution.
        execution_id: ExecutionId,
    },
}

/// Arguments of `cancel_execution` (spec 01 §6.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Why.
    pub reason: String,
    /// Who; `operator_override` bypasses lease checks.
    #[serde(default)]
    pub source: CancelSource,
    /// Holder's lease id (checked when given and not overriding).
    #[serde(default)]
    pub lease_id: Option<LeaseId>,
    /// Holder's lease epoch (checked with `lease_id`).
    #[serde(default)]
    pub lease_epoch: Option<LeaseEpoch>,
}

impl Validate for CancelExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_text("reason", &self.reason, TEXT_BYTES_MAX)?;
        check_text("source", self.source.as_str(), NAME_BYTES_MAX)?;
        if self.lease_id.is_some() != self.lease_epoch.is_some() {
            return Err(EngineError::invalid_input("partial_fence_triple"));
        }
        Ok(())
    }
}

/// Result of `cancel_execution`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// Now terminal `cancelled`.
    Cancelled {
        /// The execution.
        execution_id: ExecutionId,
        /// Phase it was cancelled from.
        from_phase: LifecyclePhase,
    },
}

/// Arguments of `delay_execution` (spec 01 §6.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Lease fence.
    pub fence: Option<LeaseFence>,
    /// Absolute time when it becomes eligible again.
    pub delay_until: TimestampMs,
    /// Source gate.
    #[serde(default)]
    pub source: CancelSource,
}

impl Validate for DelayExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_time("delay_until", self.delay_until)?;
        check_text("source", self.source.as_str(), NAME_BYTES_MAX)
    }
}

/// Arguments of `move_to_waiting_children` (spec 01 §6.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveToWaitingChildrenArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Lease fence.
    pub fence: Option<LeaseFence>,
    /// Source gate.
    #[serde(default)]
    pub source: CancelSource,
}

impl Validate for MoveToWaitingChildrenArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_text("source", self.source.as_str(), NAME_BYTES_MAX)
    }
}

/// Arguments of `fail_execution` (spec 01 §6.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Lease fence.
    pub fence: Option<LeaseFence>,
    /// Failure text.
    pub failure_reason: String,
    /// Failure category (recorded only).
    #[serde(default)]
    pub failure_category: String,
    /// Retry policy JSON (`""` = no retries); `None` uses the stored policy's `retry_policy`.
    #[serde(default)]
    pub retry_policy_json: Option<String>,
    /// Source gate.
    #[serde(default)]
    pub source: CancelSource,
}

impl Validate for FailExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_text("failure_reason", &self.failure_reason, TEXT_BYTES_MAX)?;
        check_text("failure_category", &self.failure_category, NAME_BYTES_MAX)?;
        if let Some(j) = &self.retry_policy_json {
            check_text("retry_policy_json", j, POLICY_JSON_BYTES_MAX)?;
        }
        check_text("source", self.source.as_str(), NAME_BYTES_MAX)
    }
}

/// Result of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailOutcome {
    /// A retry is scheduled at `delay_until`.
    RetryScheduled {
        /// When the retry becomes eligible.
        delay_until: TimestampMs,
    },
    /// No retries left: terminal `failed`.
    TerminalFailed,
}

/// Arguments of `reclaim_execution` (spec 01 §6.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Must match the grant's worker id.
    pub worker_id: WorkerId,
    /// Reclaiming instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Lane, stored as `current_lane`.
    pub lane_id: LaneId,
    /// New lease id.
    pub lease_id: LeaseId,
    /// Lease TTL in ms.
    pub lease_ttl_ms: u64,
    /// New attempt id.
    pub attempt_id: AttemptId,
    /// Accepted, unused.
    #[serde(default)]
    pub attempt_policy_json: String,
    /// Reclaim cap when the stored policy names none (default 1000).
    #[serde(default)]
    pub max_reclaim_count: Option<u32>,
}

impl Validate for ReclaimExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_worker(&self.worker_id, &self.worker_instance_id)?;
        check_lane(&self.lane_id)?;
        check_range("lease_ttl_ms", self.lease_ttl_ms, 1, LEASE_TTL_MS_MAX)?;
        check_json_object("attempt_policy_json", &self.attempt_policy_json)
    }
}

/// Result of `reclaim_execution`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReclaimExecutionOutcome {
    /// A new attempt runs under a new lease.
    Claimed(ClaimedExecution),
    /// No valid grant for this worker.
    GrantNotFound {
        /// The execution.
        execution_id: ExecutionId,
    },
    /// The execution is not reclaimable.
    NotReclaimable {
        /// The execution.
        execution_id: ExecutionId,
        /// Why.
        detail: String,
    },
    /// The reclaim cap was reached: the execution is now terminally failed.
    ReclaimCapExceeded {
        /// The execution.
        execution_id: ExecutionId,
        /// The cap.
        reclaim_count: u32,
    },
}

/// Which timeout fired (spec 01 §6.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpirePhase {
    /// The attempt timeout.
    AttemptTimeout,
    /// The execution deadline.
    ExecutionDeadline,
}

impl ExpirePhase {
    /// The wire reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttemptTimeout => "attempt_timeout",
            Self::ExecutionDeadline => "execution_deadline",
        }
    }
}

/// Result of `expire_execution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExpireOutcome {
    /// Now terminal `expired`.
    Expired {
        /// Phase it expired from.
        from_phase: LifecyclePhase,
    },
    /// Already terminal (indexes cleaned).
    AlreadyTerminal,
    /// No such execution (indexes cleaned).
    NotFoundCleaned,
}

/// Arguments of `set_execution_tags` (spec 01 §6.10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetExecutionTagsArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Pairs to write.
    pub tags: Vec<(String, String)>,
}

impl Validate for SetExecutionTagsArgs {
    fn validate(&self) -> Result<(), EngineError> {
        if self.tags.is_empty() {
            return Err(EngineError::invalid_input("tags must be non-empty even-length key/value pairs"));
        }
        if self.tags.len() > TAGS_PER_CALL_MAX {
            return Err(EngineError::invalid_input("tags: too many"));
        }
        for (k, v) in &self.tags {
            check_text("tag key", k, NAME_BYTES_MAX)?;
            check_text("tag value", v, TEXT_BYTES_MAX)?;
        }
        Ok(())
    }
}

/// Whether a tag key follows the namespaced rule of `ff_set_execution_tags`.
pub fn is_valid_tag_key(key: &str) -> bool {
    let b = key.as_bytes();
    let Some(first) = b.first() else { return false };
    if !first.is_ascii_lowercase() {
        return false;
    }
    let Some(dot) = key.find('.') else { return false };
    let head_ok = b[1..dot].iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    head_ok && b.get(dot + 1).is_some_and(|c| *c != b'.')
}

/// Whether a tag key follows the stricter rule of `set_execution_tag`.
pub fn is_strict_tag_key(key: &str) -> bool {
    let Some(dot) = key.find('.') else { return false };
    let (head, tail) = (&key[..dot], &key[dot + 1..]);
    let word = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
    head.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && head.bytes().all(word)
        && tail.as_bytes().first().is_some_and(|c| word(*c))
        && tail.bytes().all(|c| word(c) || c == b'.')
}

// ---------------------------------------------------------------- lease

/// Arguments of `renew_lease` (spec 01 §6.12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewLeaseArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Must equal `current_attempt_index`.
    pub attempt_index: AttemptIndex,
    /// Lease fence (required).
    pub fence: Option<LeaseFence>,
    /// New TTL from now, in ms.
    pub lease_ttl_ms: u64,
    /// Lease-record grace after expiry, in ms.
    #[serde(default = "default_grace")]
    pub lease_history_grace_ms: u64,
}

fn default_grace() -> u64 {
    60_000
}

impl Validate for RenewLeaseArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_range("lease_ttl_ms", self.lease_ttl_ms, 1, LEASE_TTL_MS_MAX)?;
        check_range("lease_history_grace_ms", self.lease_history_grace_ms, 0, LEASE_TTL_MS_MAX)
    }
}

/// Result of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRenewal {
    /// New expiry.
    pub expires_at_ms: TimestampMs,
    /// Unchanged epoch.
    pub lease_epoch: LeaseEpoch,
}

/// Result of `mark_lease_expired_if_due`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MarkLeaseExpiredOutcome {
    /// The lease was marked expired.
    MarkedExpired,
    /// Nothing to do (`execution_not_found`, `not_active`, `already_expired`, …).
    AlreadySatisfied {
        /// Why.
        reason: String,
    },
}

/// Arguments of `revoke_lease` (spec 01 §6.14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeLeaseArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Only revoke this lease, if given.
    #[serde(default)]
    pub expected_lease_id: Option<LeaseId>,
    /// Why (default `operator`).
    #[serde(default)]
    pub reason: String,
}

impl Validate for RevokeLeaseArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_text("reason", &self.reason, TEXT_BYTES_MAX)
    }
}

/// Result of `revoke_lease`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RevokeLeaseOutcome {
    /// The lease was revoked.
    Revoked {
        /// Revoked lease.
        lease_id: LeaseId,
        /// Its epoch.
        lease_epoch: LeaseEpoch,
    },
    /// Nothing to revoke (`already_revoked`, `already_expired`, `no_active_lease`).
    AlreadySatisfied {
        /// Why.
        reason: String,
    },
}

/// Arguments of `list_expired_leases` (spec 01 §8.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListExpiredLeasesArgs {
    /// Every result has `expires_at_ms <= as_of`.
    pub as_of: TimestampMs,
    /// Exclusive cursor `(expires_at_ms, execution_id)`.
    #[serde(default)]
    pub after: Option<(TimestampMs, ExecutionId)>,
    /// Page size (default 1000, max 10 000).
    #[serde(default = "default_expired_limit")]
    pub limit: usize,
    /// Partitions read per call (default 32).
    #[serde(default = "default_parts_per_call")]
    pub max_partitions_per_call: u16,
}

fn default_expired_limit() -> usize {
    1000
}

fn default_parts_per_call() -> u16 {
    32
}

impl Validate for ListExpiredLeasesArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_range("limit", self.limit as u64, 1, LIST_LIMIT_MAX as u64)?;
        check_range("max_partitions_per_call", u64::from(self.max_partitions_per_call), 1, 65_535)
    }
}

/// One expired lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredLeaseInfo {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lease id.
    pub lease_id: LeaseId,
    /// Its lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// The holder.
    pub worker_instance_id: WorkerInstanceId,
    /// When it expired.
    pub expires_at_ms: TimestampMs,
    /// Attempt index.
    pub attempt_index: AttemptIndex,
}

/// A page of expired leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredLeasesPage {
    /// Entries ordered by `(expires_at_ms, execution_id)`.
    pub entries: Vec<ExpiredLeaseInfo>,
    /// Cursor for the next page when more existed.
    pub cursor: Option<(TimestampMs, ExecutionId)>,
}

// ---------------------------------------------------------------- scheduling

/// Arguments shared by `issue_claim_grant` and `issue_reclaim_grant` (spec 01 §6.15, §6.20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueClaimGrantArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Grantee worker.
    pub worker_id: WorkerId,
    /// Grantee instance (stored for audit).
    pub worker_instance_id: WorkerInstanceId,
    /// Lane (stored for audit).
    pub lane_id: LaneId,
    /// Opaque, stored.
    #[serde(default)]
    pub capability_hash: String,
    /// Grant TTL in ms (1..=60000).
    pub grant_ttl_ms: u64,
    /// Opaque, stored.
    #[serde(default)]
    pub route_snapshot_json: String,
    /// Opaque, stored.
    #[serde(default)]
    pub admission_summary: String,
    /// The worker's capabilities.
    #[serde(default)]
    pub worker_capabilities: CapabilitySet,
}

impl Validate for IssueClaimGrantArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_worker(&self.worker_id, &self.worker_instance_id)?;
        check_lane(&self.lane_id)?;
        check_range("grant_ttl_ms", self.grant_ttl_ms, 1, GRANT_TTL_MS_MAX)?;
        check_text("capability_hash", &self.capability_hash, NAME_BYTES_MAX)?;
        check_text("route_snapshot_json", &self.route_snapshot_json, POLICY_JSON_BYTES_MAX)?;
        check_text("admission_summary", &self.admission_summary, TEXT_BYTES_MAX)?;
        self.worker_capabilities.validate_as("worker")
    }
}

/// Arguments of `issue_reclaim_grant`.
pub type IssueReclaimGrantArgs = IssueClaimGrantArgs;

/// A scheduler's admission decision for one execution (spec 01 §9.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimGrant {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its partition's hash tag.
    pub partition_key: PartitionKey,
    /// The grant record's key.
    pub grant_key: String,
    /// When the grant lapses.
    pub expires_at_ms: TimestampMs,
}

/// A grant to resume or reclaim, carrying the lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneGrant {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its partition's hash tag.
    pub partition_key: PartitionKey,
    /// The grant record's key.
    pub grant_key: String,
    /// When the grant lapses.
    pub expires_at_ms: TimestampMs,
    /// The lane.
    pub lane_id: LaneId,
}

/// A grant for a resumed claim.
pub type ResumeGrant = LaneGrant;
/// A grant for a reclaim.
pub type ReclaimGrant = LaneGrant;

/// Result of `issue_claim_grant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum IssueClaimGrantOutcome {
    /// The grant was written.
    Granted(ClaimGrant),
}

/// Result of `issue_reclaim_grant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum IssueReclaimGrantOutcome {
    /// The grant was written.
    Granted(ReclaimGrant),
    /// Not reclaimable (`execution_not_reclaimable` or `capability_mismatch: <missing>`).
    NotReclaimable {
        /// The execution.
        execution_id: ExecutionId,
        /// Why.
        detail: String,
    },
}

/// Arguments of `change_priority` (spec 01 §6.16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePriorityArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// New priority (clamped).
    pub new_priority: i32,
}

/// Result of `change_priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityChange {
    /// Previous priority.
    pub old_priority: i32,
    /// Stored (clamped) priority.
    pub new_priority: i32,
}

/// Arguments of `update_progress` (spec 01 §6.17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateProgressArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Holder's lease id.
    pub lease_id: LeaseId,
    /// Holder's lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// Percent (left unchanged when `None`).
    #[serde(default)]
    pub progress_pct: Option<u8>,
    /// Message (left unchanged when `None`).
    #[serde(default)]
    pub progress_message: Option<String>,
}

impl Validate for UpdateProgressArgs {
    fn validate(&self) -> Result<(), EngineError> {
        if let Some(p) = self.progress_pct {
            check_range("progress_pct", u64::from(p), 0, 100)?;
        }
        if let Some(m) = &self.progress_message {
            check_text("progress_message", m, TEXT_BYTES_MAX)?;
        }
        Ok(())
    }
}

/// Arguments of `claim_resumed_execution` (spec 01 §6.21).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimResumedExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Must match the grant's worker id.
    pub worker_id: WorkerId,
    /// Claiming instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Lane, stored as `current_lane`.
    pub lane_id: LaneId,
    /// New lease id.
    pub lease_id: LeaseId,
    /// Lease TTL in ms.
    pub lease_ttl_ms: u64,
    /// Remaining attempt timeout to re-arm, in ms.
    #[serde(default)]
    pub remaining_attempt_timeout_ms: Option<u64>,
}

impl Validate for ClaimResumedExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_worker(&self.worker_id, &self.worker_instance_id)?;
        check_lane(&self.lane_id)?;
        check_range("lease_ttl_ms", self.lease_ttl_ms, 1, LEASE_TTL_MS_MAX)?;
        if let Some(t) = self.remaining_attempt_timeout_ms {
            check_range("remaining_attempt_timeout_ms", t, 0, TIMESTAMP_MS_MAX as u64)?;
        }
        Ok(())
    }
}

/// Arguments of `issue_grant_and_claim` (spec 01 §6.23).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueGrantAndClaimArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Lane, stored as `current_lane`.
    pub lane_id: LaneId,
    /// Lease TTL in ms.
    pub lease_duration_ms: u64,
    /// New lease id.
    pub lease_id: LeaseId,
    /// New attempt id (used on the fresh branch).
    pub attempt_id: AttemptId,
}

impl Validate for IssueGrantAndClaimArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_lane(&self.lane_id)?;
        check_range("lease_duration_ms", self.lease_duration_ms, 1, LEASE_TTL_MS_MAX)
    }
}

/// Result of `issue_grant_and_claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimGrantOutcome {
    /// New lease id.
    pub lease_id: LeaseId,
    /// New lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// Attempt index.
    pub attempt_index: AttemptIndex,
}

/// Result of `replay_execution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplayOutcome {
    /// Replayed; the stored public state.
    Replayed {
        /// `waiting` or `waiting_children`.
        public_state: PublicState,
    },
}

/// Result of `promote_delayed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PromoteOutcome {
    /// Now eligible.
    Promoted,
    /// Still in the future.
    NotYetDue,
    /// No such execution; index cleaned.
    NotFoundCleaned,
    /// Not runnable; index cleaned.
    NotRunnableCleaned,
    /// Not delayed; index cleaned.
    NotDelayedCleaned,
}

/// Arguments of `block_execution_for_admission` (spec 01 §6.26).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// One of the five admission reasons.
    pub reason: BlockingReason,
    /// Free text.
    #[serde(default)]
    pub detail: String,
}

impl Validate for BlockExecutionArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_text("detail", &self.detail, TEXT_BYTES_MAX)
    }
}

/// Arguments of `unblock_execution` (spec 01 §6.25).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnblockExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Only unblock if blocked for this reason.
    #[serde(default)]
    pub expected_reason: Option<BlockingReason>,
}

// ---------------------------------------------------------------- worker registry

/// Arguments of `register_worker` (spec 01 §6.18, §14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterWorkerArgs {
    /// Logical worker.
    pub worker_id: WorkerId,
    /// Instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Namespace.
    pub namespace: Namespace,
    /// Lanes served.
    pub lanes: BTreeSet<LaneId>,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: CapabilitySet,
    /// Liveness TTL in ms (> 0).
    pub liveness_ttl_ms: u64,
}

impl Validate for RegisterWorkerArgs {
    fn validate(&self) -> Result<(), EngineError> {
        check_worker(&self.worker_id, &self.worker_instance_id)?;
        check_name("namespace", self.namespace.as_str())?;
        for lane in &self.lanes {
            check_lane(lane)?;
        }
        self.capabilities.validate_as("worker")?;
        check_range("liveness_ttl_ms", self.liveness_ttl_ms, 1, WORKER_TTL_MS_MAX)
    }
}

/// Result of `register_worker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RegisterWorkerOutcome {
    /// No live registration existed.
    Registered,
    /// A live registration was refreshed.
    Refreshed,
}

/// Arguments of `heartbeat_worker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatWorkerArgs {
    /// Instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Namespace.
    pub namespace: Namespace,
}

/// Result of `heartbeat_worker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HeartbeatOutcome {
    /// Liveness extended.
    Refreshed {
        /// New liveness expiry.
        next_expiry_ms: TimestampMs,
    },
    /// Not registered (or expired): register again.
    NotRegistered,
}

/// Arguments of `mark_worker_dead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkWorkerDeadArgs {
    /// Instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Namespace.
    pub namespace: Namespace,
    /// Why (≤ 256 bytes, no control characters).
    pub reason: String,
}

impl Validate for MarkWorkerDeadArgs {
    fn validate(&self) -> Result<(), EngineError> {
        if self.reason.len() > MARK_WORKER_DEAD_REASON_BYTES_MAX {
            return Err(EngineError::invalid_input("reason: longer than 256 bytes"));
        }
        if self.reason.chars().any(char::is_control) {
            return Err(EngineError::invalid_input("reason: control character"));
        }
        Ok(())
    }
}

/// Result of `mark_worker_dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MarkWorkerDeadOutcome {
    /// The registration was removed.
    Marked,
    /// Nothing was registered.
    NotRegistered,
}

/// Arguments of `list_workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListWorkersArgs {
    /// Namespace.
    pub namespace: Namespace,
    /// Exclusive cursor: instance ids after this.
    #[serde(default)]
    pub after: Option<WorkerInstanceId>,
    /// Page size (default 1000).
    #[serde(default = "default_expired_limit")]
    pub limit: usize,
}

/// One registered, live worker instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Logical worker.
    pub worker_id: WorkerId,
    /// Instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Namespace.
    pub namespace: Namespace,
    /// Lanes.
    pub lanes: BTreeSet<LaneId>,
    /// Capabilities.
    pub capabilities: CapabilitySet,
    /// Last heartbeat (or registration) time.
    pub last_heartbeat_ms: TimestampMs,
    /// Liveness TTL.
    pub liveness_ttl_ms: u64,
    /// First registration time.
    pub registered_at_ms: TimestampMs,
}

/// A page of workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkersPage {
    /// Workers sorted by instance id.
    pub workers: Vec<WorkerInfo>,
    /// Cursor when more existed.
    pub cursor: Option<WorkerInstanceId>,
}

// ---------------------------------------------------------------- claim bypass and reads

/// Policy of the scheduler-bypass `claim` (spec 01 §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimPolicy {
    /// Claiming worker.
    pub worker_id: WorkerId,
    /// Claiming instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Lease TTL in ms.
    pub lease_ttl_ms: u32,
    /// Lease id to use if something is claimed.
    pub lease_id: LeaseId,
    /// Attempt id to use if something is claimed.
    pub attempt_id: AttemptId,
}

/// Arguments of `scan_eligible_executions` (spec 01 §11.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEligibleArgs {
    /// Lane.
    pub lane_id: LaneId,
    /// Partition index.
    pub partition: u16,
    /// Most ids returned.
    pub limit: usize,
}

/// A worker's failure description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReason {
    /// Failure text.
    pub message: String,
    /// Category override (UTF-8 when non-empty).
    #[serde(default)]
    pub detail: Option<Vec<u8>>,
}

impl FailureReason {
    /// A reason with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), detail: None }
    }
}

/// A failure classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Might succeed on retry.
    Transient,
    /// Will not succeed.
    Permanent,
    /// Infrastructure crashed.
    InfraCrash,
    /// Timed out.
    Timeout,
    /// Cancelled.
    Cancelled,
}

impl FailureClass {
    /// The category string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::InfraCrash => "infra_crash",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The current lease of an execution as shown by reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSummary {
    /// Lease id.
    pub lease_id: LeaseId,
    /// Epoch.
    pub lease_epoch: LeaseEpoch,
    /// Holder.
    pub worker_instance_id: WorkerInstanceId,
    /// Expiry.
    pub expires_at: TimestampMs,
    /// Attempt index (0-based).
    pub attempt_index: AttemptIndex,
}

/// Read model of an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionSnapshot {
    /// Id.
    pub execution_id: ExecutionId,
    /// Namespace.
    pub namespace: Namespace,
    /// Submission lane.
    pub lane_id: LaneId,
    /// Handler label.
    pub execution_kind: String,
    /// Stored public state.
    pub public_state: PublicState,
    /// The full state vector.
    pub state: crate::state::StateVector,
    /// Priority.
    pub priority: i32,
    /// Current attempt `(index, id)`.
    pub current_attempt: Option<(AttemptIndex, Option<AttemptId>)>,
    /// Current lease, when leased.
    pub current_lease: Option<LeaseSummary>,
    /// Latest lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// Attempts ever created.
    pub total_attempt_count: u32,
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
    /// Last write time.
    pub last_mutation_at: TimestampMs,
    /// Delay target.
    pub delay_until: Option<TimestampMs>,
    /// Failure text.
    pub failure_reason: Option<String>,
    /// Progress percent.
    pub progress_pct: Option<u8>,
    /// Progress message.
    pub progress_message: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Flow membership.
    #[serde(default)]
    pub flow_id: Option<String>,
    /// Capabilities a worker must hold to be granted this execution (sorted).
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    /// Budgets whose hard limits gate admission.
    #[serde(default)]
    pub budget_ids: Vec<String>,
    /// Quota policy that gates admission.
    #[serde(default)]
    pub quota_policy_id: Option<String>,
}

/// Payload, kind and tags of an execution, for the worker that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionContext {
    /// Input bytes.
    pub input_payload: Vec<u8>,
    /// Handler label.
    pub execution_kind: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// One entry of an execution's lease history (spec 01 §3.10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHistoryEntry {
    /// Monotonic id per execution.
    pub seq: u64,
    /// Event name: `acquired`, `released`, `expired`, `revoked`, `reclaimed`, `replay_initiated`.
    pub event: String,
    /// Event time.
    pub ts: TimestampMs,
    /// Fields in a stable order.
    pub fields: BTreeMap<String, String>,
}

/// A terminal flow-member execution, as published (spec 01 §5.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionEvent {
    /// Monotonic id per backend (the cursor).
    pub event_id: u64,
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its flow.
    pub flow_id: String,
    /// Raw outcome: `success`, `failed`, `cancelled`, `expired`, `skipped`.
    pub outcome: String,
    /// Terminal write time.
    pub produced_at_ms: TimestampMs,
}

// ---------------------------------------------------------------- streams

/// Arguments of `append_stream_frame` (spec 02 §12.2), the fenced peer of `append_frame`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendFrameArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Must equal `current_attempt_index`.
    pub attempt_index: AttemptIndex,
    /// Holder's lease id.
    pub lease_id: LeaseId,
    /// Holder's lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// Stored in the meta at creation (not checked).
    #[serde(default)]
    pub attempt_id: Option<AttemptId>,
    /// The frame.
    pub frame: crate::stream::Frame,
    /// Durable trim length (0 = about 10 000).
    #[serde(default)]
    pub retention_maxlen: u64,
    /// Largest payload in bytes.
    #[serde(default = "default_frame_bytes")]
    pub max_payload_bytes: u32,
}

fn default_frame_bytes() -> u32 {
    crate::stream::FRAME_PAYLOAD_BYTES_DEFAULT
}

impl Validate for AppendFrameArgs {
    fn validate(&self) -> Result<(), EngineError> {
        if self.frame.bytes.len() > self.max_payload_bytes as usize {
            return Err(EngineError::validation(ValidationKind::RetentionLimitExceeded, "payload"));
        }
        check_text("frame_type", &self.frame.frame_type, NAME_BYTES_MAX)?;
        if let Some(c) = &self.frame.correlation_id {
            check_text("correlation_id", c, NAME_BYTES_MAX)?;
        }
        if let crate::stream::StreamMode::BestEffortLive { config } = &self.frame.mode
            && !(config.ema_alpha.is_finite())
        {
            return Err(EngineError::invalid_input("ema_alpha: not a number"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- scanners

/// Which scanner to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScannerKind {
    /// Marks overdue leases expired.
    LeaseExpiry,
    /// Promotes due delayed executions.
    DelayedPromoter,
    /// Expires attempts past their timeout.
    AttemptTimeout,
    /// Expires executions past their deadline.
    ExecutionDeadline,
    /// Fires due suspension timeouts.
    SuspensionTimeout,
    /// Closes pending waitpoints past their expiry (`never_committed`).
    PendingWaitpointExpiry,
    /// Resolves edges of dependency-blocked children whose upstream is terminal; promotes zero-dependency ones.
    DependencyReconciler,
    /// Re-admits executions blocked on budget, quota or route once the cause is gone.
    Unblock,
    /// Cancels flow members still owed a cancel after the grace period.
    CancelReconciler,
    /// Cancels the remaining siblings of satisfied or impossible quorum groups.
    EdgeCancelDispatcher,
    /// Resets budgets whose periodic reset is due (not partitioned: partition 0 only).
    BudgetReset,
    /// Marks or clears hard-breach markers on budgets (not partitioned: partition 0 only).
    BudgetReconciler,
    /// Trims quota windows and recounts concurrency (not partitioned: partition 0 only).
    QuotaReconciler,
    /// Purges terminal executions older than the retention period.
    RetentionTrimmer,
}

impl ScannerKind {
    /// Every scanner.
    pub const ALL: [ScannerKind; 14] = [
        Self::LeaseExpiry,
        Self::DelayedPromoter,
        Self::AttemptTimeout,
        Self::ExecutionDeadline,
        Self::SuspensionTimeout,
        Self::PendingWaitpointExpiry,
        Self::DependencyReconciler,
        Self::Unblock,
        Self::CancelReconciler,
        Self::EdgeCancelDispatcher,
        Self::BudgetReset,
        Self::BudgetReconciler,
        Self::QuotaReconciler,
        Self::RetentionTrimmer,
    ];

    /// The contract family whose state the scanner maintains.
    pub fn family(self) -> crate::capabilities::ContractFamily {
        use crate::capabilities::ContractFamily as F;
        match self {
            Self::LeaseExpiry => F::Lease,
            Self::DelayedPromoter | Self::Unblock => F::Scheduling,
            Self::AttemptTimeout | Self::ExecutionDeadline | Self::RetentionTrimmer => F::Execution,
            Self::SuspensionTimeout | Self::PendingWaitpointExpiry => F::Suspension,
            Self::DependencyReconciler | Self::CancelReconciler | Self::EdgeCancelDispatcher => F::Flows,
            Self::BudgetReset | Self::BudgetReconciler => F::Budgets,
            Self::QuotaReconciler => F::Quotas,
        }
    }

    /// Whether the scanner walks global state (runs on partition 0 only).
    pub fn is_global(self) -> bool {
        matches!(self, Self::BudgetReset | Self::BudgetReconciler | Self::QuotaReconciler)
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Due entries examined.
    pub examined: u32,
    /// Entries acted on (marked, promoted, expired).
    pub acted: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_key_rules() {
        for ok in ["a.b", "app_1.x", "a.b.c", "z9.x."] {
            assert!(is_valid_tag_key(ok), "{ok}");
        }
        for bad in ["", "A.b", "1a.b", "ab", "a..b", "a-b.c", "a."] {
            assert!(!is_valid_tag_key(bad), "{bad}");
        }
        assert!(is_strict_tag_key("app.key_1.sub"));
        assert!(!is_strict_tag_key("app.Key"));
        assert!(!is_strict_tag_key("app..x"));
    }

    #[test]
    fn capability_set_bounds() {
        assert!(CapabilitySet::new(["gpu", "cuda"]).validate_as("worker").is_ok());
        assert_eq!(CapabilitySet::new(["gpu", "cuda"]).to_csv(), "cuda,gpu");
        for bad in ["", "a,b", "a b", "a\u{7f}"] {
            assert!(CapabilitySet::new([bad]).validate_as("worker").is_err(), "{bad:?}");
        }
        let many = CapabilitySet::new((0..257).map(|i| format!("t{i}")));
        assert!(many.validate_as("worker").is_err());
    }
}
