//! Suspension, waitpoints and signals: the contract types and their validation
//! (spec 02 §3–§9).

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::handle::Handle;
use crate::ids::{AttemptIndex, ExecutionId, LeaseFence, SignalId, SuspensionId, TimestampMs, WaitpointId};
use crate::state::{BlockingReason, PublicState};

/// Deepest composite nesting accepted.
pub const COMPOSITE_DEPTH_MAX: usize = 4;
/// `timeout_at` may lie this far in the past (clock skew), in ms.
pub const TIMEOUT_SKEW_MS_MAX: i64 = 600_000;
/// Default signal dedup window, in ms.
pub const SIGNAL_DEDUP_TTL_MS_DEFAULT: u64 = 86_400_000;
/// Default cap on signals per execution.
pub const SIGNALS_PER_EXECUTION_MAX_DEFAULT: u64 = 10_000;
/// Default length of a waitpoint's signal log.
pub const SIGNAL_LOG_LEN_DEFAULT: u64 = 1_000;
/// Suspend dedup record grace after the timeout, in ms.
pub const SUSPEND_DEDUP_GRACE_MS: i64 = 60_000;
/// Longest suspend dedup window, in ms (7 days).
pub const SUSPEND_DEDUP_TTL_MS_MAX: i64 = 604_800_000;
/// Suspended-index score when there is no timeout.
pub const SUSPENDED_NO_TIMEOUT_SCORE: i64 = 9_999_999_999_999;

/// Which signals a condition leaf accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name")]
pub enum SignalMatcher {
    /// Exact, case-sensitive signal name.
    ByName(String),
    /// Any signal.
    Wildcard,
}

impl SignalMatcher {
    /// Whether the matcher accepts a signal name.
    pub fn accepts(&self, signal_name: &str) -> bool {
        match self {
            Self::ByName(n) => n == signal_name,
            Self::Wildcard => true,
        }
    }
}

/// What a `Count` node counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CountKind {
    /// Distinct waitpoints that received an accepted signal.
    DistinctWaitpoints,
    /// Distinct signal ids.
    DistinctSignals,
    /// Distinct `(source_type, source_identity)` pairs.
    DistinctSources,
}

/// A multi-signal composition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum CompositeBody {
    /// Every member satisfied.
    AllOf {
        /// Members.
        members: Vec<ResumeCondition>,
    },
    /// At least `n` distinct satisfiers among accepted signals on `waitpoints`.
    Count {
        /// Threshold.
        n: u32,
        /// What counts as distinct.
        count_kind: CountKind,
        /// `None` accepts any signal.
        matcher: Option<SignalMatcher>,
        /// Waitpoint keys the node listens on.
        waitpoints: Vec<String>,
    },
}

/// When a suspension resumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ResumeCondition {
    /// One accepted signal on the waitpoint.
    Single {
        /// The waitpoint key.
        waitpoint_key: String,
        /// The matcher.
        matcher: SignalMatcher,
    },
    /// Only an operator resume (or the timeout) ends it.
    OperatorOnly,
    /// Only the timeout (or an operator resume) ends it.
    TimeoutOnly,
    /// A composition.
    Composite(CompositeBody),
}

impl ResumeCondition {
    /// `AllOf` of wildcard leaves on the given keys.
    pub fn all_of_waitpoints<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        let members = keys
            .into_iter()
            .map(|k| Self::Single { waitpoint_key: k.into(), matcher: SignalMatcher::Wildcard })
            .collect();
        Self::Composite(CompositeBody::AllOf { members })
    }

    /// Distinct waitpoint keys referenced, in DFS order.
    pub fn referenced_waitpoint_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        fn walk(c: &ResumeCondition, out: &mut Vec<String>) {
            let mut push = |k: &String| {
                if !out.contains(k) {
                    out.push(k.clone());
                }
            };
            match c {
                ResumeCondition::Single { waitpoint_key, .. } => push(waitpoint_key),
                ResumeCondition::Composite(CompositeBody::Count { waitpoints, .. }) => {
                    waitpoints.iter().for_each(push)
                }
                ResumeCondition::Composite(CompositeBody::AllOf { members }) => {
                    members.iter().for_each(|m| walk(m, out))
                }
                _ => {}
            }
        }
        walk(self, &mut out);
        out
    }

    /// Validates a composite tree (spec 02 §4.3).
    pub fn validate_composite(&self) -> Result<(), String> {
        fn check(body: &CompositeBody, depth: usize, path: &str) -> Result<(), String> {
            if depth > COMPOSITE_DEPTH_MAX {
                return Err(format!("depth {depth} exceeds cap {COMPOSITE_DEPTH_MAX} at path {path}"));
            }
            match body {
                CompositeBody::AllOf { members } => {
                    if members.is_empty() {
                        return Err(format!("allof_empty_members at path {path}"));
                    }
                    for (i, m) in members.iter().enumerate() {
                        let child = if path == "<root>" {
                            format!("members[{i}]")
                        } else {
                            format!("{path}.members[{i}]")
                        };
                        if let ResumeCondition::Composite(inner) = m {
                            check(inner, depth + 1, &child)?;
                        }
                    }
                    Ok(())
                }
                CompositeBody::Count { n, count_kind, waitpoints, .. } => {
                    if *n == 0 {
                        return Err(format!("count_n_zero at path {path}"));
                    }
                    if waitpoints.is_empty() {
                        return Err(format!("count_waitpoints_empty at path {path}"));
                    }
                    if *count_kind == CountKind::DistinctWaitpoints && *n as usize > waitpoints.len() {
                        return Err(format!(
                            "count_exceeds_waitpoint_set: n={n} > waitpoints.len()={} at path {path}",
                            waitpoints.len()
                        ));
                    }
                    Ok(())
                }
            }
        }
        match self {
            Self::Composite(body) => check(body, 1, "<root>"),
            _ => Ok(()),
        }
    }
}

/// How a waitpoint is bound by a suspend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WaitpointBinding {
    /// Mint a new active waitpoint in the suspend call.
    Fresh {
        /// Its id.
        waitpoint_id: WaitpointId,
        /// Its key.
        waitpoint_key: String,
    },
    /// Activate a pending waitpoint created earlier.
    UsePending {
        /// Its id.
        waitpoint_id: WaitpointId,
    },
}

impl WaitpointBinding {
    /// The bound waitpoint id.
    pub fn waitpoint_id(&self) -> WaitpointId {
        match self {
            Self::Fresh { waitpoint_id, .. } | Self::UsePending { waitpoint_id } => *waitpoint_id,
        }
    }
}

/// Stored-only resume policy (spec 02 §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResumePolicy {
    /// Always `runnable`.
    pub resume_target: String,
    /// Stored only.
    pub consume_matched_signals: bool,
    /// Stored only.
    pub retain_signal_buffer_until_closed: bool,
    /// Stored only (the delivered signal's delay applies).
    pub resume_delay_ms: Option<u64>,
    /// Stored only (waitpoints always close on resume).
    pub close_waitpoint_on_resume: bool,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        Self {
            resume_target: "runnable".into(),
            consume_matched_signals: true,
            retain_signal_buffer_until_closed: false,
            resume_delay_ms: None,
            close_waitpoint_on_resume: true,
        }
    }
}

macro_rules! wire {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $v:ident = $w:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $v,)*
        }

        impl $name {
            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $w,)* }
            }
        }
    };
}

wire!(
    /// What happens at the suspension deadline (spec 02 §4.5).
    TimeoutBehavior {
        /// Terminal `failed`.
        #[default]
        Fail = "fail",
        /// Terminal `cancelled`.
        Cancel = "cancel",
        /// Terminal `expired`.
        Expire = "expire",
        /// Resumed to eligible.
        AutoResumeWithTimeoutSignal = "auto_resume_with_timeout_signal",
        /// Stays suspended for an operator.
        Escalate = "escalate",
    }
);

wire!(
    /// Why an execution suspends (spec 02 §4.6).
    SuspensionReasonCode {
        /// Waiting for a signal.
        #[default]
        WaitingForSignal = "waiting_for_signal",
        /// Waiting for an approval.
        WaitingForApproval = "waiting_for_approval",
        /// Waiting for a callback.
        WaitingForCallback = "waiting_for_callback",
        /// Waiting for a tool result.
        WaitingForToolResult = "waiting_for_tool_result",
        /// Waiting for operator review.
        WaitingForOperatorReview = "waiting_for_operator_review",
        /// Paused by policy.
        PausedByPolicy = "paused_by_policy",
        /// Paused by budget.
        PausedByBudget = "paused_by_budget",
        /// A step boundary.
        StepBoundary = "step_boundary",
        /// A manual pause.
        ManualPause = "manual_pause",
    }
);

impl SuspensionReasonCode {
    /// The blocking reason set on suspend.
    pub fn blocking_reason(self) -> BlockingReason {
        match self {
            Self::WaitingForSignal | Self::StepBoundary => BlockingReason::WaitingForSignal,
            Self::WaitingForApproval => BlockingReason::WaitingForApproval,
            Self::WaitingForCallback => BlockingReason::WaitingForCallback,
            Self::WaitingForToolResult => BlockingReason::WaitingForToolResult,
            Self::WaitingForOperatorReview | Self::ManualPause => BlockingReason::PausedByOperator,
            Self::PausedByPolicy => BlockingReason::PausedByPolicy,
            Self::PausedByBudget => BlockingReason::WaitingForBudget,
        }
    }
}

wire!(
    /// Who asked for the suspension (stored only).
    SuspensionRequester {
        /// The worker.
        #[default]
        Worker = "worker",
        /// An operator.
        Operator = "operator",
        /// A policy.
        Policy = "policy",
        /// A system timeout policy.
        SystemTimeoutPolicy = "system_timeout_policy",
    }
);

/// Arguments of a suspend (spec 02 §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendArgs {
    /// Client-minted suspension id.
    pub suspension_id: SuspensionId,
    /// Non-empty; `[0]` is the primary.
    pub waitpoints: Vec<WaitpointBinding>,
    /// When it resumes.
    pub resume_condition: ResumeCondition,
    /// Stored only.
    #[serde(default)]
    pub resume_policy: ResumePolicy,
    /// Why.
    #[serde(default)]
    pub reason_code: SuspensionReasonCode,
    /// Who.
    #[serde(default)]
    pub requested_by: SuspensionRequester,
    /// Absolute deadline.
    #[serde(default)]
    pub timeout_at: Option<TimestampMs>,
    /// What happens at the deadline.
    #[serde(default)]
    pub timeout_behavior: TimeoutBehavior,
    /// Opaque, stored.
    #[serde(default)]
    pub continuation_metadata_pointer: Option<String>,
    /// Retry-safe suspend key (empty = none).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

fn invalid(detail: impl Into<String>) -> EngineError {
    EngineError::invalid_input(detail)
}

impl SuspendArgs {
    /// A suspend on one fresh waitpoint.
    pub fn new(
        suspension_id: SuspensionId,
        primary: WaitpointBinding,
        resume_condition: ResumeCondition,
        reason_code: SuspensionReasonCode,
    ) -> Self {
        Self {
            suspension_id,
            waitpoints: vec![primary],
            resume_condition,
            resume_policy: ResumePolicy::default(),
            reason_code,
            requested_by: SuspensionRequester::Worker,
            timeout_at: None,
            timeout_behavior: TimeoutBehavior::Fail,
            continuation_metadata_pointer: None,
            idempotency_key: None,
        }
    }

    /// With a deadline.
    pub fn with_timeout(mut self, at: TimestampMs, behavior: TimeoutBehavior) -> Self {
        self.timeout_at = Some(at);
        self.timeout_behavior = behavior;
        self
    }

    /// Rust-side validation before any store access (spec 02 §4.9).
    pub fn validate(&self, now: TimestampMs) -> Result<(), EngineError> {
        let Some(primary) = self.waitpoints.first() else { return Err(invalid("waitpoints_empty")) };
        if let (
            WaitpointBinding::Fresh { waitpoint_key, .. },
            ResumeCondition::Single { waitpoint_key: k, .. },
        ) = (primary, &self.resume_condition)
            && waitpoint_key != k
        {
            return Err(invalid("waitpoint_key_mismatch"));
        }
        if self.waitpoints.len() > 1 {
            self.validate_extras(primary)?;
        }
        if self.resume_condition == ResumeCondition::TimeoutOnly && self.timeout_at.is_none() {
            return Err(invalid("timeout_only_without_deadline"));
        }
        if matches!(&self.resume_condition, ResumeCondition::Single { matcher: SignalMatcher::ByName(n), .. } if n.is_empty())
        {
            return Err(invalid("resume_condition: empty signal name (use Wildcard instead)"));
        }
        if let Some(t) = self.timeout_at
            && t.saturating_add(TIMEOUT_SKEW_MS_MAX) < now
        {
            return Err(invalid("timeout_at_in_past"));
        }
        self.resume_condition.validate_composite().map_err(invalid)?;
        for b in &self.waitpoints {
            if let WaitpointBinding::Fresh { waitpoint_key, .. } = b
                && waitpoint_key.len() > crate::contracts::NAME_BYTES_MAX
            {
                return Err(invalid("waitpoint_key: longer than 256 bytes"));
            }
        }
        Ok(())
    }

    fn validate_extras(&self, primary: &WaitpointBinding) -> Result<(), EngineError> {
        if matches!(primary, WaitpointBinding::UsePending { .. }) {
            return Err(invalid("use_pending_with_extras_unsupported"));
        }
        for (i, b) in self.waitpoints.iter().enumerate().skip(1) {
            match b {
                WaitpointBinding::Fresh { waitpoint_key, .. } if waitpoint_key.is_empty() => {
                    return Err(invalid(format!(
                        "additional_waitpoint_binding_empty_key at waitpoints[{i}]"
                    )));
                }
                WaitpointBinding::Fresh { .. } => {}
                WaitpointBinding::UsePending { .. } => {
                    return Err(invalid(format!(
                        "additional_waitpoint_binding_must_be_fresh at waitpoints[{i}]"
                    )));
                }
            }
        }
        let bound: Vec<&str> = self
            .waitpoints
            .iter()
            .filter_map(|b| match b {
                WaitpointBinding::Fresh { waitpoint_key, .. } => Some(waitpoint_key.as_str()),
                WaitpointBinding::UsePending { .. } => None,
            })
            .collect();
        let referenced = self.resume_condition.referenced_waitpoint_keys();
        if let Some(k) = referenced.iter().find(|k| !bound.contains(&k.as_str())) {
            return Err(invalid(format!("referenced_waitpoint_key_missing_binding: {k}")));
        }
        if let Some(k) = bound.iter().find(|k| !referenced.iter().any(|r| r == *k)) {
            return Err(invalid(format!("extra_binding_not_referenced_by_condition: {k}")));
        }
        Ok(())
    }
}

/// A suspend fenced by an explicit lease triple (the primitive behind `suspend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendByTripleArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Must equal `current_attempt_index`.
    pub attempt_index: AttemptIndex,
    /// The lease fence (required).
    pub fence: Option<LeaseFence>,
    /// The suspend itself.
    pub args: SuspendArgs,
}

/// One bound waitpoint in a suspend outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundWaitpoint {
    /// Id.
    pub waitpoint_id: WaitpointId,
    /// Key.
    pub waitpoint_key: String,
    /// Its HMAC token.
    pub waitpoint_token: String,
}

/// What a suspend bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendOutcomeDetails {
    /// The suspension.
    pub suspension_id: SuspensionId,
    /// The primary waitpoint.
    pub primary: BoundWaitpoint,
    /// Extra bindings.
    pub additional_waitpoints: Vec<BoundWaitpoint>,
}

/// Result of a suspend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SuspendOutcome {
    /// Parked; the lease is released. `handle` is a `Suspended` handle.
    Suspended {
        /// What was bound.
        details: SuspendOutcomeDetails,
        /// The parked attempt's handle (no lease).
        handle: Option<Handle>,
    },
    /// Buffered signals already satisfied the pending waitpoint; nothing changed.
    AlreadySatisfied {
        /// What was bound.
        details: SuspendOutcomeDetails,
    },
}

/// Arguments of `create_pending_waitpoint` (spec 02 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWaitpointArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Must equal `current_attempt_index`.
    pub attempt_index: AttemptIndex,
    /// The holder's fence.
    pub fence: LeaseFence,
    /// Client-minted id.
    pub waitpoint_id: WaitpointId,
    /// The key (part of the MAC).
    pub waitpoint_key: String,
    /// Lifetime from now, in ms.
    pub expires_in_ms: u64,
}

/// A pending waitpoint and its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWaitpoint {
    /// Id.
    pub waitpoint_id: WaitpointId,
    /// Token `kid:40hex`.
    pub hmac_token: String,
}

/// Arguments of `deliver_signal` (spec 02 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverSignalArgs {
    /// Target execution.
    pub execution_id: ExecutionId,
    /// Target waitpoint.
    pub waitpoint_id: WaitpointId,
    /// Client-minted signal id.
    pub signal_id: SignalId,
    /// Name matched by matchers.
    pub signal_name: String,
    /// Stored.
    #[serde(default)]
    pub signal_category: String,
    /// Stored; part of the distinct-source token.
    #[serde(default)]
    pub source_type: String,
    /// Stored; part of the distinct-source token.
    #[serde(default)]
    pub source_identity: String,
    /// Payload bytes, stored exactly.
    #[serde(default)]
    pub payload: Option<Vec<u8>>,
    /// Stored (default `json`).
    #[serde(default)]
    pub payload_encoding: Option<String>,
    /// Stored.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Per-waitpoint dedup key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Caller's creation time (default now).
    #[serde(default)]
    pub created_at: Option<TimestampMs>,
    /// Dedup window (default 24 h; 0 disables).
    #[serde(default)]
    pub dedup_ttl_ms: Option<u64>,
    /// Delay before the resumed execution is eligible.
    #[serde(default)]
    pub resume_delay_ms: Option<u64>,
    /// Cap on signals per execution (default 10 000; 0 disables).
    #[serde(default)]
    pub max_signals_per_execution: Option<u64>,
    /// Waitpoint signal-log length (default 1000).
    #[serde(default)]
    pub signal_maxlen: Option<u64>,
    /// The HMAC token.
    pub waitpoint_token: String,
}

impl DeliverSignalArgs {
    /// A signal with only the required fields; every optional one takes its default.
    pub fn new(
        execution_id: ExecutionId,
        waitpoint_id: WaitpointId,
        signal_id: SignalId,
        signal_name: impl Into<String>,
        waitpoint_token: impl Into<String>,
    ) -> Self {
        Self {
            execution_id,
            waitpoint_id,
            signal_id,
            signal_name: signal_name.into(),
            signal_category: String::new(),
            source_type: String::new(),
            source_identity: String::new(),
            payload: None,
            payload_encoding: None,
            correlation_id: None,
            idempotency_key: None,
            created_at: None,
            dedup_ttl_ms: None,
            resume_delay_ms: None,
            max_signals_per_execution: None,
            signal_maxlen: None,
            waitpoint_token: waitpoint_token.into(),
        }
    }

    /// Checks sizes and names.
    pub fn validate(&self) -> Result<(), EngineError> {
        use crate::contracts::{NAME_BYTES_MAX, PAYLOAD_BYTES_MAX, TEXT_BYTES_MAX};
        for (field, v, max) in [
            ("signal_name", &self.signal_name, NAME_BYTES_MAX),
            ("signal_category", &self.signal_category, NAME_BYTES_MAX),
            ("source_type", &self.source_type, NAME_BYTES_MAX),
            ("source_identity", &self.source_identity, TEXT_BYTES_MAX),
            ("waitpoint_token", &self.waitpoint_token, NAME_BYTES_MAX),
        ] {
            if v.len() > max {
                return Err(invalid(format!("{field}: longer than {max} bytes")));
            }
        }
        if self.payload.as_ref().is_some_and(|p| p.len() > PAYLOAD_BYTES_MAX) {
            return Err(EngineError::validation(crate::error::ValidationKind::PayloadTooLarge, "payload"));
        }
        if let Some(d) = self.resume_delay_ms
            && d > crate::contracts::LEASE_TTL_MS_MAX
        {
            return Err(invalid("resume_delay_ms: over 24 h"));
        }
        Ok(())
    }
}

/// Result of a signal delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeliverSignalOutcome {
    /// Recorded; `effect` is the spec's effect string.
    Accepted {
        /// The signal.
        signal_id: SignalId,
        /// `resume_condition_satisfied`, `appended_to_waitpoint`, `no_op`, ….
        effect: String,
    },
    /// The idempotency key was seen on this waitpoint.
    Duplicate {
        /// The first signal with that key.
        existing_signal_id: SignalId,
    },
}

/// Arguments of an operator resume (spec 02 §9.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Delay before it becomes eligible.
    #[serde(default)]
    pub resume_delay_ms: u64,
}

/// Result of an operator resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeOutcome {
    /// `waiting` or `delayed`.
    pub public_state: PublicState,
}

/// Result of the suspension-timeout hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExpireSuspensionOutcome {
    /// The deadline fired.
    Expired {
        /// The behaviour applied.
        behavior_applied: TimeoutBehavior,
        /// The resulting public state.
        public_state: PublicState,
    },
    /// Nothing to do (`not_found_cleaned`, `not_suspended_cleaned`, `not_yet_due`, …).
    AlreadySatisfied {
        /// Why.
        reason: String,
    },
}

/// A signal that satisfied the last suspension of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeSignal {
    /// Id.
    pub signal_id: SignalId,
    /// Name.
    pub signal_name: String,
    /// Category.
    pub signal_category: String,
    /// Source type.
    pub source_type: String,
    /// Source identity.
    pub source_identity: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Acceptance time.
    pub accepted_at: TimestampMs,
    /// Payload.
    pub payload: Option<Vec<u8>>,
}

/// A waitpoint's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitpointState {
    /// Token minted, not bound to a suspension: signals are buffered.
    Pending,
    /// Bound to a suspension: signals are evaluated.
    Active,
    /// Terminal.
    Closed,
}

/// One open waitpoint as listed (the raw token is never returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWaitpointInfo {
    /// Id.
    pub waitpoint_id: WaitpointId,
    /// Key.
    pub waitpoint_key: String,
    /// `pending` or `active`.
    pub state: WaitpointState,
    /// Required signal names (empty for wildcard, operator-only, timeout-only, composite).
    pub required_signal_names: Vec<String>,
    /// Mint time.
    pub created_at: TimestampMs,
    /// Activation time.
    pub activated_at: Option<TimestampMs>,
    /// Expiry.
    pub expires_at: Option<TimestampMs>,
    /// Owning execution.
    pub execution_id: ExecutionId,
    /// The token's kid.
    pub token_kid: String,
    /// First 16 hex characters of the digest.
    pub token_fingerprint: String,
}

/// One suspended execution as listed (spec 02 §11.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendedExecutionEntry {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The suspended-index score: the timeout, or 9 999 999 999 999.
    pub suspended_at_ms: TimestampMs,
    /// The suspension's reason code.
    pub reason: String,
}

/// Arguments of `deliver_approval_signal` (spec 02 §11.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverApprovalSignalArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Must equal the execution's lane.
    pub lane_id: crate::ids::LaneId,
    /// The waitpoint.
    pub waitpoint_id: WaitpointId,
    /// Client-minted signal id.
    pub signal_id: SignalId,
    /// Conventionally `approved` / `rejected`.
    pub signal_name: String,
    /// Makes the dedup key `approval:<name>:<suffix>`.
    pub idempotency_suffix: String,
    /// Dedup window.
    #[serde(default)]
    pub signal_dedup_ttl_ms: Option<u64>,
    /// Waitpoint signal-log length.
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// Cap on signals per execution.
    #[serde(default)]
    pub max_signals_per_execution: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn wp(n: u64, key: &str) -> WaitpointBinding {
        WaitpointBinding::Fresh {
            waitpoint_id: WaitpointId::from_uuid(Uuid::from_u64_pair(1, n)),
            waitpoint_key: key.into(),
        }
    }

    fn single(key: &str) -> ResumeCondition {
        ResumeCondition::Single { waitpoint_key: key.into(), matcher: SignalMatcher::Wildcard }
    }

    fn args(bindings: Vec<WaitpointBinding>, c: ResumeCondition) -> SuspendArgs {
        let mut a = SuspendArgs::new(
            SuspensionId::default(),
            bindings[0].clone(),
            c,
            SuspensionReasonCode::WaitingForSignal,
        );
        a.waitpoints = bindings;
        a
    }

    fn detail(r: Result<(), EngineError>) -> String {
        match r {
            Err(EngineError::Validation { detail, .. }) => detail,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn validation_rules_in_order() {
        assert_eq!(detail(args(vec![wp(1, "a")], single("a")).validate(0)), "()".replace("()", "Ok(())"));
        let mut empty = args(vec![wp(1, "a")], single("a"));
        empty.waitpoints.clear();
        assert_eq!(detail(empty.validate(0)), "waitpoints_empty");
        assert_eq!(detail(args(vec![wp(1, "a")], single("b")).validate(0)), "waitpoint_key_mismatch");
        let all = ResumeCondition::all_of_waitpoints(["a", "b"]);
        assert_eq!(
            detail(args(vec![wp(1, "a"), wp(2, "")], all.clone()).validate(0)),
            "additional_waitpoint_binding_empty_key at waitpoints[1]"
        );
        let pending = WaitpointBinding::UsePending { waitpoint_id: WaitpointId::default() };
        assert_eq!(
            detail(args(vec![wp(1, "a"), pending.clone()], all.clone()).validate(0)),
            "additional_waitpoint_binding_must_be_fresh at waitpoints[1]"
        );
        assert_eq!(
            detail(args(vec![pending, wp(2, "b")], all.clone()).validate(0)),
            "use_pending_with_extras_unsupported"
        );
        assert_eq!(
            detail(args(vec![wp(1, "a"), wp(2, "c")], all.clone()).validate(0)),
            "referenced_waitpoint_key_missing_binding: b"
        );
        let three = ResumeCondition::all_of_waitpoints(["a", "b"]);
        assert_eq!(
            detail(args(vec![wp(1, "a"), wp(2, "b"), wp(3, "z")], three).validate(0)),
            "extra_binding_not_referenced_by_condition: z"
        );
        assert_eq!(
            detail(args(vec![wp(1, "a")], ResumeCondition::TimeoutOnly).validate(0)),
            "timeout_only_without_deadline"
        );
        let named = ResumeCondition::Single {
            waitpoint_key: "a".into(),
            matcher: SignalMatcher::ByName(String::new()),
        };
        assert!(
            detail(args(vec![wp(1, "a")], named).validate(0))
                .starts_with("resume_condition: empty signal name")
        );
        let past = args(vec![wp(1, "a")], single("a")).with_timeout(0, TimeoutBehavior::Fail);
        assert_eq!(detail(past.validate(600_001)), "timeout_at_in_past");
        assert_eq!(
            detail(
                args(vec![wp(1, "a")], single("a")).with_timeout(0, TimeoutBehavior::Fail).validate(600_000)
            ),
            "Ok(())"
        );
    }

    #[test]
    fn composite_rules() {
        let leaf = single("a");
        let mut deep = ResumeCondition::Composite(CompositeBody::AllOf { members: vec![leaf.clone()] });
        for _ in 0..3 {
            deep = ResumeCondition::Composite(CompositeBody::AllOf { members: vec![deep] });
        }
        assert!(deep.validate_composite().is_ok(), "depth 4 is allowed");
        let too_deep = ResumeCondition::Composite(CompositeBody::AllOf { members: vec![deep] });
        assert!(
            too_deep
                .validate_composite()
                .unwrap_err()
                .starts_with("depth 5 exceeds cap 4 at path members[0].members[0].members[0].members[0]")
        );
        let empty = ResumeCondition::Composite(CompositeBody::AllOf { members: vec![] });
        assert_eq!(empty.validate_composite().unwrap_err(), "allof_empty_members at path <root>");
        let count = |n, kind, wps: &[&str]| {
            ResumeCondition::Composite(CompositeBody::Count {
                n,
                count_kind: kind,
                matcher: None,
                waitpoints: wps.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert_eq!(
            count(0, CountKind::DistinctSignals, &["a"]).validate_composite().unwrap_err(),
            "count_n_zero at path <root>"
        );
        assert_eq!(
            count(1, CountKind::DistinctSignals, &[]).validate_composite().unwrap_err(),
            "count_waitpoints_empty at path <root>"
        );
        assert!(
            count(3, CountKind::DistinctWaitpoints, &["a", "b"])
                .validate_composite()
                .unwrap_err()
                .starts_with("count_exceeds_waitpoint_set: n=3 > waitpoints.len()=2")
        );
        assert!(count(3, CountKind::DistinctSignals, &["a"]).validate_composite().is_ok());
    }

    #[test]
    fn reason_mapping() {
        assert_eq!(SuspensionReasonCode::ManualPause.blocking_reason(), BlockingReason::PausedByOperator);
        assert_eq!(SuspensionReasonCode::PausedByBudget.blocking_reason(), BlockingReason::WaitingForBudget);
        assert_eq!(SuspensionReasonCode::StepBoundary.blocking_reason(), BlockingReason::WaitingForSignal);
    }
}
