//! `WorkerConfig` and the backend a worker or server runs on (spec 03 §9.1).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use ff_backend_sqlite::SqliteOptions;
use ff_core::contracts::{CAPS_CSV_BYTES_MAX, CAPS_TOKENS_MAX, CapabilitySet};
use ff_core::{
    Clock, EngineBackend, LaneId, Namespace, PartitionConfig, SystemClock, WorkerId, WorkerInstanceId,
};

use crate::error::SdkError;

/// Default lease TTL, in ms.
pub const LEASE_TTL_MS_DEFAULT: u64 = 30_000;
/// Default claim poll interval, in ms (used by callers' loops, not by the SDK).
pub const CLAIM_POLL_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Longest worker id or instance id, in bytes.
pub const WORKER_ID_BYTES_MAX: usize = 256;

/// Which backend to open: `memory` or `sqlite:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackendConfig {
    /// The in-memory reference backend (nothing survives the process).
    #[default]
    Memory,
    /// A SQLite database file (created and migrated on open).
    Sqlite {
        /// The database file, or `:memory:`.
        path: PathBuf,
    },
}

impl FromStr for BackendConfig {
    type Err = SdkError;

    /// Parses `memory` or `sqlite:PATH` (case-insensitive scheme); errors: `Config`.
    fn from_str(s: &str) -> Result<Self, SdkError> {
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("memory") {
            return Ok(Self::Memory);
        }
        match trimmed.split_once(':') {
            Some((scheme, path)) if scheme.eq_ignore_ascii_case("sqlite") && !path.is_empty() => {
                Ok(Self::Sqlite { path: PathBuf::from(path) })
            }
            _ => Err(SdkError::config(
                "backend_config",
                None,
                format!("unknown backend {trimmed:?}: expected `memory` or `sqlite:PATH`"),
            )),
        }
    }
}

impl BackendConfig {
    /// Opens the backend on the wall clock with these partition counts; errors: `Engine` on open failure.
    pub fn open(&self, partitions: PartitionConfig) -> Result<Arc<dyn EngineBackend>, SdkError> {
        self.open_with_clock(Arc::new(SystemClock), partitions)
    }

    /// Opens the backend on an injected clock; errors: `Engine` on open failure.
    pub fn open_with_clock(
        &self,
        clock: Arc<dyn Clock>,
        partitions: PartitionConfig,
    ) -> Result<Arc<dyn EngineBackend>, SdkError> {
        partitions
            .validate()
            .map_err(|e| SdkError::config("backend_config", Some("partitions"), e.to_string()))?;
        match self {
            Self::Memory => {
                let runner = ff_backend_memory::MemoryRunner::new(clock, partitions);
                Ok(Arc::new(ff_backend_memory::MemoryBackend::new(runner)))
            }
            Self::Sqlite { path } => {
                let options = SqliteOptions { partitions, clock, ..SqliteOptions::default() };
                let backend = ff_backend_sqlite::open(path, options).map_err(ff_core::EngineError::from)?;
                Ok(Arc::new(backend))
            }
        }
    }
}

/// A worker's settings. Build it as a struct literal over [`WorkerConfig::default`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Backend for [`crate::FlowFabricWorker::connect`]; ignored by `connect_with`.
    pub backend: Option<BackendConfig>,
    /// Logical pool identity.
    pub worker_id: WorkerId,
    /// Process identity; unique among live workers.
    pub worker_instance_id: WorkerInstanceId,
    /// Namespace of the worker.
    pub namespace: Namespace,
    /// Lanes claimed from, round-robin; at least one.
    pub lanes: Vec<LaneId>,
    /// Capability tokens: non-empty, no `,`, no whitespace or control characters.
    pub capabilities: Vec<String>,
    /// Lease TTL of every claim, in ms.
    pub lease_ttl_ms: u64,
    /// Poll interval for callers' claim loops, in ms.
    pub claim_poll_interval_ms: u64,
    /// Concurrency permits; values below 1 count as 1.
    pub max_concurrent_tasks: usize,
    /// Partition counts (`None` → the backend's own).
    pub partition_config: Option<PartitionConfig>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            backend: None,
            worker_id: WorkerId::new("worker"),
            worker_instance_id: WorkerInstanceId::new(format!("worker-{}", uuid::Uuid::new_v4())),
            namespace: Namespace::new("default"),
            lanes: vec![LaneId::new("default")],
            capabilities: Vec::new(),
            lease_ttl_ms: LEASE_TTL_MS_DEFAULT,
            claim_poll_interval_ms: CLAIM_POLL_INTERVAL_MS_DEFAULT,
            max_concurrent_tasks: 1,
            partition_config: None,
        }
    }
}

impl WorkerConfig {
    /// The lease renewal period: a third of the TTL, at least 1 ms.
    pub fn renewal_interval_ms(&self) -> u64 {
        (self.lease_ttl_ms / 3).max(1)
    }

    /// Checks lanes, ids, capabilities and the lease TTL; errors: `Config` naming the field.
    pub fn validate(&self) -> Result<(), SdkError> {
        const CTX: &str = "worker_config";
        if self.lanes.is_empty() {
            return Err(SdkError::config(CTX, Some("lanes"), "at least one lane is required"));
        }
        for lane in &self.lanes {
            LaneId::try_new(lane.as_str())
                .map_err(|e| SdkError::config(CTX, Some("lanes"), format!("{lane}: {e}")))?;
        }
        check_identifier(CTX, "worker_id", self.worker_id.as_str())?;
        check_identifier(CTX, "worker_instance_id", self.worker_instance_id.as_str())?;
        validate_capabilities(CTX, &self.capabilities)?;
        if self.lease_ttl_ms == 0 || self.lease_ttl_ms > ff_core::contracts::LEASE_TTL_MS_MAX {
            return Err(SdkError::config(CTX, Some("lease_ttl_ms"), "must be in 1..=86400000"));
        }
        Ok(())
    }
}

/// Checks an identifier: non-empty, at most 256 bytes, no whitespace or control characters.
pub fn check_identifier(context: &'static str, field: &'static str, value: &str) -> Result<(), SdkError> {
    if value.is_empty() {
        return Err(SdkError::config(context, Some(field), "is empty"));
    }
    if value.len() > WORKER_ID_BYTES_MAX {
        return Err(SdkError::config(
            context,
            Some(field),
            format!("longer than {WORKER_ID_BYTES_MAX} bytes"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SdkError::config(context, Some(field), "contains whitespace or a control character"));
    }
    Ok(())
}

/// Checks capability tokens per spec 03 §6.2 step 3; errors: `Config{field: capabilities}`.
pub fn validate_capabilities(context: &'static str, tokens: &[String]) -> Result<CapabilitySet, SdkError> {
    let bad = |message: String| SdkError::config(context, Some("capabilities"), message);
    for token in tokens {
        if token.is_empty() {
            return Err(bad("empty token".into()));
        }
        if token.contains(',') {
            return Err(bad(format!("token {token:?} contains ','")));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!("token {token:?} contains whitespace or a control character")));
        }
    }
    let set = CapabilitySet::new(tokens.iter().cloned());
    if set.0.len() > CAPS_TOKENS_MAX {
        return Err(bad(format!("{} distinct tokens, more than {CAPS_TOKENS_MAX}", set.0.len())));
    }
    if set.to_csv().len() > CAPS_CSV_BYTES_MAX {
        return Err(bad(format!("sorted CSV longer than {CAPS_CSV_BYTES_MAX} bytes")));
    }
    Ok(set)
}
