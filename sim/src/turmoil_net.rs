//! The simulated network of `ff-sim turmoil`: the SDK admin client's [`Connector`] over turmoil
//! TCP, the server's axum router served per accepted turmoil stream, and the worker data plane.
//!
//! In production a worker reaches the backend directly for claim-from-grant, renew, complete
//! and fail. Here the backend lives on the server host, so those calls ride the same simulated
//! link as the REST API (a `/sim/v1/*` route per call): partitions, holds and latency hit them
//! exactly as they hit the claim route, which is what makes late, fenced completions happen.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ff_core::contracts::{
    ClaimExecutionArgs, ClaimedExecution, CompleteExecutionArgs, FailOutcome, FailureClass, FailureReason,
    ListExpiredLeasesArgs, ReclaimExecutionArgs, ReclaimExecutionOutcome,
};
use ff_core::{CancelSource, EngineBackend, EngineError, ExecutionId, Handle, LeaseEpoch};
use ff_sdk::{BoxedIo, ConnectFuture, Connector, FlowFabricAdminClient};
use hyper::Method;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The server host's name in the simulated DNS.
pub const SERVER_HOST: &str = "server";
/// The port the server host listens on.
pub const SERVER_PORT: u16 = 9090;
/// Longest a server-side connection may live, in simulated ms (a peer cut off by a partition
/// never closes its end; this bounds the tasks it would pin).
pub const CONNECTION_MS_MAX: u64 = 30_000;
/// Expired leases one `/sim/v1/expired` call lists at most.
pub const EXPIRED_PAGE_MAX: usize = 16;

/// Opens turmoil TCP streams for the SDK's HTTP client.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilConnector;

impl Connector for TurmoilConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> ConnectFuture<'a> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect((host, port)).await?;
            Ok(Box::new(stream) as BoxedIo)
        })
    }
}

/// Accepts turmoil TCP streams on [`SERVER_PORT`] and serves `router` over HTTP/1.1 on each.
///
/// Errors: the bind or accept error of the simulated socket.
pub async fn serve_router(router: Router) -> std::io::Result<()> {
    let listener = turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), SERVER_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            // A reset or a timed-out connection is the simulated network at work, not a server fault.
            let _ = tokio::time::timeout(Duration::from_millis(CONNECTION_MS_MAX), connection).await;
        });
    }
}

/// What the data plane reports to the simulation as it commits.
pub(crate) trait PlaneObserver: Send + Sync + 'static {
    /// A claim or reclaim committed with this lease epoch.
    fn leased(&self, execution_id: &ExecutionId, epoch: LeaseEpoch, reclaim: bool);
    /// A complete or fail was refused with this typed error.
    fn refused(&self, op: &'static str, error: &EngineError);
}

#[derive(Clone)]
struct Plane {
    backend: Arc<dyn EngineBackend>,
    observer: Arc<dyn PlaneObserver>,
    partitions: u16,
    unfenced: bool,
}

/// The typed rejection body of a data-plane call (409).
#[derive(Debug, Serialize, Deserialize)]
struct Rejection {
    code: String,
}

/// `POST /sim/v1/complete` body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CompleteBody {
    pub handle: Handle,
    pub payload: Option<Vec<u8>>,
}

/// The worker data plane as routes over `backend`; `unfenced` deliberately breaks it (completes
/// drop the lease fence) so tests can show the checker catches a stale completion.
pub(crate) fn data_plane(
    backend: Arc<dyn EngineBackend>,
    observer: Arc<dyn PlaneObserver>,
    partitions: u16,
    unfenced: bool,
) -> Router {
    Router::new()
        .route("/sim/v1/claim", post(claim))
        .route("/sim/v1/reclaim", post(reclaim))
        .route("/sim/v1/renew", post(renew))
        .route("/sim/v1/complete", post(complete))
        .route("/sim/v1/fail", post(fail))
        .route("/sim/v1/expired", get(expired))
        .with_state(Plane { backend, observer, partitions, unfenced })
}

fn reply<T: Serialize>(result: Result<T, EngineError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) if matches!(e.root(), EngineError::Transport { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Err(e) => {
            let code = e.root().code().unwrap_or("unclassified").to_owned();
            (StatusCode::CONFLICT, Json(Rejection { code })).into_response()
        }
    }
}

async fn claim(State(p): State<Plane>, Json(args): Json<ClaimExecutionArgs>) -> Response {
    let result = p.backend.claim_execution(args).await;
    if let Ok(c) = &result {
        p.observer.leased(&c.execution_id, c.lease_epoch, false);
    }
    reply(result)
}

async fn reclaim(State(p): State<Plane>, Json(args): Json<ReclaimExecutionArgs>) -> Response {
    let result = p.backend.reclaim_execution(args).await;
    if let Ok(ReclaimExecutionOutcome::Claimed(c)) = &result {
        p.observer.leased(&c.execution_id, c.lease_epoch, true);
    }
    reply(result)
}

async fn renew(State(p): State<Plane>, Json(handle): Json<Handle>) -> Response {
    reply(p.backend.renew(&handle).await)
}

async fn complete(State(p): State<Plane>, Json(body): Json<CompleteBody>) -> Response {
    if !p.unfenced {
        let result = p.backend.complete(&body.handle, body.payload).await;
        if let Err(e) = &result {
            p.observer.refused("complete", e);
        }
        return reply(result);
    }
    let result = async {
        let payload = body.handle.decode_for(p.backend.backend_tag())?;
        let args = CompleteExecutionArgs {
            execution_id: payload.execution_id,
            fence: None,
            result_payload: body.payload,
            source: CancelSource::OperatorOverride,
        };
        p.backend.complete_execution(args).await.map(|_| ())
    }
    .await;
    reply(result)
}

async fn fail(State(p): State<Plane>, Json(handle): Json<Handle>) -> Response {
    let reason = FailureReason::new("simulated failure");
    let result = p.backend.fail(&handle, reason, FailureClass::Transient).await;
    if let Err(e) = &result {
        p.observer.refused("fail", e);
    }
    reply(result)
}

async fn expired(State(p): State<Plane>) -> Response {
    let result = async {
        let args = ListExpiredLeasesArgs {
            as_of: p.backend.server_time_ms().await?,
            after: None,
            limit: EXPIRED_PAGE_MAX,
            max_partitions_per_call: p.partitions,
        };
        let page = p.backend.list_expired_leases(args).await?;
        Ok(page.entries.into_iter().map(|e| e.execution_id).collect::<Vec<ExecutionId>>())
    }
    .await;
    reply(result)
}

/// Why a data-plane call did not answer with a value.
#[derive(Debug)]
pub(crate) enum PlaneError {
    /// No answer: the outcome is unknown (timeout, reset, partition, malformed reply).
    Transport,
    /// A typed rejection from the engine.
    Rejected(EngineError),
}

/// The worker side of the data plane: typed calls over the SDK admin client's transport.
#[derive(Debug, Clone)]
pub(crate) struct PlaneClient {
    pub admin: FlowFabricAdminClient,
}

impl PlaneClient {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, PlaneError> {
        let (status, bytes) = self.admin.raw(method, path, body).await.map_err(|_| PlaneError::Transport)?;
        match status {
            200 => serde_json::from_slice(&bytes).map_err(|_| PlaneError::Transport),
            409 => match serde_json::from_slice::<Rejection>(&bytes) {
                Ok(r) => Err(PlaneError::Rejected(EngineError::from_code(&r.code, &[]))),
                Err(_) => Err(PlaneError::Transport),
            },
            _ => Err(PlaneError::Transport),
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, PlaneError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| PlaneError::Rejected(EngineError::invalid_input(e.to_string())))?;
        self.call(Method::POST, path, Some(bytes)).await
    }

    /// Claims a granted execution.
    pub async fn claim(&self, args: &ClaimExecutionArgs) -> Result<ClaimedExecution, PlaneError> {
        self.post("/sim/v1/claim", args).await
    }

    /// Claims an execution under a reclaim grant.
    pub async fn reclaim(&self, args: &ReclaimExecutionArgs) -> Result<ReclaimExecutionOutcome, PlaneError> {
        self.post("/sim/v1/reclaim", args).await
    }

    /// Renews the handle's lease.
    pub async fn renew(&self, handle: &Handle) -> Result<serde_json::Value, PlaneError> {
        self.post("/sim/v1/renew", handle).await
    }

    /// Completes under the handle's lease.
    pub async fn complete(&self, handle: &Handle) -> Result<(), PlaneError> {
        let body = CompleteBody { handle: handle.clone(), payload: Some(b"ok".to_vec()) };
        self.post("/sim/v1/complete", &body).await
    }

    /// Fails under the handle's lease.
    pub async fn fail(&self, handle: &Handle) -> Result<FailOutcome, PlaneError> {
        self.post("/sim/v1/fail", handle).await
    }

    /// Executions whose lease expired.
    pub async fn expired(&self) -> Result<Vec<ExecutionId>, PlaneError> {
        self.call(Method::GET, "/sim/v1/expired", None).await
    }
}
