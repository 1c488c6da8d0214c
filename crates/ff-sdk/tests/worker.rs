//! Worker SDK behaviour over the memory backend on a simulated clock: config
//! validation, permits, auto-renewal and the scheduler-bypass claim.

use std::sync::Arc;
use std::time::Duration;

use ff_backend_memory::new_sim_backend;
use ff_core::contracts::{ClaimGrant, CreateExecutionArgs};
use ff_core::suspension::{ResumeCondition, ResumePolicy, SignalMatcher, SuspensionReasonCode};
use ff_core::{
    BlockingReason, EngineBackend, ExecutionId, LaneId, PartitionConfig, PublicState, SimClock, WorkerId,
    WorkerInstanceId,
};
use ff_sdk::{FlowFabricWorker, SdkError, Signal, SignalOutcome, WorkerConfig};

const PARTITIONS: u16 = 4;

struct Env {
    backend: Arc<dyn EngineBackend>,
    next: std::sync::atomic::AtomicU64,
}

impl Env {
    fn new() -> Self {
        let cfg = PartitionConfig { num_flow_partitions: PARTITIONS, ..PartitionConfig::default() };
        let backend: Arc<dyn EngineBackend> = Arc::new(new_sim_backend(SimClock::new(1_000_000), cfg));
        Self { backend, next: std::sync::atomic::AtomicU64::new(1) }
    }

    fn worker(&self, config: WorkerConfig) -> FlowFabricWorker {
        FlowFabricWorker::connect_with(config, self.backend.clone()).expect("valid config")
    }

    async fn submit(&self, partition: u16, policy: serde_json::Value) -> ExecutionId {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = ExecutionId::from_parts(partition, uuid::Uuid::from_u128(u128::from(n)));
        let mut args = CreateExecutionArgs::new(id.clone(), "ns", LaneId::new("default"), "job");
        if !policy.is_null() {
            args.policy_json = policy.to_string();
        }
        self.backend.create_execution(args).await.expect("create");
        id
    }

    async fn public_state(&self, id: &ExecutionId) -> PublicState {
        self.backend.read_execution_state(id).await.expect("read").expect("exists")
    }
}

fn config(max_concurrent_tasks: usize, lease_ttl_ms: u64) -> WorkerConfig {
    WorkerConfig {
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("w-1"),
        lanes: vec![LaneId::new("default")],
        lease_ttl_ms,
        max_concurrent_tasks,
        ..WorkerConfig::default()
    }
}

fn config_field(result: Result<(), SdkError>) -> Option<&'static str> {
    match result {
        Err(SdkError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn worker_config_validation() {
    assert!(config(1, 30_000).validate().is_ok());
    let no_lanes = WorkerConfig { lanes: Vec::new(), ..config(1, 30_000) };
    assert_eq!(config_field(no_lanes.validate()), Some("lanes"));
    for bad in ["", "a,b", "a b", "tab\t", "nl\n", "nbsp\u{a0}", "del\u{7f}"] {
        let c = WorkerConfig { capabilities: vec!["gpu".into(), bad.into()], ..config(1, 30_000) };
        assert_eq!(config_field(c.validate()), Some("capabilities"), "{bad:?}");
    }
    let many =
        WorkerConfig { capabilities: (0..257).map(|i| format!("t{i}")).collect(), ..config(1, 30_000) };
    assert_eq!(config_field(many.validate()), Some("capabilities"));
    let blank_id = WorkerConfig { worker_instance_id: WorkerInstanceId::new(" "), ..config(1, 30_000) };
    assert_eq!(config_field(blank_id.validate()), Some("worker_instance_id"));
    assert_eq!(config_field(config(1, 0).validate()), Some("lease_ttl_ms"));
    assert_eq!(config(1, 30_000).renewal_interval_ms(), 10_000);
    let message = config(1, 0).validate().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.starts_with("config: worker_config.lease_ttl_ms: "), "{message}");
}

#[test]
fn backend_config_parses_memory_and_sqlite() {
    use ff_sdk::BackendConfig;
    assert_eq!("memory".parse::<BackendConfig>().ok(), Some(BackendConfig::Memory));
    assert_eq!(
        "sqlite:/tmp/x.db".parse::<BackendConfig>().ok(),
        Some(BackendConfig::Sqlite { path: "/tmp/x.db".into() })
    );
    assert!(matches!("valkey".parse::<BackendConfig>(), Err(SdkError::Config { .. })));
    assert!(matches!("sqlite:".parse::<BackendConfig>(), Err(SdkError::Config { .. })));
}

#[test]
fn backend_config_parses_valkey_urls() {
    use ff_sdk::BackendConfig;
    let valkey = |host: &str, port: u16, key_prefix: &str| BackendConfig::Valkey {
        host: host.into(),
        port,
        key_prefix: key_prefix.into(),
    };
    let parsed = |s: &str| s.parse::<BackendConfig>().ok();
    assert_eq!(parsed("valkey://127.0.0.1:6391"), Some(valkey("127.0.0.1", 6391, "")));
    assert_eq!(parsed("VALKEY://localhost:6379/"), Some(valkey("localhost", 6379, "")));
    assert_eq!(parsed("valkey://127.0.0.1:6379/tenant-a:"), Some(valkey("127.0.0.1", 6379, "tenant-a:")));
    assert_eq!(parsed("valkey://127.0.0.1:6379/a/b"), Some(valkey("127.0.0.1", 6379, "a/b")));
    assert_eq!(parsed("valkey://[::1]:6379/p:"), Some(valkey("::1", 6379, "p:")));
    for bad in [
        "valkey://",
        "valkey://127.0.0.1",
        "valkey://:6379",
        "valkey://127.0.0.1:0",
        "valkey://127.0.0.1:65536",
        "valkey://127.0.0.1:port",
        "valkey://[::1/p",
        "valkey://[::1]6379",
        "valkey://127.0.0.1:6379/{tag}",
    ] {
        let r = bad.parse::<BackendConfig>();
        assert!(matches!(r, Err(SdkError::Config { field: Some("valkey"), .. })), "{bad}: {r:?}");
    }
}

#[test]
fn sync_open_refuses_valkey() {
    let config =
        ff_sdk::BackendConfig::Valkey { host: "127.0.0.1".into(), port: 1, key_prefix: String::new() };
    let r = config.open(ff_core::PartitionConfig::default());
    assert!(matches!(r, Err(SdkError::Config { field: Some("valkey"), .. })), "{:?}", r.err());
}

#[tokio::test]
async fn permits_are_released_on_drop_and_on_terminal_ops() {
    let env = Env::new();
    let worker = env.worker(config(1, 30_000));
    let first = env.submit(0, serde_json::Value::Null).await;
    let second = env.submit(1, serde_json::Value::Null).await;
    let task = worker.claim_next().await.expect("claim").expect("a task");
    assert_eq!(worker.available_permits(), 0);
    assert!(worker.claim_next().await.expect("claim at capacity").is_none());
    let grant = ClaimGrant {
        execution_id: second.clone(),
        partition_key: second.partition().key(),
        grant_key: String::new(),
        expires_at_ms: i64::MAX,
    };
    let at_capacity = worker.claim_from_grant(LaneId::new("default"), grant).await;
    assert!(matches!(at_capacity, Err(SdkError::WorkerAtCapacity)), "{at_capacity:?}");
    let claimed = task.execution_id().clone();
    drop(task);
    assert_eq!(worker.available_permits(), 1, "drop releases the permit");
    let next = worker.claim_next().await.expect("claim").expect("the other execution");
    assert_ne!(next.execution_id(), &claimed);
    assert!([&first, &second].contains(&next.execution_id()));
    next.complete(None).await.expect("complete");
    assert_eq!(worker.available_permits(), 1, "complete releases the permit");
}

#[tokio::test(start_paused = true)]
async fn renewal_runs_on_a_timer_and_stops_after_complete() {
    let env = Env::new();
    let worker = env.worker(config(1, 300));
    env.submit(2, serde_json::Value::Null).await;
    let task = worker.claim_next().await.expect("claim").expect("a task");
    let monitor = task.renewal_monitor();
    // Virtual time: three renewal periods of 100 ms elapse deterministically.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(monitor.renewals(), 3);
    assert!(task.is_lease_healthy() && !monitor.is_stopped());
    task.complete(Some(b"ok".to_vec())).await.expect("complete");
    assert!(monitor.is_stopped());
    let after_complete = monitor.renewals();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(monitor.renewals(), after_complete, "no renewal after a terminal op");
    assert_eq!(monitor.consecutive_failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn renewal_stops_when_the_task_is_dropped() {
    let env = Env::new();
    let worker = env.worker(config(1, 300));
    env.submit(2, serde_json::Value::Null).await;
    let task = worker.claim_next().await.expect("claim").expect("a task");
    let monitor = task.renewal_monitor();
    drop(task);
    assert!(monitor.is_stopped());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(monitor.renewals(), 0);
}

#[tokio::test]
async fn capability_mismatch_blocks_the_route_instead_of_looping() {
    let env = Env::new();
    let gpu =
        env.submit(0, serde_json::json!({"routing_requirements": {"required_capabilities": ["gpu"]}})).await;
    let worker = env.worker(config(1, 30_000));
    assert!(worker.claim_next().await.expect("claim").is_none());
    let snapshot = env.backend.describe_execution(&gpu).await.expect("describe").expect("exists");
    assert_eq!(snapshot.state.blocking_reason, BlockingReason::WaitingForCapableWorker);
    assert_eq!(snapshot.state.blocking_detail, ff_sdk::ROUTE_BLOCK_DETAIL);
    assert_eq!(worker.available_permits(), 1, "a failed claim gives the permit back");
}

#[tokio::test]
async fn claim_next_takes_the_resumed_path_after_a_signal() {
    let env = Env::new();
    let secret = "0123456789abcdef".repeat(4);
    env.backend.seed_waitpoint_hmac_secret("k1", &secret).await.expect("seed the HMAC secret");
    let id = env.submit(3, serde_json::Value::Null).await;
    let worker = env.worker(config(2, 30_000));
    let task = worker.claim_next().await.expect("claim").expect("a task");
    let condition = ResumeCondition::Single { waitpoint_key: "k".into(), matcher: SignalMatcher::Wildcard };
    let suspended = task
        .suspend(SuspensionReasonCode::WaitingForSignal, condition, None, ResumePolicy::default())
        .await
        .expect("suspend");
    assert_eq!(env.public_state(&id).await, PublicState::Suspended);
    let signal = Signal {
        signal_name: "done".into(),
        signal_category: "test".into(),
        payload: None,
        source_type: "test".into(),
        source_identity: "me".into(),
        idempotency_key: None,
        waitpoint_token: suspended.details.primary.waitpoint_token.clone(),
    };
    let outcome = worker.deliver_signal(&id, suspended.details.primary.waitpoint_id, signal).await;
    assert!(matches!(outcome, Ok(SignalOutcome::TriggeredResume { .. })), "{outcome:?}");
    let resumed = worker.claim_next().await.expect("claim").expect("resumed task");
    assert_eq!((resumed.execution_id(), resumed.attempt_index()), (&id, 0));
    resumed.complete(None).await.expect("complete");
    assert_eq!(env.public_state(&id).await, PublicState::Completed);
}

#[tokio::test]
async fn connect_opens_the_configured_backend() {
    let with_backend = WorkerConfig { backend: Some(ff_sdk::BackendConfig::Memory), ..config(1, 30_000) };
    let worker = FlowFabricWorker::connect(with_backend).await.expect("connect");
    assert_eq!(worker.partition_config(), PartitionConfig::default());
    assert!(worker.claim_next().await.expect("empty backend").is_none());
    let missing = FlowFabricWorker::connect(config(1, 30_000)).await;
    assert!(matches!(missing, Err(SdkError::Config { field: Some("backend"), .. })), "{missing:?}");
    let bad = WorkerConfig { lanes: Vec::new(), ..config(1, 30_000) };
    assert!(FlowFabricWorker::connect_with(bad, Env::new().backend).is_err());
}

#[tokio::test(start_paused = true)]
async fn renewal_stops_once_the_lease_is_revoked() {
    let env = Env::new();
    let worker = env.worker(config(1, 300));
    let id = env.submit(1, serde_json::Value::Null).await;
    let task = worker.claim_next().await.expect("claim").expect("a task");
    let monitor = task.renewal_monitor();
    let revoke = ff_core::contracts::RevokeLeaseArgs {
        execution_id: id,
        expected_lease_id: None,
        reason: "operator".into(),
    };
    env.backend.revoke_lease(revoke).await.expect("revoke");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(monitor.is_stopped(), "a lease-ending error stops the loop");
    assert_eq!((monitor.renewals(), monitor.consecutive_failures()), (0, 1));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(monitor.consecutive_failures(), 1, "no retries after the lease is gone");
    assert!(task.is_lease_healthy(), "one failure is below the unhealthy threshold");
    let refused = task.complete(None).await;
    assert!(matches!(refused, Err(SdkError::Engine(_))), "{refused:?}");
}

#[tokio::test]
async fn connect_refuses_a_live_duplicate_instance_id() {
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sdk-dup-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sqlite = WorkerConfig { backend: Some(ff_sdk::BackendConfig::Sqlite { path }), ..config(1, 30_000) };
    let first = FlowFabricWorker::connect(sqlite.clone()).await.expect("first instance");
    let second = FlowFabricWorker::connect(sqlite.clone()).await;
    assert!(matches!(&second, Err(SdkError::Config { field: Some("worker_instance_id"), .. })), "{second:?}");
    let other = WorkerConfig { worker_instance_id: WorkerInstanceId::new("w-2"), ..sqlite };
    assert!(FlowFabricWorker::connect(other).await.is_ok(), "another instance id is fine");
    drop(first);
}
