//! Boot, configuration, transport and shutdown of the server over real loopback HTTP.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use ff_core::contracts::CreateExecutionArgs;
use ff_core::{ExecutionId, LaneId, PartitionConfig, PublicState, WorkerId, WorkerInstanceId};
use ff_sdk::{
    BackendConfig, ConnectFuture, Connector, FlowFabricAdminClient, FlowFabricWorker, SdkError, TcpConnector,
    WorkerConfig,
};
use ff_server::{ServerConfig, ServerError, serve};

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A transport that counts the streams it opens and delegates to TCP.
#[derive(Default)]
struct CountingConnector {
    opened: AtomicU32,
}

impl Connector for CountingConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> ConnectFuture<'a> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        TcpConnector.connect(host, port)
    }
}

fn small_partitions() -> PartitionConfig {
    PartitionConfig { num_flow_partitions: 4, ..PartitionConfig::default() }
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_opens_the_configured_backend_and_stops_cleanly() {
    let db =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("boot-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    common::ensure_valkey_server();
    let valkey_url = format!("valkey://127.0.0.1:{}/{}", common::valkey_port(), common::fresh_key_prefix());
    let valkey: BackendConfig = valkey_url.parse().expect("a valkey:// backend URL");
    for backend in [BackendConfig::Memory, BackendConfig::Sqlite { path: db.clone() }, valkey] {
        let mut config = ServerConfig::new(SECRET);
        config.backend = backend.clone();
        config.partitions = small_partitions();
        let server = serve(config, listener().await).await.expect("boot");
        let base = server.base_url();
        let connector = Arc::new(CountingConnector::default());
        let admin = FlowFabricAdminClient::new(&base).expect("client").with_connector(connector.clone());
        let worker_config = WorkerConfig {
            worker_id: WorkerId::new("w"),
            worker_instance_id: WorkerInstanceId::new("w-boot"),
            ..WorkerConfig::default()
        };
        let worker = FlowFabricWorker::connect_with(worker_config, server.backend().clone()).expect("worker");
        let lane = LaneId::new("default");
        let id = ExecutionId::solo(&lane, &small_partitions(), uuid::Uuid::new_v4());
        admin
            .create_execution(&CreateExecutionArgs::new(id.clone(), "ns", lane.clone(), "k"))
            .await
            .expect("create");
        let task = worker.claim_via_server(&admin, lane.clone(), 5_000).await.expect("claim").expect("work");
        task.append_frame("log", b"line one".to_vec(), Some("corr-1".into())).await.expect("frame");
        let page = admin.read_stream(&id, 0, "start", "end", 10).await.expect("stream over HTTP");
        assert_eq!(page.count, 1, "{backend:?}: {page:?}");
        let bad = admin.read_stream(&id, 0, "-", "end", 10).await;
        assert!(matches!(bad, Err(SdkError::Api { status: 400, .. })), "{bad:?}");
        task.complete(None).await.expect("complete");
        assert_eq!(admin.execution_state(&id).await.expect("state"), Some(PublicState::Completed));
        let page = admin.list_executions(id.partition_index(), None, 10).await.expect("list");
        assert!(page.executions.contains(&id.to_string()), "{backend:?}: {page:?}");
        assert!(connector.opened.load(Ordering::SeqCst) >= 6, "every exchange went through the connector");
        server.shutdown().await.expect("clean shutdown");
        let after = admin.health().await;
        assert!(matches!(after, Err(SdkError::Http { .. })), "{backend:?}: served after shutdown: {after:?}");
    }
}

#[tokio::test]
async fn boot_rejects_a_bad_secret_and_a_blank_token() {
    for secret in ["", "abc", "zz".repeat(32).as_str(), "ab".repeat(16).as_str()] {
        let result = serve(ServerConfig::new(secret), listener().await).await;
        assert!(matches!(result, Err(ServerError::Config(_))), "{secret:?}: {result:?}");
    }
    let mut config = ServerConfig::new(SECRET);
    config.api_token = Some("   ".into());
    assert!(matches!(serve(config, listener().await).await, Err(ServerError::Config(_))));
}

#[tokio::test]
async fn admin_client_rejects_bad_urls_and_requests_before_sending() {
    assert!(matches!(FlowFabricAdminClient::new("https://127.0.0.1:1"), Err(SdkError::Config { .. })));
    assert!(matches!(FlowFabricAdminClient::new("not a url"), Err(SdkError::Config { .. })));
    assert!(matches!(
        FlowFabricAdminClient::with_token("http://127.0.0.1:1", ""),
        Err(SdkError::Config { .. })
    ));
    let connector = Arc::new(CountingConnector::default());
    let admin =
        FlowFabricAdminClient::new("http://127.0.0.1:1/").expect("client").with_connector(connector.clone());
    let request = ff_sdk::wire::ClaimForWorkerRequest {
        worker_id: "w".into(),
        lane_id: "default".into(),
        worker_instance_id: "i".into(),
        capabilities: Vec::new(),
        grant_ttl_ms: 0,
    };
    let refused = admin.claim_for_worker(request).await;
    assert!(matches!(refused, Err(SdkError::Config { field: Some("grant_ttl_ms"), .. })), "{refused:?}");
    assert_eq!(connector.opened.load(Ordering::SeqCst), 0, "nothing was sent");
}
