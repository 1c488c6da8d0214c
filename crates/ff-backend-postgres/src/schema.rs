//! Versioned migrations and the open-time checks (ownership of the schema,
//! version, partition counts), all under one advisory lock so two processes
//! opening the same schema at once migrate it exactly once.

use postgres::Client;

use crate::OpenError;

/// Migrations, in order; `ff_migrations` records which ran.
///
/// Every text column that is compared or ordered is `COLLATE "C"` (byte order),
/// so ranges and cursors match the other backends whatever the database's
/// locale. JSON records are `TEXT`, not `JSONB`: the engine reads back exactly
/// the bytes it wrote, and `JSONB` would reject an escaped NUL.
const MIGRATIONS: &[&str] = &[
    // 1: the execution core. `ff_meta` is also the table every contract locks.
    r#"
    CREATE TABLE ff_meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE executions (
        id TEXT COLLATE "C" PRIMARY KEY,
        partition BIGINT NOT NULL,
        lane TEXT COLLATE "C" NOT NULL,
        public_state TEXT NOT NULL,
        core TEXT NOT NULL
    );
    CREATE TABLE blobs (
        execution_id TEXT COLLATE "C" NOT NULL, kind BIGINT NOT NULL, bytes BYTEA NOT NULL,
        PRIMARY KEY (execution_id, kind)
    );
    CREATE TABLE tags (
        execution_id TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (execution_id, key)
    );
    CREATE TABLE attempts (
        execution_id TEXT COLLATE "C" NOT NULL, attempt_index BIGINT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (execution_id, attempt_index)
    );
    CREATE TABLE leases (execution_id TEXT COLLATE "C" PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE grants (execution_id TEXT COLLATE "C" PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE stream_meta (
        execution_id TEXT COLLATE "C" NOT NULL, attempt_index BIGINT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (execution_id, attempt_index)
    );
    CREATE TABLE idempotency (
        namespace TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL,
        execution_id TEXT COLLATE "C" NOT NULL, expires_at BIGINT NOT NULL,
        PRIMARY KEY (namespace, key)
    );
    CREATE TABLE idx (
        name TEXT COLLATE "C" NOT NULL, member TEXT COLLATE "C" NOT NULL, score BIGINT NOT NULL,
        PRIMARY KEY (name, member)
    );
    CREATE INDEX idx_by_score ON idx (name, score, member);
    CREATE TABLE lease_events (
        execution_id TEXT COLLATE "C" NOT NULL, seq BIGINT NOT NULL, event TEXT NOT NULL, ts BIGINT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (execution_id, seq)
    );
    CREATE TABLE completions (
        event_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        execution_id TEXT COLLATE "C" NOT NULL, flow_id TEXT NOT NULL, outcome TEXT NOT NULL,
        produced_at BIGINT NOT NULL
    );
    CREATE TABLE workers (
        namespace TEXT COLLATE "C" NOT NULL, instance_id TEXT COLLATE "C" NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (namespace, instance_id)
    );
    "#,
    // 2: attempt streams and summaries.
    r#"
    CREATE TABLE stream_entries (
        execution_id TEXT COLLATE "C" NOT NULL, attempt_index BIGINT NOT NULL, ms BIGINT NOT NULL,
        seq BIGINT NOT NULL, fields TEXT NOT NULL,
        PRIMARY KEY (execution_id, attempt_index, ms, seq)
    );
    CREATE TABLE summaries (
        execution_id TEXT COLLATE "C" NOT NULL, attempt_index BIGINT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (execution_id, attempt_index)
    );
    "#,
    // 3: generic JSON records (waitpoints, suspensions, signals, dedup guards, keystore).
    r#"
    CREATE TABLE records (
        kind TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    );
    "#,
];

/// The advisory-lock key space of schema opening ("FFKT").
const OPEN_LOCK_CLASS: i32 = 0x4646_4b54;

/// Creates the schema if needed, checks it is ours, applies pending migrations
/// and checks the partition counts, in one transaction.
pub fn migrate(client: &mut Client, schema: &str, cfg: &ff_core::PartitionConfig) -> Result<(), OpenError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&OPEN_LOCK_CLASS, &schema])?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))?;
    let tables: Vec<String> = tx
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            &[&schema],
        )?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<_, _>>()?;
    let has_versions = tables.iter().any(|t| t == "ff_migrations");
    if !tables.is_empty() && !has_versions {
        return Err(OpenError::Foreign { schema: schema.to_owned(), found: tables.join(", ") });
    }
    if !has_versions {
        tx.batch_execute("CREATE TABLE ff_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")?;
    }
    let version: i64 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM ff_migrations", &[])?.try_get(0)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(OpenError::TooNew { schema: schema.to_owned(), found: version, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO ff_migrations (version) VALUES ($1)", &[&(i as i64 + 1)])?;
    }
    check_partitions(&mut tx, cfg)?;
    tx.commit()?;
    Ok(())
}

/// Persists partition counts on first open and rejects a different configuration later.
fn check_partitions(
    tx: &mut postgres::Transaction<'_>,
    cfg: &ff_core::PartitionConfig,
) -> Result<(), OpenError> {
    for (field, value) in cfg.fields() {
        let stored = tx.query_opt("SELECT value FROM ff_meta WHERE key = $1", &[&field])?;
        match stored {
            None => {
                tx.execute(
                    "INSERT INTO ff_meta (key, value) VALUES ($1, $2)",
                    &[&field, &value.to_string()],
                )?;
            }
            Some(row) => {
                let text: String = row.try_get(0)?;
                let stored = text.parse::<u16>().unwrap_or(0);
                if stored != value {
                    return Err(OpenError::PartitionMismatch { field, stored, config: value });
                }
            }
        }
    }
    Ok(())
}
