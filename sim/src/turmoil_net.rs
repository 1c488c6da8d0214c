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
use ff_core::admission::{ReportUsageArgs, ReportUsageResult};
use ff_core::contracts::{
    ClaimExecutionArgs, ClaimResumedExecutionArgs, ClaimedExecution, CompleteExecutionArgs, FailOutcome,
    FailureClass, FailureReason, LeaseRenewal, ListExpiredLeasesArgs, ReclaimExecutionArgs,
    ReclaimExecutionOutcome,
};
use ff_core::handle::HandlePayload;
use ff_core::suspension::{BoundWaitpoint, SuspendArgs, SuspendOutcome};
use ff_core::{CancelSource, EngineBackend, EngineError, ExecutionId, Handle, WorkerId};
use ff_sdk::{BoxedIo, ConnectFuture, Connector, FlowFabricAdminClient};
use hyper::Method;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::history::{LeaseGrant, Release};

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
    /// A claim, reclaim or resumed claim committed for this worker.
    fn leased(&self, claim: &ClaimedExecution, worker: &WorkerId, grant: LeaseGrant);
    /// A suspend committed: the lease is released and the execution waits on `waitpoint`.
    fn suspended(&self, lease: &HandlePayload, waitpoint: &BoundWaitpoint);
    /// A renewal committed.
    fn renewed(&self, lease: &HandlePayload, renewal: &LeaseRenewal);
    /// A complete or fail committed under the lease.
    fn released(&self, lease: &HandlePayload, how: Release);
    /// A renew, complete or fail under the lease (when its handle decoded) was refused.
    fn refused(&self, op: &'static str, lease: Option<&HandlePayload>, error: &EngineError);
}

#[derive(Clone)]
struct Plane {
    backend: Arc<dyn EngineBackend>,
    observer: Arc<dyn PlaneObserver>,
    partitions: u16,
    unfenced: bool,
}

/// `POST /sim/v1/suspend` body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SuspendBody {
    pub handle: Handle,
    pub args: SuspendArgs,
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
        .route("/sim/v1/claim-resumed", post(claim_resumed))
        .route("/sim/v1/suspend", post(suspend))
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
    let worker = args.worker_id.clone();
    let result = p.backend.claim_execution(args).await;
    if let Ok(c) = &result {
        p.observer.leased(c, &worker, LeaseGrant::Claim);
    }
    reply(result)
}

async fn reclaim(State(p): State<Plane>, Json(args): Json<ReclaimExecutionArgs>) -> Response {
    let worker = args.worker_id.clone();
    let result = p.backend.reclaim_execution(args).await;
    if let Ok(ReclaimExecutionOutcome::Claimed(c)) = &result {
        p.observer.leased(c, &worker, LeaseGrant::Reclaim);
    }
    reply(result)
}

async fn claim_resumed(State(p): State<Plane>, Json(args): Json<ClaimResumedExecutionArgs>) -> Response {
    let worker = args.worker_id.clone();
    let result = p.backend.claim_resumed_execution(args).await;
    if let Ok(c) = &result {
        p.observer.leased(c, &worker, LeaseGrant::Resume);
    }
    reply(result)
}

async fn suspend(State(p): State<Plane>, Json(body): Json<SuspendBody>) -> Response {
    let lease = p.lease_of(&body.handle);
    let result = p.backend.suspend(&body.handle, body.args).await;
    match (&result, &lease) {
        (Ok(SuspendOutcome::Suspended { details, .. }), Some(lease)) => {
            p.observer.suspended(lease, &details.primary);
        }
        (Ok(_), _) => {}
        (Err(e), lease) => p.observer.refused("suspend", lease.as_ref(), e),
    }
    reply(result)
}

impl Plane {
    fn lease_of(&self, handle: &Handle) -> Option<HandlePayload> {
        handle.decode_for(self.backend.backend_tag()).ok()
    }

    /// Tells the observer how a lease-holder's complete or fail ended.
    fn observe<T>(&self, how: Release, lease: Option<&HandlePayload>, result: &Result<T, EngineError>) {
        let op = if how == Release::Fail { "fail" } else { "complete" };
        match (result, lease) {
            (Ok(_), Some(lease)) => self.observer.released(lease, how),
            (Ok(_), None) => {}
            (Err(e), lease) => self.observer.refused(op, lease, e),
        }
    }
}

async fn renew(State(p): State<Plane>, Json(handle): Json<Handle>) -> Response {
    let lease = p.lease_of(&handle);
    let result = p.backend.renew(&handle).await;
    match (&result, &lease) {
        (Ok(renewal), Some(lease)) => p.observer.renewed(lease, renewal),
        (Ok(_), None) => {}
        (Err(e), lease) => p.observer.refused("renew", lease.as_ref(), e),
    }
    reply(result)
}

async fn complete(State(p): State<Plane>, Json(body): Json<CompleteBody>) -> Response {
    let lease = p.lease_of(&body.handle);
    if !p.unfenced {
        let result = p.backend.complete(&body.handle, body.payload).await;
        p.observe(Release::Complete, lease.as_ref(), &result);
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
    p.observe(Release::Complete, lease.as_ref(), &result);
    reply(result)
}

async fn fail(State(p): State<Plane>, Json(handle): Json<Handle>) -> Response {
    let lease = p.lease_of(&handle);
    let reason = FailureReason::new("simulated failure");
    let result = p.backend.fail(&handle, reason, FailureClass::Transient).await;
    p.observe(Release::Fail, lease.as_ref(), &result);
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

    /// Claims a resumed execution (the same attempt under a new lease).
    pub async fn claim_resumed(
        &self,
        args: &ClaimResumedExecutionArgs,
    ) -> Result<ClaimedExecution, PlaneError> {
        self.post("/sim/v1/claim-resumed", args).await
    }

    /// Suspends under the handle's lease.
    pub async fn suspend(&self, handle: &Handle, args: SuspendArgs) -> Result<SuspendOutcome, PlaneError> {
        self.post("/sim/v1/suspend", &SuspendBody { handle: handle.clone(), args }).await
    }

    /// Reports usage to a budget through the server's REST route (`POST /v1/budgets/{id}/usage`).
    pub async fn report_usage(&self, args: &ReportUsageArgs) -> Result<ReportUsageResult, PlaneError> {
        let dimensions: std::collections::BTreeMap<&str, u64> =
            args.dimensions.iter().map(|(d, v)| (d.as_str(), *v)).collect();
        let body = serde_json::json!({ "dimensions": dimensions, "dedup_key": args.dedup_key });
        self.post(&format!("/v1/budgets/{}/usage", args.budget_id), &body).await
    }

    /// Executions whose lease expired.
    pub async fn expired(&self) -> Result<Vec<ExecutionId>, PlaneError> {
        self.call(Method::GET, "/sim/v1/expired", None).await
    }
}
