//! Flows: members, staged and applied edges, edge groups, the completion
//! cascade with skip propagation, flow cancel and tags (spec 03 §2), through
//! the trait only. Every flow lives on partition 0 with its members.

use std::collections::{BTreeMap, BTreeSet};

use ff_core::contracts::*;
use ff_core::flow::*;
use ff_core::state::{BlockingReason, TerminalOutcome};
use ff_core::suspension::*;
use ff_core::{
    ContractFamily, EdgeId, EngineError, ExecutionId, FlowId, LaneId, Namespace, PublicState, SuspensionId,
    WaitpointId,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use uuid::Uuid;

use crate::cases::assert_invariants;
use crate::{Case, Ctx, Fixture, Group, Harness, case, rejects, untimed};

/// Longest a scenario keeps driving runnable members before it calls the flow stuck.
const DRIVE_STEPS_MAX: usize = 200;
/// Random graphs the property case checks (fixed: each needs a fresh fixture).
const GRAPH_CASES: u32 = 48;
/// Most members of a random graph.
const GRAPH_NODES_MAX: usize = 7;

// ------------------------------------------------------------ the flow harness

/// A harness with one flow, named edges and a transcript that names them.
struct FlowHarness {
    h: Harness,
    flow: FlowId,
    edges: BTreeMap<String, EdgeId>,
    next_uuid: u64,
    /// The backend's clock just before and just after `create_flow`.
    created_at: i64,
    created_at_upper: i64,
}

/// A flow id hashing to partition 0, the `nth` such id.
fn flow_id_on_partition_0(cfg: &ff_core::PartitionConfig, nth: u64) -> FlowId {
    let mut found = 0;
    for i in 0..100_000u64 {
        let u = Uuid::from_u64_pair(0xf10f, i);
        if ff_core::partition::flow_partition(&u, cfg).index == 0 {
            if found == nth {
                return FlowId::from_uuid(u);
            }
            found += 1;
        }
    }
    panic!("no flow id on partition 0 in 100000 tries");
}

/// An execution id on partition 0 that nothing creates.
fn missing_on_partition_0() -> ExecutionId {
    ExecutionId::from_parts(0, Uuid::from_u64_pair(0xdead, 0xf10))
}

fn policy_text(p: &EdgeDependencyPolicy) -> String {
    let on = |o: &OnSatisfied| match o {
        OnSatisfied::CancelRemaining => "cancel_remaining",
        OnSatisfied::LetRun => "let_run",
    };
    match p {
        EdgeDependencyPolicy::AllOf => "all_of".into(),
        EdgeDependencyPolicy::AnyOf { on_satisfied } => format!("any_of({})", on(on_satisfied)),
        EdgeDependencyPolicy::Quorum { k, on_satisfied } => format!("quorum({k}, {})", on(on_satisfied)),
    }
}

fn group_state_text(s: GroupState) -> &'static str {
    match s {
        GroupState::Pending => "pending",
        GroupState::Satisfied => "satisfied",
        GroupState::Impossible => "impossible",
    }
}

const QUORUM_2_CANCEL: EdgeDependencyPolicy =
    EdgeDependencyPolicy::Quorum { k: 2, on_satisfied: OnSatisfied::CancelRemaining };
const ANY_LET_RUN: EdgeDependencyPolicy = EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::LetRun };

impl FlowHarness {
    /// A harness over `fixture` with a fresh open flow.
    async fn new(fixture: &Fixture) -> Self {
        let mut h = Harness::new(fixture);
        h.one_partition = true;
        let flow = flow_id_on_partition_0(&h.b.partition_config(), 0);
        let created_at = h.now().await;
        let mut f =
            Self { h, flow, edges: BTreeMap::new(), next_uuid: 0, created_at, created_at_upper: created_at };
        let out = f.h.b.create_flow(f.flow_args(flow)).await.expect("create_flow");
        f.created_at_upper = f.h.now().await;
        assert_eq!(out, CreateFlowOutcome::Created { flow_id: flow });
        f.say("create flow -> created".into());
        f
    }

    fn flow_args(&self, flow_id: FlowId) -> CreateFlowArgs {
        CreateFlowArgs { flow_id, flow_kind: "dag".into(), namespace: Namespace::new("ns") }
    }

    fn uuid(&mut self, tag: u64) -> Uuid {
        self.next_uuid += 1;
        Uuid::from_u64_pair(tag, self.next_uuid)
    }

    /// Logs a line with edge and flow ids named.
    fn say(&mut self, line: String) {
        let mut line = line.replace(&self.flow.to_string(), "flow");
        for (name, id) in &self.edges {
            line = line.replace(&id.to_string(), name);
        }
        self.h.say(line);
    }

    fn id(&self, name: &str) -> ExecutionId {
        self.h.id(name)
    }

    fn edge(&self, up: &str, down: &str) -> EdgeId {
        self.edges[&format!("{up}->{down}")]
    }

    async fn snapshot(&self) -> FlowSnapshot {
        self.h.b.describe_flow(&self.flow).await.expect("describe_flow").expect("flow exists")
    }

    async fn revision(&self) -> u64 {
        self.snapshot().await.graph_revision
    }

    /// Creates `name` on the flow's partition and adds it as a member.
    async fn member(&mut self, name: &str) {
        self.member_with(name, |_| {}).await;
    }

    async fn member_with(&mut self, name: &str, f: impl FnOnce(&mut CreateExecutionArgs)) {
        self.h.create_with(name, f).await;
        let r = self.h.b.add_execution_to_flow(&self.flow, &self.id(name)).await;
        let line = match r {
            Ok(AddToFlowOutcome::Added { new_node_count, .. }) => {
                format!("add {name} -> member #{new_node_count}")
            }
            Ok(other) => format!("add {name} -> {other:?}"),
            Err(e) => format!("add {name} -> {}", self.h.err(&e)),
        };
        self.say(line);
    }

    async fn members(&mut self, names: &[&str]) {
        for n in names {
            self.member(n).await;
        }
    }

    /// Stages `up -> down` at the current revision under a fresh edge id.
    async fn stage(&mut self, up: &str, down: &str) -> Result<u64, EngineError> {
        let edge_id = EdgeId::from_uuid(self.uuid(0xed6e));
        let name = format!("{up}->{down}");
        self.edges.insert(name.clone(), edge_id);
        let args = StageEdgeArgs {
            flow_id: self.flow,
            edge_id,
            upstream_execution_id: self.id(up),
            downstream_execution_id: self.id(down),
            dependency_kind: None,
            data_passing_ref: None,
            expected_graph_revision: self.revision().await,
        };
        let r = self.h.b.stage_dependency_edge(args).await.map(|(_, rev)| rev);
        let line = match &r {
            Ok(rev) => format!("stage {name} -> revision {rev}"),
            Err(e) => format!("stage {name} -> {}", self.h.err(e)),
        };
        self.say(line);
        r
    }

    async fn apply(&mut self, up: &str, down: &str) -> Result<Option<u64>, EngineError> {
        let r = self.h.b.apply_dependency_to_child(&self.flow, &self.edge(up, down)).await;
        let line = match &r {
            Ok(Some(u)) => format!("apply {up}->{down} -> {u} unresolved"),
            Ok(None) => format!("apply {up}->{down} -> already applied"),
            Err(e) => format!("apply {up}->{down} -> {}", self.h.err(e)),
        };
        self.say(line);
        r
    }

    /// Stages and applies `up -> down`.
    async fn link(&mut self, up: &str, down: &str) {
        self.stage(up, down).await.expect("stage");
        self.apply(up, down).await.expect("apply");
    }

    async fn policy(&mut self, down: &str, p: EdgeDependencyPolicy) -> Result<bool, EngineError> {
        let r = self.h.b.set_edge_group_policy(&self.flow, &self.id(down), p).await;
        let line = match &r {
            Ok(true) => format!("policy {down} = {} -> set", policy_text(&p)),
            Ok(false) => format!("policy {down} = {} -> already set", policy_text(&p)),
            Err(e) => format!("policy {down} = {} -> {}", policy_text(&p), self.h.err(e)),
        };
        self.say(line);
        r
    }

    async fn public(&self, name: &str) -> PublicState {
        self.h.b.read_execution_state(&self.id(name)).await.expect("read state").expect("exists")
    }

    /// Logs the public state of each named member on one line.
    async fn states(&mut self, names: &[&str]) {
        let mut parts = Vec::new();
        for n in names {
            parts.push(format!("{n}={}", self.public(n).await));
        }
        self.say(format!("states: {}", parts.join(" ")));
    }

    /// Logs the flow header and every edge group.
    async fn show_flow(&mut self) {
        let s = self.snapshot().await;
        let cancel = match (&s.cancellation_policy, &s.cancel_reason, s.cancelled_at) {
            (Some(p), Some(r), Some(at)) => format!(" policy={p} reason={r} at {}", self.h.t(at)),
            _ => String::new(),
        };
        self.say(format!(
            "flow: {} revision={} nodes={} edges={}{cancel}",
            s.public_flow_state, s.graph_revision, s.node_count, s.edge_count
        ));
        for g in &s.edge_groups {
            let line = format!(
                "  group {}: {} n={} ok={} failed={} skipped={} running={} {}",
                g.downstream_execution_id,
                policy_text(&g.policy),
                g.total_deps,
                g.satisfied_count,
                g.failed_count,
                g.skipped_count,
                g.running_count,
                group_state_text(g.group_state)
            );
            self.say(line);
        }
    }

    /// Grants, claims and completes `name`.
    async fn run_ok(&mut self, name: &str) {
        self.h.grant_claim(name, "w1").await;
        self.h.complete(name).await.expect("complete");
    }

    /// Grants, claims and fails `name` terminally (no retry policy).
    async fn run_fail(&mut self, name: &str) {
        self.h.grant_claim(name, "w1").await;
        self.h.fail(name).await.expect("fail");
    }

    async fn cancel_flow(&mut self, policy: CancelFlowPolicy) -> CancelFlowResult {
        let r = self.h.b.cancel_flow(&self.flow, "operator", policy).await.expect("cancel_flow");
        let line = match &r {
            CancelFlowResult::Cancelled { cancellation_policy, member_execution_ids } => format!(
                "cancel flow ({}) -> cancelled {cancellation_policy}, {} members",
                policy.as_str(),
                member_execution_ids.len()
            ),
            CancelFlowResult::PartiallyCancelled { failed_member_execution_ids, .. } => {
                let ids: Vec<&str> = failed_member_execution_ids.iter().map(ExecutionId::as_str).collect();
                format!(
                    "cancel flow ({}) -> partially cancelled, failed [{}]",
                    policy.as_str(),
                    ids.join(", ")
                )
            }
            other => format!("cancel flow -> {other:?}"),
        };
        self.say(line);
        r
    }
}

// ------------------------------------------------------------ contract cases

async fn create_flow_and_describe(ctx: Ctx) {
    let f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    let before = f.h.dump().await;
    let mut retry = f.flow_args(f.flow);
    retry.flow_kind = "other".into();
    retry.namespace = Namespace::new("elsewhere");
    let again = b.create_flow(retry).await.expect("retry");
    assert_eq!(again, CreateFlowOutcome::AlreadySatisfied { flow_id: f.flow });
    assert_eq!(before, f.h.dump().await, "a retried create_flow changes nothing");
    let s = f.snapshot().await;
    assert_eq!((s.flow_kind.as_str(), s.namespace.as_str()), ("dag", "ns"), "the retry's kind is ignored");
    assert_eq!(s.public_flow_state, "open");
    assert_eq!((s.graph_revision, s.node_count, s.edge_count), (0, 0, 0));
    assert_eq!(s.created_at, s.last_mutation_at);
    f.h.assert_stamp("created_at", s.created_at, f.created_at, f.created_at_upper);
    assert!(s.cancelled_at.is_none() && s.cancel_reason.is_none() && s.cancellation_policy.is_none());
    assert!(s.tags.is_empty() && s.edge_groups.is_empty());
    let unknown = flow_id_on_partition_0(&b.partition_config(), 5);
    assert!(b.describe_flow(&unknown).await.expect("describe").is_none(), "unknown flow reads as None");
    let mut long = f.flow_args(unknown);
    long.flow_kind = "k".repeat(257);
    rejects!(f.h, b.create_flow(long), "invalid_input");
}

async fn add_execution_to_flow_codes(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    let other = flow_id_on_partition_0(&b.partition_config(), 1);
    let unknown = flow_id_on_partition_0(&b.partition_config(), 2);
    // Checks in order: partition, flow missing, flow terminal, execution missing.
    rejects!(f.h, b.add_execution_to_flow(&unknown, &missing_on_partition_0()), "flow_not_found");
    rejects!(f.h, b.add_execution_to_flow(&f.flow, &missing_on_partition_0()), "execution_not_found");
    let off = ExecutionId::from_parts(1, Uuid::from_u64_pair(0x0ff, 1));
    let args = CreateExecutionArgs::new(off.clone(), "ns", LaneId::new(crate::harness::LANE), "task");
    b.create_execution(args).await.expect("create off-partition");
    rejects!(f.h, b.add_execution_to_flow(&f.flow, &off), "invalid_input");
    f.member("a").await;
    let s = f.snapshot().await;
    assert_eq!((s.node_count, s.graph_revision), (1, 1));
    let before = f.h.dump().await;
    let again = b.add_execution_to_flow(&f.flow, &f.id("a")).await.expect("repeat add");
    assert_eq!(again, AddToFlowOutcome::AlreadyMember { execution_id: f.id("a"), node_count: 1 });
    assert_eq!(before, f.h.dump().await, "a repeated add changes no counter");
    // A member of one flow cannot join another (spec: Conflict(ExecutionAlreadyInFlow)).
    b.create_flow(f.flow_args(other)).await.expect("second flow");
    rejects!(f.h, b.add_execution_to_flow(&other, &f.id("a")), "execution_already_in_flow");
    f.h.create("b").await;
    b.cancel_flow_header(&other, "done", CancelFlowPolicy::FlowOnly, 0).await.expect("cancel other");
    rejects!(f.h, b.add_execution_to_flow(&other, &f.id("b")), "flow_already_terminal");
    rejects!(f.h, b.add_execution_to_flow(&other, &missing_on_partition_0()), "flow_already_terminal");
    assert_invariants(&f.h, &ctx).await;
}

async fn stage_dependency_edge_codes(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    f.members(&["a", "b", "c"]).await;
    f.h.create("outsider").await;
    let unknown = flow_id_on_partition_0(&b.partition_config(), 2);
    let args = |f: &FlowHarness, up: &str, down: &str, rev: u64, n: u64| StageEdgeArgs {
        flow_id: f.flow,
        edge_id: EdgeId::from_uuid(Uuid::from_u64_pair(0x57a6, n)),
        upstream_execution_id: f.id(up),
        downstream_execution_id: f.id(down),
        dependency_kind: None,
        data_passing_ref: None,
        expected_graph_revision: rev,
    };
    let on_unknown = |mut a: StageEdgeArgs| {
        a.flow_id = unknown;
        a
    };
    // Self edge is checked first, before the flow is even read.
    rejects!(f.h, b.stage_dependency_edge(on_unknown(args(&f, "a", "a", 3, 1))), "self_referencing_edge");
    rejects!(f.h, b.stage_dependency_edge(on_unknown(args(&f, "a", "b", 3, 1))), "flow_not_found");
    rejects!(f.h, b.stage_dependency_edge(args(&f, "a", "b", 2, 1)), "stale_graph_revision");
    rejects!(f.h, b.stage_dependency_edge(args(&f, "outsider", "b", 2, 1)), "stale_graph_revision");
    rejects!(f.h, b.stage_dependency_edge(args(&f, "outsider", "b", 3, 1)), "execution_not_in_flow");
    rejects!(f.h, b.stage_dependency_edge(args(&f, "a", "outsider", 3, 1)), "execution_not_in_flow");
    let (id, rev) = b.stage_dependency_edge(args(&f, "a", "b", 3, 1)).await.expect("stage a->b");
    assert_eq!((id, rev), (EdgeId::from_uuid(Uuid::from_u64_pair(0x57a6, 1)), 4));
    rejects!(f.h, b.stage_dependency_edge(args(&f, "b", "a", 4, 2)), "cycle_detected");
    b.stage_dependency_edge(args(&f, "b", "c", 4, 3)).await.expect("stage b->c");
    rejects!(f.h, b.stage_dependency_edge(args(&f, "c", "a", 5, 4)), "cycle_detected");
    rejects!(f.h, b.stage_dependency_edge(args(&f, "a", "c", 5, 1)), "dependency_already_exists");
    // The same pair under another edge id is a second edge (spec 03 §2.3.5 notes).
    assert_eq!(b.stage_dependency_edge(args(&f, "a", "b", 5, 5)).await.expect("parallel edge").1, 6);
    let s = f.snapshot().await;
    assert_eq!((s.edge_count, s.graph_revision, s.node_count), (3, 6, 3));
    assert_eq!(f.public("b").await, PublicState::Waiting, "staging does not apply");
    let existing = b.stage_dependency_edge(args(&f, "b", "c", 6, 3)).await.expect_err("duplicate id");
    assert!(
        matches!(
            existing.root(),
            EngineError::Conflict(ff_core::error::ConflictKind::DependencyAlreadyExists(_))
        ),
        "spec: Conflict(DependencyAlreadyExists) directly: {existing:?}"
    );
    b.cancel_flow_header(&f.flow, "stop", CancelFlowPolicy::FlowOnly, 0).await.expect("cancel");
    rejects!(f.h, b.stage_dependency_edge(args(&f, "a", "c", 6, 6)), "flow_already_terminal");
    assert_invariants(&f.h, &ctx).await;
}

async fn edge_group_policy_codes(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    f.members(&["a", "b", "c", "d", "e"]).await;
    let unknown = flow_id_on_partition_0(&b.partition_config(), 2);
    let d = f.id("d");
    let zero = EdgeDependencyPolicy::Quorum { k: 0, on_satisfied: OnSatisfied::LetRun };
    // The k pre-check runs before the flow is read.
    rejects!(f.h, b.set_edge_group_policy(&unknown, &d, zero), "invalid_input");
    let huge = EdgeDependencyPolicy::Quorum { k: u32::MAX, on_satisfied: OnSatisfied::LetRun };
    rejects!(f.h, b.set_edge_group_policy(&f.flow, &d, huge), "invalid_input");
    rejects!(f.h, b.set_edge_group_policy(&unknown, &d, EdgeDependencyPolicy::AllOf), "flow_not_found");
    assert!(f.policy("d", QUORUM_2_CANCEL).await.expect("set"));
    // "already_set" compares the variant only: k and on_satisfied stay as first set.
    let other_k = EdgeDependencyPolicy::Quorum { k: 3, on_satisfied: OnSatisfied::LetRun };
    assert!(!f.policy("d", other_k).await.expect("already set"));
    assert!(f.policy("d", ANY_LET_RUN).await.expect("another variant replaces"));
    assert!(f.policy("d", QUORUM_2_CANCEL).await.expect("back to quorum"));
    for up in ["a", "b", "c"] {
        f.stage(up, "d").await.expect("stage");
    }
    // Staged but not applied: the policy may still change (n counts applied edges).
    assert!(!f.policy("d", QUORUM_2_CANCEL).await.expect("still settable"));
    f.apply("a", "d").await.expect("apply");
    rejects!(f.h, b.set_edge_group_policy(&f.flow, &d, QUORUM_2_CANCEL), "invalid_input");
    rejects!(f.h, b.set_edge_group_policy(&f.flow, &d, EdgeDependencyPolicy::AllOf), "invalid_input");
    f.link("a", "e").await;
    let s = f.snapshot().await;
    let groups: Vec<(ExecutionId, EdgeDependencyPolicy, u64, u64, GroupState)> = s
        .edge_groups
        .iter()
        .map(|g| (g.downstream_execution_id.clone(), g.policy, g.total_deps, g.running_count, g.group_state))
        .collect();
    assert_eq!(
        groups,
        [
            (f.id("d"), QUORUM_2_CANCEL, 1, 1, GroupState::Pending),
            (f.id("e"), EdgeDependencyPolicy::AllOf, 1, 1, GroupState::Pending)
        ]
    );
    assert_invariants(&f.h, &ctx).await;
}

async fn apply_dependency_codes(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    f.members(&["a", "b", "c", "x"]).await;
    f.stage("a", "c").await.expect("stage");
    let unknown = flow_id_on_partition_0(&b.partition_config(), 2);
    rejects!(f.h, b.apply_dependency_to_child(&unknown, &f.edge("a", "c")), "flow_not_found");
    // Apply requires the staged edge (spec 03 §2.3.7 Spec; DECISIONS: `invalid_dependency`).
    let never_staged = EdgeId::from_uuid(Uuid::from_u64_pair(0x0bad, 1));
    rejects!(f.h, b.apply_dependency_to_child(&f.flow, &never_staged), "invalid_dependency");
    let rev = f.revision().await;
    assert_eq!(f.apply("a", "c").await.expect("apply"), Some(1));
    assert_eq!(f.revision().await, rev, "apply does not bump the graph revision");
    let snap = b.describe_execution(&f.id("c")).await.expect("describe").expect("c");
    assert_eq!(snap.public_state, PublicState::WaitingChildren);
    assert_eq!(snap.state.blocking_reason, BlockingReason::WaitingForChildren);
    assert_eq!(snap.state.blocking_detail, format!("1 dep(s) unresolved incl {}", f.edge("a", "c")));
    f.link("b", "c").await;
    rejects_none(&f, "a", "c").await;
    f.h.eligible().await;
    let eligible = f.h.log.last().cloned().unwrap_or_default();
    assert!(!eligible.contains('c'), "a blocked child leaves the eligible set: {eligible}");
    // An active child only records the dependency.
    f.h.grant_claim("x", "w1").await;
    f.stage("a", "x").await.expect("stage");
    assert_eq!(f.apply("a", "x").await.expect("apply to active"), Some(1));
    assert_eq!(f.public("x").await, PublicState::Active);
    assert_invariants(&f.h, &ctx).await;
}

/// Applying an applied edge answers `None` and writes nothing.
async fn rejects_none(f: &FlowHarness, up: &str, down: &str) {
    let before = f.h.dump().await;
    let r = f.h.b.apply_dependency_to_child(&f.flow, &f.edge(up, down)).await.expect("re-apply");
    assert_eq!(r, None);
    assert_eq!(before, f.h.dump().await, "a re-apply writes nothing");
}

async fn resolve_dependency_codes(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    f.members(&["a", "b", "c", "x", "y", "z"]).await;
    let flow = f.flow;
    let unknown_edge = EdgeId::from_uuid(Uuid::from_u64_pair(0x0bad, 2));
    rejects!(f.h, b.resolve_dependency(&flow, &unknown_edge, TerminalOutcome::Success), "invalid_dependency");
    f.stage("a", "c").await.expect("stage");
    let staged = f.edge("a", "c");
    rejects!(f.h, b.resolve_dependency(&flow, &staged, TerminalOutcome::Success), "invalid_dependency");
    f.apply("a", "c").await.expect("apply");
    f.link("b", "c").await;
    let ok = b.resolve_dependency(&flow, &staged, TerminalOutcome::Success).await.expect("resolve");
    assert_eq!(ok, ResolveDependencyOutcome::Satisfied { data_injected: false });
    assert_eq!(f.public("c").await, PublicState::WaitingChildren, "one edge still unresolved");
    let before = f.h.dump().await;
    let again = b.resolve_dependency(&flow, &staged, TerminalOutcome::Failed).await.expect("again");
    assert_eq!(again, ResolveDependencyOutcome::AlreadyResolved);
    assert_eq!(before, f.h.dump().await, "already_resolved writes nothing");
    let last = b.resolve_dependency(&flow, &f.edge("b", "c"), TerminalOutcome::Success).await.expect("last");
    assert_eq!(last, ResolveDependencyOutcome::Satisfied { data_injected: false });
    assert_eq!(f.public("c").await, PublicState::Waiting, "all edges satisfied: eligible");
    // A negative outcome skips the child; later positives only move counters.
    f.link("x", "z").await;
    f.link("y", "z").await;
    let neg = b.resolve_dependency(&flow, &f.edge("x", "z"), TerminalOutcome::Expired).await.expect("neg");
    assert_eq!(neg, ResolveDependencyOutcome::Impossible { child_skipped: true });
    assert_eq!(f.public("z").await, PublicState::Skipped);
    let late = b.resolve_dependency(&flow, &f.edge("y", "z"), TerminalOutcome::Success).await.expect("late");
    assert_eq!(late, ResolveDependencyOutcome::Satisfied { data_injected: false });
    assert_eq!(f.public("z").await, PublicState::Skipped, "a skipped child stays skipped");
    let g = f.snapshot().await.edge_groups.into_iter().find(|g| g.downstream_execution_id == f.id("z"));
    let g = g.expect("group z");
    assert_eq!((g.satisfied_count, g.failed_count, g.group_state), (1, 1, GroupState::Impossible));
    assert_invariants(&f.h, &ctx).await;
}

/// Data passing copies the upstream result over the child's payload.
async fn data_passing(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    f.members(&["up", "down", "late"]).await;
    let mut args = StageEdgeArgs {
        flow_id: f.flow,
        edge_id: EdgeId::from_uuid(Uuid::from_u64_pair(0xda7a, 1)),
        upstream_execution_id: f.id("up"),
        downstream_execution_id: f.id("down"),
        dependency_kind: Some("success_only".into()),
        data_passing_ref: Some("result".into()),
        expected_graph_revision: f.revision().await,
    };
    b.stage_dependency_edge(args.clone()).await.expect("stage");
    b.apply_dependency_to_child(&f.flow, &args.edge_id).await.expect("apply");
    f.run_ok("up").await;
    assert_eq!(f.public("down").await, PublicState::Waiting, "the cascade ran in the completing step");
    let ctx_down = b.read_execution_context(&f.id("down")).await.expect("context");
    assert_eq!(ctx_down.input_payload, b"done", "upstream result copied over the payload");
    // An edge applied after its upstream finished: resolving it reports the injection.
    args.edge_id = EdgeId::from_uuid(Uuid::from_u64_pair(0xda7a, 2));
    args.downstream_execution_id = f.id("late");
    args.expected_graph_revision = f.revision().await;
    b.stage_dependency_edge(args.clone()).await.expect("stage late");
    b.apply_dependency_to_child(&f.flow, &args.edge_id).await.expect("apply late");
    let r = b.resolve_dependency(&f.flow, &args.edge_id, TerminalOutcome::Success).await.expect("resolve");
    assert_eq!(r, ResolveDependencyOutcome::Satisfied { data_injected: true });
    let ctx_late = b.read_execution_context(&f.id("late")).await.expect("context");
    assert_eq!(ctx_late.input_payload, b"done");
    assert_invariants(&f.h, &ctx).await;
}

/// Every terminal transition of a member resolves its children in the same step.
async fn completion_cascade_all_of(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    f.members(&["a", "b", "c", "d", "r", "rc", "k", "kc", "t", "tc"]).await;
    for (up, down) in [("a", "b"), ("b", "c"), ("c", "d"), ("r", "rc"), ("k", "kc"), ("t", "tc")] {
        f.link(up, down).await;
    }
    f.run_ok("a").await;
    assert_eq!(f.public("b").await, PublicState::Waiting, "complete promotes the child at once");
    f.run_fail("b").await;
    assert_eq!(f.public("c").await, PublicState::Skipped, "terminal fail skips the child");
    assert_eq!(f.public("d").await, PublicState::Skipped, "skips propagate recursively");
    // A fail that schedules a retry is not terminal: the child stays blocked.
    let retry = r#"{"max_retries":1,"retryable_categories":["transient"]}"#;
    f.h.grant_claim("r", "w1").await;
    f.h.fail_nth("r", None, Some(retry)).await.expect("retry");
    assert_eq!(f.public("rc").await, PublicState::WaitingChildren);
    f.h.cancel("k").await.expect("operator cancel");
    assert_eq!(f.public("kc").await, PublicState::Skipped, "operator cancel skips the child");
    // Attempt timeout expiry.
    f.h.grant("t", "w1", &[]).await.expect("grant");
    let claim = ClaimExecutionArgs {
        execution_id: f.id("t"),
        worker_id: ff_core::WorkerId::new("w1"),
        worker_instance_id: ff_core::WorkerInstanceId::new("w1-1"),
        lane_id: LaneId::new(crate::harness::LANE),
        lease_id: ff_core::LeaseId::from_uuid(Uuid::from_u64_pair(0x1ea5e, 1)),
        lease_ttl_ms: f.h.hold(10_000),
        attempt_id: ff_core::AttemptId::from_uuid(Uuid::from_u64_pair(0xa77, 1)),
        attempt_policy_json: String::new(),
        attempt_timeout_ms: Some(f.h.ms(1_000)),
        execution_deadline_at: None,
    };
    f.h.b.claim_execution(claim).await.expect("claim with timeout");
    f.h.advance(1_000).await;
    f.h.scan(ScannerKind::AttemptTimeout).await;
    assert_eq!(f.public("t").await, PublicState::Expired);
    assert_eq!(f.public("tc").await, PublicState::Skipped, "expiry skips the child");
    assert_invariants(&f.h, &ctx).await;
}

async fn any_of_and_quorum_groups(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    f.members(&["u1", "u2", "u3", "any", "v1", "v2", "v3", "q", "w1", "w2", "ws", "wq"]).await;
    f.policy("any", ANY_LET_RUN).await.expect("policy");
    let q_let = EdgeDependencyPolicy::Quorum { k: 2, on_satisfied: OnSatisfied::LetRun };
    f.policy("q", q_let).await.expect("policy");
    f.policy("wq", EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::LetRun }).await.expect("policy");
    for u in ["u1", "u2", "u3"] {
        f.link(u, "any").await;
    }
    for v in ["v1", "v2", "v3"] {
        f.link(v, "q").await;
    }
    f.link("w1", "ws").await;
    f.link("ws", "wq").await;
    f.link("w2", "wq").await;
    for u in ["u1", "u2", "u3"] {
        f.h.grant_claim(u, "w1").await;
    }
    f.h.complete("u1").await.expect("complete");
    assert_eq!(f.public("any").await, PublicState::Waiting, "any_of fires on the first success");
    assert_eq!(f.public("u2").await, PublicState::Active, "let_run leaves siblings running");
    f.h.complete("u2").await.expect("complete");
    f.h.fail("u3").await.expect("fail");
    assert_eq!(f.public("any").await, PublicState::Waiting, "once fired, later outcomes only count");
    // Quorum 2 of 3: the second failure makes it impossible (failed 2 > n - k = 1).
    f.run_fail("v1").await;
    assert_eq!(f.public("q").await, PublicState::WaitingChildren);
    f.run_fail("v2").await;
    assert_eq!(f.public("q").await, PublicState::Skipped);
    assert_eq!(f.public("v3").await, PublicState::Waiting, "let_run: the last sibling is untouched");
    // A skipped upstream counts in the skipped bucket of a quorum group.
    f.run_fail("w1").await;
    assert_eq!(f.public("ws").await, PublicState::Skipped);
    assert_eq!(f.public("wq").await, PublicState::WaitingChildren, "one of two edges left");
    f.run_fail("w2").await;
    assert_eq!(f.public("wq").await, PublicState::Skipped);
    let groups: BTreeMap<String, (u64, u64, u64, u64, GroupState)> = f
        .snapshot()
        .await
        .edge_groups
        .into_iter()
        .map(|g| {
            let name = f.h.norm(g.downstream_execution_id.as_str());
            (name, (g.satisfied_count, g.failed_count, g.skipped_count, g.running_count, g.group_state))
        })
        .collect();
    assert_eq!(groups["any"], (2, 1, 0, 0, GroupState::Satisfied));
    assert_eq!(groups["q"], (0, 2, 0, 1, GroupState::Impossible));
    assert_eq!(groups["wq"], (0, 1, 1, 0, GroupState::Impossible));
    assert_eq!(groups["ws"], (0, 1, 0, 0, GroupState::Impossible));
    assert_invariants(&f.h, &ctx).await;
}

/// `evaluate_flow_eligibility` (spec 03 §2.3.11): first match wins; a satisfied
/// quorum child reads `eligible` (docs/DECISIONS.md, the reference reads only the
/// all-of counters and answers `blocked_by_dependencies`).
async fn flow_eligibility_reads(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    f.members(&["up", "child", "free", "q1", "q2", "quo"]).await;
    let quorum = EdgeDependencyPolicy::Quorum { k: 1, on_satisfied: OnSatisfied::LetRun };
    f.policy("quo", quorum).await.expect("policy");
    f.link("up", "child").await;
    f.link("q1", "quo").await;
    f.link("q2", "quo").await;
    let eval = |id: ExecutionId| {
        let b = b.clone();
        async move { b.evaluate_flow_eligibility(&id).await.expect("evaluate") }
    };
    assert_eq!(eval(missing_on_partition_0()).await, FlowEligibility::NotFound);
    assert_eq!(eval(f.id("child")).await, FlowEligibility::BlockedByDependencies);
    assert_eq!(eval(f.id("free")).await, FlowEligibility::Eligible, "no dependencies at all");
    assert_eq!(eval(f.id("quo")).await, FlowEligibility::BlockedByDependencies);
    f.h.grant_claim("up", "w1").await;
    assert_eq!(eval(f.id("up")).await, FlowEligibility::NotRunnable, "active");
    f.h.complete("up").await.expect("complete");
    assert_eq!(eval(f.id("up")).await, FlowEligibility::NotRunnable, "terminal: the phase check comes first");
    assert_eq!(eval(f.id("child")).await, FlowEligibility::Eligible);
    f.run_ok("q1").await;
    assert_eq!(eval(f.id("quo")).await, FlowEligibility::Eligible, "quorum satisfied");
    // The flow summary counts every member and derives the flow state from them.
    let summary = f.snapshot().await.summary;
    assert_eq!(summary.total_members, 6);
    assert_eq!(summary.members_by_state.get("completed"), Some(&2));
    assert_eq!(summary.members_by_state.get("waiting"), Some(&4));
    assert_eq!(summary.derived_state, "open");
    f.h.grant_claim("free", "w1").await;
    assert_eq!(f.snapshot().await.summary.derived_state, "running");
    assert_invariants(&f.h, &ctx).await;
}

/// Quorum `k` above the applied edge count can never be satisfied: spec 03 §2.3.8
/// step 5 (`failed + skipped > n - k`, signed) makes it impossible at its first resolution.
async fn quorum_above_edge_count_is_impossible(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    f.members(&["a", "b", "d"]).await;
    f.policy("d", EdgeDependencyPolicy::Quorum { k: 3, on_satisfied: OnSatisfied::LetRun })
        .await
        .expect("set");
    f.link("a", "d").await;
    f.link("b", "d").await;
    f.run_ok("a").await;
    assert_eq!(f.public("d").await, PublicState::Skipped, "k=3 of n=2 is impossible at once");
    f.run_ok("b").await;
    assert_eq!(f.public("d").await, PublicState::Skipped);
    assert_invariants(&f.h, &ctx).await;
}

/// `any_of`/`quorum` with `cancel_remaining` flag the still-running siblings when the
/// group fires; the sibling-cancel dispatcher cancels them (spec 03 §2.4, §7.3.3), and
/// those cancels do not move the child. `let_run` flags nothing.
async fn cancel_remaining_cancels_siblings(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    f.members(&["a", "b", "c", "d", "l1", "l2", "ld"]).await;
    f.policy("d", EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::CancelRemaining })
        .await
        .expect("p");
    f.policy("ld", ANY_LET_RUN).await.expect("p");
    for up in ["a", "b", "c"] {
        f.link(up, "d").await;
    }
    f.link("l1", "ld").await;
    f.link("l2", "ld").await;
    f.h.grant_claim("a", "w1").await;
    f.h.grant_claim("b", "w1").await;
    f.h.complete("a").await.expect("complete");
    f.run_ok("l1").await;
    assert_eq!(f.public("d").await, PublicState::Waiting);
    assert_eq!(f.public("ld").await, PublicState::Waiting);
    assert_eq!(f.public("b").await, PublicState::Active, "flagged, not yet cancelled");
    f.h.scan(ScannerKind::EdgeCancelDispatcher).await;
    assert_eq!(f.public("b").await, PublicState::Cancelled, "the active sibling is cancelled");
    assert_eq!(f.public("c").await, PublicState::Cancelled, "the waiting sibling is cancelled");
    assert_eq!(f.public("d").await, PublicState::Waiting, "sibling cancels only move counters");
    assert_eq!(f.public("l2").await, PublicState::Waiting, "let_run: nothing to cancel");
    let snap = f.h.b.describe_execution(&f.id("b")).await.expect("describe").expect("b");
    assert!(snap.current_lease.is_none());
    let before = f.h.dump().await;
    f.h.scan(ScannerKind::EdgeCancelDispatcher).await;
    assert_eq!(before, f.h.dump().await, "a drained group is not dispatched twice");
    assert_invariants(&f.h, &ctx).await;
}

async fn cancel_flow_header_codes(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    f.members(&["b", "a"]).await;
    let unknown = flow_id_on_partition_0(&b.partition_config(), 2);
    let too_long = 1u64 << 53;
    rejects!(
        f.h,
        b.cancel_flow_header(&unknown, "r", CancelFlowPolicy::CancelAll, too_long),
        "invalid_grace_ms"
    );
    rejects!(f.h, b.cancel_flow_header(&unknown, "r", CancelFlowPolicy::CancelAll, 0), "flow_not_found");
    let mut members = vec![f.id("a"), f.id("b")];
    members.sort();
    let cancelling = f.h.now().await;
    let first =
        b.cancel_flow_header(&f.flow, "stop", CancelFlowPolicy::FlowOnly, 30_000).await.expect("cancel");
    let cancelled = f.h.now().await;
    assert_eq!(
        first,
        CancelFlowHeader::Cancelled {
            cancellation_policy: "flow_only".into(),
            member_execution_ids: members.clone()
        }
    );
    let s = f.snapshot().await;
    assert_eq!(s.public_flow_state, "cancelled");
    assert_eq!(
        (s.cancel_reason.as_deref(), s.cancellation_policy.as_deref()),
        (Some("stop"), Some("flow_only"))
    );
    f.h.assert_stamp("cancelled_at", s.cancelled_at.unwrap_or(i64::MIN), cancelling, cancelled);
    f.h.advance(5).await;
    let before = f.h.dump().await;
    let again = b.cancel_flow_header(&f.flow, "again", CancelFlowPolicy::CancelAll, 0).await.expect("repeat");
    assert_eq!(
        again,
        CancelFlowHeader::AlreadyTerminal {
            stored_cancellation_policy: Some("flow_only".into()),
            stored_cancel_reason: Some("stop".into()),
            member_execution_ids: members,
        }
    );
    assert_eq!(before, f.h.dump().await, "a repeated cancel writes nothing");
    assert_eq!(f.public("a").await, PublicState::Waiting, "flow_only leaves members alone");
    // Ack is idempotent and has no errors.
    b.ack_cancel_member(&unknown, &missing_on_partition_0()).await.expect("ack unknown");
    b.ack_cancel_member(&f.flow, &f.id("a")).await.expect("ack");
    b.ack_cancel_member(&f.flow, &f.id("a")).await.expect("ack again");
    assert_invariants(&f.h, &ctx).await;
}

/// `cancel_flow` per policy; without waiting (the header alone) members are left to
/// the reconciler, with waiting every unfinished member is cancelled.
async fn cancel_flow_policies_and_wait(ctx: Ctx) {
    for policy in [CancelFlowPolicy::FlowOnly, CancelFlowPolicy::CancelPending] {
        let fixture = ctx.factory.make().await;
        let mut f = FlowHarness::new(&fixture).await;
        f.members(&["a", "b"]).await;
        f.h.grant_claim("b", "w1").await;
        let r = f.cancel_flow(policy).await;
        assert_eq!(
            r,
            CancelFlowResult::Cancelled {
                cancellation_policy: policy.as_str().into(),
                member_execution_ids: vec![f.id("a"), f.id("b")],
            }
        );
        assert_eq!((f.public("a").await, f.public("b").await), (PublicState::Waiting, PublicState::Active));
    }
    // No wait: the header marks the flow; the cancel reconciler cancels the members
    // once the grace period is over (spec 03 §2.6 step 5–6, §7.3.2).
    let mut f = FlowHarness::new(&ctx.fixture).await;
    f.members(&["a", "b", "c"]).await;
    f.h.grant_claim("b", "w1").await;
    f.run_ok("c").await;
    let grace = f.h.ms(30_000);
    let header = f.h.b.cancel_flow_header(&f.flow, "later", CancelFlowPolicy::CancelAll, grace).await;
    assert!(matches!(header, Ok(CancelFlowHeader::Cancelled { .. })), "{header:?}");
    assert_eq!(f.public("a").await, PublicState::Waiting, "no wait: no member cancel yet");
    f.h.advance(29_999).await;
    f.h.scan(ScannerKind::CancelReconciler).await;
    if f.h.real_time() {
        // A short real grace may already be over: check "inside" on a flow whose
        // grace no stall outlasts.
        reconciler_waits_inside_the_grace(&ctx).await;
    } else {
        assert_eq!(f.public("a").await, PublicState::Waiting, "inside the grace period");
    }
    f.h.advance(1).await;
    f.h.scan(ScannerKind::CancelReconciler).await;
    f.states(&["a", "b", "c"]).await;
    assert_eq!(f.public("a").await, PublicState::Cancelled);
    assert_eq!(f.public("b").await, PublicState::Cancelled);
    assert_eq!(f.public("c").await, PublicState::Completed, "finished members are untouched");
    let before = f.h.dump().await;
    f.h.scan(ScannerKind::CancelReconciler).await;
    assert_eq!(before, f.h.dump().await, "every member acknowledged: the backlog is empty");
    // Waiting on a flow cancelled without waiting dispatches under the stored policy.
    let mut f = FlowHarness::new(&ctx.factory.make().await).await;
    f.members(&["a", "b", "c"]).await;
    f.h.grant_claim("b", "w1").await;
    f.run_ok("c").await;
    f.h.b.cancel_flow_header(&f.flow, "later", CancelFlowPolicy::CancelAll, 30_000).await.expect("header");
    let r = f.cancel_flow(CancelFlowPolicy::FlowOnly).await;
    assert!(
        matches!(r, CancelFlowResult::Cancelled { ref cancellation_policy, .. } if cancellation_policy == "cancel_all")
    );
    f.states(&["a", "b", "c"]).await;
    assert_eq!(f.public("a").await, PublicState::Cancelled);
    assert_eq!(f.public("b").await, PublicState::Cancelled);
    assert_eq!(f.public("c").await, PublicState::Completed, "finished members are untouched");
    // Again: every member is already finished, which counts as done, not as a failure.
    let r = f.cancel_flow(CancelFlowPolicy::CancelAll).await;
    assert!(matches!(r, CancelFlowResult::Cancelled { .. }), "{r:?}");
    // Every cancel was acknowledged: the reconciler finds nothing owed after the grace.
    f.h.advance(30_000).await;
    let before = f.h.dump().await;
    f.h.scan(ScannerKind::CancelReconciler).await;
    assert_eq!(before, f.h.dump().await, "acknowledged members are not cancelled again");
}

/// Real-TTL mode's "inside the grace period" check: a grace held far longer
/// than the case, a scan after a wait, the member untouched.
async fn reconciler_waits_inside_the_grace(ctx: &Ctx) {
    let mut g = FlowHarness::new(&ctx.factory.make().await).await;
    g.members(&["a"]).await;
    let grace = g.h.hold(30_000);
    g.h.b.cancel_flow_header(&g.flow, "later", CancelFlowPolicy::CancelAll, grace).await.expect("header");
    g.h.advance(29_999).await;
    g.h.scan(ScannerKind::CancelReconciler).await;
    assert_eq!(g.public("a").await, PublicState::Waiting, "inside the grace period");
}

/// A member whose lease was revoked is still cancelled by the flow cancel (spec 03
/// §2.6 step 4 cancels as `operator_override`, which bypasses lease checks).
async fn cancel_flow_reaches_revoked_members(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    f.members(&["a", "b"]).await;
    f.h.grant_claim("a", "w1").await;
    let revoke = RevokeLeaseArgs { execution_id: f.id("a"), expected_lease_id: None, reason: "op".into() };
    f.h.b.revoke_lease(revoke).await.expect("revoke");
    let r = f.cancel_flow(CancelFlowPolicy::CancelAll).await;
    assert!(matches!(r, CancelFlowResult::Cancelled { .. }), "not a partial cancel: {r:?}");
    assert_eq!(f.public("a").await, PublicState::Cancelled);
    assert_eq!(f.public("b").await, PublicState::Cancelled);
    assert_invariants(&f.h, &ctx).await;
}

async fn promote_blocked_to_eligible_codes(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    f.members(&["up", "child", "parked", "idle", "done"]).await;
    f.link("up", "child").await;
    rejects!(f.h, b.promote_blocked_to_eligible(&missing_on_partition_0()), "execution_not_found");
    rejects!(f.h, b.promote_blocked_to_eligible(&f.id("idle")), "not_blocked_by_deps");
    rejects!(f.h, b.promote_blocked_to_eligible(&f.id("child")), "deps_not_satisfied");
    f.h.grant_claim("parked", "w1").await;
    rejects!(f.h, b.promote_blocked_to_eligible(&f.id("parked")), "not_runnable");
    f.run_ok("done").await;
    rejects!(f.h, b.promote_blocked_to_eligible(&f.id("done")), "not_runnable");
    // Parked by wait-children with no dependency at all: only promotion frees it.
    let handle = f.h.last_claim("parked").handle;
    b.wait_children(&handle).await.expect("wait children");
    assert_eq!(f.public("parked").await, PublicState::WaitingChildren);
    b.promote_blocked_to_eligible(&f.id("parked")).await.expect("promote");
    let snap = b.describe_execution(&f.id("parked")).await.expect("describe").expect("parked");
    assert_eq!(snap.public_state, PublicState::Waiting);
    assert_eq!(snap.state.blocking_reason, BlockingReason::WaitingForWorker);
    rejects!(f.h, b.promote_blocked_to_eligible(&f.id("parked")), "not_blocked_by_deps");
    // The dependency reconciler promotes a zero-dependency blocked member (§2.3.12 Spec)
    // and leaves one with an unresolved edge alone.
    f.member("parked2").await;
    f.h.grant_claim("parked2", "w1").await;
    b.wait_children(&f.h.last_claim("parked2").handle).await.expect("wait children");
    f.h.scan(ScannerKind::DependencyReconciler).await;
    assert_eq!(f.public("parked2").await, PublicState::Waiting);
    assert_eq!(f.public("child").await, PublicState::WaitingChildren);
    assert_invariants(&f.h, &ctx).await;
}

async fn flow_tags_key_rule(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let b = f.h.b.clone();
    let unknown = flow_id_on_partition_0(&b.partition_config(), 2);
    let one = |k: &str| vec![(k.to_owned(), "v".to_owned())];
    rejects!(f.h, b.set_flow_tags(&f.flow, Vec::new()), "invalid_input");
    for bad in [
        "", "app", "app.", ".key", "App.key", "1app.key", "app..key", "app.Key", "app.-x", "ap-p.key",
        "app.k-y",
    ] {
        rejects!(f.h, b.set_flow_tags(&f.flow, one(bad)), "invalid_input");
        // The key rule is checked before storage is touched.
        rejects!(f.h, b.set_flow_tags(&unknown, one(bad)), "invalid_input");
    }
    let mixed = vec![("app.ok".to_owned(), "1".to_owned()), ("Bad.key".to_owned(), "2".to_owned())];
    rejects!(f.h, b.set_flow_tags(&f.flow, mixed), "invalid_input");
    rejects!(f.h, b.set_flow_tags(&unknown, one("app.key")), "flow_not_found");
    f.h.advance(7).await;
    let good: Vec<(String, String)> = ["app.key", "a.b", "app_1.key_2.sub.x", "ns.tag.", "z9.0"]
        .iter()
        .map(|k| ((*k).to_owned(), format!("v-{k}")))
        .collect();
    assert_eq!(b.set_flow_tags(&f.flow, good.clone()).await.expect("tags"), 5);
    let tagging = f.h.now().await;
    b.set_flow_tags(&f.flow, one("app.key")).await.expect("overwrite");
    let tagged = f.h.now().await;
    let s = f.snapshot().await;
    let mut want: BTreeMap<String, String> = good.into_iter().collect();
    want.insert("app.key".into(), "v".into());
    assert_eq!(s.tags, want, "describe_flow reports the tag map");
    f.h.assert_stamp("last_mutation_at", s.last_mutation_at, tagging, tagged);
    assert_eq!(s.public_flow_state, "open");
    assert_invariants(&f.h, &ctx).await;
}

// ------------------------------------------------------------ golden transcripts

async fn chain_of_ten_runs_in_order(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let names: Vec<String> = (1..=10).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    f.members(&names).await;
    for w in names.windows(2) {
        f.link(w[0], w[1]).await;
    }
    f.states(&names).await;
    for n in &names {
        f.h.eligible().await;
        f.h.advance(10).await;
        f.run_ok(n).await;
    }
    f.h.eligible().await;
    f.states(&names).await;
    f.show_flow().await;
    assert_invariants(&f.h, &ctx).await;
    insta::assert_snapshot!("chain_of_ten_runs_in_order", f.h.transcript());
}

async fn diamond_with_failed_branch_skips_join(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    f.members(&["a", "b", "c", "d"]).await;
    for (up, down) in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")] {
        f.link(up, down).await;
    }
    f.run_ok("a").await;
    f.states(&["a", "b", "c", "d"]).await;
    f.h.grant_claim("b", "w1").await;
    f.h.grant_claim("c", "w2").await;
    f.h.advance(10).await;
    f.h.fail("b").await.expect("fail b");
    f.states(&["a", "b", "c", "d"]).await;
    f.h.show("d").await;
    f.h.advance(10).await;
    f.h.complete("c").await.expect("complete c");
    f.states(&["a", "b", "c", "d"]).await;
    f.show_flow().await;
    assert_invariants(&f.h, &ctx).await;
    insta::assert_snapshot!("diamond_with_failed_branch_skips_join", f.h.transcript());
}

async fn quorum_two_of_three_cancels_the_third(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    f.members(&["a", "b", "c", "d"]).await;
    f.policy("d", QUORUM_2_CANCEL).await.expect("policy");
    for up in ["a", "b", "c"] {
        f.link(up, "d").await;
    }
    for up in ["a", "b", "c"] {
        f.h.grant_claim(up, "w1").await;
    }
    f.h.advance(10).await;
    f.h.complete("a").await.expect("complete a");
    f.states(&["a", "b", "c", "d"]).await;
    f.show_flow().await;
    f.h.advance(10).await;
    f.h.complete("b").await.expect("complete b");
    f.states(&["a", "b", "c", "d"]).await;
    f.h.advance(10).await;
    f.h.scan(ScannerKind::EdgeCancelDispatcher).await;
    f.states(&["a", "b", "c", "d"]).await;
    f.h.show("c").await;
    let _ = f.h.complete("c").await;
    f.show_flow().await;
    f.run_ok("d").await;
    f.states(&["a", "b", "c", "d"]).await;
    assert_invariants(&f.h, &ctx).await;
    insta::assert_snapshot!("quorum_two_of_three_cancels_the_third", f.h.transcript());
}

const RETRY_1: &str = r#"{"retry_policy":{"max_retries":1,"backoff":{"type":"fixed","delay_ms":5000}}}"#;

async fn suspend_member(f: &mut FlowHarness, name: &str, n: u64, behavior: TimeoutBehavior, timeout_ms: i64) {
    let at = f.h.now().await + timeout_ms;
    let args = SuspendArgs::new(
        SuspensionId::from_uuid(Uuid::from_u64_pair(0x5055, n)),
        WaitpointBinding::Fresh {
            waitpoint_id: WaitpointId::from_uuid(Uuid::from_u64_pair(0x3a17, n)),
            waitpoint_key: "approval".into(),
        },
        ResumeCondition::TimeoutOnly,
        SuspensionReasonCode::WaitingForApproval,
    )
    .with_timeout(at, behavior);
    let handle = f.h.last_claim(name).handle;
    f.h.b.suspend(&handle, args).await.expect("suspend");
    f.say(format!("suspend {name} until {} ({})", f.h.t(at), behavior.as_str()));
}

async fn cancel_flow_with_members_in_every_state(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let _ = f.h.b.seed_waitpoint_hmac_secret("k1", crate::suspension::SECRET_A).await;
    f.members(&["blocked", "waiting", "active", "suspended", "completed", "failed"]).await;
    let later = f.h.now().await + 60_000;
    f.member_with("delayed", |a| a.delay_until = Some(later)).await;
    f.member_with("retrying", |a| a.policy_json = RETRY_1.into()).await;
    f.link("active", "blocked").await;
    f.h.grant_claim("active", "w1").await;
    f.h.grant_claim("suspended", "w2").await;
    suspend_member(&mut f, "suspended", 1, TimeoutBehavior::Fail, 60_000).await;
    f.run_ok("completed").await;
    f.run_fail("failed").await;
    f.h.grant_claim("retrying", "w3").await;
    f.h.fail("retrying").await.expect("retry scheduled");
    let all = ["blocked", "waiting", "active", "suspended", "completed", "failed", "delayed", "retrying"];
    f.states(&all).await;
    f.h.advance(100).await;
    f.cancel_flow(CancelFlowPolicy::CancelAll).await;
    f.states(&all).await;
    for n in all {
        f.h.show(n).await;
    }
    f.show_flow().await;
    assert_invariants(&f.h, &ctx).await;
    insta::assert_snapshot!("cancel_flow_with_members_in_every_state", f.h.transcript());
}

async fn suspension_timeout_fails_member_and_resolves_children(ctx: Ctx) {
    let mut f = FlowHarness::new(&ctx.fixture).await;
    let _ = f.h.b.seed_waitpoint_hmac_secret("k1", crate::suspension::SECRET_A).await;
    f.members(&["s", "q", "x", "xx", "any", "quorum"]).await;
    f.policy("any", EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::LetRun }).await.expect("p");
    f.policy("quorum", EdgeDependencyPolicy::Quorum { k: 1, on_satisfied: OnSatisfied::LetRun })
        .await
        .expect("p");
    f.link("s", "x").await;
    f.link("x", "xx").await;
    f.link("s", "any").await;
    f.link("q", "any").await;
    f.link("s", "quorum").await;
    f.run_fail("q").await;
    f.h.grant_claim("s", "w1").await;
    suspend_member(&mut f, "s", 1, TimeoutBehavior::Fail, 1_000).await;
    f.states(&["s", "q", "x", "xx", "any", "quorum"]).await;
    f.h.advance(999).await;
    f.h.scan(ScannerKind::SuspensionTimeout).await;
    f.h.advance(1).await;
    f.h.scan(ScannerKind::SuspensionTimeout).await;
    f.states(&["s", "q", "x", "xx", "any", "quorum"]).await;
    f.h.show("s").await;
    f.h.show("xx").await;
    f.show_flow().await;
    assert_invariants(&f.h, &ctx).await;
    insta::assert_snapshot!("suspension_timeout_fails_member_and_resolves_children", f.h.transcript());
}

// ------------------------------------------------------------ random graphs

/// What the driver does to a member once it is runnable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Complete,
    Fail,
    Cancel,
}

/// A random acyclic flow: edges only from lower to higher index.
#[derive(Debug, Clone)]
struct Graph {
    fates: Vec<Fate>,
    edges: Vec<(usize, usize)>,
    policies: BTreeMap<usize, EdgeDependencyPolicy>,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![4 => Just(Fate::Complete), 2 => Just(Fate::Fail), 1 => Just(Fate::Cancel)]
}

fn policy_for(indegree: usize) -> impl Strategy<Value = EdgeDependencyPolicy> {
    let on = prop_oneof![Just(OnSatisfied::CancelRemaining), Just(OnSatisfied::LetRun)];
    let k_max = u32::try_from(indegree).unwrap_or(1) + 1;
    prop_oneof![
        2 => Just(EdgeDependencyPolicy::AllOf),
        1 => on.clone().prop_map(|on_satisfied| EdgeDependencyPolicy::AnyOf { on_satisfied }),
        2 => (1..=k_max, on).prop_map(|(k, on_satisfied)| EdgeDependencyPolicy::Quorum { k, on_satisfied }),
    ]
}

fn graph() -> impl Strategy<Value = Graph> {
    (2..=GRAPH_NODES_MAX)
        .prop_flat_map(|n| {
            let pairs: Vec<(usize, usize)> = (0..n).flat_map(|j| (0..j).map(move |i| (i, j))).collect();
            let picks = proptest::collection::vec(proptest::bool::weighted(0.45), pairs.len());
            (proptest::collection::vec(fate(), n), Just(pairs), picks)
        })
        .prop_flat_map(|(fates, pairs, picks)| {
            let edges: Vec<(usize, usize)> =
                pairs.into_iter().zip(picks).filter(|(_, keep)| *keep).map(|(p, _)| p).collect();
            let mut indegree: BTreeMap<usize, usize> = BTreeMap::new();
            for (_, d) in &edges {
                *indegree.entry(*d).or_default() += 1;
            }
            let policies: Vec<_> =
                indegree.iter().map(|(d, n)| (Just(*d), policy_for(*n))).collect::<Vec<_>>();
            (Just(fates), Just(edges), policies)
        })
        .prop_map(|(fates, edges, policies)| Graph { fates, edges, policies: policies.into_iter().collect() })
}

fn node(i: usize) -> String {
    format!("n{i}")
}

/// Builds the graph, then drives every runnable member to its fate until none is left.
async fn drive(fixture: &Fixture, g: &Graph) -> Result<FlowHarness, String> {
    let mut f = FlowHarness::new(fixture).await;
    for i in 0..g.fates.len() {
        f.member(&node(i)).await;
    }
    for (d, p) in &g.policies {
        f.policy(&node(*d), *p).await.map_err(|e| format!("policy n{d}: {e}"))?;
    }
    for (u, d) in &g.edges {
        f.stage(&node(*u), &node(*d)).await.map_err(|e| format!("stage n{u}->n{d}: {e}"))?;
    }
    for (u, d) in &g.edges {
        f.apply(&node(*u), &node(*d)).await.map_err(|e| format!("apply n{u}->n{d}: {e}"))?;
    }
    for _ in 0..DRIVE_STEPS_MAX {
        let mut next = None;
        for i in 0..g.fates.len() {
            if f.public(&node(i)).await == PublicState::Waiting {
                next = Some(i);
                break;
            }
        }
        let Some(i) = next else {
            // Quiescent only once the sibling-cancel dispatcher and the dependency
            // reconciler have nothing left to do.
            let before = f.h.dump().await;
            f.h.scan(ScannerKind::EdgeCancelDispatcher).await;
            f.h.scan(ScannerKind::DependencyReconciler).await;
            if before == f.h.dump().await {
                return Ok(f);
            }
            continue;
        };
        let name = node(i);
        match g.fates[i] {
            Fate::Complete => f.run_ok(&name).await,
            Fate::Fail => f.run_fail(&name).await,
            Fate::Cancel => f.h.cancel(&name).await.map_err(|e| format!("cancel {name}: {e}"))?,
        }
    }
    Err(format!("not quiescent after {DRIVE_STEPS_MAX} steps"))
}

/// Every node with inbound edges and its policy (all-of when none was set).
fn downstreams(g: &Graph) -> BTreeMap<usize, EdgeDependencyPolicy> {
    let mut m: BTreeMap<usize, EdgeDependencyPolicy> =
        g.edges.iter().map(|(_, d)| (*d, EdgeDependencyPolicy::AllOf)).collect();
    m.extend(g.policies.iter().map(|(d, p)| (*d, *p)));
    m
}

/// The terminal outcome of every member; an error if one is not terminal.
async fn final_outcomes(f: &FlowHarness, g: &Graph) -> Result<Vec<TerminalOutcome>, String> {
    let mut outcome = Vec::new();
    for i in 0..g.fates.len() {
        let snap = f.h.b.describe_execution(&f.id(&node(i))).await.map_err(|e| e.to_string())?;
        let snap = snap.ok_or_else(|| format!("n{i} missing"))?;
        if !snap.public_state.is_terminal() {
            return Err(format!("n{i} is {} after quiescence", snap.public_state));
        }
        outcome.push(snap.state.terminal_outcome);
    }
    Ok(outcome)
}

/// The state and `n/ok/failed/skipped/running` a settled group must show given its
/// upstreams' final outcomes (spec 03 §2.4: all-of counts skips as failures).
fn expected_group(policy: EdgeDependencyPolicy, ups: &[TerminalOutcome]) -> (GroupState, [u64; 5]) {
    let count = |f: &dyn Fn(&TerminalOutcome) -> bool| ups.iter().filter(|o| f(o)).count() as u64;
    let n = ups.len() as u64;
    let ok = count(&|o| *o == TerminalOutcome::Success);
    let skipped = count(&|o| *o == TerminalOutcome::Skipped);
    let k = u64::from(policy.k());
    let satisfied = match policy {
        EdgeDependencyPolicy::AllOf => ok == n,
        _ => k <= n && ok >= k,
    };
    let state = if satisfied { GroupState::Satisfied } else { GroupState::Impossible };
    match policy {
        EdgeDependencyPolicy::AllOf => (state, [n, ok, n - ok, 0, 0]),
        _ => (state, [n, ok, n - ok - skipped, skipped, 0]),
    }
}

/// Checks the settled flow: every member terminal, and every group consistent with its
/// policy over the upstreams' final outcomes (a satisfied child was not skipped, an
/// impossible one never ran). Returns `<policy>:<state>` per group for coverage.
async fn check_settled(f: &FlowHarness, g: &Graph) -> Result<Vec<String>, String> {
    let outcome = final_outcomes(f, g).await?;
    let groups = f.snapshot().await.edge_groups;
    let mut seen = Vec::new();
    for (d, policy) in downstreams(g) {
        let ups: Vec<TerminalOutcome> =
            g.edges.iter().filter(|(_, x)| *x == d).map(|(u, _)| outcome[*u]).collect();
        let (state, counts) = expected_group(policy, &ups);
        let label = format!("n{d} ({}) with upstreams {ups:?}", policy_text(&policy));
        let ran = matches!(outcome[d], TerminalOutcome::Success | TerminalOutcome::Failed);
        if state == GroupState::Satisfied && outcome[d] == TerminalOutcome::Skipped {
            return Err(format!("{label}: skipped although satisfied"));
        }
        if state == GroupState::Impossible && ran {
            return Err(format!("{label}: ran although impossible"));
        }
        let grp = groups
            .iter()
            .find(|x| x.downstream_execution_id == f.id(&node(d)))
            .ok_or_else(|| format!("no edge group for n{d}"))?;
        let got =
            [grp.total_deps, grp.satisfied_count, grp.failed_count, grp.skipped_count, grp.running_count];
        if grp.group_state != state || got != counts {
            return Err(format!(
                "{label}: group {:?} n/ok/failed/skipped/running={got:?}, want {state:?} {counts:?}",
                grp.group_state
            ));
        }
        let kind = policy_text(&policy).split('(').next().unwrap_or_default().to_owned();
        seen.push(format!("{kind}:{}", group_state_text(state)));
    }
    Ok(seen)
}

async fn random_graphs_settle_per_policy(ctx: Ctx) {
    let seed = ctx.options.seed;
    let factory = ctx.factory.clone();
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let config = Config { cases: GRAPH_CASES, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, rng);
        let seen = std::sync::Mutex::new(BTreeSet::new());
        let r = runner.run(&graph(), |g| {
            handle.block_on(async {
                let fixture = factory.make().await;
                let f = drive(&fixture, &g).await.map_err(TestCaseError::fail)?;
                let labels = check_settled(&f, &g).await.map_err(TestCaseError::fail)?;
                if let Ok(mut all) = seen.lock() {
                    all.extend(labels);
                }
                Ok(())
            })
        });
        (r.map_err(|e| format!("{e}")), seen.into_inner().unwrap_or_default())
    })
    .await;
    let (r, seen) = match result {
        Ok(v) => v,
        Err(e) => panic!("graph runner crashed: {e}"),
    };
    if let Err(e) = r {
        panic!("random flow graph broke its policy; reproduce with FF_CONFORMANCE_SEED={seed}: {e}");
    }
    for kind in ["all_of", "any_of", "quorum"] {
        for state in ["satisfied", "impossible"] {
            let label = format!("{kind}:{state}");
            assert!(
                seen.contains(&label),
                "no {label} group in {GRAPH_CASES} graphs (seed {seed}): {seen:?}"
            );
        }
    }
}

/// The flow cases.
pub fn cases() -> Vec<Case> {
    let g = Group::Family(ContractFamily::Flows);
    let golden = |c: Case| Case { requires: ContractFamily::Flows, ..c };
    vec![
        untimed(case!(g, create_flow_and_describe)),
        untimed(case!(g, add_execution_to_flow_codes)),
        untimed(case!(g, stage_dependency_edge_codes)),
        untimed(case!(g, edge_group_policy_codes)),
        untimed(case!(g, apply_dependency_codes)),
        untimed(case!(g, resolve_dependency_codes)),
        untimed(case!(g, data_passing)),
        case!(g, completion_cascade_all_of),
        untimed(case!(g, any_of_and_quorum_groups)),
        untimed(case!(g, quorum_above_edge_count_is_impossible)),
        untimed(case!(g, flow_eligibility_reads)),
        untimed(case!(g, cancel_remaining_cancels_siblings)),
        case!(g, cancel_flow_header_codes),
        case!(g, cancel_flow_policies_and_wait),
        untimed(case!(g, cancel_flow_reaches_revoked_members)),
        untimed(case!(g, promote_blocked_to_eligible_codes)),
        case!(g, flow_tags_key_rule),
        untimed(case!(g, random_graphs_settle_per_policy)),
        golden(case!(Group::Golden, chain_of_ten_runs_in_order)),
        golden(case!(Group::Golden, diamond_with_failed_branch_skips_join)),
        golden(case!(Group::Golden, quorum_two_of_three_cancels_the_third)),
        golden(case!(Group::Golden, cancel_flow_with_members_in_every_state)),
        golden(case!(Group::Golden, suspension_timeout_fails_member_and_resolves_children)),
    ]
}
