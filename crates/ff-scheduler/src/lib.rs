//! Backend-agnostic scheduling over `Arc<dyn EngineBackend>` (spec 03 §6–§7).
//!
//! [`Scheduler::claim_for_worker`] picks the head of a lane's eligible index on a
//! rotating window of partitions, runs the admission pre-checks (capability →
//! budget → quota) and issues one claim grant. [`ScannerRuntime`] drives every
//! [`ff_core::contracts::ScannerKind`] over every partition on a timer;
//! [`run_all_once`] is the same pass without timers, for simulations.
//!
//! Nothing here knows Valkey, SQLite or HTTP: only the trait.
#![warn(missing_docs)]

mod claim;
mod rotation;
mod scanner;

pub use claim::{
    QUOTA_WINDOW_SECONDS_DEFAULT, ROUTE_BLOCK_DETAIL, Scheduler, SchedulerConfig,
    validate_worker_capabilities,
};
pub use scanner::{
    SCANNER_BATCH_DEFAULT, SCANNER_INTERVAL_MS_FALLBACK, SCANNER_INTERVAL_MS_MIN, ScannerIntervals,
    ScannerRuntime, ScannerRuntimeConfig, default_interval, run_all_once, scanner_name,
};
