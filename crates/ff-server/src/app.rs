//! The router: auth, per-route body limits and the JSON extractor (spec 03 §8.3–8.4).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ff_core::EngineBackend;
use ff_scheduler::Scheduler;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::{admin_routes, routes, streams};

/// Body limit of `POST /v1/executions`, in bytes.
pub const BODY_BYTES_MAX_LARGE: usize = 1024 * 1024;
/// Body limit of `POST /v1/executions/{id}/signal`, in bytes.
pub const BODY_BYTES_MAX_MEDIUM: usize = 256 * 1024;
/// Body limit of every other POST/PUT route, in bytes.
pub const BODY_BYTES_MAX_CONTROL: usize = 64 * 1024;

/// What every handler sees.
#[derive(Clone)]
pub(crate) struct AppState {
    pub backend: Arc<dyn EngineBackend>,
    pub scheduler: Arc<Scheduler>,
    pub api_token: Option<Arc<str>>,
    pub hmac_grace_ms: u64,
    /// One rotation at a time (`admin_rotate`, max 1).
    pub rotation: Arc<tokio::sync::Semaphore>,
    /// Stream reads and tails in flight.
    pub stream_ops: Arc<tokio::sync::Semaphore>,
}

/// The body limit in force for a request (set by the limit middleware).
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// Builds the full router: `/healthz` outside auth, everything else behind it.
pub(crate) fn router(state: AppState) -> Router {
    let large =
        Router::new().route("/v1/executions", post(routes::create_execution).get(routes::list_executions));
    let medium = Router::new().route("/v1/executions/{id}/signal", post(routes::deliver_signal));
    let control = Router::new()
        .route("/v1/executions/{id}", get(routes::get_execution))
        .route("/v1/executions/{id}/state", get(routes::get_state))
        .route("/v1/executions/{id}/pending-waitpoints", get(routes::pending_waitpoints))
        .route("/v1/executions/{id}/waitpoints/{waitpoint_id}/token", get(routes::waitpoint_token))
        .route("/v1/executions/{id}/result", get(routes::get_result))
        .route("/v1/executions/{id}/attempts/{idx}/stream", get(streams::read_stream))
        .route("/v1/executions/{id}/attempts/{idx}/stream/tail", get(streams::tail_stream))
        .route("/v1/executions/{id}/cancel", post(routes::cancel_execution))
        .route("/v1/executions/{id}/priority", put(routes::change_priority))
        .route("/v1/executions/{id}/replay", post(routes::replay_execution))
        .route("/v1/executions/{id}/revoke-lease", post(routes::revoke_lease))
        .route("/v1/executions/{id}/reclaim", post(routes::issue_reclaim_grant))
        .route("/v1/workers/{worker_id}/claim", post(routes::claim_for_worker))
        .route("/v1/flows", post(admin_routes::create_flow))
        .route("/v1/flows/{id}/members", post(admin_routes::add_member))
        .route("/v1/flows/{id}/cancel", post(admin_routes::cancel_flow))
        .route("/v1/flows/{id}/edges", post(admin_routes::stage_edge))
        .route("/v1/flows/{id}/edges/apply", post(admin_routes::apply_edge))
        .route("/v1/budgets", post(admin_routes::create_budget))
        .route("/v1/budgets/{id}", get(admin_routes::get_budget))
        .route("/v1/budgets/{id}/usage", post(admin_routes::report_usage))
        .route("/v1/budgets/{id}/reset", post(admin_routes::reset_budget))
        .route("/v1/quotas", post(admin_routes::create_quota))
        .route("/v1/admin/rotate-waitpoint-secret", post(admin_routes::rotate_waitpoint_secret));
    let authed = limited(large, BODY_BYTES_MAX_LARGE)
        .merge(limited(medium, BODY_BYTES_MAX_MEDIUM))
        .merge(limited(control, BODY_BYTES_MAX_CONTROL))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new().route("/healthz", get(routes::healthz)).merge(authed).with_state(state)
}

/// Applies a body limit to every route of `router`.
fn limited(router: Router<AppState>, limit: usize) -> Router<AppState> {
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req: Request, next: Next| enforce_body_limit(limit, req, next)))
}

/// Rejects a declared `Content-Length` over the limit before the handler runs.
async fn enforce_body_limit(limit: usize, mut req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
        return payload_too_large(limit, route);
    }
    req.extensions_mut().insert(BodyLimit(limit));
    next.run(req).await
}

fn payload_too_large(limit: usize, route: Option<String>) -> Response {
    let body = serde_json::json!({
        "error": "payload_too_large",
        "limit_bytes": limit,
        "route": route.unwrap_or_default(),
    });
    (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
}

/// Bearer auth with a constant-time comparison (skipped when no token is configured).
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = state.api_token.as_deref() else {
        return next.run(req).await;
    };
    let presented = req.headers().get(AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let accepted = presented.is_some_and(|p| p.len() == token.len() && bool::from(p.ct_eq(token.as_bytes())));
    if !accepted {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid Authorization header")
            .into_response();
    }
    next.run(req).await
}

/// `Json<T>` whose rejections use the API's error body.
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(BODY_BYTES_MAX_CONTROL, |l| l.0);
        let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    return Err(payload_too_large(limit, route));
                }
                let reason = status.canonical_reason().unwrap_or("bad request");
                Err(ApiError::new(status, format!("invalid JSON: {reason}")).into_response())
            }
        }
    }
}
