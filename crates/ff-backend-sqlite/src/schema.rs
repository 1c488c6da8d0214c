//! Versioned migrations and the open-time checks (application id, version,
//! partition counts).

use rusqlite::{Connection, OptionalExtension, params};

use crate::OpenError;

/// `PRAGMA application_id` of a FlowFabric database ("FFKT").
pub const APPLICATION_ID: i64 = 0x4646_4b54;

/// A migration's data step: `(connection inside the migration's transaction, file path)`.
type DataStep = fn(&Connection, &str) -> Result<(), OpenError>;

/// One schema step: SQL, then an optional data step in the same transaction.
struct Migration {
    sql: &'static str,
    data: Option<DataStep>,
}

/// Migrations, in order; `user_version` records how many ran.
const MIGRATIONS: &[Migration] = &[
    // 1: the execution core.
    Migration {
        sql: "
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
        data: None,
    },
    // 2: attempt streams and summaries.
    Migration {
        sql: "
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
        data: None,
    },
    // 3: generic JSON records (superseded by 4, which moves their rows and drops the table).
    Migration {
        sql: "
    CREATE TABLE records (
        kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;
    ",
        data: None,
    },
    // 4: one table per record kind, with child tables; moves and drops `records`.
    Migration { sql: RECORD_TABLES, data: Some(move_records) },
];

/// Migration 4's tables (see `records.rs` for how records map onto them).
const RECORD_TABLES: &str = "
    CREATE TABLE waitpoints (
        waitpoint_id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, attempt_index INTEGER NOT NULL,
        suspension_id TEXT, state TEXT NOT NULL, expires_at INTEGER, record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX waitpoints_by_execution ON waitpoints (execution_id);
    CREATE TABLE suspensions (
        execution_id TEXT PRIMARY KEY, suspension_id TEXT NOT NULL, attempt_index INTEGER NOT NULL,
        waitpoint_id TEXT NOT NULL, timeout_at INTEGER, record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE signals (
        signal_id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, waitpoint_id TEXT NOT NULL,
        signal_name TEXT NOT NULL, accepted_at INTEGER NOT NULL, record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX signals_by_waitpoint ON signals (waitpoint_id, accepted_at);
    CREATE INDEX signals_by_execution ON signals (execution_id, accepted_at);
    CREATE TABLE signal_dedup (
        waitpoint_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, signal_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (waitpoint_id, idempotency_key)
    ) WITHOUT ROWID;
    CREATE TABLE suspend_dedup (
        execution_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, expires_at INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (execution_id, idempotency_key)
    ) WITHOUT ROWID;
    CREATE TABLE hmac_keystores (name TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE budgets (
        budget_id TEXT PRIMARY KEY, scope_type TEXT NOT NULL, scope_id TEXT NOT NULL,
        next_reset_at INTEGER, record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE budget_dimensions (
        budget_id TEXT NOT NULL, dimension TEXT NOT NULL,
        hard_limit INTEGER, soft_limit INTEGER, usage INTEGER,
        PRIMARY KEY (budget_id, dimension)
    ) WITHOUT ROWID;
    CREATE TABLE budget_ledgers (
        budget_id TEXT NOT NULL, execution_id TEXT NOT NULL, spend TEXT NOT NULL,
        PRIMARY KEY (budget_id, execution_id)
    ) WITHOUT ROWID;
    CREATE INDEX budget_ledgers_by_execution ON budget_ledgers (execution_id);
    CREATE TABLE usage_dedup (
        budget_id TEXT NOT NULL, dedup_key TEXT NOT NULL, expires_at INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (budget_id, dedup_key)
    ) WITHOUT ROWID;
    CREATE TABLE quota_policies (
        quota_policy_id TEXT PRIMARY KEY, created_at INTEGER, concurrency INTEGER NOT NULL,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE quota_guards (
        quota_policy_id TEXT NOT NULL, execution_id TEXT NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (quota_policy_id, execution_id)
    ) WITHOUT ROWID;
    CREATE INDEX quota_guards_by_execution ON quota_guards (execution_id);
    CREATE TABLE flows (
        flow_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, flow_kind TEXT NOT NULL,
        public_flow_state TEXT NOT NULL, created_at INTEGER NOT NULL, record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE flow_members (
        flow_id TEXT NOT NULL, execution_id TEXT NOT NULL,
        PRIMARY KEY (flow_id, execution_id)
    ) WITHOUT ROWID;
    CREATE INDEX flow_members_by_execution ON flow_members (execution_id);
    CREATE TABLE flow_edges (
        flow_id TEXT NOT NULL, edge_id TEXT NOT NULL,
        upstream_execution_id TEXT NOT NULL, downstream_execution_id TEXT NOT NULL,
        edge_state TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (flow_id, edge_id)
    ) WITHOUT ROWID;
    CREATE INDEX flow_edges_by_upstream ON flow_edges (upstream_execution_id);
    CREATE INDEX flow_edges_by_downstream ON flow_edges (downstream_execution_id);
    CREATE TABLE flow_edge_groups (
        flow_id TEXT NOT NULL, downstream_execution_id TEXT NOT NULL, state TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (flow_id, downstream_execution_id)
    ) WITHOUT ROWID;
    CREATE TABLE dependencies (
        execution_id TEXT PRIMARY KEY, flow_id TEXT,
        unsatisfied_required_count INTEGER NOT NULL, impossible_required_count INTEGER NOT NULL,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE dependency_edges (
        execution_id TEXT NOT NULL, edge_id TEXT NOT NULL, upstream_execution_id TEXT NOT NULL,
        state TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (execution_id, edge_id)
    ) WITHOUT ROWID;
    CREATE INDEX dependency_edges_by_upstream ON dependency_edges (upstream_execution_id);
";

/// Migration 4's data step: every legacy record into its kind's table.
fn move_records(conn: &Connection, path: &str) -> Result<(), OpenError> {
    match crate::records::move_legacy_records(conn) {
        Ok(_) => Ok(()),
        Err(crate::records::RecordError::Sql(e)) => Err(OpenError::Sqlite(e)),
        Err(e) => Err(OpenError::Corrupt { path: path.to_owned(), reason: e.to_string() }),
    }
}

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
    migrate_to(conn, path, MIGRATIONS.len())
}

/// [`migrate`], stopping after the first `target` migrations.
pub(crate) fn migrate_to(conn: &mut Connection, path: &str, target: usize) -> Result<(), OpenError> {
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
    let pending = MIGRATIONS.iter().enumerate().take(target).skip(usize::try_from(version).unwrap_or(0));
    for (i, step) in pending {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(step.sql)?;
        if let Some(data) = step.data {
            data(&tx, path)?;
        }
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
