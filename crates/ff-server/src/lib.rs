//! FlowFabric REST server over any [`EngineBackend`] (spec 03 §8).
//!
//! [`serve`] opens the configured backend, seeds the waitpoint HMAC secret,
//! starts the background scanners and serves the API on a bound listener;
//! [`serve_with_backend`] does the same over a backend the caller built (tests
//! hand in one on a simulated clock). [`ServerHandle::shutdown`] stops
//! accepting, drains in-flight requests and stops the scanners.
#![warn(missing_docs)]

mod admin_routes;
mod app;
mod config;
mod error;
mod routes;
mod streams;

use std::net::SocketAddr;
use std::sync::Arc;

use ff_core::EngineBackend;
use ff_core::hmac_token::{HMAC_INITIAL_KID, SeedOutcome};
use ff_scheduler::{ScannerRuntime, Scheduler};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use app::{BODY_BYTES_MAX_CONTROL, BODY_BYTES_MAX_LARGE, BODY_BYTES_MAX_MEDIUM};
pub use config::{LISTEN_ADDR_DEFAULT, ServerConfig};
pub use error::{ApiError, ServerError, engine_error};
pub use routes::{GRANT_TTL_MS_MAX, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
pub use streams::{READ_LIMIT_DEFAULT, STREAM_LIMIT_MAX, STREAM_OPS_CONCURRENT_MAX, TAIL_LIMIT_DEFAULT};

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    backend: Arc<dyn EngineBackend>,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<std::io::Result<()>>,
    scanners: Option<ScannerRuntime>,
    shutdown_grace: std::time::Duration,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<local_addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The backend the server runs on.
    pub fn backend(&self) -> &Arc<dyn EngineBackend> {
        &self.backend
    }

    /// Stops accepting, waits for in-flight requests and then for the scanners (each bounded
    /// by the shutdown grace). Errors: `Io` when the serve loop failed.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            // The serve loop may already be gone; then there is nothing to signal.
            let _ = stop.send(());
        }
        let grace = self.shutdown_grace;
        let served = match tokio::time::timeout(grace, &mut self.serving).await {
            Ok(Ok(result)) => result.map_err(ServerError::Io),
            Ok(Err(join)) => Err(ServerError::Io(std::io::Error::other(join))),
            Err(_) => {
                tracing::warn!("in-flight requests outlived the shutdown grace; abandoning them");
                self.serving.abort();
                Ok(())
            }
        };
        if let Some(scanners) = self.scanners.take()
            && tokio::time::timeout(grace, scanners.shutdown()).await.is_err()
        {
            tracing::warn!("scanners outlived the shutdown grace; abandoning them");
        }
        served
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens the configured backend and serves on `listener`.
///
/// Errors: `Config` (invalid config), `Backend` (open or seed failure), `Io`.
pub async fn serve(config: ServerConfig, listener: TcpListener) -> Result<ServerHandle, ServerError> {
    config.validate()?;
    let backend = config.backend.connect(config.partitions).await.map_err(|e| match e {
        ff_sdk::SdkError::Engine(e) => ServerError::Backend(*e),
        other => ServerError::Config(other.to_string()),
    })?;
    serve_with_backend(config, backend, listener).await
}

/// Serves over a caller-built backend (`config.backend` and `config.partitions` are ignored).
///
/// Errors: `Config` (invalid config), `Backend` (seed failure or no tokio runtime), `Io`.
pub async fn serve_with_backend(
    config: ServerConfig,
    backend: Arc<dyn EngineBackend>,
    listener: TcpListener,
) -> Result<ServerHandle, ServerError> {
    let router = router_with_backend(&config, backend.clone()).await?;
    let local_addr = listener.local_addr()?;
    let scanners = match config.scanners.clone() {
        Some(scanner_config) => Some(ScannerRuntime::start(backend.clone(), scanner_config)?),
        None => None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                // A dropped sender also means stop.
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%local_addr, "ff-server listening");
    Ok(ServerHandle {
        local_addr,
        backend,
        stop: Some(stop),
        serving,
        scanners,
        shutdown_grace: config.shutdown_grace,
    })
}

/// The API router over a caller-built backend, without a listener or scanners, for callers
/// that accept streams themselves (e.g. a simulated network); `config.scanners` is ignored.
///
/// Errors: `Config` (invalid config), `Backend` (seed failure).
pub async fn router_with_backend(
    config: &ServerConfig,
    backend: Arc<dyn EngineBackend>,
) -> Result<axum::Router, ServerError> {
    config.validate()?;
    seed_secret(&backend, &config.waitpoint_hmac_secret_hex).await?;
    if config.api_token.is_none() {
        tracing::warn!("FF_API_TOKEN is unset: the API is served without authentication");
    }
    let state = app::AppState {
        backend: backend.clone(),
        scheduler: Arc::new(Scheduler::new(backend, config.scheduler)),
        api_token: config.api_token.as_deref().map(Arc::from),
        hmac_grace_ms: config.waitpoint_hmac_grace_ms,
        rotation: Arc::new(tokio::sync::Semaphore::new(1)),
        stream_ops: Arc::new(tokio::sync::Semaphore::new(streams::STREAM_OPS_CONCURRENT_MAX as usize)),
    };
    Ok(app::router(state))
}

/// Installs the boot secret as kid `k1`; an existing different secret or kid is kept.
async fn seed_secret(backend: &Arc<dyn EngineBackend>, secret_hex: &str) -> Result<(), ServerError> {
    match backend.seed_waitpoint_hmac_secret(HMAC_INITIAL_KID, secret_hex).await {
        Ok(SeedOutcome::AlreadySeeded { same_secret: false, .. }) => {
            tracing::warn!("stored waitpoint secret differs from the configured one; keeping the stored one");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if matches!(e.root(), ff_core::EngineError::Validation { .. }) => {
            // Config validation already checked the secret, so this is a later rotation's kid.
            tracing::warn!(error = %e, "a rotated waitpoint kid is current; keeping it");
            Ok(())
        }
        Err(e) => Err(ServerError::Backend(e)),
    }
}
