//! One test world: a server on `127.0.0.1:0` over a memory, SQLite or Valkey backend
//! on a simulated clock, an admin client speaking real HTTP to it, and a worker on the
//! same backend. Helpers own the API calls so scenarios read as steps.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ff_backend_sqlite::{Durability, SqliteOptions};
use ff_core::contracts::{ClaimGrant, CreateExecutionArgs, CreateExecutionOutcome};
use ff_core::suspension::{DeliverSignalArgs, DeliverSignalOutcome};
use ff_core::{
    EngineBackend, ExecutionId, LaneId, OwnershipState, PartitionConfig, PublicState, SignalId, SimClock,
    WaitpointId, WorkerId, WorkerInstanceId,
};
use ff_sdk::wire::ClaimForWorkerRequest;
use ff_sdk::{ClaimedTask, FlowFabricAdminClient, FlowFabricWorker, SdkError, WorkerConfig};
use ff_server::{ServerConfig, ServerHandle, serve_with_backend};

/// The boot HMAC secret (64 hex digits).
pub const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The lane every test execution uses.
pub const LANE: &str = "default";
/// Flow partitions of every test backend (small keeps scanner passes cheap).
pub const PARTITIONS: u16 = 4;
/// Lease TTL of the test worker, in ms of simulated time.
pub const LEASE_TTL_MS: u64 = 2_000;
/// Upper bound on waiting for a background scanner to act, in real ms.
pub const SCANNER_WAIT_MS_MAX: u64 = 10_000;
/// Simulated start time, in ms since the epoch.
const CLOCK_START_MS: i64 = 1_700_000_000_000;

/// Which backend a world runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Sqlite,
    /// A real Valkey server started by `scripts/valkey.sh`, each world on a fresh key prefix.
    Valkey,
}

/// Every backend, for scenarios that run on each.
pub const KINDS: [Kind; 3] = [Kind::Memory, Kind::Sqlite, Kind::Valkey];

static DB_SEQ: AtomicU64 = AtomicU64::new(0);

/// A running server and its clients.
pub struct World {
    pub kind: Kind,
    pub clock: SimClock,
    pub backend: Arc<dyn EngineBackend>,
    pub server: Option<ServerHandle>,
    pub admin: FlowFabricAdminClient,
    pub worker: FlowFabricWorker,
    next_uuid: AtomicU64,
}

/// The port of the test Valkey server (override with `FF_VALKEY_TEST_PORT`).
pub fn valkey_port() -> u16 {
    std::env::var("FF_VALKEY_TEST_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(6391)
}

/// Starts the Valkey server once per test binary; panics (fails the test) when it cannot start.
pub fn ensure_valkey_server() {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = STARTED.get_or_init(|| ff_backend_valkey::raw::start_local_server(valkey_port())) {
        panic!("{e}");
    }
}

/// A key prefix unique to this process and call (`t<pid>-<nanos>-<n>:`, the form whose
/// keys the Valkey backend's test setup removes once the process is gone).
pub fn fresh_key_prefix() -> String {
    ff_backend_valkey::raw::fresh_test_prefix()
}

async fn open_backend(kind: Kind, clock: &SimClock) -> Arc<dyn EngineBackend> {
    let partitions = PartitionConfig { num_flow_partitions: PARTITIONS, ..PartitionConfig::default() };
    match kind {
        Kind::Memory => Arc::new(ff_backend_memory::new_sim_backend(clock.clone(), partitions)),
        Kind::Sqlite => {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ff-server-e2e");
            std::fs::create_dir_all(&dir).expect("create the test database folder");
            let name = format!("e2e-{}-{}.db", std::process::id(), DB_SEQ.fetch_add(1, Ordering::SeqCst));
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let options =
                SqliteOptions { partitions, clock: Arc::new(clock.clone()), durability: Durability::Normal };
            Arc::new(ff_backend_sqlite::open(&path, options).expect("open the test database"))
        }
        Kind::Valkey => {
            ensure_valkey_server();
            let config = ff_backend_valkey::ValkeyConfig {
                key_prefix: fresh_key_prefix(),
                partitions,
                clock: Some(clock.clone()),
                ..ff_backend_valkey::ValkeyConfig::local(valkey_port())
            };
            let backend = ff_backend_valkey::ValkeyBackend::connect(config).await;
            Arc::new(backend.unwrap_or_else(|e| panic!("connect to Valkey on {}: {e}", valkey_port())))
        }
    }
}

impl World {
    /// A world without auth.
    pub async fn new(kind: Kind) -> Self {
        Self::with_token(kind, None).await
    }

    /// A world whose server requires `token` (and whose admin client sends it).
    pub async fn with_token(kind: Kind, token: Option<&str>) -> Self {
        let clock = SimClock::new(CLOCK_START_MS);
        let backend = open_backend(kind, &clock).await;
        let mut config = ServerConfig::new(SECRET).with_scanner_interval(Duration::from_millis(100));
        config.api_token = token.map(str::to_owned);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let server = serve_with_backend(config, backend.clone(), listener).await.expect("server starts");
        let admin = match token {
            Some(t) => FlowFabricAdminClient::with_token(&server.base_url(), t),
            None => FlowFabricAdminClient::new(&server.base_url()),
        }
        .expect("admin client");
        let worker_config = WorkerConfig {
            worker_id: WorkerId::new("worker-1"),
            worker_instance_id: WorkerInstanceId::new("worker-1-instance"),
            lanes: vec![LaneId::new(LANE)],
            lease_ttl_ms: LEASE_TTL_MS,
            max_concurrent_tasks: 4,
            ..WorkerConfig::default()
        };
        let worker = FlowFabricWorker::connect_with(worker_config, backend.clone()).expect("worker");
        Self { kind, clock, backend, server: Some(server), admin, worker, next_uuid: AtomicU64::new(1) }
    }

    /// Stops the server (graceful) and checks it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// A deterministic fresh UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_u128(u128::from(self.next_uuid.fetch_add(1, Ordering::SeqCst)))
    }

    /// Submits an execution over HTTP on `partition`; checks it was created.
    pub async fn submit(&self, partition: u16, payload: &[u8]) -> ExecutionId {
        let id = ExecutionId::from_parts(partition, self.uuid());
        let mut args = CreateExecutionArgs::new(id.clone(), "ns", LaneId::new(LANE), "job");
        args.input_payload = payload.to_vec();
        let outcome = self.admin.create_execution(&args).await.expect("create over HTTP");
        assert!(matches!(outcome, CreateExecutionOutcome::Created { .. }), "{outcome:?}");
        id
    }

    /// Asks the server's scheduler for a grant for the test worker.
    pub async fn grant(&self) -> Option<ClaimGrant> {
        let request = ClaimForWorkerRequest {
            worker_id: "worker-1".into(),
            lane_id: LANE.into(),
            worker_instance_id: "worker-1-instance".into(),
            capabilities: Vec::new(),
            grant_ttl_ms: 5_000,
        };
        let response = self.admin.claim_for_worker(request).await.expect("claim over HTTP")?;
        Some(response.into_grant().expect("well-formed grant"))
    }

    /// Claims through the server: grant over HTTP, then the worker consumes it.
    pub async fn claim_via_server(&self) -> ClaimedTask {
        let grant = self.grant().await.expect("a grant");
        self.worker.claim_from_grant(LaneId::new(LANE), grant).await.expect("claim from grant")
    }

    /// The public state over HTTP.
    pub async fn state(&self, id: &ExecutionId) -> PublicState {
        self.admin.execution_state(id).await.expect("state over HTTP").expect("execution exists")
    }

    /// Delivers a named signal over HTTP with `token`.
    pub async fn signal(
        &self,
        id: &ExecutionId,
        waitpoint_id: WaitpointId,
        name: &str,
        token: &str,
    ) -> Result<DeliverSignalOutcome, SdkError> {
        let args = DeliverSignalArgs {
            signal_category: "test".into(),
            source_type: "e2e".into(),
            source_identity: "tester".into(),
            payload: Some(b"{}".to_vec()),
            ..DeliverSignalArgs::new(id.clone(), waitpoint_id, SignalId(self.uuid()), name, token)
        };
        self.admin.deliver_signal(&args).await
    }

    /// Waits (bounded, real time) until the scanners mark the lease expired.
    pub async fn await_lease_expired(&self, id: &ExecutionId) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SCANNER_WAIT_MS_MAX);
        loop {
            let snapshot = self.backend.describe_execution(id).await.expect("describe").expect("exists");
            if snapshot.state.ownership_state == OwnershipState::LeaseExpiredReclaimable {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "lease never marked expired: {snapshot:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
