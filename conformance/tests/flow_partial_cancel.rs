//! `cancel_flow` surfaces member cancels that fail (spec 03 §2.6 step 4): a layer
//! over the backend drops one member's cancel. The result is `PartiallyCancelled`
//! naming that member, the others are cancelled, and the dropped one stays owed
//! to the cancel reconciler, which cancels it after the grace.

use ff_conformance::{Fixture, Harness};
use ff_core::contracts::ScannerKind;
use ff_core::flow::{CancelFlowPolicy, CancelFlowResult, CreateFlowArgs};
use ff_core::layer::{Call, CallFuture, Layer, Layered};
use ff_core::{EngineBackend, EngineError, ExecutionId, FlowId, Namespace, PartitionConfig, PublicState};
use uuid::Uuid;

/// Fails the cancel of one execution; every other call passes through.
struct DropOneCancel {
    fail_cancel_of: ExecutionId,
}

impl Layer for DropOneCancel {
    fn around<'a, T: Send + 'a>(&'a self, call: Call, run: CallFuture<'a, T>) -> CallFuture<'a, T> {
        if call.op == "cancel_execution" && call.execution_id.as_ref() == Some(&self.fail_cancel_of) {
            return Box::pin(async { Err(EngineError::protocol("injected", "cancel dropped")) });
        }
        run
    }
}

fn flow_on_partition_0(cfg: &PartitionConfig) -> FlowId {
    (0..100_000u64)
        .map(|i| Uuid::from_u64_pair(0xf10f, i))
        .find(|u| ff_core::partition::flow_partition(u, cfg).index == 0)
        .map(FlowId::from_uuid)
        .expect("a flow id on partition 0")
}

async fn partial_cancel_is_reported(fixture: Fixture) {
    let mut h = Harness::new(&fixture);
    h.one_partition = true;
    let b = fixture.backend.clone();
    let flow = flow_on_partition_0(&b.partition_config());
    let args = CreateFlowArgs { flow_id: flow, flow_kind: "dag".into(), namespace: Namespace::new("ns") };
    b.create_flow(args).await.expect("create flow");
    for name in ["a", "b", "c"] {
        h.create(name).await;
        b.add_execution_to_flow(&flow, &h.id(name)).await.expect("add");
    }
    h.grant_claim("b", "w1").await;
    h.grant_claim("c", "w1").await;
    h.complete("c").await.expect("complete");
    let wrapped = Layered::new(b.clone(), DropOneCancel { fail_cancel_of: h.id("a") });
    let r = wrapped.cancel_flow(&flow, "stop", CancelFlowPolicy::CancelAll).await.expect("cancel_flow");
    match r {
        CancelFlowResult::PartiallyCancelled {
            cancellation_policy,
            member_execution_ids,
            failed_member_execution_ids,
        } => {
            assert_eq!(cancellation_policy, "cancel_all");
            assert_eq!(member_execution_ids.len(), 3);
            assert_eq!(failed_member_execution_ids, [h.id("a")], "only the dropped cancel failed");
        }
        other => panic!("a failed member cancel must not read as success: {other:?}"),
    }
    let ids: Vec<ExecutionId> = ["a", "b", "c"].iter().map(|n| h.id(n)).collect();
    let state = |i: usize| {
        let (b, id) = (b.clone(), ids[i].clone());
        async move { b.read_execution_state(&id).await.expect("state").expect("exists") }
    };
    assert_eq!(state(0).await, PublicState::Waiting);
    assert_eq!(state(1).await, PublicState::Cancelled);
    assert_eq!(state(2).await, PublicState::Completed, "finished members are untouched");
    // The unacknowledged member is still owed a cancel: the reconciler drains it.
    h.advance(30_000).await;
    h.scan(ScannerKind::CancelReconciler).await;
    assert_eq!(state(0).await, PublicState::Cancelled);
}

fn run(fixture: Fixture) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(partial_cancel_is_reported(fixture));
}

#[test]
fn partial_cancel_is_reported_memory() {
    run(ff_conformance::memory_fixture());
}

#[test]
fn partial_cancel_is_reported_sqlite() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("flow-partial-cancel");
    let _ = std::fs::create_dir_all(&dir);
    run(ff_conformance::sqlite_fixture(&dir.join(format!("kit-{}.db", std::process::id()))));
}
