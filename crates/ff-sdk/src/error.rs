//! `SdkError`: one error type for the worker and the admin client (spec 03 §9.7).

use ff_core::EngineError;
use ff_core::error::ErrorClass;

/// A cause carried by an HTTP transport error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the SDK can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// A caller or configuration problem; retrying the same call cannot help.
    #[error("config: {context}{}: {message}", field_suffix(.field))]
    Config {
        /// Where the check ran (`worker_config`, `admin_client`, …).
        context: &'static str,
        /// The offending field, if one.
        field: Option<&'static str>,
        /// What is wrong.
        message: String,
    },
    /// A typed engine error from the backend.
    #[error("engine: {0}")]
    Engine(Box<EngineError>),
    /// The admin client's HTTP exchange failed before a response arrived.
    #[error("http: {context}: {source}")]
    Http {
        /// Which step failed (`connect`, `handshake`, `send`, `read body`, `timeout`).
        context: String,
        /// Whether a retry can help (connect failures and timeouts).
        retryable: bool,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The server answered with a non-2xx status (or an unusable 2xx body).
    #[error("api: HTTP {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body's `kind`, if any.
        code: Option<String>,
        /// The error body's `error`, or the raw body.
        message: String,
        /// The server's retry hint, if any.
        retryable: Option<bool>,
        /// The raw response body.
        raw_body: String,
    },
    /// Every concurrency permit of the worker is taken.
    #[error("worker at capacity: every concurrency permit is taken")]
    WorkerAtCapacity,
}

fn field_suffix(field: &Option<&'static str>) -> String {
    field.map(|f| format!(".{f}")).unwrap_or_default()
}

impl From<EngineError> for SdkError {
    fn from(e: EngineError) -> Self {
        Self::Engine(Box::new(e))
    }
}

impl SdkError {
    /// A `Config` error.
    pub fn config(context: &'static str, field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self::Config { context, field, message: message.into() }
    }

    /// The engine error inside, if this is one.
    pub fn engine(&self) -> Option<&EngineError> {
        match self {
            Self::Engine(e) => Some(e.root()),
            _ => None,
        }
    }

    /// Whether retrying the same call can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config { .. } => false,
            Self::Engine(e) => e.class() == ErrorClass::Retryable,
            Self::Http { retryable, .. } => *retryable,
            Self::Api { status, retryable, .. } => {
                retryable.unwrap_or(matches!(status, 429 | 502 | 503 | 504))
            }
            Self::WorkerAtCapacity => true,
        }
    }
}
