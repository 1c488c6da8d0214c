//! Starts an in-process `ff-server` on the memory backend (loopback only),
//! submits an execution over HTTP, claims it through the server's scheduler,
//! completes it with a worker and prints what happened.
//!
//! Run with `cargo run -p ff-sdk --example worker`.

use std::error::Error;

use ff_core::contracts::CreateExecutionArgs;
use ff_core::{ExecutionId, LaneId, WorkerId, WorkerInstanceId};
use ff_sdk::wire::ClaimForWorkerRequest;
use ff_sdk::{FlowFabricAdminClient, FlowFabricWorker, WorkerConfig};
use ff_server::{ServerConfig, serve};

/// Demo HMAC secret; a real deployment reads `FF_WAITPOINT_HMAC_SECRET`.
const DEMO_SECRET: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// Claim polls before giving up.
const CLAIM_POLLS_MAX: u32 = 50;
/// Pause between claim polls, in ms.
const CLAIM_POLL_INTERVAL_MS: u64 = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = serve(ServerConfig::new(DEMO_SECRET), listener).await?;
    println!("server listening on {}", server.base_url());

    let admin = FlowFabricAdminClient::new(&server.base_url())?;
    let lane = LaneId::new("default");
    let config = WorkerConfig {
        worker_id: WorkerId::new("example-worker"),
        worker_instance_id: WorkerInstanceId::new("example-worker-1"),
        lanes: vec![lane.clone()],
        ..WorkerConfig::default()
    };
    let worker = FlowFabricWorker::connect_with(config, server.backend().clone())?;

    let id = ExecutionId::solo(&lane, &worker.partition_config(), uuid::Uuid::new_v4());
    let mut args = CreateExecutionArgs::new(id.clone(), "demo", lane.clone(), "greet");
    args.input_payload = b"world".to_vec();
    println!("submitted {id}: {:?}", admin.create_execution(&args).await?);

    let request = ClaimForWorkerRequest {
        worker_id: "example-worker".into(),
        lane_id: lane.as_str().into(),
        worker_instance_id: "example-worker-1".into(),
        capabilities: Vec::new(),
        grant_ttl_ms: 5_000,
    };
    // The scheduler probes a rotating window of partitions per call, so a worker polls.
    let mut polls = 0;
    let grant = loop {
        polls += 1;
        if let Some(response) = admin.claim_for_worker(request.clone()).await? {
            break response.into_grant()?;
        }
        if polls == CLAIM_POLLS_MAX {
            return Err("the scheduler found no work".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(CLAIM_POLL_INTERVAL_MS)).await;
    };
    println!("scheduler granted {} on {} after {polls} poll(s)", grant.execution_id, grant.partition_key);

    let task = worker.claim_from_grant(lane, grant).await?;
    let input = String::from_utf8_lossy(task.input_payload()).into_owned();
    println!(
        "claimed attempt {} of kind {:?} with input {input:?}",
        task.attempt_index(),
        task.execution_kind()
    );
    task.append_frame("log", format!("greeting {input}").into_bytes(), None).await?;
    task.complete(Some(format!("hello, {input}").into_bytes())).await?;

    let state = admin.execution_state(&id).await?.ok_or("execution vanished")?;
    let result = admin.execution_result(&id).await?.unwrap_or_default();
    println!("final state {state:?}, result {:?}", String::from_utf8_lossy(&result));
    server.shutdown().await?;
    println!("server stopped");
    Ok(())
}
