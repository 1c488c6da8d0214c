//! The PostgreSQL backend: the engine's transitions over real tables on a server.
//!
//! Every contract is one `REPEATABLE READ` transaction that first takes the
//! schema's writer lock (`LOCK TABLE ff_meta IN EXCLUSIVE MODE`, before any
//! snapshot exists), on a dedicated thread that owns the connection, so async
//! callers never block the runtime. Contracts on one schema therefore run one
//! at a time, across every process sharing it, which makes the execution
//! serial (hence serializable); no serialization failure can happen once the
//! lock is held, and the bounded retry only covers starting the transaction,
//! before the contract has run. See the crate README.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::error::{BackendErrorKind, ValidationKind};
use ff_core::{BackendTag, Clock, EngineError, PartitionConfig, SystemClock};
use ff_engine::{Engine, RunnerInfo, Store, StoreRunner, StoreThread};

mod schema;
mod store;

pub use store::PostgresStore;

/// The PostgreSQL backend: `Engine` over [`PostgresRunner`].
pub type PostgresBackend = Engine<PostgresRunner>;

/// Longest a schema name may be (PostgreSQL's identifier limit).
pub const SCHEMA_NAME_LEN_MAX: usize = 63;

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The connection URL could not be parsed.
    #[error("invalid connection URL: {0}")]
    Url(String),
    /// The server could not be reached or refused the session.
    #[error("cannot connect: {}", describe(.0))]
    Connect(postgres::Error),
    /// The schema holds tables of some other application.
    #[error("schema {schema}: holds tables, but not a FlowFabric store ({found})")]
    Foreign {
        /// Schema.
        schema: String,
        /// The tables found.
        found: String,
    },
    /// The schema was written by a newer migration than this build knows.
    #[error("schema {schema}: version {found} is newer than this build's {known}")]
    TooNew {
        /// Schema.
        schema: String,
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
    /// The configuration (partitions, schema name) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Any other PostgreSQL failure while opening.
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] postgres::Error),
    /// The connection thread could not start or stopped while opening.
    #[error("connection thread: {0}")]
    Thread(String),
}

/// The client's error with the server's SQLSTATE and message when there is one.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl From<OpenError> for EngineError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Foreign { .. } | OpenError::TooNew { .. } | OpenError::PartitionMismatch { .. } => {
                EngineError::validation(ValidationKind::Corruption, e.to_string())
            }
            OpenError::Config(m) | OpenError::Url(m) => EngineError::invalid_input(m),
            other @ OpenError::Connect(_) => {
                EngineError::transport("postgres", BackendErrorKind::Transport, Box::new(other))
            }
            other => EngineError::transport("postgres", BackendErrorKind::Other, Box::new(other)),
        }
    }
}

/// Opening options.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connection URL, `postgres://user@host:port/database` (key=value strings work too).
    pub url: String,
    /// The schema holding the tables (created on first open); one store per schema.
    pub schema: String,
    /// Partition counts (persisted on first open, checked afterwards).
    pub partitions: PartitionConfig,
    /// The clock every contract reads `now` from.
    pub clock: Arc<dyn Clock>,
}

impl PostgresOptions {
    /// Options for `url` with the default schema `flowfabric`, partitions and system clock.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "flowfabric".to_owned(),
            partitions: PartitionConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Runs contracts as transactions on the connection thread.
#[derive(Clone)]
pub struct PostgresRunner {
    thread: StoreThread<PostgresStore>,
    info: RunnerInfo,
}

impl std::fmt::Debug for PostgresRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRunner").field("cfg", &self.info.partitions).finish()
    }
}

/// A schema name we can quote without escaping: `[a-z_][a-z0-9_]*`, at most 63 bytes.
fn check_schema_name(name: &str) -> Result<(), OpenError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= SCHEMA_NAME_LEN_MAX {
        Ok(())
    } else {
        Err(OpenError::Config(format!("schema name {name:?}: use [a-z_][a-z0-9_]*, at most 63 bytes")))
    }
}

/// Connects, creates or migrates the schema, checks the partition counts, and
/// starts the connection thread. Blocks the caller until the store is open.
pub fn open(options: PostgresOptions) -> Result<PostgresBackend, OpenError> {
    options.partitions.validate().map_err(|e| OpenError::Config(e.to_string()))?;
    check_schema_name(&options.schema)?;
    let config = postgres::Config::from_str(&options.url).map_err(|e| OpenError::Url(e.to_string()))?;
    let session = store::Session { config, schema: options.schema.clone() };
    let cfg = options.partitions;
    // The synchronous client runs its own small runtime: it must live and die on
    // a plain thread, never inside the caller's async runtime.
    let thread = StoreThread::start("ff-postgres", "postgres", move || PostgresStore::open(session, cfg))
        .map_err(|e| e.into_open_error(OpenError::Thread))?;
    let info =
        RunnerInfo::new(BackendTag::Postgres, "postgres", env!("CARGO_PKG_VERSION"), options.clock, cfg);
    Ok(Engine::new(PostgresRunner { thread, info }))
}

impl PostgresRunner {
    /// Runs a closure on the connection outside any contract (dumps, checks).
    pub fn with_store_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PostgresStore) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        self.thread.call_blocking(f)
    }

    /// A deterministic dump of every table.
    pub fn dump(&self) -> String {
        self.with_store_blocking(|s| s.dump()).unwrap_or_else(|e| format!("dump failed: {e}"))
    }

    /// The store-level invariants (spec 01 §4.4–4.5), read in one transaction.
    pub fn invariant_violations(&self) -> Vec<String> {
        self.with_store_blocking(|s| s.transaction(|st| Ok(ff_engine::invariants::check_store(st))))
            .and_then(|r| r)
            .unwrap_or_else(|e| vec![format!("check failed: {e}")])
    }
}

#[async_trait]
impl StoreRunner for PostgresRunner {
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
