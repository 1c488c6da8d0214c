//! Flow, budget and quota routes over real HTTP on both backends.

mod common;

use common::{KINDS, World};
use ff_core::{ExecutionId, FlowId, LaneId, PartitionConfig};
use hyper::Method;
use serde_json::{Value, json};

/// Sends a JSON request and returns the status and the parsed body.
async fn call(world: &World, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
    let (status, raw) = world.admin.raw(method, path, bytes).await.expect("http");
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_budgets_and_quotas() {
    for kind in KINDS {
        let world = World::new(kind).await;
        let flow = FlowId(world.uuid());
        let create = json!({"flow_id": flow, "flow_kind": "dag", "namespace": "ns"});
        let (status, body) = call(&world, Method::POST, "/v1/flows", Some(create.clone())).await;
        assert_eq!(status, 201, "{kind:?}: {body}");
        let (status, body) = call(&world, Method::POST, "/v1/flows", Some(create)).await;
        assert_eq!((status, body["AlreadySatisfied"]["flow_id"].clone()), (200, json!(flow)), "{kind:?}");

        let partitions =
            PartitionConfig { num_flow_partitions: common::PARTITIONS, ..PartitionConfig::default() };
        let member = ExecutionId::for_flow(&flow, &partitions, world.uuid());
        let mut args =
            ff_core::contracts::CreateExecutionArgs::new(member.clone(), "ns", LaneId::new("default"), "k");
        args.input_payload = b"m".to_vec();
        world.admin.create_execution(&args).await.expect("create member");
        let add = json!({"flow_id": flow, "execution_id": member});
        let (status, body) =
            call(&world, Method::POST, &format!("/v1/flows/{flow}/members"), Some(add)).await;
        assert_eq!(status, 201, "{kind:?}: {body}");
        let cancel = json!({"flow_id": flow, "reason": "done", "cancellation_policy": "cancel_all"});
        let (status, body) =
            call(&world, Method::POST, &format!("/v1/flows/{flow}/cancel"), Some(cancel)).await;
        assert_eq!(status, 200, "{kind:?}: {body}");
        assert_eq!(body["Cancelled"]["member_execution_ids"], json!([member]), "{kind:?}");
        assert_eq!(world.state(&member).await, ff_core::PublicState::Cancelled);
        let valid = json!({"flow_id": flow, "reason": "x", "cancellation_policy": "flow_only"});
        let (status, _) = call(&world, Method::POST, "/v1/flows/not-a-uuid/cancel", Some(valid)).await;
        assert_eq!(status, 400, "{kind:?}: malformed path id");
        let (status, body) =
            call(&world, Method::POST, &format!("/v1/flows/{flow}/cancel"), Some(json!({}))).await;
        assert_eq!(
            (status, body["error"].clone()),
            (422, json!("invalid JSON: Unprocessable Entity")),
            "{kind:?}"
        );

        let budget = world.uuid();
        let create_budget = json!({
            "budget_id": budget, "scope_type": "tenant", "scope_id": "t1", "enforcement_mode": "strict",
            "on_hard_limit": "fail", "on_soft_limit": "warn", "reset_interval_ms": 0,
            "dimensions": ["tokens"], "hard_limits": [100], "soft_limits": [50],
        });
        let (status, body) = call(&world, Method::POST, "/v1/budgets", Some(create_budget)).await;
        assert_eq!(status, 201, "{kind:?}: {body}");
        let usage = json!({"dimensions": {"tokens": 120}, "now": 0});
        let (status, body) =
            call(&world, Method::POST, &format!("/v1/budgets/{budget}/usage"), Some(usage)).await;
        assert_eq!(status, 200, "{kind:?}: {body}");
        assert!(body.get("HardBreach").is_some(), "{kind:?}: a hard breach is a 200 answer: {body}");
        let (status, body) = call(&world, Method::GET, &format!("/v1/budgets/{budget}"), None).await;
        assert_eq!((status, body["budget_id"].clone()), (200, json!(budget)), "{kind:?}: {body}");
        let (status, body) = call(&world, Method::POST, &format!("/v1/budgets/{budget}/reset"), None).await;
        assert_eq!(status, 200, "{kind:?}: {body}");
        let (status, body) = call(&world, Method::GET, &format!("/v1/budgets/{}", world.uuid()), None).await;
        assert_eq!(status, 404, "{kind:?}: {body}");

        let quota = json!({"quota_policy_id": world.uuid(), "window_seconds": 60,
            "max_requests_per_window": 10, "max_concurrent": 2});
        let (status, body) = call(&world, Method::POST, "/v1/quotas", Some(quota)).await;
        assert_eq!(status, 201, "{kind:?}: {body}");
        world.stop().await;
    }
}
