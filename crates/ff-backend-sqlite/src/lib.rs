//! The SQLite backend: the engine's transitions over real tables.
//!
//! Every contract is one `BEGIN IMMEDIATE` transaction on a dedicated thread
//! that owns the connection, so async callers never block the runtime. The
//! database runs in WAL mode with `synchronous = FULL`: a contract that
//! returned has been committed to disk.
//!
//! Storage layout (see `README.md` for the table list): the execution-keyed
//! tables, the ordered index table `idx`, the completion feed and the worker
//! registry come from migrations 1–2; every `RecordKind` has its own table
//! (migration 4), with typed key and foreign-key columns next to the JSON
//! record, and the tabular parts of a record as child rows — a flow's edges
//! (`flow_edges`), members and edge groups, a budget's dimensions and
//! ledgers, a quota policy's guards, an execution's applied dependencies.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::error::{BackendErrorKind, ValidationKind};
use ff_core::{BackendTag, Clock, EngineError, PartitionConfig, SystemClock};
use ff_engine::{Engine, RunnerInfo, Store, StoreRunner, StoreThread};

mod records;
mod schema;
mod store;
#[cfg(test)]
mod upgrade_tests;

pub use store::SqliteStore;

/// The SQLite backend: `Engine` over [`SqliteRunner`].
pub type SqliteBackend = Engine<SqliteRunner>;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file is not a SQLite database or is damaged.
    #[error("{path}: not a readable SQLite database: {reason}")]
    Corrupt {
        /// File.
        path: String,
        /// SQLite's reason.
        reason: String,
    },
    /// The file is a SQLite database of some other application.
    #[error("{path}: a SQLite database, but not a FlowFabric one (application_id {found:#x})")]
    Foreign {
        /// File.
        path: String,
        /// Its application id.
        found: i64,
    },
    /// The file was written by a newer schema than this build knows.
    #[error("{path}: schema version {found} is newer than this build's {known}")]
    TooNew {
        /// File.
        path: String,
        /// Stored version.
        found: i64,
        /// Latest known version.
        known: i64,
    },
    /// The stored partition counts differ from the configured ones.
    #[error("partition_mismatch: {field}: stored={stored}, config={config}")]
    PartitionMismatch {
        /// Which count.
        field: &'static str,
        /// Stored value.
        stored: u16,
        /// Configured value.
        config: u16,
    },
    /// The partition configuration is invalid.
    #[error("invalid partition configuration: {0}")]
    Config(String),
    /// Any other SQLite failure.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The connection thread could not start.
    #[error("cannot start the connection thread: {0}")]
    Thread(String),
}

impl From<OpenError> for EngineError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Corrupt { .. }
            | OpenError::Foreign { .. }
            | OpenError::TooNew { .. }
            | OpenError::PartitionMismatch { .. } => {
                EngineError::validation(ValidationKind::Corruption, e.to_string())
            }
            OpenError::Config(m) => EngineError::invalid_input(m),
            other => EngineError::transport("sqlite", BackendErrorKind::Other, Box::new(other)),
        }
    }
}

/// How hard a commit waits for the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is on disk before the contract returns (survives power loss).
    #[default]
    Full,
    /// Commits survive a process crash; the last ones may be lost on power loss.
    Normal,
}

/// Opening options.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Partition counts (persisted on first open, checked afterwards).
    pub partitions: PartitionConfig,
    /// The clock every contract reads `now` from.
    pub clock: Arc<dyn Clock>,
    /// Commit durability.
    pub durability: Durability,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            partitions: PartitionConfig::default(),
            clock: Arc::new(SystemClock),
            durability: Durability::Full,
        }
    }
}

/// Runs contracts as transactions on the connection thread.
#[derive(Clone)]
pub struct SqliteRunner {
    thread: StoreThread<SqliteStore>,
    info: RunnerInfo,
}

impl std::fmt::Debug for SqliteRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRunner").field("cfg", &self.info.partitions).finish()
    }
}

/// Opens (creating and migrating as needed) a database file, or `:memory:`.
pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteBackend, OpenError> {
    let path_text = path.as_ref().display().to_string();
    options.partitions.validate().map_err(|e| OpenError::Config(e.to_string()))?;
    let store = SqliteStore::open(path.as_ref(), &path_text, options.partitions, options.durability)?;
    let thread = StoreThread::start("ff-sqlite", "sqlite", move || Ok(store))
        .map_err(|e| e.into_open_error(OpenError::Thread))?;
    let info = RunnerInfo::new(
        BackendTag::Sqlite,
        "sqlite",
        env!("CARGO_PKG_VERSION"),
        options.clock,
        options.partitions,
    );
    Ok(Engine::new(SqliteRunner { thread, info }))
}

impl SqliteRunner {
    /// Runs a closure on the connection outside any contract (dumps, checks).
    pub fn with_store_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteStore) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        self.thread.call_blocking(f)
    }

    /// A deterministic dump of every table.
    pub fn dump(&self) -> String {
        self.with_store_blocking(|s| s.dump()).unwrap_or_else(|e| format!("dump failed: {e}"))
    }

    /// The store-level invariants (spec 01 §4.4–4.5).
    pub fn invariant_violations(&self) -> Vec<String> {
        self.with_store_blocking(|s| ff_engine::invariants::check_store(s))
            .unwrap_or_else(|e| vec![format!("check failed: {e}")])
    }

    /// `PRAGMA integrity_check`: `ok` for a sound file.
    pub fn integrity_check(&self) -> Result<String, EngineError> {
        self.with_store_blocking(|s| s.integrity_check())?
    }
}

#[async_trait]
impl StoreRunner for SqliteRunner {
    fn info(&self) -> &RunnerInfo {
        &self.info
    }

    async fn run<R, F>(&self, f: F) -> Result<R, EngineError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R, EngineError> + Send + 'static,
    {
        self.thread.call(move |s| s.transaction(f)).await?
    }
}
