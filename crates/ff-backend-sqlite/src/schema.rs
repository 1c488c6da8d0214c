//! Versioned migrations and the open-time checks (application id, version,
//! partition counts).

use rusqlite::{Connection, OptionalExtension, params};

use crate::OpenError;

/// `PRAGMA application_id` of a FlowFabric database ("FFKT").
pub const APPLICATION_ID: i64 = 0x4646_4b54;

/// Migrations, in order; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: the execution core.
    "
    CREATE TABLE ff_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        partition INTEGER NOT NULL,
        lane TEXT NOT NULL,
        public_state TEXT NOT NULL,
        core TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE blobs (
        execution_id TEXT NOT NULL, kind INTEGER NOT NULL, bytes BLOB NOT NULL,
        PRIMARY KEY (execution_id, kind)
    ) WITHOUT ROWID;
    CREATE TABLE tags (
        execution_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (execution_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        execution_id TEXT NOT NULL, attempt_index INTEGER NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (execution_id, attempt_index)
    ) WITHOUT ROWID;
    CREATE TABLE leases (execution_id TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE grants (execution_id TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE stream_meta (
        execution_id TEXT NOT NULL, attempt_index INTEGER NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (execution_id, attempt_index)
    ) WITHOUT ROWID;
    CREATE TABLE idempotency (
        namespace TEXT NOT NULL, key TEXT NOT NULL, execution_id TEXT NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    CREATE TABLE idx (
        name TEXT NOT NULL, member TEXT NOT NULL, score INTEGER NOT NULL,
        PRIMARY KEY (name, member)
    ) WITHOUT ROWID;
    CREATE INDEX idx_by_score ON idx (name, score, member);
    CREATE TABLE lease_events (
        execution_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, ts INTEGER NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (execution_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE completions (
        event_id INTEGER PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT NOT NULL, flow_id TEXT NOT NULL, outcome TEXT NOT NULL, produced_at INTEGER NOT NULL
    );
    CREATE TABLE workers (
        namespace TEXT NOT NULL, instance_id TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (namespace, instance_id)
    ) WITHOUT ROWID;
    ",
    // 2: attempt streams and summaries.
    "
    CREATE TABLE stream_entries (
        execution_id TEXT NOT NULL, attempt_index INTEGER NOT NULL, ms INTEGER NOT NULL, seq INTEGER NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (execution_id, attempt_index, ms, seq)
    ) WITHOUT ROWID;
    CREATE TABLE summaries (
        execution_id TEXT NOT NULL, attempt_index INTEGER NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (execution_id, attempt_index)
    ) WITHOUT ROWID;
    ",
    // 3: generic JSON records (waitpoints, suspensions, signals, dedup guards, keystore).
    "
    CREATE TABLE records (
        kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;
    ",
];

/// Reads the application id; a file that is not SQLite fails here.
fn application_id(conn: &Connection, path: &str) -> Result<i64, OpenError> {
    conn.query_row("PRAGMA application_id", [], |r| r.get::<_, i64>(0))
        .map_err(|e| OpenError::Corrupt { path: path.to_owned(), reason: e.to_string() })
}

fn table_count(conn: &Connection, path: &str) -> Result<i64, OpenError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map_err(|e| OpenError::Corrupt { path: path.to_owned(), reason: e.to_string() })
}

/// Checks the file is ours (or empty), then applies pending migrations.
pub fn migrate(conn: &mut Connection, path: &str) -> Result<(), OpenError> {
    let app = application_id(conn, path)?;
    let tables = table_count(conn, path)?;
    if app != APPLICATION_ID && (app != 0 || tables > 0) {
        return Err(OpenError::Foreign { path: path.to_owned(), found: app });
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(OpenError::TooNew { path: path.to_owned(), found: version, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!(
            "PRAGMA user_version = {}; PRAGMA application_id = {APPLICATION_ID};",
            i + 1
        ))?;
        tx.commit()?;
    }
    Ok(())
}

/// Persists partition counts on first open and rejects a different configuration later.
pub fn check_partitions(conn: &Connection, cfg: &ff_core::PartitionConfig) -> Result<(), OpenError> {
    for (field, value) in cfg.fields() {
        let stored: Option<String> = conn
            .query_row("SELECT value FROM ff_meta WHERE key = ?1", params![field], |r| r.get(0))
            .optional()?;
        match stored {
            None => {
                conn.execute(
                    "INSERT INTO ff_meta (key, value) VALUES (?1, ?2)",
                    params![field, value.to_string()],
                )?;
            }
            Some(s) => {
                let stored = s.parse::<u16>().unwrap_or(0);
                if stored != value {
                    return Err(OpenError::PartitionMismatch { field, stored, config: value });
                }
            }
        }
    }
    Ok(())
}
