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

/// Which backend to open: `memory`, `sqlite:PATH` or `valkey://HOST:PORT[/PREFIX]`.
///
/// The Valkey form names the server's host (a name, an IPv4 address or a bracketed IPv6
/// address) and port, and optionally a key prefix after the first `/` that every key of this
/// deployment starts with (so several deployments or tests share one server); the prefix
/// runs to the end of the string and must not contain `{` or `}`. Examples:
/// `valkey://127.0.0.1:6379`, `valkey://127.0.0.1:6379/tenant-a:`.
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
    /// A Valkey server holding the `flowfabric` function library (loaded on open).
    Valkey {
        /// Host name or address (brackets of an IPv6 address removed).
        host: String,
        /// TCP port.
        port: u16,
        /// Prepended to every key (empty: none).
        key_prefix: String,
    },
}

/// The URL scheme of the Valkey backend.
const VALKEY_SCHEME: &str = "valkey://";

impl FromStr for BackendConfig {
    type Err = SdkError;

    /// Parses `memory`, `sqlite:PATH` or `valkey://HOST:PORT[/PREFIX]` (case-insensitive
    /// scheme); errors: `Config`.
    fn from_str(s: &str) -> Result<Self, SdkError> {
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("memory") {
            return Ok(Self::Memory);
        }
        if trimmed.len() >= VALKEY_SCHEME.len()
            && trimmed.is_char_boundary(VALKEY_SCHEME.len())
            && trimmed[..VALKEY_SCHEME.len()].eq_ignore_ascii_case(VALKEY_SCHEME)
        {
            return parse_valkey(&trimmed[VALKEY_SCHEME.len()..]);
        }
        match trimmed.split_once(':') {
            Some((scheme, path)) if scheme.eq_ignore_ascii_case("sqlite") && !path.is_empty() => {
                Ok(Self::Sqlite { path: PathBuf::from(path) })
            }
            _ => Err(SdkError::config(
                "backend_config",
                None,
                format!(
                    "unknown backend {trimmed:?}: expected `memory`, `sqlite:PATH` or \
                     `valkey://HOST:PORT[/PREFIX]`"
                ),
            )),
        }
    }
}

/// Parses the part of a Valkey backend URL after `valkey://`: `HOST:PORT[/PREFIX]`.
fn parse_valkey(rest: &str) -> Result<BackendConfig, SdkError> {
    let bad = |message: String| SdkError::config("backend_config", Some("valkey"), message);
    let (authority, key_prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) =
                bracketed.split_once(']').ok_or_else(|| bad(format!("unclosed `[` in {authority:?}")))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad(format!("{authority:?} has no `:PORT` after the address")))?;
            (host, port)
        }
        None => authority.rsplit_once(':').ok_or_else(|| bad(format!("{authority:?} is not HOST:PORT")))?,
    };
    if host.is_empty() {
        return Err(bad(format!("{authority:?} has an empty host")));
    }
    let port: u16 = port.parse().map_err(|_| bad(format!("port {port:?} is not a number in 1..=65535")))?;
    if port == 0 {
        return Err(bad("port 0 is not a server port".into()));
    }
    if key_prefix.contains(['{', '}']) {
        return Err(bad(format!("key prefix {key_prefix:?} must not contain `{{` or `}}`")));
    }
    Ok(BackendConfig::Valkey { host: host.to_owned(), port, key_prefix: key_prefix.to_owned() })
}

impl BackendConfig {
    /// Opens the backend on the wall clock with these partition counts (any backend, Valkey
    /// included); errors: `Config` (partitions), `Engine` on open or connect failure.
    pub async fn connect(&self, partitions: PartitionConfig) -> Result<Arc<dyn EngineBackend>, SdkError> {
        let Self::Valkey { host, port, key_prefix } = self else {
            return self.open(partitions);
        };
        validate_partitions(partitions)?;
        let config = ff_backend_valkey::ValkeyConfig {
            host: host.clone(),
            port: *port,
            key_prefix: key_prefix.clone(),
            partitions,
            // Every call then reads the server's TIME, the one clock all clients share.
            clock: None,
        };
        let backend = ff_backend_valkey::ValkeyBackend::connect(config).await?;
        Ok(Arc::new(backend))
    }

    /// Opens a memory or SQLite backend on the wall clock (a Valkey backend needs the async
    /// [`BackendConfig::connect`]); errors: `Config`, `Engine` on open failure.
    pub fn open(&self, partitions: PartitionConfig) -> Result<Arc<dyn EngineBackend>, SdkError> {
        self.open_with_clock(Arc::new(SystemClock), partitions)
    }

    /// Opens a memory or SQLite backend on an injected clock (Valkey: see
    /// [`BackendConfig::connect`]); errors: `Config`, `Engine` on open failure.
    pub fn open_with_clock(
        &self,
        clock: Arc<dyn Clock>,
        partitions: PartitionConfig,
    ) -> Result<Arc<dyn EngineBackend>, SdkError> {
        validate_partitions(partitions)?;
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
            Self::Valkey { .. } => Err(SdkError::config(
                "backend_config",
                Some("valkey"),
                "a Valkey backend is opened with the async `BackendConfig::connect`",
            )),
        }
    }
}

/// Checks partition counts; errors: `Config{field: partitions}`.
fn validate_partitions(partitions: PartitionConfig) -> Result<(), SdkError> {
    partitions.validate().map_err(|e| SdkError::config("backend_config", Some("partitions"), e.to_string()))
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
