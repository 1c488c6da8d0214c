//! The execution state vector, its derived public state and the transition table (spec 01 §4).

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// Parses a wire string.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Dimension A: where the execution is in its life.
    LifecyclePhase {
        /// Defined, never written.
        Submitted = "submitted",
        /// Waiting to run (eligible, delayed or blocked).
        Runnable = "runnable",
        /// Owned by a lease (possibly expired or revoked).
        Active = "active",
        /// Parked on a suspension.
        Suspended = "suspended",
        /// Finished.
        Terminal = "terminal",
    }
);

wire_enum!(
    /// Dimension B: who owns the execution.
    OwnershipState {
        /// No lease.
        Unowned = "unowned",
        /// A live lease.
        Leased = "leased",
        /// The lease's TTL passed; awaiting reclaim.
        LeaseExpiredReclaimable = "lease_expired_reclaimable",
        /// The lease was revoked; awaiting reclaim.
        LeaseRevoked = "lease_revoked",
    }
);

wire_enum!(
    /// Dimension C: whether a runnable execution may be claimed now.
    EligibilityState {
        /// Claimable now.
        EligibleNow = "eligible_now",
        /// Delayed until a time.
        NotEligibleUntilTime = "not_eligible_until_time",
        /// Waiting for dependencies.
        BlockedByDependencies = "blocked_by_dependencies",
        /// Blocked by a budget.
        BlockedByBudget = "blocked_by_budget",
        /// Blocked by a quota.
        BlockedByQuota = "blocked_by_quota",
        /// No capable worker.
        BlockedByRoute = "blocked_by_route",
        /// Lane paused by policy.
        BlockedByLaneState = "blocked_by_lane_state",
        /// Paused by an operator.
        BlockedByOperator = "blocked_by_operator",
        /// Not runnable.
        NotApplicable = "not_applicable",
    }
);

wire_enum!(
    /// Dimension D: why the execution is not progressing.
    BlockingReason {
        /// Nothing blocks it.
        None = "none",
        /// Waiting for a worker to claim it.
        WaitingForWorker = "waiting_for_worker",
        /// Waiting for a retry backoff.
        WaitingForRetryBackoff = "waiting_for_retry_backoff",
        /// Waiting for a resume delay.
        WaitingForResumeDelay = "waiting_for_resume_delay",
        /// Waiting for a delay.
        WaitingForDelay = "waiting_for_delay",
        /// Waiting for a signal.
        WaitingForSignal = "waiting_for_signal",
        /// Waiting for an approval.
        WaitingForApproval = "waiting_for_approval",
        /// Waiting for a callback.
        WaitingForCallback = "waiting_for_callback",
        /// Waiting for a tool result.
        WaitingForToolResult = "waiting_for_tool_result",
        /// Waiting for child executions.
        WaitingForChildren = "waiting_for_children",
        /// Waiting for budget.
        WaitingForBudget = "waiting_for_budget",
        /// Waiting for quota.
        WaitingForQuota = "waiting_for_quota",
        /// Waiting for a worker with the right capabilities.
        WaitingForCapableWorker = "waiting_for_capable_worker",
        /// Defined, never written.
        WaitingForLocalityMatch = "waiting_for_locality_match",
        /// Paused by an operator.
        PausedByOperator = "paused_by_operator",
        /// Paused by lane policy.
        PausedByPolicy = "paused_by_policy",
        /// Defined, never written.
        PausedByFlowCancel = "paused_by_flow_cancel",
    }
);

wire_enum!(
    /// Dimension E: how a terminal execution ended.
    TerminalOutcome {
        /// Not terminal.
        None = "none",
        /// Completed.
        Success = "success",
        /// Failed.
        Failed = "failed",
        /// Cancelled.
        Cancelled = "cancelled",
        /// Expired (timeout or deadline).
        Expired = "expired",
        /// Skipped (dependency impossible).
        Skipped = "skipped",
    }
);

wire_enum!(
    /// Dimension F: the attempt situation as seen on the execution.
    AttemptState {
        /// No attempt.
        None = "none",
        /// The next claim creates the first attempt.
        PendingFirstAttempt = "pending_first_attempt",
        /// An attempt runs under a lease.
        RunningAttempt = "running_attempt",
        /// The current attempt is paused; continue it with a resumed claim.
        AttemptInterrupted = "attempt_interrupted",
        /// The next claim creates a retry attempt.
        PendingRetryAttempt = "pending_retry_attempt",
        /// The next claim creates a replay attempt.
        PendingReplayAttempt = "pending_replay_attempt",
        /// The last attempt ended.
        AttemptTerminal = "attempt_terminal",
    }
);

wire_enum!(
    /// The public state shown to users, derived from the dimensions.
    PublicState {
        /// Claimable, or blocked by route/lane/operator.
        Waiting = "waiting",
        /// Delayed.
        Delayed = "delayed",
        /// Blocked by budget or quota.
        RateLimited = "rate_limited",
        /// Waiting for dependencies.
        WaitingChildren = "waiting_children",
        /// Running.
        Active = "active",
        /// Suspended.
        Suspended = "suspended",
        /// Defined, not produced.
        Resumable = "resumable",
        /// Completed.
        Completed = "completed",
        /// Failed.
        Failed = "failed",
        /// Cancelled.
        Cancelled = "cancelled",
        /// Expired.
        Expired = "expired",
        /// Skipped.
        Skipped = "skipped",
    }
);

impl PublicState {
    /// Whether the state is terminal.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::Expired | Self::Skipped)
    }
}

wire_enum!(
    /// An attempt record's own lifecycle (spec 01 §4.3).
    AttemptLifecycle {
        /// Defined, never written.
        Created = "created",
        /// Running under a lease.
        Started = "started",
        /// Paused.
        Suspended = "suspended",
        /// Completed.
        EndedSuccess = "ended_success",
        /// Failed or expired.
        EndedFailure = "ended_failure",
        /// Cancelled.
        EndedCancelled = "ended_cancelled",
        /// Replaced by a reclaim.
        InterruptedReclaimed = "interrupted_reclaimed",
    }
);

wire_enum!(
    /// Why an attempt was created.
    AttemptType {
        /// First attempt.
        Initial = "initial",
        /// After a failure with retries left.
        Retry = "retry",
        /// After a lost lease.
        Reclaim = "reclaim",
        /// After a replay.
        Replay = "replay",
        /// Defined, never produced.
        Fallback = "fallback",
    }
);

/// The six dimensions plus the stored public state and the blocking detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateVector {
    /// Dimension A.
    pub lifecycle_phase: LifecyclePhase,
    /// Dimension B.
    pub ownership_state: OwnershipState,
    /// Dimension C.
    pub eligibility_state: EligibilityState,
    /// Dimension D.
    pub blocking_reason: BlockingReason,
    /// Free text explaining the block.
    pub blocking_detail: String,
    /// Dimension E.
    pub terminal_outcome: TerminalOutcome,
    /// Dimension F.
    pub attempt_state: AttemptState,
    /// The stored public state (written on every transition).
    pub public_state: PublicState,
}

/// Derives the public state from the six dimensions (spec 01 §4.2).
pub fn derive_public_state(
    phase: LifecyclePhase,
    eligibility: EligibilityState,
    outcome: TerminalOutcome,
) -> PublicState {
    use EligibilityState as E;
    match phase {
        LifecyclePhase::Terminal => match outcome {
            TerminalOutcome::Success => PublicState::Completed,
            TerminalOutcome::Cancelled => PublicState::Cancelled,
            TerminalOutcome::Expired => PublicState::Expired,
            TerminalOutcome::Skipped => PublicState::Skipped,
            TerminalOutcome::Failed | TerminalOutcome::None => PublicState::Failed,
        },
        LifecyclePhase::Suspended => PublicState::Suspended,
        LifecyclePhase::Active => PublicState::Active,
        LifecyclePhase::Submitted => PublicState::Waiting,
        LifecyclePhase::Runnable => match eligibility {
            E::NotEligibleUntilTime => PublicState::Delayed,
            E::BlockedByDependencies => PublicState::WaitingChildren,
            E::BlockedByBudget | E::BlockedByQuota => PublicState::RateLimited,
            E::EligibleNow
            | E::BlockedByRoute
            | E::BlockedByLaneState
            | E::BlockedByOperator
            | E::NotApplicable => PublicState::Waiting,
        },
    }
}

impl StateVector {
    /// Whether the stored public state equals the derived one.
    pub fn is_consistent(&self) -> bool {
        self.public_state
            == derive_public_state(self.lifecycle_phase, self.eligibility_state, self.terminal_outcome)
    }

    /// The state of a freshly created execution (T1/T2).
    pub fn created(delayed: bool, delay_detail: String) -> Self {
        if delayed {
            Self::runnable(
                EligibilityState::NotEligibleUntilTime,
                BlockingReason::WaitingForDelay,
                delay_detail,
                AttemptState::PendingFirstAttempt,
            )
        } else {
            Self::runnable(
                EligibilityState::EligibleNow,
                BlockingReason::WaitingForWorker,
                String::new(),
                AttemptState::PendingFirstAttempt,
            )
        }
    }

    /// A runnable, unowned state; the public state is derived.
    pub fn runnable(
        eligibility: EligibilityState,
        reason: BlockingReason,
        detail: String,
        attempt_state: AttemptState,
    ) -> Self {
        Self {
            lifecycle_phase: LifecyclePhase::Runnable,
            ownership_state: OwnershipState::Unowned,
            eligibility_state: eligibility,
            blocking_reason: reason,
            blocking_detail: detail,
            terminal_outcome: TerminalOutcome::None,
            attempt_state,
            public_state: derive_public_state(LifecyclePhase::Runnable, eligibility, TerminalOutcome::None),
        }
    }

    /// The leased state of T4/T5/T10.
    pub fn leased() -> Self {
        Self {
            lifecycle_phase: LifecyclePhase::Active,
            ownership_state: OwnershipState::Leased,
            eligibility_state: EligibilityState::NotApplicable,
            blocking_reason: BlockingReason::None,
            blocking_detail: String::new(),
            terminal_outcome: TerminalOutcome::None,
            attempt_state: AttemptState::RunningAttempt,
            public_state: PublicState::Active,
        }
    }

    /// A terminal state with the given outcome and attempt state.
    pub fn terminal(outcome: TerminalOutcome, attempt_state: AttemptState) -> Self {
        Self {
            lifecycle_phase: LifecyclePhase::Terminal,
            ownership_state: OwnershipState::Unowned,
            eligibility_state: EligibilityState::NotApplicable,
            blocking_reason: BlockingReason::None,
            blocking_detail: String::new(),
            terminal_outcome: outcome,
            attempt_state,
            public_state: derive_public_state(
                LifecyclePhase::Terminal,
                EligibilityState::NotApplicable,
                outcome,
            ),
        }
    }

    /// Whether the vector satisfies the structural invariants of spec 01 §4.4 (1, 2, 7).
    pub fn invariant_violation(&self) -> Option<&'static str> {
        let terminal = self.lifecycle_phase == LifecyclePhase::Terminal;
        if terminal != (self.terminal_outcome != TerminalOutcome::None) {
            return Some("terminal phase iff terminal outcome");
        }
        if self.ownership_state != OwnershipState::Unowned && self.lifecycle_phase != LifecyclePhase::Active {
            return Some("owned execution must be active");
        }
        if matches!(
            self.lifecycle_phase,
            LifecyclePhase::Active | LifecyclePhase::Suspended | LifecyclePhase::Terminal
        ) && self.eligibility_state != EligibilityState::NotApplicable
        {
            return Some("active/suspended/terminal must be not_applicable");
        }
        None
    }
}

/// Every legal transition of spec 01 §4.6 (and the cross-chapter ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Transition {
    T1CreateEligible,
    T2CreateDelayed,
    T3PromoteDelayed,
    T4Claim,
    T5ResumedClaim,
    T6GrantAndClaim,
    T7Renew,
    T8MarkExpired,
    T9Revoke,
    T10Reclaim,
    T11ReclaimOverCap,
    T12Complete,
    T13FailRetry,
    T14FailTerminal,
    T15Delay,
    T16WaitChildren,
    T17Cancel,
    T18Expire,
    T19ReplayNormal,
    T20ReplaySkippedMember,
    T21BlockForAdmission,
    T22Unblock,
    T23ChangePriority,
}

impl Transition {
    /// Whether this transition may start from a given state (phase / ownership / eligibility).
    pub fn allowed_from(self, s: &StateVector) -> bool {
        use LifecyclePhase as P;
        use OwnershipState as O;
        let p = s.lifecycle_phase;
        let o = s.ownership_state;
        let e = s.eligibility_state;
        match self {
            Self::T1CreateEligible | Self::T2CreateDelayed => false,
            Self::T3PromoteDelayed => p == P::Runnable && e == EligibilityState::NotEligibleUntilTime,
            Self::T4Claim => {
                p == P::Runnable
                    && o == O::Unowned
                    && e == EligibilityState::EligibleNow
                    && !matches!(
                        s.attempt_state,
                        AttemptState::RunningAttempt | AttemptState::AttemptInterrupted
                    )
            }
            Self::T5ResumedClaim => p == P::Runnable && s.attempt_state == AttemptState::AttemptInterrupted,
            Self::T6GrantAndClaim => {
                p == P::Runnable && o == O::Unowned && s.attempt_state != AttemptState::RunningAttempt
            }
            Self::T7Renew
            | Self::T8MarkExpired
            | Self::T9Revoke
            | Self::T12Complete
            | Self::T13FailRetry
            | Self::T14FailTerminal
            | Self::T15Delay
            | Self::T16WaitChildren => p == P::Active && o == O::Leased,
            Self::T10Reclaim | Self::T11ReclaimOverCap => {
                p == P::Active && matches!(o, O::LeaseExpiredReclaimable | O::LeaseRevoked)
            }
            Self::T17Cancel => p != P::Terminal,
            Self::T18Expire => matches!(p, P::Active | P::Runnable | P::Suspended),
            Self::T19ReplayNormal | Self::T20ReplaySkippedMember => p == P::Terminal,
            Self::T21BlockForAdmission => p == P::Runnable,
            Self::T22Unblock => {
                p == P::Runnable
                    && matches!(
                        e,
                        EligibilityState::BlockedByBudget
                            | EligibilityState::BlockedByQuota
                            | EligibilityState::BlockedByRoute
                            | EligibilityState::BlockedByOperator
                    )
            }
            Self::T23ChangePriority => p == P::Runnable && e == EligibilityState::EligibleNow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for v in LifecyclePhase::ALL {
            assert_eq!(LifecyclePhase::parse(v.as_str()), Some(*v));
        }
        for v in BlockingReason::ALL {
            assert_eq!(BlockingReason::parse(v.as_str()), Some(*v));
        }
        for v in PublicState::ALL {
            assert_eq!(PublicState::parse(v.as_str()), Some(*v));
        }
        assert_eq!(AttemptState::parse("bogus"), None);
    }

    #[test]
    fn public_state_table() {
        use EligibilityState as E;
        use LifecyclePhase as P;
        use TerminalOutcome as T;
        let cases = [
            (P::Terminal, E::NotApplicable, T::Success, PublicState::Completed),
            (P::Terminal, E::NotApplicable, T::None, PublicState::Failed),
            (P::Terminal, E::NotApplicable, T::Skipped, PublicState::Skipped),
            (P::Suspended, E::NotApplicable, T::None, PublicState::Suspended),
            (P::Active, E::NotApplicable, T::None, PublicState::Active),
            (P::Runnable, E::EligibleNow, T::None, PublicState::Waiting),
            (P::Runnable, E::NotEligibleUntilTime, T::None, PublicState::Delayed),
            (P::Runnable, E::BlockedByDependencies, T::None, PublicState::WaitingChildren),
            (P::Runnable, E::BlockedByBudget, T::None, PublicState::RateLimited),
            (P::Runnable, E::BlockedByQuota, T::None, PublicState::RateLimited),
            (P::Runnable, E::BlockedByRoute, T::None, PublicState::Waiting),
            (P::Runnable, E::BlockedByOperator, T::None, PublicState::Waiting),
            (P::Runnable, E::NotApplicable, T::None, PublicState::Waiting),
            (P::Submitted, E::EligibleNow, T::None, PublicState::Waiting),
        ];
        for (p, e, t, want) in cases {
            assert_eq!(derive_public_state(p, e, t), want, "{p} {e} {t}");
        }
    }

    #[test]
    fn constructed_vectors_are_consistent_and_legal() {
        let vs = [
            StateVector::created(false, String::new()),
            StateVector::created(true, "d".into()),
            StateVector::leased(),
            StateVector::terminal(TerminalOutcome::Cancelled, AttemptState::AttemptTerminal),
        ];
        for v in vs {
            assert!(v.is_consistent(), "{v:?}");
            assert_eq!(v.invariant_violation(), None, "{v:?}");
        }
    }

    #[test]
    fn transition_table_guards() {
        let eligible = StateVector::created(false, String::new());
        assert!(Transition::T4Claim.allowed_from(&eligible));
        assert!(!Transition::T5ResumedClaim.allowed_from(&eligible));
        assert!(!Transition::T12Complete.allowed_from(&eligible));
        assert!(Transition::T17Cancel.allowed_from(&eligible));
        let leased = StateVector::leased();
        assert!(Transition::T12Complete.allowed_from(&leased));
        assert!(!Transition::T10Reclaim.allowed_from(&leased));
        let done = StateVector::terminal(TerminalOutcome::Success, AttemptState::AttemptTerminal);
        assert!(!Transition::T17Cancel.allowed_from(&done));
        assert!(Transition::T19ReplayNormal.allowed_from(&done));
    }
}
