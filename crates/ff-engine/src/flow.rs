//! Flows and dependency edges (spec 03 §2): create, add member, stage and
//! apply edges, edge-group policies, resolution with skip propagation (run
//! inline in the terminal transition of every flow member), flow cancel, tags
//! and reads.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ff_core::contracts::is_strict_tag_key;
use ff_core::error::{ConflictKind, ContentionKind, StateKind};
use ff_core::flow::*;
use ff_core::state::{
    AttemptLifecycle, AttemptState, BlockingReason, EligibilityState, LifecyclePhase, OwnershipState,
    StateVector, TerminalOutcome,
};
use ff_core::{EdgeId, EngineError, ExecutionId, FlowId, Namespace, TimestampMs};
use serde::{Deserialize, Serialize};

use crate::common::*;
use crate::records::{BlobKind, ExecCore, IndexKey, LaneIndex, RecordKind};
use crate::store::{Store, StoreResult};

/// An edge group's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeGroup {
    /// Policy.
    pub policy: EdgeDependencyPolicy,
    /// Applied edges.
    pub n: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Skipped.
    pub skipped: u64,
    /// State.
    pub state: GroupState,
    /// Satisfaction time.
    pub satisfied_at: Option<TimestampMs>,
    /// Siblings flagged for cancel.
    pub cancel_siblings: Vec<ExecutionId>,
    /// Why.
    pub cancel_siblings_reason: Option<String>,
}

/// A flow, its members and its graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Id.
    pub flow_id: FlowId,
    /// Kind.
    pub flow_kind: String,
    /// Namespace.
    pub namespace: Namespace,
    /// Revision.
    pub graph_revision: u64,
    /// Members count.
    pub node_count: u64,
    /// Edge count.
    pub edge_count: u64,
    /// `open` or `cancelled`.
    pub public_flow_state: String,
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
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Members.
    pub members: BTreeSet<ExecutionId>,
    /// Staged edges.
    pub edges: BTreeMap<EdgeId, EdgeSnapshot>,
    /// Outgoing edges per member.
    pub outgoing: BTreeMap<ExecutionId, BTreeSet<EdgeId>>,
    /// Incoming edges per member.
    pub incoming: BTreeMap<ExecutionId, BTreeSet<EdgeId>>,
    /// Edge groups per downstream.
    pub groups: BTreeMap<ExecutionId, EdgeGroup>,
    /// Members still owed a cancel.
    pub pending_cancels: BTreeSet<ExecutionId>,
    /// When the cancel reconciler may drain them.
    pub cancel_backlog_at: Option<TimestampMs>,
}

impl FlowRecord {
    fn is_terminal(&self) -> bool {
        matches!(self.public_flow_state.as_str(), "cancelled" | "completed" | "failed")
    }
}

/// One applied dependency of a child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepRecord {
    /// Upstream.
    pub upstream: ExecutionId,
    /// `unsatisfied`, `satisfied` or `impossible`.
    pub state: String,
    /// Data passing.
    pub data_passing_ref: Option<String>,
    /// Resolution time.
    pub last_resolved_at: Option<TimestampMs>,
}

/// A child's dependency state (`deps:meta` and its dep hashes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepsRecord {
    /// All-of edges not yet satisfied.
    pub unsatisfied_required_count: u64,
    /// All-of edges that became impossible.
    pub impossible_required_count: u64,
    /// The flow.
    pub flow_id: Option<FlowId>,
    /// Revision seen at the last apply.
    pub last_flow_graph_revision: u64,
    /// Last update.
    pub last_dependency_update_at: TimestampMs,
    /// Applied dependencies.
    pub deps: BTreeMap<EdgeId, DepRecord>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::validation(ff_core::error::ValidationKind::Corruption, format!("{what}: {e}"))
}

fn flow(store: &dyn Store, id: &FlowId) -> StoreResult<Option<FlowRecord>> {
    match store.get_record(RecordKind::Flow, &id.to_string())? {
        None => Ok(None),
        Some(j) => serde_json::from_str(&j).map(Some).map_err(|e| corrupt("flow", e)),
    }
}

fn load_flow(store: &dyn Store, id: &FlowId) -> StoreResult<FlowRecord> {
    flow(store, id)?.ok_or(EngineError::NotFound { entity: "flow" })
}

fn put_flow(store: &mut dyn Store, f: &FlowRecord) -> StoreResult<()> {
    let j = serde_json::to_string(f).map_err(|e| corrupt("flow", e))?;
    store.put_record(RecordKind::Flow, &f.flow_id.to_string(), &j)
}

fn deps(store: &dyn Store, id: &ExecutionId) -> StoreResult<Option<DepsRecord>> {
    match store.get_record(RecordKind::Dependencies, id.as_str())? {
        None => Ok(None),
        Some(j) => serde_json::from_str(&j).map(Some).map_err(|e| corrupt("dependencies", e)),
    }
}

fn put_deps(store: &mut dyn Store, id: &ExecutionId, d: &DepsRecord) -> StoreResult<()> {
    let j = serde_json::to_string(d).map_err(|e| corrupt("dependencies", e))?;
    store.put_record(RecordKind::Dependencies, id.as_str(), &j)
}

/// `ff_create_flow` (spec 03 §2.3.1).
pub fn create_flow(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &CreateFlowArgs,
) -> StoreResult<CreateFlowOutcome> {
    if args.flow_kind.len() > ff_core::contracts::NAME_BYTES_MAX
        || args.namespace.as_str().len() > ff_core::contracts::NAME_BYTES_MAX
    {
        return Err(EngineError::invalid_input("flow_kind/namespace: longer than 256 bytes"));
    }
    if flow(store, &args.flow_id)?.is_some() {
        return Ok(CreateFlowOutcome::AlreadySatisfied { flow_id: args.flow_id });
    }
    let f = FlowRecord {
        flow_id: args.flow_id,
        flow_kind: args.flow_kind.clone(),
        namespace: args.namespace.clone(),
        graph_revision: 0,
        node_count: 0,
        edge_count: 0,
        public_flow_state: "open".into(),
        created_at: now,
        last_mutation_at: now,
        cancelled_at: None,
        cancel_reason: None,
        cancellation_policy: None,
        tags: BTreeMap::new(),
        members: BTreeSet::new(),
        edges: BTreeMap::new(),
        outgoing: BTreeMap::new(),
        incoming: BTreeMap::new(),
        groups: BTreeMap::new(),
        pending_cancels: BTreeSet::new(),
        cancel_backlog_at: None,
    };
    put_flow(store, &f)?;
    store.index_add(&IndexKey::Flows, &args.flow_id.to_string(), 0)?;
    Ok(CreateFlowOutcome::Created { flow_id: args.flow_id })
}

/// `ff_add_execution_to_flow` (spec 03 §2.3.2).
pub fn add_execution_to_flow(
    store: &mut dyn Store,
    now: TimestampMs,
    flow_id: &FlowId,
    eid: &ExecutionId,
) -> StoreResult<AddToFlowOutcome> {
    let cfg = store.partition_config();
    let fp = ff_core::partition::flow_partition(&flow_id.0, &cfg).index;
    if eid.partition_index() != fp {
        return Err(EngineError::invalid_input(format!(
            "add_execution_to_flow: execution_id's partition {} != flow_id's partition {fp}",
            eid.partition_index()
        )));
    }
    let mut f = load_flow(store, flow_id)?;
    if f.is_terminal() {
        return Err(EngineError::State(StateKind::FlowAlreadyTerminal));
    }
    let mut core = load(store, eid)?;
    let flow_text = flow_id.to_string();
    if core.flow_id.as_deref().is_some_and(|other| !other.is_empty() && other != flow_text) {
        return Err(EngineError::Conflict(ConflictKind::ExecutionAlreadyInFlow));
    }
    if f.members.contains(eid) {
        return Ok(AddToFlowOutcome::AlreadyMember { execution_id: eid.clone(), node_count: f.node_count });
    }
    f.members.insert(eid.clone());
    f.node_count += 1;
    f.graph_revision += 1;
    f.last_mutation_at = now;
    core.flow_id = Some(flow_text);
    core.last_mutation_at = now;
    store.put_exec(&core)?;
    put_flow(store, &f)?;
    Ok(AddToFlowOutcome::Added { execution_id: eid.clone(), new_node_count: f.node_count })
}

/// Breadth-first walk from `from` along outgoing edges: does it reach `to`?
fn reaches(f: &FlowRecord, from: &ExecutionId, to: &ExecutionId) -> bool {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([from.clone()]);
    while let Some(node) = queue.pop_front() {
        if &node == to {
            return true;
        }
        if !seen.insert(node.clone()) {
            continue;
        }
        if seen.len() > CYCLE_CHECK_NODES_MAX {
            return true;
        }
        for e in f.outgoing.get(&node).into_iter().flatten() {
            if let Some(edge) = f.edges.get(e) {
                queue.push_back(edge.downstream_execution_id.clone());
            }
        }
    }
    false
}

/// `ff_stage_dependency_edge` (spec 03 §2.3.5).
pub fn stage_dependency_edge(
    store: &mut dyn Store,
    now: TimestampMs,
    args: &StageEdgeArgs,
) -> StoreResult<(EdgeId, u64)> {
    if args.upstream_execution_id == args.downstream_execution_id {
        return Err(EngineError::Conflict(ConflictKind::SelfReferencingEdge));
    }
    let mut f = load_flow(store, &args.flow_id)?;
    if f.is_terminal() {
        return Err(EngineError::State(StateKind::FlowAlreadyTerminal));
    }
    if f.graph_revision != args.expected_graph_revision {
        return Err(EngineError::Contention(ContentionKind::StaleGraphRevision));
    }
    if !f.members.contains(&args.upstream_execution_id) || !f.members.contains(&args.downstream_execution_id)
    {
        return Err(EngineError::State(StateKind::ExecutionNotInFlow));
    }
    if reaches(&f, &args.downstream_execution_id, &args.upstream_execution_id) {
        return Err(EngineError::Conflict(ConflictKind::CycleDetected));
    }
    if f.edges.contains_key(&args.edge_id) {
        return Err(EngineError::Conflict(ConflictKind::DependencyAlreadyExists(args.edge_id.to_string())));
    }
    let edge = EdgeSnapshot {
        edge_id: args.edge_id,
        flow_id: args.flow_id,
        upstream_execution_id: args.upstream_execution_id.clone(),
        downstream_execution_id: args.downstream_execution_id.clone(),
        dependency_kind: args.dependency_kind.clone().unwrap_or_else(|| "success_only".into()),
        satisfaction_condition: "all_required".into(),
        data_passing_ref: args.data_passing_ref.clone().filter(|d| !d.is_empty()),
        edge_state: "pending".into(),
        created_at: now,
        created_by: "engine".into(),
    };
    f.edges.insert(args.edge_id, edge);
    f.outgoing.entry(args.upstream_execution_id.clone()).or_default().insert(args.edge_id);
    f.incoming.entry(args.downstream_execution_id.clone()).or_default().insert(args.edge_id);
    f.graph_revision += 1;
    f.edge_count += 1;
    f.last_mutation_at = now;
    put_flow(store, &f)?;
    Ok((args.edge_id, f.graph_revision))
}

/// `ff_set_edge_group_policy` (spec 03 §2.3.6); true when newly set.
pub fn set_edge_group_policy(
    store: &mut dyn Store,
    _now: TimestampMs,
    flow_id: &FlowId,
    downstream: &ExecutionId,
    policy: EdgeDependencyPolicy,
) -> StoreResult<bool> {
    policy.validate()?;
    let mut f = load_flow(store, flow_id)?;
    if let Some(g) = f.groups.get(downstream) {
        if g.n > 0 {
            return Err(EngineError::invalid_input(
                "edge_group_policy_already_fixed: dependencies already staged",
            ));
        }
        if std::mem::discriminant(&g.policy) == std::mem::discriminant(&policy) {
            return Ok(false);
        }
    }
    f.groups.insert(downstream.clone(), new_group(policy));
    put_flow(store, &f)?;
    Ok(true)
}

fn new_group(policy: EdgeDependencyPolicy) -> EdgeGroup {
    EdgeGroup {
        policy,
        n: 0,
        succeeded: 0,
        failed: 0,
        skipped: 0,
        state: GroupState::Pending,
        satisfied_at: None,
        cancel_siblings: Vec::new(),
        cancel_siblings_reason: None,
    }
}

/// `ff_apply_dependency_to_child` (spec 03 §2.3.7, requiring the staged edge); `None` = already applied.
pub fn apply_dependency_to_child(
    store: &mut dyn Store,
    now: TimestampMs,
    flow_id: &FlowId,
    edge_id: &EdgeId,
) -> StoreResult<Option<u64>> {
    let mut f = load_flow(store, flow_id)?;
    let edge = f.edges.get(edge_id).cloned().ok_or_else(|| {
        EngineError::validation(ff_core::error::ValidationKind::InvalidDependency, "edge_not_found")
    })?;
    let child = edge.downstream_execution_id.clone();
    let mut core = load(store, &child)?;
    if core.flow_id.as_deref().is_some_and(|x| !x.is_empty() && x != flow_id.to_string()) {
        return Err(EngineError::Conflict(ConflictKind::ExecutionAlreadyInFlow));
    }
    let mut d = deps(store, &child)?.unwrap_or_default();
    if d.deps.contains_key(edge_id) {
        return Ok(None);
    }
    d.deps.insert(
        *edge_id,
        DepRecord {
            upstream: edge.upstream_execution_id.clone(),
            state: "unsatisfied".into(),
            data_passing_ref: edge.data_passing_ref.clone(),
            last_resolved_at: None,
        },
    );
    d.unsatisfied_required_count += 1;
    d.flow_id = Some(*flow_id);
    d.last_flow_graph_revision = f.graph_revision;
    d.last_dependency_update_at = now;
    let u = d.unsatisfied_required_count;
    f.groups.entry(child.clone()).or_insert_with(|| new_group(EdgeDependencyPolicy::AllOf)).n += 1;
    if core.state.lifecycle_phase == LifecyclePhase::Runnable
        && core.state.terminal_outcome == TerminalOutcome::None
    {
        remove_from_runnable_indexes(store, &core)?;
        let attempt = match core.state.attempt_state {
            AttemptState::None => AttemptState::PendingFirstAttempt,
            a => a,
        };
        let detail = format!("{u} dep(s) unresolved incl {edge_id}");
        let state = StateVector::runnable(
            EligibilityState::BlockedByDependencies,
            BlockingReason::WaitingForChildren,
            detail,
            attempt,
        );
        transition(&mut core, state, now);
        let score = core.created_at;
        store.index_add(&lane_key(&core, LaneIndex::BlockedDependencies), child.as_str(), score)?;
        store.put_exec(&core)?;
    }
    put_deps(store, &child, &d)?;
    put_flow(store, &f)?;
    Ok(Some(u))
}

/// Makes a dependency-blocked child eligible (AllOf step 5 of §2.3.8).
fn flip_eligible(store: &mut dyn Store, now: TimestampMs, core: &mut ExecCore) -> StoreResult<()> {
    let s = &core.state;
    if s.lifecycle_phase != LifecyclePhase::Runnable
        || s.ownership_state != OwnershipState::Unowned
        || s.terminal_outcome != TerminalOutcome::None
        || s.eligibility_state != EligibilityState::BlockedByDependencies
    {
        return Ok(());
    }
    let attempt = match s.attempt_state {
        AttemptState::None => AttemptState::PendingFirstAttempt,
        a => a,
    };
    store.index_remove(&lane_key(core, LaneIndex::BlockedDependencies), core.execution_id.as_str())?;
    let state = StateVector::runnable(
        EligibilityState::EligibleNow,
        BlockingReason::WaitingForWorker,
        String::new(),
        attempt,
    );
    transition(core, state, now);
    add_eligible(store, core)?;
    store.put_exec(core)
}

/// Routine S of §2.3.8: the child can never run.
fn skip_child(store: &mut dyn Store, now: TimestampMs, core: &mut ExecCore) -> StoreResult<()> {
    let id = core.execution_id.clone();
    let attempt_state = match core.state.attempt_state {
        AttemptState::RunningAttempt | AttemptState::AttemptInterrupted => {
            if let Some(idx) = core.current_attempt_index
                && let Some(mut rec) = store.get_attempt(&id, idx)?
            {
                rec.attempt_state = AttemptLifecycle::EndedCancelled;
                rec.ended_at = Some(now);
                rec.failure_reason = Some("dependency_impossible".into());
                store.put_attempt(&rec)?;
                close_stream_meta(store, &id, idx, "dependency_impossible", now, true)?;
            }
            AttemptState::AttemptTerminal
        }
        _ => AttemptState::None,
    };
    if core.state.lifecycle_phase == LifecyclePhase::Active {
        release_lease(store, core, "dependency_impossible", now, true)?;
    }
    if core.state.lifecycle_phase == LifecyclePhase::Suspended {
        crate::suspension::close_for_terminal(store, now, &id, "cancelled", "cancelled")?;
        store.index_remove(&lane_key(core, LaneIndex::Suspended), id.as_str())?;
        store.index_remove(&IndexKey::SuspensionTimeout(id.partition_index()), id.as_str())?;
    }
    remove_from_runnable_indexes(store, core)?;
    transition(core, StateVector::terminal(TerminalOutcome::Skipped, attempt_state), now);
    core.completed_at = Some(now);
    crate::execution::enter_terminal_index(store, core, now)?;
    store.publish_completion(&id, core.flow_id.as_deref().unwrap_or_default(), "skipped", now)?;
    store.put_exec(core)
}

/// `ff_resolve_dependency` (spec 03 §2.3.8) for one edge of a child.
pub fn resolve_dependency(
    store: &mut dyn Store,
    now: TimestampMs,
    flow_id: &FlowId,
    edge_id: &EdgeId,
    upstream_outcome: TerminalOutcome,
) -> StoreResult<ResolveDependencyOutcome> {
    let mut f = load_flow(store, flow_id)?;
    let edge =
        f.edges.get(edge_id).cloned().ok_or_else(|| {
            EngineError::validation(ff_core::error::ValidationKind::InvalidDependency, "edge")
        })?;
    let child = edge.downstream_execution_id.clone();
    let mut d = deps(store, &child)?.ok_or_else(|| {
        EngineError::validation(ff_core::error::ValidationKind::InvalidDependency, "not applied")
    })?;
    let Some(dep) = d.deps.get(edge_id).cloned() else {
        return Err(EngineError::validation(
            ff_core::error::ValidationKind::InvalidDependency,
            "not applied",
        ));
    };
    if dep.state != "unsatisfied" {
        return Ok(ResolveDependencyOutcome::AlreadyResolved);
    }
    let positive = upstream_outcome == TerminalOutcome::Success;
    let quorum = f.groups.get(&child).is_some_and(|g| g.policy != EdgeDependencyPolicy::AllOf);
    let out = if quorum {
        resolve_quorum(store, now, &mut f, &mut d, &edge, upstream_outcome)?
    } else {
        resolve_all_of(store, now, &mut f, &mut d, &edge, positive)?
    };
    put_deps(store, &child, &d)?;
    put_flow(store, &f)?;
    Ok(out)
}

fn mark_dep(d: &mut DepsRecord, edge: &EdgeId, state: &str, now: TimestampMs) {
    if let Some(dep) = d.deps.get_mut(edge) {
        dep.state = state.to_owned();
        dep.last_resolved_at = Some(now);
    }
    d.last_dependency_update_at = now;
}

/// Copies the upstream result over the child's payload when the edge passes data.
fn pass_data(store: &mut dyn Store, edge: &EdgeSnapshot, core: &ExecCore) -> StoreResult<bool> {
    if edge.data_passing_ref.is_none() || core.state.terminal_outcome != TerminalOutcome::None {
        return Ok(false);
    }
    match store.get_blob(&edge.upstream_execution_id, BlobKind::Result)? {
        Some(result) => {
            store.put_blob(&core.execution_id, BlobKind::Payload, &result)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn resolve_all_of(
    store: &mut dyn Store,
    now: TimestampMs,
    f: &mut FlowRecord,
    d: &mut DepsRecord,
    edge: &EdgeSnapshot,
    positive: bool,
) -> StoreResult<ResolveDependencyOutcome> {
    let child = edge.downstream_execution_id.clone();
    d.unsatisfied_required_count = d.unsatisfied_required_count.saturating_sub(1);
    let group = f.groups.entry(child.clone()).or_insert_with(|| new_group(EdgeDependencyPolicy::AllOf));
    let core = store.get_exec(&child)?;
    if positive {
        mark_dep(d, &edge.edge_id, "satisfied", now);
        group.succeeded += 1;
        if d.unsatisfied_required_count == 0 && d.impossible_required_count == 0 {
            group.state = GroupState::Satisfied;
        }
        let Some(mut core) = core else {
            return Ok(ResolveDependencyOutcome::Satisfied { data_injected: false });
        };
        let injected = pass_data(store, edge, &core)?;
        if d.unsatisfied_required_count == 0 && d.impossible_required_count == 0 {
            flip_eligible(store, now, &mut core)?;
        }
        return Ok(ResolveDependencyOutcome::Satisfied { data_injected: injected });
    }
    mark_dep(d, &edge.edge_id, "impossible", now);
    d.impossible_required_count += 1;
    group.failed += 1;
    group.state = GroupState::Impossible;
    let Some(mut core) = core else {
        return Ok(ResolveDependencyOutcome::Impossible { child_skipped: false });
    };
    if core.state.terminal_outcome != TerminalOutcome::None {
        return Ok(ResolveDependencyOutcome::Impossible { child_skipped: false });
    }
    skip_child(store, now, &mut core)?;
    Ok(ResolveDependencyOutcome::Impossible { child_skipped: true })
}

fn resolve_quorum(
    store: &mut dyn Store,
    now: TimestampMs,
    f: &mut FlowRecord,
    d: &mut DepsRecord,
    edge: &EdgeSnapshot,
    outcome: TerminalOutcome,
) -> StoreResult<ResolveDependencyOutcome> {
    let child = edge.downstream_execution_id.clone();
    let success = outcome == TerminalOutcome::Success;
    mark_dep(d, &edge.edge_id, if success { "satisfied" } else { "impossible" }, now);
    let incoming: Vec<EdgeId> = f.incoming.get(&child).into_iter().flatten().copied().collect();
    let siblings: Vec<ExecutionId> =
        incoming.iter().filter_map(|e| f.edges.get(e)).map(|e| e.upstream_execution_id.clone()).collect();
    let flow_id = f.flow_id;
    let Some(g) = f.groups.get_mut(&child) else { return Ok(ResolveDependencyOutcome::Pending) };
    match outcome {
        TerminalOutcome::Success => g.succeeded += 1,
        TerminalOutcome::Skipped => g.skipped += 1,
        _ => g.failed += 1,
    }
    if g.succeeded + g.failed + g.skipped > g.n {
        return Err(EngineError::Bug {
            kind: ff_core::error::BugKind::InvariantViolation,
            detail: format!("edgegroup counters exceed n: {}/{}", g.succeeded + g.failed + g.skipped, g.n),
        });
    }
    if g.state != GroupState::Pending {
        return Ok(ResolveDependencyOutcome::AlreadyFired);
    }
    let k = u64::from(g.policy.k());
    let state = if g.succeeded >= k {
        GroupState::Satisfied
    } else if g.failed + g.skipped + k > g.n {
        GroupState::Impossible
    } else {
        return Ok(ResolveDependencyOutcome::Pending);
    };
    g.state = state;
    if state == GroupState::Satisfied {
        g.satisfied_at = Some(now);
    }
    if g.policy.on_satisfied() == Some(OnSatisfied::CancelRemaining) {
        let mut running = Vec::new();
        for s in siblings {
            if store.get_exec(&s)?.is_some_and(|c| c.state.lifecycle_phase != LifecyclePhase::Terminal) {
                running.push(s);
            }
        }
        if !running.is_empty() {
            store.index_add(&sibling_group_index(&child), &sibling_group_member(&flow_id, &child), now)?;
        }
        g.cancel_siblings = running;
        g.cancel_siblings_reason = Some(
            if state == GroupState::Satisfied {
                "sibling_quorum_satisfied"
            } else {
                "sibling_quorum_impossible"
            }
            .into(),
        );
    }
    let Some(mut core) = store.get_exec(&child)? else {
        return Ok(if state == GroupState::Satisfied {
            ResolveDependencyOutcome::Satisfied { data_injected: false }
        } else {
            ResolveDependencyOutcome::Impossible { child_skipped: false }
        });
    };
    if state == GroupState::Satisfied {
        let injected = if success { pass_data(store, edge, &core)? } else { false };
        flip_eligible(store, now, &mut core)?;
        return Ok(ResolveDependencyOutcome::Satisfied { data_injected: injected });
    }
    if core.state.terminal_outcome != TerminalOutcome::None {
        return Ok(ResolveDependencyOutcome::Impossible { child_skipped: false });
    }
    skip_child(store, now, &mut core)?;
    Ok(ResolveDependencyOutcome::Impossible { child_skipped: true })
}

/// The completion cascade (spec 03 §2.5), run inline when a flow member becomes terminal:
/// resolves every outgoing edge, recursively for skipped children.
pub fn cascade(store: &mut dyn Store, now: TimestampMs, upstream: &ExecutionId) -> StoreResult<(u32, u32)> {
    let mut resolved = 0;
    let mut cascaded = 0;
    let mut queue = VecDeque::from([(upstream.clone(), 0usize)]);
    while let Some((eid, depth)) = queue.pop_front() {
        if depth > CASCADE_DEPTH_MAX {
            continue;
        }
        let Some(core) = store.get_exec(&eid)? else { continue };
        let Some(fid) = core.flow_id.as_deref().and_then(|f| FlowId::parse(f).ok()) else { continue };
        let Some(f) = flow(store, &fid)? else { continue };
        let outcome = core.state.terminal_outcome;
        for edge_id in f.outgoing.get(&eid).into_iter().flatten().copied().collect::<Vec<_>>() {
            let Some(edge) = f.edges.get(&edge_id).cloned() else { continue };
            let applied =
                deps(store, &edge.downstream_execution_id)?.is_some_and(|d| d.deps.contains_key(&edge_id));
            if !applied {
                continue;
            }
            resolved += 1;
            if let ResolveDependencyOutcome::Impossible { child_skipped: true } =
                resolve_dependency(store, now, &fid, &edge_id, outcome)?
            {
                cascaded += 1;
                queue.push_back((edge.downstream_execution_id.clone(), depth + 1));
            }
        }
    }
    Ok((resolved, cascaded))
}

/// `ff_cancel_flow` (spec 03 §2.3.3) plus the already-terminal read of §2.6.
pub fn cancel_flow_header(
    store: &mut dyn Store,
    now: TimestampMs,
    flow_id: &FlowId,
    reason: &str,
    policy: CancelFlowPolicy,
    grace_ms: u64,
) -> StoreResult<CancelFlowHeader> {
    if grace_ms > (1u64 << 53) - 1 {
        return Err(EngineError::validation(ff_core::error::ValidationKind::InvalidGraceMs, ""));
    }
    let mut f = load_flow(store, flow_id)?;
    let members: Vec<ExecutionId> = f.members.iter().cloned().collect();
    if f.is_terminal() {
        return Ok(CancelFlowHeader::AlreadyTerminal {
            stored_cancellation_policy: f.cancellation_policy.clone(),
            stored_cancel_reason: f.cancel_reason.clone(),
            member_execution_ids: members,
        });
    }
    f.public_flow_state = "cancelled".into();
    f.cancelled_at = Some(now);
    f.cancel_reason = Some(reason.to_owned());
    f.cancellation_policy = Some(policy.as_str().to_owned());
    f.last_mutation_at = now;
    if policy == CancelFlowPolicy::CancelAll && !members.is_empty() {
        f.pending_cancels = f.members.clone();
        let at = now.saturating_add(i64::try_from(grace_ms).unwrap_or(i64::MAX));
        f.cancel_backlog_at = Some(at);
        store.index_add(&cancel_backlog_index(store, flow_id), &flow_id.to_string(), at)?;
    }
    put_flow(store, &f)?;
    Ok(CancelFlowHeader::Cancelled {
        cancellation_policy: policy.as_str().to_owned(),
        member_execution_ids: members,
    })
}

/// `ff_ack_cancel_member` (spec 03 §2.3.4).
pub fn ack_cancel_member(store: &mut dyn Store, flow_id: &FlowId, eid: &ExecutionId) -> StoreResult<()> {
    let Some(mut f) = flow(store, flow_id)? else { return Ok(()) };
    if f.pending_cancels.remove(eid) {
        if f.pending_cancels.is_empty() {
            f.cancel_backlog_at = None;
            store.index_remove(&cancel_backlog_index(store, flow_id), &flow_id.to_string())?;
        }
        put_flow(store, &f)?;
    }
    Ok(())
}

/// `ff_promote_blocked_to_eligible` (spec 03 §2.3.12).
pub fn promote_blocked_to_eligible(
    store: &mut dyn Store,
    now: TimestampMs,
    eid: &ExecutionId,
) -> StoreResult<()> {
    let mut core = load(store, eid)?;
    if core.state.lifecycle_phase != LifecyclePhase::Runnable {
        return Err(EngineError::State(StateKind::NotRunnable));
    }
    if core.state.eligibility_state != EligibilityState::BlockedByDependencies {
        return Err(EngineError::State(StateKind::NotBlockedByDeps));
    }
    if core.state.terminal_outcome != TerminalOutcome::None {
        return Err(EngineError::State(StateKind::Terminal));
    }
    let unresolved =
        deps(store, eid)?.map_or(0, |d| d.deps.values().filter(|x| x.state == "unsatisfied").count());
    if unresolved > 0 {
        return Err(EngineError::State(StateKind::DepsNotSatisfied));
    }
    flip_eligible(store, now, &mut core)
}

/// `ff_set_flow_tags` with the strict key rule (spec 03 §2.7).
pub fn set_flow_tags(
    store: &mut dyn Store,
    now: TimestampMs,
    flow_id: &FlowId,
    tags: &[(String, String)],
) -> StoreResult<usize> {
    if tags.is_empty() {
        return Err(EngineError::invalid_input("tags must be non-empty even-length key/value pairs"));
    }
    if let Some((k, _)) = tags.iter().find(|(k, _)| !is_strict_tag_key(k)) {
        return Err(EngineError::invalid_input(format!("invalid tag key: {k}")));
    }
    let mut f = load_flow(store, flow_id)?;
    for (k, v) in tags {
        f.tags.insert(k.clone(), v.clone());
    }
    f.last_mutation_at = now;
    put_flow(store, &f)?;
    Ok(tags.len())
}

/// `describe_flow` (spec 03 §2.8).
pub fn describe_flow(store: &mut dyn Store, flow_id: &FlowId) -> StoreResult<Option<FlowSnapshot>> {
    let Some(f) = flow(store, flow_id)? else { return Ok(None) };
    let edge_groups = f
        .incoming
        .keys()
        .map(|down| {
            let g = f.groups.get(down).cloned().unwrap_or_else(|| new_group(EdgeDependencyPolicy::AllOf));
            EdgeGroupSnapshot {
                downstream_execution_id: down.clone(),
                policy: g.policy,
                total_deps: g.n,
                satisfied_count: g.succeeded,
                failed_count: g.failed,
                skipped_count: g.skipped,
                running_count: g.n.saturating_sub(g.succeeded + g.failed + g.skipped),
                group_state: g.state,
            }
        })
        .collect();
    let mut states = Vec::with_capacity(f.members.len());
    for m in &f.members {
        states.push(store.get_exec(m)?.map_or("unknown", |c| c.state.public_state.as_str()));
    }
    let summary = FlowSummary::derive(states);
    Ok(Some(FlowSnapshot {
        flow_id: f.flow_id,
        flow_kind: f.flow_kind,
        namespace: f.namespace,
        public_flow_state: f.public_flow_state,
        graph_revision: f.graph_revision,
        node_count: f.node_count,
        edge_count: f.edge_count,
        created_at: f.created_at,
        last_mutation_at: f.last_mutation_at,
        cancelled_at: f.cancelled_at,
        cancel_reason: f.cancel_reason,
        cancellation_policy: f.cancellation_policy,
        tags: f.tags,
        edge_groups,
        summary,
    }))
}

// ---------------------------------------------------------------------------
// Reconcilers (spec 03 §7.3.1–§7.3.4)
// ---------------------------------------------------------------------------

/// Edges one dependency-reconciler visit resolves per child.
const RECONCILE_EDGES_MAX: usize = 20;
/// Members one cancel-reconciler visit cancels per flow.
const CANCEL_MEMBERS_MAX: usize = 500;
/// Siblings one dispatcher visit cancels per group.
const SIBLINGS_MAX: usize = 1024;

fn cancel_backlog_index(store: &dyn Store, flow_id: &FlowId) -> IndexKey {
    let cfg = store.partition_config();
    IndexKey::CancelBacklog(ff_core::partition::flow_partition(&flow_id.0, &cfg).index)
}

fn sibling_group_index(child: &ExecutionId) -> IndexKey {
    IndexKey::PendingCancelGroups(child.partition_index())
}

fn sibling_group_member(flow_id: &FlowId, child: &ExecutionId) -> String {
    format!("{flow_id}|{child}")
}

/// Whether a member-cancel answer is final (the member needs no further cancel).
fn cancel_is_final(r: &StoreResult<ff_core::contracts::CancelOutcome>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => matches!(
            e,
            EngineError::NotFound { .. }
                | EngineError::Validation { .. }
                | EngineError::Contention(_)
                | EngineError::State(_)
                | EngineError::Bug { .. }
        ),
    }
}

fn operator_cancel(
    store: &mut dyn Store,
    now: TimestampMs,
    eid: &ExecutionId,
    reason: &str,
) -> StoreResult<ff_core::contracts::CancelOutcome> {
    let args = ff_core::contracts::CancelExecutionArgs {
        execution_id: eid.clone(),
        reason: reason.to_owned(),
        source: ff_core::CancelSource::OperatorOverride,
        lease_id: None,
        lease_epoch: None,
    };
    crate::lifecycle::cancel_execution(store, now, &args)
}

/// The dependency reconciler's visit of one blocked child (spec 03 §7.3.1): resolves
/// up to 20 unsatisfied edges whose upstream is already terminal (cascading a skip),
/// then promotes the child if it is still blocked with no unsatisfied edge left (the
/// §2.3.12 Spec). Returns the edges resolved; a child that is not blocked is left alone.
pub fn reconcile_blocked_child(
    store: &mut dyn Store,
    now: TimestampMs,
    eid: &ExecutionId,
) -> StoreResult<u32> {
    let blocked = |c: &ExecCore| {
        c.state.lifecycle_phase == LifecyclePhase::Runnable
            && c.state.eligibility_state == EligibilityState::BlockedByDependencies
    };
    let Some(core) = store.get_exec(eid)? else { return Ok(0) };
    if !blocked(&core) {
        return Ok(0);
    }
    let mut resolved = 0;
    let flow_id = core.flow_id.as_deref().and_then(|f| FlowId::parse(f).ok());
    if let (Some(fid), Some(d)) = (flow_id, deps(store, eid)?) {
        let open: Vec<(EdgeId, ExecutionId)> = d
            .deps
            .iter()
            .filter(|(_, dep)| dep.state == "unsatisfied")
            .take(RECONCILE_EDGES_MAX)
            .map(|(e, dep)| (*e, dep.upstream.clone()))
            .collect();
        for (edge_id, upstream) in open {
            let Some(up) = store.get_exec(&upstream)? else { continue };
            if up.state.lifecycle_phase != LifecyclePhase::Terminal
                || up.state.terminal_outcome == TerminalOutcome::None
            {
                continue;
            }
            resolved += 1;
            if let ResolveDependencyOutcome::Impossible { child_skipped: true } =
                resolve_dependency(store, now, &fid, &edge_id, up.state.terminal_outcome)?
            {
                cascade(store, now, eid)?;
                return Ok(resolved);
            }
        }
    }
    let Some(mut core) = store.get_exec(eid)? else { return Ok(resolved) };
    let unsatisfied =
        deps(store, eid)?.map_or(0, |d| d.deps.values().filter(|x| x.state == "unsatisfied").count());
    if blocked(&core) && unsatisfied == 0 {
        flip_eligible(store, now, &mut core)?;
    }
    Ok(resolved)
}

/// The cancel reconciler's visit of one backlogged flow (spec 03 §7.3.2): cancels up
/// to 500 members still owed a cancel and acknowledges each final answer. Returns
/// how many members were acknowledged; a missing flow or malformed entry is dropped.
pub fn drain_cancel_backlog(
    store: &mut dyn Store,
    now: TimestampMs,
    member: &str,
    partition: u16,
) -> StoreResult<u32> {
    let index = IndexKey::CancelBacklog(partition);
    let Ok(fid) = FlowId::parse(member) else {
        store.index_remove(&index, member)?;
        return Ok(0);
    };
    let Some(f) = flow(store, &fid)? else {
        store.index_remove(&index, member)?;
        return Ok(0);
    };
    if f.pending_cancels.is_empty() {
        store.index_remove(&index, member)?;
        return Ok(0);
    }
    let reason = f.cancel_reason.clone().unwrap_or_else(|| "flow_cancelled".to_owned());
    let owed: Vec<ExecutionId> = f.pending_cancels.iter().take(CANCEL_MEMBERS_MAX).cloned().collect();
    let mut acked = 0;
    for m in owed {
        if cancel_is_final(&operator_cancel(store, now, &m, &reason)) {
            ack_cancel_member(store, &fid, &m)?;
            acked += 1;
        }
    }
    Ok(acked)
}

/// The sibling-cancel dispatcher's visit of one edge group (spec 03 §7.3.3), with the
/// drain of §2.3.9 in the same atomic step: cancels every sibling still listed, then
/// clears the list and drops the group from the pending set. Returns the siblings
/// cancelled; if any cancel answers a non-final error the group is left for the next pass.
pub fn dispatch_sibling_cancels(
    store: &mut dyn Store,
    now: TimestampMs,
    member: &str,
    partition: u16,
) -> StoreResult<u32> {
    let index = IndexKey::PendingCancelGroups(partition);
    let parsed =
        member.split_once('|').and_then(|(f, c)| Some((FlowId::parse(f).ok()?, ExecutionId::parse(c).ok()?)));
    let Some((fid, child)) = parsed else {
        store.index_remove(&index, member)?;
        return Ok(0);
    };
    let group = flow(store, &fid)?.and_then(|f| f.groups.get(&child).cloned());
    let Some(group) = group else {
        store.index_remove(&index, member)?;
        return Ok(0);
    };
    let reason =
        group.cancel_siblings_reason.clone().unwrap_or_else(|| "sibling_quorum_satisfied".to_owned());
    let mut cancelled = 0;
    for sibling in group.cancel_siblings.iter().take(SIBLINGS_MAX) {
        let r = operator_cancel(store, now, sibling, &reason);
        if !cancel_is_final(&r) {
            return Ok(cancelled);
        }
        if r.is_ok() {
            cancelled += 1;
        }
    }
    // The cancels above ran the cascade, which rewrote the flow: reload before draining.
    if let Some(mut f) = flow(store, &fid)? {
        if let Some(g) = f.groups.get_mut(&child) {
            g.cancel_siblings.clear();
        }
        put_flow(store, &f)?;
    }
    store.index_remove(&index, member)?;
    Ok(cancelled)
}

/// The flow side of replaying a skipped member (spec 01 §6.24): every `impossible`
/// edge of the child becomes `unsatisfied` again, its edge group reopens with
/// counters recomputed from the edges, and the number of unsatisfied edges is returned.
pub fn reopen_skipped_member(store: &mut dyn Store, now: TimestampMs, eid: &ExecutionId) -> StoreResult<u64> {
    let Some(mut d) = deps(store, eid)? else { return Ok(0) };
    for dep in d.deps.values_mut().filter(|x| x.state == "impossible") {
        dep.state = "unsatisfied".to_owned();
        dep.last_resolved_at = None;
    }
    let unsatisfied = d.deps.values().filter(|x| x.state == "unsatisfied").count() as u64;
    let satisfied = d.deps.values().filter(|x| x.state == "satisfied").count() as u64;
    d.unsatisfied_required_count = unsatisfied;
    d.impossible_required_count = 0;
    d.last_dependency_update_at = now;
    put_deps(store, eid, &d)?;
    if let Some(fid) = d.flow_id
        && let Some(mut f) = flow(store, &fid)?
        && let Some(g) = f.groups.get_mut(eid)
    {
        g.succeeded = satisfied;
        g.failed = 0;
        g.skipped = 0;
        g.state = GroupState::Pending;
        g.satisfied_at = None;
        f.last_mutation_at = now;
        put_flow(store, &f)?;
    }
    Ok(unsatisfied)
}

/// `ff_evaluate_flow_eligibility` (spec 03 §2.3.11). For a child gated by an
/// any-of or quorum group the group's decision is read, so a satisfied quorum
/// child reports `eligible` (the reference reads only the all-of counters).
pub fn evaluate_flow_eligibility(store: &dyn Store, eid: &ExecutionId) -> StoreResult<FlowEligibility> {
    let Some(core) = store.get_exec(eid)? else { return Ok(FlowEligibility::NotFound) };
    let s = &core.state;
    if s.lifecycle_phase != LifecyclePhase::Runnable {
        return Ok(FlowEligibility::NotRunnable);
    }
    if s.ownership_state != OwnershipState::Unowned {
        return Ok(FlowEligibility::Owned);
    }
    if s.terminal_outcome != TerminalOutcome::None {
        return Ok(FlowEligibility::Terminal);
    }
    let Some(d) = deps(store, eid)? else { return Ok(FlowEligibility::Eligible) };
    let group = match d.flow_id {
        Some(fid) => flow(store, &fid)?.and_then(|f| f.groups.get(eid).cloned()),
        None => None,
    };
    if let Some(g) = group.filter(|g| g.policy != EdgeDependencyPolicy::AllOf) {
        return Ok(match g.state {
            GroupState::Satisfied => FlowEligibility::Eligible,
            GroupState::Impossible => FlowEligibility::Impossible,
            GroupState::Pending => FlowEligibility::BlockedByDependencies,
        });
    }
    Ok(if d.impossible_required_count > 0 {
        FlowEligibility::Impossible
    } else if d.unsatisfied_required_count > 0 {
        FlowEligibility::BlockedByDependencies
    } else {
        FlowEligibility::Eligible
    })
}
