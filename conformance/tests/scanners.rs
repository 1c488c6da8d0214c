//! Scanner behaviours of the shared engine, on memory and on SQLite: retention
//! trimming, the dependency reconciler's promotion of zero-dependency members,
//! and replay of a skipped flow member.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ff_core::contracts::*;
use ff_core::flow::*;
use ff_core::state::{EligibilityState, PublicState};
use ff_core::{
    EdgeId, EngineBackend, ExecutionId, FlowId, LaneId, Namespace, SimClock, WorkerId, WorkerInstanceId,
};
use uuid::Uuid;

static NEXT: AtomicU64 = AtomicU64::new(1);

fn fixtures() -> Vec<(&'static str, ff_conformance::Fixture)> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scanner-tests");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("scan-{}-{n}.db", std::process::id()));
    vec![("memory", ff_conformance::memory_fixture()), ("sqlite", ff_conformance::sqlite_fixture(&path))]
}

fn parts(f: &ff_conformance::Fixture) -> (Arc<dyn EngineBackend>, SimClock) {
    let clock = f.clock.clone().unwrap_or_else(|| panic!("fixture without a simulated clock"));
    (f.backend.clone(), clock)
}

fn uuid() -> Uuid {
    Uuid::from_u64_pair(0x5ca7, NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn create(b: &Arc<dyn EngineBackend>, partition: u16, policy: &str) -> ExecutionId {
    let id = ExecutionId::from_parts(partition, uuid());
    let mut args = CreateExecutionArgs::new(id.clone(), "ns", LaneId::new("main"), "task");
    args.policy_json = policy.to_owned();
    b.create_execution(args).await.unwrap_or_else(|e| panic!("create: {e}"));
    id
}

/// Claims the first eligible execution of lane `main` anywhere.
async fn claim_any(b: &Arc<dyn EngineBackend>) -> ClaimedExecution {
    let policy = ClaimPolicy {
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("w-1"),
        lease_ttl_ms: 30_000,
        lease_id: ff_core::LeaseId::from_uuid(uuid()),
        attempt_id: ff_core::AttemptId::from_uuid(uuid()),
    };
    let parts = b.partition_config().num_flow_partitions;
    let claimed = b.claim(&LaneId::new("main"), &CapabilitySet::default(), policy, parts).await;
    match claimed {
        Ok(Some(c)) => c,
        other => panic!("claim: {other:?}"),
    }
}

async fn scan(b: &Arc<dyn EngineBackend>, kind: ScannerKind) -> ScanReport {
    let mut total = ScanReport::default();
    for p in 0..b.partition_config().num_flow_partitions {
        let r = b.run_scanner(kind, p, 50).await.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        total.examined += r.examined;
        total.acted += r.acted;
    }
    total
}

const DAY_MS: u64 = 86_400_000;

#[tokio::test]
async fn retention_trimmer_purges_only_past_retention() {
    for (name, f) in fixtures() {
        let (b, clock) = parts(&f);
        let short = create(&b, 0, "").await;
        let long = create(&b, 1, r#"{"stream_policy":{"retention_ttl_ms":172800000}}"#).await;
        for _ in 0..2 {
            let c = claim_any(&b).await;
            b.complete(&c.handle, Some(b"ok".to_vec())).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        clock.advance(DAY_MS - 1);
        assert_eq!(scan(&b, ScannerKind::RetentionTrimmer).await.acted, 0, "{name}: trimmed too early");
        assert!(b.describe_execution(&short).await.unwrap_or(None).is_some(), "{name}");
        clock.advance(2);
        assert_eq!(scan(&b, ScannerKind::RetentionTrimmer).await.acted, 1, "{name}: one purge due");
        assert!(b.describe_execution(&short).await.unwrap_or(None).is_none(), "{name}: core kept");
        assert_eq!(b.get_execution_result(&short).await.ok().flatten(), None, "{name}: result kept");
        assert!(b.describe_execution(&long).await.unwrap_or(None).is_some(), "{name}: override ignored");
        clock.advance(DAY_MS);
        assert_eq!(scan(&b, ScannerKind::RetentionTrimmer).await.acted, 1, "{name}: long purge due");
        assert!(b.describe_execution(&long).await.unwrap_or(None).is_none(), "{name}");
        if let Some(check) = &f.deep_check {
            assert_eq!(check(), Vec::<String>::new(), "{name}: invariants after purge");
        }
    }
}

#[tokio::test]
async fn dependency_reconciler_promotes_a_member_parked_with_no_edges() {
    for (name, f) in fixtures() {
        let (b, _clock) = parts(&f);
        let id = create(&b, 0, "").await;
        let c = claim_any(&b).await;
        b.wait_children(&c.handle).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let blocked = b.describe_execution(&id).await.ok().flatten().map(|s| s.state.eligibility_state);
        assert_eq!(blocked, Some(EligibilityState::BlockedByDependencies), "{name}");
        let r = scan(&b, ScannerKind::DependencyReconciler).await;
        assert_eq!((r.examined, r.acted), (1, 1), "{name}");
        let after = b.describe_execution(&id).await.ok().flatten().map(|s| s.state.eligibility_state);
        assert_eq!(after, Some(EligibilityState::EligibleNow), "{name}: still parked");
        assert_eq!(scan(&b, ScannerKind::DependencyReconciler).await.examined, 0, "{name}: index kept");
    }
}

#[tokio::test]
async fn replay_of_a_skipped_member_reopens_its_impossible_edges() {
    for (name, f) in fixtures() {
        let (b, _clock) = parts(&f);
        let flow_id = FlowId::from_uuid(uuid());
        let cfg = b.partition_config();
        let fp = ff_core::partition::flow_partition(&flow_id.0, &cfg).index;
        let args = CreateFlowArgs { flow_id, flow_kind: "k".into(), namespace: Namespace::new("ns") };
        b.create_flow(args).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let up = create(&b, fp, "").await;
        let down = create(&b, fp, "").await;
        for id in [&up, &down] {
            b.add_execution_to_flow(&flow_id, id).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let edge_id = EdgeId::from_uuid(uuid());
        let rev = b.describe_flow(&flow_id).await.ok().flatten().map_or(0, |s| s.graph_revision);
        let stage = StageEdgeArgs {
            flow_id,
            edge_id,
            upstream_execution_id: up.clone(),
            downstream_execution_id: down.clone(),
            dependency_kind: None,
            data_passing_ref: None,
            expected_graph_revision: rev,
        };
        b.stage_dependency_edge(stage).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        b.apply_dependency_to_child(&flow_id, &edge_id).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = claim_any(&b).await;
        assert_eq!(c.execution_id, up, "{name}: only the upstream is eligible");
        b.cancel(&c.handle, "stop").await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let skipped = b.describe_execution(&down).await.ok().flatten().map(|s| s.public_state);
        assert_eq!(skipped, Some(PublicState::Skipped), "{name}: cascade did not skip");
        b.replay_execution(&down).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let snap = b.describe_execution(&down).await.ok().flatten();
        let state = snap.map(|s| s.state);
        assert_eq!(
            state.as_ref().map(|s| (s.eligibility_state, s.blocking_detail.as_str())),
            Some((EligibilityState::BlockedByDependencies, "1 dep(s) unsatisfied after replay")),
            "{name}"
        );
        // The upstream is still cancelled: the reconciler resolves the reopened edge again.
        scan(&b, ScannerKind::DependencyReconciler).await;
        let again = b.describe_execution(&down).await.ok().flatten().map(|s| s.public_state);
        assert_eq!(again, Some(PublicState::Skipped), "{name}: reopened edge not re-resolved");
    }
}
