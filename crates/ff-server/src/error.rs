//! Server errors and the HTTP status mapping of every error (spec 03 §8.5).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ff_core::EngineError;
use ff_core::error::{ContentionKind, StateKind, ValidationKind};
use ff_sdk::wire::ErrorBody;

/// Why the server could not boot or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// The backend failed while booting.
    #[error("backend: {0}")]
    Backend(#[from] EngineError),
    /// Socket failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// An HTTP error answer: status plus the JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with only a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody { error: message.into(), kind: None, retryable: None } }
    }

    /// `400` with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404` with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// With a `kind` and a `retryable` hint.
    pub fn classified(mut self, kind: &str, retryable: bool) -> Self {
        self.body.kind = Some(kind.to_owned());
        self.body.retryable = Some(retryable);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        engine_error(&e)
    }
}

/// Maps an engine error (context wrappers peeled) to its status and body.
pub fn engine_error(e: &EngineError) -> ApiError {
    let root = e.root();
    match root {
        EngineError::NotFound { entity } => ApiError::not_found(format!("not found: {entity}")),
        EngineError::Validation { kind, detail } => validation(*kind, detail),
        EngineError::Contention(kind) => contention(root, kind),
        EngineError::Conflict(kind) => {
            let code = root.code().unwrap_or("conflict");
            ApiError::new(StatusCode::CONFLICT, format!("{code}: {kind:?}")).classified(code, false)
        }
        EngineError::State(kind) => state(root, *kind),
        EngineError::ResourceExhausted { pool, max, .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many concurrent {pool} calls (server max: {max}); retry with backoff"),
        )
        .classified("resource_exhausted", true),
        EngineError::Unavailable { op } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("backend op unavailable: {op}"))
                .classified("unavailable", false)
        }
        EngineError::Transport { kind, .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("engine: {e}"))
                .classified(kind.as_str(), kind.is_retryable())
        }
        _ => {
            let mut error = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("engine: {e}"));
            error.body.retryable = Some(false);
            error
        }
    }
}

fn validation(kind: ValidationKind, detail: &str) -> ApiError {
    use ValidationKind as V;
    let code = match kind {
        V::Corruption | V::HandleFromOtherBackend => "validation_error",
        _ => EngineError::validation(kind, detail).code().unwrap_or("validation_error"),
    };
    let message = if detail.is_empty() { code.to_owned() } else { format!("{code}: {detail}") };
    ApiError::bad_request(message)
}

fn contention(root: &EngineError, kind: &ContentionKind) -> ApiError {
    let code = root.code().unwrap_or("contention");
    let message = format!("{code}: {kind:?}");
    match kind {
        ContentionKind::RateLimitExceeded | ContentionKind::ConcurrencyLimitExceeded => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).classified(code, true)
        }
        ContentionKind::RetryExhausted => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).classified(code, false)
        }
        _ => ApiError::new(StatusCode::CONFLICT, message).classified("contention", true),
    }
}

fn state(root: &EngineError, kind: StateKind) -> ApiError {
    use StateKind as S;
    let code = root.code().unwrap_or("state_conflict");
    let kind_text = match kind {
        S::ExecutionNotTerminal
        | S::MaxReplaysExhausted
        | S::ReplayNotAllowed
        | S::NotRunnable
        | S::Terminal
        | S::FlowAlreadyTerminal
        | S::BudgetExceeded
        | S::BudgetSoftExceeded => code,
        S::AlreadySatisfied
        | S::DuplicateSignal
        | S::OkAlreadyApplied
        | S::AttemptAlreadyTerminal
        | S::StreamAlreadyClosed
        | S::LeaseExpired
        | S::LeaseRevoked => "already_satisfied",
        _ => "state_conflict",
    };
    ApiError::new(StatusCode::CONFLICT, format!("{code}: {kind:?}")).classified(kind_text, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::error::{BackendErrorKind, ConflictKind};

    fn check(e: EngineError, status: u16, error: &str, kind: Option<&str>, retryable: Option<bool>) {
        let got = engine_error(&e);
        assert_eq!(got.status.as_u16(), status, "{e:?}");
        assert_eq!(got.body.error, error, "{e:?}");
        assert_eq!(got.body.kind.as_deref(), kind, "{e:?}");
        assert_eq!(got.body.retryable, retryable, "{e:?}");
    }

    #[test]
    fn status_mapping_follows_the_table() {
        check(EngineError::execution_not_found(), 404, "not found: execution", None, None);
        check(EngineError::validation(ValidationKind::InvalidToken, ""), 400, "invalid_token", None, None);
        check(EngineError::invalid_input("x: bad"), 400, "invalid_input: x: bad", None, None);
        check(
            EngineError::validation(ValidationKind::Corruption, "c"),
            400,
            "validation_error: c",
            None,
            None,
        );
        let lease = EngineError::Contention(ContentionKind::LeaseConflict);
        check(lease, 409, "lease_conflict: LeaseConflict", Some("contention"), Some(true));
        let rate = EngineError::Contention(ContentionKind::RateLimitExceeded);
        check(rate, 429, "rate_limit_exceeded: RateLimitExceeded", Some("rate_limit_exceeded"), Some(true));
        let cycle = EngineError::Conflict(ConflictKind::CycleDetected);
        check(cycle, 409, "cycle_detected: CycleDetected", Some("cycle_detected"), Some(false));
        let term = EngineError::State(StateKind::Terminal);
        check(term, 409, "terminal: Terminal", Some("terminal"), Some(false));
        let dup = EngineError::State(StateKind::DuplicateSignal);
        check(dup, 409, "duplicate_signal: DuplicateSignal", Some("already_satisfied"), Some(false));
        let other = EngineError::State(StateKind::StaleLease);
        check(other, 409, "stale_lease: StaleLease", Some("state_conflict"), Some(false));
        let unavailable = EngineError::Unavailable { op: "ping" };
        check(unavailable, 503, "backend op unavailable: ping", Some("unavailable"), Some(false));
        let transport = EngineError::transport("sqlite", BackendErrorKind::Timeout, "slow".into())
            .backend_context("read");
        assert_eq!(engine_error(&transport).status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(engine_error(&transport).body.kind.as_deref(), Some("timeout"));
        assert_eq!(engine_error(&transport).body.retryable, Some(true));
    }
}
