//! Flow, budget, quota and HMAC-rotation routes (spec 03 §8.6).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ff_core::admission::ReportUsageArgs;
use ff_core::admission::{CreateBudgetArgs, CreateBudgetOutcome, CreateQuotaOutcome, CreateQuotaPolicyArgs};
use ff_core::flow::{AddToFlowOutcome, CancelFlowPolicy, CreateFlowArgs, CreateFlowOutcome, StageEdgeArgs};
use ff_core::{BudgetId, EdgeId, FlowId};
use ff_sdk::is_even_hex;
use ff_sdk::wire::{RotateWaitpointSecretRequest, RotateWaitpointSecretResponse};
use serde::Deserialize;
use serde_json::json;

use crate::app::{ApiJson, AppState};
use crate::error::ApiError;
use crate::routes::execution_id;

/// Longest a rotation may take before the route answers 504, in seconds.
pub const ROTATION_TIMEOUT_S: u64 = 120;

type ApiResult<T> = Result<T, ApiError>;

fn flow_id(raw: &str) -> ApiResult<FlowId> {
    FlowId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid flow_id: {e}")))
}

fn budget_id(raw: &str) -> ApiResult<BudgetId> {
    BudgetId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid budget_id: {e}")))
}

fn path_matches(path: &FlowId, body: &FlowId) -> ApiResult<()> {
    if path != body {
        return Err(ApiError::bad_request("path flow_id does not match body flow_id"));
    }
    Ok(())
}

/// `POST /v1/flows`: 201 `Created`, 200 `AlreadySatisfied`.
pub(crate) async fn create_flow(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<CreateFlowArgs>,
) -> ApiResult<Response> {
    let outcome = state.backend.create_flow(args).await?;
    let status = if matches!(outcome, CreateFlowOutcome::Created { .. }) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)).into_response())
}

/// Body of `POST /v1/flows/{id}/members`.
#[derive(Debug, Deserialize)]
pub(crate) struct AddMemberBody {
    flow_id: String,
    execution_id: String,
}

/// `POST /v1/flows/{id}/members`: 201 `Added`, 200 `AlreadyMember`.
pub(crate) async fn add_member(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<AddMemberBody>,
) -> ApiResult<Response> {
    let flow = flow_id(&raw)?;
    path_matches(&flow, &flow_id(&body.flow_id)?)?;
    let member = execution_id(&state, &body.execution_id)?;
    let outcome = state.backend.add_execution_to_flow(&flow, &member).await?;
    let status =
        if matches!(outcome, AddToFlowOutcome::Added { .. }) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(outcome)).into_response())
}

/// Body of `POST /v1/flows/{id}/cancel`.
#[derive(Debug, Deserialize)]
pub(crate) struct CancelFlowBody {
    flow_id: String,
    #[serde(default)]
    reason: String,
    cancellation_policy: CancelFlowPolicy,
}

/// `POST /v1/flows/{id}/cancel`: cancels the flow and, under `cancel_all`, its members.
pub(crate) async fn cancel_flow(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<CancelFlowBody>,
) -> ApiResult<Response> {
    let flow = flow_id(&raw)?;
    path_matches(&flow, &flow_id(&body.flow_id)?)?;
    let result = state.backend.cancel_flow(&flow, &body.reason, body.cancellation_policy).await?;
    Ok(Json(result).into_response())
}

/// `POST /v1/flows/{id}/edges`: 201 `Staged`.
pub(crate) async fn stage_edge(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(args): ApiJson<StageEdgeArgs>,
) -> ApiResult<Response> {
    path_matches(&flow_id(&raw)?, &args.flow_id)?;
    let (edge_id, new_graph_revision) = state.backend.stage_dependency_edge(args).await?;
    let body = json!({"Staged": {"edge_id": edge_id, "new_graph_revision": new_graph_revision}});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Body of `POST /v1/flows/{id}/edges/apply`.
#[derive(Debug, Deserialize)]
pub(crate) struct ApplyEdgeBody {
    flow_id: String,
    edge_id: String,
}

/// `POST /v1/flows/{id}/edges/apply`: `Applied` or `"AlreadyApplied"`.
pub(crate) async fn apply_edge(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ApplyEdgeBody>,
) -> ApiResult<Response> {
    let flow = flow_id(&raw)?;
    path_matches(&flow, &flow_id(&body.flow_id)?)?;
    let edge =
        EdgeId::parse(&body.edge_id).map_err(|e| ApiError::bad_request(format!("invalid edge_id: {e}")))?;
    let body = match state.backend.apply_dependency_to_child(&flow, &edge).await? {
        Some(unsatisfied_count) => json!({"Applied": {"unsatisfied_count": unsatisfied_count}}),
        None => json!("AlreadyApplied"),
    };
    Ok(Json(body).into_response())
}

/// `POST /v1/budgets`: 201 `Created`, 200 `AlreadySatisfied`.
pub(crate) async fn create_budget(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<CreateBudgetArgs>,
) -> ApiResult<Response> {
    let outcome = state.backend.create_budget(args).await?;
    let status = if matches!(outcome, CreateBudgetOutcome::Created { .. }) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)).into_response())
}

/// `GET /v1/budgets/{id}`.
pub(crate) async fn get_budget(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let id = budget_id(&raw)?;
    Ok(Json(state.backend.get_budget_status(&id).await?).into_response())
}

/// Body of `POST /v1/budgets/{id}/usage` (`now` is accepted and ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct UsageBody {
    dimensions: BTreeMap<String, u64>,
    #[serde(default)]
    dedup_key: Option<String>,
}

/// `POST /v1/budgets/{id}/usage`: a hard breach is a 200 answer, not an error.
pub(crate) async fn report_usage(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<UsageBody>,
) -> ApiResult<Response> {
    let args = ReportUsageArgs {
        budget_id: budget_id(&raw)?,
        dimensions: body.dimensions.into_iter().collect(),
        dedup_key: body.dedup_key.filter(|k| !k.is_empty()),
    };
    Ok(Json(state.backend.report_usage_and_check(args).await?).into_response())
}

/// `POST /v1/budgets/{id}/reset`.
pub(crate) async fn reset_budget(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let id = budget_id(&raw)?;
    let next_reset_at = state.backend.reset_budget(&id).await?;
    Ok(Json(json!({"Reset": {"next_reset_at": next_reset_at}})).into_response())
}

/// `POST /v1/quotas`: 201 `Created`, 200 `AlreadySatisfied`.
pub(crate) async fn create_quota(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<CreateQuotaPolicyArgs>,
) -> ApiResult<Response> {
    let outcome = state.backend.create_quota_policy(args).await?;
    let status = if matches!(outcome, CreateQuotaOutcome::Created { .. }) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)).into_response())
}

/// `POST /v1/admin/rotate-waitpoint-secret`: one rotation at a time; partial failure is a 200.
pub(crate) async fn rotate_waitpoint_secret(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RotateWaitpointSecretRequest>,
) -> ApiResult<Json<RotateWaitpointSecretResponse>> {
    if body.new_kid.is_empty() || body.new_kid.contains(':') {
        return Err(ApiError::bad_request("new_kid: must be non-empty and contain no ':'"));
    }
    if !is_even_hex(&body.new_secret_hex) {
        return Err(ApiError::bad_request("new_secret_hex: must be non-empty, even-length hex"));
    }
    let Ok(_permit) = state.rotation.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many concurrent admin_rotate calls (server max: 1); retry with backoff",
        )
        .classified("concurrency_limit_exceeded", true));
    };
    let rotation = state.backend.rotate_waitpoint_hmac_secret_all(
        &body.new_kid,
        &body.new_secret_hex,
        state.hmac_grace_ms,
    );
    let outcomes = match tokio::time::timeout(Duration::from_secs(ROTATION_TIMEOUT_S), rotation).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "rotation timed out; retry is safe")
                .classified("timeout", true));
        }
    };
    let mut rotated: u16 = 0;
    let mut failed = Vec::new();
    let mut first_error = None;
    for (partition, outcome) in outcomes {
        match outcome {
            Ok(_) => rotated = rotated.saturating_add(1),
            Err(e) => {
                tracing::warn!(partition, error = %e, "waitpoint secret rotation failed on a partition");
                failed.push(partition);
                first_error.get_or_insert_with(|| crate::error::engine_error(&e).body.error);
            }
        }
    }
    if rotated == 0 {
        let cause = first_error.unwrap_or_else(|| "no keystore answered".into());
        return Err(ApiError::bad_request(format!("rotation failed on every partition: {cause}")));
    }
    Ok(Json(RotateWaitpointSecretResponse { rotated, failed, new_kid: body.new_kid }))
}
