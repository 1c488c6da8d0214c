//! The `EngineError` taxonomy and the wire code mapping (spec 01 §15).

use std::fmt;
use std::time::Duration;

/// What kind of bad input or corrupt data a `Validation` error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValidationKind {
    /// Malformed or out-of-range argument.
    InvalidInput,
    /// Worker lacks required capabilities (detail: missing tokens).
    CapabilityMismatch,
    /// A capability list exceeds its bounds.
    InvalidCapabilities,
    /// The execution policy JSON is malformed.
    InvalidPolicyJson,
    /// A payload exceeds its cap.
    PayloadTooLarge,
    /// A per-execution signal cap was reached.
    SignalLimitExceeded,
    /// A waitpoint key is malformed.
    InvalidWaitpointKey,
    /// A waitpoint token failed verification.
    InvalidToken,
    /// The waitpoint has no token binding.
    WaitpointNotTokenBound,
    /// A retention limit was exceeded.
    RetentionLimitExceeded,
    /// The lease cannot be used to suspend.
    InvalidLeaseForSuspend,
    /// A dependency edge is invalid.
    InvalidDependency,
    /// The waitpoint does not belong to the execution.
    InvalidWaitpointForExecution,
    /// A blocking reason is not accepted here.
    InvalidBlockingReason,
    /// A stream offset or cursor is malformed.
    InvalidOffset,
    /// The caller is not authorised.
    Unauthorized,
    /// A budget scope is invalid.
    InvalidBudgetScope,
    /// A budget override is not allowed.
    BudgetOverrideNotAllowed,
    /// A quota spec is invalid.
    InvalidQuotaSpec,
    /// An HMAC key id is invalid.
    InvalidKid,
    /// An HMAC secret is not valid hex.
    InvalidSecretHex,
    /// A rotation grace period is invalid.
    InvalidGraceMs,
    /// A tag key does not follow the namespacing rule (detail: the key).
    InvalidTagKey,
    /// A stream frame type is invalid.
    InvalidFrameType,
    /// Stored data is undecodable.
    Corruption,
    /// A handle was minted by another backend.
    HandleFromOtherBackend,
}

/// A transient race with another actor or with state: re-read and retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentionKind {
    /// The execution is paused mid-attempt: use the resumed-claim path.
    UseClaimResumedExecution,
    /// The execution has no interrupted attempt to resume.
    NotAResumedExecution,
    /// The execution cannot be leased in its current state.
    ExecutionNotLeaseable,
    /// Someone else owns the execution.
    LeaseConflict,
    /// No valid claim grant for this worker.
    InvalidClaimGrant,
    /// The claim grant expired.
    ClaimGrantExpired,
    /// Nothing eligible to claim.
    NoEligibleExecution,
    /// The waitpoint does not exist.
    WaitpointNotFound,
    /// The waitpoint is pending: use the buffering path.
    WaitpointPendingUseBufferScript,
    /// The flow graph changed underneath the caller.
    StaleGraphRevision,
    /// The execution is not active; the slots let a client reconcile a retried op.
    ExecutionNotActive {
        /// Stored terminal outcome.
        terminal_outcome: String,
        /// Stored current lease epoch.
        lease_epoch: String,
        /// Stored lifecycle phase.
        lifecycle_phase: String,
        /// Stored current attempt id.
        attempt_id: String,
    },
    /// The execution is not eligible.
    ExecutionNotEligible,
    /// The execution is not in the eligible index.
    ExecutionNotInEligibleSet,
    /// The execution cannot be reclaimed.
    ExecutionNotReclaimable,
    /// The execution has no active lease.
    NoActiveLease,
    /// A rate limit was hit.
    RateLimitExceeded,
    /// A concurrency limit was hit.
    ConcurrencyLimitExceeded,
    /// Transaction retries were exhausted.
    RetryExhausted,
}

/// A permanent conflict with an existing record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConflictKind {
    /// The edge would create a cycle.
    CycleDetected,
    /// An edge from an execution to itself.
    SelfReferencingEdge,
    /// The execution already belongs to another flow.
    ExecutionAlreadyInFlow,
    /// The waitpoint already exists.
    WaitpointAlreadyExists,
    /// The budget is attached differently.
    BudgetAttachConflict,
    /// The quota is attached differently.
    QuotaAttachConflict,
    /// An HMAC rotation conflicts with an existing kid.
    RotationConflict(String),
    /// An attempt is already running.
    ActiveAttemptExists,
    /// The dependency edge already exists (detail: the existing edge id).
    DependencyAlreadyExists(String),
}

/// A legal but surprising state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum StateKind {
    StaleLease,
    LeaseExpired,
    LeaseRevoked,
    ExecutionNotSuspended,
    AlreadySuspended,
    WaitpointClosed,
    TargetNotSignalable,
    DuplicateSignal,
    ResumeConditionNotMet,
    WaitpointNotPending,
    PendingWaitpointExpired,
    WaitpointNotOpen,
    ExecutionNotTerminal,
    MaxReplaysExhausted,
    StreamClosed,
    StaleOwnerCannotAppend,
    GrantAlreadyExists,
    ExecutionNotInFlow,
    FlowAlreadyTerminal,
    DepsNotSatisfied,
    NotBlockedByDeps,
    NotRunnable,
    Terminal,
    BudgetExceeded,
    BudgetSoftExceeded,
    OkAlreadyApplied,
    AttemptNotStarted,
    AttemptAlreadyTerminal,
    ExecutionNotEligibleForAttempt,
    ReplayNotAllowed,
    MaxRetriesExhausted,
    StreamAlreadyClosed,
    AlreadySatisfied,
}

/// An internal invariant was violated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BugKind {
    /// An attempt was not in the created state.
    AttemptNotInCreatedState,
    /// A stored invariant does not hold.
    InvariantViolation,
}

/// How a caller should react to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Do not retry.
    Terminal,
    /// Retrying (after a re-read) can help.
    Retryable,
    /// Stop work cooperatively (budget).
    Cooperative,
    /// Nothing to do; the state already says so.
    Informational,
    /// Advisory only.
    Advisory,
    /// An engine bug.
    Bug,
    /// Expected in normal operation.
    Expected,
    /// A soft error.
    SoftError,
}

/// Whether retrying the same call can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// Retrying cannot help.
    Permanent,
    /// Retrying may help.
    Temporary,
}

/// A cause carried by a `Transport` error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Backend-agnostic transport fault kinds (stable strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendErrorKind {
    /// Connection-level failure; the write did not happen.
    Transport,
    /// Undecodable reply.
    Protocol,
    /// The request timed out.
    Timeout,
    /// Authentication failed.
    Auth,
    /// Cluster topology problem.
    Cluster,
    /// The server is loading data.
    BusyLoading,
    /// The function library is not loaded.
    ScriptNotLoaded,
    /// Anything else.
    Other,
}

impl BackendErrorKind {
    /// Stable wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Auth => "auth",
            Self::Cluster => "cluster",
            Self::BusyLoading => "busy_loading",
            Self::ScriptNotLoaded => "script_not_loaded",
            Self::Other => "other",
        }
    }

    /// Whether a retry can help.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transport | Self::Timeout | Self::Cluster | Self::BusyLoading)
    }
}

/// The one error type every backend returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The addressed record does not exist.
    #[error("{entity} not found")]
    NotFound {
        /// `execution`, `flow`, `attempt`, `budget`, `quota_policy`, `stream`, `worker`.
        entity: &'static str,
    },
    /// Bad input or corrupt stored data.
    #[error("validation failed ({kind:?}): {detail}")]
    Validation {
        /// What was wrong.
        kind: ValidationKind,
        /// Context, e.g. the offending field.
        detail: String,
    },
    /// A transient race; re-read and retry.
    #[error("contention: {0:?}")]
    Contention(ContentionKind),
    /// A permanent conflict with an existing record.
    #[error("conflict: {0:?}")]
    Conflict(ConflictKind),
    /// A legal but surprising state.
    #[error("state: {0:?}")]
    State(StateKind),
    /// An internal invariant was violated.
    #[error("bug ({kind:?}): {detail}")]
    Bug {
        /// Which invariant.
        kind: BugKind,
        /// Context.
        detail: String,
    },
    /// Backend I/O or reply-parse failure.
    #[error("{backend} transport error ({kind:?}): {source}")]
    Transport {
        /// Backend label.
        backend: &'static str,
        /// Fault kind.
        kind: BackendErrorKind,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// The backend does not implement this method.
    #[error("{op} is not available on this backend")]
    Unavailable {
        /// Method name.
        op: &'static str,
    },
    /// A backend pool is full.
    #[error("resource exhausted: {pool} (max {max})")]
    ResourceExhausted {
        /// Pool name.
        pool: &'static str,
        /// Pool size.
        max: u32,
        /// Suggested wait.
        retry_after_ms: Option<u32>,
    },
    /// The operation exceeded its deadline.
    #[error("{op} timed out after {elapsed:?}")]
    Timeout {
        /// Operation.
        op: &'static str,
        /// Time spent.
        elapsed: Duration,
    },
    /// A subscription was lost; resubscribe with the cursor.
    #[error("stream disconnected")]
    StreamDisconnected {
        /// Last delivered cursor.
        cursor: Vec<u8>,
    },
    /// A subscription dropped events.
    #[error("stream backpressure: events dropped")]
    StreamBackpressure,
    /// A call-site label around an inner error.
    #[error("{context}: {source}")]
    Contextual {
        /// Inner error.
        source: Box<EngineError>,
        /// Label.
        context: String,
    },
}

/// A plain-text cause for protocol errors.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl EngineError {
    /// `Validation(InvalidInput, detail)`.
    pub fn invalid_input(detail: impl Into<String>) -> Self {
        Self::Validation { kind: ValidationKind::InvalidInput, detail: detail.into() }
    }

    /// `Validation(kind, detail)`.
    pub fn validation(kind: ValidationKind, detail: impl Into<String>) -> Self {
        Self::Validation { kind, detail: detail.into() }
    }

    /// `NotFound{execution}`.
    pub fn execution_not_found() -> Self {
        Self::NotFound { entity: "execution" }
    }

    /// A protocol (reply parse) error from a backend.
    pub fn protocol(backend: &'static str, message: impl Into<String>) -> Self {
        Self::Transport {
            backend,
            kind: BackendErrorKind::Protocol,
            source: Box::new(Message(message.into())),
        }
    }

    /// A transport error with a kind and cause.
    pub fn transport(backend: &'static str, kind: BackendErrorKind, source: BoxError) -> Self {
        Self::Transport { backend, kind, source }
    }

    /// Wraps infrastructure errors with a label; typed errors pass through.
    pub fn backend_context(self, context: impl Into<String>) -> Self {
        match self {
            Self::Transport { .. }
            | Self::Unavailable { .. }
            | Self::ResourceExhausted { .. }
            | Self::Timeout { .. }
            | Self::Contextual { .. } => Self::Contextual { source: Box::new(self), context: context.into() },
            other => other,
        }
    }

    /// The innermost error under `Contextual` wrappers.
    pub fn root(&self) -> &EngineError {
        match self {
            Self::Contextual { source, .. } => source.root(),
            other => other,
        }
    }

    /// How a caller should react (spec 01 §15.4).
    pub fn class(&self) -> ErrorClass {
        use StateKind as S;
        match self {
            Self::Contention(_) | Self::ResourceExhausted { .. } => ErrorClass::Retryable,
            Self::State(S::BudgetExceeded) => ErrorClass::Cooperative,
            Self::State(
                S::ExecutionNotSuspended
                | S::AlreadySuspended
                | S::AlreadySatisfied
                | S::WaitpointClosed
                | S::DuplicateSignal
                | S::GrantAlreadyExists
                | S::OkAlreadyApplied
                | S::AttemptAlreadyTerminal
                | S::StreamAlreadyClosed
                | S::BudgetSoftExceeded
                | S::WaitpointNotOpen
                | S::WaitpointNotPending
                | S::PendingWaitpointExpired
                | S::NotBlockedByDeps
                | S::DepsNotSatisfied,
            ) => ErrorClass::Informational,
            Self::State(_) => ErrorClass::Terminal,
            Self::Bug { .. } => ErrorClass::Bug,
            Self::StreamBackpressure => ErrorClass::Informational,
            Self::Transport { kind, .. } if kind.is_retryable() => ErrorClass::Retryable,
            Self::Contextual { source, .. } => source.class(),
            _ => ErrorClass::Terminal,
        }
    }

    /// Whether retrying can help.
    pub fn status(&self) -> ErrorStatus {
        match self.class() {
            ErrorClass::Retryable => ErrorStatus::Temporary,
            _ => ErrorStatus::Permanent,
        }
    }

    /// Builds the typed error for a wire code and its detail slots (spec 01 §15.3).
    pub fn from_code(code: &str, details: &[String]) -> Self {
        let first = || details.first().cloned().unwrap_or_default();
        let slot = |i: usize| details.get(i).cloned().unwrap_or_default();
        if let Some(entity) = not_found_entity(code) {
            return Self::NotFound { entity };
        }
        if let Some(kind) = validation_kind(code) {
            let carries = matches!(
                kind,
                ValidationKind::InvalidInput
                    | ValidationKind::CapabilityMismatch
                    | ValidationKind::InvalidCapabilities
                    | ValidationKind::InvalidPolicyJson
                    | ValidationKind::InvalidTagKey
            );
            return Self::Validation { kind, detail: if carries { first() } else { String::new() } };
        }
        if code == "execution_not_active" {
            return Self::Contention(ContentionKind::ExecutionNotActive {
                terminal_outcome: slot(0),
                lease_epoch: slot(1),
                lifecycle_phase: slot(2),
                attempt_id: slot(3),
            });
        }
        if let Some(kind) = contention_kind(code) {
            return Self::Contention(kind);
        }
        if let Some(kind) = conflict_kind(code, first()) {
            return Self::Conflict(kind);
        }
        if code.starts_with("already_member_of_different_flow") {
            return Self::Conflict(ConflictKind::ExecutionAlreadyInFlow);
        }
        if let Some(kind) = state_kind(code) {
            return Self::State(kind);
        }
        match code {
            "attempt_not_in_created_state" => {
                Self::Bug { kind: BugKind::AttemptNotInCreatedState, detail: first() }
            }
            "invariant_violation" => Self::Bug { kind: BugKind::InvariantViolation, detail: first() },
            "fence_required" | "partial_fence_triple" => Self::invalid_input(code),
            "missing_token" | "token_expired" => Self::validation(ValidationKind::InvalidToken, code),
            "invalid_keys_missing_hmac"
            | "hmac_secret_not_initialized"
            | "invalid_secret"
            | "additional_waitpoint_binding_malformed"
            | "use_pending_with_extras_unsupported" => Self::invalid_input(code),
            "corruption" => Self::validation(ValidationKind::Corruption, first()),
            "invalid_args" => Self::invalid_input(first()),
            other => Self::protocol("engine", format!("unknown error code: {other}")),
        }
    }

    /// The wire code this error maps from, where there is one.
    pub fn code(&self) -> Option<&'static str> {
        match self.root() {
            Self::NotFound { entity } => Some(match *entity {
                "flow" => "flow_not_found",
                "attempt" => "attempt_not_found",
                "budget" => "budget_not_found",
                "quota_policy" => "quota_policy_not_found",
                "stream" => "stream_not_found",
                "worker" => "worker_not_found",
                _ => "execution_not_found",
            }),
            Self::Validation { kind, detail } => Some(validation_code(*kind, detail)),
            Self::Contention(k) => Some(contention_code(k)),
            Self::Conflict(k) => Some(conflict_code(k)),
            Self::State(k) => Some(state_code(*k)),
            Self::Bug { kind: BugKind::AttemptNotInCreatedState, .. } => Some("attempt_not_in_created_state"),
            Self::Bug { kind: BugKind::InvariantViolation, .. } => Some("invariant_violation"),
            _ => None,
        }
    }
}

macro_rules! code_table {
    ($to:ident, $from:ident, $ty:ty { $($code:literal => $variant:ident),* $(,)? }) => {
        fn $from(code: &str) -> Option<$ty> {
            match code {
                $($code => Some(<$ty>::$variant),)*
                _ => None,
            }
        }
        #[allow(unreachable_patterns)]
        fn $to(kind: $ty) -> &'static str {
            match kind {
                $(<$ty>::$variant => $code,)*
                _ => "unknown",
            }
        }
    };
}

code_table!(validation_code_plain, validation_kind, ValidationKind {
    "invalid_input" => InvalidInput,
    "capability_mismatch" => CapabilityMismatch,
    "invalid_capabilities" => InvalidCapabilities,
    "invalid_policy_json" => InvalidPolicyJson,
    "payload_too_large" => PayloadTooLarge,
    "signal_limit_exceeded" => SignalLimitExceeded,
    "invalid_waitpoint_key" => InvalidWaitpointKey,
    "invalid_token" => InvalidToken,
    "waitpoint_not_token_bound" => WaitpointNotTokenBound,
    "retention_limit_exceeded" => RetentionLimitExceeded,
    "invalid_lease_for_suspend" => InvalidLeaseForSuspend,
    "invalid_dependency" => InvalidDependency,
    "invalid_waitpoint_for_execution" => InvalidWaitpointForExecution,
    "invalid_blocking_reason" => InvalidBlockingReason,
    "invalid_offset" => InvalidOffset,
    "unauthorized" => Unauthorized,
    "invalid_budget_scope" => InvalidBudgetScope,
    "budget_override_not_allowed" => BudgetOverrideNotAllowed,
    "invalid_quota_spec" => InvalidQuotaSpec,
    "invalid_kid" => InvalidKid,
    "invalid_secret_hex" => InvalidSecretHex,
    "invalid_grace_ms" => InvalidGraceMs,
    "invalid_tag_key" => InvalidTagKey,
    "invalid_frame_type" => InvalidFrameType,
    "corruption" => Corruption,
    "handle_from_other_backend" => HandleFromOtherBackend,
});

/// Validation codes; `invalid_input` details that name a wire-only code keep it.
fn validation_code(kind: ValidationKind, detail: &str) -> &'static str {
    match (kind, detail) {
        (ValidationKind::InvalidInput, "fence_required") => "fence_required",
        (ValidationKind::InvalidInput, "partial_fence_triple") => "partial_fence_triple",
        _ => validation_code_plain(kind),
    }
}

fn not_found_entity(code: &str) -> Option<&'static str> {
    Some(match code {
        "execution_not_found" => "execution",
        "flow_not_found" => "flow",
        "attempt_not_found" => "attempt",
        "budget_not_found" => "budget",
        "quota_policy_not_found" => "quota_policy",
        "stream_not_found" => "stream",
        "worker_not_found" => "worker",
        _ => return None,
    })
}

fn contention_kind(code: &str) -> Option<ContentionKind> {
    use ContentionKind as C;
    Some(match code {
        "use_claim_resumed_execution" => C::UseClaimResumedExecution,
        "not_a_resumed_execution" => C::NotAResumedExecution,
        "execution_not_leaseable" => C::ExecutionNotLeaseable,
        "lease_conflict" => C::LeaseConflict,
        "invalid_claim_grant" => C::InvalidClaimGrant,
        "claim_grant_expired" => C::ClaimGrantExpired,
        "no_eligible_execution" => C::NoEligibleExecution,
        "waitpoint_not_found" => C::WaitpointNotFound,
        "waitpoint_pending_use_buffer_script" => C::WaitpointPendingUseBufferScript,
        "stale_graph_revision" => C::StaleGraphRevision,
        "execution_not_eligible" => C::ExecutionNotEligible,
        "execution_not_in_eligible_set" => C::ExecutionNotInEligibleSet,
        "execution_not_reclaimable" => C::ExecutionNotReclaimable,
        "no_active_lease" => C::NoActiveLease,
        "rate_limit_exceeded" => C::RateLimitExceeded,
        "concurrency_limit_exceeded" => C::ConcurrencyLimitExceeded,
        "retry_exhausted" => C::RetryExhausted,
        _ => return None,
    })
}

fn contention_code(kind: &ContentionKind) -> &'static str {
    use ContentionKind as C;
    match kind {
        C::UseClaimResumedExecution => "use_claim_resumed_execution",
        C::NotAResumedExecution => "not_a_resumed_execution",
        C::ExecutionNotLeaseable => "execution_not_leaseable",
        C::LeaseConflict => "lease_conflict",
        C::InvalidClaimGrant => "invalid_claim_grant",
        C::ClaimGrantExpired => "claim_grant_expired",
        C::NoEligibleExecution => "no_eligible_execution",
        C::WaitpointNotFound => "waitpoint_not_found",
        C::WaitpointPendingUseBufferScript => "waitpoint_pending_use_buffer_script",
        C::StaleGraphRevision => "stale_graph_revision",
        C::ExecutionNotActive { .. } => "execution_not_active",
        C::ExecutionNotEligible => "execution_not_eligible",
        C::ExecutionNotInEligibleSet => "execution_not_in_eligible_set",
        C::ExecutionNotReclaimable => "execution_not_reclaimable",
        C::NoActiveLease => "no_active_lease",
        C::RateLimitExceeded => "rate_limit_exceeded",
        C::ConcurrencyLimitExceeded => "concurrency_limit_exceeded",
        C::RetryExhausted => "retry_exhausted",
    }
}

fn conflict_kind(code: &str, detail: String) -> Option<ConflictKind> {
    use ConflictKind as C;
    Some(match code {
        "cycle_detected" => C::CycleDetected,
        "self_referencing_edge" => C::SelfReferencingEdge,
        "execution_already_in_flow" => C::ExecutionAlreadyInFlow,
        "waitpoint_already_exists" => C::WaitpointAlreadyExists,
        "budget_attach_conflict" => C::BudgetAttachConflict,
        "quota_attach_conflict" => C::QuotaAttachConflict,
        "active_attempt_exists" => C::ActiveAttemptExists,
        "rotation_conflict" => C::RotationConflict(detail),
        "dependency_already_exists" => C::DependencyAlreadyExists(detail),
        _ => return None,
    })
}

fn conflict_code(kind: &ConflictKind) -> &'static str {
    use ConflictKind as C;
    match kind {
        C::CycleDetected => "cycle_detected",
        C::SelfReferencingEdge => "self_referencing_edge",
        C::ExecutionAlreadyInFlow => "execution_already_in_flow",
        C::WaitpointAlreadyExists => "waitpoint_already_exists",
        C::BudgetAttachConflict => "budget_attach_conflict",
        C::QuotaAttachConflict => "quota_attach_conflict",
        C::RotationConflict(_) => "rotation_conflict",
        C::ActiveAttemptExists => "active_attempt_exists",
        C::DependencyAlreadyExists(_) => "dependency_already_exists",
    }
}

code_table!(state_code, state_kind, StateKind {
    "stale_lease" => StaleLease,
    "lease_expired" => LeaseExpired,
    "lease_revoked" => LeaseRevoked,
    "execution_not_suspended" => ExecutionNotSuspended,
    "already_suspended" => AlreadySuspended,
    "waitpoint_closed" => WaitpointClosed,
    "target_not_signalable" => TargetNotSignalable,
    "duplicate_signal" => DuplicateSignal,
    "resume_condition_not_met" => ResumeConditionNotMet,
    "waitpoint_not_pending" => WaitpointNotPending,
    "pending_waitpoint_expired" => PendingWaitpointExpired,
    "waitpoint_not_open" => WaitpointNotOpen,
    "execution_not_terminal" => ExecutionNotTerminal,
    "max_replays_exhausted" => MaxReplaysExhausted,
    "stream_closed" => StreamClosed,
    "stale_owner_cannot_append" => StaleOwnerCannotAppend,
    "grant_already_exists" => GrantAlreadyExists,
    "execution_not_in_flow" => ExecutionNotInFlow,
    "flow_already_terminal" => FlowAlreadyTerminal,
    "deps_not_satisfied" => DepsNotSatisfied,
    "not_blocked_by_deps" => NotBlockedByDeps,
    "not_runnable" => NotRunnable,
    "terminal" => Terminal,
    "budget_exceeded" => BudgetExceeded,
    "budget_soft_exceeded" => BudgetSoftExceeded,
    "ok_already_applied" => OkAlreadyApplied,
    "attempt_not_started" => AttemptNotStarted,
    "attempt_already_terminal" => AttemptAlreadyTerminal,
    "execution_not_eligible_for_attempt" => ExecutionNotEligibleForAttempt,
    "replay_not_allowed" => ReplayNotAllowed,
    "max_retries_exhausted" => MaxRetriesExhausted,
    "stream_already_closed" => StreamAlreadyClosed,
    "already_satisfied" => AlreadySatisfied,
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code the spec's mapping table names, in one list.
    const CODES: &[&str] = &[
        "execution_not_found",
        "flow_not_found",
        "attempt_not_found",
        "budget_not_found",
        "quota_policy_not_found",
        "stream_not_found",
        "invalid_input",
        "capability_mismatch",
        "invalid_capabilities",
        "invalid_policy_json",
        "invalid_tag_key",
        "payload_too_large",
        "signal_limit_exceeded",
        "invalid_waitpoint_key",
        "invalid_token",
        "waitpoint_not_token_bound",
        "retention_limit_exceeded",
        "invalid_lease_for_suspend",
        "invalid_dependency",
        "invalid_waitpoint_for_execution",
        "invalid_blocking_reason",
        "invalid_offset",
        "unauthorized",
        "invalid_budget_scope",
        "budget_override_not_allowed",
        "invalid_quota_spec",
        "invalid_kid",
        "invalid_secret_hex",
        "invalid_grace_ms",
        "invalid_frame_type",
        "use_claim_resumed_execution",
        "not_a_resumed_execution",
        "execution_not_leaseable",
        "lease_conflict",
        "invalid_claim_grant",
        "claim_grant_expired",
        "no_eligible_execution",
        "waitpoint_not_found",
        "waitpoint_pending_use_buffer_script",
        "stale_graph_revision",
        "execution_not_eligible",
        "execution_not_in_eligible_set",
        "execution_not_reclaimable",
        "no_active_lease",
        "rate_limit_exceeded",
        "concurrency_limit_exceeded",
        "execution_not_active",
        "cycle_detected",
        "self_referencing_edge",
        "execution_already_in_flow",
        "waitpoint_already_exists",
        "budget_attach_conflict",
        "quota_attach_conflict",
        "active_attempt_exists",
        "rotation_conflict",
        "dependency_already_exists",
        "stale_lease",
        "lease_expired",
        "lease_revoked",
        "execution_not_suspended",
        "already_suspended",
        "waitpoint_closed",
        "target_not_signalable",
        "duplicate_signal",
        "resume_condition_not_met",
        "waitpoint_not_pending",
        "pending_waitpoint_expired",
        "waitpoint_not_open",
        "execution_not_terminal",
        "max_replays_exhausted",
        "stream_closed",
        "stale_owner_cannot_append",
        "grant_already_exists",
        "execution_not_in_flow",
        "flow_already_terminal",
        "deps_not_satisfied",
        "not_blocked_by_deps",
        "not_runnable",
        "terminal",
        "budget_exceeded",
        "budget_soft_exceeded",
        "ok_already_applied",
        "attempt_not_started",
        "attempt_already_terminal",
        "execution_not_eligible_for_attempt",
        "replay_not_allowed",
        "max_retries_exhausted",
        "stream_already_closed",
        "attempt_not_in_created_state",
        "fence_required",
        "partial_fence_triple",
        "invariant_violation",
        "corruption",
    ];

    #[test]
    fn every_spec_code_maps_to_a_typed_error_and_back() {
        for code in CODES {
            let err = EngineError::from_code(code, &["d".into()]);
            assert!(!matches!(err, EngineError::Transport { .. }), "{code} mapped to transport");
            assert_eq!(err.code(), Some(*code), "round trip of {code}");
        }
    }

    #[test]
    fn wire_only_codes_map_per_spec() {
        let e = EngineError::from_code("missing_token", &[]);
        assert!(matches!(e, EngineError::Validation { kind: ValidationKind::InvalidToken, .. }));
        let e = EngineError::from_code("already_member_of_different_flow:abc", &[]);
        assert!(matches!(e, EngineError::Conflict(ConflictKind::ExecutionAlreadyInFlow)));
        let e = EngineError::from_code("hmac_secret_not_initialized", &[]);
        assert!(matches!(e, EngineError::Validation { kind: ValidationKind::InvalidInput, .. }));
        let e = EngineError::from_code("no_such_code", &[]);
        assert!(matches!(e, EngineError::Transport { kind: BackendErrorKind::Protocol, .. }));
    }

    #[test]
    fn execution_not_active_carries_four_slots() {
        let d: Vec<String> = ["success", "3", "terminal", "a"].iter().map(|s| s.to_string()).collect();
        match EngineError::from_code("execution_not_active", &d) {
            EngineError::Contention(ContentionKind::ExecutionNotActive {
                terminal_outcome,
                lease_epoch,
                lifecycle_phase,
                attempt_id,
            }) => {
                assert_eq!(
                    (
                        terminal_outcome.as_str(),
                        lease_epoch.as_str(),
                        lifecycle_phase.as_str(),
                        attempt_id.as_str()
                    ),
                    ("success", "3", "terminal", "a")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn classification_follows_spec() {
        assert_eq!(EngineError::Contention(ContentionKind::LeaseConflict).class(), ErrorClass::Retryable);
        assert_eq!(EngineError::State(StateKind::StaleLease).class(), ErrorClass::Terminal);
        assert_eq!(EngineError::State(StateKind::BudgetExceeded).class(), ErrorClass::Cooperative);
        assert_eq!(EngineError::State(StateKind::GrantAlreadyExists).class(), ErrorClass::Informational);
        assert_eq!(EngineError::invalid_input("x").status(), ErrorStatus::Permanent);
        let t = EngineError::transport("valkey", BackendErrorKind::Transport, "io".into());
        assert_eq!(t.status(), ErrorStatus::Temporary);
        let ctx = t.backend_context("claim");
        assert_eq!(ctx.class(), ErrorClass::Retryable);
        let typed = EngineError::State(StateKind::LeaseExpired).backend_context("x");
        assert!(matches!(typed, EngineError::State(StateKind::LeaseExpired)));
    }
}
