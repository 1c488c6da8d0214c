//! Execution and worker routes (spec 03 §8.6).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use ff_core::contracts::{
    CancelExecutionArgs, ChangePriorityArgs, CreateExecutionArgs, CreateExecutionOutcome,
    IssueReclaimGrantArgs, IssueReclaimGrantOutcome, RevokeLeaseArgs,
};
use ff_core::suspension::DeliverSignalArgs;
use ff_core::{
    CancelSource, ExecutionId, LaneId, LeaseId, PublicState, WaitpointId, WorkerId, WorkerInstanceId,
};
use ff_sdk::wire::{
    CancelExecutionRequest, CancelExecutionResponse, ChangePriorityRequest, ChangePriorityResponse,
    ClaimForWorkerBody, ClaimForWorkerResponse, ExecutionInfo, HealthResponse, IssueReclaimGrantRequest,
    IssueReclaimGrantResponse, ListExecutionsResponse, WaitpointTokenResponse,
};
use serde::Deserialize;

use crate::app::{ApiJson, AppState};
use crate::error::ApiError;

/// Default page size of `GET /v1/executions`.
pub const LIST_LIMIT_DEFAULT: usize = 50;
/// Largest page size of `GET /v1/executions`.
pub const LIST_LIMIT_MAX: usize = 1000;
/// Grant TTL ceiling of the claim and reclaim routes, in ms.
pub const GRANT_TTL_MS_MAX: u64 = 60_000;
/// Open waitpoints read when checking a token's owner.
const WAITPOINTS_PER_EXECUTION_MAX: usize = 1000;

type ApiResult<T> = Result<T, ApiError>;

/// Parses an execution id from a path or body and checks its partition exists.
pub(crate) fn execution_id(state: &AppState, raw: &str) -> ApiResult<ExecutionId> {
    let id =
        ExecutionId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid execution_id: {e}")))?;
    let partitions = state.backend.partition_config().num_flow_partitions;
    if id.partition_index() >= partitions {
        return Err(ApiError::bad_request(format!(
            "invalid execution_id: partition {} is not below {partitions}",
            id.partition_index()
        )));
    }
    Ok(id)
}

/// Checks an identifier: non-empty, ≤ 256 bytes, no whitespace or control characters.
pub(crate) fn identifier(field: &str, value: &str) -> ApiResult<()> {
    ff_sdk::check_identifier("http", "identifier", value).map_err(|_| {
        ApiError::bad_request(format!("{field}: must be 1..=256 bytes without whitespace or control"))
    })
}

fn lane(value: &str) -> ApiResult<LaneId> {
    LaneId::try_new(value).map_err(|e| ApiError::bad_request(format!("lane_id: {e}")))
}

fn grant_ttl(ttl_ms: u64) -> ApiResult<()> {
    if ttl_ms == 0 || ttl_ms > GRANT_TTL_MS_MAX {
        return Err(ApiError::bad_request(format!("grant_ttl_ms: must be in 1..={GRANT_TTL_MS_MAX}")));
    }
    Ok(())
}

/// `GET /healthz`: the backend answers its clock.
pub(crate) async fn healthz(State(state): State<AppState>) -> ApiResult<Json<HealthResponse>> {
    state.backend.server_time_ms().await?;
    Ok(Json(HealthResponse { status: "ok".into() }))
}

/// Query of `GET /v1/executions`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    partition: u16,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/executions?partition=&cursor=&limit=`.
pub(crate) async fn list_executions(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<ListExecutionsResponse>> {
    let cursor = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(raw) => {
            Some(ExecutionId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid cursor: {e}")))?)
        }
        None => None,
    };
    let limit = query.limit.unwrap_or(LIST_LIMIT_DEFAULT).clamp(1, LIST_LIMIT_MAX);
    let ids = state.backend.list_executions(query.partition, cursor, limit).await?;
    let next_cursor = if ids.len() == limit { ids.last().map(ToString::to_string) } else { None };
    Ok(Json(ListExecutionsResponse {
        executions: ids.iter().map(ToString::to_string).collect(),
        next_cursor,
    }))
}

/// `POST /v1/executions`: 201 `Created`, 200 `Duplicate`.
pub(crate) async fn create_execution(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<CreateExecutionArgs>,
) -> ApiResult<Response> {
    execution_id(&state, args.execution_id.as_str())?;
    let outcome = state.backend.create_execution(args).await?;
    let status = match outcome {
        CreateExecutionOutcome::Created { .. } => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(outcome)).into_response())
}

/// `GET /v1/executions/{id}`.
pub(crate) async fn get_execution(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Json<ExecutionInfo>> {
    let id = execution_id(&state, &raw)?;
    match state.backend.describe_execution(&id).await? {
        Some(snapshot) => Ok(Json(snapshot.into())),
        None => Err(ApiError::not_found(format!("execution not found: {id}"))),
    }
}

/// `GET /v1/executions/{id}/state`.
pub(crate) async fn get_state(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Json<PublicState>> {
    let id = execution_id(&state, &raw)?;
    match state.backend.read_execution_state(&id).await? {
        Some(public_state) => Ok(Json(public_state)),
        None => Err(ApiError::not_found(format!("execution not found: {id}"))),
    }
}

/// `GET /v1/executions/{id}/pending-waitpoints`.
pub(crate) async fn pending_waitpoints(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let id = execution_id(&state, &raw)?;
    let (waitpoints, _) =
        state.backend.list_pending_waitpoints(&id, None, WAITPOINTS_PER_EXECUTION_MAX).await?;
    Ok(Json(waitpoints).into_response())
}

/// `GET /v1/executions/{id}/waitpoints/{waitpoint_id}/token` (never cached).
pub(crate) async fn waitpoint_token(
    State(state): State<AppState>,
    Path((raw, raw_waitpoint)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = execution_id(&state, &raw)?;
    let waitpoint_id = WaitpointId::parse(&raw_waitpoint)
        .map_err(|e| ApiError::bad_request(format!("invalid waitpoint_id: {e}")))?;
    let not_found = || {
        let error = ApiError::not_found("waitpoint token not found (consumed, expired, or unknown id)");
        ([(CACHE_CONTROL, "no-store")], error).into_response()
    };
    // Only an open waitpoint of this execution hands out its token.
    let (open, _) = state.backend.list_pending_waitpoints(&id, None, WAITPOINTS_PER_EXECUTION_MAX).await?;
    if !open.iter().any(|w| w.waitpoint_id == waitpoint_id) {
        return Ok(not_found());
    }
    Ok(match state.backend.read_waitpoint_token(&waitpoint_id).await? {
        Some(token) => {
            ([(CACHE_CONTROL, "no-store")], Json(WaitpointTokenResponse { token })).into_response()
        }
        None => not_found(),
    })
}

/// `GET /v1/executions/{id}/result`: raw bytes.
pub(crate) async fn get_result(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let id = execution_id(&state, &raw)?;
    match state.backend.get_execution_result(&id).await? {
        Some(bytes) => Ok(([(CONTENT_TYPE, "application/octet-stream")], bytes).into_response()),
        None => Err(ApiError::not_found(format!("execution result not found: {id}"))),
    }
}

/// `POST /v1/executions/{id}/cancel`.
pub(crate) async fn cancel_execution(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<CancelExecutionRequest>,
) -> ApiResult<Json<CancelExecutionResponse>> {
    let id = execution_id(&state, &raw)?;
    if body.execution_id != raw && body.execution_id != id.as_str() {
        return Err(ApiError::bad_request("path execution_id does not match body execution_id"));
    }
    let lease_id = match body.lease_id.as_deref() {
        Some(raw) => {
            Some(LeaseId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid lease_id: {e}")))?)
        }
        None => None,
    };
    let args = CancelExecutionArgs {
        execution_id: id.clone(),
        reason: body.reason,
        source: body.source.as_deref().map_or(CancelSource::OperatorOverride, CancelSource::parse),
        lease_id,
        lease_epoch: body.lease_epoch,
    };
    state.backend.cancel_execution(args).await?;
    Ok(Json(CancelExecutionResponse::Cancelled {
        execution_id: id.to_string(),
        public_state: PublicState::Cancelled,
    }))
}

/// `POST /v1/executions/{id}/signal`: the waitpoint token authenticates the signal.
pub(crate) async fn deliver_signal(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(args): ApiJson<DeliverSignalArgs>,
) -> ApiResult<Response> {
    let id = execution_id(&state, &raw)?;
    if args.execution_id != id {
        return Err(ApiError::bad_request("path execution_id does not match body execution_id"));
    }
    let outcome = state.backend.deliver_signal(args).await?;
    Ok(Json(outcome).into_response())
}

/// `PUT /v1/executions/{id}/priority`.
pub(crate) async fn change_priority(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ChangePriorityRequest>,
) -> ApiResult<Json<ChangePriorityResponse>> {
    let id = execution_id(&state, &raw)?;
    let args = ChangePriorityArgs { execution_id: id.clone(), new_priority: body.new_priority };
    state.backend.change_priority(args).await?;
    Ok(Json(ChangePriorityResponse::Changed { execution_id: id.to_string() }))
}

/// `POST /v1/executions/{id}/replay`.
pub(crate) async fn replay_execution(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let id = execution_id(&state, &raw)?;
    Ok(Json(state.backend.replay_execution(&id).await?).into_response())
}

/// `POST /v1/executions/{id}/revoke-lease`.
pub(crate) async fn revoke_lease(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let id = execution_id(&state, &raw)?;
    let args = RevokeLeaseArgs { execution_id: id, expected_lease_id: None, reason: "operator".into() };
    Ok(Json(state.backend.revoke_lease(args).await?).into_response())
}

/// `POST /v1/executions/{id}/reclaim`: a reclaim grant after a lost lease.
pub(crate) async fn issue_reclaim_grant(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<IssueReclaimGrantRequest>,
) -> ApiResult<Response> {
    let id = execution_id(&state, &raw)?;
    identifier("worker_id", &body.worker_id)?;
    identifier("worker_instance_id", &body.worker_instance_id)?;
    let lane_id = lane(&body.lane_id)?;
    grant_ttl(body.grant_ttl_ms)?;
    let args = IssueReclaimGrantArgs {
        execution_id: id.clone(),
        worker_id: WorkerId::new(body.worker_id),
        worker_instance_id: WorkerInstanceId::new(body.worker_instance_id),
        lane_id,
        capability_hash: body.capability_hash.unwrap_or_default(),
        grant_ttl_ms: body.grant_ttl_ms,
        route_snapshot_json: body.route_snapshot_json.unwrap_or_default(),
        admission_summary: body.admission_summary.unwrap_or_default(),
        worker_capabilities: ff_core::contracts::CapabilitySet::new(body.worker_capabilities),
    };
    let response = match state.backend.issue_reclaim_grant(args).await? {
        IssueReclaimGrantOutcome::Granted(grant) => IssueReclaimGrantResponse::from(grant),
        IssueReclaimGrantOutcome::NotReclaimable { execution_id, detail } => {
            IssueReclaimGrantResponse::NotReclaimable { execution_id: execution_id.to_string(), detail }
        }
        other => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unknown outcome: {other:?}"),
            )
            .classified("unknown_outcome", false));
        }
    };
    Ok(Json(response).into_response())
}

/// `POST /v1/workers/{worker_id}/claim`: 200 with a claim grant, 204 when there is no work.
pub(crate) async fn claim_for_worker(
    State(state): State<AppState>,
    Path(worker_id): Path<String>,
    ApiJson(body): ApiJson<ClaimForWorkerBody>,
) -> ApiResult<Response> {
    identifier("worker_id", &worker_id)?;
    identifier("worker_instance_id", &body.worker_instance_id)?;
    let lane_id = lane(&body.lane_id)?;
    grant_ttl(body.grant_ttl_ms)?;
    let grant = state
        .scheduler
        .claim_for_worker(
            &lane_id,
            &WorkerId::new(worker_id),
            &WorkerInstanceId::new(body.worker_instance_id),
            &body.capabilities,
            body.grant_ttl_ms,
        )
        .await?;
    Ok(match grant {
        Some(grant) => Json(ClaimForWorkerResponse::from(grant)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}
