//! Attempt stream reads over HTTP (spec 03 §8.6, spec 02 §12.7–12.8).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use ff_core::AttemptIndex;
use ff_core::stream::{StreamCursor, TAIL_BLOCK_MS_MAX, TailVisibility};
use ff_sdk::wire::StreamPage;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::execution_id;

/// Largest `limit` of a stream read or tail.
pub const STREAM_LIMIT_MAX: u64 = 1000;
/// Default `limit` of a range read.
pub const READ_LIMIT_DEFAULT: u64 = 100;
/// Default `limit` of a tail.
pub const TAIL_LIMIT_DEFAULT: u64 = 50;
/// Stream reads and tails in flight at once (`FF_MAX_CONCURRENT_STREAM_OPS`).
pub const STREAM_OPS_CONCURRENT_MAX: u32 = 64;

type ApiResult<T> = Result<T, ApiError>;

const RETRY_HINT: &str = "retry with backoff";

/// Query of a range read.
#[derive(Debug, Deserialize)]
pub(crate) struct ReadQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<u64>,
}

/// Query of a tail.
#[derive(Debug, Deserialize)]
pub(crate) struct TailQuery {
    after: Option<String>,
    block_ms: Option<u64>,
    limit: Option<u64>,
}

fn cursor(field: &str, raw: Option<&str>, default: StreamCursor) -> ApiResult<StreamCursor> {
    match raw {
        None => Ok(default),
        Some(text) => text.parse().map_err(|e| ApiError::bad_request(format!("{field}: {e}"))),
    }
}

fn limit(raw: Option<u64>, default: u64) -> ApiResult<u64> {
    let value = raw.unwrap_or(default);
    if value == 0 || value > STREAM_LIMIT_MAX {
        return Err(ApiError::bad_request(format!("limit: must be in 1..={STREAM_LIMIT_MAX}")));
    }
    Ok(value)
}

fn stream_permit(state: &AppState) -> ApiResult<tokio::sync::SemaphorePermit<'_>> {
    state.stream_ops.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many concurrent stream_ops calls (server max: {STREAM_OPS_CONCURRENT_MAX}); {RETRY_HINT}"
            ),
        )
        .classified("resource_exhausted", true)
    })
}

/// `GET /v1/executions/{id}/attempts/{idx}/stream?from=&to=&limit=`.
pub(crate) async fn read_stream(
    State(state): State<AppState>,
    Path((raw, attempt_index)): Path<(String, AttemptIndex)>,
    Query(query): Query<ReadQuery>,
) -> ApiResult<Json<StreamPage>> {
    let id = execution_id(&state, &raw)?;
    let from = cursor("from", query.from.as_deref(), StreamCursor::Start)?;
    let to = cursor("to", query.to.as_deref(), StreamCursor::End)?;
    let count = limit(query.limit, READ_LIMIT_DEFAULT)?;
    let _permit = stream_permit(&state)?;
    let frames = state.backend.read_stream(&id, attempt_index, from, to, count).await?;
    Ok(Json(frames.into()))
}

/// `GET /v1/executions/{id}/attempts/{idx}/stream/tail?after=&block_ms=&limit=`.
pub(crate) async fn tail_stream(
    State(state): State<AppState>,
    Path((raw, attempt_index)): Path<(String, AttemptIndex)>,
    Query(query): Query<TailQuery>,
) -> ApiResult<Json<StreamPage>> {
    let id = execution_id(&state, &raw)?;
    let after = cursor("after", query.after.as_deref(), StreamCursor::from_beginning())?;
    if !after.is_concrete() {
        return Err(ApiError::bad_request("after: must be a concrete <ms>[-<seq>] id"));
    }
    let block_ms = query.block_ms.unwrap_or(0);
    if block_ms > TAIL_BLOCK_MS_MAX {
        return Err(ApiError::bad_request(format!("block_ms: must be at most {TAIL_BLOCK_MS_MAX}")));
    }
    let count = limit(query.limit, TAIL_LIMIT_DEFAULT)?;
    let _permit = stream_permit(&state)?;
    let frames =
        state.backend.tail_stream(&id, attempt_index, after, block_ms, count, TailVisibility::All).await?;
    Ok(Json(frames.into()))
}
