//! Which backend a bench runs on, how to open it, and the local Valkey server
//! the benches start with `scripts/valkey.sh`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::{EngineBackend, PartitionConfig, SimClock};

/// Port the criterion benches start their Valkey server on (override: `FF_BENCH_VALKEY_PORT`).
pub const BENCH_VALKEY_PORT_DEFAULT: u16 = 6417;
/// Keys deleted per `UNLINK` while purging a prefix.
const PURGE_KEYS_PER_CALL_MAX: usize = 512;
/// `SCAN` rounds while purging a prefix (at `COUNT 1000`, enough for ~10M keys).
const PURGE_SCAN_ROUNDS_MAX: usize = 10_000;

/// A bench failure: setup, a backend call, or the server.
#[derive(Debug)]
pub struct BenchError(pub String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

impl BenchError {
    /// An error with context: `what: cause`.
    pub fn context(what: impl std::fmt::Display, cause: impl std::fmt::Display) -> Self {
        Self(format!("{what}: {cause}"))
    }
}

/// The backend a run targets: `memory`, `sqlite:PATH` or `valkey://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// The in-memory reference backend.
    Memory,
    /// A SQLite file (WAL, `synchronous = FULL`); each scenario uses `PATH.<scenario>`.
    Sqlite(PathBuf),
    /// A running Valkey server.
    Valkey {
        /// Host (loopback in every default).
        host: String,
        /// Port.
        port: u16,
    },
}

impl FromStr for BackendSpec {
    type Err = BenchError;

    /// Parses the three forms; errors name the accepted ones.
    fn from_str(s: &str) -> Result<Self, BenchError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("memory") {
            return Ok(Self::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("valkey://") {
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
            let port =
                port.trim_end_matches('/').parse().map_err(|e| BenchError::context("valkey port", e))?;
            if host.is_empty() {
                return Err(BenchError("valkey://HOST:PORT needs a host".into()));
            }
            return Ok(Self::Valkey { host: host.to_owned(), port });
        }
        Err(BenchError(format!("unknown backend {s:?}: expected memory, sqlite:PATH or valkey://HOST:PORT")))
    }
}

impl BackendSpec {
    /// `memory`, `sqlite` or `valkey`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite(_) => "sqlite",
            Self::Valkey { .. } => "valkey",
        }
    }

    /// A fresh, empty store for one scenario on the wall clock; errors: open or connect failures.
    pub async fn open_fresh(
        &self,
        scenario: &str,
        partitions: PartitionConfig,
    ) -> Result<Opened, BenchError> {
        match self {
            Self::Memory => {
                let backend = ff_sdk::BackendConfig::Memory.open(partitions);
                let backend = backend.map_err(|e| BenchError::context("open memory", e))?;
                Ok(Opened { backend, valkey: None, sqlite_path: None })
            }
            Self::Sqlite(base) => {
                let path = PathBuf::from(format!("{}.{scenario}", base.display()));
                remove_sqlite_files(&path);
                let config = ff_sdk::BackendConfig::Sqlite { path: path.clone() };
                let backend = config.open(partitions).map_err(|e| BenchError::context("open sqlite", e))?;
                Ok(Opened { backend, valkey: None, sqlite_path: Some(path) })
            }
            Self::Valkey { host, port } => {
                let backend = connect_valkey(host, *port, &fresh_prefix(scenario), partitions, None).await?;
                Ok(Opened { backend: Arc::new(backend.clone()), valkey: Some(backend), sqlite_path: None })
            }
        }
    }
}

/// An opened store and what cleaning it up needs.
pub struct Opened {
    /// The backend.
    pub backend: Arc<dyn EngineBackend>,
    /// The concrete Valkey backend (for extra connections and the key purge).
    pub valkey: Option<ValkeyBackend>,
    /// The SQLite file to delete afterwards.
    pub sqlite_path: Option<PathBuf>,
}

impl Opened {
    /// `n` backends over the same store: separate connections on Valkey, shared otherwise.
    ///
    /// Errors: a failed Valkey connect.
    pub async fn connections(&self, n: usize) -> Result<Vec<Arc<dyn EngineBackend>>, BenchError> {
        let mut out: Vec<Arc<dyn EngineBackend>> = Vec::with_capacity(n);
        for _ in 0..n {
            match &self.valkey {
                Some(v) => {
                    let c = v.config().clone();
                    out.push(Arc::new(
                        connect_valkey(&c.host, c.port, &c.key_prefix, c.partitions, None).await?,
                    ));
                }
                None => out.push(self.backend.clone()),
            }
        }
        Ok(out)
    }

    /// Deletes the store: the Valkey keys under the prefix, or the SQLite files.
    pub async fn cleanup(self) {
        if let Some(v) = &self.valkey {
            let c = v.config();
            if let Err(e) = purge_prefix(&c.host, c.port, &c.key_prefix).await {
                eprintln!("ff-bench: could not purge {}*: {e}", c.key_prefix);
            }
        }
        drop(self.backend);
        if let Some(path) = &self.sqlite_path {
            remove_sqlite_files(path);
        }
    }
}

/// Removes a SQLite database and its WAL and shared-memory files, ignoring absent ones.
pub fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A key prefix unique to this process and call.
pub fn fresh_prefix(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("ffbench-{tag}-{}-{nanos}-{n}:", std::process::id())
}

/// Connects the Valkey backend (loading the function library).
///
/// Errors: the server is unreachable or refuses the library.
pub async fn connect_valkey(
    host: &str,
    port: u16,
    key_prefix: &str,
    partitions: PartitionConfig,
    clock: Option<SimClock>,
) -> Result<ValkeyBackend, BenchError> {
    let cfg =
        ValkeyConfig { host: host.to_owned(), port, key_prefix: key_prefix.to_owned(), partitions, clock };
    ValkeyBackend::connect(cfg)
        .await
        .map_err(|e| BenchError::context(format!("connect valkey {host}:{port}"), e))
}

/// A raw ferriskey client (no engine): for baselines, version probes and purges.
///
/// Errors: the server is unreachable.
pub async fn raw_client(host: &str, port: u16) -> Result<ferriskey::Client, BenchError> {
    ferriskey::ClientBuilder::new()
        .host(host, port)
        .build()
        .await
        .map_err(|e| BenchError::context(format!("connect {host}:{port}"), e))
}

/// The server's `valkey_version` (or `redis_version`) from `INFO server`.
///
/// Errors: the command fails or the reply has neither field.
pub async fn server_version(host: &str, port: u16) -> Result<String, BenchError> {
    let client = raw_client(host, port).await?;
    let info: ferriskey::Value = client
        .cmd("INFO")
        .arg("server")
        .execute()
        .await
        .map_err(|e| BenchError::context("INFO server", e))?;
    let text = value_text(&info);
    // Valkey also reports a Redis-compatible `redis_version`; its own field wins.
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned());
    field("valkey_version:")
        .or_else(|| field("redis_version:"))
        .ok_or_else(|| BenchError("INFO server has no version field".into()))
}

/// The text of a string-like reply (empty for other shapes).
pub fn value_text(v: &ferriskey::Value) -> String {
    match v {
        ferriskey::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        ferriskey::Value::SimpleString(s) => s.clone(),
        ferriskey::Value::VerbatimString { text, .. } => text.clone(),
        _ => String::new(),
    }
}

/// Deletes every key under `prefix` with `SCAN` + `UNLINK` (bounded rounds).
///
/// Errors: a failed command.
pub async fn purge_prefix(host: &str, port: u16, prefix: &str) -> Result<(), BenchError> {
    let client = raw_client(host, port).await?;
    let pattern = format!("{prefix}*");
    let mut cursor = "0".to_owned();
    for _ in 0..PURGE_SCAN_ROUNDS_MAX {
        let reply: ferriskey::Value = client
            .cmd("SCAN")
            .arg(cursor.as_str())
            .arg("MATCH")
            .arg(pattern.as_str())
            .arg("COUNT")
            .arg(1_000u64)
            .execute()
            .await
            .map_err(|e| BenchError::context("SCAN", e))?;
        let ferriskey::Value::Array(parts) = reply else {
            return Err(BenchError("SCAN reply is not an array".into()));
        };
        let mut parts = parts.into_iter().map(Result::ok);
        let (Some(Some(next)), Some(Some(ferriskey::Value::Array(keys)))) = (parts.next(), parts.next())
        else {
            return Err(BenchError("SCAN reply has no cursor and keys".into()));
        };
        let keys: Vec<String> =
            keys.iter().filter_map(|k| k.as_ref().ok()).map(value_text).filter(|k| !k.is_empty()).collect();
        for chunk in keys.chunks(PURGE_KEYS_PER_CALL_MAX) {
            let _: i64 = client.del(chunk).await.map_err(|e| BenchError::context("DEL", e))?;
        }
        cursor = value_text(&next);
        if cursor == "0" || cursor.is_empty() {
            return Ok(());
        }
    }
    Err(BenchError(format!("purge of {pattern} did not finish in {PURGE_SCAN_ROUNDS_MAX} SCAN rounds")))
}

/// Starts (or finds) the loopback server on `port` with `scripts/valkey.sh start`.
///
/// Errors: the script is missing, or cannot start a server; the message carries its output.
pub fn start_local_valkey(port: u16) -> Result<(), BenchError> {
    ff_backend_valkey::raw::start_local_server(port).map_err(BenchError)
}
