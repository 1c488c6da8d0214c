//! Flows: members, dependency edges, edge groups and flow cancel (spec 03 §2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::ids::{EdgeId, ExecutionId, FlowId, Namespace, TimestampMs};

/// Longest breadth-first walk of the cycle check before it conservatively refuses.
pub const CYCLE_CHECK_NODES_MAX: usize = 1000;
/// Default grace before the cancel reconciler drains a cancelled flow's members, in ms.
pub const CANCEL_GRACE_MS_DEFAULT: u64 = 30_000;
/// Deepest skip cascade followed inline.
pub const CASCADE_DEPTH_MAX: usize = 50;

/// Arguments of `create_flow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFlowArgs {
    /// Caller-minted flow id (its partition hosts every member).
    pub flow_id: FlowId,
    /// Free-form kind.
    pub flow_kind: String,
    /// Namespace.
    pub namespace: Namespace,
}

/// Result of `create_flow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CreateFlowOutcome {
    /// Created.
    Created {
        /// The flow.
        flow_id: FlowId,
    },
    /// Already existed; nothing changed.
    AlreadySatisfied {
        /// The flow.
        flow_id: FlowId,
    },
}

/// Result of `add_execution_to_flow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AddToFlowOutcome {
    /// Added.
    Added {
        /// The member.
        execution_id: ExecutionId,
        /// Members now.
        new_node_count: u64,
    },
    /// Already a member.
    AlreadyMember {
        /// The member.
        execution_id: ExecutionId,
        /// Members now.
        node_count: u64,
    },
}

/// Arguments of `stage_dependency_edge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEdgeArgs {
    /// The flow.
    pub flow_id: FlowId,
    /// Caller-minted edge id.
    pub edge_id: EdgeId,
    /// Upstream member.
    pub upstream_execution_id: ExecutionId,
    /// Downstream member.
    pub downstream_execution_id: ExecutionId,
    /// Stored only (every edge means "upstream must succeed").
    #[serde(default)]
    pub dependency_kind: Option<String>,
    /// Copy the upstream result over the downstream payload when set.
    #[serde(default)]
    pub data_passing_ref: Option<String>,
    /// Compare-and-set on the flow's graph revision.
    pub expected_graph_revision: u64,
}

/// A staged edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSnapshot {
    /// Id.
    pub edge_id: EdgeId,
    /// Flow.
    pub flow_id: FlowId,
    /// Upstream.
    pub upstream_execution_id: ExecutionId,
    /// Downstream.
    pub downstream_execution_id: ExecutionId,
    /// Stored kind.
    pub dependency_kind: String,
    /// Always `all_required`.
    pub satisfaction_condition: String,
    /// Data passing reference.
    pub data_passing_ref: Option<String>,
    /// Always the staging literal `pending`.
    pub edge_state: String,
    /// Staging time.
    pub created_at: TimestampMs,
    /// Always `engine`.
    pub created_by: String,
}

/// What a sibling group does once it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSatisfied {
    /// Cancel still-running siblings.
    CancelRemaining,
    /// Let them run.
    LetRun,
}

/// An edge group's policy over a downstream's inbound edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EdgeDependencyPolicy {
    /// Every edge must succeed.
    AllOf,
    /// One success suffices.
    AnyOf {
        /// What happens to the rest.
        on_satisfied: OnSatisfied,
    },
    /// `k` successes suffice.
    Quorum {
        /// Threshold.
        k: u32,
        /// What happens to the rest.
        on_satisfied: OnSatisfied,
    },
}

impl EdgeDependencyPolicy {
    /// Checks `k` (spec 03 §2.3.6 pre-check).
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Self::Quorum { k, .. } = self {
            if *k == 0 {
                return Err(EngineError::invalid_input("quorum k must be >= 1"));
            }
            if *k > i32::MAX as u32 {
                return Err(EngineError::invalid_input("quorum k exceeds supported maximum"));
            }
        }
        Ok(())
    }

    /// The threshold `k` (1 for any-of, 0 for all-of).
    pub fn k(&self) -> u32 {
        match self {
            Self::AllOf => 0,
            Self::AnyOf { .. } => 1,
            Self::Quorum { k, .. } => (*k).max(1),
        }
    }

    /// The on-satisfied behaviour (all-of has none).
    pub fn on_satisfied(&self) -> Option<OnSatisfied> {
        match self {
            Self::AllOf => None,
            Self::AnyOf { on_satisfied } | Self::Quorum { on_satisfied, .. } => Some(*on_satisfied),
        }
    }
}

/// Whether a flow member may run now (spec 03 §2.3.11), first match wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FlowEligibility {
    /// No such execution.
    NotFound,
    /// Not in the runnable phase (terminal executions included).
    NotRunnable,
    /// Runnable but owned.
    Owned,
    /// Carries a terminal outcome.
    Terminal,
    /// Its dependencies can no longer be satisfied.
    Impossible,
    /// Waiting for dependencies.
    BlockedByDependencies,
    /// Free to run as far as dependencies go.
    Eligible,
}

impl FlowEligibility {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::NotRunnable => "not_runnable",
            Self::Owned => "owned",
            Self::Terminal => "terminal",
            Self::Impossible => "impossible",
            Self::BlockedByDependencies => "blocked_by_dependencies",
            Self::Eligible => "eligible",
        }
    }
}

/// State of an edge group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Not decided.
    Pending,
    /// Enough upstreams succeeded.
    Satisfied,
    /// Can no longer be satisfied.
    Impossible,
}

/// An edge group as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeGroupSnapshot {
    /// The downstream.
    pub downstream_execution_id: ExecutionId,
    /// The policy.
    pub policy: EdgeDependencyPolicy,
    /// Applied edges.
    pub total_deps: u64,
    /// Succeeded upstreams.
    pub satisfied_count: u64,
    /// Failed upstreams.
    pub failed_count: u64,
    /// Skipped upstreams.
    pub skipped_count: u64,
    /// Undecided upstreams.
    pub running_count: u64,
    /// State.
    pub group_state: GroupState,
}

/// Result of resolving one dependency edge (spec 03 §2.3.8, with `Pending` and `AlreadyFired`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ResolveDependencyOutcome {
    /// The edge is satisfied (and the child may now be eligible).
    Satisfied {
        /// Whether the upstream result was copied to the child.
        data_injected: bool,
    },
    /// The edge is impossible.
    Impossible {
        /// Whether the child was skipped.
        child_skipped: bool,
    },
    /// A quorum group is still undecided.
    Pending,
    /// A quorum group had already fired; only counters moved.
    AlreadyFired,
    /// The edge had been resolved before.
    AlreadyResolved,
}

/// How `cancel_flow` treats members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelFlowPolicy {
    /// Only the flow.
    FlowOnly,
    /// Every member too.
    CancelAll,
    /// Behaves like `FlowOnly` (reference).
    CancelPending,
}

impl CancelFlowPolicy {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlowOnly => "flow_only",
            Self::CancelAll => "cancel_all",
            Self::CancelPending => "cancel_pending",
        }
    }
}

/// Result of the flow-side cancel (`cancel_flow_header`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CancelFlowHeader {
    /// The flow is now cancelled.
    Cancelled {
        /// The policy.
        cancellation_policy: String,
        /// Members (sorted).
        member_execution_ids: Vec<ExecutionId>,
    },
    /// It was already terminal.
    AlreadyTerminal {
        /// Stored policy.
        stored_cancellation_policy: Option<String>,
        /// Stored reason.
        stored_cancel_reason: Option<String>,
        /// Members (sorted).
        member_execution_ids: Vec<ExecutionId>,
    },
}

/// Result of `cancel_flow` with member dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CancelFlowResult {
    /// Every member that needed a cancel has one.
    Cancelled {
        /// The policy.
        cancellation_policy: String,
        /// Members.
        member_execution_ids: Vec<ExecutionId>,
    },
    /// Some member cancels failed (left for the reconciler).
    PartiallyCancelled {
        /// The policy.
        cancellation_policy: String,
        /// Members.
        member_execution_ids: Vec<ExecutionId>,
        /// Members whose cancel failed.
        failed_member_execution_ids: Vec<ExecutionId>,
    },
}

/// The read model of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSnapshot {
    /// Id.
    pub flow_id: FlowId,
    /// Kind.
    pub flow_kind: String,
    /// Namespace.
    pub namespace: Namespace,
    /// `open` or `cancelled`.
    pub public_flow_state: String,
    /// Revision (add member and stage edge bump it).
    pub graph_revision: u64,
    /// Members.
    pub node_count: u64,
    /// Edges.
    pub edge_count: u64,
    /// Creation.
    pub created_at: TimestampMs,
    /// Last write.
    pub last_mutation_at: TimestampMs,
    /// Cancel time.
    pub cancelled_at: Option<TimestampMs>,
    /// Cancel reason.
    pub cancel_reason: Option<String>,
    /// Cancel policy.
    pub cancellation_policy: Option<String>,
    /// Flow tags.
    pub tags: BTreeMap<String, String>,
    /// One entry per member with inbound edges.
    pub edge_groups: Vec<EdgeGroupSnapshot>,
    /// Member counts and the state derived from them, computed on read.
    #[serde(default)]
    pub summary: FlowSummary,
}

/// Member counts by public state and the flow state derived from them (spec 03
/// §7.3.5 steps 4–5, over every member rather than a sample).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSummary {
    /// Members.
    pub total_members: u64,
    /// Members per public state (`unknown` for a member whose execution is gone).
    pub members_by_state: BTreeMap<String, u64>,
    /// `completed`, `failed`, `running`, `blocked` or `open`.
    pub derived_state: String,
}

impl FlowSummary {
    /// Counts `states` and derives the flow state: all terminal → `failed` if any
    /// failed, cancelled or expired, else `completed`; any active → `running`; any
    /// suspended, delayed, rate-limited or waiting for children → `blocked`; else `open`.
    pub fn derive<'a>(states: impl IntoIterator<Item = &'a str>) -> Self {
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        for s in states {
            *by_state.entry(s.to_owned()).or_insert(0) += 1;
        }
        let total: u64 = by_state.values().sum();
        let count =
            |names: &[&str]| names.iter().map(|n| by_state.get(*n).copied().unwrap_or(0)).sum::<u64>();
        let bad = count(&["failed", "cancelled", "expired"]);
        let terminal = bad + count(&["completed", "skipped"]);
        let derived = if total > 0 && terminal == total {
            if bad > 0 { "failed" } else { "completed" }
        } else if count(&["active"]) > 0 {
            "running"
        } else if count(&["suspended", "delayed", "rate_limited", "waiting_children"]) > 0 {
            "blocked"
        } else {
            "open"
        };
        Self { total_members: total, members_by_state: by_state, derived_state: derived.to_owned() }
    }
}

#[cfg(test)]
mod summary_tests {
    use super::FlowSummary;

    #[test]
    fn derived_state_follows_the_projector_rules() {
        let d = |s: &[&str]| FlowSummary::derive(s.iter().copied()).derived_state;
        assert_eq!(d(&[]), "open");
        assert_eq!(d(&["completed", "skipped"]), "completed");
        assert_eq!(d(&["completed", "cancelled"]), "failed");
        assert_eq!(d(&["completed", "expired", "skipped"]), "failed");
        assert_eq!(d(&["active", "suspended", "waiting"]), "running");
        assert_eq!(d(&["waiting_children", "waiting"]), "blocked");
        assert_eq!(d(&["waiting", "completed"]), "open");
        assert_eq!(d(&["unknown", "completed"]), "open", "a vanished member is not terminal");
        let s = FlowSummary::derive(["waiting", "waiting", "active"]);
        assert_eq!((s.total_members, s.members_by_state.get("waiting").copied()), (3, Some(2)));
    }
}
