//! FlowFabric worker SDK and admin client (spec 03 §9).
//!
//! [`FlowFabricWorker`] claims work from any [`ff_core::EngineBackend`] and hands
//! out [`ClaimedTask`]s that renew their lease on a timer and hold a
//! concurrency permit until a terminal operation or drop.
//! [`FlowFabricAdminClient`] speaks the REST API of `ff-server` over a hyper 1
//! client whose transport is a [`Connector`].
#![warn(missing_docs)]

mod admin;
mod config;
mod error;
mod task;
pub mod wire;
mod worker;

pub use admin::{
    ADMIN_TIMEOUT_MS, BoxedIo, ConnectFuture, Connector, FlowFabricAdminClient, GRANT_TTL_MS_MAX, IoStream,
    RESPONSE_BYTES_MAX, TcpConnector, is_even_hex,
};
pub use config::{
    BackendConfig, CLAIM_POLL_INTERVAL_MS_DEFAULT, LEASE_TTL_MS_DEFAULT, WORKER_ID_BYTES_MAX, WorkerConfig,
    check_identifier, validate_capabilities,
};
pub use error::{BoxError, SdkError};
pub use task::{ClaimedTask, RENEWAL_FAILURES_UNHEALTHY, RenewalMonitor, SuspendedTask, TrySuspendOutcome};
pub use worker::{
    BYPASS_GRANT_TTL_MS, CLAIM_SCAN_PARTITIONS_MAX, FlowFabricWorker, ROUTE_BLOCK_DETAIL, ReclaimClaim,
    ResumeToken, Signal, SignalOutcome, WORKER_LIVENESS_TTL_MS_MIN,
};
